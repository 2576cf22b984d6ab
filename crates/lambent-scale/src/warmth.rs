//! One function's warm pool as a state machine over caller-given time: which idle
//! instance takes an arrival, when idle instances are evicted and pre-warmed, what
//! the idle memory cost. The live pool keeps the instances themselves beside it (by
//! id); the simulator keeps nothing else. Both drive it the same way: `advance` to
//! the present, then `arrive` or `finish`.

use crate::{FunctionPolicy, Schedule};

/// How an arrival is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// By the idle instance with this id.
    Warm(u64),
    /// By a new instance (a cold start), to be known by this id.
    Cold(u64),
}

/// Why an idle instance was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// Its keep-alive (or pre-warm window) ran out.
    Expired,
    /// Its function was redeployed or deleted, or the node is stopping.
    Replaced,
    /// It could no longer serve (its process died).
    Unusable,
    /// The node's memory budget needed its memory.
    Budget,
}

impl EvictReason {
    pub const ALL: [EvictReason; 4] = [
        EvictReason::Expired,
        EvictReason::Replaced,
        EvictReason::Unusable,
        EvictReason::Budget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EvictReason::Expired => "expired",
            EvictReason::Replaced => "replaced",
            EvictReason::Unusable => "unusable",
            EvictReason::Budget => "memory_budget",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the holder of the instances must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Drop this idle instance.
    Evict { id: u64, reason: EvictReason },
    /// Start an instance now and keep it idle under this id.
    Prewarm { id: u64 },
}

/// Counters of one function's pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmthStats {
    pub arrivals: u64,
    pub cold_starts: u64,
    pub prewarms: u64,
    /// Evictions, indexed as [`EvictReason::ALL`].
    pub evictions: [u64; 4],
    /// Idle warm memory, in MB·ms.
    pub wasted_mb_ms: u64,
    /// The part of it that served no arrival (instances idle until evicted).
    pub unused_mb_ms: u64,
}

impl WarmthStats {
    pub fn evictions(&self, reason: EvictReason) -> u64 {
        self.evictions[reason.index()]
    }

    pub fn add(&mut self, other: &WarmthStats) {
        self.arrivals += other.arrivals;
        self.cold_starts += other.cold_starts;
        self.prewarms += other.prewarms;
        for (a, b) in self.evictions.iter_mut().zip(other.evictions) {
            *a += b;
        }
        self.wasted_mb_ms = self.wasted_mb_ms.saturating_add(other.wasted_mb_ms);
        self.unused_mb_ms = self.unused_mb_ms.saturating_add(other.unused_mb_ms);
    }
}

#[derive(Debug, Clone, Copy)]
struct IdleInstance {
    id: u64,
    since: u64,
    until: u64,
    /// When the idle time it stands for began (a pre-warmed one stands for the
    /// function's idle period, which began before it started).
    origin: u64,
}

/// The shortest idle period that ends a burst (see `Warmth::peak_busy`).
const BURST_GAP_MS: u64 = crate::MINUTE_MS;

/// Evicted instances remembered, so the arrival that would have used one still
/// teaches the policy an idle time (otherwise every eviction hides a long one).
const EVICTED_REMEMBERED: usize = 64;

pub struct Warmth {
    policy: Box<dyn FunctionPolicy>,
    memory_mb: u64,
    busy: u32,
    /// Idle instances, least recently idle first.
    idle: Vec<IdleInstance>,
    /// When the last busy instance finished, while none is busy.
    idle_since: Option<u64>,
    /// Origins of instances evicted because their time ran out, oldest first.
    evicted: Vec<u64>,
    /// Whether the policy learned an idle time since `plan` was made.
    learned: bool,
    /// Whether it learned one since [`Warmth::learned_changed`] last answered.
    unsaved: bool,
    /// The schedule of the current idle period (or of the last one while busy).
    plan: Schedule,
    /// The plan's next window still to open.
    next_window: usize,
    /// The most instances busy at once in the current burst: since the function was
    /// last idle for [`BURST_GAP_MS`] or more (shorter idle periods are pauses
    /// inside a burst).
    peak_busy: usize,
    /// That peak when the current idle period began: how many instances each of
    /// its pre-warm windows restores.
    restore: usize,
    next_id: u64,
    stats: WarmthStats,
}

