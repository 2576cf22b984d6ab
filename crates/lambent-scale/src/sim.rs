//! `lambent simulate`: a trace replayed in virtual time through the keep-alive
//! policies and the [`Warmth`] state machine the live pool uses.
//!
//! Per function, each minute's count becomes arrival times ([`Arrivals`]); each
//! invocation holds an instance for the function's average duration (cold-start time
//! is not added: the trace's durations exclude it). Functions are independent (no
//! node memory budget), so they are simulated in parallel; each has its own random
//! stream from the seed and its index, so every policy sees the same arrivals.

use crate::trace::{Trace, TraceFunction};
use crate::{KeepAlivePolicy, MINUTE_MS, Profile, Start, Warmth, WarmthStats};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How arrivals inside a trace minute are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// The minute's count, each at an independent uniform time in the minute.
    Uniform,
    /// A Poisson process at the minute's rate: the count varies around the trace's.
    Poisson,
    /// The minute's count, evenly spaced.
    Equidistant,
}

impl std::str::FromStr for Arrivals {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(Self::Uniform),
            "poisson" => Ok(Self::Poisson),
            "equidistant" => Ok(Self::Equidistant),
            _ => Err(format!(
                "unknown arrival synthesis {s:?}: uniform, poisson or equidistant"
            )),
        }
    }
}

impl Arrivals {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Poisson => "poisson",
            Self::Equidistant => "equidistant",
        }
    }
}

/// One policy's result over a trace (`--json` prints exactly these keys).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub policy: String,
    pub invocations: u64,
    pub cold_starts: u64,
    /// Median over functions of each function's cold-start percentage.
    pub cold_start_pct_p50: f64,
    /// 75th percentile over functions of each function's cold-start percentage.
    pub cold_start_pct_p75: f64,
    /// GB·s of warm instances kept idle.
    pub wasted_memory_gb_s: f64,
    #[serde(skip)]
    pub prewarms: u64,
    /// The part of the wasted memory that served no arrival.
    #[serde(skip)]
    pub unused_memory_gb_s: f64,
}

/// Replays `trace` under `policy`. `progress` is called once per function done.
pub fn simulate(
    trace: &Trace,
    policy: &dyn KeepAlivePolicy,
    arrivals: Arrivals,
    seed: u64,
    progress: &(dyn Fn() + Sync),
) -> Report {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(vec![WarmthStats::default(); trace.functions.len()]);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = trace.functions.get(i) else {
                        return;
                    };
                    let stats = simulate_function(f, policy, arrivals, seed, i as u64);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = stats;
                    progress();
                }
            });
        }
    });
    let per_function = results.into_inner().unwrap_or_else(|p| p.into_inner());
    report(policy.name(), &per_function)
}

fn report(policy: String, per_function: &[WarmthStats]) -> Report {
    let mut total = WarmthStats::default();
    let mut pcts = Vec::new();
    for s in per_function {
        total.add(s);
        if s.arrivals > 0 {
            pcts.push(100.0 * s.cold_starts as f64 / s.arrivals as f64);
        }
    }
    pcts.sort_by(f64::total_cmp);
    Report {
        policy,
        invocations: total.arrivals,
        cold_starts: total.cold_starts,
        cold_start_pct_p50: percentile(&pcts, 0.50),
        cold_start_pct_p75: percentile(&pcts, 0.75),
        wasted_memory_gb_s: total.wasted_mb_ms as f64 / 1024.0 / 1000.0,
        prewarms: total.prewarms,
        unused_memory_gb_s: total.unused_mb_ms as f64 / 1024.0 / 1000.0,
    }
}

/// Linear interpolation between closest ranks (numpy's default) of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

