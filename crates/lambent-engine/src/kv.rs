//! The built-in key-value store: every write is a data-change event, published in
//! the same store write as the change itself.

use crate::error::{EngineError, Result};
use crate::{Engine, Inner};
use lambent_core::CloudEvent;
use lambent_core::kv::{MAX_VALUE_BYTES, validate_key, validate_namespace};
use lambent_store::{
    ChangeEvent, KvChange, KvEntry, KvNamespace, KvOp, KvWrite, KvWritten, NewEvent, PublishOutcome,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often expired keys are swept at most (a key is invisible from its expiry on;
/// the sweep publishes its `expire` event).
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// A write to a key, as callers ask for it.
#[derive(Debug, Clone)]
pub struct KvRequest {
    pub namespace: String,
    pub key: String,
    /// `None` deletes the key.
    pub value: Option<serde_json::Value>,
    pub ttl: Option<Duration>,
    /// Compare-and-swap on this revision (`0`: the key must not exist).
    pub expect_revision: Option<u64>,
}

/// What a write did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KvResult {
    pub namespace: String,
    pub key: String,
    pub revision: u64,
    /// The change event: its source and id, and whether it was new.
    pub event_source: String,
    pub event_id: String,
    pub event: PublishOutcome,
}

/// The source and id of the event of a namespace's change at `revision`.
pub fn change_event_key(namespace: &str, revision: u64) -> (String, String) {
    (format!("lambent/kv/{namespace}"), revision.to_string())
}

impl Inner {
    /// Builds change events routed like any event, noting the functions they feed.
    fn change_events(self: &Arc<Self>, fed: Arc<Mutex<Vec<String>>>) -> ChangeEvent {
        let inner = self.clone();
        Arc::new(move |change: &KvChange| {
            let types = inner.kv_types(&change.namespace);
            let ty = if change.operation == "put" {
                types.put_type
            } else {
                types.delete_type
            };
            let (source, id) = change_event_key(&change.namespace, change.revision);
            let data = serde_json::to_value(change).unwrap_or_default();
            let event = CloudEvent::builder(id, source, ty)
                .attr("subject", change.key.clone())
                .json_data(data)
                .build();
            let mut event = event.map_err(|e| e.to_string())?;
            event.stamp_time_if_missing(&lambent_core::event::time_stamp(chrono::Utc::now()));
            let targets = inner.router.route(&event);
            let mut fed = fed.lock().unwrap_or_else(|p| p.into_inner());
            for t in &targets {
                if !fed.contains(&t.function) {
                    fed.push(t.function.clone());
                }
            }
            Ok(NewEvent::new(event, targets))
        })
    }

    fn kv_types(&self, namespace: &str) -> KvNamespace {
        self.kv_namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(namespace)
            .cloned()
            .unwrap_or_else(|| KvNamespace::named(namespace))
    }

    /// Hints the functions a committed change event feeds.
    fn hint_fed(&self, fed: &Mutex<Vec<String>>) {
        for function in fed.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            self.hint(function);
        }
    }

    /// Removes keys whose TTL ran out, each with its event; returns how many.
    pub(crate) async fn expire_keys(self: &Arc<Self>) -> Result<usize> {
        let fed = Arc::new(Mutex::new(Vec::new()));
        let n = self
            .stores
            .kv
            .kv_expire(500, self.change_events(fed.clone()))
            .await?;
        self.hint_fed(&fed);
        Ok(n)
    }
}

/// Sweeps expired keys until the engine is dropped.
pub(crate) async fn run_expiry(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(EXPIRY_SWEEP).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        loop {
            match inner.expire_keys().await {
                Ok(500) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "sweeping expired keys");
                    break;
                }
            }
        }
    }
}

impl Engine {
    pub async fn kv_get(&self, namespace: &str, key: &str) -> Result<KvEntry> {
        validate_namespace(namespace)?;
        validate_key(namespace, key)?;
        self.inner
            .stores
            .kv
            .kv_get(namespace, key)
            .await?
            .ok_or_else(|| crate::error::not_found("key", format!("{namespace}/{key}")))
    }

    pub async fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>> {
        validate_namespace(namespace)?;
        Ok(self
            .inner
            .stores
            .kv
            .kv_list(namespace, prefix, after, limit.clamp(1, 1000))
            .await?)
    }

    /// Puts or deletes a key; its change event is published in the same write.
    pub async fn kv_write(&self, request: KvRequest) -> Result<KvResult> {
        let KvRequest {
            namespace,
            key,
            value,
            ttl,
            expect_revision,
        } = request;
        validate_namespace(&namespace)?;
        validate_key(&namespace, &key)?;
        let op = match value {
            Some(value) => {
                let size = value.to_string().len();
                if size > MAX_VALUE_BYTES {
                    return Err(lambent_core::kv::KvError::Value {
                        namespace,
                        key,
                        size,
                    }
                    .into());
                }
                let ttl_ms = ttl.map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
                KvOp::Put { value, ttl_ms }
            }
            None => KvOp::Delete,
        };
        let fed = Arc::new(Mutex::new(Vec::new()));
        let written = self
            .inner
            .stores
            .kv
            .kv_write(
                KvWrite {
                    namespace: namespace.clone(),
                    key: key.clone(),
                    op,
                    expect_revision,
                },
                self.inner.change_events(fed.clone()),
            )
            .await?;
        match written {
            KvWritten::Done { revision, event } => {
                self.inner.hint_fed(&fed);
                let (event_source, event_id) = change_event_key(&namespace, revision);
                Ok(KvResult {
                    namespace,
                    key,
                    revision,
                    event_source,
                    event_id,
                    event,
                })
            }
            KvWritten::Conflict { current } => Err(EngineError::Conflict(format!(
                "{namespace}/{key} is at revision {}, not {}",
                current.map_or("none (absent)".into(), |r| r.to_string()),
                expect_revision.unwrap_or(0)
            ))),
            KvWritten::Absent => Err(crate::error::not_found("key", format!("{namespace}/{key}"))),
        }
    }

    /// Sets the event types of a namespace's changes.
    pub async fn put_kv_namespace(&self, namespace: KvNamespace) -> Result<()> {
        validate_namespace(&namespace.name)?;
        for ty in [&namespace.put_type, &namespace.delete_type] {
            if ty.trim().is_empty() {
                return Err(EngineError::Invalid(format!(
                    "namespace `{}`: event types cannot be empty",
                    namespace.name
                )));
            }
        }
        self.inner
            .stores
            .kv
            .put_namespace(namespace.clone())
            .await?;
        self.inner
            .kv_namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(namespace.name.clone(), namespace);
        Ok(())
    }

    pub async fn kv_namespaces(&self) -> Result<Vec<KvNamespace>> {
        Ok(self.inner.stores.kv.list_namespaces().await?)
    }

    pub(crate) async fn load_kv_namespaces(&self) -> Result<()> {
        let all: HashMap<String, KvNamespace> = self
            .inner
            .stores
            .kv
            .list_namespaces()
            .await?
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        *self
            .inner
            .kv_namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = all;
        Ok(())
    }
}
