//! Spare sandboxes, made ahead of need. A spare is a launcher moved into fresh
//! cgroups (a cgroup v1 move waits for an RCU grace period, ~5-20 ms a group on these
//! machines) whose sandbox is assembled as far as any function allows — namespaces,
//! system directories, `/tmp`, `/proc`, the Runtime API's listener — and waits for a
//! plan. A cold start finishes one instead of building one.

use super::Launcher;
use super::cgroup::{Cgroups, InstanceCgroups};
use super::channel;
use super::plan::{Bind, DEVICES, Prelude, Prestart, PrestartKind, RUNTIME_ROOT, Ready};
use crate::capture::Capture;
use nix::sys::signal::Signal;
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A sandbox waiting for its plan.
pub(crate) struct Spare {
    /// Names its scratch directory (and the instance that takes it).
    pub id: String,
    pub scratch: PathBuf,
    pub child: tokio::process::Child,
    pub capture: Capture,
    /// Its groups, not yet limited.
    pub cgroups: Option<InstanceCgroups>,
    /// The control socket: the plan goes here.
    pub control: UnixStream,
    /// The Runtime API's listener, bound in the sandbox's network namespace.
    pub listener: std::net::TcpListener,
    /// The sandbox's init as the host numbers it.
    pub init_pid: u32,
    /// Host directories its prelude bound beyond the system's (a pre-started
    /// interpreter's installation), at the same paths.
    pub prelude_dirs: Vec<PathBuf>,
    /// The runtime it pre-started, if any.
    pub prestarted: Option<PrestartKind>,
}

/// What every sandbox of this node has.
pub(crate) struct Layout {
    pub launcher: Launcher,
    pub cgroups: Option<Cgroups>,
    pub instances_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub system_dirs: Vec<PathBuf>,
    pub links: Vec<(String, String)>,
}

/// How long a cold start has to itself before its spare's replacement is built.
const REFILL_DELAY: Duration = Duration::from_millis(100);

/// The runtime spares pre-start, and the host directories it needs bound (read-only,
/// at the same paths) before any plan binds them.
#[derive(Debug, Clone)]
pub(crate) struct PrestartSetup {
    pub prestart: Prestart,
    pub binds: Vec<PathBuf>,
}

pub(crate) struct Spares {
    layout: Layout,
    /// The runtimes spares may pre-start, the default first. Set once the node's
    /// interpreters are resolved; spares made before then start none.
    prestarts: Mutex<Vec<PrestartSetup>>,
    /// What the next spares pre-start: for each spare taken, the runtime its taker
    /// ran (so a node serving Node.js functions soon keeps Node.js spares); the
    /// default when nobody asked.
    asked: Mutex<VecDeque<PrestartKind>>,
    want: usize,
    ready: Mutex<Vec<Spare>>,
    filling: AtomicUsize,
}

/// Starts a launcher with `control` as its stdin and its output going to `out`.
fn spawn_launcher(
    launcher: &Launcher,
    control: OwnedFd,
    out: os_pipe::PipeWriter,
) -> std::io::Result<tokio::process::Child> {
    let err = out.try_clone()?;
    let mut cmd = tokio::process::Command::new(&launcher.program);
    cmd.args(&launcher.args)
        .current_dir("/")
        .env_clear()
        .stdin(std::process::Stdio::from(control))
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // prctl(2), which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            // Die with the node. (The signal follows the thread that forked: launchers
            // are spawned from the runtime's worker threads, which live as long as it.)
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            Ok(())
        });
    }
    cmd.spawn()
}

impl Spares {
    pub fn new(layout: Layout, want: usize) -> Arc<Self> {
        Arc::new(Self {
            layout,
            prestarts: Mutex::new(Vec::new()),
            asked: Mutex::new(VecDeque::new()),
            want,
            ready: Mutex::new(Vec::new()),
            filling: AtomicUsize::new(0),
        })
    }

    /// The host directories every sandbox binds (so a plan need not).
    pub fn system_dirs(&self) -> &[PathBuf] {
        &self.layout.system_dirs
    }

    /// What spares made from now on may pre-start, the default first (empty:
    /// nothing).
    pub fn set_prestarts(&self, setups: Vec<PrestartSetup>) {
        *self.prestarts.lock().unwrap_or_else(|p| p.into_inner()) = setups;
    }

    /// What the next spare made pre-starts.
    fn next_prestart(&self) -> Option<PrestartSetup> {
        let setups = self.prestarts.lock().unwrap_or_else(|p| p.into_inner());
        let asked = self
            .asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        asked
            .and_then(|kind| setups.iter().find(|s| s.prestart.kind == kind))
            .or(setups.first())
            .cloned()
    }

