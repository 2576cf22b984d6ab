//! `histogram`: the hybrid histogram policy of "Serverless in the Wild" (Shahrad et
//! al., USENIX ATC 2020, §4.2).
//!
//! Per function, an idle-time histogram of 1-minute bins over 4 hours. When it is
//! representative (enough idle times, and the bin counts' coefficient of variation at
//! least 2), evict at once, pre-warm at the 5th percentile ×0.9 and keep until the
//! 99th ×1.1 (keep from the start when the pre-warm point is 0). When it is not, the
//! standard keep-alive: keep for the histogram's range (4 hours). When too many idle
//! times fall outside the range, a time-series prediction of the next idle time: the
//! paper fits ARIMA; we use simple exponential smoothing of the out-of-range idle
//! times, which *is* ARIMA(0,1,1), with a fixed smoothing constant instead of a fit
//! per function, so it costs O(1) per idle time. Pre-warm at 85% of the prediction,
//! keep until 115% of it (the paper's 15% margins).

use crate::idle::{BINS, IdleHistogram};
use crate::{FunctionPolicy, KeepAlivePolicy, Learned, MINUTE_MS, Profile, Schedule};

/// Idle times needed before the histogram is trusted.
const MIN_SEEN: u64 = 10;
/// The CV threshold of the paper.
const MIN_CV: f64 = 2.0;
/// Out-of-range share past which the time-series prediction is used.
const MAX_OUT_OF_RANGE: f64 = 0.5;
/// Smoothing constant of the out-of-range predictor.
const SMOOTHING: f64 = 0.5;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram;

impl KeepAlivePolicy for Histogram {
    fn name(&self) -> String {
        "histogram".into()
    }

    fn for_function(&self, _profile: Profile) -> Box<dyn FunctionPolicy> {
        Box::new(HistogramFunction {
            hist: IdleHistogram::new(1.0),
            predicted_ms: None,
        })
    }
}

struct HistogramFunction {
    hist: IdleHistogram,
    /// Smoothed out-of-range idle time.
    predicted_ms: Option<f64>,
}

impl FunctionPolicy for HistogramFunction {
    fn observe_idle(&mut self, idle_ms: u64) {
        self.hist.observe(idle_ms);
        if idle_ms >= BINS as u64 * MINUTE_MS {
            let x = idle_ms as f64;
            self.predicted_ms = Some(match self.predicted_ms {
                Some(p) => SMOOTHING * x + (1.0 - SMOOTHING) * p,
                None => x,
            });
        }
    }

    fn learned(&self) -> Option<Learned> {
        Some(Learned {
            kind: "histogram".into(),
            idle: self.hist.snapshot(),
            predicted_ms: self.predicted_ms,
        })
    }

    fn relearn(&mut self, learned: &Learned) -> bool {
        let predicted_sound = learned
            .predicted_ms
            .is_none_or(|p| p.is_finite() && p >= 0.0);
        if learned.kind != "histogram" || !predicted_sound || !self.hist.restore(&learned.idle) {
            return false;
        }
        self.predicted_ms = learned.predicted_ms;
        true
    }

    fn schedule(&mut self) -> Schedule {
        let h = &self.hist;
        let standard = Schedule::keep_for(BINS as u64 * MINUTE_MS);
        if h.seen() < MIN_SEEN {
            return standard;
        }
        if h.out_of_range() > MAX_OUT_OF_RANGE * h.total() {
            return match self.predicted_ms {
                Some(p) => Schedule::from_windows([((0.85 * p) as u64, (1.15 * p) as u64)]),
                None => standard,
            };
        }
        if h.cv() < MIN_CV {
            return standard;
        }
        // Bin k holds idle times in [k, k+1) minutes: the head is taken at the bin's
        // start and the tail at its end, so the window covers the bins it names.
        let head = (h.percentile_bin(0.05) as f64 * 0.9 * MINUTE_MS as f64) as u64;
        let tail = ((h.percentile_bin(0.99) + 1) as f64 * 1.1 * MINUTE_MS as f64).ceil() as u64;
        Schedule::from_windows([(head, tail)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Box<dyn FunctionPolicy> {
        Histogram.for_function(Profile { memory_mb: 128 })
    }

    #[test]
    fn a_periodic_function_is_pre_warmed_just_before_its_period() {
        let mut p = policy();
        for _ in 0..20 {
            p.observe_idle(30 * MINUTE_MS - 2000);
        }
        // All in bin 29: pre-warm at 29 × 0.9 = 26.1 min, keep until 30 × 1.1 = 33.
        assert_eq!(
            p.schedule(),
            Schedule::from_windows([(26 * MINUTE_MS + 6000, 33 * MINUTE_MS)])
        );
    }

    #[test]
    fn short_idle_times_keep_from_the_start() {
        let mut p = policy();
        for i in 0..20 {
            p.observe_idle(i % 2 * MINUTE_MS + 10);
        }
        assert_eq!(p.schedule(), Schedule::keep_for((2.2 * 60_000.0) as u64));
    }

    #[test]
    fn too_few_or_spread_idle_times_get_the_standard_keep_alive() {
        let mut p = policy();
        for _ in 0..(MIN_SEEN - 1) {
            p.observe_idle(5 * MINUTE_MS);
        }
        assert_eq!(p.schedule(), Schedule::keep_for(4 * 60 * MINUTE_MS));
        let mut spread = policy();
        for m in 0..200 {
            spread.observe_idle(m * MINUTE_MS);
        }
        assert_eq!(spread.schedule(), Schedule::keep_for(4 * 60 * MINUTE_MS));
    }

    #[test]
    fn mostly_out_of_range_idle_times_are_predicted() {
        let mut p = policy();
        for _ in 0..12 {
            p.observe_idle(6 * 60 * MINUTE_MS);
        }
        let s = p.schedule();
        let six_h = 6.0 * 60.0 * MINUTE_MS as f64;
        assert_eq!(
            s,
            Schedule::from_windows([((0.85 * six_h) as u64, (1.15 * six_h) as u64)])
        );
    }
}
