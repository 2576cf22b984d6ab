//! The Lambda Function URL contract (API Gateway HTTP API payload 2.0): the event a
//! synchronous route hands its function, and how the function's answer becomes the
//! HTTP response. Lambda HTTP handlers work unchanged.

use crate::invoke::Invocation;
use crate::routes::{HttpRequest, HttpResponse, MatchedRoute};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};

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

/// The payload-2.0 event of a request.
pub(crate) fn request_event(
    route: &MatchedRoute,
    request: &HttpRequest,
    request_id: &str,
) -> Value {
    // Repeated headers are joined with commas; cookies get their own list.
    let mut headers = Map::new();
    let mut cookies: Vec<Value> = Vec::new();
    for (name, value) in &request.headers {
        if name == "cookie" {
            cookies.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(|c| Value::String(c.to_owned())),
            );
            continue;
        }
        match headers.get_mut(name) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    let mut query = Map::new();
    for pair in request.query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (
            lambent_core::percent::decode(k, true),
            lambent_core::percent::decode(v, true),
        );
        match query.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                query.insert(k, Value::String(v));
            }
        }
    }
    let now = chrono::Utc::now();
    let text = is_text(request.header("content-type"));
    let body = match (
        request.body.is_empty(),
        text,
        std::str::from_utf8(&request.body),
    ) {
        (true, _, _) => None,
        (false, true, Ok(s)) => Some((Value::String(s.to_owned()), false)),
        _ => Some((
            Value::String(base64::engine::general_purpose::STANDARD.encode(&request.body)),
            true,
        )),
    };
    let route_key = route.spec.key();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.path,
        "rawQueryString": request.query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "lambent",
            "domainName": request.header("host").unwrap_or("localhost"),
            "domainPrefix": request.header("host").unwrap_or("localhost").split('.').next().unwrap_or(""),
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": "HTTP/1.1",
                "sourceIp": request.source_ip,
                "userAgent": request.header("user-agent").unwrap_or(""),
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": body.as_ref().is_some_and(|(_, b64)| *b64),
    });
    if let Some(map) = event.as_object_mut() {
        if !cookies.is_empty() {
            map.insert("cookies".into(), Value::Array(cookies));
        }
        if !query.is_empty() {
            map.insert("queryStringParameters".into(), Value::Object(query));
        }
        if !route.params.is_empty() {
            map.insert("pathParameters".into(), json!(route.params));
        }
        if let Some((body, _)) = body {
            map.insert("body".into(), body);
        }
    }
    event
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
    use lambent_store::InvocationRecord;

    fn invocation(outcome: InvocationOutcome, payload: &str) -> Invocation {
        Invocation {
            record: InvocationRecord {
                seq: 0,
                request_id: "r".into(),
                function: "f".into(),
                version: 1,
                delivery_id: None,
                event_id: None,
                attempt: 1,
                started_ms: 0,
                duration_us: 0,
                cold: false,
                outcome,
                error_type: None,
                error_message: None,
                logs: String::new(),
            },
            payload: Bytes::from(payload.to_owned()),
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
        let e = request_event(&route, &request, "rid");
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
        let e = request_event(&route, &binary, "rid");
        assert_eq!(
            (e["isBase64Encoded"].clone(), e["body"].clone()),
            (json!(true), json!("/wA="))
        );
    }
}
