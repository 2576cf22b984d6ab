//! Schedules: a timer (cron with seconds in a time zone, a fixed rate, or one time)
//! that publishes an event of a configured type at each nominal time.
//!
//! The misfire policy lives here because it is arithmetic: after downtime, the nominal
//! times missed are counted and only the latest is fired, once ([`Timer::due`]).

use crate::EpochMs;
use chrono::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::str::FromStr;

/// Most missed nominal times counted after downtime (the count says "at least" past it).
pub const MAX_COUNTED_MISSES: u64 = 10_000;

/// A schedule as users write it (CLI, API, manifest): exactly one of `cron`, `rate`, `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub name: String,
    /// Cron with optional seconds: `*/10 * * * * *`, `0 9 * * MON-FRI`, `@hourly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// `5 minutes`, `rate(1 hour)`, `30 seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// One time: RFC 3339 (`2026-12-01T09:00:00Z`), or a local time in `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// IANA time zone of `cron` and of a local `at` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The type of each firing's event (`timer_trigger`, say).
    #[serde(rename = "type")]
    pub ty: String,
    /// A function each firing goes to directly (rules matching the type see it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The event's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("invalid schedule name `{0}`: use 1-64 of A-Z a-z 0-9 _ -")]
    Name(String),
    #[error("schedule `{0}` needs exactly one of cron, rate or at")]
    When(String),
    #[error("schedule `{name}`: invalid cron expression `{expr}`: {detail}")]
    Cron {
        name: String,
        expr: String,
        detail: String,
    },
    #[error(
        "schedule `{name}`: invalid rate `{rate}`: expected a number and a unit, like `5 minutes` (seconds, minutes, hours, days)"
    )]
    Rate { name: String, rate: String },
    #[error(
        "schedule `{name}`: invalid time `{at}`: expected RFC 3339 (2026-12-01T09:00:00Z) or a local time (2026-12-01T09:00:00) with a timezone"
    )]
    At { name: String, at: String },
    #[error("schedule `{name}`: unknown time zone `{zone}` (use an IANA name like Europe/Paris)")]
    Zone { name: String, zone: String },
    #[error("schedule `{0}` needs an event type")]
    Type(String),
}

/// A validated timer.
#[derive(Debug, Clone)]
pub enum Timer {
    Cron(Box<croner::Cron>, chrono_tz::Tz),
    /// Every so many milliseconds from the schedule's anchor.
    Rate(i64),
    At(EpochMs),
}

/// What came due in a window of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The latest nominal time in the window: the one fired.
    pub nominal_ms: EpochMs,
    /// How many nominal times fell in the window (at most [`MAX_COUNTED_MISSES`]).
    pub count: u64,
}

impl ScheduleSpec {
    /// Validates the spec and compiles its timer.
    pub fn timer(&self) -> Result<Timer, ScheduleError> {
        crate::function::validate_name(&self.name)
            .map_err(|_| ScheduleError::Name(self.name.clone()))?;
        if self.ty.trim().is_empty() {
            return Err(ScheduleError::Type(self.name.clone()));
        }
        let zone = match &self.timezone {
            None => chrono_tz::UTC,
            Some(z) => chrono_tz::Tz::from_str(z).map_err(|_| ScheduleError::Zone {
                name: self.name.clone(),
                zone: z.clone(),
            })?,
        };
        match (&self.cron, &self.rate, &self.at) {
            (Some(expr), None, None) => croner::Cron::from_str(expr)
                .map(|c| Timer::Cron(Box::new(c), zone))
                .map_err(|e| ScheduleError::Cron {
                    name: self.name.clone(),
                    expr: expr.clone(),
                    detail: e.to_string(),
                }),
            (None, Some(rate), None) => {
                parse_rate(rate)
                    .map(Timer::Rate)
                    .ok_or_else(|| ScheduleError::Rate {
                        name: self.name.clone(),
                        rate: rate.clone(),
                    })
            }
            (None, None, Some(at)) => {
                parse_at(at, zone)
                    .map(Timer::At)
                    .ok_or_else(|| ScheduleError::At {
                        name: self.name.clone(),
                        at: at.clone(),
                    })
            }
            _ => Err(ScheduleError::When(self.name.clone())),
        }
    }
}

