//! The embedded store: one SQLite database in WAL mode with `synchronous=FULL`.
//!
//! Invariants:
//! - Every write goes through one writer thread, which takes all the writes waiting
//!   at that moment and runs them in a single transaction (group commit), each inside
//!   its own savepoint so one failing write does not undo its neighbours.
//! - A writer's caller is answered only after the transaction's COMMIT returned, so
//!   an acknowledged write survives a crash and, with `synchronous=FULL`, a power loss.
//! - Reads use separate connections and never block the writer (WAL).

mod events;
mod invocations;
mod registry;
mod schema;

use crate::{Result, StoreError};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Most writes folded into one transaction.
const MAX_GROUP: usize = 1024;

/// How many transactions the writer committed and how many writes they carried.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub transactions: AtomicU64,
    pub writes: AtomicU64,
}

/// A write waiting for the next group transaction.
trait WriteJob: Send {
    /// Runs the write inside the open transaction; false when it failed.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller with the write's result once the commit's fate is known.
    fn finish(self: Box<Self>, commit: Result<()>);
}

struct TypedJob<T, F> {
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send, F: FnOnce(&Connection) -> Result<T> + Send> WriteJob for TypedJob<T, F> {
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<()>) {
        let answer = match (commit, self.result) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Closed),
        };
        let _ = self.reply.send(answer);
    }
}

type Job = Box<dyn WriteJob>;

/// The embedded SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Transactions committed and writes they carried (group-commit statistics).
    stats: Arc<CommitStats>,
    jobs: mpsc::UnboundedSender<Job>,
    readers: Mutex<Vec<Connection>>,
}

pub(crate) fn sql(doing: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { doing, source }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(sql("opening the database"))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sql("setting the busy timeout"))?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
        .map_err(sql("setting pragmas"))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) `lambent.db` in `dir` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("lambent.db");
        let writer = open_connection(&path)?;
        schema::migrate(&writer)?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(CommitStats::default());
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("lambent-sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx, &writer_stats))
            .map_err(|source| StoreError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                stats,
                jobs,
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Committed transactions and the writes they carried, since open.
    pub fn commit_stats(&self) -> (u64, u64) {
        (
            self.inner.stats.transactions.load(Ordering::Relaxed),
            self.inner.stats.writes.load(Ordering::Relaxed),
        )
    }

    /// Runs `f` in the next group transaction; resolves after that transaction commits.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(TypedJob {
            work: Some(f),
            result: None,
            reply,
        });
        self.inner.jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read on a pooled connection, off the async runtime.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut pool| pool.pop());
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&inner.path)?,
            };
            let result = f(&conn);
            if let Ok(mut pool) = inner.readers.lock()
                && pool.len() < 8
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::UnboundedReceiver<Job>, stats: &CommitStats) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = run_group(&conn, &mut batch);
        if outcome.is_ok() {
            stats.transactions.fetch_add(1, Ordering::Relaxed);
            stats
                .writes
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        let detail = outcome.as_ref().err().map(ToString::to_string);
        for job in batch.drain(..) {
            job.finish(match &detail {
                None => Ok(()),
                Some(detail) => Err(StoreError::NotCommitted(detail.clone())),
            });
        }
    }
}

/// Runs every job of the batch in one transaction, each in its own savepoint.
fn run_group(conn: &Connection, batch: &mut [Job]) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(sql("beginning a transaction"))?;
    for job in batch.iter_mut() {
        let step = conn
            .execute_batch("SAVEPOINT w")
            .and_then(|()| {
                if !job.run(conn) {
                    conn.execute_batch("ROLLBACK TO w")?;
                }
                conn.execute_batch("RELEASE w")
            })
            .map_err(sql("running a write"));
        if let Err(e) = step {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(sql("committing a transaction")(e));
    }
    Ok(())
}
