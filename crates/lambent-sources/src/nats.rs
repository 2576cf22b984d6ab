//! NATS: a core subscription (at-most-once, as core NATS is) and a JetStream durable
//! pull consumer (at-least-once: a message is acknowledged only after its event is
//! durable; its stream sequence is the event id, so a redelivery is de-duplicated).

use crate::message::{Backoff, Message, to_event};
use crate::{Sink, Source, SourceContext, SourceError};
use async_trait::async_trait;
use futures::StreamExt;
use lambent_core::source::{SourceKind, SourceSpec};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct Nats {
    pub spec: SourceSpec,
}

/// Connects with status reported to the sink; the client reconnects by itself and
/// says so through its events. `ready` is set once the subscription or consumer is
/// bound: only then is a (re)connection "connected".
async fn connect(
    spec: &SourceSpec,
    sink: &Sink,
    ready: Arc<AtomicBool>,
) -> Result<async_nats::Client, String> {
    let (name, events) = (spec.name.clone(), sink.clone());
    async_nats::ConnectOptions::new()
        .name(format!("lambent source {}", spec.name))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100u64 << attempts.min(7)).min(10_000))
        })
        .event_callback(move |event| {
            let (name, events, ready) = (name.clone(), events.clone(), ready.clone());
            async move {
                match event {
                    async_nats::Event::Connected if ready.load(Ordering::SeqCst) => {
                        events.status(&name, "connected")
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(source = %name, "broker connection lost; reconnecting");
                        events.status(&name, "reconnecting: broker connection lost")
                    }
                    other => tracing::info!(source = %name, event = %other, "nats"),
                }
            }
        })
        .connect(spec.url.trim_start_matches("nats://"))
        .await
        .map_err(|e| e.to_string())
}

#[async_trait]
impl Source for Nats {
    fn name(&self) -> String {
        self.spec.name.clone()
    }

