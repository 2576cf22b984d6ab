//! The sandbox every process instance runs in (unless the node runs with
//! `--isolation none`): its own user, mount, PID, IPC and UTS namespaces and, without
//! a `net` grant, its own network namespace holding only its Runtime API; an
//! unprivileged id; a root holding the runtime's files, the code (read-only) and a
//! private size-capped `/tmp`; Landlock and seccomp; cgroup limits on memory,
//! processes and CPU, and the idle class for an instance using its whole CPU quota.
//! See ARCHITECTURE.md, "Isolation".

mod cgroup;
pub(crate) mod channel;
mod cpu_watch;
pub(crate) mod egress;
mod filter;
mod launcher;
pub(crate) mod netns;
pub mod plan;
pub(crate) mod slirp;
pub(crate) mod spare;

pub use launcher::{launcher_main, probe_main};

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Spare launchers kept ready (each a small waiting process with its cgroups).
const SPARES: usize = 2;

/// The first argument that turns the node's own binary into the launcher.
pub const LAUNCHER_ARG: &str = "__lambent-sandbox";
/// The argument after it that asks only whether the host can sandbox.
pub const PROBE_ARG: &str = "--probe";

/// Runs the launcher (or the probe) if `args` (after the program name) ask for it;
/// returns otherwise. Call first thing in `main`, before any thread is started.
pub fn run_if_launcher(mut args: impl Iterator<Item = OsString>) {
    if args.next().as_deref() != Some(LAUNCHER_ARG.as_ref()) {
        return;
    }
    if args.next().as_deref() == Some(PROBE_ARG.as_ref()) {
        probe_main();
    }
    launcher_main();
}

/// The program that becomes the launcher: the node's binary with `LAUNCHER_ARG`, or
/// the `lambent-sandbox` binary.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl Launcher {
    /// This very program, re-executed with `LAUNCHER_ARG` (its `main` must call
    /// `run_if_launcher`).
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(Self {
            program: std::env::current_exe()?,
            args: vec![LAUNCHER_ARG.into()],
        })
    }
}

/// How process instances are isolated.
#[derive(Debug, Clone)]
pub enum Isolation {
    Sandbox(Launcher),
    /// No sandbox: instances run as the node's user (`--isolation none`).
    None,
}

/// What the host turned out to allow.
pub(crate) enum Host {
    Sandbox(Sandbox),
    /// Sandboxing was asked for and the host cannot: process functions do not start.
    Unavailable(String),
    Off,
}

pub(crate) struct Sandbox {
    /// Launchers started ahead of need (made on first use of the runtime).
    pub spares: std::sync::Arc<spare::Spares>,
    pub cgroups_missing: Option<String>,
}

pub(crate) use cgroup::Limits;

impl Host {
    /// Checks the host: a probe launcher must create namespaces and an id map.
    pub fn check(isolation: &Isolation, instances_dir: &Path, runtime_dir: &Path) -> Self {
        let Isolation::Sandbox(launcher) = isolation else {
            return Host::Off;
        };
        let probe = std::process::Command::new(&launcher.program)
            .args(&launcher.args)
            .arg(PROBE_ARG)
            .stdin(std::process::Stdio::null())
            .output();
        match probe {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Host::Unavailable(format!(
                    "this host cannot create the sandbox's namespaces: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(e) => {
                return Host::Unavailable(format!(
                    "cannot run the sandbox launcher {}: {e}",
                    launcher.program.display()
                ));
            }
        }
        let (links, system_dirs) = system_layout();
        let (cgroups, cgroups_missing) = match cgroup::Cgroups::discover() {
            Ok(c) => (Some(c), None),
            Err(why) => (None, Some(why)),
        };
        Host::Sandbox(Sandbox {
            spares: spare::Spares::new(
                spare::Layout {
                    launcher: launcher.clone(),
                    cgroups,
                    instances_dir: instances_dir.to_path_buf(),
                    runtime_dir: runtime_dir.to_path_buf(),
                    system_dirs,
                    links,
                },
                SPARES,
            ),
            cgroups_missing,
        })
    }

    /// One line for `lambent status` and the log.
    pub fn describe(&self) -> String {
        match self {
            Host::Sandbox(s) => {
                let limits = match &s.cgroups_missing {
                    None => "cgroup v1 memory, pids and cpu limits (CPU hogs in the idle class)"
                        .to_owned(),
                    Some(why) => format!("rlimits only ({why})"),
                };
                format!(
                    "sandbox: user, mount, PID, IPC, UTS and network namespaces; \
                     Landlock; seccomp; {limits}"
                )
            }
            Host::Unavailable(why) => {
                format!(
                    "unavailable: {why}; process functions will not start (or run with --isolation none)"
                )
            }
            Host::Off => "none (--isolation none): functions run as the node's user".into(),
        }
    }
}

/// Fresh unprivileged host uids (= gids) for an instance, this one and the next (its
/// init, and its function): no file on the host belongs to them, and no other
/// instance shares them.
pub(crate) fn outside_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const BASE: u32 = 1_000_000_000;
    BASE + 2 * (NEXT.fetch_add(1, Ordering::Relaxed) % 500_000)
}

/// Where an interpreter's installation lives: `/x/bin/python3` → `/x`.
pub(crate) fn install_prefix(exe: &Path) -> Option<PathBuf> {
    let bin = exe.parent()?;
    (bin.file_name()? == "bin").then(|| bin.parent().map(Path::to_path_buf))?
}

/// What of the host's `/etc` a function sees (read-only): what the dynamic linker,
/// name resolution, TLS, time zones, user lookups and MIME types need. The rest —
/// service configurations, and credentials a host may keep there (`pip.conf`,
/// `npmrc`, `gitconfig`, SSH host keys) — stays out of sight. A link is bound as
/// the file it names on the host.
const ETC_SHOWN: &[&str] = &[
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "gai.conf",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "mime.types",
    "networks",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "pki",
    "protocols",
    "resolv.conf",
    "services",
    "ssl",
    "timezone",
];

/// `/etc` entries by prefix: the interpreters' own (`python3.11`: Debian's
/// `sitecustomize`).
const ETC_SHOWN_PREFIXES: &[&str] = &["python"];

/// The entries of the host's `/etc` a sandbox binds, by path.
fn etc_shown() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/etc") else {
        return Vec::new();
    };
    let mut shown: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            ETC_SHOWN.contains(&name.as_ref())
                || ETC_SHOWN_PREFIXES.iter().any(|p| name.starts_with(p))
        })
        // A link to nothing (or to something gone) has nothing to bind.
        .filter(|e| e.path().exists())
        .map(|e| e.path())
        .collect();
    shown.sort();
    shown
}

/// The host's top-level links (`bin -> usr/bin` on merged-/usr systems), and the
/// top-level directories (and `/etc` entries) to bind where they are real.
pub(crate) fn system_layout() -> (Vec<(String, String)>, Vec<PathBuf>) {
    let mut links = Vec::new();
    let mut dirs = vec![PathBuf::from("/usr")];
    dirs.extend(etc_shown());
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let path = Path::new("/").join(top);
        match std::fs::read_link(&path) {
            Ok(to) => links.push((top.to_owned(), to.to_string_lossy().into_owned())),
            Err(_) if path.is_dir() => dirs.push(path),
            Err(_) => {}
        }
    }
    (links, dirs)
}
