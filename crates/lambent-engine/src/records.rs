//! Invocation records of synchronous calls, written behind: the caller gets its
//! answer at once and the record joins the next group commit from a bounded buffer
//! (full buffer: the caller waits for room, so memory stays bounded). A crash, or a
//! write the store refuses, can lose the last few such records — never an event, a delivery or a settle, whose
//! writes stay on the answer's path.

use lambent_store::{InvocationLog, InvocationRecord};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Records waiting to be written.
const BUFFER: usize = 4096;
/// Most records written in one store call.
const BATCH: usize = 512;
/// Under load (more than one record waiting), a batch waits this long for more
/// before it is written: fewer, larger commits, each one an fsync. A lone record is
/// written at once.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

enum Message {
    Record(InvocationRecord),
    /// Answered once every record sent before it was written.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub(crate) struct RecordWriter {
    tx: mpsc::Sender<Message>,
}

impl RecordWriter {
    /// Starts the writer task; it ends when every `RecordWriter` is dropped.
    pub fn start(log: Arc<dyn InvocationLog>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(BUFFER);
        let task = tokio::spawn(run(log, rx));
        (Self { tx }, task)
    }

    pub async fn record(&self, record: InvocationRecord) {
        if self.tx.send(Message::Record(record)).await.is_err() {
            tracing::warn!("invocation record dropped: the record writer has stopped");
        }
    }

    /// Waits until everything recorded so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(log: Arc<dyn InvocationLog>, mut rx: mpsc::Receiver<Message>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut lingered = false;
        loop {
            while let Some(message) = next.take() {
                match message {
                    Message::Record(r) => batch.push(r),
                    Message::Flush(done) => flushes.push(done),
                }
                if batch.len() < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if lingered || batch.len() < 2 || batch.len() >= BATCH || !flushes.is_empty() {
                break;
            }
            lingered = true;
            tokio::time::sleep(LINGER).await;
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            let records = std::mem::take(&mut batch);
            let lost = records.len();
            // No copy is kept for a retry (a batch may hold megabytes of logs): a
            // failed write loses these records, as a crash would, and says so.
            if let Err(e) = log.record_many(records).await {
                tracing::error!(lost, error = %e, "could not write invocation records");
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}
