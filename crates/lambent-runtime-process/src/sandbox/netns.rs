//! An instance's own network namespace: only loopback, and on it the instance's
//! Runtime API listener, which nothing outside the namespace can reach.

use nix::libc;
use nix::sched::CloneFlags;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};

/// A new network namespace (as a descriptor to enter) with its loopback up and a
/// listener bound on it.
pub struct Namespace {
    pub ns: OwnedFd,
    pub listener: TcpListener,
}

/// Made on a short-lived thread: a namespace change applies to the calling thread
/// only, and no pooled thread may be left inside one.
pub fn create(port: u16) -> std::io::Result<Namespace> {
    std::thread::spawn(move || -> std::io::Result<Namespace> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
        loopback_up()?;
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        let ns = std::fs::File::open("/proc/thread-self/ns/net")?;
        Ok(Namespace {
            ns: OwnedFd::from(ns),
            listener,
        })
    })
    .join()
    .map_err(|_| std::io::Error::other("network namespace thread panicked"))?
}

/// `ip link set lo up`, by the ioctl (no crate wraps interface flags).
fn loopback_up() -> std::io::Result<()> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    // SAFETY: `ifreq` is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an `ifreq` we own, on a socket
    // we own; the flags member is the union field these requests use.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
