//! Which scope each route needs, and the middleware that checks the bearer token
//! (the decision itself is the engine's).

use crate::ApiState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lambent_engine::AuthError;
use lambent_store::TokenScope;

/// The scope a request needs; None for what is public (`/healthz`).
pub fn scope_for(method: &Method, path: &str) -> Option<TokenScope> {
    if path == "/healthz" {
        return None;
    }
    if path.starts_with("/v1/tokens") {
        return Some(TokenScope::Admin);
    }
    if method == Method::GET || method == Method::HEAD {
        return Some(TokenScope::Read);
    }
    if method == Method::POST && path == "/v1/events" {
        return Some(TokenScope::Publish);
    }
    // Writing data is publishing: each write is a change event.
    if (method == Method::PUT || method == Method::DELETE) && path.starts_with("/v1/kv/") {
        return Some(TokenScope::Publish);
    }
    if method == Method::POST
        && path
            .strip_prefix("/v1/functions/")
            .and_then(|rest| rest.strip_suffix("/invoke"))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
    {
        return Some(TokenScope::Invoke);
    }
    // The Lambda API's Invoke and InvokeAsync.
    if method == Method::POST
        && (path.starts_with("/2015-03-31/functions/") && path.ends_with("/invocations")
            || path.starts_with("/2014-11-13/functions/"))
    {
        return Some(TokenScope::Invoke);
    }
    Some(TokenScope::Admin)
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Refuses a request without a valid token of the scope it needs, when the node
/// requires tokens.
pub async fn require_token(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    if !s.node.auth {
        return next.run(req).await;
    }
    let Some(needed) = scope_for(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    match s.engine.authorize(bearer(&req), needed).await {
        Ok(Ok(())) => next.run(req).await,
        Ok(Err(refused)) => {
            let (status, code) = match refused {
                AuthError::Missing | AuthError::Invalid => {
                    (StatusCode::UNAUTHORIZED, "unauthorized")
                }
                AuthError::OutOfScope { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            };
            let mut resp = ApiError {
                status,
                code,
                message: refused.to_string(),
                retry_after: None,
            }
            .into_response();
            if status == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            resp
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_scope_of_what_they_do() {
        let cases = [
            (Method::GET, "/healthz", None),
            (Method::GET, "/metrics", Some(TokenScope::Read)),
            (Method::POST, "/v1/events", Some(TokenScope::Publish)),
            (
                Method::POST,
                "/v1/functions/f/invoke",
                Some(TokenScope::Invoke),
            ),
            (Method::GET, "/v1/functions", Some(TokenScope::Read)),
            (Method::GET, "/v1/tokens", Some(TokenScope::Admin)),
            (Method::POST, "/v1/functions", Some(TokenScope::Admin)),
            (Method::DELETE, "/v1/functions/f", Some(TokenScope::Admin)),
            (
                Method::POST,
                "/v1/functions//invoke",
                Some(TokenScope::Admin),
            ),
            (
                Method::POST,
                "/v1/functions/a/b/invoke",
                Some(TokenScope::Admin),
            ),
            (Method::POST, "/v1/dlq/redrive", Some(TokenScope::Admin)),
            (Method::POST, "/v1/rules", Some(TokenScope::Admin)),
            (Method::PUT, "/v1/kv/ns/k", Some(TokenScope::Publish)),
            (Method::DELETE, "/v1/kv/ns/k", Some(TokenScope::Publish)),
            (Method::GET, "/v1/kv/ns/k", Some(TokenScope::Read)),
            (Method::POST, "/v1/schedules", Some(TokenScope::Admin)),
            (Method::POST, "/v1/routes", Some(TokenScope::Admin)),
            (Method::POST, "/v1/sources", Some(TokenScope::Admin)),
            (
                Method::POST,
                "/2015-03-31/functions/f/invocations",
                Some(TokenScope::Invoke),
            ),
            (
                Method::POST,
                "/2015-03-31/functions",
                Some(TokenScope::Admin),
            ),
            (Method::GET, "/2015-03-31/functions", Some(TokenScope::Read)),
        ];
        for (method, path, want) in cases {
            assert_eq!(scope_for(&method, path), want, "{method} {path}");
        }
    }
}
