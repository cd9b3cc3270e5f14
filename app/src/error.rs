//! How domain errors become HTTP responses: a status and a JSON body
//! `{"error": ..., "field": ...}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use onebook_domain::DomainError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
    /// Seconds, for 429 and 503 answers.
    pub retry_after: Option<i64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.into()),
            retry_after: None,
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not found"),
            DomainError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            DomainError::Invalid { field, reason } => ApiError::bad_field(field, reason),
            DomainError::Unauthenticated => {
                ApiError::new(StatusCode::UNAUTHORIZED, "authentication required")
            }
            DomainError::Unavailable { .. } => {
                tracing::warn!(error = %e, "data tier unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily unavailable, retry",
                )
            }
            DomainError::Database { .. } if onebook_domain::db::is_transient(&e) => {
                tracing::warn!(error = %e, "data tier unavailable after retries");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily unavailable, retry",
                )
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(field) = self.field {
            body["field"] = serde_json::Value::String(field);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            if let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}