/// `5 minutes`, `rate(1 hour)`: milliseconds.
fn parse_rate(rate: &str) -> Option<i64> {
    let s = rate.trim();
    let s = s
        .strip_prefix("rate(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(s);
    let mut parts = s.split_whitespace();
    let n: i64 = parts.next()?.parse().ok()?;
    let unit = parts.next()?;
    if parts.next().is_some() || n <= 0 {
        return None;
    }
    let ms = match unit.trim_end_matches('s') {
        "second" => 1_000,
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms)
}

fn parse_at(at: &str, zone: chrono_tz::Tz) -> Option<EpochMs> {
    let at = at.trim();
    let at = at
        .strip_prefix("at(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(at);
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(at) {
        return Some(t.timestamp_millis());
    }
    let local = chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S").ok()?;
    zone.from_local_datetime(&local)
        .earliest()
        .map(|t| t.timestamp_millis())
}

impl Timer {
    /// The nominal times in `(after, until]` for a schedule anchored at `anchor_ms`
    /// (its creation): `None` when there is none, else the latest and how many.
    pub fn due(&self, anchor_ms: EpochMs, after_ms: EpochMs, until_ms: EpochMs) -> Option<Due> {
        if until_ms <= after_ms {
            return None;
        }
        match self {
            Timer::At(at) => (*at > after_ms && *at <= until_ms).then_some(Due {
                nominal_ms: *at,
                count: 1,
            }),
            Timer::Rate(every) => {
                // Nominal times are anchor + k * every, k >= 1.
                let first_k = (after_ms - anchor_ms).div_euclid(*every) + 1;
                let last_k = (until_ms - anchor_ms).div_euclid(*every);
                let first_k = first_k.max(1);
                (last_k >= first_k).then(|| Due {
                    nominal_ms: anchor_ms + last_k * every,
                    count: ((last_k - first_k + 1) as u64).min(MAX_COUNTED_MISSES),
                })
            }
            Timer::Cron(cron, zone) => {
                let after = zone.timestamp_millis_opt(after_ms).single()?;
                let until = zone.timestamp_millis_opt(until_ms).single()?;
                let latest = cron.find_previous_occurrence(&until, true).ok()?;
                if latest.timestamp_millis() <= after_ms {
                    return None;
                }
                let count = cron
                    .iter_after(after)
                    .take_while(|t| t.timestamp_millis() <= until_ms)
                    .take(MAX_COUNTED_MISSES as usize)
                    .count() as u64;
                Some(Due {
                    nominal_ms: latest.timestamp_millis(),
                    count: count.max(1),
                })
            }
        }
    }

    /// The first nominal time after `after_ms`, if the timer fires again.
    pub fn next_after(&self, anchor_ms: EpochMs, after_ms: EpochMs) -> Option<EpochMs> {
        match self {
            Timer::At(at) => (*at > after_ms).then_some(*at),
            Timer::Rate(every) => {
                let k = ((after_ms - anchor_ms).div_euclid(*every) + 1).max(1);
                Some(anchor_ms + k * every)
            }
            Timer::Cron(cron, zone) => {
                let after = zone.timestamp_millis_opt(after_ms).single()?;
                cron.find_next_occurrence(&after, false)
                    .ok()
                    .map(|t| t.timestamp_millis())
            }
        }
    }
}

/// The id of the event a schedule publishes for a nominal time: the same firing is
/// the same event, so the log de-duplicates a repeat.
pub fn firing_id(name: &str, nominal_ms: EpochMs) -> String {
    let t = chrono::DateTime::from_timestamp_millis(nominal_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| nominal_ms.to_string());
    format!("schedule/{name}/{t}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(cron: Option<&str>, rate: Option<&str>, at: Option<&str>) -> ScheduleSpec {
        ScheduleSpec {
            name: "s".into(),
            cron: cron.map(Into::into),
            rate: rate.map(Into::into),
            at: at.map(Into::into),
            timezone: None,
            ty: "timer_trigger".into(),
            target: None,
            data: None,
        }
    }

    fn ms(t: &str) -> EpochMs {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn cron_with_seconds_fires_at_its_nominal_times_and_counts_misses() {
        let timer = spec(Some("*/10 * * * * *"), None, None).timer().unwrap();
        let anchor = ms("2026-01-01T00:00:03Z");
        assert_eq!(
            timer.next_after(anchor, anchor),
            Some(ms("2026-01-01T00:00:10Z"))
        );
        assert_eq!(
            timer.due(anchor, anchor, ms("2026-01-01T00:00:09.999Z")),
            None
        );
        assert_eq!(
            timer.due(anchor, anchor, ms("2026-01-01T00:00:10Z")),
            Some(Due {
                nominal_ms: ms("2026-01-01T00:00:10Z"),
                count: 1
            })
        );
        // Three hours down: 1,080 nominal times missed, the latest fired once.
        let after = ms("2026-01-01T00:00:10Z");
        assert_eq!(
            timer.due(anchor, after, ms("2026-01-01T03:00:15Z")),
            Some(Due {
                nominal_ms: ms("2026-01-01T03:00:10Z"),
                count: 1080
            })
        );
        // A clock that stepped back finds nothing due.
        assert_eq!(timer.due(anchor, after, ms("2026-01-01T00:00:05Z")), None);
    }

    #[test]
    fn cron_runs_in_its_time_zone() {
        let mut s = spec(Some("0 0 9 * * *"), None, None);
        s.timezone = Some("Europe/Paris".into());
        let timer = s.timer().unwrap();
        let anchor = ms("2026-07-01T00:00:00Z");
        // 09:00 in Paris in summer is 07:00 UTC.
        assert_eq!(
            timer.next_after(anchor, anchor),
            Some(ms("2026-07-01T07:00:00Z"))
        );
    }

    #[test]
    fn rates_count_from_the_anchor() {
        for rate in ["5 minutes", "rate(5 minutes)", "5 minute"] {
            let timer = spec(None, Some(rate), None).timer().unwrap();
            let anchor = 1_000;
            assert_eq!(timer.next_after(anchor, anchor), Some(anchor + 300_000));
            assert_eq!(
                timer.due(anchor, anchor, anchor + 3 * 3_600_000 + 1),
                Some(Due {
                    nominal_ms: anchor + 3 * 3_600_000,
                    count: 36
                })
            );
        }
    }

    #[test]
    fn one_time_schedules_fire_once() {
        let timer = spec(None, None, Some("2026-12-01T09:00:00Z"))
            .timer()
            .unwrap();
        let at = ms("2026-12-01T09:00:00Z");
        assert_eq!(
            timer.due(0, 0, at),
            Some(Due {
                nominal_ms: at,
                count: 1
            })
        );
        assert_eq!(timer.due(0, at, at + 1_000_000), None);
        assert_eq!(timer.next_after(0, at), None);
        let mut local = spec(None, None, Some("2026-12-01T10:00:00"));
        local.timezone = Some("Europe/Paris".into());
        assert_eq!(local.timer().unwrap().next_after(0, 0), Some(at));
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        let both = spec(Some("* * * * *"), Some("5 minutes"), None);
        assert_eq!(both.timer().unwrap_err(), ScheduleError::When("s".into()));
        assert!(matches!(
            spec(Some("61 * * * *"), None, None).timer(),
            Err(ScheduleError::Cron { .. })
        ));
        for rate in ["five minutes", "5 fortnights", "0 minutes", "-1 hours"] {
            assert!(
                matches!(
                    spec(None, Some(rate), None).timer(),
                    Err(ScheduleError::Rate { .. })
                ),
                "{rate}"
            );
        }
        assert!(matches!(
            spec(None, None, Some("tomorrow")).timer(),
            Err(ScheduleError::At { .. })
        ));
        let mut zone = spec(Some("* * * * *"), None, None);
        zone.timezone = Some("Mars/Olympus".into());
        assert!(matches!(zone.timer(), Err(ScheduleError::Zone { .. })));
    }

    #[test]
    fn a_firing_has_one_id() {
        assert_eq!(
            firing_id("nightly", ms("2026-01-01T00:00:00Z")),
            "schedule/nightly/2026-01-01T00:00:00.000Z"
        );
    }
}
