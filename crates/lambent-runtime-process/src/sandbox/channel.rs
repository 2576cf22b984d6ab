//! The control socket between the node and a launcher: length-prefixed JSON
//! messages, and one passed descriptor (the Runtime API's listener, bound inside the
//! sandbox's network namespace).

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Largest message (a plan with a 4 KiB environment is far below it).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

pub fn write_message(out: &mut impl Write, value: &impl serde::Serialize) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&body)?;
    out.flush()
}

pub fn read_message<T: serde::de::DeserializeOwned>(input: &mut impl Read) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::other(format!("a {len}-byte message")));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

/// Sends `fd` over the Unix socket `socket` (with one byte, as a carrier).
pub fn send_fd(socket: RawFd, fd: RawFd) -> std::io::Result<()> {
    let fds = [fd];
    let carrier = [0u8; 1];
    sendmsg::<()>(
        socket,
        &[IoSlice::new(&carrier)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Receives one descriptor sent by `send_fd`.
pub fn recv_fd(socket: &impl AsRawFd) -> std::io::Result<OwnedFd> {
    let mut carrier = [0u8; 1];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut carrier)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor in our table for us;
            // nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(std::io::Error::other("no descriptor came with the message"))
}
