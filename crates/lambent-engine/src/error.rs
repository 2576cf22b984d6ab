//! What the engine tells its callers when a request cannot be served.

use lambent_core::{EventError, PatternError, SpecError};
use lambent_runtime::RuntimeError;
use lambent_store::{CodeError, StoreError};

/// A refused or failed request, with the context a user needs. The API maps each
/// variant to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such function, rule, event or dead letter.
    #[error("{what} `{name}` not found")]
    NotFound { what: &'static str, name: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// An event in a publish request is invalid; `index` is its position in the batch.
    #[error("event {index}: {source}")]
    Event {
        index: usize,
        #[source]
        source: EventError,
    },
    #[error(transparent)]
    Code(#[from] CodeError),
    /// A request that is well-formed but cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// A compare-and-swap found another revision.
    #[error("{0}")]
    Conflict(String),
    /// A payload over a configured limit.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// The function is running as many invocations as its concurrency limit allows.
    #[error("function `{function}` is at its concurrency limit of {limit}")]
    Throttled { function: String, limit: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The node is shutting down or a background task failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<lambent_core::schedule::ScheduleError> for EngineError {
    fn from(e: lambent_core::schedule::ScheduleError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<lambent_core::route::RouteError> for EngineError {
    fn from(e: lambent_core::route::RouteError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<lambent_core::kv::KvError> for EngineError {
    fn from(e: lambent_core::kv::KvError) -> Self {
        Self::Invalid(e.to_string())
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

pub(crate) fn not_found(what: &'static str, name: impl Into<String>) -> EngineError {
    EngineError::NotFound {
        what,
        name: name.into(),
    }
}
