//! The embedded store: one SQLite database in WAL mode, and
//! code packages on local disk ([`FsCodeStore`]). Implements the `lambent-store`
//! traits; the delivery contract's conformance suite runs against it (`tests/`).
//!
//! Invariants:
//! - Every write goes through one writer thread, which takes all the writes waiting
//!   at that moment and runs them in a single transaction (group commit), each inside
//!   its own savepoint so one failing write does not undo its neighbours.
//! - A writer's caller is answered only after the transaction's COMMIT returned, so
//!   every answered write survives a crash of the node. What the node acknowledges to
//!   anyone (a publish, a deploy, a key) is also fsynced first and survives a power
//!   loss; leases, settles, records and compaction are on disk within
//!   [`SYNC_WITHIN`], and a power loss undoing them only makes a delivery run again
//!   (see [`writer`]).
//! - After a failed sync of the WAL or a failed commit, nothing more commits until a
//!   full checkpoint has copied the log into the database and started it over (the
//!   log on disk may have a hole a later sync does not fill); writes are refused
//!   meanwhile and `health` says why.
//! - Reads use separate connections and never block the writer (WAL).
//! - One node per data directory: `open` takes an exclusive lock on `DIR/lock` and
//!   holds it for the store's life, so leases it finds held at open belong to a dead
//!   process and are released (their attempts stay charged).
//! - A damaged database, or a missing or empty one where a store was created before,
//!   is refused at open, never silently replaced by an empty node.
//! - The writer queue is bounded: ingest past it is refused (`Overloaded`), other
//!   writes wait for room. A panic inside a write stops the writer; `health` says why.

mod events;
mod invocations;
mod learned;
mod registry;
mod schema;
mod sources;
mod tokens;
mod writer;

mod checkpoint;
mod code;

pub use checkpoint::CheckpointLimits;
pub use code::FsCodeStore;
pub use writer::SYNC_WITHIN;
use writer::{CommitStats, Durability, Job, job};

use lambent_store::{Clock, Result, StoreError, SystemClock};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
/// Most writes waiting for the writer; ingest past this is refused with `Overloaded`.
pub const WRITE_QUEUE: usize = 16 * 1024;
/// Written next to the database once it is created: a data directory that has it
/// but no database (or an empty one) lost its database.
const MARKER: &str = "lambent-store";
const RECOVERY: &str = "Restore lambent.db from a backup (with its -wal file, if any), or move the data \
     directory aside to start an empty node; `sqlite3 lambent.db .recover` may salvage what is readable";

/// How to open the store.
#[derive(Clone)]
pub struct SqliteOptions {
    pub clock: Arc<dyn Clock>,
    /// When the write-ahead log is copied back into the database.
    pub checkpoints: CheckpointLimits,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            checkpoints: CheckpointLimits::default(),
        }
    }
}

/// The embedded SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    /// What the writer committed and synced.
    stats: Arc<CommitStats>,
    checkpoints: Arc<checkpoint::CheckpointStats>,
    jobs: mpsc::Sender<Job>,
    readers: Mutex<Vec<Connection>>,
    /// Why the writer stopped, once it has.
    failure: Arc<Mutex<Option<String>>>,
    /// Why the writer refuses writes for now, while it does.
    refusing: Arc<Mutex<Option<String>>>,
    /// The data directory's lock, held while the store lives.
    _lock: std::fs::File,
}

pub(crate) fn corrupt(what: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: e.to_string(),
    }
}

pub(crate) fn sql(doing: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Backend {
        doing,
        source: Box::new(source),
    }
}

/// Every row of a parameterless query, read with `row`.
pub(crate) fn all_rows<T>(
    conn: &Connection,
    query: &str,
    doing: &'static str,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare(query).map_err(sql(doing))?;
    stmt.query_map([], row)
        .map_err(sql(doing))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql(doing))
}

/// Prepared statements each connection keeps (rusqlite's default is 16): more than
/// the store's cached statements, so a writer cycling through publishes, leases,
/// settles, records, keys and sources never re-prepares one it evicted.
const STATEMENT_CACHE: usize = 64;

