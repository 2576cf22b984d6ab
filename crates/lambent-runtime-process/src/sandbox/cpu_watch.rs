//! Demotes CPU hogs. An instance whose group the kernel throttled (it used its whole
//! CPU quota in a period) runs in the idle class (`cpu.idle`, or the lowest
//! `cpu.shares` where the kernel has no `cpu.idle`) until it has gone
//! [`RESTORE_AFTER`] without being throttled again.
//!
//! Why: the quota alone holds a hog to its share, but a share of half a core on a
//! two-core node, taken in bursts on both cores at once, is what the node's threads
//! and every other function lose; their tail latency doubled or worse (BENCHMARKS.md,
//! "Noisy neighbours"). In the idle class the hog still gets every cycle nobody else
//! wants, up to its quota, and yields at once to anything that is not idle. A demoted
//! instance that a busy node leaves no CPU is not throttled either, so it is restored
//! after [`RESTORE_AFTER`] and runs at the normal weight until its next throttle: it
//! is slowed, never starved.
//!
//! One thread polls the groups of the live instances: every [`POLL`] while any of
//! them runs, backing off to [`POLL_IDLE`] while none has run since the last look
//! (`nr_periods` stands still), and not at all while there are none.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the throttle counts are read while some instance runs.
pub const POLL: Duration = Duration::from_millis(100);
/// The longest pause between readings, while no instance runs.
pub const POLL_IDLE: Duration = Duration::from_secs(1);
/// How long a demoted instance must go unthrottled to be restored.
pub const RESTORE_AFTER: Duration = Duration::from_secs(1);
/// `cpu.shares` of a demoted group on a kernel without `cpu.idle` (the kernel's minimum).
const DEMOTED_SHARES: u64 = 2;

/// What to do with a group after a reading of its throttle count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Demote,
    Restore,
}

/// One group's demotion state, apart from its files.
#[derive(Debug, Default)]
pub struct Demotion {
    /// `nr_throttled` at the last reading.
    throttled: u64,
    /// When the group was last seen throttled, while it is demoted.
    demoted_since_throttle: Option<Instant>,
}

impl Demotion {
    /// A group whose count reads `nr_throttled` now: only a rise from here counts
    /// (a spare's group may have been throttled while the spare started).
    pub fn starting_at(nr_throttled: u64) -> Self {
        Self {
            throttled: nr_throttled,
            demoted_since_throttle: None,
        }
    }

    /// Takes a reading of the group's `nr_throttled` at `now`.
    pub fn observe(&mut self, nr_throttled: u64, now: Instant) -> Option<Change> {
        let throttled = nr_throttled > self.throttled;
        self.throttled = nr_throttled;
        match (throttled, self.demoted_since_throttle) {
            (true, None) => {
                self.demoted_since_throttle = Some(now);
                Some(Change::Demote)
            }
            (true, Some(_)) => {
                self.demoted_since_throttle = Some(now);
                None
            }
            (false, Some(last)) if now.duration_since(last) >= RESTORE_AFTER => {
                self.demoted_since_throttle = None;
                Some(Change::Restore)
            }
            (false, _) => None,
        }
    }
}

/// The pause before the next reading: [`POLL`] after one that saw an instance run,
/// doubling up to [`POLL_IDLE`] after each that saw none.
fn next_pause(last: Duration, ran: bool) -> Duration {
    if ran { POLL } else { (last * 2).min(POLL_IDLE) }
}

struct Watched {
    /// The instance's cpu group.
    dir: PathBuf,
    /// `nr_periods` at the last reading: it stands still while the group runs nothing.
    periods: u64,
    /// Its `cpu.shares` when not demoted.
    shares: u64,
    demotion: Demotion,
}

#[derive(Default)]
struct Shared {
    groups: Mutex<Vec<Watched>>,
    /// Signalled when the first group is added.
    added: Condvar,
    /// Whether the polling thread was started.
    started: Mutex<bool>,
}

/// The node's watch over its instances' cpu groups (cheap to clone).
#[derive(Clone, Default)]
pub struct CpuWatch {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CpuWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuWatch").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CpuWatch {
    /// Starts watching an instance's cpu group (`shares`: its weight when not demoted).
    pub fn add(&self, dir: &Path, shares: u64) {
        {
            let mut groups = lock(&self.shared.groups);
            groups.retain(|w| w.dir != dir);
            let stat = read_stat(dir).unwrap_or_default();
            groups.push(Watched {
                dir: dir.to_path_buf(),
                periods: stat.periods,
                shares,
                demotion: Demotion::starting_at(stat.throttled),
            });
        }
        self.shared.added.notify_one();
        let mut started = lock(&self.shared.started);
        if !*started {
            let shared = self.shared.clone();
            // Without the thread, hogs are held to their quota only: worse neighbours,
            // nothing lost. The next add tries again.
            *started = std::thread::Builder::new()
                .name("lambent-cpu-watch".into())
                .spawn(move || poll(&shared))
                .is_ok();
        }
    }

