//! What the launcher is told, over its control socket (its standard input): first a
//! prelude (what every sandbox has: the root, the system's directories, the ids, the
//! cgroups), then — when an instance takes it — the plan (this function's code,
//! interpreter and environment). The environment, which may hold secrets, never
//! appears in an argv.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where the function's code and the runtime's bootstraps appear inside the sandbox
/// (the paths Lambda uses).
pub const TASK_ROOT: &str = "/var/task";
pub const RUNTIME_ROOT: &str = "/var/runtime";
/// The Runtime API's address inside an instance's own network namespace.
pub const RUNTIME_API_PORT: u16 = 9001;
/// The user and group the function runs as inside its user namespace (Lambda's
/// `sbx_user1051`); outside, a per-instance unprivileged id.
pub const INSIDE_ID: u32 = 993;

/// What every function may read, whatever its plan (with the code, the bootstraps
/// and what the sandbox bound): the Landlock rulesets of `filter` start from it.
pub const SYSTEM_READABLE: [&str; 4] = ["/usr", "/etc", "/proc", "/dev"];

/// The devices a sandbox has.
pub const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// Everything about a sandbox that does not depend on the function: built before
/// any instance asks for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prelude {
    /// An empty directory on the host where the new root is assembled.
    pub root: PathBuf,
    /// The host's system directories and the runtime's bootstraps, read-only.
    pub binds: Vec<Bind>,
    /// Symbolic links at the top of the new root (`bin -> usr/bin`), as on the host.
    pub links: Vec<(String, String)>,
    /// Size of the private `/tmp` (tmpfs), MiB.
    pub tmp_mb: u32,
    /// Size of `/dev/shm` (tmpfs), MiB.
    pub shm_mb: u32,
    /// The host uid/gid the sandbox's root maps to; the function's id maps to the next.
    pub outside_uid: u32,
    pub outside_gid: u32,
    /// cgroup directories (one per controller) the launcher joins before it clones.
    pub cgroups: Vec<PathBuf>,
    /// An interpreter to start ahead of need, inside the sandbox as the function's
    /// id, so a cold start does not wait for it (see `Prestart`).
    #[serde(default)]
    pub prestart: Option<Prestart>,
}

/// A runtime started before its function is known: the node's default Python or its
/// Node.js, the bootstrap loaded, waiting on descriptor [`PRESTART_FD`] for its
/// assignment (environment, working directory). It is used only for a plan that would
/// execute exactly this program with these arguments and the same start-up
/// environment, and that its fence fits ([`Prestart::fits`]); otherwise it is killed
/// and the plan's program executed as usual. Each sandbox starts its own: nothing is
/// shared between functions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prestart {
    pub kind: PrestartKind,
    pub program: String,
    pub args: Vec<String>,
    /// The environment it starts with: only what the interpreter reads as it starts.
    pub env: Vec<(String, String)>,
}

/// Which runtime is pre-started; it decides what the runtime reads as it starts and
/// when Landlock fences it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrestartKind {
    /// Python, single-threaded while it waits: it restricts itself with the plan's
    /// own Landlock ruleset (passed with its assignment) before it reads any of the
    /// function's code, so a function granted the network can use it too.
    Python,
    /// Node.js starts threads of its own (V8's, libuv's), which a later
    /// `landlock_restrict_self` would not cover, and cannot call it anyway: it is
    /// fenced before it is executed, with the ruleset of a plan without network (see
    /// `filter::prestart_landlock`), so only such plans can use it.
    Node,
}

/// The descriptor a pre-started runtime reads its assignment from.
pub const PRESTART_FD: i32 = 3;

impl PrestartKind {
    /// Whether the interpreter reads variable `name` while it starts (before any
    /// function code runs): a plan whose value differs cannot use a pre-started one.
    /// (Node reads `NODE_PATH` then too, but its bootstrap reads it again once
    /// assigned.)
    pub fn read_at_start(self, name: &str) -> bool {
        let own = match self {
            PrestartKind::Python => name.starts_with("PYTHON"),
            PrestartKind::Node => {
                (name.starts_with("NODE_") && !matches!(name, "NODE_PATH" | "NODE_ENV"))
                    || name.starts_with("UV_")
            }
        };
        own || matches!(name, "LANG" | "LC_ALL" | "LC_CTYPE" | "TZ")
    }
}

impl Prestart {
    /// Whether `plan` runs this very runtime, started the same way (and, for one
    /// fenced before it was executed, fenced the same way).
    pub fn fits(&self, plan: &Plan, readable: &[String]) -> bool {
        let startup = |env: &[(String, String)]| {
            let mut vars: Vec<(String, String)> = env
                .iter()
                .filter(|(k, _)| self.kind.read_at_start(k))
                .cloned()
                .collect();
            vars.sort();
            vars
        };
        plan.program == self.program
            && plan.args == self.args
            && startup(&plan.env) == startup(&self.env)
            && match self.kind {
                PrestartKind::Python => true,
                PrestartKind::Node => fenced_before_exec_fits(plan, readable),
            }
    }
}

