//! CloudEvent parsing in every mode: any content type, any ce-* headers, any body.
//! Accepted events must be valid (they survive a round trip through their own JSON).
#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: &[&str] = &[
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/json",
    "text/plain; charset=utf-8",
];
const CE: &[&str] = &[
    "ce-specversion",
    "ce-id",
    "ce-source",
    "ce-type",
    "ce-time",
    "ce-subject",
    "ce-dataschema",
    "ce-traceparent",
];

#[derive(Arbitrary, Debug)]
struct Request {
    content_type: Option<u8>,
    headers: Vec<(u8, String)>,
    body: Vec<u8>,
}

fuzz_target!(|req: Request| {
    let mut headers = HeaderMap::new();
    if let Some(i) = req.content_type {
        let ct = CONTENT_TYPES[usize::from(i) % CONTENT_TYPES.len()];
        headers.insert("content-type", HeaderValue::from_static(ct));
    }
    for (i, value) in &req.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(CE[usize::from(*i) % CE.len()]), v);
        }
    }
    if let Ok(events) = lambent_api::cloudevents::parse(&headers, &req.body) {
        assert!(!events.is_empty());
        for event in events {
            assert!(lambent_core::CloudEvent::from_json(event.as_value().clone()).is_ok());
        }
    }
});