impl Warmth {
    pub fn new(mut policy: Box<dyn FunctionPolicy>, memory_mb: u32) -> Self {
        let plan = policy.schedule();
        Self {
            policy,
            memory_mb: u64::from(memory_mb),
            busy: 0,
            idle: Vec::new(),
            idle_since: None,
            evicted: Vec::new(),
            learned: false,
            unsaved: false,
            plan,
            next_window: 0,
            peak_busy: 0,
            restore: 1,
            next_id: 1,
            stats: WarmthStats::default(),
        }
    }

    /// A new policy (the function's spec changed): it takes up what the old one
    /// learned when it is of the same kind (an MDP with another cost ratio), else
    /// starts afresh; the instances and counters stay.
    pub fn set_policy(&mut self, mut policy: Box<dyn FunctionPolicy>, memory_mb: u32) {
        if let Some(learned) = self.policy.learned() {
            policy.relearn(&learned);
        }
        self.plan = policy.schedule();
        self.policy = policy;
        self.memory_mb = u64::from(memory_mb);
        self.learned = false;
        self.next_window = 0;
    }

    /// Takes up what a policy of the same kind learned before (kept across a
    /// restart); the schedule is made from it at once. False if the policy could not.
    pub fn relearn(&mut self, learned: &crate::Learned) -> bool {
        if !self.policy.relearn(learned) {
            return false;
        }
        self.plan = self.policy.schedule();
        self.learned = false;
        true
    }

    /// Starts `policy` afresh in place of the current one, keeping nothing it
    /// learned (the function was deleted); the instances and counters stay.
    pub fn unlearn(&mut self, mut policy: Box<dyn FunctionPolicy>) {
        self.plan = policy.schedule();
        self.policy = policy;
        self.learned = false;
        self.unsaved = false;
        self.next_window = 0;
    }

    /// What the policy has learned, if it learned anything since the last call
    /// answered (`None` otherwise): what a node saves, only when it changed.
    pub fn learned_changed(&mut self) -> Option<crate::Learned> {
        if !std::mem::take(&mut self.unsaved) {
            return None;
        }
        self.policy.learned()
    }

    /// Idle times the policy has learned from (0 for a policy that learns nothing).
    pub fn idle_times_learned(&self) -> u64 {
        self.policy.learned().map_or(0, |l| l.idle.seen())
    }

    pub fn stats(&self) -> &WarmthStats {
        &self.stats
    }

    pub fn busy(&self) -> u32 {
        self.busy
    }

    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    /// The schedule in force.
    pub fn plan(&self) -> &Schedule {
        &self.plan
    }

    /// Memory of a warm instance, in MB.
    pub fn memory_mb(&self) -> u64 {
        self.memory_mb
    }

    /// Ids of idle instances, least recently idle first, with when each went idle.
    pub fn idle(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.idle.iter().map(|i| (i.id, i.since))
    }