/// Where a runtime fenced before its plan is known may read: the system's
/// directories, `/var` (which holds only the bootstraps and, once bound, the code)
/// and what the prelude bound (`readable`). A rule on `/var/task` itself would not do:
/// the code is bound over that directory later, and Landlock ignores rules on a
/// directory a mount hides.
pub fn prestart_readable(readable: &[String]) -> Vec<String> {
    let mut read: Vec<String> = SYSTEM_READABLE
        .into_iter()
        .chain(["/var"])
        .map(str::to_owned)
        .collect();
    read.extend(readable.iter().cloned());
    read
}

/// Whether the ruleset a runtime got before its plan was known is the one `plan`
/// would get: no network beyond the Runtime API, no firewall, and nothing bound
/// outside what that ruleset lets it read.
fn fenced_before_exec_fits(plan: &Plan, readable: &[String]) -> bool {
    let read = prestart_readable(readable);
    plan.connect_port == Some(RUNTIME_API_PORT)
        && plan.firewall.is_none()
        && plan.binds.iter().all(|b| {
            !b.device
                && read.iter().any(|dir| {
                    std::path::Path::new(&b.target).starts_with(std::path::Path::new(dir))
                })
        })
}

/// What a pre-started runtime is told when its function is known (a Python's Landlock
/// ruleset, when there is one, comes with it as a passed descriptor; its limits are
/// set from outside, with `prlimit`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub env: Vec<(String, String)>,
    pub cwd: String,
}

/// What makes the sandbox this function's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The code, the interpreter's installation, a resolver configuration: read-only.
    pub binds: Vec<Bind>,
    /// Descriptor and data-segment rlimits.
    pub nofile: u64,
    pub data_bytes: u64,
    /// With no network granted, TCP connects are limited to this port (Landlock).
    pub connect_port: Option<u16>,
    /// An nftables ruleset for the sandbox's network namespace (grants narrower than
    /// the whole network).
    #[serde(default)]
    pub firewall: Option<String>,
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
}

/// What the launcher reports once its sandbox waits for a plan (the Runtime API's
/// listener comes with it, as a passed descriptor).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    /// The sandbox's init, as the host numbers it (its network namespace is
    /// `/proc/PID/ns/net`).
    pub init_pid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: String,
    /// A character device (`/dev/null`): bound writable, with device access.
    #[serde(default)]
    pub device: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Prestart {
        Prestart {
            kind: PrestartKind::Node,
            program: "/usr/bin/node".into(),
            args: vec!["/var/runtime/node/bootstrap.js".into()],
            env: vec![("TZ".into(), ":UTC".into())],
        }
    }

    fn plan(env: &[(&str, &str)]) -> Plan {
        Plan {
            binds: vec![Bind {
                source: "/data/code/abc".into(),
                target: TASK_ROOT.into(),
                device: false,
            }],
            nofile: 1024,
            data_bytes: 1 << 30,
            connect_port: Some(RUNTIME_API_PORT),
            firewall: None,
            program: "/usr/bin/node".into(),
            args: vec!["/var/runtime/node/bootstrap.js".into()],
            env: env
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            cwd: TASK_ROOT.into(),
        }
    }

    /// A Node.js runtime fenced before its plan fits only plans its fence is the
    /// fence of: no network, nothing bound where it may not read; and only the same
    /// start-up environment (NODE_PATH is read again, NODE_OPTIONS is not).
    #[test]
    fn a_node_started_ahead_fits_only_plans_fenced_as_it_is() {
        let readable = vec!["/usr".to_owned(), RUNTIME_ROOT.to_owned()];
        let base = [("TZ", ":UTC"), ("GREETING", "hi")];
        assert!(node().fits(&plan(&base), &readable));
        let own_path = [("TZ", ":UTC"), ("NODE_PATH", "/var/task/lib")];
        assert!(node().fits(&plan(&own_path), &readable));
        let own_options = [("TZ", ":UTC"), ("NODE_OPTIONS", "--inspect")];
        assert!(!node().fits(&plan(&own_options), &readable));
        assert!(!node().fits(&plan(&[("TZ", "Europe/Paris")]), &readable));

        let mut networked = plan(&base);
        networked.connect_port = None;
        assert!(!node().fits(&networked, &readable));
        let mut walled = plan(&base);
        walled.firewall = Some("table inet x {}".into());
        assert!(!node().fits(&walled, &readable));
        let mut elsewhere = plan(&base);
        elsewhere.binds.push(Bind {
            source: "/opt/node".into(),
            target: "/opt/node".into(),
            device: false,
        });
        assert!(!node().fits(&elsewhere, &readable));

        // Python restricts itself with the plan's own ruleset: a network grant fits.
        let python = Prestart {
            kind: PrestartKind::Python,
            ..node()
        };
        assert!(python.fits(&networked, &readable));
    }
}
