//! Running one invocation: check an instance out of the pool, invoke it, check it
//! back in, record the invocation. Shared by synchronous calls and the dispatcher.

use crate::Engine;
use crate::error::{EngineError, Result};
use crate::pool::Slot;
use crate::run_to_end::RunToEnd;
use bytes::Bytes;
use lambent_core::{InvocationOutcome, now_ms};
use lambent_runtime::{ErrorReport, InvokeOutcome, InvokeRequest};
use lambent_store::{
    DeliveryId, FunctionVersion, InvocationRecord, NewEvent, PayloadMode, PublishOutcome, Target,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Options of one invocation.
#[derive(Debug, Clone, Default)]
pub struct InvokeOptions {
    /// Use this request id (e.g. an SDK's idempotency id) instead of a fresh one.
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
    pub client_context: Option<String>,
    /// Run this version instead of the newest (`NAME:3` in the Lambda API).
    pub version: Option<u64>,
    /// A client's id for this call (boto3's `amz-sdk-invocation-id`, resent on its
    /// retries): a call repeated with it gets the first call's result instead of a
    /// second run, for `IDEMPOTENCY_WINDOW`.
    pub idempotency_key: Option<String>,
}

/// How long a finished call's result answers repeats of its idempotency key.
pub const IDEMPOTENCY_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Most calls remembered by key (the oldest are forgotten first).
pub const IDEMPOTENCY_KEYS: usize = 4096;
/// A result bigger than this (payload and logs) is not kept for repeats: memory stays
/// bounded (about 1 GiB at worst, a few MiB for usual answers); its retry runs again.
pub const IDEMPOTENCY_MAX_RESULT: usize = 256 * 1024;

type CallKey = (String, String);

/// Calls by idempotency key: a repeat waits for the first call and shares its result.
#[derive(Default)]
pub(crate) struct Idempotent {
    /// By (function, key): when the first call came, and its result once it has one.
    calls: HashMap<CallKey, (Instant, SharedResult)>,
    /// Keys oldest first, for forgetting them in order.
    order: std::collections::VecDeque<(CallKey, Instant)>,
}

impl Idempotent {
    /// The shared result of `key`'s call, made now if there is none; forgets calls
    /// past the window or the count.
    fn call(&mut self, key: CallKey) -> SharedResult {
        while let Some((old, at)) = self.order.front() {
            if self.order.len() < IDEMPOTENCY_KEYS && at.elapsed() < IDEMPOTENCY_WINDOW {
                break;
            }
            if self.calls.get(old).is_some_and(|(since, _)| since == at) {
                self.calls.remove(old);
            }
            self.order.pop_front();
        }
        if let Some((_, call)) = self.calls.get(&key) {
            return call.clone();
        }
        let now = Instant::now();
        let call = SharedResult::default();
        self.calls.insert(key.clone(), (now, call.clone()));
        self.order.push_back((key, now));
        call
    }

    fn forget(&mut self, key: &CallKey) {
        self.calls.remove(key);
    }
}

type SharedResult = Arc<tokio::sync::OnceCell<Invocation>>;

/// The context of a delivery attempt.
#[derive(Debug, Clone, Default)]
pub(crate) struct AttemptContext {
    pub delivery_id: Option<DeliveryId>,
    pub event_id: Option<String>,
    pub attempt: u32,
}

/// A finished invocation: its record (what the invocation log keeps) and its answer.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub record: InvocationRecord,
    /// The handler's result, or the Lambda error document on failure.
    pub payload: Bytes,
}

/// The CloudEvents extension of an asynchronous invoke that names a version.
pub(crate) const VERSION_ATTR: &str = "lambentversion";

impl Engine {
    /// One version of a function.
    pub(crate) async fn function_version(
        &self,
        name: &str,
        version: u64,
    ) -> Result<FunctionVersion> {
        self.inner
            .stores
            .registry
            .get_function(name, Some(version))
            .await?
            .ok_or_else(|| crate::error::not_found("function version", format!("{name}:{version}")))
    }

