//! The Lambda Function URL contract (API Gateway HTTP API payload 2.0): the event a
//! synchronous route hands its function, and how the function's answer becomes the
//! HTTP response. Lambda HTTP handlers work unchanged.

use crate::invoke::Invocation;
use crate::routes::{HttpRequest, HttpResponse, MatchedRoute};
use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// Media types whose bodies Lambda passes as text; others are base64.
fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media.starts_with("text/")
        || media == "application/json"
        || media.ends_with("+json")
        || media == "application/xml"
        || media.ends_with("+xml")
        || media == "application/javascript"
        || media == "application/x-www-form-urlencoded"
}

/// Name-value pairs serialized as a JSON object, in the order first seen.
struct Pairs<K, V> {
    pairs: Vec<(K, V)>,
    /// Position of each name: a query string may hold tens of thousands of names.
    index: HashMap<String, usize>,
}

impl<K: AsRef<str>, V: AsRef<str>> Pairs<K, V> {
    fn new() -> Self {
        Self {
            pairs: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Adds a pair; a repeated name gets its values joined with commas, as Lambda
    /// joins repeated headers and query parameters.
    fn join(&mut self, name: K, value: V)
    where
        V: From<String>,
    {
        match self.index.get(name.as_ref()) {
            Some(&at) => {
                let existing = &mut self.pairs[at].1;
                *existing = V::from(format!("{},{}", existing.as_ref(), value.as_ref()));
            }
            None => {
                self.index
                    .insert(name.as_ref().to_owned(), self.pairs.len());
                self.pairs.push((name, value));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Serialize for Pairs<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    version: &'static str,
    route_key: &'a str,
    raw_path: &'a str,
    raw_query_string: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cookies: Vec<&'a str>,
    headers: Pairs<&'a str, Cow<'a, str>>,
    #[serde(skip_serializing_if = "Pairs::is_empty")]
    query_string_parameters: Pairs<String, String>,
    #[serde(skip_serializing_if = "no_params")]
    path_parameters: &'a BTreeMap<String, String>,
    request_context: RequestContext<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Cow<'a, str>>,
    is_base64_encoded: bool,
}

fn no_params(params: &&BTreeMap<String, String>) -> bool {
    params.is_empty()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestContext<'a> {
    account_id: &'static str,
    api_id: &'static str,
    domain_name: &'a str,
    domain_prefix: &'a str,
    http: HttpContext<'a>,
    request_id: &'a str,
    route_key: &'a str,
    stage: &'static str,
    time: String,
    time_epoch: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpContext<'a> {
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    source_ip: &'a str,
    user_agent: &'a str,
}

/// The payload-2.0 event of a request, as the JSON the function receives (written
/// straight from typed fields: on a busy route, building a `serde_json::Value`
/// first cost as much as the rest of the request's own work).
pub(crate) fn request_event(
    route: &MatchedRoute,
    request: &HttpRequest,
    request_id: &str,
) -> Bytes {
    // Repeated headers are joined with commas; cookies get their own list.
    let mut headers = Pairs::new();
    let mut cookies = Vec::new();
    for (name, value) in &request.headers {
        if name == "cookie" {
            cookies.extend(value.split(';').map(str::trim).filter(|c| !c.is_empty()));
            continue;
        }
        headers.join(name.as_str(), Cow::Borrowed(value.as_str()));
    }
    let mut query = Pairs::new();
    for pair in request.query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        query.join(
            lambent_core::percent::decode(k, true),
            lambent_core::percent::decode(v, true),
        );
    }
    let now = chrono::Utc::now();
    let text = is_text(request.header("content-type"));
    let (body, is_base64_encoded) = match (
        request.body.is_empty(),
        text,
        std::str::from_utf8(&request.body),
    ) {
        (true, _, _) => (None, false),
        (false, true, Ok(s)) => (Some(Cow::Borrowed(s)), false),
        _ => (
            Some(Cow::Owned(
                base64::engine::general_purpose::STANDARD.encode(&request.body),
            )),
            true,
        ),
    };
    let route_key = route.spec.key();
    let host = request.header("host").unwrap_or("localhost");
    let event = Event {
        version: "2.0",
        route_key: &route_key,
        raw_path: &request.path,
        raw_query_string: &request.query,
        cookies,
        headers,
        query_string_parameters: query,
        path_parameters: &route.params,
        request_context: RequestContext {
            account_id: "anonymous",
            api_id: "lambent",
            domain_name: host,
            domain_prefix: host.split('.').next().unwrap_or(""),
            http: HttpContext {
                method: &request.method,
                path: &request.path,
                protocol: "HTTP/1.1",
                source_ip: &request.source_ip,
                user_agent: request.header("user-agent").unwrap_or(""),
            },
            request_id,
            route_key: &route_key,
            stage: "$default",
            time: request_time(&now),
            time_epoch: now.timestamp_millis(),
        },
        body,
        is_base64_encoded,
    };
    // Strings and maps of strings: serializing cannot fail.
    Bytes::from(serde_json::to_vec(&event).unwrap_or_default())
}

/// `requestContext.time` as Lambda writes it (`07/Dec/2026:19:08:51 +0000`), from
/// the fields: chrono's `format` parses its pattern again on every call, and showed
/// in the profile of a wasm route (~1% of the node's CPU).
fn request_time(now: &chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{Datelike, Timelike};
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS[now.month0() as usize % 12];
    format!(
        "{:02}/{month}/{:04}:{:02}:{:02}:{:02} +0000",
        now.day(),
        now.year(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The HTTP response of a finished invocation, as Lambda maps it: an object with
/// `statusCode` is a response; any other JSON is a 200 with it as the body; a failed
/// invocation is a 502.
pub(crate) fn response(invocation: &Invocation) -> HttpResponse {
    if !invocation.record.outcome.is_success() {
        let status = match invocation.record.outcome {
            lambent_core::InvocationOutcome::Timeout => 504,
            _ => 502,
        };
        return HttpResponse::json(status, json!({"message": "Internal Server Error"}));
    }
    let parsed: Option<Value> = serde_json::from_slice(&invocation.payload).ok();
    let Some(Value::Object(answer)) = parsed.as_ref().filter(|v| v.get("statusCode").is_some())
    else {
        // A bare value: the payload is the body, as JSON.
        return HttpResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: invocation.payload.clone(),
        };
    };
    let status = answer
        .get("statusCode")
        .and_then(Value::as_u64)
        .filter(|s| (100..=599).contains(s))
        .unwrap_or(500) as u16;
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(Value::Object(map)) = answer.get("headers") {
        for (name, value) in map {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            headers.push((name.to_ascii_lowercase(), value));
        }
    }
    if let Some(Value::Object(map)) = answer.get("multiValueHeaders") {
        for (name, values) in map {
            for value in values.as_array().into_iter().flatten() {
                if let Some(v) = value.as_str() {
                    headers.push((name.to_ascii_lowercase(), v.to_owned()));
                }
            }
        }
    }
    for cookie in answer
        .get("cookies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(c) = cookie.as_str() {
            headers.push(("set-cookie".into(), c.to_owned()));
        }
    }
    let body = match answer.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) if answer.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            match base64::engine::general_purpose::STANDARD.decode(s) {
                Ok(bytes) => Bytes::from(bytes),
                Err(_) => {
                    return HttpResponse::json(
                        502,
                        json!({"message": "the function's body is marked base64 but is not base64"}),
                    );
                }
            }
        }
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(other) => Bytes::from(other.to_string()),
    };
    if !headers.iter().any(|(n, _)| n == "content-type") && !body.is_empty() {
        headers.push(("content-type".into(), "application/json".into()));
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use lambent_core::{InvocationOutcome, RouteMode, RouteSpec};

    fn invocation(outcome: InvocationOutcome, payload: &str) -> Invocation {
        Invocation {
            record: crate::records::plain_record("r", outcome),
            payload: Bytes::from(payload.to_owned()),
        }
    }

    #[test]
    fn the_request_time_is_written_as_strftime_would() {
        for ms in [0_i64, 1_733_598_531_123, 951_782_400_000, 4_102_444_799_999] {
            let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
            assert_eq!(
                request_time(&t),
                t.format("%d/%b/%Y:%H:%M:%S %z").to_string()
            );
        }
    }

    #[test]
    fn a_response_object_maps_status_headers_cookies_and_body() {
        let r = response(&invocation(
            InvocationOutcome::Success,
            r#"{"statusCode": 201, "headers": {"X-Thing": "1"}, "cookies": ["a=1", "b=2; Secure"], "body": "made"}"#,
        ));
        assert_eq!(r.status, 201);
        assert!(r.headers.contains(&("x-thing".into(), "1".into())));
        assert!(r.headers.contains(&("set-cookie".into(), "a=1".into())));
        assert!(
            r.headers
                .contains(&("set-cookie".into(), "b=2; Secure".into()))
        );
        assert_eq!(&r.body[..], b"made");
        let b64 = response(&invocation(
            InvocationOutcome::Success,
            r#"{"statusCode": 200, "isBase64Encoded": true, "body": "AAEC"}"#,
        ));
        assert_eq!(&b64.body[..], &[0, 1, 2]);
        // Odd shapes are read leniently.
        let odd = response(&invocation(
            InvocationOutcome::Success,
            r#"{"statusCode": 202, "headers": {"X-N": 5}, "body": {"a": 1}}"#,
        ));
        assert_eq!(odd.status, 202);
        assert!(odd.headers.contains(&("x-n".into(), "5".into())));
        assert_eq!(&odd.body[..], br#"{"a":1}"#);
        let multi = response(&invocation(
            InvocationOutcome::Success,
            r#"{"statusCode": 200, "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]}, "body": "x"}"#,
        ));
        assert_eq!(
            multi.headers,
            vec![
                ("set-cookie".to_owned(), "a=1".to_owned()),
                ("set-cookie".to_owned(), "b=2".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ]
        );
        assert_eq!(
            response(&invocation(
                InvocationOutcome::Success,
                r#"{"statusCode": 200, "isBase64Encoded": true, "body": "%%%"}"#
            ))
            .status,
            502
        );
        // An array is a bare value, even one that would fill the fields in order.
        let array = response(&invocation(
            InvocationOutcome::Success,
            r#"[201, {}, {}, [], "x", false]"#,
        ));
        assert_eq!(
            (array.status, &array.body[..]),
            (200, &br#"[201, {}, {}, [], "x", false]"#[..])
        );
        let bare = response(&invocation(InvocationOutcome::Success, r#"{"ok": true}"#));
        assert_eq!(
            (bare.status, &bare.body[..]),
            (200, &br#"{"ok": true}"#[..])
        );
        assert_eq!(
            response(&invocation(InvocationOutcome::FunctionError, "{}")).status,
            502
        );
        assert_eq!(
            response(&invocation(InvocationOutcome::Timeout, "{}")).status,
            504
        );
    }

    #[test]
    fn the_request_event_is_payload_version_2() {
        let route = MatchedRoute {
            spec: RouteSpec {
                method: "POST".into(),
                path: "/users/{id}".into(),
                target: "f".into(),
                mode: RouteMode::Sync,
                ty: None,
                public: true,
            },
            params: [("id".to_owned(), "42".to_owned())].into(),
        };
        let request = HttpRequest {
            method: "POST".into(),
            path: "/users/42".into(),
            query: "a=1&a=2&b=x%20y".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cookie".into(), "s=1; t=2".into()),
                ("x-multi".into(), "1".into()),
                ("x-multi".into(), "2".into()),
            ],
            body: Bytes::from_static(b"{\"n\":1}"),
            source_ip: "127.0.0.1".into(),
        };
        let e: Value = serde_json::from_slice(&request_event(&route, &request, "rid")).unwrap();
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["routeKey"], "POST /users/{id}");
        assert_eq!(e["pathParameters"]["id"], "42");
        assert_eq!(e["queryStringParameters"]["a"], "1,2");
        assert_eq!(e["queryStringParameters"]["b"], "x y");
        assert_eq!(e["cookies"], json!(["s=1", "t=2"]));
        assert_eq!(e["headers"]["x-multi"], "1,2");
        assert_eq!(e["body"], "{\"n\":1}");
        assert_eq!(e["isBase64Encoded"], false);
        assert_eq!(e["requestContext"]["http"]["method"], "POST");
        let binary = HttpRequest {
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body: Bytes::from_static(&[0xff, 0]),
            ..request
        };
        let e: Value = serde_json::from_slice(&request_event(&route, &binary, "rid")).unwrap();
        assert_eq!(
            (e["isBase64Encoded"].clone(), e["body"].clone()),
            (json!(true), json!("/wA="))
        );
    }
}