/// How long a connection waits for a lock another holds.
pub(crate) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(sql("opening the database"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql("setting the busy timeout"))?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
        .map_err(sql("setting pragmas"))?;
    // One plan per statement, whatever its parameters: this SQLite is built with
    // STAT4, under which a statement comparing a parameter with an indexed column is
    // re-prepared whenever that parameter changes — the lease query at every fetch
    // (`now`), a tenth of the writer's time during delivery.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(sql("setting the query planner's stability guarantee"))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) `lambent.db` in `dir` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, SqliteOptions::default())
    }

    pub fn open_with(dir: &Path, options: SqliteOptions) -> Result<Self> {
        Self::open_syncing(dir, options, writer::fdatasync())
    }

    /// `open_with`, with the WAL synced by `sync` (tests make it fail).
    fn open_syncing(dir: &Path, options: SqliteOptions, sync: writer::SyncWal) -> Result<Self> {
        let data_dir = |source| StoreError::DataDir {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(data_dir)?;
        let lock = lock_data_dir(dir)?;
        let path = dir.join("lambent.db");
        check_database(dir, &path)?;
        let writer = open_connection(&path)?;
        quick_check(&writer, &path)?;
        schema::migrate(&writer)?;
        let marker = dir.join(MARKER);
        if !marker.exists() {
            std::fs::write(&marker, "lambent store: lambent.db lives here\n").map_err(data_dir)?;
        }
        // We hold the directory's lock: leases still held belong to a dead process.
        // Their attempts stay charged (an event that crashes the node must not be
        // retried for ever); `fetch` dead-letters one past its attempt limit.
        let released = writer
            .execute(
                "UPDATE deliveries SET state = 'pending', lease_until = NULL, interrupted = 1, next_ms = ?1
                 WHERE state = 'leased'",
                [options.clock.now_ms()],
            )
            .map_err(sql("releasing leases of a previous run"))?;
        if released > 0 {
            tracing::info!(released, "released deliveries leased by a previous run");
        }
        let (jobs, rx) = mpsc::channel(WRITE_QUEUE);
        let stats = Arc::new(CommitStats::default());
        let failure = Arc::new(Mutex::new(None));
        let refusing = Arc::new(Mutex::new(None));
        let checkpoint_stats = Arc::new(checkpoint::CheckpointStats::default());
        let checkpoints = checkpoint::Checkpoints::start(
            &writer,
            path.clone(),
            options.checkpoints,
            checkpoint_stats.clone(),
        )
        .map_err(data_dir)?;
        let writer = writer::Writer {
            checkpoints,
            conn: writer,
            path: path.clone(),
            stats: stats.clone(),
            failure: failure.clone(),
            sync_failures: Default::default(),
            sync,
            hole: None,
            refusing: refusing.clone(),
        };
        std::thread::Builder::new()
            .name("lambent-sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(data_dir)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                clock: options.clock,
                stats,
                checkpoints: checkpoint_stats,
                jobs,
                readers: Mutex::new(Vec::new()),
                failure,
                refusing,
                _lock: lock,
            }),
        })
    }

    /// Every store of a node on this database, with `code` for the packages.
    pub fn stores(&self, code: Arc<dyn lambent_store::CodeStore>) -> lambent_store::Stores {
        let this = Arc::new(self.clone());
        lambent_store::Stores {
            registry: this.clone(),
            events: this.clone(),
            invocations: this.clone(),
            code,
            tokens: this.clone(),
            kv: this.clone(),
            schedules: this.clone(),
            routes: this.clone(),
            sources: this.clone(),
            learned: this,
        }
    }

    pub(crate) fn now(&self) -> lambent_core::EpochMs {
        self.inner.clock.now_ms()
    }

    /// Why the writer stopped, if it has, or refuses writes for now.
    pub fn failure(&self) -> Option<String> {
        let stopped = self
            .inner
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        stopped.or_else(|| {
            self.inner
                .refusing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    /// What the writer committed and synced since open.
    pub fn commit_stats(&self) -> lambent_store::WriteStats {
        self.inner.stats.snapshot()
    }

    /// Checkpoints of the write-ahead log since open: by the checkpointer thread, and
    /// by the writer itself when the log reached its limit.
    pub fn checkpoint_counts(&self) -> (u64, u64) {
        let c = &self.inner.checkpoints;
        (
            c.background.load(std::sync::atomic::Ordering::Relaxed),
            c.by_writer.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Runs `f` in the next group transaction; resolves after that transaction commits
    /// and is on disk. Waits for room in the writer queue.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_with(f, Durability::Synced).await
    }

    /// Like `write`, but resolves once committed, before the commit is on disk (within
    /// [`SYNC_WITHIN`]): for writes a power loss may undo because nothing acknowledged
    /// rests on them (leases).
    pub(crate) async fn write_deferred<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_with(f, Durability::Deferred).await
    }

    /// Like `write_deferred`, and the commit may wait a little for other writes:
    /// for writes nobody waits on (settles, invocation records, compaction).
    pub(crate) async fn write_behind<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_with(f, Durability::Behind).await
    }

    async fn write_with<T, F>(&self, f: F, durability: Durability) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (job, rx) = job(f, durability);
        self.inner
            .jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Like `write`, but refused with `Overloaded` when the writer queue is full
    /// (ingest: shed load at the edge instead of queueing it in memory).
    pub(crate) async fn write_or_refuse<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (job, rx) = job(f, Durability::Synced);
        self.inner.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Overloaded {
                queued: WRITE_QUEUE,
            },
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })?;
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

