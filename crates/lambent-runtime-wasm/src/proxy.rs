//! The `wasi:http/proxy` world: a component that serves HTTP (as `wasmtime serve`
//! and Spin run them). A route hands its function the Function URL event (payload
//! 2.0); here it becomes the component's incoming request, and the component's
//! response becomes the Function URL answer the route turns back into HTTP.

use crate::state::State;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::collections::HashMap;
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};

/// A response larger than this is refused (Lambda's synchronous payload limit).
const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// How a proxy invocation ended.
pub enum ProxyEnd {
    /// The Function URL answer (JSON).
    Answer(Bytes),
    /// The component answered with an error code instead of a response.
    Refused(String),
    /// The component failed (trapped, or never set a response).
    Failed(wasmtime::Error),
}

/// What a request is built from, however the event was read.
struct Parts<'a> {
    method: &'a str,
    host: &'a str,
    path: &'a str,
    query: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    cookies: Vec<&'a str>,
    body: Option<&'a str>,
    base64: bool,
}

/// The fields of a payload-2.0 event that make its request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    #[serde(borrow, default)]
    raw_path: Cow<'a, str>,
    #[serde(borrow, default)]
    raw_query_string: Cow<'a, str>,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    cookies: Vec<String>,
    #[serde(borrow)]
    request_context: Option<Context<'a>>,
    #[serde(borrow)]
    body: Option<Cow<'a, str>>,
    #[serde(default)]
    is_base64_encoded: bool,
}

#[derive(Deserialize)]
struct Context<'a> {
    #[serde(borrow)]
    http: Option<Method<'a>>,
}

#[derive(Deserialize)]
struct Method<'a> {
    #[serde(borrow)]
    method: Cow<'a, str>,
}

/// The HTTP request an invocation payload stands for: a payload-2.0 event as sent,
/// anything else as `POST /` with the payload as its body.
pub fn request_of(payload: &Bytes) -> http::Request<Full<Bytes>> {
    // Typed first (the route's own events: no `Value` tree to build); an event with
    // an unexpected shape is read leniently below, as before.
    // (Only for an object: serde would also read a struct from an array, by position.)
    if let Some(event) = is_json_object(payload)
        .then(|| serde_json::from_slice::<Event>(payload).ok())
        .flatten()
    {
        let Some(method) = event.request_context.as_ref().and_then(|c| c.http.as_ref()) else {
            return plain(payload);
        };
        return build(Parts {
            method: &method.method,
            host: event
                .headers
                .get("host")
                .map_or("localhost", String::as_str),
            path: &event.raw_path,
            query: &event.raw_query_string,
            headers: event
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect(),
            cookies: event.cookies.iter().map(String::as_str).collect(),
            body: event.body.as_deref(),
            base64: event.is_base64_encoded,
        });
    }
    let event: Option<Value> = serde_json::from_slice(payload).ok();
    let Some(event) = event.filter(|e| e.pointer("/requestContext/http/method").is_some()) else {
        return plain(payload);
    };
    let text = |pointer: &str| event.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    let headers = event.get("headers").and_then(Value::as_object);
    build(Parts {
        method: text("/requestContext/http/method"),
        host: headers
            .and_then(|h| h.get("host"))
            .and_then(Value::as_str)
            .unwrap_or("localhost"),
        path: text("/rawPath"),
        query: text("/rawQueryString"),
        headers: headers
            .into_iter()
            .flatten()
            .filter_map(|(n, v)| Some((n.as_str(), v.as_str()?)))
            .collect(),
        cookies: event
            .get("cookies")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect(),
        body: event.get("body").and_then(Value::as_str),
        base64: event.get("isBase64Encoded") == Some(&Value::Bool(true)),
    })
}

/// Whether these bytes are (at most) a JSON object: their first non-blank byte is `{`.
fn is_json_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// A payload that is not a request: `POST /` with it as the JSON body.
fn plain(payload: &Bytes) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::new(Full::new(payload.clone()));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static("http://localhost/");
    request.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    request
}

fn build(parts: Parts<'_>) -> http::Request<Full<Bytes>> {
    let method = http::Method::from_bytes(parts.method.as_bytes()).unwrap_or(http::Method::GET);
    let path = match parts.path {
        "" => "/",
        p => p,
    };
    let uri = match parts.query {
        "" => format!("http://{}{path}", parts.host),
        q => format!("http://{}{path}?{q}", parts.host),
    };
    let body = match parts.body {
        Some(b) if parts.base64 => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Bytes::from)
            .unwrap_or_default(),
        Some(b) => Bytes::from(b.to_owned()),
        None => Bytes::new(),
    };
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("http://localhost/"));
    let out = request.headers_mut();
    for (name, value) in parts.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            out.append(name, value);
        }
    }
    if let Ok(cookie) = http::HeaderValue::from_str(&parts.cookies.join("; "))
        && !parts.cookies.is_empty()
    {
        out.insert(http::header::COOKIE, cookie);
    }
    request
}

/// The Function URL answer for a response: repeated headers kept, the body as text
/// when it is UTF-8 and base64 otherwise.
pub fn answer(status: u16, headers: &http::HeaderMap, body: &[u8]) -> Bytes {
    let mut multi: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let Ok(value) = value.to_str() else { continue };
        if let Value::Array(values) = multi
            .entry(name.as_str().to_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            values.push(Value::String(value.to_owned()));
        }
    }
    let (body, base64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    Bytes::from(
        json!({
            "statusCode": status,
            "multiValueHeaders": multi,
            "body": body,
            "isBase64Encoded": base64,
        })
        .to_string(),
    )
}

