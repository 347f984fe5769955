//! API errors: a status code, a stable machine-readable code, and a message naming the problem.
//! Rendered as `{"error": {"code": "...", "message": "..."}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answered to an API client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `INVALID_ENTITY`.
    pub code: &'static str,
    /// Human-readable explanation naming the offending field, feature or value.
    pub message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the body is not valid JSON or not the expected shape.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    /// 404: an unknown view, feature or feature service.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// 422: a well-formed request with a value of the wrong type.
    pub fn invalid_entity(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_ENTITY", message)
    }

    /// 413: a body or an entity count over the configured limits.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", message)
    }

    /// 401: a missing or wrong bearer token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    /// 503: the online store cannot be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "STORE_UNAVAILABLE",
            message,
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_unavailable() {
            ApiError::unavailable(e.to_string())
        } else {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "STORE_ERROR",
                e.to_string(),
            )
        }
    }
}

impl From<crate::online::LookupError> for ApiError {
    fn from(e: crate::online::LookupError) -> Self {
        use crate::online::LookupError;
        match e {
            LookupError::InvalidRequest(m) => ApiError::bad_request(m),
            LookupError::NotFound(m) => ApiError::not_found(m),
            LookupError::InvalidEntity(m) => ApiError::invalid_entity(m),
            LookupError::TooLarge(m) => ApiError::too_large(m),
            LookupError::Store(e) => e.into(),
            LookupError::TransformUnavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "TRANSFORM_UNAVAILABLE", m)
            }
            LookupError::TransformFailed { message, timed_out } => ApiError::new(
                if timed_out {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                },
                "TRANSFORM_FAILED",
                message,
            ),
        }
    }
}
