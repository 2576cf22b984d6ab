//! The writer thread: group commit, and which commits wait for the disk.
//!
//! Every write goes through one thread, which takes all the writes waiting at that
//! moment and runs them in a single transaction, each inside its own savepoint so one
//! failing write does not undo its neighbours. A caller is answered once COMMIT has
//! returned.
//!
//! A write is [`Durability::Synced`] or [`Durability::Deferred`]. A group holding a
//! synced write commits with `synchronous=FULL`: the WAL is fsynced before anyone in
//! the group is answered, and with it every deferred commit before it (the WAL is
//! appended in order). A group of deferred writes only commits (`synchronous=NORMAL`):
//! it is visible at once and survives a crash of the node (the OS holds it), and it
//! reaches the disk with the next synced commit, or by an fsync of the WAL at most
//! [`SYNC_WITHIN`] after it, whichever comes first. So a power loss can undo the
//! deferred writes of the last [`SYNC_WITHIN`], never a synced one. After a failed
//! sync or commit the writer repairs the log before it commits again
//! (`Writer::recover`).

use lambent_store::{Result, StoreError, WriteStats};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use crate::sql;

/// Most writes folded into one transaction.
const MAX_GROUP: usize = 1024;

/// Longest a deferred commit stays off the disk.
pub const SYNC_WITHIN: Duration = Duration::from_millis(100);

/// While syncing the WAL keeps failing (it is tried again every [`SYNC_WITHIN`]),
/// the log says so at most this often.
const SYNC_FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a group of [`Durability::Behind`] writes only waits for more before its
/// commit, and how many end the wait. A commit writes every page it touched, so one
/// commit for a dozen settles writes little more than one for a single settle. Any
/// other write ends the wait at once. It waits only while others are writing (its
/// last group, just finished, held several writes): a lone settle, or one caller's
/// writes one after another, have no company coming.
const DEFERRED_LINGER: Duration = Duration::from_millis(2);
const DEFERRED_GROUP: usize = 64;

/// Whether a write's caller waits for it to be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// On disk before the caller is answered: whatever the node acknowledges to
    /// someone else (a publish, a deploy, a key written by a function).
    Synced,
    /// Committed, visible, and safe from a crash of the node before the caller is
    /// answered; on disk within [`SYNC_WITHIN`]. For what a power loss may undo
    /// without losing anything acknowledged: a lease whose loss means the delivery
    /// runs again.
    Deferred,
    /// Deferred, and the commit may wait [`DEFERRED_LINGER`] for company: for writes
    /// nobody waits on (a settle, whose slot is already free; a record; compaction).
    Behind,
}

/// Transactions the writer committed, the writes they carried, how many of them
/// waited for an fsync, and the fsyncs of deferred commits on their own.
#[derive(Debug, Default)]
pub(crate) struct CommitStats {
    transactions: AtomicU64,
    writes: AtomicU64,
    synced: AtomicU64,
    wal_syncs: AtomicU64,
}

impl CommitStats {
    pub(crate) fn snapshot(&self) -> WriteStats {
        // Transactions before writes (see `Writer::run`): writes >= transactions.
        let transactions = self.transactions.load(Ordering::Acquire);
        WriteStats {
            transactions,
            writes: self.writes.load(Ordering::Relaxed),
            synced_commits: self.synced.load(Ordering::Relaxed),
            background_syncs: self.wal_syncs.load(Ordering::Relaxed),
        }
    }
}

/// A write waiting for the next group transaction.
pub(crate) trait WriteJob: Send {
    /// Runs the write inside the open transaction; false when it failed.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller with the write's result once the commit's fate is known.
    fn finish(self: Box<Self>, commit: Result<()>);
    fn durability(&self) -> Durability;
}

struct TypedJob<T, F> {
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
    durability: Durability,
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

    fn durability(&self) -> Durability {
        self.durability
    }
}

