//! Outbound network for an instance granted `net`: slirp4netns gives the instance's
//! own network namespace a user-mode NAT to the host's network — but not to the host's
//! loopback (`--disable-host-loopback`), so the node's control API and every service
//! bound to 127.0.0.1 stay out of reach. The Runtime API stays on the namespace's own
//! loopback.

use nix::sys::signal::Signal;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The program, found on PATH.
pub const PROGRAM: &str = "slirp4netns";
/// The name server slirp4netns answers on inside the namespace.
pub const DNS: &str = "10.0.2.3";

/// A running slirp4netns; killed when dropped.
pub struct Outbound {
    _child: tokio::process::Child,
}

/// Starts slirp4netns on the namespace `ns` and waits until its interface is up.
/// `host_loopback`: whether the gateway forwards to the host's loopback (a grant by
/// address to a service there; the sandbox's firewall then admits only that port).
pub async fn connect(ns: &OwnedFd, host_loopback: bool) -> std::io::Result<Outbound> {
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (ns_fd, ready_fd) = (ns.as_raw_fd(), ready_w.as_raw_fd());
    let mut cmd = tokio::process::Command::new(PROGRAM);
    cmd.args(["--configure", "--mtu=65520", "--netns-type=path"]);
    if !host_loopback {
        cmd.arg("--disable-host-loopback");
    }
    cmd.arg(format!("--ready-fd={ready_fd}"))
        .arg(format!("/proc/self/fd/{ns_fd}"))
        .arg("tap0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only makes system
    // calls (prctl(2), fcntl(2)), which are async-signal-safe; it allocates nothing.
    // Both descriptors stay open in the parent until the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            for fd in [ns_fd, ready_fd] {
                if nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(ready_w);
    let mut ready = tokio::net::unix::pipe::Receiver::from_owned_fd(ready_r)?;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), ready.read(&mut byte)).await {
        Ok(Ok(1)) => Ok(Outbound { _child: child }),
        Ok(_) => Err(std::io::Error::other(
            "slirp4netns exited before bringing the network up",
        )),
        Err(_) => Err(std::io::Error::other(
            "slirp4netns did not bring the network up within 5 s",
        )),
    }
}