/// Runs one request through a fresh instance of a proxy component.
pub async fn run(pre: &ProxyPre<State>, store: &mut Store<State>, payload: &Bytes) -> ProxyEnd {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let prepared = (|| {
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request_of(payload))?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        Ok::<_, wasmtime::Error>((request, out))
    })();
    let (request, out) = match prepared {
        Ok(pair) => pair,
        Err(e) => return ProxyEnd::Failed(e),
    };
    let proxy = match pre.instantiate_async(&mut *store).await {
        Ok(proxy) => proxy,
        Err(e) => return ProxyEnd::Failed(e),
    };
    let call = proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, request, out);
    // The body is read while the guest writes it (its stream has little buffer).
    let collect = async {
        let response = match receiver.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => return Err(Some(error_text(&code))),
            Err(_) => return Err(None),
        };
        let (parts, body) = response.into_parts();
        let limited = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES);
        match limited.collect().await {
            Ok(body) => Ok(answer(
                parts.status.as_u16(),
                &parts.headers,
                &body.to_bytes(),
            )),
            Err(e) => Err(Some(format!("the response body failed: {e}"))),
        }
    };
    tokio::pin!(call, collect);
    // The call first: a guest that answers within one poll has then written its
    // response before the collector ever registered a waker, so nothing wakes this
    // task again — a self-wake makes tokio reschedule the task and wake an idle
    // worker thread for it, a cross-CPU wake-up per request.
    let (called, collected) = tokio::select! {
        biased;
        called = &mut call => match called {
            // Returned: the response it set (if any) is complete or completes now.
            Ok(()) => (Ok(()), collect.await),
            Err(e) => (Err(e), Err(None)),
        },
        collected = &mut collect => (call.await, collected),
    };
    match (called, collected) {
        (Err(e), _) => ProxyEnd::Failed(e),
        (Ok(()), Ok(answer)) => ProxyEnd::Answer(answer),
        (Ok(()), Err(Some(why))) => ProxyEnd::Refused(why),
        (Ok(()), Err(None)) => ProxyEnd::Failed(wasmtime::format_err!(
            "the component returned without setting a response"
        )),
    }
}

fn error_text(code: &ErrorCode) -> String {
    format!("the component answered with an error: {code:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_2_event_becomes_its_request() {
        let event = json!({
            "version": "2.0",
            "rawPath": "/hello/world",
            "rawQueryString": "a=1&b=2",
            "headers": {"host": "example.com", "x-one": "1"},
            "cookies": ["a=1", "b=2"],
            "requestContext": {"http": {"method": "PUT"}},
            "body": "aGk=",
            "isBase64Encoded": true,
        });
        let request = request_of(&Bytes::from(event.to_string()));
        assert_eq!(request.method(), http::Method::PUT);
        assert_eq!(request.uri(), "http://example.com/hello/world?a=1&b=2");
        assert_eq!(request.headers()["x-one"], "1");
        assert_eq!(request.headers()["cookie"], "a=1; b=2");
        // A shape the typed reading refuses (a number for a header, a cookie that is
        // not a string, an escaped path) is still read, leniently, as before.
        let odd = json!({
            "rawPath": "/a\"b",
            "headers": {"host": "h", "x-n": 5, "x-s": "s"},
            "cookies": ["a=1", 2],
            "requestContext": {"http": {"method": "DELETE"}},
            "body": "hi",
        });
        let request = request_of(&Bytes::from(odd.to_string()));
        assert_eq!(request.method(), http::Method::DELETE);
        assert_eq!(request.headers()["x-s"], "s");
        assert!(request.headers().get("x-n").is_none());
        assert_eq!(request.headers()["cookie"], "a=1");
        // An array is a plain payload, even one that would fill the fields in order.
        let array = json!(["/p", "", {}, [], {"http": {"method": "PUT"}}, null, false]);
        assert_eq!(
            request_of(&Bytes::from(array.to_string())).method(),
            http::Method::POST
        );
        let other = request_of(&Bytes::from_static(b"{\"x\":1}"));
        assert_eq!(other.method(), http::Method::POST);
        assert_eq!(other.uri().path(), "/");
    }

    #[test]
    fn a_response_keeps_repeated_headers_and_binary_bodies() {
        let mut headers = http::HeaderMap::new();
        headers.append("set-cookie", http::HeaderValue::from_static("a=1"));
        headers.append("set-cookie", http::HeaderValue::from_static("b=2"));
        let text: Value = serde_json::from_slice(&answer(201, &headers, b"hi")).unwrap_or_default();
        assert_eq!(text["statusCode"], 201);
        assert_eq!(
            text["multiValueHeaders"]["set-cookie"],
            json!(["a=1", "b=2"])
        );
        assert_eq!(text["body"], "hi");
        let binary: Value =
            serde_json::from_slice(&answer(200, &headers, &[0xff, 0])).unwrap_or_default();
        assert_eq!(binary["isBase64Encoded"], true);
        assert_eq!(binary["body"], "/wA=");
    }
}
