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
//! output and says how much it dropped; the reader scans each byte once, so capture
//! runs at pipe speed whatever a function prints.

use std::io::{Read, Write};
use tokio::sync::mpsc;

/// Most bytes of output kept per invocation (the tail is kept: it holds the error).
pub const MAX_LOG_BYTES: usize = 256 * 1024;

pub struct Capture {
    writer: os_pipe::PipeWriter,
    token: String,
    next_barrier: u64,
    chunks: mpsc::UnboundedReceiver<String>,
}

impl Capture {
    /// Creates the pipe; returns the capture and the write end to give the child (twice).
    pub fn new() -> std::io::Result<(Self, os_pipe::PipeWriter)> {
        let (reader, writer) = os_pipe::pipe()?;
        let child_end = writer.try_clone()?;
        let (tx, chunks) = mpsc::unbounded_channel();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let marker = format!("\x1eLAMBENT-BARRIER-{token}-");
        std::thread::Builder::new()
            .name("lambent-log-capture".into())
            .spawn(move || read_loop(reader, marker.into_bytes(), tx))?;
        Ok((
            Self {
                writer,
                token,
                next_barrier: 0,
                chunks,
            },
            child_end,
        ))
    }

    /// Writes a line of Lambent's own into the instance's output (e.g. which
    /// interpreter it runs), in order with what the function prints.
    pub fn note(&mut self, line: &str) {
        let _ = writeln!(self.writer, "{line}");
    }

    /// Returns everything the child wrote since the previous call.
    pub async fn take(&mut self) -> String {
        self.next_barrier += 1;
        let barrier = format!(
            "\x1eLAMBENT-BARRIER-{}-{}\x1e",
            self.token, self.next_barrier
        );
        if self.writer.write_all(barrier.as_bytes()).is_err() {
            return String::new();
        }
        self.chunks.recv().await.unwrap_or_default()
    }
}

fn read_loop(mut reader: os_pipe::PipeReader, marker: Vec<u8>, tx: mpsc::UnboundedSender<String>) {
    let finder = memchr::memmem::Finder::new(&marker);
    // Output of the current invocation (its tail), and how much of it was dropped.
    let mut pending: Vec<u8> = Vec::new();
    let mut dropped: u64 = 0;
    // Where the next marker search starts: bytes before it were searched already.
    let mut searched = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        loop {
            let Some(found) = finder.find(&pending[searched..]) else {
                // A marker may straddle the end: search its length back next time.
                searched = pending.len().saturating_sub(marker.len() - 1);
                break;
            };
            let start = searched + found;
            let after = start + marker.len();
            let Some(end) = memchr::memchr(0x1e, &pending[after..]) else {
                searched = start; // the rest of the barrier has not arrived yet
                break;
            };
            let kept = &pending[start.saturating_sub(MAX_LOG_BYTES)..start];
            dropped += (start - kept.len()) as u64;
            let mut text = String::new();
            if dropped > 0 {
                text.push_str(&format!(
                    "[lambent: {dropped} bytes of earlier output were dropped; the last {MAX_LOG_BYTES} bytes are kept]\n"
                ));
            }
            text.push_str(&String::from_utf8_lossy(kept));
            pending.drain(..after + end + 1);
            dropped = 0;
            searched = 0;
            if tx.send(text).is_err() {
                return;
            }
        }
        // Bound memory between barriers: keep the tail plus room for a split marker.
        if pending.len() > 2 * MAX_LOG_BYTES && searched > MAX_LOG_BYTES {
            let cut = searched - MAX_LOG_BYTES;
            pending.drain(..cut);
            dropped += cut as u64;
            searched -= cut;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
