//! Checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1000
//! pages: the writer copies those pages into the database and fsyncs it while every
//! caller of its group waits (about a sixth of the writer's time under batch ingest).
//! Here the writer only counts the WAL's pages (a WAL hook) and hands the copying to a
//! thread of its own with its own connection, which checkpoints `PASSIVE`ly (never
//! blocking the writer or readers).
//!
//! A WAL starts again from its first page only when a write begins with every frame
//! copied back; while the writer keeps committing, the checkpointer is always a few
//! frames behind, so the log would grow without end. Once it holds
//! [`CheckpointLimits::restart`] pages the writer checkpoints what is left itself
//! (the few frames since the checkpointer's last pass) after its commit, and its next
//! transaction starts the log over. The checkpointer is not woken while the log is
//! past that limit; should it still be mid-pass, the writer's checkpoint finds it busy
//! and is tried again after the next commit, so the log passes its limit by a few
//! commits at most.

use rusqlite::Connection;
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// When the WAL is checkpointed, in pages.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointLimits {
    /// New pages in the WAL that wake the checkpointer.
    pub background: u32,
    /// Pages in the WAL past which the writer checkpoints the rest after its commit,
    /// so the log starts over.
    pub restart: u32,
}

impl Default for CheckpointLimits {
    fn default() -> Self {
        // SQLite's own autocheckpoint threshold, and a WAL of up to ~64 MiB.
        Self {
            background: 1000,
            restart: 16_000,
        }
    }
}

/// Checkpoints made (read by `SqliteStore::checkpoint_counts`).
#[derive(Debug, Default)]
pub(crate) struct CheckpointStats {
    pub background: AtomicU64,
    pub by_writer: AtomicU64,
}

/// Longest a repeating checkpoint failure goes unlogged.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

thread_local! {
    /// The WAL's size in pages after the last commit on this thread's connection (the
    /// hook runs inside COMMIT, on the committing thread: the writer's).
    static WAL_PAGES: Cell<u32> = const { Cell::new(0) };
}

fn note_wal_pages(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(u32::try_from(pages).unwrap_or(0)));
    Ok(())
}

/// The writer's side: after each commit, [`Checkpoints::after_commit`].
pub(crate) struct Checkpoints {
    limits: CheckpointLimits,
    /// The WAL's size when the checkpointer was last woken.
    woken_at: u32,
    /// When a failed checkpoint of the writer's was last logged.
    warned: Option<std::time::Instant>,
    wake: SyncSender<()>,
    stats: Arc<CheckpointStats>,
}

impl Checkpoints {
    /// Replaces SQLite's automatic checkpoint on the writer's connection `conn` with
    /// a checkpointer thread on a connection of its own to `path`.
    pub fn start(
        conn: &Connection,
        path: PathBuf,
        limits: CheckpointLimits,
        stats: Arc<CheckpointStats>,
    ) -> std::io::Result<Self> {
        let (wake, woken) = sync_channel(1);
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("lambent-ckpt".into())
            .spawn(move || checkpointer(path, woken, thread_stats))?;
        // Setting a WAL hook turns the automatic checkpoint off (it is one).
        conn.wal_hook(Some(note_wal_pages));
        Ok(Self {
            limits,
            woken_at: 0,
            warned: None,
            wake,
            stats,
        })
    }

    /// After a commit of the writer's: wakes the checkpointer when enough pages came,
    /// and checkpoints on `conn` itself when the WAL is past its limit.
    pub fn after_commit(&mut self, conn: &Connection) {
        let pages = WAL_PAGES.with(Cell::get);
        if pages < self.woken_at {
            // The log started over.
            self.woken_at = 0;
        }
        if pages >= self.limits.restart {
            match checkpoint(conn) {
                // Another checkpoint (the checkpointer's pass) held the lock: tried
                // again after the next commit.
                Ok(Pass::Busy) => {}
                Ok(Pass::Done) => {
                    self.stats.by_writer.fetch_add(1, Ordering::Relaxed);
                    // The next commit that writes starts the log over and reports
                    // its new size; one that writes nothing reports none, and must
                    // not checkpoint again on this stale count.
                    WAL_PAGES.with(|p| p.set(0));
                    self.woken_at = 0;
                }
                // Tried again after every commit while it fails (a full disk): said
                // at most every WARN_EVERY.
                Err(e) => {
                    let now = std::time::Instant::now();
                    if self
                        .warned
                        .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
                    {
                        self.warned = Some(now);
                        tracing::warn!(error = %e, pages, "could not checkpoint the write-ahead log past its limit; trying again after each commit");
                    }
                }
            }
            return;
        }
        if pages >= self.woken_at.saturating_add(self.limits.background) {
            match self.wake.try_send(()) {
                // Full: a wake-up is already waiting; the checkpointer takes every
                // frame there is when it runs.
                Ok(()) | Err(TrySendError::Full(())) => self.woken_at = pages,
                Err(TrySendError::Disconnected(())) => {}
            }
        }
    }
}

/// Checkpoints at each wake-up until the writer is gone.
fn checkpointer(path: PathBuf, woken: Receiver<()>, stats: Arc<CheckpointStats>) {
    let conn = match crate::open_connection(&path) {
        Ok(conn) => conn,
        Err(e) => {
            // The writer's own checkpoint at its limit still bounds the log.
            tracing::error!(error = %e, "the background checkpointer could not open the database");
            return;
        }
    };
    while woken.recv().is_ok() {
        match checkpoint(&conn) {
            Ok(Pass::Done) => {
                stats.background.fetch_add(1, Ordering::Relaxed);
            }
            // The writer's own checkpoint at its limit held the lock.
            Ok(Pass::Busy) => {}
            Err(e) => tracing::warn!(error = %e, "checkpointing the write-ahead log"),
        }
    }
}

/// How a checkpoint went.
enum Pass {
    /// It copied back every frame no reader still needed.
    Done,
    /// Another connection was checkpointing: nothing was done.
    Busy,
}

/// A `PASSIVE` checkpoint: copies what no reader still needs, waits for nobody. The
/// pragma reports a checkpoint that found another running as `busy` = 1, not as an
/// error.
fn checkpoint(conn: &Connection) -> rusqlite::Result<Pass> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(0))?;
    Ok(if busy == 0 { Pass::Done } else { Pass::Busy })
}
