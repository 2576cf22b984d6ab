//! Request handlers: parse, call the engine, render.

use crate::error::{ApiError, ApiResult, body_error, parse_json};
use crate::{ApiState, MAX_DEPLOY_BODY, cloudevents};
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use lambent_engine::{DeployRequest, InvokeOptions, RuleRequest};
use lambent_store::{InvocationQuery, Redrive, ms_to_rfc3339};
use serde::Deserialize;
use serde_json::{Value, json};

/// `ok`, or 503 naming what stopped (the store's writer, the dispatcher).
pub async fn healthz(State(s): State<ApiState>) -> Result<&'static str, ApiError> {
    s.engine
        .health()
        .map(|()| "ok")
        .map_err(ApiError::unavailable)
}

pub async fn fallback() -> ApiError {
    ApiError::not_found("no such API path")
}

fn function_json(f: &lambent_store::FunctionVersion) -> Value {
    json!({
        "name": f.spec.name,
        "version": f.version,
        "runtime": f.spec.runtime.declared(),
        "handler": f.spec.handler,
        "memory_mb": f.spec.memory_mb,
        "timeout_s": f.spec.timeout_s,
        "concurrency": f.spec.concurrency,
        "env": f.spec.env,
        "retry": f.spec.retry,
        "description": f.spec.description,
        "code_sha256": f.code_sha256,
        "code_size": f.code_size,
        "last_modified": ms_to_rfc3339(f.created_ms),
    })
}

pub async fn list_functions(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let functions = s.engine.functions().await?;
    Ok(Json(
        json!({"functions": functions.iter().map(function_json).collect::<Vec<_>>()}),
    ))
}

pub async fn get_function(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(function_json(&s.engine.function(&name).await?)))
}

/// The deploy body: the configuration plus the code as a base64 zip.
#[derive(Deserialize)]
struct DeployBody {
    #[serde(flatten)]
    request: DeployRequest,
    code_zip_base64: Option<String>,
}

async fn do_deploy(
    s: ApiState,
    name: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body.map_err(|r| body_error(r, MAX_DEPLOY_BODY))?;
    let parsed: DeployBody = parse_json(&body)?;
    let mut request = parsed.request;
    if let Some(name) = name {
        request.name = name;
    }
    if let Some(code) = parsed.code_zip_base64 {
        request.code_zip = Some(
            base64::engine::general_purpose::STANDARD
                .decode(code.trim())
                .map_err(|e| {
                    ApiError::bad_request(format!("code_zip_base64 is not valid base64: {e}"))
                })?,
        );
    }
    let version = s.engine.deploy(request).await?;
    Ok((StatusCode::CREATED, Json(function_json(&version))).into_response())
}

pub async fn deploy(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    do_deploy(s, None, body).await
}

pub async fn deploy_named(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    do_deploy(s, Some(name), body).await
}

pub async fn delete_function(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine.delete_function(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct InvokeQuery {
    #[serde(default, rename = "async")]
    is_async: bool,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Synchronous: the function's answer is the body; a function error is still 200,
/// flagged by `x-lambent-function-error` (as Lambda does). `?async=true`: 202 once queued.
pub async fn invoke(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<InvokeQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body.map_err(|r| body_error(r, s.engine.config().max_sync_payload_bytes))?;
    let options = InvokeOptions {
        traceparent: header(&headers, "traceparent"),
        ..InvokeOptions::default()
    };
    if q.is_async {
        let id = s.engine.invoke_async(&name, body, options).await?;
        return Ok((StatusCode::ACCEPTED, Json(json!({"event_id": id}))).into_response());
    }
    let lambent_engine::Invocation {
        record: inv,
        payload,
    } = s.engine.invoke(&name, body, options).await?;
    let mut out = HeaderMap::new();
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            out.insert(k, v);
        }
    };
    set("content-type", "application/json".into());
    set("x-lambent-request-id", inv.request_id.clone());
    set("x-lambent-executed-version", inv.version.to_string());
    set("x-lambent-outcome", inv.outcome.as_str().into());
    set("x-lambent-cold-start", inv.cold.to_string());
    if !inv.outcome.is_success() {
        set("x-lambent-function-error", "Unhandled".into());
    }
    let tail = &inv.logs.as_bytes()[inv.logs.len().saturating_sub(4096)..];
    set(
        "x-lambent-log-result",
        base64::engine::general_purpose::STANDARD.encode(tail),
    );
    Ok((StatusCode::OK, out, payload).into_response())
}

pub async fn publish(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let limit = crate::MAX_EVENTS_BODY.max(s.engine.config().max_event_bytes);
    let body = body.map_err(|r| body_error(r, limit))?;
    let events = cloudevents::parse(&headers, &body)?;
    let results = s.engine.publish(events).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        published(&results),
    )
        .into_response())
}

/// The answer to a publish, `{"results": [...]}`, written directly (serde's writer,
/// and before it a `serde_json::Value`, showed in the profiles of ingest).
fn published(results: &[lambent_engine::PublishResult]) -> String {
    let mut out = String::with_capacity(16 + results.len() * 96);
    out.push_str("{\"results\":[");
    for (i, result) in results.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        result.write_json(&mut out);
    }
    out.push_str("]}");
    out
}

