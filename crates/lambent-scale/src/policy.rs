//! The keep-alive policy extension point and the policy spec grammar.

use crate::idle::IdleSnapshot;
use crate::{Fixed, Histogram, Mdp, Schedule};
use std::sync::Arc;

/// What a policy knows of a function besides its idle times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Memory an instance holds while warm, in MB (its cost per minute kept).
    pub memory_mb: u32,
}

impl Profile {
    pub fn memory_gb(&self) -> f64 {
        f64::from(self.memory_mb.max(1)) / 1024.0
    }
}

/// One function's policy: it learns that function's idle times online (never from
/// the future) and answers the schedule of each idle period.
pub trait FunctionPolicy: Send {
    /// The function was idle `idle_ms` (from its last busy instance finishing to the
    /// next arrival).
    fn observe_idle(&mut self, idle_ms: u64);
    /// The schedule of an idle period that starts now.
    fn schedule(&mut self) -> Schedule;
    /// What it has learned, to be kept across restarts (`None`: nothing to keep).
    fn learned(&self) -> Option<Learned> {
        None
    }
    /// Takes up what a policy of its kind learned before; false (and unchanged) if
    /// it was learned by another kind or cannot be used.
    fn relearn(&mut self, _learned: &Learned) -> bool {
        false
    }
}

/// What a function's policy learned of it, serializable: kept by the node across
/// restarts and handed to the policy made for the function afterwards (or when its
/// spec changes the policy's options).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Learned {
    /// The kind of policy that learned it (`mdp`, `histogram`): another kind weighs
    /// idle times differently and starts afresh.
    pub kind: String,
    /// Its idle-time histogram.
    pub idle: IdleSnapshot,
    /// The histogram policy's smoothed out-of-range idle time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_ms: Option<f64>,
}

/// A keep-alive policy: the node-wide choice, which makes one [`FunctionPolicy`] per
/// function.
pub trait KeepAlivePolicy: Send + Sync + std::fmt::Debug {
    /// The spec that makes this policy again (`fixed:10m`, `mdp:cost-ratio=20`).
    fn name(&self) -> String;
    fn for_function(&self, profile: Profile) -> Box<dyn FunctionPolicy>;
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error(
        "unknown keep-alive policy {0:?}: expected fixed:DURATION (e.g. fixed:10m), histogram, mdp or mdp:cost-ratio=R"
    )]
    Unknown(String),
    #[error("keep-alive policy {spec:?}: {problem}")]
    Invalid { spec: String, problem: String },
}

/// Parses a policy spec: `fixed:10m` (or a bare duration: `600`, `90s`, `10m`, `2h`),
/// `histogram`, `mdp`, `mdp:cost-ratio=R[,prewarm-cost=P][,discount=G]`.
pub fn parse_policy(spec: &str) -> Result<Arc<dyn KeepAlivePolicy>, PolicyError> {
    let spec = spec.trim();
    let invalid = |problem: String| PolicyError::Invalid {
        spec: spec.to_string(),
        problem,
    };
    let (kind, args) = spec.split_once(':').unwrap_or((spec, ""));
    match kind {
        "fixed" => Ok(Arc::new(Fixed::new(
            parse_duration_ms(args).map_err(invalid)?,
        ))),
        "histogram" if args.is_empty() => Ok(Arc::new(Histogram)),
        "histogram" => Err(invalid("the histogram policy takes no options".into())),
        "mdp" => {
            let mut mdp = Mdp::default();
            for opt in args.split(',').filter(|o| !o.is_empty()) {
                let (key, value) = opt
                    .split_once('=')
                    .ok_or_else(|| invalid(format!("{opt:?} is not KEY=VALUE")))?;
                let value: f64 = value
                    .parse()
                    .map_err(|_| invalid(format!("{key}: {value:?} is not a number")))?;
                let positive = |v: f64| {
                    if v.is_finite() && v > 0.0 {
                        Ok(v)
                    } else {
                        Err(invalid(format!("{key} must be a positive number")))
                    }
                };
                match key {
                    "cost-ratio" => mdp.cost_ratio = positive(value)?,
                    "prewarm-cost" => mdp.prewarm_cost = positive(value)?,
                    "discount" if value > 0.0 && value <= 1.0 => mdp.discount = value,
                    "discount" => return Err(invalid("discount must be in (0, 1]".into())),
                    _ => {
                        return Err(invalid(format!(
                            "unknown option {key:?} (cost-ratio, prewarm-cost, discount)"
                        )));
                    }
                }
            }
            Ok(Arc::new(mdp))
        }
        _ if kind.starts_with(|c: char| c.is_ascii_digit()) && args.is_empty() => Ok(Arc::new(
            Fixed::new(parse_duration_ms(kind).map_err(invalid)?),
        )),
        _ => Err(PolicyError::Unknown(spec.to_string())),
    }
}

