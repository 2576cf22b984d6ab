//! The dispatcher: finds functions with due deliveries, runs one pump per such
//! function, and settles each attempt (ack, retry with backoff, or dead-letter).
//!
//! A pump takes concurrency slots of its function (waiting for the first one) and
//! hands each attempt its slot and a leased delivery; it keeps a few rounds of
//! deliveries leased ahead (refilled when less than a round is left), and each lease
//! covers the rounds it may wait plus its own run and a grace, so it only runs out if
//! the node died. Every report to the store carries the lease's token, so a report
//! from an attempt whose lease ran out is refused (`LeaseLost`) instead of undoing a
//! later attempt's settle. A store that fails (disk full) is retried with backoff,
//! never in a loop.

use crate::Engine;
use crate::Inner;
use crate::destinations;
use crate::invoke::{AttemptContext, Invocation, InvokeOptions};
use crate::pool::Slot;
use bytes::Bytes;
use lambent_core::{DeadLetterReason, FunctionSpec, now_ms};
use lambent_store::{Fetch, Lease, PayloadMode, Settlement, StoreError};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Longest the dispatcher sleeps without looking (lease expiry needs a look now and then).
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Most deliveries leased in one pull.
const MAX_PULL: usize = 64;
/// First and longest wait after a store error (a full disk, a locked file).
const ERROR_BACKOFF_MIN: Duration = Duration::from_millis(50);
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Waits longer after each consecutive store error; resets on success.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub fn new() -> Self {
        Self(Duration::ZERO)
    }

    pub async fn failed(&mut self) {
        self.0 = (self.0 * 2).clamp(ERROR_BACKOFF_MIN, ERROR_BACKOFF_MAX);
        tokio::time::sleep(self.0).await;
    }

    pub fn succeeded(&mut self) {
        self.0 = Duration::ZERO;
    }
}

