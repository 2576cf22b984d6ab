//! The CloudEvents HTTP binding: structured (`application/cloudevents+json`), binary
//! (`ce-*` headers, the body is the data) and batch (`application/cloudevents-batch+json`).

use crate::error::{ApiError, ApiResult};
use axum::http::HeaderMap;
use lambent_core::CloudEvent;
use lambent_core::event::{Batch, ParseError};
use lambent_engine::EngineError;

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn media_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn event_error(index: usize, source: lambent_core::EventError) -> ApiError {
    EngineError::Event { index, source }.into()
}

/// Parses a request to `POST /v1/events` into the events it carries.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> ApiResult<Vec<CloudEvent>> {
    let ct = content_type(headers);
    let media = media_type(&ct);
    if media == "application/cloudevents-batch+json" {
        let batch = CloudEvent::parse_batch(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON in event batch: {e}")))?;
        let Batch::Events(items) = batch else {
            return Err(ApiError::bad_request("an event batch must be a JSON array"));
        };
        if items.is_empty() {
            return Err(ApiError::bad_request("an event batch must not be empty"));
        }
        return items
            .into_iter()
            .enumerate()
            .map(|(i, item)| item.map_err(|e| event_error(i, e)))
            .collect();
    }
    if media.starts_with("application/cloudevents") {
        return structured(body).map(|e| vec![e]);
    }
    if headers.contains_key("ce-specversion")
        || headers.contains_key("ce-id")
        || headers.contains_key("ce-type")
    {
        return binary(headers, &ct, body).map(|e| vec![e]);
    }
    // Without a CloudEvents content type or ce-* headers, accept a structured event
    // sent as plain JSON (what curl users do first).
    structured(body).map(|e| vec![e])
}

fn structured(body: &[u8]) -> ApiResult<CloudEvent> {
    CloudEvent::parse(body).map_err(|e| match e {
        ParseError::Json(e) => ApiError::bad_request(format!("invalid JSON in event: {e}")),
        ParseError::Event(e) => event_error(0, e),
    })
}

/// Binary mode: every `ce-NAME` header is attribute NAME; Content-Type is `datacontenttype`.
fn binary(headers: &HeaderMap, ct: &str, body: &[u8]) -> ApiResult<CloudEvent> {
    let mut json = serde_json::Map::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request(format!("header {name} is not valid text")))?;
        json.insert(
            attr.to_owned(),
            serde_json::Value::String(percent_decode(text)),
        );
    }
    // Validate the attributes first so a missing one is named before data is looked at.
    let mut probe = json.clone();
    probe.remove("data");
    CloudEvent::from_json(serde_json::Value::Object(probe)).map_err(|e| event_error(0, e))?;
    let get = |k: &str| {
        json.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let mut builder = CloudEvent::builder(get("id"), get("source"), get("type"));
    for (k, v) in &json {
        if let (false, Some(s)) = (
            ["id", "source", "type", "specversion"].contains(&k.as_str()),
            v.as_str(),
        ) {
            builder = builder.attr(k, s);
        }
    }
    builder
        .bytes_data((!ct.is_empty()).then_some(ct), body)
        .build()
        .map_err(|e| event_error(0, e))
}

/// Header values are percent-encoded by the binding (§3.1.3.2).
fn percent_decode(s: &str) -> String {
    lambent_core::percent::decode(s, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn binary_mode_maps_headers_to_attributes() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "42"),
            ("ce-source", "/sensors/a"),
            ("ce-type", "data_update"),
            ("ce-subject", "room%201"),
            (
                "ce-traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("content-type", "application/json"),
        ]);
        let e = parse(&h, br#"{"t": 21}"#).unwrap().remove(0);
        assert_eq!(e.id(), "42");
        assert_eq!(e.str_attr("subject"), Some("room 1"));
        assert!(e.str_attr("traceparent").is_some());
        assert_eq!(e.as_json()["data"], serde_json::json!({"t": 21}));
    }

    #[test]
    fn binary_mode_names_a_missing_attribute() {
        let h = headers(&[("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-type", "t")]);
        let err = parse(&h, b"").unwrap_err();
        assert!(err.message.contains("source"), "{}", err.message);
    }

    /// Finding 17: data nested past the limit is refused alike in every mode.
    #[test]
    fn deeply_nested_data_is_refused_in_every_mode() {
        for levels in [127, 300] {
            let data = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
            let binary = headers(&[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
                ("content-type", "application/json"),
            ]);
            let structured = format!(
                r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{data}}}"#
            );
            let batch = format!("[{structured}]");
            let cases = [
                (binary, data.clone()),
                (
                    headers(&[("content-type", "application/cloudevents+json")]),
                    structured,
                ),
                (
                    headers(&[("content-type", "application/cloudevents-batch+json")]),
                    batch,
                ),
            ];
            for (h, body) in cases {
                let err = parse(&h, body.as_bytes()).unwrap_err();
                assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
            }
        }
        // Up to the limit, every mode accepts the same data.
        let ok = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("content-type", "application/json"),
        ]);
        assert!(parse(&h, ok.as_bytes()).is_ok());
        let s = format!(r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{ok}}}"#);
        assert!(
            parse(
                &headers(&[("content-type", "application/cloudevents+json")]),
                s.as_bytes()
            )
            .is_ok()
        );
    }

    #[test]
    fn batch_mode_refuses_the_whole_batch_naming_the_bad_event() {
        let h = headers(&[("content-type", "application/cloudevents-batch+json")]);
        let body = br#"[{"specversion":"1.0","id":"1","source":"s","type":"t"},{"specversion":"1.0","id":"2","source":"s"}]"#;
        let err = parse(&h, body).unwrap_err();
        assert!(err.message.starts_with("event 1:"), "{}", err.message);
        assert!(err.message.contains("type"));
    }
}
