//! The AWS Lambda control API (version 2015-03-31), so boto3, the AWS CLI and other
//! SDKs pointed at `--endpoint-url` manage and invoke functions unchanged. It is a
//! second front door to the same registry: each operation becomes the typed engine
//! call Lambent's own API makes (`DeployRequest`, `invoke`, ...). LAMBDA-COMPAT.md
//! records what the clients send and accept.

mod error;
mod mappings;
mod names;

use crate::ApiState;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use error::{LambdaError, LambdaResult};
use lambent_engine::{DeployRequest, Invocation, InvokeOptions};
use lambent_store::FunctionVersion;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Routes `path` and `path/` alike: SDKs send some paths with a trailing slash.
fn with_slash(
    router: Router<ApiState>,
    path: &str,
    methods: axum::routing::MethodRouter<ApiState>,
) -> Router<ApiState> {
    router
        .route(path, methods.clone())
        .route(&format!("{path}/"), methods)
}

/// The Lambda API's routes (mounted beside Lambent's own on the control listener).
pub fn routes() -> Router<ApiState> {
    let router = Router::new()
        .route(
            "/2015-03-31/functions/{name}",
            get(get_function).delete(delete_function),
        )
        .route(
            "/2015-03-31/functions/{name}/configuration",
            get(get_configuration).put(update_configuration),
        )
        .route("/2015-03-31/functions/{name}/code", put(update_code))
        .route(
            "/2015-03-31/functions/{name}/versions",
            get(list_versions).post(publish_version),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases",
            get(list_aliases).post(create_alias),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases/{alias}",
            get(get_alias).put(update_alias).delete(delete_alias),
        )
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config",
            get(get_invoke_config)
                .put(put_invoke_config)
                .post(put_invoke_config)
                .delete(delete_invoke_config),
        )
        .route(
            "/2015-03-31/event-source-mappings/{uuid}",
            get(mappings::get).delete(mappings::delete),
        )
        .route(
            "/2017-03-31/tags/{arn}",
            get(list_tags).post(tag_resource).delete(untag_resource),
        );
    let router = with_slash(
        router,
        "/2015-03-31/functions",
        get(list_functions).post(create_function),
    );
    let router = with_slash(
        router,
        "/2014-11-13/functions/{name}/invoke-async",
        post(invoke_async),
    );
    let router = with_slash(
        router,
        "/2015-03-31/event-source-mappings",
        get(mappings::list).post(mappings::create),
    );
    with_slash(
        router,
        "/2016-08-19/account-settings",
        get(account_settings),
    )
    .layer(middleware::from_fn(request_id))
}

/// `x-amzn-RequestId` on every answer, as the SDKs expect.
async fn request_id(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Ok(id) = HeaderValue::from_str(&lambent_core::new_id()) {
        response.headers_mut().insert("x-amzn-requestid", id);
    }
    response
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> LambdaResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| LambdaError::unreadable(format!("the request body is not valid: {e}")))
}

/// `2024-05-01T12:00:00.000+0000`, the form Lambda uses.
fn last_modified(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3f+0000")
        .to_string()
}