pub(crate) type Job = Box<dyn WriteJob>;
pub(crate) type Reply<T> = oneshot::Receiver<Result<T>>;

pub(crate) fn job<T, F>(f: F, durability: Durability) -> (Job, Reply<T>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let job: Job = Box::new(TypedJob {
        work: Some(f),
        result: None,
        reply,
        durability,
    });
    (job, rx)
}

/// The writer thread's state beside its connection.
pub(crate) struct Writer {
    pub conn: Connection,
    /// Wakes the checkpointer, or checkpoints, after commits.
    pub checkpoints: crate::checkpoint::Checkpoints,
    /// The database's path; its WAL is this with `-wal`.
    pub path: PathBuf,
    pub stats: Arc<CommitStats>,
    /// Why the writer stopped, once it has.
    pub failure: Arc<Mutex<Option<String>>>,
    /// Failed repairs of the WAL since the last one that succeeded, for the log.
    pub sync_failures: FailureLog,
    /// Syncs the WAL (an `fdatasync`; tests make it fail).
    pub sync: SyncWal,
    /// Why the log on disk may have a hole (see `Writer::recover`), until the
    /// database has been made whole again.
    pub hole: Option<String>,
    /// Why writes are refused (a hole not yet repaired), for `health`.
    pub refusing: Arc<Mutex<Option<String>>>,
}

/// Longest a repair waits for readers to leave the log before it gives up until the
/// next try (the writer waits meanwhile).
const REPAIR_WAIT: Duration = Duration::from_secs(1);

/// Puts the write-ahead log on disk.
pub(crate) type SyncWal = Box<dyn FnMut(&Path) -> std::io::Result<()> + Send>;

/// The real sync of the write-ahead log.
pub(crate) fn fdatasync() -> SyncWal {
    Box::new(|wal: &Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(wal)?
            .sync_data()
    })
}