    /// How many spares are ready now.
    pub fn ready(&self) -> usize {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// A live spare, if one is ready, preferably one pre-starting `runtime`; starts
    /// making its replacement, which pre-starts `runtime` if the node can.
    pub fn take(self: &Arc<Self>, runtime: Option<PrestartKind>) -> Option<Spare> {
        let taken = {
            let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
            ready.retain_mut(|spare| matches!(spare.child.try_wait(), Ok(None)));
            let pick = ready
                .iter()
                .rposition(|spare| runtime.is_some() && spare.prestarted == runtime)
                .or_else(|| ready.len().checked_sub(1));
            pick.map(|i| ready.remove(i))
        };
        if let Some(kind) = runtime {
            let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
            // Only the latest `want` matter: no more spares than that are made.
            if asked.len() >= self.want {
                asked.pop_front();
            }
            asked.push_back(kind);
        }
        self.refill_after(REFILL_DELAY);
        taken
    }

    /// Starts making spares until `want` are ready or on their way. Must be called
    /// from within the async runtime.
    pub fn refill(self: &Arc<Self>) {
        self.refill_after(Duration::ZERO);
    }

    /// `refill`, each new spare started after `delay` (so the cold start that took a
    /// spare does not share the CPU with building its replacement).
    fn refill_after(self: &Arc<Self>, delay: Duration) {
        loop {
            let ready = self.ready();
            let filling = self.filling.load(Ordering::SeqCst);
            if ready + filling >= self.want {
                return;
            }
            if self
                .filling
                .compare_exchange(filling, filling + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            let spares = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let setup = spares.next_prestart();
                let made = spares.make_with(setup).await;
                spares.filling.fetch_sub(1, Ordering::SeqCst);
                match made {
                    Ok(spare) => spares
                        .ready
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(spare),
                    // Cold starts make their own, which reports the error.
                    Err(e) => tracing::warn!(error = %e, "cannot prepare a spare sandbox"),
                }
            });
        }
    }

    /// Makes a sandbox now, for a cold start that found no spare ready (it pays for
    /// this); it pre-starts nothing, as the cold start executes its runtime at once.
    pub async fn make(&self) -> std::io::Result<Spare> {
        self.make_with(None).await
    }

    async fn make_with(&self, setup: Option<PrestartSetup>) -> std::io::Result<Spare> {
        let layout = &self.layout;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let scratch = layout.instances_dir.join(&id);
        std::fs::create_dir_all(&scratch)?;
        let made = self.make_in(&id, &scratch, setup).await;
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        made
    }

    async fn make_in(
        &self,
        id: &str,
        scratch: &std::path::Path,
        setup: Option<PrestartSetup>,
    ) -> std::io::Result<Spare> {
        let layout = &self.layout;
        let (capture, out) = Capture::new()?;
        let cgroups = match &layout.cgroups {
            Some(found) => Some(found.create(id)?),
            None => None,
        };
        let (node_end, launcher_end) = UnixStream::pair()?;
        let child = spawn_launcher(&layout.launcher, launcher_end.into(), out)?;
        let outside = super::outside_id();
        let mut binds = self.system_binds();
        let prelude_dirs = setup.as_ref().map(|s| s.binds.clone()).unwrap_or_default();
        if let Some(setup) = &setup {
            binds.extend(setup.binds.iter().map(|dir| Bind {
                source: dir.clone(),
                target: dir.display().to_string(),
                device: false,
            }));
        }
        let prelude = Prelude {
            root: scratch.join("root"),
            binds,
            links: layout.links.clone(),
            tmp_mb: 512,
            shm_mb: 64,
            outside_uid: outside,
            outside_gid: outside,
            cgroups: cgroups
                .as_ref()
                .map(|c| c.dirs().to_vec())
                .unwrap_or_default(),
            prestart: setup.map(|s| s.prestart),
        };
        let prestarted = prelude.prestart.as_ref().map(|p| p.kind);
        // The launcher joins its cgroups (slow), then reports; a broken host fails
        // the read, never hangs it.
        let (control, ready, listener) = tokio::task::spawn_blocking(move || {
            node_end.set_read_timeout(Some(Duration::from_secs(30)))?;
            channel::write_message(&mut &node_end, &prelude)?;
            let ready: Ready = channel::read_message(&mut &node_end)?;
            let listener = std::net::TcpListener::from(channel::recv_fd(&node_end)?);
            Ok::<_, std::io::Error>((node_end, ready, listener))
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(Spare {
            id: id.to_owned(),
            scratch: scratch.to_path_buf(),
            child,
            capture,
            cgroups,
            control,
            listener,
            init_pid: ready.init_pid,
            prelude_dirs,
            prestarted,
        })
    }

    /// The host's system directories, the runtime's bootstraps and the devices.
    fn system_binds(&self) -> Vec<Bind> {
        let layout = &self.layout;
        let mut binds: Vec<Bind> = layout
            .system_dirs
            .iter()
            .map(|dir| Bind {
                source: dir.clone(),
                target: dir.display().to_string(),
                device: false,
            })
            .collect();
        binds.push(Bind {
            source: layout.runtime_dir.clone(),
            target: RUNTIME_ROOT.into(),
            device: false,
        });
        binds.extend(DEVICES.iter().map(|dev| Bind {
            source: dev.into(),
            target: (*dev).to_owned(),
            device: true,
        }));
        binds
    }
}
