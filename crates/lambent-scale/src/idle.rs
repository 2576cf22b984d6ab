//! A function's idle-time histogram: 1-minute bins over 4 hours, an out-of-range
//! count, and exponential decay so old behaviour fades (drift).

use crate::MINUTE_MS;

/// Bins of the histogram: 4 hours of 1-minute bins ("Serverless in the Wild").
pub const BINS: usize = 240;

/// Rescale the weights before they overflow (the decay is applied by growing the
/// weight of each new observation instead of shrinking every bin: O(1) per idle time).
const RESCALE_AT: f64 = 1e100;

/// An [`IdleHistogram`]'s state, serializable. Weights are kept as the bits of their
/// `f64`, so the state comes back exactly through any text form (a decimal float
/// read back may differ in its last bit, and a tie in the MDP with it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdleSnapshot {
    /// The nonzero bins: (bin, weight).
    bins: Vec<(usize, u64)>,
    /// out_of_range, weight, growth, sum, sum_sq, bin0_ms.
    floats: [u64; 6],
    highest_bin: usize,
    lowest_bin: usize,
    seen: u64,
    seen_long: u64,
}

impl IdleSnapshot {
    /// Idle times it was learned from.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

#[derive(Debug, Clone)]
pub struct IdleHistogram {
    counts: Box<[f64; BINS]>,
    out_of_range: f64,
    /// Weight of the next observation (grows by 1/decay per observation).
    weight: f64,
    growth: f64,
    /// Sum and sum of squares of the in-range bin counts (for the CV).
    sum: f64,
    sum_sq: f64,
    /// Weighted sum of idle times that fell in bin 0, in ms (sub-minute idle times
    /// are common and cost much less than half a minute of memory each).
    bin0_ms: f64,
    highest_bin: usize,
    lowest_bin: usize,
    seen: u64,
    /// Idle times seen of a minute or longer (undecayed count).
    seen_long: u64,
}

impl IdleHistogram {
    /// `decay` in (0, 1]: how much every earlier idle time weighs after one more is
    /// seen (1 keeps all history equally).
    pub fn new(decay: f64) -> Self {
        let decay = if decay > 0.0 && decay <= 1.0 {
            decay
        } else {
            1.0
        };
        Self {
            counts: Box::new([0.0; BINS]),
            out_of_range: 0.0,
            weight: 1.0,
            growth: 1.0 / decay,
            sum: 0.0,
            sum_sq: 0.0,
            bin0_ms: 0.0,
            highest_bin: 0,
            lowest_bin: BINS,
            seen: 0,
            seen_long: 0,
        }
    }

    pub fn observe(&mut self, idle_ms: u64) {
        let w = self.weight;
        let bin = usize::try_from(idle_ms / MINUTE_MS).unwrap_or(usize::MAX);
        if bin < BINS {
            let c = &mut self.counts[bin];
            self.sum_sq += (*c + w) * (*c + w) - *c * *c;
            self.sum += w;
            *c += w;
            self.highest_bin = self.highest_bin.max(bin);
            self.lowest_bin = self.lowest_bin.min(bin);
            if bin == 0 {
                self.bin0_ms += w * idle_ms as f64;
            }
        } else {
            self.out_of_range += w;
        }
        self.seen += 1;
        if bin >= 1 {
            self.seen_long += 1;
        }
        self.weight *= self.growth;
        if self.weight > RESCALE_AT {
            let k = 1.0 / self.weight;
            self.counts.iter_mut().for_each(|c| *c *= k);
            self.out_of_range *= k;
            self.sum *= k;
            self.sum_sq *= k * k;
            self.bin0_ms *= k;
            self.weight = 1.0;
        }
    }

    /// What it holds, to be kept across restarts.
    pub fn snapshot(&self) -> IdleSnapshot {
        IdleSnapshot {
            bins: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c != 0.0)
                .map(|(k, c)| (k, c.to_bits()))
                .collect(),
            floats: [
                self.out_of_range,
                self.weight,
                self.growth,
                self.sum,
                self.sum_sq,
                self.bin0_ms,
            ]
            .map(f64::to_bits),
            highest_bin: self.highest_bin,
            lowest_bin: self.lowest_bin,
            seen: self.seen,
            seen_long: self.seen_long,
        }
    }

