//! Invocation records of synchronous calls, written behind: the caller gets its
//! answer at once and the record joins the next group commit from a bounded buffer
//! (full buffer: the caller waits for room, so memory stays bounded), at most
//! [`LINGER`] later. A crash, or a write the store refuses, can lose the last few such
//! records — never an event, a delivery or a settle, whose writes stay on the
//! answer's path.

use lambent_store::{InvocationLog, InvocationRecord};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Records waiting to be written.
const BUFFER: usize = 4096;
/// Most records written in one store call.
const BATCH: usize = 512;
/// How long a record waits for others before it is written: fewer, larger commits,
/// each one an fsync. Even one caller at a time makes hundreds of records a second,
/// and a commit each took the writer thread's CPU from the callers on a small machine.
/// A read of the records (or a shutdown) flushes at once, so nobody waits this out.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

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
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Message::Record(r)) => batch.push(r),
                Some(Message::Flush(done)) => flushes.push(done),
                None => {}
            }
            if batch.len() >= BATCH || !flushes.is_empty() {
                break;
            }
            // Take what is waiting without a timer; then wait for more, or the linger.
            if let Ok(message) = rx.try_recv() {
                next = Some(message);
                continue;
            }
            tokio::select! {
                message = rx.recv() => match message {
                    Some(message) => next = Some(message),
                    None => break,
                },
                () = &mut linger => break,
            }
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

/// A record with every field at its plainest, for tests.
#[cfg(test)]
pub(crate) fn plain_record(
    request_id: &str,
    outcome: lambent_core::InvocationOutcome,
) -> InvocationRecord {
    InvocationRecord {
        seq: 0,
        request_id: request_id.into(),
        function: "f".into(),
        version: 1,
        delivery_id: None,
        event_id: None,
        attempt: 1,
        started_ms: 0,
        duration_us: 0,
        cold: false,
        outcome,
        error_type: None,
        error_message: None,
        logs: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambent_core::InvocationOutcome;
    use lambent_store::InvocationQuery;
    use std::sync::Mutex;

    /// Keeps the size of every write.
    #[derive(Default)]
    struct Writes(Mutex<Vec<usize>>);

    #[async_trait::async_trait]
    impl InvocationLog for Writes {
        async fn record(&self, _: InvocationRecord) -> lambent_store::Result<()> {
            self.0.lock().unwrap().push(1);
            Ok(())
        }
        async fn record_many(&self, records: Vec<InvocationRecord>) -> lambent_store::Result<()> {
            self.0.lock().unwrap().push(records.len());
            Ok(())
        }
        async fn list_invocations(
            &self,
            _: InvocationQuery,
        ) -> lambent_store::Result<Vec<InvocationRecord>> {
            Ok(Vec::new())
        }
        async fn compact(&self, _: i64, _: usize) -> lambent_store::Result<usize> {
            Ok(0)
        }
    }

    fn record(n: u32) -> InvocationRecord {
        plain_record(&format!("r{n}"), InvocationOutcome::Success)
    }

    /// One caller at a time (each record alone in the queue) still gets one commit
    /// for many records, not one each.
    #[tokio::test(start_paused = true)]
    async fn records_of_calls_one_at_a_time_share_a_write() {
        let log = Arc::new(Writes::default());
        let (writer, _task) = RecordWriter::start(log.clone());
        for n in 0..5 {
            writer.record(record(n)).await;
            tokio::time::sleep(LINGER / 10).await;
        }
        tokio::time::sleep(LINGER).await;
        assert_eq!(*log.0.lock().unwrap(), vec![5]);
    }

    /// A read of the records flushes: it does not wait out the linger.
    #[tokio::test(start_paused = true)]
    async fn a_flush_writes_at_once() {
        let log = Arc::new(Writes::default());
        let (writer, _task) = RecordWriter::start(log.clone());
        writer.record(record(1)).await;
        let asked = tokio::time::Instant::now();
        writer.flush().await;
        assert!(asked.elapsed() < LINGER, "{:?}", asked.elapsed());
        assert_eq!(*log.0.lock().unwrap(), vec![1]);
    }
}
