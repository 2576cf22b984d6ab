//! Lambent's control API: JSON over HTTP, the CLI's only way in. Handlers parse the
//! request into a typed call on the [`Engine`] and render its answer; nothing else.

mod auth;
pub mod cloudevents;
pub mod dataplane;
mod error;
mod handlers;
pub mod lambda;
mod metrics;
mod sources;

pub use error::ApiError;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use lambent_engine::Engine;

/// Largest deploy request (a 50 MB zip, base64-encoded, plus configuration).
pub const MAX_DEPLOY_BODY: usize = 70 * 1024 * 1024;
/// Largest `POST /v1/events` body (a batch); single events are also held to the
/// engine's per-event limit.
pub const MAX_EVENTS_BODY: usize = 6 * 1024 * 1024;

/// Refuses a body whose announced length is over `max` before reading any of it,
/// and bounds bodies without a length (chunked) while they are read.
fn limited(route: MethodRouter<ApiState>, max: usize) -> MethodRouter<ApiState> {
    route
        .layer(DefaultBodyLimit::max(max))
        .layer(middleware::from_fn_with_state(
            max,
            refuse_announced_oversize,
        ))
}

async fn refuse_announced_oversize(
    State(max): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return ApiError::too_large(max).into_response();
    }
    next.run(request).await
}

/// Largest body of the other requests (rules, redrive).
pub const MAX_SMALL_BODY: usize = 1024 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub engine: Engine,
    pub node: std::sync::Arc<NodeLimits>,
}

/// The node's process and listener limits, shown by `GET /v1/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeLimits {
    /// Whether every request (but `/healthz`) needs an API token.
    pub auth: bool,
    /// How process instances are isolated (or why they cannot be).
    pub isolation: String,
    /// The open-file limit the node runs with (raised to its hard limit at start).
    pub open_files: u64,
    pub max_connections: usize,
    pub header_read_timeout_ms: u64,
}

/// The control API's routes.
pub fn router(engine: Engine, node: NodeLimits) -> Router {
    let state = ApiState {
        engine,
        node: std::sync::Arc::new(node),
    };
    let events_limit = MAX_EVENTS_BODY.max(state.engine.config().max_event_bytes);
    let invoke_limit = state.engine.config().max_sync_payload_bytes;
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/metrics", get(handlers::metrics))
        .route(
            "/v1/functions",
            limited(
                get(handlers::list_functions).post(handlers::deploy),
                MAX_DEPLOY_BODY,
            ),
        )
        .route(
            "/v1/functions/{name}",
            limited(
                get(handlers::get_function)
                    .put(handlers::deploy_named)
                    .delete(handlers::delete_function),
                MAX_DEPLOY_BODY,
            ),
        )
        .route(
            "/v1/functions/{name}/invoke",
            limited(post(handlers::invoke), invoke_limit),
        )
        .route("/v1/events", limited(post(handlers::publish), events_limit))
        .route("/v1/events/lookup", get(handlers::get_event))
        .route(
            "/v1/rules",
            get(handlers::list_rules).post(handlers::put_rule),
        )
        .route("/v1/rules/{name}", delete(handlers::delete_rule))
        .route("/v1/invocations", get(handlers::invocations))
        .route("/v1/dlq", get(handlers::dead_letters))
        .route("/v1/dlq/redrive", post(handlers::redrive))
        .route("/v1/status", get(handlers::status))
        .route(
            "/v1/tokens",
            get(handlers::list_tokens).post(handlers::create_token),
        )
        .route("/v1/tokens/{id}", delete(handlers::revoke_token))
        .route(
            "/v1/schedules",
            get(sources::list_schedules).post(sources::put_schedule),
        )
        .route("/v1/schedules/{name}", delete(sources::delete_schedule))
        .route(
            "/v1/routes",
            get(sources::list_routes)
                .post(sources::put_route)
                .delete(sources::delete_route),
        )
        .route(
            "/v1/namespaces",
            get(sources::list_namespaces).post(sources::put_namespace),
        )
        .route(
            "/v1/sources",
            get(sources::list_sources).post(sources::put_source),
        )
        .route("/v1/sources/{name}", delete(sources::delete_source))
        .route("/v1/kv/{namespace}", get(sources::list_keys))
        .route(
            "/v1/kv/{namespace}/{*key}",
            get(sources::get_key)
                .put(sources::put_key)
                .delete(sources::delete_key),
        )
        // The AWS Lambda API (its bodies carry whole zip packages).
        .merge(lambda::routes().layer(DefaultBodyLimit::max(MAX_DEPLOY_BODY)))
        .fallback(handlers::fallback)
        .layer(DefaultBodyLimit::max(MAX_SMALL_BODY))
        .layer(middleware::from_fn_with_state(
            MAX_DEPLOY_BODY,
            refuse_announced_oversize,
        ))
        // Outermost: nothing of a request is read before its token is checked.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .with_state(state)
}
