//! Which idle instance goes when the node's memory budget is short: Greedy-Dual-
//! Size-Frequency, as FaasCache (Fuerst and Sharma, ASPLOS 2021) applies it to warm
//! functions. An instance's priority, set when it goes idle, is
//!
//!   clock + frequency × cold-start cost / memory
//!
//! — keep what is called often, costly to start again and small. The lowest goes
//! first, and the clock rises to its priority, so instances idle since long ago age
//! out below recently used ones however often their function ran.

/// The aging clock of the eviction order (one per node).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GreedyDual {
    clock: f64,
}

/// The terms of one priority, kept to say why a victim was chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Priority {
    pub value: f64,
    pub clock: f64,
    pub frequency: u64,
    pub cold_start_ms: f64,
    pub memory_mb: u32,
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "priority {:.2} = clock {:.2} + {} calls × {:.0} ms cold start / {} MB",
            self.value, self.clock, self.frequency, self.cold_start_ms, self.memory_mb
        )
    }
}

impl GreedyDual {
    pub fn clock(&self) -> f64 {
        self.clock
    }

    /// The priority of an instance going idle now.
    pub fn priority(&self, frequency: u64, cold_start_ms: f64, memory_mb: u32) -> Priority {
        let cost = cold_start_ms.max(1.0);
        Priority {
            value: self.clock + frequency.max(1) as f64 * cost / f64::from(memory_mb.max(1)),
            clock: self.clock,
            frequency,
            cold_start_ms: cost,
            memory_mb,
        }
    }

    /// The candidate to evict (the lowest priority); the clock rises to it.
    pub fn choose<K>(
        &mut self,
        candidates: impl IntoIterator<Item = (K, Priority)>,
    ) -> Option<(K, Priority)> {
        let victim = candidates
            .into_iter()
            .min_by(|a, b| a.1.value.total_cmp(&b.1.value))?;
        self.clock = self.clock.max(victim.1.value);
        Some(victim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cheapest_to_lose_goes_first_and_the_clock_ages_the_rest() {
        let mut gd = GreedyDual::default();
        let often = gd.priority(100, 200.0, 128); // 156
        let rarely = gd.priority(2, 200.0, 128); // 3.1
        let big = gd.priority(100, 200.0, 4096); // 4.9
        let (victim, p) = gd
            .choose([("often", often), ("rarely", rarely), ("big", big)])
            .unwrap();
        assert_eq!(victim, "rarely");
        assert_eq!(gd.clock(), p.value);
        let (victim, _) = gd.choose([("often", often), ("big", big)]).unwrap();
        assert_eq!(victim, "big");
        // A rarely used instance idle from now outranks the old frequent one once the
        // clock has passed it.
        let mut gd = GreedyDual::default();
        gd.choose([((), gd.priority(1000, 200.0, 128))]);
        let fresh = gd.priority(1, 200.0, 128);
        assert!(fresh.value > often.value);
        assert!(
            fresh
                .to_string()
                .contains("1 calls × 200 ms cold start / 128 MB")
        );
        assert!(gd.choose(Vec::<((), Priority)>::new()).is_none());
    }
}
