//! Per-invocation capture of an instance's stdout and stderr.
//!
//! The child writes both streams into one pipe (as Lambda merges them into one log
//! stream). Lambent keeps a write end too: when an invocation ends it writes a
//! barrier marker into the same pipe. A pipe keeps order, and everything the child
//! wrote before answering was written before Lambent's barrier, so the bytes before
//! barrier *n* are exactly the output of the invocations up to *n* — no sleeps, no
//! guessing. (Writes up to PIPE_BUF are atomic, so a barrier is never torn.)
//!
//! The barrier carries a random token the function never sees (it is not derived from
//! any id the function is told), so a function cannot forge one and shift the logs
//! of later invocations. Each invocation keeps the last [`MAX_LOG_BYTES`] of its
//! output and says how much it dropped; each byte is scanned once, so capture runs
//! at pipe speed whatever a function prints.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::unix::pipe;

/// Most bytes of output kept per invocation (the tail is kept: it holds the error).
pub const MAX_LOG_BYTES: usize = 256 * 1024;

/// How much one read takes from the pipe (its default capacity).
const READ_CHUNK: usize = 64 * 1024;

/// The capture of one instance's output.
///
/// A task drains the pipe while the function runs (so it never blocks on a full pipe),
/// and [`Capture::take`] drains it too, right after writing its barrier: the barrier is
/// in the pipe by then, so the invocation's output is complete without waiting for
/// anyone — no thread or task has to wake up on the invocation's path.
pub struct Capture {
    /// Lambent's own write end: a separate open file description of the pipe, so it
    /// can be non-blocking without making the child's end non-blocking too.
    writer: File,
    token: String,
    next_barrier: u64,
    pipe: Arc<pipe::Receiver>,
    scan: Arc<Mutex<Scan>>,
    drainer: tokio::task::JoinHandle<()>,
}

impl Capture {
    /// Creates the pipe; returns the capture and the write end to give the child (twice).
    /// Must be called within a tokio runtime (the drainer is a task on it).
    pub fn new() -> std::io::Result<(Self, os_pipe::PipeWriter)> {
        let (reader, child_end) = os_pipe::pipe()?;
        // Only Lambent reads the pipe, so its read end is non-blocking (tokio sets it).
        let reader = pipe::Receiver::from_owned_fd(reader.into())?;
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(format!("/proc/self/fd/{}", child_end.as_raw_fd()))?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let marker = format!("\x1eLAMBENT-BARRIER-{token}-").into_bytes();
        let pipe = Arc::new(reader);
        let scan = Arc::new(Mutex::new(Scan::new(marker)));
        let drainer = tokio::spawn(drain(pipe.clone(), scan.clone()));
        Ok((
            Self {
                writer,
                token,
                next_barrier: 0,
                pipe,
                scan,
                drainer,
            },
            child_end,
        ))
    }

    /// Writes a line of Lambent's own into the instance's output (e.g. which
    /// interpreter it runs), in order with what the function prints.
    pub fn note(&mut self, line: &str) {
        let _ = self.write_whole(format!("{line}\n").as_bytes());
    }