impl Writer {
    /// Runs until every sender is gone (or a write panics).
    pub fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut batch: Vec<Job> = Vec::with_capacity(MAX_GROUP);
        // `synchronous=FULL` is what the connection was opened with.
        let mut full = true;
        // When the oldest commit not yet on disk was made.
        let mut unsynced: Option<Instant> = None;
        // When the writer last finished a group, and how many writes it held.
        let mut last_group = (Instant::now(), 0);
        loop {
            // A repair still to make is tried again soon, writes or not.
            let wake = match &self.hole {
                Some(_) => Some(Instant::now() + SYNC_WITHIN),
                None => unsynced.map(|since| since + SYNC_WITHIN),
            };
            let next = match wake {
                None => rx.blocking_recv(),
                Some(at) => match recv_until(&mut rx, at) {
                    Received::Job(job) => Some(job),
                    Received::Closed => None,
                    Received::TimedOut => {
                        unsynced = self.sync_wal();
                        continue;
                    }
                },
            };
            let Some(first) = next else { break };
            batch.push(first);
            while batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if should_linger(last_group, &batch) {
                linger(&mut rx, &mut batch);
            }
            if self.hole.is_some() {
                if let Err(refused) = self.recover() {
                    last_group.1 = batch.len();
                    refuse_all(&mut batch, &refused);
                    last_group.0 = Instant::now();
                    continue;
                }
                unsynced = None;
            }
            let synced = batch.iter().any(|j| j.durability() == Durability::Synced);
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                set_full_sync(&self.conn, &mut full, synced)?;
                run_group(&self.conn, &mut batch)
            }));
            let outcome = match ran {
                Ok(outcome) => outcome,
                Err(panic) => return self.stop_after_panic(panic, &mut batch, unsynced),
            };
            if outcome.is_ok() {
                let stats = &self.stats;
                // Writes first, the transaction after (released): a snapshot that
                // reads the transactions first never counts fewer writes than them.
                stats
                    .writes
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                stats.transactions.fetch_add(1, Ordering::Release);
                if synced {
                    stats.synced.fetch_add(1, Ordering::Relaxed);
                    unsynced = None;
                } else {
                    let since = *unsynced.get_or_insert_with(Instant::now);
                    // A writer never idle enough to time out still syncs in time.
                    if since.elapsed() >= SYNC_WITHIN {
                        unsynced = self.sync_wal();
                    }
                }
            }
            let detail = outcome.as_ref().err().map(ToString::to_string);
            if let Some(detail) = &detail {
                // A failed commit may be a failed fsync, which can lose pages of
                // earlier commits too.
                self.hole = Some(format!("a commit failed: {detail}"));
            }
            last_group.1 = batch.len();
            for job in batch.drain(..) {
                job.finish(match &detail {
                    None => Ok(()),
                    Some(detail) => Err(StoreError::NotCommitted(detail.clone())),
                });
            }
            // After the answers: a checkpoint here delays the next group, not this one.
            if detail.is_none() {
                self.checkpoints.after_commit(&self.conn);
            }
            last_group.0 = Instant::now();
        }
        // Closed: what is committed goes to disk before the store is gone.
        if unsynced.is_some() {
            self.sync_wal();
        }
    }

    /// After a failed fsync the log on disk may have a hole: the OS can drop the
    /// pages whose write-back failed and report the error once, so a later sync
    /// succeeds without them — and recovery after a crash stops reading the log at
    /// the hole, losing every commit after it, acknowledged ones included. So nothing
    /// more is committed until a full checkpoint has copied the whole log into the
    /// database (reading it through the OS's cache, which holds what was written),
    /// synced the database and started the log over. `Err` says why writes are
    /// refused meanwhile.
    fn recover(&mut self) -> std::result::Result<(), String> {
        let Some(why) = self.hole.clone() else {
            return Ok(());
        };
        let checkpoint = self.conn.busy_timeout(REPAIR_WAIT).and_then(|()| {
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    row.get::<_, i64>(0)
                })
        });
        let _ = self.conn.busy_timeout(crate::BUSY_TIMEOUT);
        let refused = match checkpoint {
            Ok(0) => {
                self.hole = None;
                *self.refusing.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.sync_failures.recovered();
                tracing::warn!(
                    path = %self.path.display(),
                    cause = %why,
                    "a full checkpoint made the database whole again"
                );
                return Ok(());
            }
            Ok(_) => "a reader kept the log from being copied back".to_owned(),
            Err(e) => e.to_string(),
        };
        let refused =
            format!("{why}; writes are refused until the database is whole again ({refused})");
        *self.refusing.lock().unwrap_or_else(|p| p.into_inner()) = Some(refused.clone());
        if let Some(unlogged) = self.sync_failures.failed(Instant::now()) {
            tracing::error!(
                path = %self.path.display(),
                error = %refused,
                failed_since_last_logged = unlogged,
                "trying again every {} ms",
                SYNC_WITHIN.as_millis()
            );
        }
        Err(refused)
    }

    /// Puts the deferred commits on disk; when that fails, when to try again.
    fn sync_wal(&mut self) -> Option<Instant> {
        if self.hole.is_none() {
            match (self.sync)(&wal_path(&self.path)) {
                Ok(()) => {
                    self.stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Err(e) => {
                    self.hole = Some(format!(
                        "could not sync the write-ahead log {}-wal: {e}",
                        self.path.display()
                    ));
                }
            }
        }
        // A hole to repair: `recover` logs the cause either way; once it succeeds
        // everything committed is on disk.
        self.recover().err().map(|_| Instant::now())
    }

    /// A bug in a write: nothing of this group is committed, and the writer stops
    /// rather than guess at the connection's state.
    fn stop_after_panic(
        &mut self,
        panic: Box<dyn std::any::Any + Send>,
        batch: &mut Vec<Job>,
        unsynced: Option<Instant>,
    ) {
        let _ = self.conn.execute_batch("ROLLBACK");
        if unsynced.is_some() {
            self.sync_wal();
        }
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let why = format!("the store's writer stopped after a panic in a write: {what}");
        tracing::error!("{why}");
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
        refuse_all(batch, &why);
    }
}

