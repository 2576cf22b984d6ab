//! Fuzzing (bounded, run by the test command): CloudEvent parsing in every mode —
//! structured, batch, binary and plain JSON — takes any bytes and any headers and
//! answers events or an error, never a panic; what it accepts is a valid event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use lambent_api::cloudevents::parse;
use proptest::prelude::*;
use serde_json::{Value, json};

const CONTENT_TYPES: &[&str] = &[
    "application/cloudevents+json",
    "application/cloudevents+json; charset=utf-8",
    "application/cloudevents-batch+json",
    "application/json",
    "text/plain",
    "",
];

const CE_HEADERS: &[&str] = &[
    "ce-specversion",
    "ce-id",
    "ce-source",
    "ce-type",
    "ce-time",
    "ce-subject",
    "ce-dataschema",
    "ce-traceparent",
    "ce-x",
];

fn attribute() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[ -~]{0,12}".prop_map(Value::from),
        Just(Value::from("1.0")),
        Just(Value::from("2024-01-01T00:00:00Z")),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!({"nested": [1, 2]})),
    ]
}

/// Event-shaped JSON: the CloudEvents attributes with valid or invalid values.
fn event_json() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        "specversion|id|source|type|time|subject|datacontenttype|data|data_base64|[a-z]{1,4}",
        attribute(),
        0..9,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        event_json().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(event_json(), 0..4)
            .prop_map(|v| Value::from(v).to_string().into_bytes()),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    (
        prop::sample::select(CONTENT_TYPES),
        prop::collection::vec((prop::sample::select(CE_HEADERS), "[ -~]{0,16}"), 0..6),
    )
        .prop_map(|(ct, ce)| {
            let mut h = HeaderMap::new();
            if !ct.is_empty() {
                h.insert("content-type", HeaderValue::from_static(ct));
            }
            for (name, value) in ce {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.insert(HeaderName::from_static(name), v);
                }
            }
            h
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn any_request_parses_to_valid_events_or_an_error(headers in headers(), body in body()) {
        if let Ok(events) = parse(&headers, &body) {
            prop_assert!(!events.is_empty());
            for event in events {
                prop_assert!(!event.id().is_empty());
                prop_assert!(!event.source().is_empty());
                // What was accepted survives a round trip through its own JSON.
                prop_assert!(lambent_core::CloudEvent::from_json(event.as_value().clone()).is_ok());
                prop_assert!(!event.ty().is_empty());
            }
        }
    }
}
