//! State of the event sources: the key-value store (whose writes are events),
//! schedules and their positions, and HTTP routes.
//!
//! Contract shared by every write here that produces an event: the state change and
//! the event (with its deliveries) are one write. Either both are durable or neither
//! is, so no change is lost and none is invented.

use crate::{NewEvent, PublishOutcome, Result};
use async_trait::async_trait;
use lambent_core::source::SourceSpec;
use lambent_core::{EpochMs, RouteSpec, ScheduleSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvEntry {
    pub namespace: String,
    pub key: String,
    pub value: Value,
    /// Grows with every write to the store (never reused, even after a delete), so a
    /// compare-and-swap on it cannot be fooled by a delete and re-create.
    pub revision: u64,
    pub updated_ms: EpochMs,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<EpochMs>,
}

/// A write to the key-value store.
#[derive(Debug, Clone, PartialEq)]
pub struct KvWrite {
    pub namespace: String,
    pub key: String,
    pub op: KvOp,
    /// Compare-and-swap: the write happens only if the key's current revision is this
    /// one (`0`: only if the key does not exist).
    pub expect_revision: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KvOp {
    Put {
        value: Value,
        /// Time to live from the write, in milliseconds.
        ttl_ms: Option<i64>,
    },
    Delete,
}

/// A change the store made: what its event describes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvChange {
    pub namespace: String,
    pub key: String,
    /// `put`, `delete`, or `expire` (a TTL ran out).
    pub operation: &'static str,
    /// The new value (`put`), or the value removed.
    pub value: Option<Value>,
    pub revision: u64,
    pub previous_revision: Option<u64>,
}

/// Builds the event of a change, routed (inside the store's write, so the event
/// carries the revision the write was given). An error refuses the write: a change
/// is never made without its event.
pub type ChangeEvent =
    Arc<dyn Fn(&KvChange) -> std::result::Result<NewEvent, String> + Send + Sync>;

/// What a key-value write did.
#[derive(Debug, Clone, PartialEq)]
pub enum KvWritten {
    Done {
        revision: u64,
        event: PublishOutcome,
    },
    /// The compare-and-swap found another revision (`None`: the key is absent).
    Conflict { current: Option<u64> },
    /// A delete of a key that does not exist: nothing changed, no event.
    Absent,
}

/// Event types of a namespace's changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvNamespace {
    pub name: String,
    #[serde(default = "default_put_type")]
    pub put_type: String,
    #[serde(default = "default_delete_type")]
    pub delete_type: String,
}

pub fn default_put_type() -> String {
    "lambent.kv.put".into()
}

pub fn default_delete_type() -> String {
    "lambent.kv.delete".into()
}

impl KvNamespace {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            put_type: default_put_type(),
            delete_type: default_delete_type(),
        }
    }
}

#[async_trait]
pub trait KvStore: Send + Sync {
    /// A live key (an expired one is absent).
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<KvEntry>>;
    /// Live keys of a namespace starting with `prefix`, in key order, after `after`.
    async fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>>;
    /// Applies a write and publishes its change event in the same write.
    async fn kv_write(&self, write: KvWrite, event: ChangeEvent) -> Result<KvWritten>;
    /// Removes up to `max` keys whose TTL ran out, each with its `expire` event.
    async fn kv_expire(&self, max: usize, event: ChangeEvent) -> Result<usize>;
    /// The earliest expiry of a live key, if any.
    async fn kv_next_expiry(&self) -> Result<Option<EpochMs>>;

    async fn put_namespace(&self, namespace: KvNamespace) -> Result<()>;
    async fn list_namespaces(&self) -> Result<Vec<KvNamespace>>;
}

/// A stored schedule and its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub spec: ScheduleSpec,
    /// Rates count from here; nothing before it is due.
    pub anchor_ms: EpochMs,
    /// The nominal time of the last firing: nothing at or before it fires again.
    pub last_nominal_ms: Option<EpochMs>,
    pub fired: u64,
}

#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Creates or replaces a schedule. A replacement whose timer changed is anchored
    /// at `now_ms`; one whose timer is the same keeps its anchor and position.
    async fn put_schedule(&self, spec: ScheduleSpec, now_ms: EpochMs) -> Result<ScheduleRecord>;
    async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>>;
    async fn delete_schedule(&self, name: &str) -> Result<bool>;
    /// Publishes a firing's event and moves the schedule's position to `nominal_ms`,
    /// in one write. Refused (`Ok(None)`) when the schedule is gone or its position
    /// is already at or past `nominal_ms`: a firing never happens twice.
    async fn fire(
        &self,
        name: &str,
        nominal_ms: EpochMs,
        event: NewEvent,
    ) -> Result<Option<PublishOutcome>>;
}

#[async_trait]
pub trait RouteStore: Send + Sync {
    /// Creates or replaces the route of its method and path.
    async fn put_route(&self, route: RouteSpec) -> Result<()>;
    async fn list_routes(&self) -> Result<Vec<RouteSpec>>;
    /// Removes the route of `method` and `path`; false when there was none.
    async fn delete_route(&self, method: &str, path: &str) -> Result<bool>;
}

/// Configured broker and database sources. Their positions live where the protocol
/// keeps them (a JetStream durable consumer, an MQTT persistent session, a PostgreSQL
/// replication slot), each advanced only after its events are durable here.
#[async_trait]
pub trait SourceStore: Send + Sync {
    /// Creates or replaces the source of its name.
    async fn put_source(&self, source: SourceSpec) -> Result<()>;
    async fn list_sources(&self) -> Result<Vec<SourceSpec>>;
    async fn delete_source(&self, name: &str) -> Result<bool>;
}
