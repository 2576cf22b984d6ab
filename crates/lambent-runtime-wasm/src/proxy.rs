//! The `wasi:http/proxy` world: a component that serves HTTP (as `wasmtime serve`
//! and Spin run them). A route hands its function the Function URL event (payload
//! 2.0); here it becomes the component's incoming request, and the component's
//! response becomes the Function URL answer the route turns back into HTTP.

use crate::state::State;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};
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

/// The HTTP request an invocation payload stands for: a payload-2.0 event as sent,
/// anything else as `POST /` with the payload as its body.
pub fn request_of(payload: &Bytes) -> http::Request<Full<Bytes>> {
    let event: Option<Value> = serde_json::from_slice(payload).ok();
    let Some(event) = event.filter(|e| e.pointer("/requestContext/http/method").is_some()) else {
        let mut request = http::Request::new(Full::new(payload.clone()));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from_static("http://localhost/");
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return request;
    };
    let text = |pointer: &str| event.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    let method = http::Method::from_bytes(text("/requestContext/http/method").as_bytes())
        .unwrap_or(http::Method::GET);
    let headers = event.get("headers").and_then(Value::as_object);
    let host = headers
        .and_then(|h| h.get("host"))
        .and_then(Value::as_str)
        .unwrap_or("localhost");
    let path = match text("/rawPath") {
        "" => "/",
        p => p,
    };
    let query = text("/rawQueryString");
    let uri = match query {
        "" => format!("http://{host}{path}"),
        q => format!("http://{host}{path}?{q}"),
    };
    let body = match event.get("body").and_then(Value::as_str) {
        Some(b) if event.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map(Bytes::from)
                .unwrap_or_default()
        }
        Some(b) => Bytes::from(b.to_owned()),
        None => Bytes::new(),
    };
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("http://localhost/"));
    let out = request.headers_mut();
    for (name, value) in headers.into_iter().flatten() {
        if let (Ok(name), Some(Ok(value))) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            value.as_str().map(http::HeaderValue::from_str),
        ) {
            out.append(name, value);
        }
    }
    let cookies: Vec<&str> = event
        .get("cookies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if let Ok(cookie) = http::HeaderValue::from_str(&cookies.join("; "))
        && !cookies.is_empty()
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