/// Lambda's `CodeSha256`: the base64 of the package's SHA-256.
fn code_sha256(hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A version as Lambda's `FunctionConfiguration`. `$LATEST` when it is the newest.
fn configuration(f: &FunctionVersion, latest: bool) -> Value {
    let spec = &f.spec;
    let mut c = json!({
        "FunctionName": spec.name,
        "FunctionArn": names::arn(&spec.name),
        "Runtime": spec.runtime.declared(),
        "Role": spec.role.clone().unwrap_or_default(),
        "Handler": spec.handler,
        "CodeSize": f.code_size,
        "Description": spec.description,
        "Timeout": spec.timeout_s,
        "MemorySize": spec.memory_mb,
        "LastModified": last_modified(f.created_ms),
        "CodeSha256": code_sha256(&f.code_sha256),
        "Version": if latest { "$LATEST".to_owned() } else { f.version.to_string() },
        "RevisionId": format!("{}-{}", f.version, &f.code_sha256[..f.code_sha256.len().min(12)]),
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "TracingConfig": {"Mode": "PassThrough"},
    });
    if !spec.env.is_empty() {
        c["Environment"] = json!({"Variables": spec.env});
    }
    c
}

/// The engine's answer for a function (a version when qualified).
async fn version_of(s: &ApiState, q: &names::Qualified) -> LambdaResult<(FunctionVersion, bool)> {
    let latest = s.engine.function(&q.name).await.map_err(|_| {
        LambdaError::not_found(format!("Function not found: {}", names::arn(&q.name)))
    })?;
    let version = match &q.alias {
        Some(alias) => Some(s.engine.alias(&q.name, alias).await?.version),
        None => q.version,
    };
    match version {
        None => Ok((latest, true)),
        Some(v) if v == latest.version => Ok((latest, false)),
        Some(v) => {
            let found = s
                .engine
                .stores()
                .registry
                .get_function(&q.name, Some(v))
                .await
                .map_err(lambent_engine::EngineError::from)?;
            found.map(|f| (f, false)).ok_or_else(|| {
                LambdaError::not_found(format!("Function not found: {}:{v}", names::arn(&q.name)))
            })
        }
    }
}

/// The function a path names (unqualified), which must exist; with its newest version.
async fn existing(s: &ApiState, raw: &str) -> LambdaResult<(String, FunctionVersion)> {
    let q = names::resolve(raw, None)?;
    let (f, _) = version_of(s, &q).await?;
    Ok((q.name, f))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Environment {
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Code {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    s3_key: Option<String>,
    image_uri: Option<String>,
}

/// CreateFunction and UpdateFunctionConfiguration's fields (both optional here; the
/// operation says which it needs).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct FunctionFields {
    function_name: Option<String>,
    runtime: Option<String>,
    role: Option<String>,
    handler: Option<String>,
    description: Option<String>,
    timeout: Option<u32>,
    memory_size: Option<u32>,
    environment: Option<Environment>,
    code: Option<Code>,
    package_type: Option<String>,
    #[serde(default)]
    layers: Vec<String>,
    tags: Option<BTreeMap<String, String>>,
}

impl FunctionFields {
    /// The deploy these fields ask for: what Lambent's own API would send.
    fn deploy(self, name: String) -> LambdaResult<DeployRequest> {
        if self.package_type.as_deref().is_some_and(|p| p != "Zip") {
            return Err(LambdaError::invalid(
                "PackageType Image is not supported by Lambent: deploy a Zip package",
            ));
        }
        if !self.layers.is_empty() {
            return Err(LambdaError::invalid(
                "Layers are not supported by Lambent: include the layer's files in the function's zip",
            ));
        }
        let code_zip = match self.code {
            None => None,
            Some(code) => Some(zip_of(code)?),
        };
        Ok(DeployRequest {
            name,
            runtime: self.runtime,
            handler: self.handler,
            memory_mb: self.memory_size,
            timeout_s: self.timeout,
            env: self.environment.map(|e| e.variables),
            description: self.description,
            role: self.role,
            code_zip,
            ..DeployRequest::default()
        })
    }
}

fn zip_of(code: Code) -> LambdaResult<Vec<u8>> {
    if code.s3_bucket.is_some() || code.s3_key.is_some() {
        return Err(LambdaError::invalid(
            "Code.S3Bucket / S3Key are not supported by Lambent: send the package as Code.ZipFile",
        ));
    }
    if code.image_uri.is_some() {
        return Err(LambdaError::invalid(
            "Code.ImageUri (container images) is not supported by Lambent: send a Zip package as Code.ZipFile",
        ));
    }
    let zip = code
        .zip_file
        .ok_or_else(|| LambdaError::invalid("Code.ZipFile is required"))?;
    base64::engine::general_purpose::STANDARD
        .decode(zip.as_bytes())
        .map_err(|e| LambdaError::invalid(format!("Code.ZipFile is not base64: {e}")))
}

async fn create_function(State(s): State<ApiState>, body: Bytes) -> LambdaResult<Response> {
    let mut fields: FunctionFields = json_body(&body)?;
    let name = fields
        .function_name
        .clone()
        .ok_or_else(|| LambdaError::invalid("FunctionName is required"))?;
    let q = names::resolve(&name, None)?;
    if fields.role.is_none() {
        return Err(LambdaError::invalid("Role is required"));
    }
    if fields.code.is_none() {
        return Err(LambdaError::invalid("Code is required"));
    }
    if s.engine.function(&q.name).await.is_ok() {
        return Err(LambdaError::conflict(format!(
            "Function already exist: {}",
            q.name
        )));
    }
    let tags = fields.tags.take();
    if let Some(tags) = &tags {
        lambent_engine::check_tags(tags)?;
    }
    let deployed = s.engine.deploy(fields.deploy(q.name.clone())?).await?;
    if let Some(tags) = tags {
        s.engine.tag(&q.name, tags, &[]).await?;
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(configuration(&deployed, true)),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Qualifier {
    qualifier: Option<String>,
}

async fn get_function(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<Qualifier>,
) -> LambdaResult<Response> {
    let q = names::resolve(&name, q.qualifier.as_deref())?;
    let (f, latest) = version_of(&s, &q).await?;
    Ok(axum::Json(json!({
        "Configuration": configuration(&f, latest),
        "Code": {"RepositoryType": "Lambent", "Location": ""},
        "Tags": s.engine.tags(&q.name).await?,
        "Concurrency": {"ReservedConcurrentExecutions": f.spec.concurrency},
    }))
    .into_response())
}

async fn get_configuration(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<Qualifier>,
) -> LambdaResult<Response> {
    let q = names::resolve(&name, q.qualifier.as_deref())?;
    let (f, latest) = version_of(&s, &q).await?;
    Ok(axum::Json(configuration(&f, latest)).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListQuery {
    marker: Option<String>,
    max_items: Option<usize>,
}

async fn list_functions(
    State(s): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> LambdaResult<Response> {
    let max = q.max_items.unwrap_or(50).clamp(1, 50);
    let mut functions = s.engine.functions().await?;
    functions.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    // The marker is the last name of the previous page.
    let after = q.marker.unwrap_or_default();
    let page: Vec<&FunctionVersion> = functions
        .iter()
        .filter(|f| f.spec.name.as_str() > after.as_str())
        .take(max + 1)
        .collect();
    let more = page.len() > max;
    let page = &page[..page.len().min(max)];
    let mut answer = json!({
        "Functions": page.iter().map(|f| configuration(f, true)).collect::<Vec<_>>(),
    });
    if more && let Some(last) = page.last() {
        answer["NextMarker"] = json!(last.spec.name);
    }
    Ok(axum::Json(answer).into_response())
}

async fn delete_function(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<Qualifier>,
) -> LambdaResult<Response> {
    let q = names::resolve(&name, q.qualifier.as_deref())?;
    if q.version.is_some() || q.alias.is_some() {
        return Err(LambdaError::invalid(
            "deleting one version is not supported by Lambent; delete the function (or the alias)",
        ));
    }
    s.engine.delete_function(&q.name).await.map_err(|_| {
        LambdaError::not_found(format!("Function not found: {}", names::arn(&q.name)))
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn update_configuration(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> LambdaResult<Response> {
    let (function, _) = existing(&s, &name).await?;
    let mut fields: FunctionFields = json_body(&body)?;
    fields.code = None;
    let deployed = s.engine.deploy(fields.deploy(function)?).await?;
    Ok(axum::Json(configuration(&deployed, true)).into_response())
}

async fn update_code(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> LambdaResult<Response> {
    let (function, _) = existing(&s, &name).await?;
    let code: Code = json_body(&body)?;
    let request = DeployRequest {
        name: function,
        code_zip: Some(zip_of(code)?),
        ..DeployRequest::default()
    };
    let deployed = s.engine.deploy(request).await?;
    Ok(axum::Json(configuration(&deployed, true)).into_response())
}

fn alias_json(a: &lambent_store::Alias) -> Value {
    let mut weights = serde_json::Map::new();
    if let Some((extra, weight)) = a.additional {
        weights.insert(extra.to_string(), json!(weight));
    }
    json!({
        "AliasArn": format!("{}:{}", names::arn(&a.function), a.name),
        "Name": a.name,
        "FunctionVersion": a.version.to_string(),
        "Description": a.description,
        "RoutingConfig": {"AdditionalVersionWeights": weights},
        "RevisionId": format!("{}-{}", a.version, a.additional.map_or(0, |(v, _)| v)),
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RoutingConfig {
    #[serde(default)]
    additional_version_weights: BTreeMap<String, f64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct AliasFields {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<RoutingConfig>,
}

impl AliasFields {
    fn request(self, function: String, name: String) -> LambdaResult<lambent_engine::AliasRequest> {
        let version = match self.function_version.as_deref() {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                LambdaError::invalid(format!(
                    "FunctionVersion `{v}`: an alias points to a version number"
                ))
            })?),
        };
        let additional = match self.routing_config {
            None => None,
            Some(r) => {
                let mut weights = r.additional_version_weights.into_iter();
                let first = weights.next();
                if weights.next().is_some() {
                    return Err(LambdaError::invalid(
                        "RoutingConfig routes to one additional version at most",
                    ));
                }
                Some(match first {
                    None => None,
                    Some((v, w)) => Some((
                        v.parse::<u64>().map_err(|_| {
                            LambdaError::invalid(format!(
                                "AdditionalVersionWeights: `{v}` is not a version"
                            ))
                        })?,
                        w,
                    )),
                })
            }
        };
        Ok(lambent_engine::AliasRequest {
            function,
            name,
            version,
            description: self.description,
            additional,
        })
    }
}

async fn create_alias(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> LambdaResult<Response> {
    let (function, _) = existing(&s, &name).await?;
    let mut fields: AliasFields = json_body(&body)?;
    let alias = fields
        .name
        .take()
        .ok_or_else(|| LambdaError::invalid("Name is required"))?;
    if fields.function_version.is_none() {
        return Err(LambdaError::invalid("FunctionVersion is required"));
    }
    let made = s
        .engine
        .put_alias(fields.request(function, alias)?, true)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(alias_json(&made))).into_response())
}

async fn update_alias(
    State(s): State<ApiState>,
    Path((name, alias)): Path<(String, String)>,
    body: Bytes,
) -> LambdaResult<Response> {
    let (function, _) = existing(&s, &name).await?;
    let fields: AliasFields = json_body(&body)?;
    let changed = s
        .engine
        .put_alias(fields.request(function, alias)?, false)
        .await?;
    Ok(axum::Json(alias_json(&changed)).into_response())
}

async fn get_alias(
    State(s): State<ApiState>,
    Path((name, alias)): Path<(String, String)>,
) -> LambdaResult<Response> {
    let (function, _) = existing(&s, &name).await?;
    Ok(axum::Json(alias_json(&s.engine.alias(&function, &alias).await?)).into_response())
}

async fn list_aliases(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> LambdaResult<Response> {
    let (function, _) = existing(&s, &name).await?;
    let aliases = s.engine.aliases(&function).await?;
    Ok(
        axum::Json(json!({"Aliases": aliases.iter().map(alias_json).collect::<Vec<_>>()}))
            .into_response(),
    )
}

async fn delete_alias(
    State(s): State<ApiState>,
    Path((name, alias)): Path<(String, String)>,
) -> LambdaResult<Response> {
    let (function, _) = existing(&s, &name).await?;
    s.engine.delete_alias(&function, &alias).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A function's asynchronous-invocation settings as Lambda shows them.
fn invoke_config(f: &FunctionVersion) -> Value {
    let on_failure = match &f.spec.on_failure {
        Some(dest) => json!({"Destination": names::arn(dest)}),
        None => json!({}),
    };
    json!({
        "FunctionArn": format!("{}:$LATEST", names::arn(&f.spec.name)),
        "MaximumRetryAttempts": f.spec.retry.max_attempts.saturating_sub(1),
        "MaximumEventAgeInSeconds": f.spec.retry.max_event_age_s,
        "LastModified": f.created_ms as f64 / 1000.0,
        "DestinationConfig": {"OnSuccess": {}, "OnFailure": on_failure},
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Destination {
    destination: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct DestinationConfig {
    on_success: Option<Destination>,
    on_failure: Option<Destination>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InvokeConfigFields {
    maximum_retry_attempts: Option<u32>,
    maximum_event_age_in_seconds: Option<u64>,
    destination_config: Option<DestinationConfig>,
}

/// A destination ARN as the function it names (only Lambda functions are supported).
fn destination_function(arn: &str) -> LambdaResult<String> {
    if !arn.contains(":lambda:") && arn.starts_with("arn:") {
        return Err(LambdaError::invalid(format!(
            "destination `{arn}`: Lambent delivers failure records to Lambda functions only (SQS, SNS and EventBridge destinations are not supported); the dead-letter list keeps every failure"
        )));
    }
    Ok(names::resolve(arn, None)?.name)
}

/// PutFunctionEventInvokeConfig (PUT replaces, POST updates: here both set what
/// they name and keep the rest).
async fn put_invoke_config(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> LambdaResult<Response> {
    let (function, _) = existing(&s, &name).await?;
    let fields: InvokeConfigFields = json_body(&body)?;
    if let Some(n) = fields.maximum_retry_attempts.filter(|n| *n > 2) {
        return Err(LambdaError::invalid(format!(
            "MaximumRetryAttempts must be between 0 and 2, got {n}"
        )));
    }
    if let Some(age) = fields
        .maximum_event_age_in_seconds
        .filter(|a| !(60..=21_600).contains(a))
    {
        return Err(LambdaError::invalid(format!(
            "MaximumEventAgeInSeconds must be between 60 and 21600, got {age}"
        )));
    }
    let destinations = fields.destination_config.unwrap_or_default();
    if destinations
        .on_success
        .as_ref()
        .is_some_and(|d| d.destination.is_some())
    {
        return Err(LambdaError::invalid(
            "OnSuccess destinations are not supported by Lambent",
        ));
    }
    let on_failure = match destinations.on_failure.and_then(|d| d.destination) {
        Some(arn) => Some(destination_function(&arn)?),
        None => Some(String::new()),
    };
    let request = DeployRequest {
        name: function,
        max_attempts: fields.maximum_retry_attempts.map(|n| n + 1),
        max_event_age_s: fields.maximum_event_age_in_seconds,
        on_failure,
        ..DeployRequest::default()
    };
    let deployed = s.engine.deploy(request).await?;
    Ok(axum::Json(invoke_config(&deployed)).into_response())
}

async fn get_invoke_config(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> LambdaResult<Response> {
    let (_, f) = existing(&s, &name).await?;
    Ok(axum::Json(invoke_config(&f)).into_response())
}

async fn delete_invoke_config(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> LambdaResult<Response> {
    let (function, _) = existing(&s, &name).await?;
    let defaults = lambent_core::RetryPolicy::default();
    let request = DeployRequest {
        name: function,
        max_attempts: Some(defaults.max_attempts),
        max_event_age_s: Some(defaults.max_event_age_s),
        on_failure: Some(String::new()),
        ..DeployRequest::default()
    };
    s.engine.deploy(request).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagBody {
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

async fn list_tags(State(s): State<ApiState>, Path(arn): Path<String>) -> LambdaResult<Response> {
    let q = names::resolve(&arn, None)?;
    Ok(axum::Json(json!({"Tags": s.engine.tags(&q.name).await?})).into_response())
}

async fn tag_resource(
    State(s): State<ApiState>,
    Path(arn): Path<String>,
    body: Bytes,
) -> LambdaResult<Response> {
    let q = names::resolve(&arn, None)?;
    let body: TagBody = json_body(&body)?;
    s.engine.tag(&q.name, body.tags, &[]).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `?tagKeys=a&tagKeys=b`.
async fn untag_resource(
    State(s): State<ApiState>,
    Path(arn): Path<String>,
    uri: axum::http::Uri,
) -> LambdaResult<Response> {
    let q = names::resolve(&arn, None)?;
    let keys: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("tagKeys="))
        .map(|k| lambent_core::percent::decode(k, true))
        .collect();
    s.engine.tag(&q.name, BTreeMap::new(), &keys).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Every deploy that changes something is already an immutable version: publishing
/// names the newest one.
async fn publish_version(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> LambdaResult<Response> {
    let (_, f) = existing(&s, &name).await?;
    Ok((StatusCode::CREATED, axum::Json(configuration(&f, false))).into_response())
}

async fn list_versions(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> LambdaResult<Response> {
    let (function, latest) = existing(&s, &name).await?;
    let versions = s
        .engine
        .stores()
        .registry
        .list_versions(&function)
        .await
        .map_err(lambent_engine::EngineError::from)?;
    let mut listed = vec![configuration(&latest, true)];
    listed.extend(versions.iter().map(|f| configuration(f, false)));
    Ok(axum::Json(json!({ "Versions": listed })).into_response())
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The fields a mobile client context must have for the Rust runtime client (it exits
/// the whole process on a context without them).
const CLIENT_FIELDS: &[&str] = &[
    "installationId",
    "appTitle",
    "appVersionName",
    "appVersionCode",
    "appPackageName",
];

/// `X-Amz-Client-Context`: base64 of a JSON object, or refused. It is handed to the
/// function only when its `client` part is complete (LAMBDA-COMPAT.md: a partial one
/// makes the `lambda_runtime` crate exit); otherwise it is left out.
fn client_context(headers: &HeaderMap) -> LambdaResult<Option<String>> {
    let Some(raw) = header(headers, "x-amz-client-context") else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw.as_bytes())
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(Value::is_object)
        .ok_or_else(|| {
            LambdaError::invalid("X-Amz-Client-Context must be base64-encoded JSON object")
        })?;
    let complete = CLIENT_FIELDS
        .iter()
        .all(|f| decoded["client"][*f].is_string());
    Ok(complete.then(|| decoded.to_string()))
}

async fn invoke(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<Qualifier>,
    headers: HeaderMap,
    body: Bytes,
) -> LambdaResult<Response> {
    let q = names::resolve(&name, q.qualifier.as_deref())?;
    // An alias picks the version of each call (weighted between two, if it says so).
    let version = match &q.alias {
        Some(alias) => Some(s.engine.route_alias(&q.name, alias).await?),
        None => q.version,
    };
    let options = InvokeOptions {
        traceparent: header(&headers, "traceparent"),
        client_context: client_context(&headers)?,
        version,
        idempotency_key: header(&headers, "amz-sdk-invocation-id"),
        ..InvokeOptions::default()
    };
    match header(&headers, "x-amz-invocation-type").as_deref() {
        None | Some("RequestResponse") => {}
        Some("Event") => {
            // Checks the function and the version, and keeps the version to run.
            s.engine.invoke_async(&q.name, body, options).await?;
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        Some("DryRun") => {
            version_of(&s, &q).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Some(other) => {
            return Err(LambdaError::invalid(format!(
                "X-Amz-Invocation-Type `{other}`: use RequestResponse, Event or DryRun"
            )));
        }
    }
    // The engine answers a missing function or version (404) itself: no second
    // registry read on the invoke path.
    let Invocation { record, payload } = s.engine.invoke(&q.name, body, options).await?;
    let mut out = HeaderMap::new();
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            out.insert(k, v);
        }
    };
    set("x-amz-executed-version", record.version.to_string());
    if !record.outcome.is_success() {
        set("x-amz-function-error", "Unhandled".into());
    }
    if header(&headers, "x-amz-log-type").as_deref() == Some("Tail") {
        let tail = &record.logs.as_bytes()[record.logs.len().saturating_sub(4096)..];
        set(
            "x-amz-log-result",
            base64::engine::general_purpose::STANDARD.encode(tail),
        );
    }
    Ok((StatusCode::OK, out, payload).into_response())
}

async fn invoke_async(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> LambdaResult<Response> {
    let (function, _) = existing(&s, &name).await?;
    s.engine
        .invoke_async(&function, body, InvokeOptions::default())
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"Status": 202}))).into_response())
}

async fn account_settings(State(s): State<ApiState>) -> LambdaResult<Response> {
    let functions = s.engine.functions().await?;
    let code: u64 = functions.iter().map(|f| f.code_size).sum();
    Ok(axum::Json(json!({
        "AccountLimit": {
            "TotalCodeSize": 80_530_636_800u64,
            "CodeSizeUnzipped": 262_144_000,
            "CodeSizeZipped": 52_428_800,
            "ConcurrentExecutions": 1000,
            "UnreservedConcurrentExecutions": 1000,
        },
        "AccountUsage": {"TotalCodeSize": code, "FunctionCount": functions.len()},
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn with_context(json: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode(json);
        h.insert(
            "x-amz-client-context",
            HeaderValue::from_str(&encoded).unwrap(),
        );
        h
    }

    #[test]
    fn a_client_context_is_passed_only_when_complete() {
        let complete = r#"{"client": {"installationId": "i", "appTitle": "t", "appVersionName": "n",
            "appVersionCode": "c", "appPackageName": "p"}, "custom": {"k": "v"}}"#;
        assert!(client_context(&with_context(complete)).unwrap().is_some());
        let partial = r#"{"client": {"appTitle": "t"}, "custom": {"k": "v"}}"#;
        assert_eq!(client_context(&with_context(partial)).unwrap(), None);
        assert!(client_context(&with_context("[1, 2]")).is_err());
        assert_eq!(client_context(&HeaderMap::new()).unwrap(), None);
        assert!(code_sha256("00ff").starts_with("AP8"));
    }
}