/// One function's replay; the same arrivals for every policy (seeded by `index`).
pub fn simulate_function(
    f: &TraceFunction,
    policy: &dyn KeepAlivePolicy,
    arrivals: Arrivals,
    seed: u64,
    index: u64,
) -> WarmthStats {
    let memory_mb = f.memory_mb;
    let mut warmth = Warmth::new(policy.for_function(Profile { memory_mb }), memory_mb);
    let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let duration = (f.duration_ms.round() as u64).max(1);
    let mut busy: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut actions = Vec::new();
    let mut times = Vec::new();
    for (m, &n) in f.per_minute.iter().enumerate() {
        let minute = m as u64 * MINUTE_MS;
        arrival_times(arrivals, n, minute, &mut rng, &mut times);
        for &t in &times {
            while let Some(&Reverse((end, id))) = busy.peek() {
                if end > t {
                    break;
                }
                busy.pop();
                warmth.finish(end, id, true, &mut actions);
            }
            let (Start::Warm(id) | Start::Cold(id)) = warmth.arrive(t, |_| true, &mut actions);
            busy.push(Reverse((t + duration, id)));
            actions.clear();
        }
    }
    let mut end = f.per_minute.len() as u64 * MINUTE_MS;
    while let Some(Reverse((at, id))) = busy.pop() {
        warmth.finish(at, id, true, &mut actions);
        end = end.max(at);
    }
    warmth.advance(end, &mut actions);
    warmth.drain(end, crate::EvictReason::Replaced);
    *warmth.stats()
}

/// Arrival times in the minute starting at `start`, sorted, into `out`.
fn arrival_times(arrivals: Arrivals, n: u32, start: u64, rng: &mut StdRng, out: &mut Vec<u64>) {
    out.clear();
    let end = start + MINUTE_MS;
    match arrivals {
        Arrivals::Uniform => {
            out.extend((0..n).map(|_| start + rng.random_range(0..MINUTE_MS)));
            out.sort_unstable();
        }
        Arrivals::Equidistant => {
            let gap = MINUTE_MS as f64 / f64::from(n.max(1));
            out.extend((0..n).map(|i| start + ((f64::from(i) + 0.5) * gap) as u64));
        }
        Arrivals::Poisson => {
            // Exponential gaps at this minute's rate, from this minute's start (an
            // arrival drawn past the minute's end is dropped, not carried over).
            if n == 0 {
                return;
            }
            let mean_gap = MINUTE_MS as f64 / f64::from(n);
            let mut t = start as f64;
            loop {
                let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
                t += -u.ln() * mean_gap;
                if t >= end as f64 {
                    break;
                }
                out.push(t as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fixed, parse_policy};

    fn function(per_minute: Vec<u32>, duration_ms: f64) -> TraceFunction {
        TraceFunction {
            key: "o/a/f".into(),
            trigger: "http".into(),
            per_minute,
            duration_ms,
            memory_mb: 1024,
        }
    }

    #[test]
    fn a_fixed_keep_alive_replay_counts_what_it_should() {
        // One call at minutes 0, 5 and 30; equidistant puts each at 30 s.
        let mut per_minute = vec![0; 40];
        for m in [0, 5, 30] {
            per_minute[m] = 1;
        }
        let f = function(per_minute, 1000.0);
        let ten = Fixed::new(10 * MINUTE_MS);
        let s = simulate_function(&f, &ten, Arrivals::Equidistant, 1, 0);
        // Cold at 0 and at 30 (25 min idle > 10), warm at 5.
        assert_eq!((s.arrivals, s.cold_starts), (3, 2));
        // Idle from 0:31 to 5:30 (then reused), 5:31 for 10 min (evicted), and from
        // 30:31 to the trace's end at 40:00.
        let idle_ms = (5 * 60 - 1) * 1000 + 10 * MINUTE_MS + (9 * 60 + 29) * 1000;
        assert_eq!(s.wasted_mb_ms, idle_ms * 1024);
    }

    #[test]
    fn every_policy_sees_the_same_arrivals_and_poisson_varies_the_count() {
        let f = function(vec![3, 0, 7, 1, 0, 0, 2], 200.0);
        for arrivals in [Arrivals::Uniform, Arrivals::Equidistant] {
            for spec in ["fixed:1m", "histogram", "mdp"] {
                let p = parse_policy(spec).unwrap_or_else(|e| panic!("{e}"));
                let s = simulate_function(&f, p.as_ref(), arrivals, 7, 3);
                assert_eq!(s.arrivals, 13, "{spec} {arrivals:?}");
            }
        }
        let counts: Vec<u64> = (0..20)
            .map(|seed| simulate_function(&f, &Fixed::new(0), Arrivals::Poisson, seed, 0).arrivals)
            .collect();
        assert!(counts.iter().any(|&c| c != 13), "{counts:?}");
    }

    #[test]
    fn percentiles_interpolate() {
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.75), 4.0);
    }
}
