//! Turning a broker message into a CloudEvent (shared by NATS, JetStream and MQTT).

use lambent_core::CloudEvent;
use lambent_core::source::SourceSpec;

/// A message: its id (stable across redeliveries where the broker gives one), where
/// it was published, its content type if it said, and its bytes.
pub struct Message<'a> {
    pub id: String,
    pub subject: &'a str,
    pub content_type: Option<&'a str>,
    pub payload: &'a [u8],
}

/// `lambent/KIND/NAME`: the source attribute of a configured source's events.
pub fn event_source(spec: &SourceSpec) -> String {
    let kind = serde_json::to_value(spec.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("lambent/{kind}/{}", spec.name)
}

/// The event of a message: the configured type, the subject or topic as `subject`,
/// the payload as data (JSON stays JSON, text stays text, other bytes are base64).
pub fn to_event(spec: &SourceSpec, message: &Message<'_>) -> Result<CloudEvent, String> {
    CloudEvent::builder(message.id.clone(), event_source(spec), spec.event_type())
        .attr("subject", message.subject.to_owned())
        .bytes_data(message.content_type, message.payload)
        .build()
        .map_err(|e| e.to_string())
}

/// Doubling delays from 100 ms to 10 s, for reconnecting.
pub struct Backoff(std::time::Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(std::time::Duration::from_millis(100))
    }
}

impl Backoff {
    pub fn next(&mut self) -> std::time::Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(std::time::Duration::from_secs(10));
        now
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}
