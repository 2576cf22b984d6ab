//! Lambent's persistence contract: the traits every store implements and the records
//! they exchange. No engine lives here: the embedded store is `lambent-sqlite`, and a
//! NATS JetStream store will be another crate implementing the same traits.
//!
//! The traits are shaped after a log with consumers, so that a NATS JetStream
//! implementation can follow: `publish` carries a message id and is de-duplicated on
//! it; `fetch` hands out deliveries under a fenced lease; a delivery is then `ack`ed,
//! `nak`ed with a delay (a retry), or `terminate`d (dead-lettered). [`EventLog`]
//! states the contract; [`conformance`] is the one suite every implementation runs.

pub mod clock;
pub mod code;
pub mod conformance;
pub mod learned;
mod lease;
pub mod sources;
pub mod tokens;
mod types;

pub use clock::{Clock, ManualClock, SystemClock};
pub use code::{CodeError, CodeStore, MAX_ENTRIES, MAX_UNPACKED_BYTES, StoredCode};
pub use learned::LearnedStore;
pub use lease::Lease;
pub use sources::{
    ChangeEvent, KvChange, KvEntry, KvNamespace, KvOp, KvStore, KvWrite, KvWritten, RouteStore,
    ScheduleRecord, ScheduleStore, SourceStore,
};
pub use tokens::{TokenRecord, TokenScope, TokenStore};
pub use types::*;

use async_trait::async_trait;
pub use lambent_core::DeadLetterReason;
use lambent_core::{EpochMs, FunctionSpec};

/// A storage failure. Each variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's database or service failed.
    #[error("database error while {doing}: {source}")]
    Backend {
        doing: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored row could not be decoded (a bug or a damaged database).
    #[error("corrupt {what} in the store: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// The group transaction a write was part of did not commit (disk full, I/O
    /// error): the write did not happen and was not acknowledged.
    #[error("the write was not committed: {0}")]
    NotCommitted(String),
    /// The store's writer thread has stopped (the node is shutting down, or the
    /// writer failed: see `health`).
    #[error("the store is closed")]
    Closed,
    /// The lease is not the delivery's current one any more (it ran out and the
    /// delivery was leased again, or it was settled): the report is refused.
    #[error("lease {token} of delivery {delivery} was lost (it expired or the delivery moved on)")]
    LeaseLost {
        delivery: DeliveryId,
        token: LeaseToken,
    },
    /// Too many writes are queued: the caller should retry later.
    #[error("the store is overloaded ({queued} writes queued); retry later")]
    Overloaded { queued: usize },
    /// Another node holds the data directory.
    #[error(
        "data directory {path} is in use by another lambent node ({holder}); stop it first, or use another --data-dir"
    )]
    Locked { path: String, holder: String },
    /// The database is damaged or missing; the node must not start on it.
    #[error("{path}: {problem}. {recovery}")]
    Damaged {
        path: String,
        problem: String,
        recovery: &'static str,
    },
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
    /// Every version of one function, oldest first (empty when there is none).
    async fn list_versions(&self, name: &str) -> Result<Vec<FunctionVersion>>;
    /// Removes a function, all its versions and its aliases; false when there was none.
    async fn delete_function(&self, name: &str) -> Result<bool>;

    /// The code digests some stored version of some function references.
    async fn code_in_use(&self) -> Result<std::collections::HashSet<String>>;

    /// Creates or replaces an alias of a function.
    async fn put_alias(&self, alias: Alias) -> Result<()>;
    async fn get_alias(&self, function: &str, name: &str) -> Result<Option<Alias>>;
    async fn list_aliases(&self, function: &str) -> Result<Vec<Alias>>;
    async fn delete_alias(&self, function: &str, name: &str) -> Result<bool>;

    /// A function's tags (they belong to the function, not to a version).
    async fn set_tags(
        &self,
        function: &str,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<()>;
    async fn tags(&self, function: &str) -> Result<std::collections::BTreeMap<String, String>>;

    async fn put_rule(&self, rule: Rule) -> Result<()>;
    async fn list_rules(&self) -> Result<Vec<Rule>>;
    async fn delete_rule(&self, name: &str) -> Result<bool>;
}

