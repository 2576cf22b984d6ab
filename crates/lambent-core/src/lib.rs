//! Lambent's domain: CloudEvents, event patterns, function specifications, retry
//! policy and outcome types. No I/O lives here, so every rule in it is unit-tested.

pub mod event;
pub mod function;
pub mod grant;
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
