//! What the launcher is told to build: handed to it as JSON on its standard input, so
//! the function's environment (which may hold secrets) never appears in an argv.

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// An empty directory on the host where the new root is assembled.
    pub root: PathBuf,
    /// Host paths mounted read-only at the same or another path inside.
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
    /// The network namespace to enter (`/proc/NODE/fd/N`, which the node holds open
    /// for the instance's life): the instance's own, holding its Runtime API.
    pub netns: Option<PathBuf>,
    /// cgroup directories (one per controller) the launcher joins; empty when the
    /// node placed it in its groups already (a spare launcher).
    pub cgroups: Vec<PathBuf>,
    /// Descriptor and data-segment rlimits.
    pub nofile: u64,
    pub data_bytes: u64,
    /// With no network granted, TCP connects are limited to this port (Landlock).
    pub connect_port: Option<u16>,
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
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

/// The devices a sandbox has.
pub const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];
