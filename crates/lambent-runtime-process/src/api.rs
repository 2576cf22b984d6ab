//! The AWS Lambda Runtime API, served to one instance's process on its own port.
//!
//! `GET /next` long-polls for the instance's next invocation; `/response`, `/error`
//! and `/init/error` complete it. Contract details follow LAMBDA-COMPAT.md: unknown
//! request ids get 400, a response past 6 MiB gets 413, the error type is read from
//! the body when the header is absent.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lambent_runtime::ErrorReport;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Largest response a function may return (Lambda's synchronous limit).
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// An invocation waiting for the process to fetch it.
#[derive(Debug)]
pub struct NextInvocation {
    pub request_id: String,
    pub payload: Bytes,
    pub headers: Vec<(&'static str, String)>,
}

/// What the process reported.
#[derive(Debug)]
pub enum Reported {
    Response(Bytes),
    Error(ErrorReport),
    InitError(ErrorReport),
    /// The process exited (or was killed) with this description.
    Exited(String),
}

/// State shared between the instance and its API server.
pub struct Shared {
    pub next: tokio::sync::Mutex<mpsc::Receiver<NextInvocation>>,
    /// One lock for both, so an init error is never lost between them.
    pub state: Mutex<Slots>,
    /// The node's services for this instance (`/lambent/v1/...`), if it has them.
    pub services: Option<crate::host_api::Services>,
}

#[derive(Default)]
pub struct Slots {
    /// The invocation in flight: its id and where its result goes.
    pub inflight: Option<(String, oneshot::Sender<Reported>)>,
    /// An init error reported while no invocation was in flight.
    pub init_error: Option<Reported>,
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .merge(crate::host_api::routes())
        .layer(DefaultBodyLimit::max(MAX_RESPONSE_BYTES))
        .with_state(shared)
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let mut rx = shared.next.lock().await;
    let Some(inv) = rx.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let mut headers = HeaderMap::new();
    for (name, value) in inv.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&inv.request_id) {
        headers.insert("lambda-runtime-aws-request-id", v);
    }
    // Lambda labels the event JSON; awslambdaric decodes the body only when it is.
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (StatusCode::OK, headers, inv.payload).into_response()
}

fn complete(shared: &Shared, id: &str, reported: Reported) -> Response {
    let taken = match shared.state.lock() {
        Ok(mut slots) => match slots.inflight.take() {
            Some((current, tx)) if current == id => Some(tx),
            other => {
                slots.inflight = other;
                None
            }
        },
        Err(_) => None,
    };
    match taken {
        Some(tx) => {
            let _ = tx.send(reported);
            (
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({"status": "OK"})),
            )
                .into_response()
        }
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "errorType": "InvalidRequestID",
                "errorMessage": format!("unknown or completed request id {id}")
            })),
        )
            .into_response(),
    }
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match body {
        Ok(body) => complete(&shared, &id, Reported::Response(body)),
        // Lambda fails the invocation (it does not hang) when the answer is too big.
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let report = ErrorReport::new(
                "Function.ResponseSizeTooLarge",
                format!(
                    "Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
                ),
            );
            fail_invocation(&shared, &id, StatusCode::PAYLOAD_TOO_LARGE, report)
        }
        Err(rejection) => (StatusCode::BAD_REQUEST, rejection.body_text()).into_response(),
    }
}

/// Fails invocation `id` with `report` (what the caller gets) and answers the runtime
/// with `status` and the same document.
fn fail_invocation(shared: &Shared, id: &str, status: StatusCode, report: ErrorReport) -> Response {
    let answer = report.body.clone();
    let _ = complete(shared, id, Reported::Error(report));
    (status, answer).into_response()
}

/// The report of a posted error document. The type is the body's `errorType`, else the
/// error-type header (awslambdaric sends only the body), else `Unhandled`.
fn error_report(headers: &HeaderMap, body: Bytes) -> ErrorReport {
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let from_header = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok());
    let error_type = doc
        .get("errorType")
        .and_then(|v| v.as_str())
        .filter(|t| !t.is_empty())
        .or(from_header)
        .unwrap_or("Unhandled")
        .to_owned();
    let message = doc
        .get("errorMessage")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    ErrorReport {
        error_type,
        message,
        body,
    }
}

/// The report for an error document the API refused to read (too big, broken).
fn unreadable_error(rejection: &axum::extract::rejection::BytesRejection) -> ErrorReport {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ErrorReport::new(
            "Function.ResponseSizeTooLarge",
            format!(
                "The error document exceeded the maximum allowed size ({MAX_RESPONSE_BYTES} bytes)."
            ),
        )
    } else {
        ErrorReport::new(
            "Runtime.InvalidErrorDocument",
            format!(
                "The error document could not be read: {}",
                rejection.body_text()
            ),
        )
    }
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match body {
        Ok(body) => complete(&shared, &id, Reported::Error(error_report(&headers, body))),
        // The invocation fails now (it must not hang to its deadline); the runtime is
        // told why.
        Err(rejection) => fail_invocation(
            &shared,
            &id,
            rejection.status(),
            unreadable_error(&rejection),
        ),
    }
}

