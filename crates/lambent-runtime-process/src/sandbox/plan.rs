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
