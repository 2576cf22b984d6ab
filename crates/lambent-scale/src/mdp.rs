//! `mdp`: keep-alive as the Markov decision process of the founding document.
//!
//! Per function and per idle period, time runs in 1-minute steps k = 0, 1, … from
//! the moment the function went idle. The state is (k, warm | cold); a pre-warm
//! started at step k is warm for that step (starting takes well under a minute), so
//! "warming" folds into the action's cost. Actions: keep or evict when warm, wait or
//! pre-warm when cold. An arrival ends the period; its probability at step k, given
//! none came before, is the hazard h_k = p_k / S_k of the function's idle-time
//! distribution: the decayed histogram of the idle times its instances waited
//! (see [`crate::Warmth`]), smoothed in proportion to bin length and sample size,
//! plus a weak prior for what was never seen, with the out-of-range mass as a tail
//! that is always a cold arrival. Costs, in GB-minutes:
//!
//! - warm for step k: memory × (1 − h_k + h_k × the part of the minute before the
//!   arrival) — half a minute, or the mean sub-minute idle time in bin 0;
//! - an arrival while cold: the cold-start cost C = `cost-ratio`;
//! - a pre-warm: `prewarm-cost` minutes of the function's memory (default 1).
//!
//! Backward induction over the 240 bins (γ = 1 over an idle period, or the
//! configured discount) gives the value of each state and so the action; following
//! the actions forward from (0, warm) gives the [`Schedule`]. Until [`MIN_SEEN`]
//! idle times of a minute or more are seen (or [`MIN_SEEN_AGREEING`] that agree, as
//! a timer's do) the answer is the ski-rental keep-alive C / memory: keep as long as
//! the memory kept costs one cold start. The solve is O(240) and is redone only after new idle
//! times (see `schedule`).

use crate::idle::{BINS, IdleHistogram};
use crate::{FunctionPolicy, KeepAlivePolicy, Learned, MINUTE_MS, Profile, Schedule};

/// Idle times of a minute or longer seen before the distribution is used instead
/// of ski rental. Shorter ones, the gaps between calls of a burst, come by the dozen
/// and say nothing of how long the function rests between bursts: counting them let
/// one burst make the MDP evict a queue function's instances two minutes after it.
pub const MIN_SEEN: u64 = 10;
/// Fewer suffice when they agree (a timer): within an eighth of their length, and
/// a minute or longer (sub-minute ones agree inside any burst, timer or not).
pub const MIN_SEEN_AGREEING: u64 = 3;
/// Weight of the prior, in idle times: what is believed of an idle time longer than
/// any seen. Mostly (90%) that it is longer than the range, the rest spread evenly
/// over it — a small hazard, so only a high cost ratio keeps an instance past the
/// idle times seen, and a function never seen to be idle that long is not kept
/// for ever on the strength of a few samples.
const PRIOR: f64 = 1.0;
const PRIOR_OUT_OF_RANGE: f64 = 0.9;
/// Weight of every earlier idle time once one more is seen (a half-life of about 70
/// idle periods), so a function whose rhythm changes is relearned.
const DECAY: f64 = 0.99;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mdp {
    /// Cold-start cost over the memory cost of one GB-minute: the operator's knob.
    pub cost_ratio: f64,
    /// A pre-warm's cost, in minutes of the function's memory (the work of a start
    /// nobody waits for; it does not grow with the latency a cold start costs).
    pub prewarm_cost: f64,
    /// Discount per minute (1: none).
    pub discount: f64,
}

impl Default for Mdp {
    fn default() -> Self {
        Self {
            cost_ratio: 10.0,
            prewarm_cost: 1.0,
            discount: 1.0,
        }
    }
}

impl KeepAlivePolicy for Mdp {
    fn name(&self) -> String {
        let mut name = format!("mdp:cost-ratio={}", self.cost_ratio);
        let d = Self::default();
        if self.prewarm_cost != d.prewarm_cost {
            name.push_str(&format!(",prewarm-cost={}", self.prewarm_cost));
        }
        if self.discount != d.discount {
            name.push_str(&format!(",discount={}", self.discount));
        }
        name
    }

    fn for_function(&self, profile: Profile) -> Box<dyn FunctionPolicy> {
        Box::new(MdpFunction {
            params: *self,
            memory_gb: profile.memory_gb(),
            hist: IdleHistogram::new(DECAY),
            solved: None,
            unsolved: 0,
        })
    }
}

struct MdpFunction {
    params: Mdp,
    memory_gb: f64,
    hist: IdleHistogram,
    solved: Option<Schedule>,
    /// Idle times seen since the last solve.
    unsolved: u64,
}

impl FunctionPolicy for MdpFunction {
    fn observe_idle(&mut self, idle_ms: u64) {
        self.hist.observe(idle_ms);
        self.unsolved += 1;
    }

