//! The data plane: HTTP routes on their own listener (`--http-listen`), apart from
//! the control API. A route is public only when declared so; otherwise the caller
//! needs a token that may invoke (sync routes) or publish (event routes).

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lambent_core::RouteMode;
use lambent_engine::{AuthError, Engine, HttpRequest, HttpResponse, RouteMatch};
use lambent_store::TokenScope;
use serde_json::json;
use std::net::SocketAddr;

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"message": text.into()}).to_string(),
    )
        .into_response()
}

/// The data plane's routes: everything goes through the route table.
pub fn router(engine: Engine) -> Router {
    Router::new().fallback(serve).with_state(engine)
}

async fn serve(State(engine): State<Engine>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let route = match engine.match_route(parts.method.as_str(), &path) {
        RouteMatch::Found(route) => route,
        RouteMatch::MethodNotAllowed => {
            return message(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        }
        RouteMatch::NotFound => return message(StatusCode::NOT_FOUND, "Not Found"),
    };
    if !route.spec.public {
        let needed = match route.spec.mode {
            RouteMode::Sync => TokenScope::Invoke,
            RouteMode::Event => TokenScope::Publish,
        };
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match engine.authorize(bearer, needed).await {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => {
                let status = match refused {
                    AuthError::OutOfScope { .. } => StatusCode::FORBIDDEN,
                    AuthError::Missing | AuthError::Invalid => StatusCode::UNAUTHORIZED,
                };
                return message(
                    status,
                    format!("route {} is not public: {refused}", route.spec.key()),
                );
            }
            Err(e) => return crate::ApiError::from(e).into_response(),
        }
    }
    let limit = engine.config().max_sync_payload_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return message(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over the limit of {limit} bytes"),
            );
        }
    };
    let headers = parts
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let source_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let request = HttpRequest {
        method: parts.method.as_str().to_owned(),
        path,
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers,
        body,
        source_ip,
    };
    match engine.serve_route(route, request).await {
        Ok(answer) => render(answer),
        Err(e) => crate::ApiError::from(e).into_response(),
    }
}

fn render(answer: HttpResponse) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in answer.headers {
        // A header the function set that HTTP cannot carry is dropped, not a 500.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    response
}