    /// An arrival at `now`: the most recently idle instance that `accept` takes, or
    /// a cold start. Actions due by `now` are pushed to `out` first.
    ///
    /// The policy learns idle times per instance: how long the instance that serves
    /// an arrival waited for it (or, on a cold start, how long the most recently
    /// evicted one would have waited). With one instance this is the function's idle
    /// time between invocations; with many, extra instances left idle by a burst
    /// are kept as long as instances are in fact reused, not as long as the
    /// function is ever idle.
    pub fn arrive(
        &mut self,
        now: u64,
        mut accept: impl FnMut(u64) -> bool,
        out: &mut Vec<Action>,
    ) -> Start {
        self.advance(now, out);
        self.stats.arrivals += 1;
        // A burst ends at an idle period of a minute or more; shorter ones are its
        // pauses, and the burst's peak spans them.
        if self
            .idle_since
            .is_some_and(|since| now.saturating_sub(since) >= BURST_GAP_MS)
        {
            self.peak_busy = 0;
        }
        self.idle_since = None;
        self.busy += 1;
        self.peak_busy = self.peak_busy.max(self.busy as usize);
        if let Some(at) = self.idle.iter().rposition(|i| accept(i.id)) {
            let taken = self.idle.remove(at);
            self.waste(taken.since, now);
            self.learn(now.saturating_sub(taken.origin));
            return Start::Warm(taken.id);
        }
        if let Some(origin) = self.evicted.pop() {
            self.learn(now.saturating_sub(origin));
        }
        self.stats.cold_starts += 1;
        Start::Cold(self.new_id())
    }

    /// The instance `id` finished at `now`; it stays idle if `usable`. When it was the
    /// last busy one, an idle period begins and the policy gives its schedule.
    pub fn finish(&mut self, now: u64, id: u64, usable: bool, out: &mut Vec<Action>) {
        self.advance(now, out);
        self.busy = self.busy.saturating_sub(1);
        if std::mem::take(&mut self.learned) {
            self.plan = self.policy.schedule();
        }
        if self.busy == 0 {
            self.idle_since = Some(now);
            self.next_window = 0;
            self.restore = self.peak_busy.max(1);
            let keep = self.plan.keep_ms();
            for i in &mut self.idle {
                i.until = i.since.saturating_add(keep);
            }
        }
        if usable {
            let until = now.saturating_add(self.plan.keep_ms());
            self.idle.push(IdleInstance {
                id,
                since: now,
                until,
                origin: now,
            });
        } else {
            self.stats.evictions[EvictReason::Unusable.index()] += 1;
        }
        self.advance(now, out);
    }

    /// Evictions and pre-warms due by `now`, in order.
    pub fn advance(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.busy == 0
            && let Some(t0) = self.idle_since
        {
            while let Some(&(start, end)) = self.plan.windows().get(self.next_window) {
                if t0.saturating_add(start) > now {
                    break;
                }
                self.next_window += 1;
                if start == 0 {
                    continue; // the keep window: the instance that finished
                }
                // Instances still kept when the window opens count towards it.
                let at = t0.saturating_add(start);
                let kept = self.idle.iter().filter(|i| i.until > at).count();
                for _ in kept..self.restore {
                    let id = self.new_id();
                    self.stats.prewarms += 1;
                    self.idle.push(IdleInstance {
                        id,
                        since: t0.saturating_add(start),
                        until: t0.saturating_add(end),
                        origin: t0,
                    });
                    out.push(Action::Prewarm { id });
                }
            }
        }
        if self.idle.iter().any(|i| i.until <= now) {
            let mut kept = Vec::with_capacity(self.idle.len());
            for i in std::mem::take(&mut self.idle) {
                if i.until <= now {
                    self.waste(i.since, i.until);
                    self.unused(i.since, i.until);
                    self.remember_evicted(i.origin);
                    self.stats.evictions[EvictReason::Expired.index()] += 1;
                    out.push(Action::Evict {
                        id: i.id,
                        reason: EvictReason::Expired,
                    });
                } else {
                    kept.push(i);
                }
            }
            self.idle = kept;
        }
    }

    /// Drops one idle instance at `now` (unusable, or for the memory budget).
    pub fn remove(&mut self, now: u64, id: u64, reason: EvictReason) -> bool {
        let Some(at) = self.idle.iter().position(|i| i.id == id) else {
            return false;
        };
        let i = self.idle.remove(at);
        self.waste(i.since, now.min(i.until));
        self.unused(i.since, now.min(i.until));
        self.stats.evictions[reason.index()] += 1;
        true
    }