async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let report = match body {
        Ok(body) => error_report(&headers, body),
        Err(rejection) => unreadable_error(&rejection),
    };
    let reported = Reported::InitError(report);
    if let Ok(mut slots) = shared.state.lock() {
        match slots.inflight.take() {
            Some((_, tx)) => {
                let _ = tx.send(reported);
            }
            None => slots.init_error = Some(reported),
        }
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "OK"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(error_type: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = error_type {
            h.insert(
                "lambda-runtime-function-error-type",
                HeaderValue::from_static(t),
            );
        }
        h
    }

    #[test]
    fn error_type_comes_from_the_body_then_the_header_then_unhandled() {
        let body = Bytes::from_static(br#"{"errorType": "KeyError", "errorMessage": "k"}"#);
        let r = error_report(&headers(Some("Unhandled")), body.clone());
        assert_eq!(
            (r.error_type.as_str(), r.message.as_str()),
            ("KeyError", "k")
        );
        assert_eq!(r.body, body, "the document is passed on as posted");
        let r = error_report(&headers(Some("Runtime.Custom")), Bytes::from_static(b"{}"));
        assert_eq!(r.error_type, "Runtime.Custom");
        let r = error_report(&headers(None), Bytes::from_static(b"not json"));
        assert_eq!(r.error_type, "Unhandled");
    }

    /// Fuzzing (bounded, run by the test command): any request to an instance's
    /// Runtime API — any method, path, headers and body — gets an answer, never a
    /// panic, and only the in-flight request id (or an init error) completes the
    /// invocation.
    mod fuzz {
        use super::super::*;
        use axum::body::Body;
        use axum::http::{Method, Request};
        use proptest::prelude::*;
        use tower::ServiceExt;

        const INFLIGHT: &str = "req-1";

        fn path() -> impl Strategy<Value = String> {
            let id = prop_oneof![Just(INFLIGHT.to_owned()), "[a-z0-9%.-]{0,12}"];
            let tail = prop_oneof![
                Just("response".to_owned()),
                Just("error".to_owned()),
                "[a-z/]{0,8}"
            ];
            let prefix = prop_oneof![Just(String::new()), "/[a-z0-9]{1,8}"];
            prop_oneof![
                (prefix.clone(), id, tail)
                    .prop_map(|(p, id, t)| format!("{p}/2018-06-01/runtime/invocation/{id}/{t}")),
                prefix
                    .clone()
                    .prop_map(|p| format!("{p}/2018-06-01/runtime/init/error")),
                "/[ -~&&[^ ?#]]{0,30}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn any_request_is_answered_and_only_the_right_one_completes(
                method in prop::sample::select(vec![Method::GET, Method::POST, Method::PUT, Method::DELETE]),
                path in path(),
                error_type in prop::option::of("[ -~]{0,20}"),
                body in prop::collection::vec(any::<u8>(), 0..128),
            ) {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let (_next_tx, next_rx) = mpsc::channel(1);
                    let (tx, mut rx) = oneshot::channel();
                    let shared = Arc::new(Shared {
                        next: tokio::sync::Mutex::new(next_rx),
                        state: Mutex::new(Slots {
                            inflight: Some((INFLIGHT.to_owned(), tx)),
                            init_error: None,
                        }),
                        services: None,
                    });
                    let app = router(shared.clone());
                    let mut req = Request::builder().method(method.clone()).uri(path.as_str());
                    if let Some(t) = &error_type {
                        req = req.header("lambda-runtime-function-error-type", t.as_str());
                    }
                    let Ok(req) = req.body(Body::from(body)) else {
                        return Ok(()); // not a request hyper would hand over
                    };
                    // `next` long-polls: an answer within a moment, or none, is fine.
                    let answered = tokio::time::timeout(
                        std::time::Duration::from_millis(20),
                        app.oneshot(req),
                    )
                    .await;
                    if let Ok(resp) = answered {
                        prop_assert!(resp.is_ok());
                    }
                    let completed = rx.try_recv().is_ok();
                    let prefixed = path.starts_with("/2018-06-01/");
                    let completes = method == Method::POST
                        && prefixed
                        && (path.ends_with(&format!("/invocation/{INFLIGHT}/response"))
                            || path.ends_with(&format!("/invocation/{INFLIGHT}/error"))
                            || path.ends_with("/runtime/init/error"));
                    prop_assert_eq!(completed, completes, "{} {}", method, path);
                    Ok(())
                })?;
            }
        }
    }
}
