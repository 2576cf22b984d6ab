//! What a policy answers for one idle period: when the function is kept warm.

/// The windows of an idle period during which the function is kept warm, as
/// milliseconds from the moment the function went idle (its last busy instance
/// finished). Sorted and disjoint. A window from 0 keeps the instances that just
/// finished ("keep until c"); a later window is a pre-warm ("evict at a, pre-warm
/// at b, keep until c") of as many instances as the last burst had busy at once
/// (see [`crate::Warmth`]); no window evicts at once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schedule {
    windows: Vec<(u64, u64)>,
}

impl Schedule {
    /// Evict at once and never pre-warm.
    pub fn evict() -> Self {
        Self::default()
    }

    /// Keep the idle instance for `ms`, then evict.
    pub fn keep_for(ms: u64) -> Self {
        Self::from_windows([(0, ms)])
    }

    /// The given warm windows, sorted, with empty ones dropped and touching or
    /// overlapping ones merged.
    pub fn from_windows(windows: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut w: Vec<(u64, u64)> = windows.into_iter().filter(|(s, e)| e > s).collect();
        w.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(w.len());
        for (s, e) in w {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        Self { windows: merged }
    }

    pub fn windows(&self) -> &[(u64, u64)] {
        &self.windows
    }

    /// How long an instance that goes idle is kept (the window from 0, if any).
    pub fn keep_ms(&self) -> u64 {
        match self.windows.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    /// Whether the schedule keeps an instance warm `at` ms into the idle period.
    pub fn is_warm_at(&self, at: u64) -> bool {
        self.windows.iter().any(|&(s, e)| s <= at && at < e)
    }

    /// The first pre-warm (a window that starts after 0), if any.
    pub fn first_prewarm(&self) -> Option<(u64, u64)> {
        self.windows.iter().copied().find(|&(s, _)| s > 0)
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.windows.is_empty() {
            return f.write_str("evict at once");
        }
        let t = |ms: u64| {
            if ms < 60_000 {
                format!("{} s", ms as f64 / 1000.0)
            } else {
                format!("{:.1} min", ms as f64 / 60_000.0)
            }
        };
        for (i, (s, e)) in self.windows.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if *s == 0 {
                write!(f, "keep {}", t(*e))?;
            } else {
                write!(f, "pre-warm from {} to {}", t(*s), t(*e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_sorted_merged_and_empty_ones_dropped() {
        let s = Schedule::from_windows([(50, 60), (0, 10), (10, 20), (30, 30), (55, 70)]);
        assert_eq!(s.windows(), &[(0, 20), (50, 70)]);
        assert_eq!(s.keep_ms(), 20);
        assert_eq!(s.first_prewarm(), Some((50, 70)));
        assert!(s.is_warm_at(0) && !s.is_warm_at(20) && s.is_warm_at(69));
        assert_eq!(Schedule::from_windows([(5, 9)]).keep_ms(), 0);
        assert_eq!(Schedule::evict().to_string(), "evict at once");
        assert_eq!(
            Schedule::from_windows([(0, 1500), (90_000, 600_000)]).to_string(),
            "keep 1.5 s, pre-warm from 1.5 min to 10.0 min"
        );
    }
}
