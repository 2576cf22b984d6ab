//! Lambent's control API: JSON over HTTP, the CLI's only way in. Handlers parse the
//! request into a typed call on the [`Engine`] and render its answer; nothing else.

mod cloudevents;
mod error;
mod handlers;

pub use error::ApiError;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use lambent_engine::Engine;

/// Largest deploy request (a 50 MB zip, base64-encoded, plus configuration).
pub const MAX_DEPLOY_BODY: usize = 70 * 1024 * 1024;
/// Largest `POST /v1/events` body (a batch); single events are also held to the
/// engine's per-event limit.
pub const MAX_EVENTS_BODY: usize = 6 * 1024 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub engine: Engine,
}

/// The control API's routes.
pub fn router(engine: Engine) -> Router {
    let state = ApiState { engine };
    let events_limit = MAX_EVENTS_BODY.max(state.engine.config().max_event_bytes);
    let invoke_limit = state.engine.config().max_sync_payload_bytes;
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route(
            "/v1/functions",
            get(handlers::list_functions)
                .post(handlers::deploy)
                .layer(DefaultBodyLimit::max(MAX_DEPLOY_BODY)),
        )
        .route(
            "/v1/functions/{name}",
            get(handlers::get_function)
                .put(handlers::deploy_named)
                .delete(handlers::delete_function)
                .layer(DefaultBodyLimit::max(MAX_DEPLOY_BODY)),
        )
        .route(
            "/v1/functions/{name}/invoke",
            post(handlers::invoke).layer(DefaultBodyLimit::max(invoke_limit)),
        )
        .route(
            "/v1/events",
            post(handlers::publish).layer(DefaultBodyLimit::max(events_limit)),
        )
        .route("/v1/events/lookup", get(handlers::get_event))
        .route("/v1/rules", get(handlers::list_rules).post(handlers::put_rule))
        .route("/v1/rules/{name}", delete(handlers::delete_rule))
        .route("/v1/invocations", get(handlers::invocations))
        .route("/v1/dlq", get(handlers::dead_letters))
        .route("/v1/dlq/redrive", post(handlers::redrive))
        .route("/v1/status", get(handlers::status))
        .fallback(handlers::fallback)
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .with_state(state)
}
