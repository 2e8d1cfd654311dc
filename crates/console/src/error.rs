//! The one place where the console's failures become HTTP statuses and `{"error": "…"}` bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use unseat_store::StoreError;

/// An admin API failure: a status and a message safe to show the caller. Causes that are not
/// the caller's business (database errors) are logged where they are converted, never sent.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// The same answer for a missing token, an unknown one and a token of the wrong kind, so
    /// that nobody learns which tenants or tokens exist.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "a valid admin bearer token is required")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::not_found("not found"),
            StoreError::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
            StoreError::Invalid(m) => Self::bad_request(m),
            e if e.is_unique_violation() => Self::new(StatusCode::CONFLICT, "that already exists"),
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "the database is unavailable; retry later")
            }
            e => {
                tracing::error!(error = %e, "admin request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

impl From<unseat_store::tokio_postgres::Error> for ApiError {
    fn from(e: unseat_store::tokio_postgres::Error) -> Self {
        StoreError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}
