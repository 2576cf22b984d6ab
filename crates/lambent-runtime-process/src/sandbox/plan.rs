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

/// A runtime started before its function is known: the node's default Python with
/// the bootstrap imported, waiting on descriptor [`PRESTART_FD`] for its assignment
/// (environment, working directory, limits, a Landlock ruleset). It is used only for
/// a plan that would execute exactly this program with these arguments and the same
/// start-up environment ([`Prestart::fits`]); otherwise it is killed and the plan's
/// program executed as usual. Each sandbox starts its own: nothing is shared between
/// functions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prestart {
    pub program: String,
    pub args: Vec<String>,
    /// The environment it starts with: only what the interpreter reads as it starts.
    pub env: Vec<(String, String)>,
}

/// The descriptor a pre-started runtime reads its assignment from.
pub const PRESTART_FD: i32 = 3;

/// Variables an interpreter reads while it starts (before any function code runs):
/// a plan whose values differ cannot use a pre-started one.
pub fn read_at_start(name: &str) -> bool {
    name.starts_with("PYTHON") || matches!(name, "LANG" | "LC_ALL" | "LC_CTYPE" | "TZ")
}

impl Prestart {
    /// Whether `plan` runs this very runtime, started the same way.
    pub fn fits(&self, plan: &Plan) -> bool {
        let startup = |env: &[(String, String)]| {
            let mut vars: Vec<(String, String)> = env
                .iter()
                .filter(|(k, _)| read_at_start(k))
                .cloned()
                .collect();
            vars.sort();
            vars
        };
        plan.program == self.program
            && plan.args == self.args
            && startup(&plan.env) == startup(&self.env)
    }
}

/// What a pre-started runtime is told when its function is known (the Landlock
/// ruleset, when there is one, comes with it as a passed descriptor).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub nofile: u64,
    pub data_bytes: u64,
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
