//! CloudEvents 1.0: the event model, its validation and its JSON (structured) form.
//!
//! Lambent keeps an event as its JSON form: the required attributes, the optional
//! ones, `data` (JSON) or `data_base64` (bytes), and extensions as top-level members.
//! That is exactly what a handler receives, so the seed's `event['type']` and
//! `event['data']` work as written.

use base64::Engine as _;
use serde_json::{Map, Value};

/// The only CloudEvents version Lambent accepts.
pub const SPEC_VERSION: &str = "1.0";

/// Attribute names defined by the CloudEvents core specification (not extensions).
const CONTEXT_ATTRIBUTES: &[&str] = &[
    "id",
    "source",
    "specversion",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
];

/// Why an event was refused. Each variant names the attribute at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The event is not a JSON object.
    #[error("a CloudEvent must be a JSON object")]
    NotAnObject,
    /// A required attribute is absent.
    #[error("missing required CloudEvents attribute `{0}`")]
    Missing(&'static str),
    /// An attribute has the wrong JSON type or is empty.
    #[error("CloudEvents attribute `{name}` {problem}")]
    Invalid { name: String, problem: String },
    /// `specversion` is not 1.0.
    #[error("unsupported specversion `{0}`: Lambent accepts CloudEvents 1.0")]
    SpecVersion(String),
    /// An extension attribute's name breaks the naming rules.
    #[error("invalid CloudEvents attribute name `{0}`: names are lower-case a-z and 0-9")]
    AttributeName(String),
    /// Both `data` and `data_base64` are present.
    #[error("an event carries `data` or `data_base64`, not both")]
    BothData,
    /// `data_base64` is not valid base64.
    #[error("`data_base64` is not valid base64: {0}")]
    Base64(String),
    /// `data` nests deeper than the limit (every binding refuses it alike).
    #[error("`data` nests {depth} levels deep, over the limit of {MAX_DATA_DEPTH}")]
    TooDeep { depth: usize },
}

/// Deepest nesting of arrays and objects accepted in `data`. Structured mode's JSON
/// parser stops at 128 levels for the whole event; one limit below it holds for
/// every binding, so an event is accepted (and routed) the same however it arrives,
/// and what is stored can always be read back.
pub const MAX_DATA_DEPTH: usize = 100;

