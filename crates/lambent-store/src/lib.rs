//! Lambent's persistence: the traits every store implements, and the embedded
//! implementation (one SQLite file in WAL mode plus content-addressed code on disk).
//!
//! The traits are shaped after a log with consumers, so that a NATS JetStream
//! implementation can follow: `publish` carries a message id and is de-duplicated on
//! it; `pull` hands out deliveries under a lease; a delivery is then `ack`ed, `nak`ed
//! with a delay (a retry), or `terminate`d (dead-lettered).

pub mod code;
pub mod sqlite;
mod types;

pub use code::{CodeError, CodeStore, StoredCode};
pub use sqlite::SqliteStore;
pub use types::*;

use async_trait::async_trait;
use lambent_core::{DeadLetterReason, EpochMs, FunctionSpec};

/// A storage failure. Each variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite database failed.
    #[error("database error while {doing}: {source}")]
    Sqlite {
        doing: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// A stored row could not be decoded (a bug or a damaged database).
    #[error("corrupt {what} in the store: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// The group transaction a write was part of did not commit (disk full, I/O
    /// error): the write did not happen and was not acknowledged.
    #[error("the write was not committed: {0}")]
    NotCommitted(String),
    /// The store's writer thread has stopped (the node is shutting down).
    #[error("the store is closed")]
    Closed,
    /// Opening or preparing the data directory failed.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Functions (immutable versions) and rules (listener registrations).
#[async_trait]
pub trait Registry: Send + Sync {
    /// Stores a new version of the function: its spec and the digest of its code.
    async fn put_function(&self, spec: FunctionSpec, code: StoredCode) -> Result<FunctionVersion>;
    /// The newest version (`$LATEST`) or a given one.
    async fn get_function(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<Option<FunctionVersion>>;
    /// The newest version of every function, by name.
    async fn list_functions(&self) -> Result<Vec<FunctionVersion>>;
    /// Removes a function and all its versions; false when there was none.
    async fn delete_function(&self, name: &str) -> Result<bool>;

    async fn put_rule(&self, rule: Rule) -> Result<()>;
    async fn list_rules(&self) -> Result<Vec<Rule>>;
    async fn delete_rule(&self, name: &str) -> Result<bool>;
}

/// The durable event log and the deliveries it fans out to.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends events, de-duplicated on `(source, id)`, each with its deliveries.
    /// Returns only after the batch is durable; one outcome per input, in order.
    async fn publish(&self, batch: Vec<NewEvent>) -> Result<Vec<PublishOutcome>>;
    /// Leases up to `max` due deliveries of `function` for `lease_ms`, counting an attempt each.
    async fn pull(&self, function: &str, max: usize, lease_ms: i64) -> Result<Vec<Delivery>>;
    /// The functions that have deliveries due now, and the earliest future due time.
    async fn due(&self) -> Result<Due>;
    /// The delivery succeeded.
    async fn ack(&self, delivery: DeliveryId) -> Result<()>;
    /// The attempt failed: make the delivery due again after `delay_ms`.
    async fn nak(&self, delivery: DeliveryId, delay_ms: i64, error: &str) -> Result<()>;
    /// Stop trying: dead-letter the delivery with the reason and the last error.
    async fn terminate(
        &self,
        delivery: DeliveryId,
        reason: DeadLetterReason,
        error: &str,
    ) -> Result<()>;
    /// Dead letters, newest first, optionally of one function.
    async fn dead_letters(&self, function: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>>;
    /// Makes dead letters due again with fresh attempts; returns how many.
    async fn redrive(&self, which: Redrive) -> Result<usize>;
    /// Releases every lease (at start-up, when no dispatcher can hold one): the
    /// interrupted attempts are not charged.
    async fn release_all_leases(&self) -> Result<usize>;
    /// Looks an event up by its `(source, id)`.
    async fn get_event(&self, source: &str, id: &str) -> Result<Option<StoredEvent>>;
    /// Counts of deliveries by state (for status and metrics).
    async fn delivery_counts(&self) -> Result<Vec<(String, u64)>>;
}

/// The record of every invocation, with its captured output.
#[async_trait]
pub trait InvocationLog: Send + Sync {
    async fn record(&self, invocation: InvocationRecord) -> Result<()>;
    /// Invocations oldest first after `after_seq`, optionally of one function.
    async fn list_invocations(&self, query: InvocationQuery) -> Result<Vec<InvocationRecord>>;
}

/// Everything a node persists, as trait objects so a cluster store can replace it.
#[derive(Clone)]
pub struct Stores {
    pub registry: std::sync::Arc<dyn Registry>,
    pub events: std::sync::Arc<dyn EventLog>,
    pub invocations: std::sync::Arc<dyn InvocationLog>,
    pub code: std::sync::Arc<CodeStore>,
}

/// The time of a stored record, for display.
pub fn ms_to_rfc3339(ms: EpochMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
