//! Retention: settled deliveries, their events, and invocations with their logs are
//! removed once older than the retention period; code no version references is
//! removed too, and so is what the runtimes compiled from code not used within the
//! period. Compaction runs in small writes that share group commits with
//! ingest, so it never stalls it. Dead letters, pending work and the events they
//! need are never removed, and no event younger than the de-duplication window is.

use crate::{Engine, Inner, Result};
use lambent_core::now_ms;
use std::sync::Weak;
use std::time::Duration;

/// Rows removed per write.
const STEP: usize = 500;
/// Code older than this and referenced by no version is removed (younger code may
/// belong to a deploy in progress).
pub const CODE_MIN_AGE: Duration = Duration::from_secs(3600);

/// What one compaction removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    pub events_and_deliveries: usize,
    pub invocations: usize,
    pub code_packages: usize,
    /// Compiled code (and preparations) of the runtimes not used within the
    /// retention period.
    pub compiled_code: usize,
}

pub(crate) async fn run(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let interval = strong.config.compaction_interval;
        let engine = Engine { inner: strong };
        if let Err(e) = engine.compact(now_ms(), CODE_MIN_AGE).await {
            tracing::warn!(error = %e, "compaction failed; trying again later");
        }
        drop(engine);
        tokio::time::sleep(interval).await;
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs `step` (which removes at most `STEP` rows) until a step removes fewer,
/// yielding between steps; returns how many rows went.
async fn in_steps<F, Fut>(mut step: F) -> Result<usize>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = lambent_store::Result<usize>>,
{
    let mut total = 0;
    loop {
        let n = step().await?;
        total += n;
        if n < STEP {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

impl Engine {
    /// Removes what the retention period lets go, as of `now_ms`.
    pub async fn compact(&self, now_ms: i64, code_min_age: Duration) -> Result<Compacted> {
        let mut done = Compacted::default();
        let Some(retention) = self.inner.config.retention else {
            return Ok(done);
        };
        let stores = &self.inner.stores;
        let events_before = now_ms - ms(retention.max(self.inner.config.dedup_window));
        done.events_and_deliveries =
            in_steps(|| stores.events.compact(events_before, STEP)).await?;
        let invocations_before = now_ms - ms(retention);
        done.invocations =
            in_steps(|| stores.invocations.compact(invocations_before, STEP)).await?;
        let in_use = stores.registry.code_in_use().await?;
        let code = stores.code.clone();
        done.code_packages = tokio::task::spawn_blocking(move || code.gc(&in_use, code_min_age))
            .await
            .map_err(|e| crate::EngineError::Internal(e.to_string()))??;
        done.compiled_code = self
            .inner
            .pool
            .runtime()
            .collect(retention.max(code_min_age))
            .await;
        Ok(done)
    }
}
