//! Records exchanged with the stores.

use lambent_core::{CloudEvent, DeadLetterReason, EpochMs, FunctionSpec, InvocationOutcome};
use serde::{Deserialize, Serialize};

pub type DeliveryId = i64;
/// Which lease of a delivery: it grows with every lease and is never reused, so a
/// report carrying an old token is recognised (a fencing token).
pub type LeaseToken = i64;

/// A lease on one delivery, as reports to the store name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRef {
    pub delivery: DeliveryId,
    pub token: LeaseToken,
}

/// How an attempt ends for its delivery.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// Delivered.
    Ack,
    /// Failed: due again after `delay_ms`.
    Nak { delay_ms: i64, error: String },
    /// Dead-lettered.
    Terminate {
        reason: DeadLetterReason,
        error: String,
    },
    /// Dead-lettered, and `forward` (the failure record for the function's on-failure
    /// destination) published in the same write: the failure is never lost between.
    Forward {
        reason: DeadLetterReason,
        error: String,
        forward: Box<NewEvent>,
    },
}

/// What to lease in one `fetch`.
#[derive(Debug, Clone, Copy)]
pub struct Fetch {
    /// Most deliveries to lease.
    pub max: usize,
    /// How long each lease lasts.
    pub lease_ms: i64,
    /// The function's attempt limit: a delivery already leased this often without
    /// a settle is dead-lettered (`interrupted`) instead of being leased again.
    pub max_attempts: u32,
}

/// One immutable version of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionVersion {
    pub spec: FunctionSpec,
    pub version: u64,
    /// Hex SHA-256 of the code package: the key of its blob and unpacked tree.
    pub code_sha256: String,
    pub code_size: u64,
    pub created_ms: EpochMs,
}

/// A listener registration: events matching `pattern` go to every target function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub pattern: serde_json::Value,
    pub targets: Vec<String>,
}

/// How a target receives the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadMode {
    /// The CloudEvent in its JSON form (rule deliveries).
    CloudEvent,
    /// The event's data exactly as sent (asynchronous direct invokes).
    Data,
}

impl PayloadMode {
    pub fn as_i64(self) -> i64 {
        match self {
            Self::CloudEvent => 0,
            Self::Data => 1,
        }
    }

    pub fn from_i64(v: i64) -> Self {
        if v == 1 { Self::Data } else { Self::CloudEvent }
    }
}

/// A delivery to create with an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub function: String,
    pub mode: PayloadMode,
}

/// How a store grouped its writes since it opened: the group commit's work, for
/// status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriteStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Writes those transactions carried (a publish, a lease, a settle, a record ...).
    pub writes: u64,
    /// Commits that waited for the disk (they held a write the node acknowledges).
    pub synced_commits: u64,
    /// Syncs of the log made for commits that did not wait, apart from any commit.
    pub background_syncs: u64,
}

/// An event to append, with the deliveries the router chose for it: its JSON text
/// and the attributes the log is keyed by. The parsed event stays with its caller
/// (dropped there, not on the store's writer thread, which only needs these).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub source: String,
    pub id: String,
    pub ty: String,
    /// The event's JSON text, encoded once (size checks and the append share it).
    pub encoded: String,
    pub targets: Vec<Target>,
}

impl NewEvent {
    pub fn new(event: CloudEvent, targets: Vec<Target>) -> Self {
        let encoded = event.to_json_string();
        let (source, id, ty) = event.into_key();
        Self {
            source,
            id,
            ty,
            encoded,
            targets,
        }
    }
}

/// The outcome of publishing one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum PublishOutcome {
    /// Appended (durably) at this position with this many deliveries.
    Accepted { seq: i64, deliveries: usize },
    /// `(source, id)` was already in the log: nothing new was delivered.
    Duplicate,
}

/// An event as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub received_ms: EpochMs,
    pub event: serde_json::Value,
}

/// A leased delivery, with what the dispatcher needs to run it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: DeliveryId,
    /// This lease's fencing token.
    pub token: LeaseToken,
    pub function: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// When the delivery was created (or redriven): the base of `max_event_age`.
    pub created_ms: EpochMs,
    pub mode: PayloadMode,
    pub event: CloudEvent,
    /// The event's JSON text as stored (what a `CloudEvent`-mode target receives).
    pub encoded: String,
}

impl Delivery {
    pub fn lease(&self) -> LeaseRef {
        LeaseRef {
            delivery: self.id,
            token: self.token,
        }
    }
}

/// Which deliveries are due.
#[derive(Debug, Clone, Default)]
pub struct Due {
    pub functions: Vec<String>,
    pub next_ms: Option<EpochMs>,
}

/// A dead-lettered delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub delivery_id: DeliveryId,
    pub function: String,
    pub event_id: String,
    pub event_source: String,
    pub event_type: String,
    pub attempts: u32,
    pub reason: DeadLetterReason,
    pub last_error: String,
    pub dead_ms: EpochMs,
}

/// Which dead letters to redrive.
#[derive(Debug, Clone)]
pub enum Redrive {
    Ids(Vec<DeliveryId>),
    /// Every dead letter, or every one of a function.
    All {
        function: Option<String>,
    },
}

/// One invocation as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// Position in the invocation log (0 before it is recorded).
    #[serde(default)]
    pub seq: i64,
    pub request_id: String,
    pub function: String,
    pub version: u64,
    pub delivery_id: Option<DeliveryId>,
    pub event_id: Option<String>,
    pub attempt: u32,
    pub started_ms: EpochMs,
    pub duration_us: u64,
    pub cold: bool,
    pub outcome: InvocationOutcome,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    /// The function's captured stdout and stderr for this invocation.
    pub logs: String,
}

/// A page of the invocation log.
#[derive(Debug, Clone, Default)]
pub struct InvocationQuery {
    pub function: Option<String>,
    pub after_seq: i64,
    pub limit: usize,
    /// The newest `limit` instead of the oldest after `after_seq` (still returned oldest first).
    pub tail: bool,
    /// Stop once the records' logs add up to this many bytes (0: no bound).
    pub max_bytes: usize,
}

/// A named pointer to a version of a function, optionally sending a share of the
/// calls to a second version (Lambda's weighted alias).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alias {
    pub function: String,
    pub name: String,
    pub version: u64,
    #[serde(default)]
    pub description: String,
    /// A second version and the share of calls it gets (0 < weight < 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional: Option<(u64, f64)>,
}
