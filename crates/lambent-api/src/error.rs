//! JSON errors with the right status: `{"error": {"code", "message"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lambent_engine::EngineError;

/// An error answer of the control API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds a client should wait before retrying (overload).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "too_large",
            message: format!("request body is over the limit of {limit} bytes"),
            retry_after: None,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let mut retry_after = None;
        let (status, code) = match &e {
            EngineError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            EngineError::Spec(_)
            | EngineError::Pattern(_)
            | EngineError::Event { .. }
            | EngineError::Code(lambent_store::CodeError::NotAZip(_))
            | EngineError::Code(lambent_store::CodeError::UnsafePath(_))
            | EngineError::Code(lambent_store::CodeError::Symlink(_))
            | EngineError::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            EngineError::Code(lambent_store::CodeError::TooLarge { .. })
            | EngineError::Code(lambent_store::CodeError::TooManyEntries { .. })
            | EngineError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            EngineError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            EngineError::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            EngineError::Runtime(_) => (StatusCode::BAD_GATEWAY, "runtime_unavailable"),
            EngineError::Store(lambent_store::StoreError::Overloaded { .. }) => {
                retry_after = Some(1);
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
            }
            EngineError::Code(lambent_store::CodeError::Io { .. })
            | EngineError::Store(_)
            | EngineError::Internal(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        Self {
            status,
            code,
            retry_after,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Parses a JSON body into `T`, naming the problem on failure.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Turns a body-extraction failure into a JSON error (413 past the limit).
pub fn body_error(rejection: axum::extract::rejection::BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(limit)
    } else {
        ApiError::bad_request(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding 11: overload is answered 503 with Retry-After, other store failures
    /// without it.
    #[test]
    fn an_overloaded_store_is_503_with_retry_after() {
        let overloaded = EngineError::Store(lambent_store::StoreError::Overloaded { queued: 16 });
        let response = ApiError::from(overloaded).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(axum::http::header::RETRY_AFTER),
            Some(&axum::http::HeaderValue::from(1))
        );
        let closed = ApiError::from(EngineError::Store(lambent_store::StoreError::Closed));
        let response = closed.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            response
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .is_none()
        );
    }
}