    /// Returns everything the child wrote since the previous call.
    pub async fn take(&mut self) -> String {
        self.next_barrier += 1;
        let barrier = format!(
            "\x1eLAMBENT-BARRIER-{}-{}\x1e",
            self.token, self.next_barrier
        );
        loop {
            match self.write_whole(barrier.as_bytes()) {
                Ok(()) => break,
                // The pipe is full (the child is still printing): drain it, try again.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if fill(&self.pipe, &self.scan, Until::Reads(DRAIN_READS)) == Filled::Closed {
                        return String::new();
                    }
                    tokio::task::yield_now().await;
                }
                Err(_) => return String::new(),
            }
        }
        // The barrier is in the pipe behind everything written before it: reading
        // up to it completes this invocation's output.
        fill(&self.pipe, &self.scan, Until::Done);
        let mut scan = self.scan.lock().unwrap_or_else(PoisonError::into_inner);
        scan.done.pop_front().unwrap_or_default()
    }

    /// One write, whole or not at all (a pipe writes up to PIPE_BUF bytes atomically,
    /// and a barrier is far shorter).
    fn write_whole(&self, bytes: &[u8]) -> std::io::Result<()> {
        loop {
            match (&self.writer).write(bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(_) => return Err(ErrorKind::WriteZero.into()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.drainer.abort();
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Filled {
    /// Everything the pipe held was read (or, for `take`, its barrier was).
    Drained,
    /// The read limit was reached with more in the pipe.
    More,
    /// The pipe has no writer left, or cannot be read.
    Closed,
}

/// How far a [`fill`] reads.
#[derive(Clone, Copy)]
enum Until {
    /// Until an invocation's output is complete (`take`, right after its barrier).
    Done,
    /// At most this many reads (the drainer, so that a child printing without a
    /// pause cannot hold one of the node's worker threads).
    Reads(usize),
}

/// Reads per turn of the drainer: 1 MiB, then other tasks run.
const DRAIN_READS: usize = 16;

/// Reads what the pipe holds now into the scan. The scan's lock is held while
/// reading, so bytes are scanned in the order they were read. Reads the descriptor
/// itself, not through tokio (which would answer "would block" until its reactor has
/// seen the pipe become readable; a barrier just written must be read at once).
fn fill(pipe: &pipe::Receiver, scan: &Mutex<Scan>, until: Until) -> Filled {
    let mut scan = scan.lock().unwrap_or_else(PoisonError::into_inner);
    let mut buf = std::mem::take(&mut scan.buf);
    let mut reads = 0;
    let filled = loop {
        match until {
            Until::Done if !scan.done.is_empty() => break Filled::Drained,
            Until::Reads(most) if reads == most => break Filled::More,
            _ => reads += 1,
        }
        match rustix::io::read(pipe, &mut buf[..]) {
            Ok(0) => break Filled::Closed,
            Ok(n) => scan.push(&buf[..n]),
            Err(rustix::io::Errno::AGAIN) => break Filled::Drained,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break Filled::Closed,
        }
    };
    scan.buf = buf;
    filled
}

/// Drains the pipe whenever it is readable, so a printing child never blocks.
async fn drain(pipe: Arc<pipe::Receiver>, scan: Arc<Mutex<Scan>>) {
    loop {
        if pipe.readable().await.is_err() {
            return;
        }
        // "Would block" tells tokio the pipe is drained, so it waits for more.
        let read = pipe.try_io(|| match fill(&pipe, &scan, Until::Reads(DRAIN_READS)) {
            Filled::Drained => Err(ErrorKind::WouldBlock.into()),
            other => Ok(other),
        });
        match read {
            Ok(Filled::Closed) => return,
            Ok(_) => tokio::task::yield_now().await,
            Err(_) => {}
        }
    }
}

/// Splits the output at barriers, keeping each invocation's tail.
struct Scan {
    marker: Vec<u8>,
    finder: memchr::memmem::Finder<'static>,
    /// Output of the current invocation (its tail), and how much of it was dropped.
    pending: Vec<u8>,
    dropped: u64,
    /// Where the next marker search starts: bytes before it were searched already.
    searched: usize,
    /// Each finished invocation's output, oldest first.
    done: VecDeque<String>,
    /// Where reads land (kept, so a read costs no allocation).
    buf: Box<[u8]>,
}

impl Scan {
    fn new(marker: Vec<u8>) -> Self {
        Self {
            finder: memchr::memmem::Finder::new(&marker).into_owned(),
            marker,
            pending: Vec::new(),
            dropped: 0,
            searched: 0,
            done: VecDeque::new(),
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        loop {
            let Some(found) = self.finder.find(&self.pending[self.searched..]) else {
                // A marker may straddle the end: search its length back next time.
                self.searched = self.pending.len().saturating_sub(self.marker.len() - 1);
                break;
            };
            let start = self.searched + found;
            let after = start + self.marker.len();
            let Some(end) = memchr::memchr(0x1e, &self.pending[after..]) else {
                self.searched = start; // the rest of the barrier has not arrived yet
                break;
            };
            let kept = &self.pending[start.saturating_sub(MAX_LOG_BYTES)..start];
            self.dropped += (start - kept.len()) as u64;
            let mut text = String::new();
            if self.dropped > 0 {
                text.push_str(&format!(
                    "[lambent: {} bytes of earlier output were dropped; the last {MAX_LOG_BYTES} bytes are kept]\n",
                    self.dropped
                ));
            }
            text.push_str(&String::from_utf8_lossy(kept));
            self.pending.drain(..after + end + 1);
            self.dropped = 0;
            self.searched = 0;
            self.done.push_back(text);
        }
        // Bound memory between barriers: keep the tail plus room for a split marker.
        if self.pending.len() > 2 * MAX_LOG_BYTES && self.searched > MAX_LOG_BYTES {
            let cut = self.searched - MAX_LOG_BYTES;
            self.pending.drain(..cut);
            self.dropped += cut as u64;
            self.searched -= cut;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lambent's end is non-blocking; the child's must not be (a function printing
    /// would get EAGAIN): they are two open file descriptions of one pipe.
    #[tokio::test]
    async fn the_childs_end_of_the_pipe_stays_blocking() {
        let (capture, child) = Capture::new().unwrap();
        let child_flags = rustix::fs::fcntl_getfl(&child).unwrap();
        assert!(!child_flags.contains(rustix::fs::OFlags::NONBLOCK));
        let own = rustix::fs::fcntl_getfl(&capture.writer).unwrap();
        assert!(own.contains(rustix::fs::OFlags::NONBLOCK));
    }

    /// A barrier written while the pipe is full is written all the same: `take`
    /// drains the pipe itself (here nothing else can: the drainer task does not run
    /// before the test awaits), and no byte is lost or misplaced.
    #[tokio::test]
    async fn a_barrier_gets_through_a_full_pipe() {
        let (mut capture, mut child) = Capture::new().unwrap();
        let size = rustix::pipe::fcntl_getpipe_size(&child).unwrap();
        let output = vec![b'x'; size];
        child.write_all(&output).unwrap();
        let taken = capture.take().await;
        assert_eq!(taken.len(), size);
        child.write_all(b"after\n").unwrap();
        assert_eq!(capture.take().await, "after\n");
    }

    #[tokio::test]
    async fn output_is_split_exactly_at_barriers() {
        let (mut capture, mut child) = Capture::new().unwrap();
        child.write_all(b"first\npartial").unwrap();
        assert_eq!(capture.take().await, "first\npartial");
        assert_eq!(capture.take().await, "");
        child.write_all(b"second\n").unwrap();
        assert_eq!(capture.take().await, "second\n");
    }

    /// Finding 18: a function printing far more than the cap keeps the tail, says
    /// how much it dropped, and the next invocation's output is exact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_output_keeps_its_tail_and_says_it_was_cut() {
        let (mut capture, mut child) = Capture::new().unwrap();
        let total: usize = 64 * 1024 * 1024;
        let writer = std::thread::spawn(move || {
            let line = [b'x'; 1023];
            let mut written = 0;
            while written < total {
                child.write_all(&line).unwrap();
                child.write_all(b"\n").unwrap();
                written += 1024;
            }
            child.write_all(b"the end\n").unwrap();
            child
        });
        let mut child = tokio::task::spawn_blocking(move || writer.join().unwrap())
            .await
            .unwrap();
        let logs = capture.take().await;
        let dropped = total + 8 - MAX_LOG_BYTES;
        assert!(
            logs.starts_with(&format!(
                "[lambent: {dropped} bytes of earlier output were dropped"
            )),
            "{}",
            &logs[..200.min(logs.len())]
        );
        assert!(logs.ends_with("xxx\nthe end\n"));
        child.write_all(b"next\n").unwrap();
        assert_eq!(capture.take().await, "next\n");
    }
}