    /// Drops every idle instance at `now`; returns their ids.
    pub fn drain(&mut self, now: u64, reason: EvictReason) -> Vec<u64> {
        self.evicted.clear();
        let ids: Vec<u64> = self.idle.iter().map(|i| i.id).collect();
        for id in &ids {
            self.remove(now, *id, reason);
        }
        ids
    }

    fn learn(&mut self, idle_ms: u64) {
        self.policy.observe_idle(idle_ms);
        self.learned = true;
        self.unsaved = true;
    }

    fn remember_evicted(&mut self, origin: u64) {
        if self.evicted.len() == EVICTED_REMEMBERED {
            self.evicted.remove(0);
        }
        // Kept sorted by origin, so a cold start learns from the latest.
        let at = self.evicted.partition_point(|&o| o <= origin);
        self.evicted.insert(at, origin);
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn unused(&mut self, from: u64, to: u64) {
        let mb_ms = to.saturating_sub(from).saturating_mul(self.memory_mb);
        self.stats.unused_mb_ms = self.stats.unused_mb_ms.saturating_add(mb_ms);
    }

    fn waste(&mut self, from: u64, to: u64) {
        let mb_ms = to.saturating_sub(from).saturating_mul(self.memory_mb);
        self.stats.wasted_mb_ms = self.stats.wasted_mb_ms.saturating_add(mb_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fixed, KeepAlivePolicy, MINUTE_MS, Profile};

    struct Scripted(Schedule);

    impl FunctionPolicy for Scripted {
        fn observe_idle(&mut self, _idle_ms: u64) {}
        fn schedule(&mut self) -> Schedule {
            self.0.clone()
        }
    }

    fn all(_: u64) -> bool {
        true
    }

    /// What the policy learned is offered for saving only when it changed, comes
    /// back whole into a fresh `Warmth` (a restart) with the same schedule, and
    /// carries over to a new policy of the same kind (another cost ratio).
    #[test]
    fn what_was_learned_is_saved_when_changed_and_taken_up_again() {
        let mdp = |spec: &str| {
            crate::parse_policy(spec)
                .unwrap_or_else(|e| panic!("{e}"))
                .for_function(Profile { memory_mb: 256 })
        };
        let mut w = Warmth::new(mdp("mdp:cost-ratio=20"), 256);
        let mut out = Vec::new();
        assert!(w.learned_changed().is_none(), "nothing learned yet");
        for i in 0..12 {
            let t = i * 15 * MINUTE_MS;
            let (Start::Warm(id) | Start::Cold(id)) = w.arrive(t, all, &mut out);
            w.finish(t + 100, id, true, &mut out);
        }
        assert_eq!(w.idle_times_learned(), 11);
        let learned = w.learned_changed().unwrap_or_else(|| panic!("it learned"));
        assert!(w.learned_changed().is_none(), "unchanged since");
        let mut restarted = Warmth::new(mdp("mdp:cost-ratio=20"), 256);
        assert_ne!(restarted.plan(), w.plan());
        assert!(restarted.relearn(&learned));
        assert_eq!(restarted.plan(), w.plan());
        assert_eq!(restarted.idle_times_learned(), 11);
        w.set_policy(mdp("mdp:cost-ratio=50"), 256);
        assert_eq!(w.idle_times_learned(), 11, "kept under another cost ratio");
        w.set_policy(mdp("histogram"), 256);
        assert_eq!(w.idle_times_learned(), 0, "another kind starts afresh");
    }

    #[test]
    fn warm_reuse_keep_alive_and_wasted_memory() {
        let policy = Fixed::new(10 * MINUTE_MS).for_function(Profile { memory_mb: 256 });
        let mut w = Warmth::new(policy, 256);
        let mut out = Vec::new();
        let Start::Cold(a) = w.arrive(0, all, &mut out) else {
            panic!("the first arrival is cold")
        };
        w.finish(1000, a, true, &mut out);
        assert_eq!(w.arrive(61_000, all, &mut out), Start::Warm(a));
        w.finish(62_000, a, true, &mut out);
        // Idle past the keep-alive: evicted at 62 s + 10 min, then a cold start.
        let late = 62_000 + 10 * MINUTE_MS + 1;
        assert!(matches!(w.arrive(late, all, &mut out), Start::Cold(_)));
        assert_eq!(
            out,
            vec![Action::Evict {
                id: a,
                reason: EvictReason::Expired
            }]
        );
        let s = w.stats();
        assert_eq!((s.arrivals, s.cold_starts, s.prewarms), (3, 2, 0));
        assert_eq!(s.wasted_mb_ms, 256 * (60_000 + 10 * MINUTE_MS));
    }

    #[test]
    fn concurrent_arrivals_start_more_instances_and_the_last_idle_is_reused() {
        let policy = Fixed::new(MINUTE_MS).for_function(Profile { memory_mb: 128 });
        let mut w = Warmth::new(policy, 128);
        let mut out = Vec::new();
        let (Start::Cold(a), Start::Cold(b)) =
            (w.arrive(0, all, &mut out), w.arrive(1, all, &mut out))
        else {
            panic!("two at once are two cold starts")
        };
        w.finish(10, a, true, &mut out);
        w.finish(20, b, true, &mut out);
        assert_eq!(w.arrive(30, all, &mut out), Start::Warm(b));
        // `accept` skips instances the caller cannot use (another version).
        assert!(matches!(
            w.arrive(31, |id| id != a, &mut out),
            Start::Cold(_)
        ));
        assert_eq!(w.busy(), 2);
    }

    #[test]
    fn a_pre_warm_window_starts_an_instance_that_serves_the_arrival() {
        let plan = Schedule::from_windows([(5 * MINUTE_MS, 7 * MINUTE_MS)]);
        let mut w = Warmth::new(Box::new(Scripted(plan)), 128);
        let mut out = Vec::new();
        let Start::Cold(a) = w.arrive(0, all, &mut out) else {
            panic!()
        };
        w.finish(0, a, true, &mut out);
        // Evicted at once (no window from 0).
        assert_eq!(
            out,
            vec![Action::Evict {
                id: a,
                reason: EvictReason::Expired
            }]
        );
        out.clear();
        w.advance(5 * MINUTE_MS, &mut out);
        let [Action::Prewarm { id: p }] = out[..] else {
            panic!("no pre-warm: {out:?}")
        };
        out.clear();
        assert_eq!(w.arrive(6 * MINUTE_MS, all, &mut out), Start::Warm(p));
        let s = w.stats();
        assert_eq!((s.cold_starts, s.prewarms), (1, 1));
        assert_eq!(s.wasted_mb_ms, 128 * MINUTE_MS);
        // A window that opened and closed between two looks is still counted.
        w.finish(6 * MINUTE_MS, p, false, &mut out);
        assert!(matches!(
            w.arrive(20 * MINUTE_MS, all, &mut out),
            Start::Cold(_)
        ));
        assert_eq!(w.stats().prewarms, 2);
        assert_eq!(w.stats().wasted_mb_ms, 128 * 3 * MINUTE_MS);
        assert_eq!(w.stats().evictions(EvictReason::Unusable), 1);
    }

    /// A pool that evicts at once and pre-warms 5–7 minutes into an idle period,
    /// after three calls at once that finished within a few milliseconds.
    fn three_at_once_then_evicted() -> (Warmth, Vec<Action>) {
        let plan = Schedule::from_windows([(5 * MINUTE_MS, 7 * MINUTE_MS)]);
        let mut w = Warmth::new(Box::new(Scripted(plan)), 128);
        let mut out = Vec::new();
        let ids: Vec<u64> = (0..3)
            .map(|_| match w.arrive(0, all, &mut out) {
                Start::Cold(id) => id,
                Start::Warm(_) => panic!("three at once are three cold starts"),
            })
            .collect();
        for (i, id) in ids.iter().enumerate() {
            w.finish(1000 + i as u64, *id, true, &mut out);
        }
        (w, out)
    }

    /// A burst that needed three instances gets three back from a pre-warm, also
    /// when it paused in the middle (a short idle period of its own): one would
    /// leave the next burst mostly cold.
    #[test]
    fn a_pre_warm_restores_as_many_instances_as_the_burst_needed() {
        let (mut w, mut out) = three_at_once_then_evicted();
        // The burst's tail: one more call, 10 s later, after the others were evicted.
        let Start::Cold(last) = w.arrive(11_000, all, &mut out) else {
            panic!("the plan evicts at once")
        };
        w.finish(12_000, last, true, &mut out);
        out.clear();
        w.advance(12_000 + 6 * MINUTE_MS, &mut out);
        let prewarms = out
            .iter()
            .filter(|a| matches!(a, Action::Prewarm { .. }))
            .count();
        assert_eq!(prewarms, 3, "{out:?}");
        out.clear();
        for _ in 0..3 {
            assert!(matches!(
                w.arrive(12_000 + 6 * MINUTE_MS, all, &mut out),
                Start::Warm(_)
            ));
        }
        assert_eq!((w.stats().cold_starts, w.stats().prewarms), (4, 3));
    }

    /// A burst ends at a minute of idleness: a lone call after that is a burst of
    /// its own, and the pre-warm after it restores one instance, not the old peak.
    #[test]
    fn a_burst_ends_at_a_minute_of_idleness() {
        let (mut w, mut out) = three_at_once_then_evicted();
        let (Start::Cold(lone) | Start::Warm(lone)) = w.arrive(2 * MINUTE_MS, all, &mut out);
        w.finish(2 * MINUTE_MS + 1000, lone, true, &mut out);
        out.clear();
        w.advance(2 * MINUTE_MS + 1000 + 6 * MINUTE_MS, &mut out);
        let prewarms = out
            .iter()
            .filter(|a| matches!(a, Action::Prewarm { .. }))
            .count();
        assert_eq!(prewarms, 1, "{out:?}");
    }

    /// A policy that keeps as long as the last idle time it learned (a minute before
    /// it learned any).
    struct Last(u64);

    impl FunctionPolicy for Last {
        fn observe_idle(&mut self, idle_ms: u64) {
            self.0 = idle_ms;
        }
        fn schedule(&mut self) -> Schedule {
            Schedule::keep_for(self.0 + 1)
        }
    }

    /// Idle times are learned per instance: the wait of the instance that serves a
    /// call, and on a cold start the wait the last evicted one would have had.
    #[test]
    fn policies_learn_how_long_instances_waited() {
        let mut w = Warmth::new(Box::new(Last(60_000)), 128);
        let mut out = Vec::new();
        // Two at once, then one more call while one is still busy: the spare waited
        // 10 s for it, though the function was never idle.
        let Start::Cold(a) = w.arrive(0, all, &mut out) else {
            panic!()
        };
        let Start::Cold(b) = w.arrive(0, all, &mut out) else {
            panic!()
        };
        w.finish(5_000, a, true, &mut out);
        assert_eq!(w.arrive(15_000, all, &mut out), Start::Warm(a));
        w.finish(16_000, a, true, &mut out);
        assert_eq!(w.plan(), &Schedule::keep_for(10_001));
        // `b` finishes too; both are evicted 10 s after going idle...
        w.finish(16_000, b, true, &mut out);
        w.advance(40_000, &mut out);
        assert_eq!(w.idle_count(), 0);
        // ...and the next call, cold, teaches how long the latest of them would have
        // waited (from 16 s to 100 s).
        let Start::Cold(c) = w.arrive(100_000, all, &mut out) else {
            panic!()
        };
        w.finish(101_000, c, true, &mut out);
        assert_eq!(w.plan(), &Schedule::keep_for(84_001));
    }
}
