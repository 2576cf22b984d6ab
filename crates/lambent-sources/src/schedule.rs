//! The scheduler: fires every schedule at its nominal times from an injectable clock.
//!
//! Misfire policy: after downtime (or a long pause), the nominal times missed are
//! fired once, as the latest of them, with a `missed` attribute counting the others.
//! A firing is never repeated: its event id is its nominal time (de-duplicated), and
//! the schedule's stored position moves in the same write, so neither a restart nor
//! a clock stepping back fires anything twice.

use crate::{Source, SourceContext, SourceError};
use async_trait::async_trait;
use lambent_core::EpochMs;
use lambent_engine::{Engine, EngineError, NodeClock};
use std::time::Duration;

/// Longest sleep between checks: a clock that jumps forward is noticed within it.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tick {
    /// `(schedule, nominal time, missed)` of every firing published.
    pub fired: Vec<(String, EpochMs, u64)>,
    /// When the next nominal time comes, if any schedule fires again.
    pub next_ms: Option<EpochMs>,
}

pub struct Scheduler {
    engine: Engine,
    clock: NodeClock,
}

impl Scheduler {
    pub fn new(engine: Engine, clock: NodeClock) -> Self {
        Self { engine, clock }
    }

    /// Fires what is due now; says when to look again.
    pub async fn tick(&self) -> Result<Tick, EngineError> {
        let now = self.clock.now_ms();
        let mut tick = Tick::default();
        for record in self.engine.schedules().await? {
            let timer = match record.spec.timer() {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(schedule = %record.spec.name, error = %e, "stored schedule no longer valid; skipped");
                    continue;
                }
            };
            let mut after = record
                .last_nominal_ms
                .unwrap_or(record.anchor_ms)
                .max(record.anchor_ms);
            if let Some(due) = timer.due(record.anchor_ms, after, now) {
                if let Some(outcome) = self.engine.fire_schedule(&record.spec, due).await? {
                    tracing::info!(schedule = %record.spec.name, nominal_ms = due.nominal_ms, missed = due.count - 1, ?outcome, "schedule fired");
                    tick.fired
                        .push((record.spec.name.clone(), due.nominal_ms, due.count - 1));
                }
                after = after.max(due.nominal_ms);
            }
            if let Some(next) = timer.next_after(record.anchor_ms, after.max(now)) {
                tick.next_ms = Some(tick.next_ms.map_or(next, |n: EpochMs| n.min(next)));
            }
        }
        Ok(tick)
    }
}

#[async_trait]
impl Source for Scheduler {
    fn name(&self) -> String {
        "schedules".into()
    }

    async fn run(self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let sleep = match self.tick().await {
                Ok(tick) => {
                    backoff = Duration::from_millis(100);
                    let now = self.clock.now_ms();
                    tick.next_ms
                        .map(|next| Duration::from_millis((next - now).max(0) as u64))
                        .unwrap_or(MAX_SLEEP)
                        .min(MAX_SLEEP)
                }
                Err(e) => {
                    // A store error: try again, backing off, without losing a firing
                    // (the position only moves with a published event).
                    tracing::warn!(error = %e, "scheduler pass failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.engine.schedules_changed() => {}
                _ = cx.shutdown.changed() => return Ok(()),
            }
            if *cx.shutdown.borrow() {
                return Ok(());
            }
        }
    }
}