#[derive(Deserialize)]
pub struct EventLookup {
    source: String,
    id: String,
}

pub async fn get_event(
    State(s): State<ApiState>,
    Query(q): Query<EventLookup>,
) -> ApiResult<Json<Value>> {
    let e = s.engine.event(&q.source, &q.id).await?;
    Ok(Json(
        json!({"seq": e.seq, "received": ms_to_rfc3339(e.received_ms), "event": e.event}),
    ))
}

pub async fn list_rules(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({"rules": s.engine.rules().await?})))
}

pub async fn put_rule(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body.map_err(|r| body_error(r, crate::MAX_SMALL_BODY))?;
    let request: RuleRequest = parse_json(&body)?;
    let rule = s.engine.put_rule(request).await?;
    Ok((StatusCode::CREATED, Json(json!(rule))).into_response())
}

pub async fn delete_rule(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine.delete_rule(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct InvocationsQuery {
    function: Option<String>,
    #[serde(default)]
    after: i64,
    limit: Option<usize>,
    #[serde(default)]
    tail: bool,
}

pub async fn invocations(
    State(s): State<ApiState>,
    Query(q): Query<InvocationsQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_INVOCATIONS_PAGE);
    let records = s
        .engine
        .invocations(InvocationQuery {
            function: q.function,
            after_seq: q.after,
            limit,
            tail: q.tail,
            max_bytes: MAX_INVOCATIONS_PAGE_LOG_BYTES,
        })
        .await?;
    // Where the next page starts (an empty page means the end was reached).
    let next_after = (!q.tail && !records.is_empty())
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    let rows: Vec<Value> = records
        .into_iter()
        .map(|r| {
            let mut v = json!(r);
            v["started"] = json!(ms_to_rfc3339(r.started_ms));
            v
        })
        .collect();
    Ok(Json(json!({"invocations": rows, "next_after": next_after})))
}

/// Most invocations in one page, and about how many bytes of their logs.
pub const MAX_INVOCATIONS_PAGE: usize = 1000;
pub const MAX_INVOCATIONS_PAGE_LOG_BYTES: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
pub struct DlqQuery {
    function: Option<String>,
    limit: Option<usize>,
}

pub async fn dead_letters(
    State(s): State<ApiState>,
    Query(q): Query<DlqQuery>,
) -> ApiResult<Json<Value>> {
    let letters = s
        .engine
        .dead_letters(q.function.as_deref(), q.limit.unwrap_or(100).min(10_000))
        .await?;
    Ok(Json(json!({"dead_letters": letters})))
}

#[derive(Deserialize)]
struct RedriveBody {
    #[serde(default)]
    ids: Vec<i64>,
    #[serde(default)]
    all: bool,
    function: Option<String>,
}

pub async fn redrive(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body = body.map_err(|r| body_error(r, crate::MAX_SMALL_BODY))?;
    let req: RedriveBody = parse_json(&body)?;
    let which = match (req.all, req.ids.is_empty()) {
        (true, true) => Redrive::All {
            function: req.function,
        },
        (false, false) => Redrive::Ids(req.ids),
        _ => return Err(ApiError::bad_request("give either `ids` or `all: true`")),
    };
    let n = s.engine.redrive(which).await?;
    Ok(Json(json!({"redriven": n})))
}

pub async fn metrics(State(s): State<ApiState>) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let deliveries = s.engine.delivery_counts().await?;
    let text = crate::metrics::render(
        &s.engine.pool_status(),
        &s.engine.memory_status(),
        &deliveries,
        s.engine.write_stats(),
    )
    .map_err(|e| lambent_engine::EngineError::Internal(format!("encoding metrics: {e}")))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

pub async fn status(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let counts = s.engine.delivery_counts().await?;
    Ok(Json(json!({
        "deliveries": counts.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "warm_instances": s.engine.warm_instances().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "keep_alive": s.engine.keep_alive_policy(),
        "pools": s.engine.pool_status(),
        "memory": s.engine.memory_status(),
        "isolation": s.node.isolation,
        "sources": s.engine.source_statuses(),
        "store": s.engine.write_stats(),
        "limits": &*s.node,
    })))
}

#[derive(Deserialize)]
pub struct CreateToken {
    scope: String,
    #[serde(default)]
    name: String,
}

pub async fn create_token(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = body.map_err(|r| body_error(r, crate::MAX_SMALL_BODY))?;
    let req: CreateToken = parse_json(&body)?;
    let scope = lambent_store::TokenScope::parse(&req.scope).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown scope `{}`: use admin, publish, invoke or read",
            req.scope
        ))
    })?;
    let (record, secret) = s.engine.create_token(&req.name, scope).await?;
    let mut body = json!(record);
    body["token"] = Value::from(secret);
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list_tokens(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "tokens": s.engine.list_tokens().await? })))
}

pub async fn revoke_token(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine.revoke_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
