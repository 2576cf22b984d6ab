//! Schedules: stored with their positions; each firing is an event with the id
//! `schedule/NAME/NOMINAL-TIME`, published in the same write that moves the position.
//! The timing loop is a source (`lambent-sources`); this is what it calls.

use crate::Engine;
use crate::error::{EngineError, Result, not_found};
use lambent_core::schedule::{Due, firing_id};
use lambent_core::{CloudEvent, ScheduleSpec};
use lambent_store::{NewEvent, PublishOutcome, ScheduleRecord};

/// The source of every schedule's events.
pub const SCHEDULE_SOURCE: &str = "lambent/schedules";
/// Largest `data` of a schedule, in bytes.
const MAX_DATA_BYTES: usize = 64 * 1024;

impl Engine {
    /// Creates or replaces a schedule; its target, if any, must exist.
    pub async fn put_schedule(&self, spec: ScheduleSpec) -> Result<ScheduleRecord> {
        spec.timer()?;
        if let Some(target) = &spec.target {
            self.function(target).await?;
        }
        let size = spec.data.as_ref().map_or(0, |d| d.to_string().len());
        if size > MAX_DATA_BYTES {
            return Err(EngineError::TooLarge {
                what: "schedule data",
                size,
                limit: MAX_DATA_BYTES,
            });
        }
        let now = self.inner.config.clock.now_ms();
        let record = self.inner.stores.schedules.put_schedule(spec, now).await?;
        self.inner.schedules_changed.notify_one();
        Ok(record)
    }

    pub async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        Ok(self.inner.stores.schedules.list_schedules().await?)
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        if !self.inner.stores.schedules.delete_schedule(name).await? {
            return Err(not_found("schedule", name));
        }
        self.inner.schedules_changed.notify_one();
        Ok(())
    }

    /// Waits until a schedule is added, changed or removed.
    pub async fn schedules_changed(&self) {
        self.inner.schedules_changed.notified().await;
    }

    /// Publishes the firing of `spec` at `due.nominal_ms` (one event for every nominal
    /// time `due` counts: the misfire policy). `None` when that firing already happened.
    pub async fn fire_schedule(
        &self,
        spec: &ScheduleSpec,
        due: Due,
    ) -> Result<Option<PublishOutcome>> {
        let nominal = chrono::DateTime::from_timestamp_millis(due.nominal_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut builder = CloudEvent::builder(
            firing_id(&spec.name, due.nominal_ms),
            SCHEDULE_SOURCE,
            spec.ty.clone(),
        )
        .attr("subject", spec.name.clone())
        .attr("time", nominal);
        if due.count > 1 {
            // Fired once for several missed times: say how many were skipped.
            builder = builder.attr("missed", (due.count - 1).to_string());
        }
        if let Some(data) = &spec.data {
            builder = builder.json_data(data.clone());
        }
        let event = builder
            .build()
            .map_err(|source| EngineError::Event { index: 0, source })?;
        let targets = self.inner.route_with(&event, spec.target.as_deref());
        let functions: Vec<String> = targets.iter().map(|t| t.function.clone()).collect();
        let outcome = self
            .inner
            .stores
            .schedules
            .fire(&spec.name, due.nominal_ms, NewEvent::new(event, targets))
            .await?;
        if matches!(outcome, Some(PublishOutcome::Accepted { .. })) {
            for f in &functions {
                self.inner.hint(f);
            }
        }
        Ok(outcome)
    }
}
