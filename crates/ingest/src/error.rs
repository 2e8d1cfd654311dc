//! The one place where failures become HTTP answers: SCIM errors keep their status, an
//! unreachable database becomes 503 with `Retry-After`, and anything else a logged 500.

use crate::response::scim_response;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use unseat_scim::ScimError;
use unseat_store::StoreError;

/// A handler failure. Every variant aborts the transaction it happened in, so nothing is
/// half-applied.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Scim(#[from] ScimError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<unseat_store::tokio_postgres::Error> for ApiError {
    fn from(e: unseat_store::tokio_postgres::Error) -> Self {
        ApiError::Store(e.into())
    }
}

impl ApiError {
    /// The SCIM error this failure is answered with.
    pub fn to_scim(&self) -> ScimError {
        match self {
            ApiError::Scim(e) => e.clone(),
            ApiError::Store(e) if e.is_unavailable() => {
                ScimError::unavailable("the directory store is unavailable; retry later")
            }
            ApiError::Store(StoreError::Conflict(msg)) => ScimError::uniqueness(msg.clone()),
            ApiError::Store(StoreError::NotFound) => ScimError::not_found("resource not found"),
            ApiError::Store(_) => ScimError::internal("internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.to_scim();
        match &self {
            ApiError::Store(err) if e.status >= 500 => {
                tracing::error!(error = %err, "SCIM request failed in the store")
            }
            _ => {}
        }
        let mut resp = scim_error_response(&e);
        if e.status == 503 {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

/// The response for a SCIM error; 401 carries `WWW-Authenticate: Bearer`.
pub fn scim_error_response(e: &ScimError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = scim_response(status, &e.to_json());
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}
