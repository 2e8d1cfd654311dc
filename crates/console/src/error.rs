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
    /// Why a 403 refused the caller (None for every other answer), so that a page can say what
    /// to do about it; the API's body is the message alone.
    pub refusal: Option<Refusal>,
}

/// The two reasons a known caller is refused: the tenant is not theirs, or it is and what they
/// asked is more than they may do there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The token belongs to another tenant than the one named.
    OtherTenant,
    /// The caller's role (or not being the operator) does not allow the action.
    NotAllowed,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), refusal: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A 403 for an action the caller may not take in their own tenant (see [`Refusal::NotAllowed`]).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self { refusal: Some(Refusal::NotAllowed), ..Self::new(StatusCode::FORBIDDEN, message) }
    }

    /// The 403 for a tenant admin naming another tenant, whether that tenant exists or not.
    pub fn other_tenant() -> Self {
        Self {
            refusal: Some(Refusal::OtherTenant),
            ..Self::new(StatusCode::FORBIDDEN, "this token belongs to another tenant")
        }
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

/// The longest error message an answer carries, in characters.
const MAX_ERROR_CHARS: usize = 1000;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A message that quotes a caller's bad value quotes at most the start of it: a 60,000
        // character role came back whole.
        let message = match self.message.char_indices().nth(MAX_ERROR_CHARS) {
            Some((end, _)) => format!("{}…", &self.message[..end]),
            None => self.message,
        };
        (self.status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}
