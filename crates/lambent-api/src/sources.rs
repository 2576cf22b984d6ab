//! Control API of the sources: schedules, routes, the key-value store.

use crate::ApiState;
use crate::error::{ApiError, ApiResult, body_error, parse_json};
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bytes::Bytes;
use lambent_core::source::SourceSpec;
use lambent_core::{RouteSpec, ScheduleSpec};
use lambent_engine::KvRequest;
use lambent_store::{KvNamespace, ms_to_rfc3339};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

fn small_body(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|r| body_error(r, crate::MAX_SMALL_BODY))
}

pub async fn list_schedules(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let schedules: Vec<Value> = s
        .engine
        .schedules()
        .await?
        .into_iter()
        .map(|r| {
            let next = r.spec.timer().ok().and_then(|t| {
                let after = r.last_nominal_ms.unwrap_or(r.anchor_ms).max(r.anchor_ms);
                t.next_after(r.anchor_ms, after.max(s.engine.config().clock.now_ms()))
            });
            let mut v = json!(r.spec);
            v["fired"] = json!(r.fired);
            v["last_fired"] = json!(r.last_nominal_ms.map(ms_to_rfc3339));
            v["next"] = json!(next.map(ms_to_rfc3339));
            v
        })
        .collect();
    Ok(Json(json!({ "schedules": schedules })))
}

pub async fn put_schedule(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let spec: ScheduleSpec = parse_json(&small_body(body)?)?;
    let record = s.engine.put_schedule(spec).await?;
    Ok((StatusCode::CREATED, Json(json!(record.spec))))
}

pub async fn delete_schedule(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine.delete_schedule(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_routes(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "routes": s.engine.routes().await? })))
}

pub async fn put_route(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let spec: RouteSpec = parse_json(&small_body(body)?)?;
    let route = s.engine.put_route(spec).await?;
    Ok((StatusCode::CREATED, Json(json!(route))))
}

#[derive(Deserialize)]
pub struct RouteKey {
    method: String,
    path: String,
}

pub async fn delete_route(
    State(s): State<ApiState>,
    Query(key): Query<RouteKey>,
) -> ApiResult<StatusCode> {
    s.engine.delete_route(&key.method, &key.path).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_namespaces(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "namespaces": s.engine.kv_namespaces().await? }),
    ))
}

pub async fn put_namespace(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let namespace: KvNamespace = parse_json(&small_body(body)?)?;
    s.engine.put_kv_namespace(namespace.clone()).await?;
    Ok((StatusCode::CREATED, Json(json!(namespace))))
}

#[derive(Deserialize)]
pub struct ListKeys {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn list_keys(
    State(s): State<ApiState>,
    Path(namespace): Path<String>,
    Query(q): Query<ListKeys>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(100);
    let keys = s
        .engine
        .kv_list(&namespace, &q.prefix, q.after.as_deref(), limit)
        .await?;
    let next_after = (keys.len() >= limit.clamp(1, 1000))
        .then(|| keys.last().map(|k| k.key.clone()))
        .flatten();
    Ok(Json(json!({ "keys": keys, "next_after": next_after })))
}

pub async fn get_key(
    State(s): State<ApiState>,
    Path((namespace, key)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(s.engine.kv_get(&namespace, &key).await?)))
}

#[derive(Deserialize)]
pub struct WriteOptions {
    /// Seconds to live.
    ttl: Option<u64>,
    /// Compare-and-swap: the revision the key must be at (0: absent).
    if_revision: Option<u64>,
}

pub async fn put_key(
    State(s): State<ApiState>,
    Path((namespace, key)): Path<(String, String)>,
    Query(options): Query<WriteOptions>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body = small_body(body)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body must be the value as JSON: {e}")))?;
    let written = s
        .engine
        .kv_write(KvRequest {
            namespace,
            key,
            value: Some(value),
            ttl: options.ttl.map(Duration::from_secs),
            expect_revision: options.if_revision,
        })
        .await?;
    Ok(Json(json!(written)))
}

pub async fn delete_key(
    State(s): State<ApiState>,
    Path((namespace, key)): Path<(String, String)>,
    Query(options): Query<WriteOptions>,
) -> ApiResult<Json<Value>> {
    let written = s
        .engine
        .kv_write(KvRequest {
            namespace,
            key,
            value: None,
            ttl: None,
            expect_revision: options.if_revision,
        })
        .await?;
    Ok(Json(json!(written)))
}

pub async fn list_sources(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let statuses = s.engine.source_statuses();
    let sources: Vec<Value> = s
        .engine
        .sources()
        .await?
        .into_iter()
        .map(|spec| {
            let mut v = json!(spec);
            v["status"] = json!(
                statuses
                    .get(&spec.name)
                    .cloned()
                    .unwrap_or_else(|| "starting".into())
            );
            v
        })
        .collect();
    Ok(Json(json!({ "sources": sources })))
}

pub async fn put_source(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let spec: SourceSpec = parse_json(&small_body(body)?)?;
    let spec = s.engine.put_source(spec).await?;
    Ok((StatusCode::CREATED, Json(json!(spec))))
}

pub async fn delete_source(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine.delete_source(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