    /// Deletes a JetStream source's durable consumer (the stream stays: it may have
    /// other readers).
    async fn retire(self: Box<Self>) -> Result<(), String> {
        if self.spec.kind != SourceKind::Jetstream {
            return Ok(());
        }
        let client = async_nats::connect(self.spec.url.trim_start_matches("nats://"))
            .await
            .map_err(|e| e.to_string())?;
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(self.spec.stream.clone().unwrap_or_default())
            .await
            .map_err(|e| e.to_string())?;
        stream
            .delete_consumer(&format!("lambent-{}", self.spec.name))
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn run(self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let spec = self.spec;
        cx.sink.status(&spec.name, "connecting");
        let ready = Arc::new(AtomicBool::new(false));
        let client = tokio::select! {
            c = connect(&spec, &cx.sink, ready.clone()) => c.map_err(|detail| SourceError::Failed { source_name: spec.name.clone(), detail })?,
            _ = cx.shutdown.changed() => return Ok(()),
        };
        match spec.kind {
            SourceKind::Jetstream => jetstream(&spec, client, &ready, &mut cx).await,
            _ => core(&spec, client, &ready, &mut cx).await,
        }
    }
}

async fn core(
    spec: &SourceSpec,
    client: async_nats::Client,
    ready: &AtomicBool,
    cx: &mut SourceContext,
) -> Result<(), SourceError> {
    let subject = spec.subject.clone().unwrap_or_default();
    let mut subscriber = client
        .subscribe(subject)
        .await
        .map_err(|e| SourceError::Failed {
            source_name: spec.name.clone(),
            detail: format!("subscribing: {e}"),
        })?;
    // The server has the subscription once a round trip after it completes.
    client.flush().await.map_err(|e| SourceError::Failed {
        source_name: spec.name.clone(),
        detail: format!("subscribing: {e}"),
    })?;
    ready.store(true, Ordering::SeqCst);
    cx.sink.status(&spec.name, "connected");
    loop {
        let message = tokio::select! {
            m = subscriber.next() => m,
            _ = cx.shutdown.changed() => return Ok(()),
        };
        let Some(message) = message else {
            return Err(SourceError::Failed {
                source_name: spec.name.clone(),
                detail: "the subscription ended".into(),
            });
        };
        let headers = message.headers.as_ref();
        // A publisher's de-duplication id, if it gave one; else a fresh id.
        let id = headers
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .unwrap_or_else(lambent_core::new_id);
        let content_type = headers
            .and_then(|h| h.get("content-type"))
            .map(|v| v.to_string());
        let event = to_event(
            spec,
            &Message {
                id,
                subject: message.subject.as_str(),
                content_type: content_type.as_deref(),
                payload: &message.payload,
            },
        );
        match event {
            Ok(event) => {
                if let Err(e) = cx
                    .sink
                    .publish_to(vec![event], spec.target.as_deref())
                    .await
                {
                    // Core NATS has no redelivery: the message is lost, and we say so.
                    tracing::error!(source = %spec.name, error = %e, "a core NATS message could not be stored; it is lost (use a JetStream source for at-least-once)");
                }
            }
            Err(e) => {
                tracing::warn!(source = %spec.name, error = %e, "a message cannot be an event; dropped")
            }
        }
    }
}

async fn jetstream(
    spec: &SourceSpec,
    client: async_nats::Client,
    ready: &AtomicBool,
    cx: &mut SourceContext,
) -> Result<(), SourceError> {
    use async_nats::jetstream::{self, AckKind, consumer, stream};
    let js = jetstream::new(client);
    let stream_name = spec.stream.clone().unwrap_or_default();
    let subject = spec.subject.clone().unwrap_or_default();
    let durable = format!("lambent-{}", spec.name);
    let mut backoff = Backoff::default();
    loop {
        // (Re)binds the durable consumer: its position is the server's, so a restart
        // of Lambent or of the broker resumes where the last acknowledgement left it.
        let bound = async {
            let stream = js
                .get_or_create_stream(stream::Config {
                    name: stream_name.clone(),
                    subjects: vec![subject.clone()],
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("stream {stream_name}: {e}"))?;
            let consumer: consumer::PullConsumer = stream
                .get_or_create_consumer(
                    &durable,
                    consumer::pull::Config {
                        durable_name: Some(durable.clone()),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: Duration::from_secs(30),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| format!("consumer {durable}: {e}"))?;
            consumer
                .messages()
                .await
                .map_err(|e| format!("consuming: {e}"))
        };
        let mut messages = tokio::select! {
            m = bound => match m {
                Ok(m) => m,
                Err(e) => {
                    let delay = backoff.next();
                    tracing::warn!(source = %spec.name, error = %e, ?delay, "JetStream not ready; retrying");
                    cx.sink.status(&spec.name, format!("reconnecting: {e}"));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = cx.shutdown.changed() => return Ok(()),
                    }
                }
            },
            _ = cx.shutdown.changed() => return Ok(()),
        };
        ready.store(true, Ordering::SeqCst);
        cx.sink.status(&spec.name, "connected");
        loop {
            let next = tokio::select! {
                m = messages.next() => m,
                _ = cx.shutdown.changed() => return Ok(()),
            };
            let message = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(source = %spec.name, error = %e, "JetStream consumer error; rebinding");
                    cx.sink.status(&spec.name, format!("reconnecting: {e}"));
                    break;
                }
                None => break,
            };
            backoff.reset();
            let sequence = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(e) => {
                    tracing::warn!(source = %spec.name, error = %e, "a JetStream message without metadata; skipped");
                    continue;
                }
            };
            let content_type = message
                .headers
                .as_ref()
                .and_then(|h| h.get("content-type"))
                .map(|v| v.to_string());
            let event = to_event(
                spec,
                &Message {
                    id: format!("{stream_name}/{sequence}"),
                    subject: message.subject.as_str(),
                    content_type: content_type.as_deref(),
                    payload: &message.payload,
                },
            );
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    // It can never become an event: terminate it rather than loop.
                    tracing::warn!(source = %spec.name, error = %e, sequence, "a message cannot be an event; terminated");
                    let _ = message.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            match cx
                .sink
                .publish_to(vec![event], spec.target.as_deref())
                .await
            {
                Ok(_) => {
                    if let Err(e) = message.ack().await {
                        // Not acknowledged: it comes again and is de-duplicated.
                        tracing::warn!(source = %spec.name, error = %e, sequence, "ack failed; the message will be redelivered");
                    }
                }
                Err(e) => {
                    tracing::warn!(source = %spec.name, error = %e, sequence, "storing failed; the message will be redelivered");
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
            }
        }
        let delay = backoff.next();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cx.shutdown.changed() => return Ok(()),
        }
    }
}