    /// Stops watching a group (its instance is gone).
    pub fn remove(&self, dir: &Path) {
        lock(&self.shared.groups).retain(|w| w.dir != dir);
    }
}

fn poll(shared: &Shared) {
    let mut pause = POLL;
    loop {
        {
            let mut groups = lock(&shared.groups);
            while groups.is_empty() {
                groups = shared.added.wait(groups).unwrap_or_else(|p| p.into_inner());
                pause = POLL;
            }
            let now = Instant::now();
            let mut ran = false;
            for w in groups.iter_mut() {
                // A group removed meanwhile reads as nothing; its entry goes with its
                // instance.
                let Some(stat) = read_stat(&w.dir) else {
                    continue;
                };
                ran |= stat.periods != w.periods;
                w.periods = stat.periods;
                match w.demotion.observe(stat.throttled, now) {
                    Some(Change::Demote) => set_idle(&w.dir, true, w.shares),
                    Some(Change::Restore) => set_idle(&w.dir, false, w.shares),
                    None => {}
                }
                // A demoted group is watched closely until it is restored.
                ran |= w.demotion.demoted_since_throttle.is_some();
            }
            pause = next_pause(pause, ran);
        }
        std::thread::sleep(pause);
    }
}

/// The counts of a group's `cpu.stat` used here.
#[derive(Debug, Default)]
struct Stat {
    /// Enforcement periods in which the group ran.
    periods: u64,
    /// Periods in which it used its whole quota.
    throttled: u64,
}

fn read_stat(dir: &Path) -> Option<Stat> {
    let text = fs::read_to_string(dir.join("cpu.stat")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))?
            .trim()
            .parse()
            .ok()
    };
    Some(Stat {
        periods: field("nr_periods")?,
        throttled: field("nr_throttled")?,
    })
}

/// Puts a group in or out of the idle class (or its weight to the minimum and back).
/// A failed write leaves it as it was: a hog held to its quota only.
fn set_idle(dir: &Path, idle: bool, shares: u64) {
    let class = dir.join("cpu.idle");
    let _ = if class.exists() {
        fs::write(class, if idle { "1" } else { "0" })
    } else {
        let weight = if idle { DEMOTED_SHARES } else { shares };
        fs::write(dir.join("cpu.shares"), weight.to_string())
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_group_is_demoted_and_restored_after_a_quiet_second() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut d = Demotion::default();
        assert_eq!(d.observe(0, at(0)), None, "never throttled");
        assert_eq!(d.observe(1, at(100)), Some(Change::Demote));
        assert!(d.demoted_since_throttle.is_some());
        // Throttled again and again: stays demoted, no more writes.
        assert_eq!(d.observe(3, at(200)), None);
        assert_eq!(d.observe(9, at(900)), None);
        // Quiet, but not yet for a second since the last throttle.
        assert_eq!(d.observe(9, at(1_800)), None);
        assert_eq!(d.observe(9, at(1_900)), Some(Change::Restore));
        assert!(d.demoted_since_throttle.is_none());
        assert_eq!(d.observe(9, at(5_000)), None, "quiet and restored");
        assert_eq!(
            d.observe(10, at(5_100)),
            Some(Change::Demote),
            "a hog again"
        );
    }

    #[test]
    fn polling_backs_off_while_nothing_runs() {
        let mut pause = POLL;
        let mut pauses = Vec::new();
        for ran in [false, false, false, false, false, true, false] {
            pause = next_pause(pause, ran);
            pauses.push(pause.as_millis());
        }
        assert_eq!(pauses, [200, 400, 800, 1_000, 1_000, 100, 200]);
    }

    #[test]
    fn a_stat_file_reads_as_its_counts() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        fs::write(
            dir.path().join("cpu.stat"),
            "nr_periods 41\nnr_throttled 7\nthrottled_time 123\nnr_bursts 0\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let stat = read_stat(dir.path()).unwrap_or_else(|| panic!("unread"));
        assert_eq!((stat.periods, stat.throttled), (41, 7));
        assert!(read_stat(&dir.path().join("gone")).is_none());
    }

    #[test]
    fn only_throttling_after_the_first_reading_counts() {
        let now = Instant::now();
        let mut d = Demotion::starting_at(5);
        assert_eq!(d.observe(5, now), None);
        assert_eq!(d.observe(6, now), Some(Change::Demote));
    }
}
