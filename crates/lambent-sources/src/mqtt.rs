//! MQTT: a topic subscription at QoS 1 in a persistent session (a stable client id,
//! `clean_session = false`). Each message is acknowledged (PUBACK) only after its
//! event is durable, so the broker redelivers what Lambent had not stored.

use crate::message::{Backoff, Message, to_event};
use crate::{Source, SourceContext, SourceError};
use async_trait::async_trait;
use lambent_core::source::SourceSpec;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::Duration;

pub struct Mqtt {
    pub spec: SourceSpec,
}

fn options(spec: &SourceSpec) -> Result<MqttOptions, String> {
    let rest = spec.url.trim_start_matches("mqtt://");
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h.to_owned(),
            p.trim_end_matches('/')
                .parse::<u16>()
                .map_err(|_| format!("bad port in {}", spec.url))?,
        ),
        None => (rest.trim_end_matches('/').to_owned(), 1883),
    };
    let mut options = MqttOptions::new(format!("lambent-{}", spec.name), host, port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(10));
    Ok(options)
}

#[async_trait]
impl Source for Mqtt {
    fn name(&self) -> String {
        self.spec.name.clone()
    }

    /// Ends the persistent session (the broker would queue messages for it for ever)
    /// by connecting once with a clean session.
    async fn retire(self: Box<Self>) -> Result<(), String> {
        let mut options = options(&self.spec)?;
        options.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 8);
        let connected = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "the broker did not answer".to_owned())?;
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
        connected
    }

    async fn run(self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let spec = self.spec;
        let options = options(&spec).map_err(|detail| SourceError::Failed {
            source_name: spec.name.clone(),
            detail,
        })?;
        let topic = spec.topic.clone().unwrap_or_default();
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let mut backoff = Backoff::default();
        cx.sink.status(&spec.name, "connecting");
        loop {
            let polled = tokio::select! {
                p = eventloop.poll() => p,
                _ = cx.shutdown.changed() => {
                    let _ = client.disconnect().await;
                    return Ok(());
                }
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff.reset();
                    cx.sink.status(&spec.name, "connected");
                    tracing::info!(source = %spec.name, session_present = ack.session_present, "MQTT connected");
                    // Subscribing again is harmless with a session and needed without one.
                    if let Err(e) = client.subscribe(topic.clone(), QoS::AtLeastOnce).await {
                        tracing::warn!(source = %spec.name, error = %e, "subscribing");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let event = to_event(
                        &spec,
                        &Message {
                            // MQTT gives no id that survives a redelivery.
                            id: lambent_core::new_id(),
                            subject: &publish.topic,
                            content_type: None,
                            payload: &publish.payload,
                        },
                    );
                    let stored = match event {
                        Ok(event) => cx
                            .sink
                            .publish_to(vec![event], spec.target.as_deref())
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => {
                            // Never storable: acknowledge it away rather than loop.
                            tracing::warn!(source = %spec.name, error = %e, "a message cannot be an event; dropped");
                            Ok(Vec::new())
                        }
                    };
                    match stored {
                        Ok(_) => {
                            if let Err(e) = client.ack(&publish).await {
                                tracing::warn!(source = %spec.name, error = %e, "ack not sent; the broker will redeliver");
                            }
                        }
                        Err(e) => {
                            // Not acknowledged: the broker redelivers it on reconnect.
                            tracing::warn!(source = %spec.name, error = %e, "storing failed; reconnecting for a redelivery");
                            let _ = client.disconnect().await;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let delay = backoff.next();
                    tracing::warn!(source = %spec.name, error = %e, ?delay, "broker connection lost; reconnecting");
                    cx.sink.status(&spec.name, format!("reconnecting: {e}"));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cx.shutdown.changed() => return Ok(()),
                    }
                }
            }
        }
    }
}
