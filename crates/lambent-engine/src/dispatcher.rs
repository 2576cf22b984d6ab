//! The dispatcher: finds functions with due deliveries, runs one pump per such
//! function, and settles each attempt (ack, retry with backoff, or dead-letter).
//!
//! A pump takes concurrency slots of its function (waiting for the first one) and
//! hands each attempt its slot and a leased delivery; it keeps at most one round of
//! deliveries leased ahead, so a delivery waits at most one invocation for a slot and
//! its lease (two timeouts + grace) only runs out if the node died. Leases of a dead
//! node are released at the next start.

use crate::Engine;
use crate::Inner;
use crate::invoke::{AttemptContext, Invocation, InvokeOptions};
use crate::pool::Slot;
use bytes::Bytes;
use lambent_core::{DeadLetterReason, now_ms};
use lambent_store::{Delivery, PayloadMode};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Longest the dispatcher sleeps without looking (lease expiry needs a look now and then).
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Most deliveries leased in one pull.
const MAX_PULL: usize = 64;

pub(crate) async fn run(inner: Arc<Inner>) {
    loop {
        let wait = match inner.stores.events.due().await {
            Ok(due) => {
                for function in due.functions {
                    start_pump(&inner, function);
                }
                due.next_ms
                    .map(|t| Duration::from_millis(u64::try_from(t - now_ms()).unwrap_or(0)))
                    .unwrap_or(MAX_IDLE)
                    .min(MAX_IDLE)
            }
            Err(e) => {
                tracing::warn!(error = %e, "dispatcher could not read due deliveries");
                MAX_IDLE
            }
        };
        // Stop when the engine is gone (only the dispatcher holds a reference).
        if Arc::strong_count(&inner) == 1 {
            return;
        }
        tokio::select! {
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn start_pump(inner: &Arc<Inner>, function: String) {
    if !inner
        .pumps
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(function.clone())
    {
        return; // this function's pump is already running
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        pump(&inner, &function).await;
        inner
            .pumps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&function);
        // Deliveries published between the pump's last empty pull and its removal
        // found it still registered: have the dispatcher look once more.
        inner.wake.notify_one();
    });
}

/// Leases and starts deliveries of one function while it has any due.
///
/// The pump keeps up to `concurrency` deliveries leased one round ahead: when a slot
/// frees up its next delivery is already here, and the lease for the round after is
/// taken while the attempts run. A delivery so waits at most one invocation for its
/// slot, so its lease covers two timeouts plus the grace.
async fn pump(inner: &Arc<Inner>, function: &str) {
    let engine = Engine {
        inner: inner.clone(),
    };
    let mut ahead: VecDeque<Delivery> = VecDeque::new();
    loop {
        let spec = match inner.latest_function(function).await {
            Ok(f) => f.map(|f| f.spec),
            Err(e) => {
                tracing::warn!(function, error = %e, "cannot read function; pump stops");
                // What it holds is released when its leases run out.
                return;
            }
        };
        let Some(spec) = spec else {
            // No such function: lease what is due anyway so it is rejected, not stuck.
            let lease_ms = millis(inner.config.lease_grace);
            match inner.stores.events.pull(function, MAX_PULL, lease_ms).await {
                Ok(batch) => ahead.extend(batch),
                Err(e) => tracing::warn!(function, error = %e, "cannot lease deliveries"),
            }
            if ahead.is_empty() {
                return;
            }
            for delivery in ahead.drain(..) {
                let engine = engine.clone();
                tokio::spawn(async move { attempt(&engine, delivery, None).await });
            }
            continue;
        };
        let lease_ms = millis(spec.timeout() * 2 + inner.config.lease_grace);
        // Wait for one slot, then take every other free one (up to MAX_PULL).
        let Some(first) = inner.pool.wait_slot(&spec).await else {
            continue; // the limit changed under us: read the spec again
        };
        let mut slots = vec![first];
        while slots.len() < MAX_PULL {
            match inner.pool.try_slot(&spec) {
                Some(slot) => slots.push(slot),
                None => break,
            }
        }
        if ahead.len() < slots.len() {
            match inner
                .stores
                .events
                .pull(function, slots.len() - ahead.len(), lease_ms)
                .await
            {
                Ok(batch) => ahead.extend(batch),
                Err(e) => tracing::warn!(function, error = %e, "cannot lease deliveries"),
            }
        }
        if ahead.is_empty() {
            return;
        }
        for slot in slots {
            let Some(delivery) = ahead.pop_front() else {
                break;
            };
            let engine = engine.clone();
            tokio::spawn(async move { attempt(&engine, delivery, Some(slot)).await });
        }
        // Lease the next round while this one runs.
        let target = (spec.concurrency as usize).min(MAX_PULL);
        if ahead.len() < target {
            match inner
                .stores
                .events
                .pull(function, target - ahead.len(), lease_ms)
                .await
            {
                Ok(batch) => ahead.extend(batch),
                Err(e) => tracing::warn!(function, error = %e, "cannot lease deliveries"),
            }
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs one attempt of a delivery and settles it. Store failures here are logged,
/// not fatal: the lease then runs out and the delivery is attempted again.
async fn attempt(engine: &Engine, mut delivery: Delivery, slot: Option<Slot>) {
    let events = &engine.inner.stores.events;
    let settle = |r: lambent_store::Result<()>| {
        if let Err(e) = r {
            tracing::warn!(delivery = delivery.id, error = %e, "could not settle a delivery; its lease will expire");
        }
    };
    let function = match engine.inner.latest_function(&delivery.function).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            let error = format!("function `{}` does not exist", delivery.function);
            settle(
                events
                    .terminate(delivery.id, DeadLetterReason::Rejected, &error)
                    .await,
            );
            return;
        }
        Err(e) => {
            tracing::warn!(delivery = delivery.id, error = %e, "cannot read the delivery's function");
            return;
        }
    };
    let retry = function.spec.retry;
    let max_age_ms = i64::try_from(retry.max_event_age_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    if now_ms() - delivery.created_ms > max_age_ms {
        let error = format!(
            "event older than max_event_age of {} s before attempt {}",
            retry.max_event_age_s, delivery.attempt
        );
        settle(
            events
                .terminate(delivery.id, DeadLetterReason::MaxEventAge, &error)
                .await,
        );
        return;
    }
    // The slot was taken for the function as the pump knew it; without one (the
    // function appeared after the lease) wait for one now.
    let slot = match slot {
        Some(slot) => slot,
        None => match engine.inner.pool.wait_slot(&function.spec).await {
            Some(slot) => slot,
            None => {
                settle(
                    events
                        .nak(delivery.id, 0, "concurrency limit changed; retrying")
                        .await,
                );
                return;
            }
        },
    };
    let payload = match delivery.mode {
        PayloadMode::CloudEvent => Bytes::from(std::mem::take(&mut delivery.encoded)),
        PayloadMode::Data => Bytes::from(delivery.event.data_bytes()),
    };
    let options = InvokeOptions {
        request_id: None,
        traceparent: delivery.event.str_attr("traceparent").map(str::to_owned),
        client_context: None,
    };
    let context = AttemptContext {
        delivery_id: Some(delivery.id),
        event_id: Some(delivery.event.id().to_owned()),
        attempt: delivery.attempt,
    };
    let (failure, record) = match engine
        .run_invocation(&function, payload, &options, context, slot)
        .await
    {
        Ok(Invocation { record, .. }) if record.outcome.is_success() => {
            // Record and acknowledge together: both land in the same group commit.
            let (recorded, acked) = tokio::join!(
                engine.inner.stores.invocations.record(record),
                events.ack(delivery.id)
            );
            settle(recorded.and(acked));
            return;
        }
        Ok(Invocation { record, .. }) => (
            format!(
                "{}: {}",
                record
                    .error_type
                    .clone()
                    .unwrap_or_else(|| record.outcome.as_str().to_owned()),
                record.error_message.clone().unwrap_or_default()
            ),
            Some(record),
        ),
        Err(e) => (e.to_string(), None),
    };
    let record = async {
        match record {
            Some(r) => engine.inner.stores.invocations.record(r).await,
            None => Ok(()),
        }
    };
    let settled = async {
        if delivery.attempt >= retry.max_attempts {
            let error = format!(
                "{failure} (attempt {} of {})",
                delivery.attempt, retry.max_attempts
            );
            return events
                .terminate(delivery.id, DeadLetterReason::MaxAttempts, &error)
                .await;
        }
        let delay = retry.backoff(delivery.attempt, rand::random::<f64>());
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        if now_ms() + delay_ms - delivery.created_ms > max_age_ms {
            let error = format!(
                "{failure} (the next retry would pass max_event_age of {} s)",
                retry.max_event_age_s
            );
            return events
                .terminate(delivery.id, DeadLetterReason::MaxEventAge, &error)
                .await;
        }
        let naked = events.nak(delivery.id, delay_ms, &failure).await;
        // The dispatcher may be asleep past this retry's due time: let it look again.
        engine.inner.wake.notify_one();
        naked
    };
    let (recorded, settled) = tokio::join!(record, settled);
    settle(recorded.and(settled));
}