/// `600` (seconds), `500ms`, `90s`, `10m`, `2h`.
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 10m or 2h"))?;
    let scale = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("unknown unit {unit:?} (ms, s, m, h)")),
    };
    n.checked_mul(scale)
        .filter(|&ms| ms <= 7 * 24 * 3_600_000)
        .ok_or_else(|| format!("{s:?} is longer than a week"))
}

/// A duration in the shortest exact unit (`10m`, `90s`).
pub(crate) fn format_duration_ms(ms: u64) -> String {
    match ms {
        0 => "0s".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MINUTE_MS;

    /// A function called about every 15 minutes, with a few calls seconds apart.
    fn feed(p: &mut dyn FunctionPolicy) {
        for i in 0..40u64 {
            p.observe_idle(if i % 4 == 3 {
                20_000
            } else {
                15 * MINUTE_MS - 1000 + i * 37
            });
        }
    }

    /// What a policy learned, kept as JSON and taken up by a fresh policy of its kind
    /// (a node restarted), gives the same schedules from then on; another kind
    /// refuses it and starts afresh; a fixed keep-alive has nothing to keep.
    #[test]
    fn what_a_policy_learned_is_taken_up_again_after_a_restart() {
        let profile = Profile { memory_mb: 256 };
        for spec in ["mdp:cost-ratio=20", "histogram"] {
            let kind = parse_policy(spec).unwrap_or_else(|e| panic!("{e}"));
            let mut first = kind.for_function(profile);
            feed(first.as_mut());
            let kept = first.learned().unwrap_or_else(|| panic!("{spec} learned"));
            assert_eq!(kept.idle.seen(), 40);
            let text = serde_json::to_string(&kept).unwrap_or_else(|e| panic!("{e}"));
            let read: Learned = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
            let mut again = kind.for_function(profile);
            assert_ne!(again.schedule(), first.schedule(), "{spec}: learning shows");
            assert!(again.relearn(&read), "{spec}");
            assert_eq!(again.schedule(), first.schedule(), "{spec}");
            for idle in [3 * MINUTE_MS, 15 * MINUTE_MS, 300 * MINUTE_MS] {
                first.observe_idle(idle);
                again.observe_idle(idle);
                assert_eq!(again.schedule(), first.schedule(), "{spec}, then {idle} ms");
            }
            assert_eq!(again.learned(), first.learned(), "{spec}");
        }
        let mut mdp = parse_policy("mdp")
            .unwrap_or_else(|e| panic!("{e}"))
            .for_function(profile);
        feed(mdp.as_mut());
        let learned = mdp.learned().unwrap_or_else(|| panic!("the MDP learned"));
        let mut histogram = Histogram.for_function(profile);
        let fresh = histogram.schedule();
        assert!(!histogram.relearn(&learned), "another kind's learning");
        assert_eq!(histogram.schedule(), fresh);
        // Another cost ratio takes it up: the histogram is the same.
        let mut dearer = parse_policy("mdp:cost-ratio=50")
            .unwrap_or_else(|e| panic!("{e}"))
            .for_function(profile);
        assert!(dearer.relearn(&learned));
        assert!(
            Fixed::new(MINUTE_MS)
                .for_function(profile)
                .learned()
                .is_none()
        );
    }

    #[test]
    fn specs_parse_and_name_themselves() {
        for (spec, name) in [
            ("fixed:10m", "fixed:10m"),
            ("fixed:20m", "fixed:20m"),
            ("600", "fixed:10m"),
            ("3", "fixed:3s"),
            ("fixed:90s", "fixed:90s"),
            ("histogram", "histogram"),
            ("mdp", "mdp:cost-ratio=10"),
            ("mdp:cost-ratio=2.5", "mdp:cost-ratio=2.5"),
        ] {
            let policy = parse_policy(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(policy.name(), name);
            // The name is itself a spec of the same policy.
            assert_eq!(parse_policy(name).map(|p| p.name()), Ok(name.to_string()));
        }
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, needle) in [
            ("lru", "unknown keep-alive policy"),
            ("fixed:10x", "unknown unit"),
            ("fixed:", "not a duration"),
            ("fixed:9999h", "longer than a week"),
            ("mdp:cost-ratio=-1", "positive"),
            ("mdp:cost-ratio", "KEY=VALUE"),
            ("mdp:ratio=2", "unknown option"),
            ("mdp:discount=1.5", "(0, 1]"),
            ("histogram:x", "no options"),
        ] {
            let err = parse_policy(spec).map(|p| p.name()).unwrap_err();
            assert!(err.to_string().contains(needle), "{spec}: {err}");
        }
    }
}