    /// Invokes a function and waits for its answer. Past the function's concurrency
    /// limit the call is refused (throttled), as Lambda does.
    ///
    /// A caller that goes away (an HTTP client disconnecting drops its handler's
    /// future) does not cut the call short: it runs to its end, as Lambda runs it, is
    /// recorded, its instance goes back to the pool, and a call keyed by an
    /// invocation id fills that id's result (an SDK retrying after a timeout gets it).
    pub async fn invoke(
        &self,
        name: &str,
        payload: Bytes,
        options: InvokeOptions,
    ) -> Result<Invocation> {
        let engine = self.clone();
        let name = name.to_owned();
        RunToEnd::new(async move { engine.invoke_keyed(&name, payload, options).await }).await
    }

    /// A call with an idempotency key shares the first call's result.
    async fn invoke_keyed(
        &self,
        name: &str,
        payload: Bytes,
        options: InvokeOptions,
    ) -> Result<Invocation> {
        let Some(key) = options.idempotency_key.clone() else {
            return self.invoke_now(name, payload, options).await;
        };
        let key = (name.to_owned(), key);
        let call = self
            .inner
            .idempotent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .call(key.clone());
        // Only a finished invocation is kept: a refused call (throttled, say) runs
        // again when retried.
        let result = call
            .get_or_try_init(|| self.invoke_now(name, payload, options))
            .await
            .cloned()?;
        if result.payload.len() + result.record.logs.len() > IDEMPOTENCY_MAX_RESULT {
            self.inner
                .idempotent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forget(&key);
        }
        Ok(result)
    }

    async fn invoke_now(
        &self,
        name: &str,
        payload: Bytes,
        options: InvokeOptions,
    ) -> Result<Invocation> {
        if payload.len() > self.inner.config.max_sync_payload_bytes {
            return Err(EngineError::TooLarge {
                what: "invocation payload",
                size: payload.len(),
                limit: self.inner.config.max_sync_payload_bytes,
            });
        }
        let function = match options.version {
            None => self.function(name).await?,
            Some(v) => self.function_version(name, v).await?,
        };
        let Some(slot) = self.inner.pool.try_slot(&function.spec) else {
            return Err(EngineError::Throttled {
                function: name.to_owned(),
                limit: function.spec.concurrency,
            });
        };
        let invocation = self
            .run_invocation(
                &function,
                payload,
                &options,
                AttemptContext {
                    attempt: 1,
                    ..AttemptContext::default()
                },
                slot,
            )
            .await?;
        // Written behind the answer (records.rs): the caller does not wait for an fsync.
        self.inner.records.record(invocation.record.clone()).await;
        Ok(invocation)
    }

    /// Queues an invocation: durable, retried, dead-lettered like any event delivery;
    /// the handler receives `payload` exactly as given. Returns the event id.
    pub async fn invoke_async(
        &self,
        name: &str,
        payload: Bytes,
        options: InvokeOptions,
    ) -> Result<String> {
        self.function(name).await?;
        let id = options.request_id.unwrap_or_else(lambent_core::new_id);
        let mut builder = lambent_core::CloudEvent::builder(
            id.clone(),
            format!("lambent:invoke/{name}"),
            "lambent.invoke",
        )
        .bytes_data(Some("application/octet-stream"), &payload);
        if let Some(tp) = options.traceparent {
            builder = builder.attr("traceparent", tp);
        }
        if let Some(v) = options.version {
            self.function_version(name, v).await?;
            // The delivery names the function; the event carries the version to run.
            builder = builder.attr(VERSION_ATTR, v.to_string());
        }
        let event = builder
            .build()
            .map_err(|source| EngineError::Event { index: 0, source })?;
        let new = NewEvent::new(
            event,
            vec![Target {
                function: name.to_owned(),
                mode: PayloadMode::Data,
            }],
        );
        self.check_event_size(0, &new)?;
        let outcome = self.inner.stores.events.publish(vec![new]).await?;
        if matches!(outcome.first(), Some(PublishOutcome::Accepted { .. })) {
            self.inner.hint(name);
        }
        Ok(id)
    }

