//! The closed sets of outcomes: of one invocation, and of a dead-lettered delivery.

use serde::{Deserialize, Serialize};

/// How one invocation of a function ended. Decided from typed runtime results, never
/// by parsing strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvocationOutcome {
    /// The handler returned a result.
    Success,
    /// The handler raised or returned an error (retriable).
    FunctionError,
    /// The runtime could not initialise the function (bad handler, import error).
    InitError,
    /// The deadline passed; the instance was killed.
    Timeout,
    /// The instance died (exit, signal, out of memory); it was discarded.
    Crash,
    /// Lambent itself failed to run the invocation (not the function's fault).
    Infrastructure,
}

impl InvocationOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::FunctionError => "function_error",
            Self::InitError => "init_error",
            Self::Timeout => "timeout",
            Self::Crash => "crash",
            Self::Infrastructure => "infrastructure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Success,
            Self::FunctionError,
            Self::InitError,
            Self::Timeout,
            Self::Crash,
            Self::Infrastructure,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    pub fn is_success(self) -> bool {
        self == Self::Success
    }
}

/// Which limit sent a delivery to the dead-letter list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    MaxAttempts,
    MaxEventAge,
    /// A permanent refusal (no such function, payload over a limit).
    Rejected,
    /// Leased `max_attempts` times without a settle: each attempt was interrupted
    /// (the node crashed or was killed during it), so the event may be what brings it down.
    Interrupted,
    /// The stored event could not be decoded (a damaged row): it cannot be run.
    Undecodable,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxAttempts => "max_attempts",
            Self::MaxEventAge => "max_event_age",
            Self::Rejected => "rejected",
            Self::Interrupted => "interrupted",
            Self::Undecodable => "undecodable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::MaxAttempts,
            Self::MaxEventAge,
            Self::Rejected,
            Self::Interrupted,
            Self::Undecodable,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}
