//! Lambent's domain: CloudEvents, event patterns, function specifications, retry
//! policy and outcome types. No I/O lives here, so every rule in it is unit-tested.

pub mod event;
pub mod function;
pub mod grant;
pub mod json_text;
pub mod kv;
pub mod outcome;
pub mod pattern;
pub mod percent;
pub mod route;
pub mod schedule;
pub mod source;

pub use event::{CloudEvent, EventError};
pub use function::{FunctionSpec, RetryPolicy, RuntimeKind, SpecError};
pub use outcome::{DeadLetterReason, InvocationOutcome};
pub use pattern::{Pattern, PatternError};
pub use route::{RouteMode, RouteSpec};
pub use schedule::ScheduleSpec;

/// Milliseconds since the Unix epoch: the time unit of every stored timestamp.
pub type EpochMs = i64;

/// The current time in epoch milliseconds.
pub fn now_ms() -> EpochMs {
    chrono::Utc::now().timestamp_millis()
}

/// A fresh id for a request or an event the node names itself: a UUID in the usual
/// text form (as Lambda's request ids are), time-ordered (version 7) so that the
/// stores' unique indexes on these ids grow at one end — a random (version 4) id
/// lands on a random index page, and every commit rewrites as many pages as it
/// holds ids. Not a secret: its 74 random bits make it unique, not unguessable.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod id_tests {
    #[test]
    fn ids_made_later_sort_later() {
        let ids: Vec<String> = (0..1000).map(|_| super::new_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "ids are time-ordered");
        assert_eq!(ids[0].len(), 36);
    }
}
