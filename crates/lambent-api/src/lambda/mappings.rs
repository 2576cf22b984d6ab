//! Event source mappings for Lambent's own sources. An `EventSourceArn` names one:
//!
//! - `arn:lambent:source:::NAME` — a configured broker or database source
//!   (`lambent sources add NAME ...`: NATS, JetStream, MQTT, PostgreSQL);
//! - `arn:lambent:kv:::NAMESPACE` — the changes of a key-value namespace;
//! - `arn:lambent:schedule:::NAME` — a schedule's firings.
//!
//! A mapping is a rule sending that source's events to the function (the rule is named
//! `esm-UUID`), so it shows in `lambent rules ls` too.

use super::error::{LambdaError, LambdaResult};
use super::names;
use crate::ApiState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lambent_engine::RuleRequest;
use lambent_store::Rule;
use serde::Deserialize;
use serde_json::{Value, json};

const PREFIX: &str = "esm-";

/// The CloudEvents `source` of the events an ARN names.
async fn event_source(s: &ApiState, arn: &str) -> LambdaResult<String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ["arn", "lambent", kind, _, _, name] = parts.as_slice() else {
        return Err(LambdaError::invalid(format!(
            "EventSourceArn `{arn}`: Lambent maps its own sources: arn:lambent:source:::NAME, arn:lambent:kv:::NAMESPACE or arn:lambent:schedule:::NAME"
        )));
    };
    match *kind {
        "source" => {
            let sources = s.engine.sources().await?;
            let spec = sources
                .iter()
                .find(|spec| spec.name == *name)
                .ok_or_else(|| {
                    LambdaError::not_found(format!(
                        "source `{name}` not found (add it with `lambent sources add`)"
                    ))
                })?;
            let kind = serde_json::to_value(spec.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            Ok(format!("lambent/{kind}/{name}"))
        }
        "kv" => {
            lambent_core::kv::validate_namespace(name)
                .map_err(|e| LambdaError::invalid(e.to_string()))?;
            Ok(format!("lambent/kv/{name}"))
        }
        "schedule" => Ok(lambent_engine::schedules::SCHEDULE_SOURCE.to_owned()),
        other => Err(LambdaError::invalid(format!(
            "EventSourceArn `{arn}`: unknown kind `{other}` (source, kv or schedule)"
        ))),
    }
}

/// The ARN a mapping's rule was made from, read back from its pattern.
fn arn_of(rule: &Rule) -> String {
    let source = rule.pattern["source"][0].as_str().unwrap_or_default();
    if source == lambent_engine::schedules::SCHEDULE_SOURCE {
        let name = rule.pattern["subject"][0].as_str().unwrap_or_default();
        return format!("arn:lambent:schedule:::{name}");
    }
    match source
        .strip_prefix("lambent/")
        .and_then(|s| s.split_once('/'))
    {
        Some(("kv", ns)) => format!("arn:lambent:kv:::{ns}"),
        Some((_, name)) => format!("arn:lambent:source:::{name}"),
        None => String::new(),
    }
}

fn mapping_json(rule: &Rule) -> Value {
    let uuid = rule.name.trim_start_matches(PREFIX);
    let arn = arn_of(rule);
    json!({
        "UUID": uuid,
        "EventSourceArn": arn,
        "FunctionArn": rule.targets.first().map(|t| names::arn(t)).unwrap_or_default(),
        "State": "Enabled",
        "StateTransitionReason": "USER_INITIATED",
        "BatchSize": 1,
        "LastProcessingResult": "No records processed",
    })
}

/// The rule behind a mapping: the source's events (and, for a schedule, that
/// schedule's: its name is their subject).
fn pattern(source: &str, arn: &str) -> Value {
    let mut p = json!({"source": [source]});
    if source == lambent_engine::schedules::SCHEDULE_SOURCE
        && let Some(name) = arn.rsplit(':').next()
    {
        p["subject"] = json!([name]);
    }
    p
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateMapping {
    function_name: Option<String>,
    event_source_arn: Option<String>,
    enabled: Option<bool>,
}

pub async fn create(State(s): State<ApiState>, body: Bytes) -> LambdaResult<Response> {
    let request: CreateMapping = super::json_body(&body)?;
    let function = request
        .function_name
        .ok_or_else(|| LambdaError::invalid("FunctionName is required"))?;
    let arn = request
        .event_source_arn
        .ok_or_else(|| LambdaError::invalid("EventSourceArn is required"))?;
    if request.enabled == Some(false) {
        return Err(LambdaError::invalid(
            "disabled mappings are not supported by Lambent: create it when it should run",
        ));
    }
    let q = names::resolve(&function, None)?;
    let source = event_source(&s, &arn).await?;
    let uuid = uuid::Uuid::new_v4().to_string();
    let rule = s
        .engine
        .put_rule(RuleRequest {
            name: format!("{PREFIX}{uuid}"),
            pattern: pattern(&source, &arn),
            targets: vec![q.name],
        })
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(mapping_json(&rule))).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListQuery {
    function_name: Option<String>,
    event_source_arn: Option<String>,
}

async fn mappings(s: &ApiState) -> LambdaResult<Vec<Rule>> {
    Ok(s.engine
        .rules()
        .await?
        .into_iter()
        .filter(|r| r.name.starts_with(PREFIX))
        .collect())
}

pub async fn list(State(s): State<ApiState>, Query(q): Query<ListQuery>) -> LambdaResult<Response> {
    let function = match &q.function_name {
        Some(f) => Some(names::resolve(f, None)?.name),
        None => None,
    };
    let listed: Vec<Value> = mappings(&s)
        .await?
        .iter()
        .filter(|r| function.as_ref().is_none_or(|f| r.targets.contains(f)))
        .map(mapping_json)
        .filter(|m| {
            q.event_source_arn
                .as_ref()
                .is_none_or(|arn| m["EventSourceArn"] == arn.as_str())
        })
        .collect();
    Ok(axum::Json(json!({"EventSourceMappings": listed})).into_response())
}

async fn find(s: &ApiState, uuid: &str) -> LambdaResult<Rule> {
    mappings(s)
        .await?
        .into_iter()
        .find(|r| r.name == format!("{PREFIX}{uuid}"))
        .ok_or_else(|| LambdaError::not_found(format!("event source mapping {uuid} not found")))
}

pub async fn get(State(s): State<ApiState>, Path(uuid): Path<String>) -> LambdaResult<Response> {
    Ok(axum::Json(mapping_json(&find(&s, &uuid).await?)).into_response())
}

pub async fn delete(State(s): State<ApiState>, Path(uuid): Path<String>) -> LambdaResult<Response> {
    let rule = find(&s, &uuid).await?;
    s.engine.delete_rule(&rule.name).await?;
    let mut gone = mapping_json(&rule);
    gone["State"] = json!("Deleting");
    Ok((StatusCode::ACCEPTED, axum::Json(gone)).into_response())
}