/// Answers every write of `batch`: not committed, because `why`.
fn refuse_all(batch: &mut Vec<Job>, why: &str) {
    for job in batch.drain(..) {
        job.finish(Err(StoreError::NotCommitted(why.to_owned())));
    }
}

/// When a failure that repeats deserves a line in the log: the first time, then at
/// most every [`SYNC_FAILURE_LOG_EVERY`], saying how many went unlogged between.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    /// Failures since the last success.
    failures: u64,
    /// Failures not logged since the last line.
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl FailureLog {
    /// Counts a failure; `Some(failures not logged since the last line)` when this
    /// one is to be logged.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        self.failures += 1;
        let due = self
            .last_logged
            .is_none_or(|at| now.saturating_duration_since(at) >= SYNC_FAILURE_LOG_EVERY);
        if !due {
            self.unlogged += 1;
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// A success: `Some(failures before it)` when there were any.
    fn recovered(&mut self) -> Option<u64> {
        let failures = std::mem::take(self).failures;
        (failures > 0).then_some(failures)
    }
}

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Switches the connection between syncing commits and not, when it must.
fn set_full_sync(conn: &Connection, full: &mut bool, want: bool) -> Result<()> {
    if *full != want {
        let pragma = if want {
            "PRAGMA synchronous=FULL"
        } else {
            "PRAGMA synchronous=NORMAL"
        };
        conn.execute_batch(pragma)
            .map_err(sql("choosing whether a commit syncs"))?;
        *full = want;
    }
    Ok(())
}

/// Runs every job of the batch in one transaction, each in its own savepoint.
fn run_group(conn: &Connection, batch: &mut [Job]) -> Result<()> {
    // Cached: parsed again for every write, they showed in the writer's profile.
    let savepoint = |what: &str| conn.prepare_cached(what).and_then(|mut s| s.execute([]));
    savepoint("BEGIN IMMEDIATE").map_err(sql("beginning a transaction"))?;
    for job in batch.iter_mut() {
        let step = savepoint("SAVEPOINT w")
            .and_then(|_| {
                if !job.run(conn) {
                    savepoint("ROLLBACK TO w")?;
                }
                savepoint("RELEASE w")
            })
            .map_err(sql("running a write"));
        if let Err(e) = step {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    if let Err(e) = savepoint("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(sql("committing a transaction")(e));
    }
    Ok(())
}

/// Whether a group waits for company: it holds only writes behind, and others are
/// writing (the last group, finished just now, held several).
fn should_linger((finished, writes): (Instant, usize), batch: &[Job]) -> bool {
    writes > 1
        && finished.elapsed() < DEFERRED_LINGER
        && batch.iter().all(|j| j.durability() == Durability::Behind)
}

/// Adds to a group of writes behind what comes within [`DEFERRED_LINGER`], until
/// a write that should not wait comes.
fn linger(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    let until = Instant::now() + DEFERRED_LINGER;
    while batch.len() < DEFERRED_GROUP {
        match recv_until(rx, until) {
            Received::Job(job) => {
                let behind = job.durability() == Durability::Behind;
                batch.push(job);
                if !behind {
                    return;
                }
            }
            // A closed queue is found again by the next receive.
            Received::Closed | Received::TimedOut => return,
        }
    }
}

enum Received {
    Job(Job),
    Closed,
    TimedOut,
}

/// Wakes the writer thread when a job arrives.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// `blocking_recv` with a deadline, for the writer thread (no runtime of its own).
fn recv_until(rx: &mut mpsc::Receiver<Job>, deadline: Instant) -> Received {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match rx.poll_recv(&mut cx) {
            Poll::Ready(Some(job)) => return Received::Job(job),
            Poll::Ready(None) => return Received::Closed,
            Poll::Pending => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Received::TimedOut;
        }
        std::thread::park_timeout(deadline - now);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A queue holding writes of these kinds; the sender is returned to keep it open
    /// (the wait must end by its own rules, not because the queue closed).
    fn queued(kinds: &[Durability]) -> (mpsc::Sender<Job>, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel(16);
        for &kind in kinds {
            let (job, _reply) = job(|_conn| Ok(()), kind);
            tx.try_send(job).ok().unwrap();
        }
        (tx, rx)
    }

    fn kinds(batch: &[Job]) -> Vec<Durability> {
        batch.iter().map(|j| j.durability()).collect()
    }

    /// Writes behind gather until a write that should not wait: it joins the group
    /// and ends the wait; what comes after it is the next group's.
    #[test]
    fn a_group_behind_takes_company_until_a_write_that_cannot_wait() {
        use Durability::{Behind, Deferred, Synced};
        for stopper in [Synced, Deferred] {
            let (_tx, mut rx) = queued(&[Behind, Behind, stopper, Behind]);
            let (first, _reply) = job(|_conn| Ok(()), Behind);
            let mut batch = vec![first];
            linger(&mut rx, &mut batch);
            assert_eq!(kinds(&batch), [Behind, Behind, Behind, stopper]);
            assert!(rx.try_recv().is_ok(), "the write after the stopper waits");
        }
    }

    /// Only a group of writes behind waits, and only while others are writing: one
    /// caller's writes in turn (a last group of one) or a writer that was idle commit
    /// at once.
    #[test]
    fn a_group_waits_only_while_others_are_writing() {
        use Durability::{Behind, Deferred, Synced};
        let group = |kinds: &[Durability]| -> Vec<Job> {
            kinds.iter().map(|&k| job(|_conn| Ok(()), k).0).collect()
        };
        let now = Instant::now();
        assert!(should_linger((now, 3), &group(&[Behind, Behind])));
        assert!(
            !should_linger((now, 1), &group(&[Behind])),
            "one caller's writes"
        );
        let idle = now.checked_sub(Duration::from_secs(1)).unwrap();
        assert!(
            !should_linger((idle, 3), &group(&[Behind])),
            "an idle writer"
        );
        for other in [Synced, Deferred] {
            assert!(!should_linger((now, 3), &group(&[Behind, other])));
        }
    }

    /// A sync that keeps failing is logged at once, then every ten seconds with the
    /// count of failures between (not at each retry, ten times a second); a success
    /// says how many failed and starts over.
    #[test]
    fn a_repeating_sync_failure_is_logged_at_intervals_with_a_count() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut log = FailureLog::default();
        assert_eq!(log.recovered(), None, "nothing failed");
        assert_eq!(log.failed(at(0)), Some(0), "the first failure is logged");
        let logged: Vec<(u64, u64)> = (1..=250)
            .filter_map(|i| log.failed(at(i * 100)).map(|n| (i * 100, n)))
            .collect();
        assert_eq!(logged, [(10_000, 99), (20_000, 99)]);
        assert_eq!(log.recovered(), Some(251));
        assert_eq!(
            log.failed(at(25_100)),
            Some(0),
            "after a success, at once again"
        );
    }

    /// With nothing more coming the wait ends by itself, and it never makes a group
    /// larger than its bound.
    #[test]
    fn a_group_behind_waits_a_bounded_time_for_a_bounded_number() {
        let (_tx, mut rx) = queued(&[Durability::Behind]);
        let mut batch = Vec::new();
        linger(&mut rx, &mut batch);
        assert_eq!(batch.len(), 1);
        let mut full: Vec<Job> = (0..DEFERRED_GROUP)
            .map(|_| job(|_conn| Ok(()), Durability::Behind).0)
            .collect();
        let (_tx, mut rx) = queued(&[Durability::Behind]);
        linger(&mut rx, &mut full);
        assert_eq!(full.len(), DEFERRED_GROUP);
    }
}
