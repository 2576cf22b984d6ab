//! Per-invocation capture of an instance's stdout and stderr.
//!
//! The child writes both streams into one pipe (as Lambda merges them into one log
//! stream). Lambent keeps a write end too: when an invocation ends it writes a
//! barrier marker into the same pipe. A pipe keeps order, and everything the child
//! wrote before answering was written before Lambent's barrier, so the bytes before
//! barrier *n* are exactly the output of the invocations up to *n* — no sleeps, no
//! guessing. (Writes up to PIPE_BUF are atomic, so a barrier is never torn.)

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
    pub fn new(token: &str) -> std::io::Result<(Self, os_pipe::PipeWriter)> {
        let (reader, writer) = os_pipe::pipe()?;
        let child_end = writer.try_clone()?;
        let (tx, chunks) = mpsc::unbounded_channel();
        let marker = format!("\x1eLAMBENT-BARRIER-{token}-");
        std::thread::Builder::new()
            .name("lambent-log-capture".into())
            .spawn(move || read_loop(reader, marker.into_bytes(), tx))?;
        Ok((
            Self {
                writer,
                token: token.to_owned(),
                next_barrier: 0,
                chunks,
            },
            child_end,
        ))
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
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(start) = find(&pending, &marker) {
            let after = start + marker.len();
            let Some(end) = pending[after..].iter().position(|&b| b == 0x1e) else {
                break; // the rest of the barrier has not arrived yet
            };
            let text = String::from_utf8_lossy(tail(&pending[..start], MAX_LOG_BYTES)).into_owned();
            pending.drain(..after + end + 1);
            if tx.send(text).is_err() {
                return;
            }
        }
        // Bound memory between barriers: keep the tail plus room for a split marker.
        if pending.len() > 2 * MAX_LOG_BYTES {
            let cut = pending.len() - MAX_LOG_BYTES;
            pending.drain(..cut);
        }
    }
}

fn tail(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[bytes.len().saturating_sub(max)..]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_split_exactly_at_barriers() {
        let (mut capture, mut child) = Capture::new("t").unwrap();
        child.write_all(b"first\npartial").unwrap();
        assert_eq!(capture.take().await, "first\npartial");
        assert_eq!(capture.take().await, "");
        child.write_all(b"second\n").unwrap();
        assert_eq!(capture.take().await, "second\n");
    }
}