/// How long a start waits for a lock whose node is gone (see `lock_data_dir`).
const STALE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const STALE_LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether the lock's holder (`pid N`, as written by `lock_data_dir`) has exited.
fn holder_is_gone(holder: &str) -> bool {
    holder
        .strip_prefix("pid ")
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Takes the data directory's lock, or says who holds it.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("lock");
    let io = |source| StoreError::DataDir {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let mut waited = std::time::Duration::ZERO;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.rewind();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim().to_owned();
                // A node killed with -9 can leave its lock held for a moment by a
                // child it was starting (forked, not yet executed). When the node
                // that wrote the lock is gone, wait for that straggler; a live node
                // is refused at once.
                if holder_is_gone(&holder) && waited < STALE_LOCK_WAIT {
                    std::thread::sleep(STALE_LOCK_POLL);
                    waited += STALE_LOCK_POLL;
                    continue;
                }
                return Err(StoreError::Locked {
                    path: dir.display().to_string(),
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else if waited > std::time::Duration::ZERO {
                        format!(
                            "{holder}, which is gone, but a process it started still holds the lock"
                        )
                    } else {
                        holder
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "pid {}", std::process::id()).map_err(io)?;
    Ok(file)
}

/// A data directory that held a store must still have a non-empty database.
fn check_database(dir: &Path, path: &Path) -> Result<()> {
    if !dir.join(MARKER).exists() {
        return Ok(());
    }
    let problem = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "the database is missing, but this data directory held one"
        }
        Ok(m) if m.len() == 0 => {
            "the database is empty (0 bytes), but this data directory held one"
        }
        _ => return Ok(()),
    };
    Err(StoreError::Damaged {
        path: path.display().to_string(),
        problem: problem.into(),
        recovery: RECOVERY,
    })
}

/// `PRAGMA quick_check`: refuses a database whose pages are damaged.
fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    let damaged = |problem: String| StoreError::Damaged {
        path: path.display().to_string(),
        problem,
        recovery: RECOVERY,
    };
    let mut stmt = conn
        .prepare("PRAGMA quick_check")
        .map_err(|e| damaged(format!("the database cannot be read: {e}")))?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| damaged(format!("the database cannot be read: {e}")))?;
    if rows.len() == 1 && rows[0] == "ok" {
        return Ok(());
    }
    let detail: Vec<String> = rows.into_iter().take(3).collect();
    Err(damaged(format!(
        "the database is damaged (integrity check: {})",
        detail.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use lambent_store::EventLog;

    /// Holds `dir`'s lock as a node `pid` would (another open file, so it conflicts).
    fn hold_lock(dir: &Path, pid: u32) -> std::fs::File {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("lock"))
            .unwrap();
        file.try_lock().unwrap();
        write!(file, "pid {pid}").unwrap();
        file
    }

    /// The CI failure this caught: a node killed with -9 can leave its lock held for
    /// a moment by a child it was starting; a new node waits for it instead of
    /// refusing. A live holder is still refused at once.
    #[test]
    fn a_lock_left_by_a_dead_node_is_waited_for_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let straggler = hold_lock(dir.path(), dead);
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(straggler);
        });
        let lock = lock_data_dir(dir.path());
        release.join().unwrap();
        assert!(lock.is_ok(), "{:?}", lock.err());
        drop(lock);

        let live = hold_lock(dir.path(), std::process::id());
        let started = std::time::Instant::now();
        let refused = lock_data_dir(dir.path()).unwrap_err().to_string();
        assert!(
            refused.contains("in use by another lambent node"),
            "{refused}"
        );
        assert!(
            started.elapsed() < STALE_LOCK_WAIT,
            "a live holder was waited for"
        );
        drop(live);
    }

    /// A store whose syncs of the WAL all fail, with the count of attempts, and a
    /// table `t` in it.
    async fn failing_store(dir: &Path) -> (SqliteStore, Arc<std::sync::atomic::AtomicUsize>) {
        let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sync: writer::SyncWal = Box::new({
            let attempts = attempts.clone();
            move |_wal| {
                attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(std::io::Error::other("injected I/O error"))
            }
        });
        let store = SqliteStore::open_syncing(dir, SqliteOptions::default(), sync).unwrap();
        store
            .write(|conn| {
                conn.execute_batch("CREATE TABLE t (x INTEGER)")
                    .map_err(sql("creating"))
            })
            .await
            .unwrap();
        (store, attempts)
    }

    fn insert(x: i64) -> impl FnOnce(&Connection) -> Result<()> + Send + 'static {
        move |conn| {
            conn.execute("INSERT INTO t VALUES (?1)", [x])
                .map(drop)
                .map_err(sql("inserting"))
        }
    }

    async fn rows(store: &SqliteStore) -> i64 {
        store
            .read(|conn| {
                conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                    .map_err(sql("counting"))
            })
            .await
            .unwrap()
    }

    /// A failed fsync of the log may leave a hole in it that a later, successful
    /// sync does not fill, and a crash would then lose every commit after the hole:
    /// after a failed sync the writer copies the whole log into the database and
    /// starts it over (the log is empty after) before it commits anything else.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_of_the_log_is_repaired_before_anything_else_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (store, attempts) = failing_store(dir.path()).await;
        let wal = dir.path().join("lambent.db-wal");
        store.write_deferred(insert(1)).await.unwrap();
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        // The writer syncs the deferred commit by itself; the sync fails.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while attempts.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "never synced");
            tokio::time::sleep(SYNC_WITHIN).await;
        }
        while std::fs::metadata(&wal).unwrap().len() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the log was not copied into the database and started over"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        store.write(insert(2)).await.unwrap();
        assert_eq!(rows(&store).await, 2);
    }

    /// A failed commit may be a failed fsync too: the writer repairs the log after
    /// one by itself, without waiting for another write (here the commit fails on a
    /// deferred foreign key; the log is empty once repaired).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_is_followed_by_a_repair_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .write(|conn| {
                conn.execute_batch(
                    "CREATE TABLE p (id INTEGER PRIMARY KEY);
                     CREATE TABLE c (p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);",
                )
                .map_err(sql("creating"))
            })
            .await
            .unwrap();
        let failed = store
            .write(|conn| {
                conn.execute("INSERT INTO c VALUES (5)", [])
                    .map(drop)
                    .map_err(sql("inserting"))
            })
            .await;
        assert!(
            matches!(&failed, Err(StoreError::NotCommitted(_))),
            "{failed:?}"
        );
        let wal = dir.path().join("lambent.db-wal");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::metadata(&wal).unwrap().len() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the log was not repaired"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(store.health().is_ok());
    }

    /// While the repair cannot be made (here a reader holds the log), writes are
    /// refused with the cause and `health` says so; once it is made, writes go
    /// through again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_are_refused_and_health_fails_until_the_log_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _attempts) = failing_store(dir.path()).await;
        let reader = open_connection(&dir.path().join("lambent.db")).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let seen: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seen, 0);
        // A deferred commit, whose sync fails: the repair waits for the reader.
        store.write_deferred(insert(1)).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let why = loop {
            if let Err(why) = store.health() {
                break why;
            }
            assert!(std::time::Instant::now() < deadline, "health never failed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(
            why.contains("injected I/O error") && why.contains("refused"),
            "{why}"
        );
        let refused = store.write(insert(2)).await;
        assert!(
            matches!(&refused, Err(StoreError::NotCommitted(why)) if why.contains("injected I/O error")),
            "{refused:?}"
        );

        reader.execute_batch("COMMIT").unwrap();
        drop(reader);
        store.write(insert(3)).await.unwrap();
        assert!(store.health().is_ok());
        assert_eq!(rows(&store).await, 2, "the refused write is not there");
    }

    /// Every statement the store caches fits the cache at once: the call sites are
    /// counted in the sources (each names one statement; the writer's `savepoint`
    /// closure is one site for the statements it is called with), so adding
    /// statements past the cache fails here.
    #[test]
    fn the_statement_cache_holds_every_cached_statement() {
        let sources = [
            include_str!("events.rs"),
            include_str!("invocations.rs"),
            include_str!("learned.rs"),
            include_str!("registry.rs"),
            include_str!("sources.rs"),
            include_str!("tokens.rs"),
            include_str!("writer.rs"),
            include_str!("checkpoint.rs"),
            include_str!("lib.rs"),
        ];
        // Built here so that this test's own text does not match.
        let [prepare, exec, define, savepoint] = [
            ["prepare", "_cached("].concat(),
            ["exec", "_cached("].concat(),
            ["fn exec", "_cached("].concat(),
            ["savepoint", "(\""].concat(),
        ];
        let count =
            |pattern: &str| -> usize { sources.iter().map(|s| s.matches(pattern).count()).sum() };
        let statements = count(&prepare) + count(&exec) - count(&define) + count(&savepoint);
        assert!(statements > 16, "{statements}: rusqlite's default would do");
        assert!(
            statements <= STATEMENT_CACHE,
            "{statements} cached statements"
        );

        // And a connection of the store really keeps that many: the first statement
        // is still the same prepared handle (its run count kept) after as many others.
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("lambent.db")).unwrap();
        let runs = |conn: &Connection| {
            let mut first = conn.prepare_cached("SELECT 0").unwrap();
            first.query_row([], |_| Ok(())).unwrap();
            first.get_status(rusqlite::StatementStatus::Run)
        };
        assert_eq!(runs(&conn), 1);
        for i in 1..STATEMENT_CACHE {
            let mut other = conn.prepare_cached(&format!("SELECT {i}")).unwrap();
            other.query_row([], |_| Ok(())).unwrap();
        }
        assert_eq!(
            runs(&conn),
            2,
            "the first statement was evicted and prepared again"
        );
    }

    /// Finding 11: a panic in a write stops the writer visibly instead of silently.
    #[tokio::test]
    async fn a_panic_in_a_write_stops_the_writer_and_health_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        assert!(store.health().is_ok());
        let failed = store
            .write(|_conn| -> Result<()> { panic!("a bug in a write") })
            .await;
        assert!(
            matches!(failed, Err(StoreError::NotCommitted(_))),
            "{failed:?}"
        );
        let why = store.health().unwrap_err();
        assert!(why.contains("a bug in a write"), "{why}");
        let later = store.write(|_conn| Ok(())).await;
        assert!(matches!(later, Err(StoreError::Closed)), "{later:?}");
    }

    /// A cached statement is planned once: the lease query, run with a new `now` at
    /// every fetch, is not re-prepared each time (as it was under STAT4).
    #[test]
    fn statements_are_not_re_prepared_when_their_parameters_change() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("lambent.db")).unwrap();
        schema::migrate(&conn).unwrap();
        let mut stmt = conn
            .prepare(
                "UPDATE deliveries SET state = 'leased', lease_until = ?3 WHERE id IN (SELECT id FROM deliveries
                    WHERE state = 'pending' AND function = ?1 AND next_ms <= ?2 ORDER BY next_ms, id LIMIT ?4)
                 RETURNING id",
            )
            .unwrap();
        for now in 1..=3_i64 {
            let mut rows = stmt
                .query(rusqlite::params!["f", now, now + 1, 16])
                .unwrap();
            while rows.next().unwrap().is_some() {}
        }
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "re-prepared at every new `now`"
        );
    }

    /// Finding 11: overload is refused (503 upstream), not queued without bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ingest_past_a_full_writer_queue_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        // Hold the writer inside one write while the queue fills.
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |_conn| {
                        let _ = entered_tx.send(());
                        let _ = release_rx.recv();
                        Ok(())
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || entered_rx.recv())
            .await
            .unwrap()
            .unwrap();
        let mut queued = Vec::new();
        for _ in 0..WRITE_QUEUE {
            let (job, rx) = job(|_conn| Ok(()), Durability::Synced);
            store.inner.jobs.try_send(job).ok().unwrap();
            queued.push(rx);
        }
        let refused = store.write_or_refuse(|_conn| Ok(())).await;
        assert!(
            matches!(refused, Err(StoreError::Overloaded { .. })),
            "{refused:?}"
        );
        release_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for rx in queued {
            rx.await.unwrap().unwrap();
        }
        store.write_or_refuse(|_conn| Ok(())).await.unwrap();
    }
}
