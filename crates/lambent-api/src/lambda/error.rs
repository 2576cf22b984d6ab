//! Errors as AWS SDKs read them: the status, `x-amzn-ErrorType`, and a JSON body
//! with `Type`, `Message` (and `__type`, which botocore also understands).

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lambent_engine::EngineError;

#[derive(Debug)]
pub struct LambdaError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

pub type LambdaResult<T> = Result<T, LambdaError>;

impl LambdaError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "InvalidParameterValueException",
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "ResourceNotFoundException",
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            kind: "ResourceConflictException",
            message: message.into(),
        }
    }

    pub fn unreadable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "InvalidRequestContentException",
            message: message.into(),
        }
    }
}

impl From<EngineError> for LambdaError {
    fn from(e: EngineError) -> Self {
        use lambent_store::CodeError;
        let (status, kind) = match &e {
            EngineError::NotFound { .. } => (StatusCode::NOT_FOUND, "ResourceNotFoundException"),
            EngineError::Spec(_)
            | EngineError::Pattern(_)
            | EngineError::Event { .. }
            | EngineError::Invalid(_)
            | EngineError::Code(CodeError::NotAZip(_))
            | EngineError::Code(CodeError::UnsafePath(_))
            | EngineError::Code(CodeError::Symlink(_)) => {
                (StatusCode::BAD_REQUEST, "InvalidParameterValueException")
            }
            EngineError::Code(CodeError::TooLarge { .. })
            | EngineError::Code(CodeError::TooManyEntries { .. })
            | EngineError::TooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException")
            }
            EngineError::Conflict(_) => (StatusCode::CONFLICT, "ResourceConflictException"),
            EngineError::Throttled { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException")
            }
            EngineError::Runtime(_) => (StatusCode::BAD_GATEWAY, "ServiceException"),
            EngineError::Code(CodeError::Io { .. })
            | EngineError::Store(_)
            | EngineError::Internal(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceException"),
        };
        Self {
            status,
            kind,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for LambdaError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "Type": if self.status.is_server_error() { "Service" } else { "User" },
            "Message": self.message,
            "__type": self.kind,
        });
        let mut response = (self.status, Json(body)).into_response();
        response
            .headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(self.kind));
        response
    }
}
