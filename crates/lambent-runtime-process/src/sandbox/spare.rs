//! Spare launchers: started and moved into fresh cgroups ahead of need, each waiting
//! on its standard input for a plan. Moving a process between cgroup v1 groups waits
//! for an RCU grace period (~5-20 ms a group on these machines), which a cold start
//! would otherwise pay three times; a spare has paid it already.

use super::Launcher;
use super::cgroup::{Cgroups, InstanceCgroups};
use crate::capture::Capture;
use nix::sys::signal::Signal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A launcher waiting for its plan, in its own (not yet limited) cgroups, its output
/// going to its capture.
pub(crate) struct Spare {
    pub child: tokio::process::Child,
    pub capture: Capture,
    pub cgroups: Option<InstanceCgroups>,
}

pub(crate) struct Spares {
    launcher: Launcher,
    cgroups: Option<Cgroups>,
    want: usize,
    ready: Mutex<Vec<Spare>>,
    filling: AtomicUsize,
}

/// Starts a launcher with its output going to `out`; it waits for a plan on stdin.
pub(crate) fn spawn_launcher(
    launcher: &Launcher,
    out: os_pipe::PipeWriter,
) -> std::io::Result<tokio::process::Child> {
    let err = out.try_clone()?;
    let mut cmd = tokio::process::Command::new(&launcher.program);
    cmd.args(&launcher.args)
        .current_dir("/")
        .env_clear()
        .stdin(std::process::Stdio::piped())
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
    pub fn new(launcher: Launcher, cgroups: Option<Cgroups>, want: usize) -> Arc<Self> {
        Arc::new(Self {
            launcher,
            cgroups,
            want,
            ready: Mutex::new(Vec::new()),
            filling: AtomicUsize::new(0),
        })
    }

    /// How many spares are ready now.
    pub fn ready(&self) -> usize {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// A live spare, if one is ready; starts making its replacement.
    pub fn take(self: &Arc<Self>) -> Option<Spare> {
        let mut taken = None;
        {
            let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(mut spare) = ready.pop() {
                if matches!(spare.child.try_wait(), Ok(None)) {
                    taken = Some(spare);
                    break;
                }
            }
        }
        self.refill();
        taken
    }

    /// Starts making spares until `want` are ready or on their way. Must be called
    /// from within the async runtime.
    pub fn refill(self: &Arc<Self>) {
        loop {
            let ready = self.ready.lock().unwrap_or_else(|p| p.into_inner()).len();
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
                let made = spares.make().await;
                spares.filling.fetch_sub(1, Ordering::SeqCst);
                match made {
                    Ok(spare) => spares
                        .ready
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(spare),
                    // Cold starts take the slow path, which reports the error.
                    Err(e) => tracing::warn!(error = %e, "cannot prepare a spare sandbox launcher"),
                }
            });
        }
    }

    async fn make(&self) -> std::io::Result<Spare> {
        let (capture, out) = Capture::new()?;
        let cgroups = match &self.cgroups {
            Some(found) => Some(found.create(&uuid::Uuid::new_v4().simple().to_string())?),
            None => None,
        };
        let child = spawn_launcher(&self.launcher, out)?;
        if let (Some(groups), Some(pid)) = (&cgroups, child.id()) {
            let dirs = groups.dirs().to_vec();
            tokio::task::spawn_blocking(move || super::cgroup::join(&dirs, pid))
                .await
                .map_err(std::io::Error::other)??;
        }
        Ok(Spare {
            child,
            capture,
            cgroups,
        })
    }
}