/// Nesting depth of a JSON value (a scalar is 0), without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(d + 1);
                stack.extend(items.iter().map(|i| (i, d + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(d + 1);
                stack.extend(map.values().map(|i| (i, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// A validated CloudEvent, held in its JSON (structured) form.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    /// Always a `Value::Object`: kept as a `Value` so patterns match it without copying.
    json: Value,
}

impl CloudEvent {
    /// Validates a JSON value as a structured-mode CloudEvent.
    pub fn from_json(value: Value) -> Result<Self, EventError> {
        let Value::Object(json) = value else {
            return Err(EventError::NotAnObject);
        };
        for name in ["id", "source", "type"] {
            required_string(&json, name)?;
        }
        let version = required_string(&json, "specversion")?;
        if version != SPEC_VERSION {
            return Err(EventError::SpecVersion(version.to_owned()));
        }
        for (name, value) in &json {
            if name == "data" {
                let depth = depth(value);
                if depth > MAX_DATA_DEPTH {
                    return Err(EventError::TooDeep { depth });
                }
                continue;
            }
            if name == "data_base64" {
                let Value::String(encoded) = value else {
                    return Err(invalid(name, "must be a string"));
                };
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| EventError::Base64(e.to_string()))?;
                continue;
            }
            if !valid_attribute_name(name) {
                return Err(EventError::AttributeName(name.clone()));
            }
            check_attribute_value(name, value)?;
        }
        if json.contains_key("data") && json.contains_key("data_base64") {
            return Err(EventError::BothData);
        }
        if let Some(Value::String(time)) = json.get("time") {
            chrono::DateTime::parse_from_rfc3339(time)
                .map_err(|e| invalid("time", &format!("is not an RFC 3339 timestamp: {e}")))?;
        }
        Ok(Self {
            json: Value::Object(json),
        })
    }

    /// Builds an event from its parts (used by sources and the binary HTTP mode).
    pub fn builder(
        id: impl Into<String>,
        source: impl Into<String>,
        ty: impl Into<String>,
    ) -> Builder {
        let mut json = Map::new();
        json.insert("specversion".into(), SPEC_VERSION.into());
        json.insert("id".into(), Value::String(id.into()));
        json.insert("source".into(), Value::String(source.into()));
        json.insert("type".into(), Value::String(ty.into()));
        Builder {
            json,
            refused: None,
        }
    }

    pub fn id(&self) -> &str {
        self.str_attr("id").unwrap_or_default()
    }

    pub fn source(&self) -> &str {
        self.str_attr("source").unwrap_or_default()
    }

    pub fn ty(&self) -> &str {
        self.str_attr("type").unwrap_or_default()
    }

    /// A string attribute or extension, if present.
    pub fn str_attr(&self, name: &str) -> Option<&str> {
        self.json.get(name).and_then(Value::as_str)
    }

    /// Sets `time` to `now` when the producer did not (the spec lets the platform do so).
    pub fn stamp_time_if_missing(&mut self, now: chrono::DateTime<chrono::Utc>) {
        let Value::Object(map) = &mut self.json else {
            return;
        };
        map.entry("time").or_insert_with(|| {
            Value::String(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        });
    }

    /// The event's payload as bytes: `data` (JSON text, or a string's own bytes) or `data_base64`.
    pub fn data_bytes(&self) -> Vec<u8> {
        if let Some(Value::String(encoded)) = self.json.get("data_base64") {
            return base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap_or_default();
        }
        match self.json.get("data") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.as_bytes().to_vec(),
            Some(other) => other.to_string().into_bytes(),
        }
    }

    /// The attributes and data as a JSON object.
    pub fn as_json(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        self.json
            .as_object()
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
    }

    /// The structured-mode JSON value (what handlers receive and patterns match).
    pub fn as_value(&self) -> &Value {
        &self.json
    }

    pub fn into_json(self) -> Value {
        self.json
    }

    /// The structured-mode JSON text.
    pub fn to_json_string(&self) -> String {
        // Straight into a buffer: `Value`'s `Display` goes through a formatter
        // adapter, a call per fragment (a few % of batch ingest).
        serde_json::to_string(&self.json).unwrap_or_else(|_| self.json.to_string())
    }

    /// `(source, id, type)`, moved out of the event (one pass over its members:
    /// cheaper than three keyed removals).
    pub fn into_key(self) -> (String, String, String) {
        let mut key = <(String, String, String)>::default();
        let Value::Object(map) = self.json else {
            return key;
        };
        for (name, value) in map {
            let Value::String(value) = value else {
                continue;
            };
            match name.as_str() {
                "source" => key.0 = value,
                "id" => key.1 = value,
                "type" => key.2 = value,
                _ => {}
            }
        }
        key
    }
}

/// Assembles an event; `build` validates it like any incoming event.
#[derive(Debug, Clone)]
pub struct Builder {
    json: Map<String, Value>,
    /// Why the data cannot be taken, found while it was set (reported by `build`).
    refused: Option<EventError>,
}

impl Builder {
    /// Sets any attribute or extension (`subject`, `time`, `traceparent`, ...).
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.json
            .insert(name.to_owned(), Value::String(value.into()));
        self
    }

    /// Sets JSON data (and `datacontenttype` to `application/json` unless set).
    pub fn json_data(mut self, data: Value) -> Self {
        self.json
            .entry("datacontenttype")
            .or_insert_with(|| "application/json".into());
        self.json.insert("data".into(), data);
        self
    }

    /// Sets data from raw bytes with its media type: JSON stays JSON, text stays text,
    /// anything else becomes `data_base64`.
    pub fn bytes_data(mut self, content_type: Option<&str>, body: &[u8]) -> Self {
        if let Some(ct) = content_type {
            self.json.insert("datacontenttype".into(), ct.into());
        }
        if body.is_empty() {
            return self;
        }
        let media = content_type
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let is_json = media.is_empty() || media == "application/json" || media.ends_with("+json");
        if is_json {
            match serde_json::from_slice::<Value>(body) {
                Ok(value) => {
                    self.json.insert("data".into(), value);
                    return self;
                }
                // JSON too deep for the parser is refused as structured mode refuses
                // it, not kept as a string.
                Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
                    self.refused = Some(EventError::TooDeep {
                        depth: MAX_DATA_DEPTH + 1,
                    });
                    return self;
                }
                Err(_) => {}
            }
        }
        if (media.starts_with("text/") || is_json)
            && let Ok(text) = std::str::from_utf8(body)
        {
            self.json
                .insert("data".into(), Value::String(text.to_owned()));
            return self;
        }
        self.json.insert(
            "data_base64".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
        );
        self
    }

    pub fn build(self) -> Result<CloudEvent, EventError> {
        if let Some(refused) = self.refused {
            return Err(refused);
        }
        CloudEvent::from_json(Value::Object(self.json))
    }
}

fn invalid(name: &str, problem: &str) -> EventError {
    EventError::Invalid {
        name: name.to_owned(),
        problem: problem.to_owned(),
    }
}

fn required_string<'a>(
    json: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, EventError> {
    match json.get(name) {
        None | Some(Value::Null) => Err(EventError::Missing(name)),
        Some(Value::String(s)) if s.is_empty() => Err(invalid(name, "must be a non-empty string")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(name, "must be a string")),
    }
}

/// CloudEvents 1.0 §3.1.1: attribute names consist of lower-case ASCII letters and digits.
/// (The spec's 20-character limit is a SHOULD; Lambent allows longer names.)
pub fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn check_attribute_value(name: &str, value: &Value) -> Result<(), EventError> {
    match value {
        // Extension values are strings, integers or booleans in JSON; core ones are strings.
        Value::String(_) => Ok(()),
        Value::Null if !CONTEXT_ATTRIBUTES.contains(&name) => Ok(()),
        Value::Number(n) if !CONTEXT_ATTRIBUTES.contains(&name) && (n.is_i64() || n.is_u64()) => {
            Ok(())
        }
        Value::Bool(_) if !CONTEXT_ATTRIBUTES.contains(&name) => Ok(()),
        Value::Null => Ok(()),
        _ => Err(invalid(name, "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(v: Value) -> Result<CloudEvent, EventError> {
        CloudEvent::from_json(v)
    }

    #[test]
    fn into_key_moves_out_source_id_and_type() {
        let e = event(
            json!({"specversion": "1.0", "id": "i-1", "source": "/s", "type": "t.x",
            "subject": "sub", "data": {"id": "not this one"}}),
        )
        .unwrap();
        assert_eq!(e.to_json_string(), e.as_value().to_string());
        assert_eq!(e.into_key(), ("/s".into(), "i-1".into(), "t.x".into()));
    }

    #[test]
    fn accepts_a_minimal_event() {
        let e = event(json!({"specversion":"1.0","id":"1","source":"/s","type":"t"})).unwrap();
        assert_eq!((e.id(), e.source(), e.ty()), ("1", "/s", "t"));
    }

    #[test]
    fn names_each_missing_required_attribute() {
        for name in ["id", "source", "type", "specversion"] {
            let mut v = json!({"specversion":"1.0","id":"1","source":"/s","type":"t"});
            v.as_object_mut().unwrap().remove(name);
            assert_eq!(
                event(v),
                Err(EventError::Missing(match name {
                    "id" => "id",
                    "source" => "source",
                    "type" => "type",
                    _ => "specversion",
                }))
            );
        }
    }

    #[test]
    fn refuses_other_spec_versions_and_bad_names() {
        let v = json!({"specversion":"0.3","id":"1","source":"/s","type":"t"});
        assert_eq!(event(v), Err(EventError::SpecVersion("0.3".into())));
        let v = json!({"specversion":"1.0","id":"1","source":"/s","type":"t","Bad-Name":"x"});
        assert_eq!(event(v), Err(EventError::AttributeName("Bad-Name".into())));
        let v = json!({"specversion":"1.0","id":"","source":"/s","type":"t"});
        assert!(matches!(event(v), Err(EventError::Invalid { .. })));
        let v = json!({"specversion":"1.0","id":"1","source":"/s","type":"t","time":"yesterday"});
        assert!(matches!(event(v), Err(EventError::Invalid { .. })));
    }

    #[test]
    fn binary_data_round_trips_through_base64() {
        let e = CloudEvent::builder("1", "/s", "t")
            .bytes_data(Some("application/octet-stream"), &[0, 159, 146, 150])
            .build()
            .unwrap();
        assert!(e.as_json().contains_key("data_base64"));
        assert_eq!(e.data_bytes(), vec![0, 159, 146, 150]);
        let j = CloudEvent::builder("1", "/s", "t")
            .bytes_data(Some("application/json"), br#"{"a":1}"#)
            .build()
            .unwrap();
        assert_eq!(j.as_json()["data"], json!({"a":1}));
    }
}
