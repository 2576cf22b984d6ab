//! The node's services on an instance's own endpoint, beside the Runtime API:
//! `/lambent/v1/kv/NS[/KEY]` and `/lambent/v1/events`, for the bootstraps' `lambent`
//! module. Each request carries the instance's token (`LAMBENT_API_TOKEN`, fresh per
//! instance); what it may do is decided by the node from the function's grants.

use crate::api::Shared;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lambent_core::FunctionSpec;
use lambent_runtime::host::{Host, HostRequest, HostResponse};
use serde::Deserialize;
use std::sync::Arc;

/// What an instance's endpoint needs to serve the node's services.
pub struct Services {
    pub host: Host,
    pub spec: FunctionSpec,
    /// The bearer token the instance was given.
    pub token: String,
}

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/lambent/v1/events", post(publish))
        .route("/lambent/v1/kv/{namespace}", get(list))
        .route(
            "/lambent/v1/kv/{namespace}/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
}

fn render(answer: HostResponse) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(answer.body)).into_response()
}

/// Serves `request` if the caller holds the instance's token.
async fn call(shared: &Shared, headers: &HeaderMap, request: HostRequest) -> Response {
    let Some(services) = &shared.services else {
        return render(HostResponse::error(
            404,
            "not_found",
            "this runtime offers no node services",
        ));
    };
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(services.token.as_str()) {
        return render(HostResponse::error(
            401,
            "unauthorized",
            "send the instance's LAMBENT_API_TOKEN as a bearer token",
        ));
    }
    render(services.host.0.call(&services.spec, request).await)
}

#[derive(Deserialize)]
struct WriteOptions {
    ttl: Option<u64>,
    if_revision: Option<u64>,
}

#[derive(Deserialize)]
struct ListOptions {
    #[serde(default)]
    prefix: String,
}

fn json_body(body: &Bytes) -> Result<serde_json::Value, HostResponse> {
    serde_json::from_slice(body)
        .map_err(|e| HostResponse::error(400, "bad_request", format!("the body must be JSON: {e}")))
}

async fn get_key(
    State(shared): State<Arc<Shared>>,
    Path((namespace, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    call(&shared, &headers, HostRequest::KvGet { namespace, key }).await
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Path(namespace): Path<String>,
    Query(options): Query<ListOptions>,
    headers: HeaderMap,
) -> Response {
    let request = HostRequest::KvList {
        namespace,
        prefix: options.prefix,
    };
    call(&shared, &headers, request).await
}

async fn put_key(
    State(shared): State<Arc<Shared>>,
    Path((namespace, key)): Path<(String, String)>,
    Query(options): Query<WriteOptions>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let value = match json_body(&body) {
        Ok(v) => v,
        Err(refused) => return render(refused),
    };
    let request = HostRequest::KvWrite {
        namespace,
        key,
        value: Some(value),
        ttl_s: options.ttl,
        if_revision: options.if_revision,
    };
    call(&shared, &headers, request).await
}

async fn delete_key(
    State(shared): State<Arc<Shared>>,
    Path((namespace, key)): Path<(String, String)>,
    Query(options): Query<WriteOptions>,
    headers: HeaderMap,
) -> Response {
    let request = HostRequest::KvWrite {
        namespace,
        key,
        value: None,
        ttl_s: None,
        if_revision: options.if_revision,
    };
    call(&shared, &headers, request).await
}

async fn publish(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let event = match json_body(&body) {
        Ok(v) => v,
        Err(refused) => return render(refused),
    };
    call(&shared, &headers, HostRequest::Publish { event }).await
}