    fn schedule(&mut self) -> Schedule {
        // Re-solved after each new idle time at first, then after every 1/16 of those
        // seen (at most 64): one more among hundreds barely moves the distribution,
        // and a busy function sees an idle time per invocation.
        let due = (1 + self.hist.seen() / 16).min(64);
        if let Some(s) = &self.solved
            && self.unsolved < due
        {
            return s.clone();
        }
        self.unsolved = 0;
        let s = solve(&self.params, self.memory_gb, &self.hist);
        self.solved = Some(s.clone());
        s
    }

    fn learned(&self) -> Option<Learned> {
        Some(Learned {
            kind: LEARNED_KIND.into(),
            idle: self.hist.snapshot(),
            predicted_ms: None,
        })
    }

    fn relearn(&mut self, learned: &Learned) -> bool {
        if learned.kind != LEARNED_KIND || !self.hist.restore(&learned.idle) {
            return false;
        }
        self.solved = None;
        self.unsolved = 0;
        true
    }
}

/// The kind of what an MDP learned (whatever its cost ratio: the histogram is the
/// same, and the schedule is solved from it again).
const LEARNED_KIND: &str = "mdp";

/// The optimal schedule for one idle period.
fn solve(params: &Mdp, memory_gb: f64, hist: &IdleHistogram) -> Schedule {
    let cold = params.cost_ratio;
    let memory = memory_gb;
    let agreeing = hist.bin_spread() <= (hist.highest_bin() / 8).max(1)
        && hist.lowest_bin().is_some_and(|b| b >= 1);
    let enough = hist.seen_long() >= MIN_SEEN || (agreeing && hist.seen() >= MIN_SEEN_AGREEING);
    if !enough || hist.total() <= 0.0 {
        let minutes = (cold / memory).min(BINS as f64);
        return Schedule::keep_for((minutes * MINUTE_MS as f64) as u64);
    }
    // Smoothed mass per bin: each bin's count spread over a triangle of half-width
    // max(1, k / √n) bins (n: idle times seen, up to 100) — idle times vary in
    // proportion to their length, and a few of them say little about exactly when —
    // but no wider than the idle times seen are spread (a timer is a timer).
    let n = (hist.seen().min(100) as f64).sqrt();
    let widest = (hist.bin_spread() + 1) as f64;
    let spread = |k: usize| (k as f64 / n).min(widest).max(1.0);
    let last = BINS - 1;
    let mut mass = vec![PRIOR * (1.0 - PRIOR_OUT_OF_RANGE) / BINS as f64; last + 1];
    for k in 0..=hist.highest_bin() {
        let c = hist.count(k);
        if c <= 0.0 {
            continue;
        }
        let w = spread(k);
        let lo = k.saturating_sub(w.floor() as usize);
        let hi = (k + w.floor() as usize).min(last);
        let weights: Vec<f64> = (lo..=hi)
            .map(|j| (1.0 - (j as f64 - k as f64).abs() / (w + 1.0)).max(0.0))
            .collect();
        let sum: f64 = weights.iter().sum();
        for (j, wt) in (lo..=hi).zip(weights) {
            mass[j] += c * wt / sum;
        }
    }
    let tail = (hist.total() + PRIOR - mass.iter().sum::<f64>()).max(0.0);
    let bin0_part = (hist.bin0_mean_ms() / MINUTE_MS as f64).clamp(0.0, 1.0);
    let prewarm = params.prewarm_cost * memory;
    let gamma = params.discount;

    let mut keep = vec![false; last + 1];
    let mut start = vec![false; last + 1];
    // Past `last`, only the tail: an arrival there is a cold start.
    let (mut v_warm, mut v_cold) = (cold, cold);
    let mut survival = tail;
    for k in (0..=last).rev() {
        survival += mass[k];
        let h = if survival > 0.0 {
            mass[k] / survival
        } else {
            1.0
        };
        let part = if k == 0 { bin0_part } else { 0.5 };
        let keep_warm = memory * (1.0 - h + h * part) + gamma * (1.0 - h) * v_warm;
        let wait_cold = h * cold + gamma * (1.0 - h) * v_cold;
        keep[k] = keep_warm <= wait_cold;
        start[k] = prewarm + keep_warm < wait_cold;
        v_warm = keep_warm.min(wait_cold);
        v_cold = wait_cold.min(prewarm + keep_warm);
    }
    let mut windows = Vec::new();
    let mut warm = true;
    for k in 0..=last {
        warm = if warm { keep[k] } else { start[k] };
        if warm {
            let (s, e) = (k as u64 * MINUTE_MS, (k as u64 + 1) * MINUTE_MS);
            windows.push((s, e));
        }
    }
    Schedule::from_windows(windows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learner(cost_ratio: f64, memory_mb: u32) -> Box<dyn FunctionPolicy> {
        Mdp {
            cost_ratio,
            ..Mdp::default()
        }
        .for_function(Profile { memory_mb })
    }

    /// Exponential idle times (mean μ) have a constant hazard, so the answer is all
    /// or nothing: keep while memory × μ is cheaper than a cold start, else evict.
    #[test]
    fn exponential_idle_times_keep_for_ever_or_evict_at_once_by_the_cost_ratio() {
        let mean_min = 5.0;
        let feed = |p: &mut Box<dyn FunctionPolicy>| {
            // The quantiles of Exp(μ), in a scrambled order (the histogram decays,
            // so the order matters: sorted, the recent ones would all be long).
            let n = 2000;
            for i in 0..n {
                let u = ((i * 7919) % n) as f64 / n as f64 + 0.5 / n as f64;
                let idle = -mean_min * (1.0 - u).ln() * MINUTE_MS as f64;
                p.observe_idle(idle as u64);
            }
        };
        // 1 GB: memory over the mean idle time costs 5 GB-min.
        let mut cheap_memory = learner(50.0, 1024);
        feed(&mut cheap_memory);
        let s = cheap_memory.schedule();
        assert_eq!(s.windows().len(), 1, "{s}");
        assert!(
            s.keep_ms() >= 25 * MINUTE_MS,
            "kept only {s} (the observed idle times reach ~40 min)"
        );
        let mut dear_memory = learner(0.5, 1024);
        feed(&mut dear_memory);
        assert_eq!(dear_memory.schedule(), Schedule::evict());
    }

    /// A period τ: evict at once, pre-warm just before τ, and not when a cold start
    /// is cheaper than the pre-warm.
    #[test]
    fn a_periodic_function_is_evicted_and_pre_warmed_just_before_its_period() {
        let tau = 30 * MINUTE_MS;
        let mut p = learner(10.0, 256);
        for _ in 0..50 {
            p.observe_idle(tau - 2000);
        }
        let s = p.schedule();
        assert!(!s.is_warm_at(0), "{s}");
        let (b, c) = s
            .first_prewarm()
            .unwrap_or_else(|| panic!("no pre-warm: {s}"));
        assert!(b < tau - 2000 && b >= tau - 3 * MINUTE_MS, "{s}");
        assert!(c > tau - 2000 && c <= tau + 2 * MINUTE_MS, "{s}");
        // A cold start cheaper than a pre-warm and a minute of memory: nothing kept.
        let mut cheap_cold = learner(0.1, 1024);
        for _ in 0..50 {
            cheap_cold.observe_idle(tau - 2000);
        }
        assert_eq!(cheap_cold.schedule(), Schedule::evict());
    }

    /// No idle time seen: keep as long as the memory costs one cold start.
    #[test]
    fn no_data_is_ski_rental() {
        assert_eq!(
            learner(10.0, 256).schedule(),
            Schedule::keep_for(40 * MINUTE_MS)
        );
        assert_eq!(
            learner(5.0, 1024).schedule(),
            Schedule::keep_for(5 * MINUTE_MS)
        );
        assert_eq!(
            learner(1e6, 128).schedule(),
            Schedule::keep_for(BINS as u64 * MINUTE_MS),
            "ski rental is capped at the histogram's range"
        );
    }

    /// Calls a few seconds apart inside one burst agree with each other, but they
    /// say nothing of when the next burst comes: not a timer, so still ski rental.
    #[test]
    fn sub_minute_idle_times_in_a_burst_are_not_taken_for_a_timer() {
        let mut p = learner(50.0, 128);
        for _ in 0..MIN_SEEN_AGREEING {
            p.observe_idle(5_000);
        }
        assert_eq!(p.schedule(), Schedule::keep_for(BINS as u64 * MINUTE_MS));
        // Three that agree a minute or more apart are a timer's.
        let mut timer = learner(50.0, 128);
        for _ in 0..MIN_SEEN_AGREEING {
            timer.observe_idle(20 * MINUTE_MS);
        }
        assert_ne!(
            timer.schedule(),
            Schedule::keep_for(BINS as u64 * MINUTE_MS)
        );
    }

    /// One busy burst gives many idle times, all sub-minute: not yet enough to
    /// trust what the function does between bursts.
    #[test]
    fn a_burst_alone_does_not_end_ski_rental() {
        // 1 GB at a cost ratio of 10: ski rental keeps 10 minutes.
        let ski_rental = Schedule::keep_for(10 * MINUTE_MS);
        let mut p = learner(10.0, 1024);
        for i in 0..30 {
            p.observe_idle(1_000 + i * 500);
        }
        p.observe_idle(30 * MINUTE_MS);
        p.observe_idle(75 * MINUTE_MS);
        assert_eq!(p.schedule(), ski_rental);
        for i in 0..(MIN_SEEN - 2) {
            p.observe_idle((40 + 5 * i) * MINUTE_MS);
        }
        assert_ne!(p.schedule(), ski_rental);
    }

    #[test]
    fn a_new_idle_time_changes_the_answer() {
        let mut p = learner(10.0, 256);
        for _ in 0..10 {
            p.observe_idle(30 * MINUTE_MS);
        }
        let before = p.schedule();
        for _ in 0..500 {
            p.observe_idle(2 * MINUTE_MS);
        }
        let after = p.schedule();
        assert_ne!(before, after);
        assert!(after.is_warm_at(2 * MINUTE_MS + 1), "{after}");
    }
}
