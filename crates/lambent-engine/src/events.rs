//! Publishing events, managing rules, reading invocations and dead letters.

use crate::Engine;
use crate::error::{EngineError, Result, not_found};
use crate::router::CompiledRule;
use lambent_core::{CloudEvent, Pattern};
use lambent_store::{
    DeadLetter, InvocationQuery, InvocationRecord, NewEvent, PublishOutcome, Redrive, Rule,
};
use serde::{Deserialize, Serialize};

/// The result of publishing one event.
#[derive(Debug, Clone, Serialize)]
pub struct PublishResult {
    pub id: String,
    pub source: String,
    #[serde(flatten)]
    pub outcome: PublishOutcome,
}

impl PublishResult {
    /// Appends the JSON text serializing it writes (`{"id","source","status",...}`),
    /// written directly: a batch's answer holds a hundred of them, and serde's writer
    /// took 1.6k instructions an event for them.
    pub fn write_json(&self, out: &mut String) {
        use lambent_core::json_text::push_str;
        out.push_str("{\"id\":");
        push_str(out, &self.id);
        out.push_str(",\"source\":");
        push_str(out, &self.source);
        match self.outcome {
            PublishOutcome::Accepted { seq, deliveries } => {
                let mut number = itoa::Buffer::new();
                out.push_str(",\"status\":\"accepted\",\"seq\":");
                out.push_str(number.format(seq));
                out.push_str(",\"deliveries\":");
                out.push_str(number.format(deliveries));
                out.push('}');
            }
            PublishOutcome::Duplicate => out.push_str(",\"status\":\"duplicate\"}"),
        }
    }
}

/// Register a listener: events matching `pattern` go to each of `targets`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleRequest {
    pub name: String,
    pub pattern: serde_json::Value,
    pub targets: Vec<String>,
}

impl Engine {
    pub(crate) fn check_event_size(&self, index: usize, event: &NewEvent) -> Result<()> {
        let size = event.encoded.len();
        let limit = self.inner.config.max_event_bytes;
        if size > limit {
            return Err(EngineError::TooLarge {
                what: if index == 0 {
                    "event"
                } else {
                    "an event of the batch"
                },
                size,
                limit,
            });
        }
        Ok(())
    }

    /// Appends events durably and fans each out to the functions of every matching
    /// rule. Returns after the whole batch is committed; an invalid event refuses the
    /// whole batch and nothing is written.
    pub async fn publish(&self, events: Vec<CloudEvent>) -> Result<Vec<PublishResult>> {
        self.publish_from(events, None).await
    }

    /// Rebuilds the router from the registry. Callers that changed rules hold
    /// `rules_lock`, so rebuilds never interleave.
    pub(crate) async fn reload_rules(&self) -> Result<()> {
        let rules = self.inner.stores.registry.list_rules().await?;
        let compiled = rules
            .into_iter()
            .filter_map(|rule| match Pattern::compile(&rule.pattern) {
                Ok(pattern) => Some(CompiledRule { rule, pattern }),
                Err(e) => {
                    tracing::error!(rule = %rule.name, error = %e, "stored rule no longer compiles; skipped");
                    None
                }
            })
            .collect();
        self.inner.router.replace(compiled);
        Ok(())
    }

    /// Creates or replaces a rule. Its pattern must compile and its targets exist.
    pub async fn put_rule(&self, request: RuleRequest) -> Result<Rule> {
        lambent_core::function::validate_name(&request.name).map_err(|_| {
            EngineError::Invalid(format!(
                "invalid rule name `{}`: use 1-64 of A-Z a-z 0-9 _ -",
                request.name
            ))
        })?;
        Pattern::compile(&request.pattern)?;
        if request.targets.is_empty() {
            return Err(EngineError::Invalid(format!(
                "rule `{}` needs at least one target",
                request.name
            )));
        }
        for target in &request.targets {
            self.function(target).await?;
        }
        let rule = Rule {
            name: request.name,
            pattern: request.pattern,
            targets: request.targets,
        };
        let _serial = self.inner.rules_lock.lock().await;
        self.inner.stores.registry.put_rule(rule.clone()).await?;
        self.reload_rules().await?;
        Ok(rule)
    }

    pub async fn rules(&self) -> Result<Vec<Rule>> {
        Ok(self.inner.stores.registry.list_rules().await?)
    }

    pub async fn delete_rule(&self, name: &str) -> Result<()> {
        let _serial = self.inner.rules_lock.lock().await;
        if !self.inner.stores.registry.delete_rule(name).await? {
            return Err(not_found("rule", name));
        }
        self.reload_rules().await
    }

    pub async fn invocations(&self, query: InvocationQuery) -> Result<Vec<InvocationRecord>> {
        // Read your writes: records of answered synchronous calls are written first.
        self.flush_records().await;
        Ok(self
            .inner
            .stores
            .invocations
            .list_invocations(query)
            .await?)
    }

    pub async fn dead_letters(
        &self,
        function: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        Ok(self
            .inner
            .stores
            .events
            .dead_letters(function, limit)
            .await?)
    }

    /// Makes dead letters due again with fresh attempts.
    pub async fn redrive(&self, which: Redrive) -> Result<usize> {
        let n = self.inner.stores.events.redrive(which).await?;
        if n > 0 {
            self.inner.scan_by(0);
        }
        Ok(n)
    }

    pub async fn event(&self, source: &str, id: &str) -> Result<lambent_store::StoredEvent> {
        self.inner
            .stores
            .events
            .get_event(source, id)
            .await?
            .ok_or_else(|| not_found("event", format!("{source} {id}")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_publish_result_is_written_as_serializing_writes_it() {
        for outcome in [
            PublishOutcome::Accepted {
                seq: 42,
                deliveries: 3,
            },
            PublishOutcome::Accepted {
                seq: -1,
                deliveries: 0,
            },
            PublishOutcome::Duplicate,
        ] {
            let result = PublishResult {
                id: "i\"1\n".into(),
                source: "/s\\é".into(),
                outcome,
            };
            let mut out = String::new();
            result.write_json(&mut out);
            assert_eq!(out, serde_json::to_string(&result).unwrap());
        }
    }
}