    /// Runs one invocation; the caller stores its record (alongside settling its
    /// delivery, when it has one). A failed start is recorded here.
    pub(crate) async fn run_invocation(
        &self,
        function: &FunctionVersion,
        payload: Bytes,
        options: &InvokeOptions,
        attempt: AttemptContext,
        slot: Slot,
    ) -> Result<Invocation> {
        let spec = &function.spec;
        let request_id = options
            .request_id
            .clone()
            .unwrap_or_else(lambent_core::new_id);
        let started_ms = now_ms();
        let clock = Instant::now();
        // `duration`: the runtime's own measure where there is one (the invocation
        // proper); a failed start counts from here.
        let record = |outcome,
                      cold,
                      error: Option<(String, String)>,
                      logs: String,
                      duration: Option<std::time::Duration>| {
            let (error_type, error_message) = error.unzip();
            InvocationRecord {
                seq: 0,
                request_id: request_id.clone(),
                function: spec.name.clone(),
                version: function.version,
                delivery_id: attempt.delivery_id,
                event_id: attempt.event_id.clone(),
                attempt: attempt.attempt,
                started_ms,
                duration_us: u64::try_from(duration.unwrap_or_else(|| clock.elapsed()).as_micros())
                    .unwrap_or(u64::MAX),
                cold,
                outcome,
                error_type,
                error_message,
                logs,
            }
        };
        let code_dir = self.inner.stores.code.tree(&function.code_sha256);
        let mut checkout = match self
            .inner
            .pool
            .checkout(slot, spec, function.version, code_dir)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                // Not the function's fault, but still an invocation a user will look for.
                let failed = record(
                    InvocationOutcome::Infrastructure,
                    true,
                    Some(("Runtime.StartError".into(), e.to_string())),
                    String::new(),
                    None,
                );
                if let Err(store) = self.inner.stores.invocations.record(failed).await {
                    tracing::warn!(error = %store, "could not record a failed start");
                }
                return Err(e.into());
            }
        };
        let cold = checkout.cold;
        let result = checkout
            .instance
            .invoke(InvokeRequest {
                request_id: request_id.clone(),
                payload,
                deadline_ms: now_ms() + i64::from(spec.timeout_s) * 1000,
                trace_id: options.traceparent.clone(),
                event_id: attempt.event_id.clone(),
                attempt: attempt.attempt,
                client_context: options.client_context.clone(),
            })
            .await;
        self.inner.pool.checkin(spec, checkout).await;
        let kind = result.outcome.kind();
        let error = result.outcome.error();
        let payload = match result.outcome {
            InvokeOutcome::Success(body) => body,
            InvokeOutcome::FunctionError(report) | InvokeOutcome::InitError(report) => report.body,
            InvokeOutcome::Timeout { .. }
            | InvokeOutcome::Crash { .. }
            | InvokeOutcome::Trap { .. } => {
                // The shape LocalStack uses for a timeout (LAMBDA-COMPAT.md).
                let (error_type, message) = error.clone().unwrap_or_default();
                ErrorReport::new(
                    error_type,
                    format!("RequestId: {request_id} Error: {message}"),
                )
                .body
            }
        };
        Ok(Invocation {
            record: record(kind, cold, error, result.logs, Some(result.duration)),
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> CallKey {
        ("f".into(), format!("inv-{i}"))
    }

    #[test]
    fn repeats_share_a_call_and_the_oldest_keys_are_forgotten_past_the_cap() {
        let mut calls = Idempotent::default();
        let first = calls.call(key(0));
        assert!(
            Arc::ptr_eq(&first, &calls.call(key(0))),
            "a repeat shares the call"
        );
        for i in 1..=IDEMPOTENCY_KEYS {
            calls.call(key(i));
        }
        assert!(calls.calls.len() <= IDEMPOTENCY_KEYS);
        assert!(calls.order.len() <= IDEMPOTENCY_KEYS);
        assert!(
            !Arc::ptr_eq(&first, &calls.call(key(0))),
            "the oldest key was forgotten"
        );
        let newest = calls.call(key(IDEMPOTENCY_KEYS));
        assert!(Arc::ptr_eq(&newest, &calls.call(key(IDEMPOTENCY_KEYS))));
        calls.forget(&key(IDEMPOTENCY_KEYS));
        assert!(!Arc::ptr_eq(&newest, &calls.call(key(IDEMPOTENCY_KEYS))));
    }
}