pub(crate) async fn run(inner: Arc<Inner>) {
    let mut backoff = Backoff::new();
    let max_idle_ms = millis(MAX_IDLE);
    loop {
        if inner.draining.load(Ordering::SeqCst) {
            return;
        }
        // Work the node was told about: no store scan needed.
        let hinted: Vec<String> = inner
            .hints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for function in hinted {
            start_pump(&inner, function);
        }
        // Work it was not told about (retries coming due, expired leases, redrives):
        // one scan per due time, at least every MAX_IDLE — not one per wake-up.
        let now = now_ms();
        let scan_at = inner.scan_at.load(Ordering::SeqCst);
        if now >= scan_at
            && inner
                .scan_at
                .compare_exchange(
                    scan_at,
                    now + max_idle_ms,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
        {
            match inner.stores.events.due().await {
                Ok(due) => {
                    backoff.succeeded();
                    for function in due.functions {
                        start_pump(&inner, function);
                    }
                    if let Some(t) = due.next_ms {
                        inner.scan_at.fetch_min(t, Ordering::SeqCst);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dispatcher could not read due deliveries");
                    backoff.failed().await;
                    inner.scan_at.store(0, Ordering::SeqCst);
                }
            }
        }
        // Stop when the engine is gone (only the dispatcher holds a reference).
        if Arc::strong_count(&inner) == 1 {
            return;
        }
        let wait = inner.scan_at.load(Ordering::SeqCst) - now_ms();
        let wait = Duration::from_millis(u64::try_from(wait.clamp(0, max_idle_ms)).unwrap_or(0));
        tokio::select! {
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn start_pump(inner: &Arc<Inner>, function: String) {
    {
        let mut pumps = inner.pumps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(again) = pumps.get_mut(&function) {
            // Running: it may be past its last fetch; have it start once more.
            *again = true;
            return;
        }
        pumps.insert(function.clone(), false);
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        let _registered = PumpRegistration {
            inner: inner.clone(),
            function: function.clone(),
        };
        pump(&inner, &function).await;
    });
}

/// Unregisters a pump however it ends (also by a panic), so its function is never
/// left without one.
struct PumpRegistration {
    inner: Arc<Inner>,
    function: String,
}

impl Drop for PumpRegistration {
    fn drop(&mut self) {
        let again = self
            .inner
            .pumps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.function)
            .unwrap_or(false);
        // Work hinted while the pump ran may have come after its last fetch.
        if again {
            self.inner.hint(&self.function);
        }
    }
}

/// Leases up to `max` deliveries of `function`; on a store error waits (with
/// growing backoff) and answers `None`, so the pump looks again.
async fn lease(
    inner: &Arc<Inner>,
    function: &str,
    max: usize,
    lease_ms: i64,
    max_attempts: u32,
    backoff: &mut Backoff,
) -> Option<Vec<Lease>> {
    let fetch = Fetch {
        max,
        lease_ms,
        max_attempts,
    };
    match inner.stores.events.fetch(function, fetch).await {
        Ok(batch) => {
            backoff.succeeded();
            Some(
                batch
                    .into_iter()
                    .map(|d| Lease::new(inner.stores.events.clone(), d))
                    .collect(),
            )
        }
        Err(e) => {
            tracing::warn!(function, error = %e, "cannot lease deliveries; backing off");
            backoff.failed().await;
            None
        }
    }
}

/// Leases and starts deliveries of one function while it has any due.
///
/// The pump keeps deliveries leased ahead (refilled to `ahead_target` when half of
/// that is left): when a slot frees up its next delivery is already here, and one
/// lease commit serves several rounds. The refill runs beside the pump, so a slot
/// that frees up during its commit (an fsync) still gets the next delivery at once.
/// Each lease covers the rounds its delivery may wait, its own run and a grace
/// (`lease_ms`).
async fn pump(inner: &Arc<Inner>, function: &str) {
    let engine = Engine {
        inner: inner.clone(),
    };
    let mut ahead: VecDeque<Lease> = VecDeque::new();
    let mut refill: Option<Refill> = None;
    let mut backoff = Backoff::new();
    // A store error is retried after a backoff (never in a tight loop); the pump ends
    // only when the store answers that nothing is due.
    loop {
        if inner.draining.load(Ordering::SeqCst) {
            finish_refill(&mut refill, &mut ahead).await;
            return release_all(&mut ahead).await;
        }
        let spec = match inner.latest_function(function).await {
            Ok(f) => f.map(|f| f.spec),
            Err(e) => {
                tracing::warn!(function, error = %e, "cannot read function; backing off");
                backoff.failed().await;
                finish_refill(&mut refill, &mut ahead).await;
                if ahead.is_empty() {
                    return;
                }
                continue;
            }
        };
        let Some(spec) = spec else {
            // No such function: lease what is due anyway so it is rejected, not stuck.
            finish_refill(&mut refill, &mut ahead).await;
            let lease_ms = millis(inner.config.lease_grace);
            let Some(batch) =
                lease(inner, function, MAX_PULL, lease_ms, u32::MAX, &mut backoff).await
            else {
                continue; // backed off already; look again
            };
            ahead.extend(batch);
            if ahead.is_empty() {
                return;
            }
            for lease in ahead.drain(..) {
                spawn_attempt(&engine, lease, None);
            }
            continue;
        };
        let lease_ms = lease_ms(inner, &spec);
        let max_attempts = spec.retry.max_attempts;
        // Wait for one slot (taking in a refill that lands meanwhile), then take
        // every other free one (up to MAX_PULL).
        let first = loop {
            let Some(pending) = refill.as_mut() else {
                break inner.pool.wait_slot(&spec).await;
            };
            tokio::select! {
                slot = inner.pool.wait_slot(&spec) => break slot,
                batch = &mut pending.0 => {
                    refill = None;
                    ahead.extend(refilled(batch));
                }
            }
        };
        let mut slots = vec![first];
        while slots.len() < MAX_PULL {
            match inner.pool.try_slot(&spec) {
                Some(slot) => slots.push(slot),
                None => break,
            }
        }
        // The wait for a slot may have outlasted the node's decision to stop: a slot
        // freed by a finishing attempt must not start a new one then.
        if inner.draining.load(Ordering::SeqCst) {
            finish_refill(&mut refill, &mut ahead).await;
            return release_all(&mut ahead).await;
        }
        if ahead.len() < slots.len() {
            finish_refill(&mut refill, &mut ahead).await;
        }
        if ahead.len() < slots.len() {
            let want = slots.len() - ahead.len();
            match lease(inner, function, want, lease_ms, max_attempts, &mut backoff).await {
                Some(batch) => ahead.extend(batch),
                // Backed off already; look again (the slots are handed back meanwhile).
                None if ahead.is_empty() => continue,
                None => {}
            }
        }
        if ahead.is_empty() {
            return;
        }
        for slot in slots {
            let Some(lease) = ahead.pop_front() else {
                break;
            };
            spawn_attempt(&engine, lease, Some(slot));
        }
        // Lease ahead while the rounds already leased run: when half of the target
        // is left, refill to it beside the pump, so a lease's commit is shared by
        // many deliveries and no slot waits for it.
        let target = ahead_target(&spec);
        if refill.is_none() && ahead.len() <= target / 2 {
            let want = target - ahead.len();
            refill = Some(Refill::start(inner, function, want, lease_ms, max_attempts));
        }
    }
}

/// A lease of deliveries ahead, running beside the pump.
struct Refill(tokio::task::JoinHandle<Option<Vec<Lease>>>);

impl Refill {
    fn start(
        inner: &Arc<Inner>,
        function: &str,
        want: usize,
        lease_ms: i64,
        max_attempts: u32,
    ) -> Self {
        let (inner, function) = (inner.clone(), function.to_owned());
        Self(tokio::spawn(async move {
            // A failed refill backs off once and answers nothing; the pump's own
            // lease (when it runs short) backs off further.
            let mut backoff = Backoff::new();
            lease(
                &inner,
                &function,
                want,
                lease_ms,
                max_attempts,
                &mut backoff,
            )
            .await
        }))
    }
}

/// What a finished refill leased (nothing if it failed or its task died).
fn refilled(joined: Result<Option<Vec<Lease>>, tokio::task::JoinError>) -> Vec<Lease> {
    match joined {
        Ok(batch) => batch.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, "a lease refill did not finish");
            Vec::new()
        }
    }
}

/// Waits for the refill in flight, if any, and queues what it leased.
async fn finish_refill(refill: &mut Option<Refill>, ahead: &mut VecDeque<Lease>) {
    if let Some(pending) = refill.take() {
        ahead.extend(refilled(pending.0.await));
    }
}

/// Stopping: what was leased ahead never started; hand it back uncharged.
async fn release_all(ahead: &mut VecDeque<Lease>) {
    for lease in ahead.drain(..) {
        let id = lease.delivery().id;
        settled(id, lease.release().await);
    }
}

/// Starts one attempt, counted while it runs (a draining node waits for it).
fn spawn_attempt(engine: &Engine, lease: Lease, slot: Option<Slot>) {
    struct Running(Arc<Inner>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.attempts.fetch_sub(1, Ordering::SeqCst);
            self.0.attempt_done.notify_waiters();
        }
    }
    engine.inner.attempts.fetch_add(1, Ordering::SeqCst);
    let running = Running(engine.inner.clone());
    let engine = engine.clone();
    tokio::spawn(async move {
        let _running = running;
        attempt(&engine, lease, slot).await;
    });
}