    /// Takes up a snapshot: false (and unchanged) if it was taken with another decay
    /// or does not hold together (a bin past the range, a weight not finite).
    pub fn restore(&mut self, s: &IdleSnapshot) -> bool {
        let [out_of_range, weight, growth, sum, sum_sq, bin0_ms] = s.floats.map(f64::from_bits);
        let sound = growth == self.growth
            && [out_of_range, weight, sum, sum_sq, bin0_ms]
                .iter()
                .all(|n| n.is_finite() && *n >= 0.0)
            && weight > 0.0
            && s.bins.iter().all(|(k, c)| {
                let c = f64::from_bits(*c);
                *k < BINS && c.is_finite() && c > 0.0
            })
            && s.highest_bin < BINS
            && s.lowest_bin <= BINS;
        if !sound {
            return false;
        }
        let mut counts = Box::new([0.0; BINS]);
        for (k, c) in &s.bins {
            counts[*k] = f64::from_bits(*c);
        }
        *self = Self {
            counts,
            out_of_range,
            weight,
            growth,
            sum,
            sum_sq,
            bin0_ms,
            highest_bin: s.highest_bin,
            lowest_bin: s.lowest_bin,
            seen: s.seen,
            seen_long: s.seen_long,
        };
        true
    }

    /// Idle times seen (undecayed count).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Idle times seen of a minute or longer (undecayed count).
    pub fn seen_long(&self) -> u64 {
        self.seen_long
    }

    /// Decayed weight of bin `k` (0 past the range).
    pub fn count(&self, k: usize) -> f64 {
        self.counts.get(k).copied().unwrap_or(0.0)
    }

    pub fn out_of_range(&self) -> f64 {
        self.out_of_range
    }

    pub fn in_range(&self) -> f64 {
        self.sum
    }

    pub fn total(&self) -> f64 {
        self.sum + self.out_of_range
    }

    /// The highest bin that has held an idle time.
    pub fn highest_bin(&self) -> usize {
        self.highest_bin
    }

    /// The lowest bin that has held an idle time (`None` when none was in range).
    pub fn lowest_bin(&self) -> Option<usize> {
        (self.lowest_bin < BINS).then_some(self.lowest_bin)
    }

    /// How many bins apart the shortest and longest in-range idle times are (0 when
    /// none was in range).
    pub fn bin_spread(&self) -> usize {
        self.highest_bin.saturating_sub(self.lowest_bin)
    }

    /// Mean idle time of those under a minute, in ms.
    pub fn bin0_mean_ms(&self) -> f64 {
        let c = self.counts[0];
        if c > 0.0 {
            self.bin0_ms / c
        } else {
            MINUTE_MS as f64 / 2.0
        }
    }

    /// Coefficient of variation of the bin counts over all bins.
    pub fn cv(&self) -> f64 {
        let n = BINS as f64;
        let mean = self.sum / n;
        if mean <= 0.0 {
            return 0.0;
        }
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        var.sqrt() / mean
    }

    /// The bin holding the `q`-quantile (0..=1) of the in-range idle times.
    pub fn percentile_bin(&self, q: f64) -> usize {
        let target = q.clamp(0.0, 1.0) * self.sum;
        let mut acc = 0.0;
        for (k, c) in self.counts.iter().enumerate().take(self.highest_bin + 1) {
            acc += c;
            if acc >= target && *c > 0.0 {
                return k;
            }
        }
        self.highest_bin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_percentiles_and_cv() {
        let mut h = IdleHistogram::new(1.0);
        for m in 0..100u64 {
            h.observe(m * MINUTE_MS + 5);
        }
        h.observe(300 * MINUTE_MS);
        assert_eq!(h.seen(), 101);
        assert_eq!(h.out_of_range(), 1.0);
        assert_eq!(h.percentile_bin(0.05), 4);
        assert_eq!(h.percentile_bin(0.99), 98);
        assert_eq!(h.highest_bin(), 99);
        // 100 of 240 bins hold one each: CV = sqrt(240/100 - 1).
        assert!((h.cv() - (1.4f64).sqrt()).abs() < 1e-9, "{}", h.cv());
        let mut one = IdleHistogram::new(1.0);
        for _ in 0..10 {
            one.observe(7 * MINUTE_MS);
        }
        assert!((one.cv() - (239f64).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn decay_fades_old_idle_times_and_survives_rescaling() {
        let mut h = IdleHistogram::new(0.5);
        for _ in 0..2000 {
            h.observe(3 * MINUTE_MS);
        }
        h.observe(10 * MINUTE_MS);
        // The last one weighs as much as all before it together (a geometric series).
        let share = h.count(10) / h.total();
        assert!((share - 0.5).abs() < 1e-6, "{share}");
        assert!(h.total().is_finite());
        assert!(h.bin0_mean_ms() == 30_000.0);
    }
}
