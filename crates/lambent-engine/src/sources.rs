//! Configured broker and database sources: stored, validated, and published from.

use crate::error::{EngineError, Result, not_found};
use crate::{Engine, PublishResult};
use lambent_core::CloudEvent;
use lambent_core::source::SourceSpec;
use lambent_store::{NewEvent, PublishOutcome};

impl Engine {
    /// Creates or replaces a source; its target, if any, must exist. Running sources
    /// pick the change up (`sources_changed`).
    pub async fn put_source(&self, spec: SourceSpec) -> Result<SourceSpec> {
        spec.validate()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        if let Some(target) = &spec.target {
            self.function(target).await?;
        }
        self.inner.stores.sources.put_source(spec.clone()).await?;
        self.inner.sources_changed.notify_waiters();
        Ok(spec)
    }

    pub async fn sources(&self) -> Result<Vec<SourceSpec>> {
        Ok(self.inner.stores.sources.list_sources().await?)
    }

    pub async fn delete_source(&self, name: &str) -> Result<()> {
        if !self.inner.stores.sources.delete_source(name).await? {
            return Err(not_found("source", name));
        }
        self.inner
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.inner.sources_changed.notify_waiters();
        Ok(())
    }

    /// Resolves when a source is added, changed or removed after this call (or after
    /// `enable` on the returned future).
    pub fn sources_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.sources_changed.notified()
    }

    /// Publishes events of a source: routed by the rules and sent to `target` too.
    /// Returns once they are durable (then the source may acknowledge upstream).
    pub async fn publish_from(
        &self,
        events: Vec<CloudEvent>,
        target: Option<&str>,
    ) -> Result<Vec<PublishResult>> {
        // One timestamp for the whole batch, formatted once.
        let now = lambent_core::event::time_stamp(chrono::Utc::now());
        let mut batch = Vec::with_capacity(events.len());
        let mut fed: Vec<String> = Vec::new();
        for (index, mut event) in events.into_iter().enumerate() {
            event.stamp_time_if_missing(&now);
            let targets = self.inner.route_with(&event, target);
            for t in &targets {
                if !fed.contains(&t.function) {
                    fed.push(t.function.clone());
                }
            }
            let new = NewEvent::new(event, targets);
            self.check_event_size(index, &new)?;
            batch.push(new);
        }
        let keys: Vec<(String, String)> = batch
            .iter()
            .map(|e| (e.id.clone(), e.source.clone()))
            .collect();
        let outcomes = self.inner.stores.events.publish(batch).await?;
        if outcomes
            .iter()
            .any(|o| matches!(o, PublishOutcome::Accepted { .. }))
        {
            for f in &fed {
                self.inner.hint(f);
            }
        }
        Ok(keys
            .into_iter()
            .zip(outcomes)
            .map(|((id, source), outcome)| PublishResult {
                id,
                source,
                outcome,
            })
            .collect())
    }
}