/// The durable event log and the deliveries it fans out to.
///
/// The delivery contract (what every implementation keeps; `conformance` checks it):
/// - `publish` returns only once its events and their deliveries are durable;
///   `(source, id)` is de-duplicated for as long as the event is kept.
/// - Leases and settles hold once returned, across a crash of the node; an engine
///   may put them on disk shortly after (a power loss may undo the last of them, and
///   the delivery then runs again: delivery is at least once).
/// - `fetch` leases due deliveries of one function. Each lease carries a fencing
///   token; leasing counts the attempt. `ack`, `nak`, `terminate` and `extend` take
///   the lease and fail with [`StoreError::LeaseLost`] when it is no longer the
///   current, unexpired lease of that delivery: a late report of an attempt whose lease
///   ran out never changes what a later attempt decided.
/// - A lease that runs out makes its delivery due again, its attempt charged. A
///   delivery whose last lease ran out and that has been leased `max_attempts` times
///   is dead-lettered with reason `interrupted` at the next fetch (so an event that
///   crashes the node ends in the DLQ). A nak clears the mark: a failed attempt at
///   the limit is the settler's to terminate.
/// - A stored event that cannot be decoded is dead-lettered with reason `undecodable`
///   at fetch, never handed out and never retried in a loop.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends events, de-duplicated on `(source, id)`, each with its deliveries.
    /// Returns only after the batch is durable; one outcome per input, in order.
    async fn publish(&self, batch: Vec<NewEvent>) -> Result<Vec<PublishOutcome>>;
    /// Leases up to `fetch.max` due deliveries of `function`, oldest due first.
    async fn fetch(&self, function: &str, fetch: Fetch) -> Result<Vec<Delivery>>;
    /// The functions that have deliveries due now, and the earliest future due time.
    async fn due(&self) -> Result<Due>;
    /// Settles a lease and, in the same write, records the invocation of its attempt:
    /// a settled delivery never lacks its record. A lost lease still keeps the record
    /// (the attempt did run) and answers `LeaseLost`.
    async fn settle(
        &self,
        lease: LeaseRef,
        settlement: Settlement,
        record: Option<InvocationRecord>,
    ) -> Result<()>;
    /// The delivery succeeded.
    async fn ack(&self, lease: LeaseRef) -> Result<()> {
        self.settle(lease, Settlement::Ack, None).await
    }
    /// The attempt failed: make the delivery due again after `delay_ms`.
    async fn nak(&self, lease: LeaseRef, delay_ms: i64, error: &str) -> Result<()> {
        let error = error.to_owned();
        self.settle(lease, Settlement::Nak { delay_ms, error }, None)
            .await
    }
    /// Stop trying: dead-letter the delivery with the reason and the last error.
    async fn terminate(
        &self,
        lease: LeaseRef,
        reason: DeadLetterReason,
        error: &str,
    ) -> Result<()> {
        let error = error.to_owned();
        self.settle(lease, Settlement::Terminate { reason, error }, None)
            .await
    }
    /// The attempt is still running: the lease now ends `lease_ms` from now.
    async fn extend(&self, lease: LeaseRef, lease_ms: i64) -> Result<()>;
    /// The attempt never started (a lease taken ahead, handed back at shutdown): the
    /// delivery is due again now and the attempt is not charged.
    async fn release(&self, lease: LeaseRef) -> Result<()>;
    /// Dead letters, newest first, optionally of one function.
    async fn dead_letters(&self, function: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>>;
    /// Makes dead letters due again with fresh attempts; returns how many.
    async fn redrive(&self, which: Redrive) -> Result<usize>;
    /// Looks an event up by its `(source, id)`.
    async fn get_event(&self, source: &str, id: &str) -> Result<Option<StoredEvent>>;
    /// Counts of deliveries by state (for status and metrics).
    async fn delivery_counts(&self) -> Result<Vec<(String, u64)>>;
    /// Retention: removes up to `max` delivered deliveries settled before
    /// `before_ms`, and up to `max` events received before it that no delivery needs
    /// any more (pending, leased and dead-lettered ones keep their event). Small
    /// steps, so compaction never stalls ingest; returns how many rows went.
    async fn compact(&self, before_ms: EpochMs, max: usize) -> Result<usize>;
    /// Why the log cannot take writes any more, if it cannot (for `/healthz`).
    fn health(&self) -> std::result::Result<(), String> {
        Ok(())
    }
    /// How the store's writes were grouped into commits since it opened, where it
    /// groups them (for status and metrics).
    fn write_stats(&self) -> Option<WriteStats> {
        None
    }
}

/// The record of every invocation, with its captured output. A record is readable
/// once `record` returns, but need not be on disk yet: a power loss (not a crash of
/// the node) may lose the last few.
#[async_trait]
pub trait InvocationLog: Send + Sync {
    async fn record(&self, invocation: InvocationRecord) -> Result<()>;
    /// Several records in one write where the store can.
    async fn record_many(&self, invocations: Vec<InvocationRecord>) -> Result<()> {
        for invocation in invocations {
            self.record(invocation).await?;
        }
        Ok(())
    }
    /// Invocations oldest first after `after_seq`, optionally of one function, up to
    /// `query.limit` records and about `query.max_bytes` of logs (at least one record).
    async fn list_invocations(&self, query: InvocationQuery) -> Result<Vec<InvocationRecord>>;
    /// Retention: removes up to `max` invocations started before `before_ms`.
    async fn compact(&self, before_ms: EpochMs, max: usize) -> Result<usize>;
}

/// Everything a node persists, as trait objects so a cluster store can replace it.
#[derive(Clone)]
pub struct Stores {
    pub registry: std::sync::Arc<dyn Registry>,
    pub events: std::sync::Arc<dyn EventLog>,
    pub invocations: std::sync::Arc<dyn InvocationLog>,
    pub code: std::sync::Arc<dyn CodeStore>,
    pub tokens: std::sync::Arc<dyn TokenStore>,
    pub kv: std::sync::Arc<dyn KvStore>,
    pub schedules: std::sync::Arc<dyn ScheduleStore>,
    pub routes: std::sync::Arc<dyn RouteStore>,
    pub sources: std::sync::Arc<dyn SourceStore>,
    pub learned: std::sync::Arc<dyn LearnedStore>,
}

/// The time of a stored record, for display.
pub fn ms_to_rfc3339(ms: EpochMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