/// Fewest deliveries a pump keeps leased ahead (when its concurrency is lower).
const MIN_AHEAD: usize = 16;

/// How many deliveries a pump leases ahead of its running attempts.
fn ahead_target(spec: &FunctionSpec) -> usize {
    (spec.concurrency as usize).clamp(MIN_AHEAD, MAX_PULL)
}

/// How long a delivery of this function is leased: it may wait for the rounds ahead
/// of it (one invocation per slot each), then run one; plus the grace.
fn lease_ms(inner: &Inner, spec: &FunctionSpec) -> i64 {
    let concurrency = (spec.concurrency as usize).clamp(1, MAX_PULL);
    let rounds = ahead_target(spec).div_ceil(concurrency) + 1;
    millis(spec.timeout() * u32::try_from(rounds).unwrap_or(u32::MAX) + inner.config.lease_grace)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Logs a settle that did not land: a lost lease means a later attempt owns the
/// delivery now (expected after a long stall); anything else lets the lease run out.
fn settled(delivery: i64, result: lambent_store::Result<()>) {
    match result {
        Ok(()) => {}
        Err(e @ StoreError::LeaseLost { .. }) => {
            tracing::info!(delivery, error = %e, "report of a superseded attempt ignored");
        }
        Err(e) => {
            tracing::warn!(delivery, error = %e, "could not settle a delivery; its lease will expire");
        }
    }
}

/// Runs one attempt of a delivery and settles it. Store failures here are logged,
/// not fatal: the lease then runs out and the delivery is attempted again.
async fn attempt(engine: &Engine, mut lease: Lease, slot: Option<Slot>) {
    let id = lease.delivery().id;
    // An asynchronous invoke of `NAME:N` runs version N; everything else (rule
    // deliveries included, whatever their event carries) the newest.
    let version = (lease.delivery().mode == PayloadMode::Data)
        .then(|| lease.delivery().event.str_attr(crate::invoke::VERSION_ATTR))
        .flatten()
        .and_then(|v| v.parse::<u64>().ok());
    let name = &lease.delivery().function;
    let found = match version {
        Some(v) => engine
            .inner
            .stores
            .registry
            .get_function(name, Some(v))
            .await
            .map_err(crate::EngineError::from),
        None => engine.inner.latest_function(name).await,
    };
    let function = match found {
        Ok(Some(f)) => f,
        Ok(None) => {
            let error = format!("function `{}` does not exist", lease.delivery().function);
            let rejected = Settlement::Terminate {
                reason: DeadLetterReason::Rejected,
                error,
            };
            settled(id, lease.settle(rejected, None).await);
            return;
        }
        Err(e) => {
            tracing::warn!(delivery = id, error = %e, "cannot read the delivery's function");
            return; // the dropped lease is handed back
        }
    };
    let retry = function.spec.retry;
    let (created_ms, attempt_no) = (lease.delivery().created_ms, lease.delivery().attempt);
    let max_age_ms = i64::try_from(retry.max_event_age_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    if now_ms() - created_ms > max_age_ms {
        let error = format!(
            "event older than max_event_age of {} s before attempt {attempt_no}",
            retry.max_event_age_s
        );
        let too_old = Settlement::Terminate {
            reason: DeadLetterReason::MaxEventAge,
            error,
        };
        settled(id, lease.settle(too_old, None).await);
        return;
    }
    // The slot was taken for the function as the pump knew it; without one (the
    // function appeared after the lease) wait for one now.
    let slot = match slot {
        Some(slot) => slot,
        None => engine.inner.pool.wait_slot(&function.spec).await,
    };
    let delivery = lease.delivery_mut();
    let payload = match delivery.mode {
        PayloadMode::CloudEvent => Bytes::from(std::mem::take(&mut delivery.encoded)),
        PayloadMode::Data => Bytes::from(delivery.event.data_bytes()),
    };
    let options = InvokeOptions {
        traceparent: delivery.event.str_attr("traceparent").map(str::to_owned),
        ..InvokeOptions::default()
    };
    let request = payload.clone();
    let context = AttemptContext {
        delivery_id: Some(id),
        event_id: Some(delivery.event.id().to_owned()),
        attempt: attempt_no,
    };
    let mut response = None;
    let (failure, record) = match engine
        .run_invocation(&function, payload, &options, context, slot)
        .await
    {
        Ok(Invocation { record, .. }) if record.outcome.is_success() => {
            // The settle and the attempt's record are one write.
            settled(id, lease.settle(Settlement::Ack, Some(record)).await);
            return;
        }
        Ok(Invocation { record, payload }) => {
            response = Some((record.request_id.clone(), payload));
            (
                format!(
                    "{}: {}",
                    record
                        .error_type
                        .clone()
                        .unwrap_or_else(|| record.outcome.as_str().to_owned()),
                    record.error_message.clone().unwrap_or_default()
                ),
                Some(record),
            )
        }
        Err(e) => (e.to_string(), None),
    };
    // Giving up: dead-letter, and hand the failure record to the function's
    // on-failure destination (if it names one) in the same write.
    let give_up = |reason, error, condition| match destinations::failure_record(
        &function,
        id,
        attempt_no,
        &request,
        response.as_ref(),
        condition,
    ) {
        Some(forward) => Settlement::Forward {
            reason,
            error,
            forward: Box::new(forward),
        },
        None => Settlement::Terminate { reason, error },
    };
    let settlement = if attempt_no >= retry.max_attempts {
        give_up(
            DeadLetterReason::MaxAttempts,
            format!("{failure} (attempt {attempt_no} of {})", retry.max_attempts),
            destinations::Condition::RetriesExhausted,
        )
    } else {
        let delay = retry.backoff(attempt_no, rand::random::<f64>());
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        if now_ms() + delay_ms - created_ms > max_age_ms {
            give_up(
                DeadLetterReason::MaxEventAge,
                format!(
                    "{failure} (the next retry would pass max_event_age of {} s)",
                    retry.max_event_age_s
                ),
                destinations::Condition::EventAgeExceeded,
            )
        } else {
            Settlement::Nak {
                delay_ms,
                error: failure,
            }
        }
    };
    let retry_in = match &settlement {
        Settlement::Nak { delay_ms, .. } => Some(*delay_ms),
        _ => None,
    };
    let destination = match &settlement {
        Settlement::Forward { .. } => function.spec.on_failure.clone(),
        _ => None,
    };
    let done = lease.settle(settlement, record).await;
    if done.is_ok()
        && let Some(destination) = destination
    {
        engine.inner.hint(&destination);
    }
    settled(id, done);
    if let Some(delay_ms) = retry_in {
        // The dispatcher may be asleep past this retry's due time.
        engine.inner.scan_by(now_ms() + delay_ms);
    }
}
