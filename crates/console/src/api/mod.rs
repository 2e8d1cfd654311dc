//! The endpoint handlers and the input checks they share. Each handler extracts the
//! [`Caller`] first, then checks the tenant it names, then reads its input.

pub mod access;
pub mod assets;
pub mod directory;
pub mod grants;
pub mod integrations;
pub mod log;
pub mod redrive;
pub mod tenants;

use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::App;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::Query;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use unseat_store::logs::Cursor;
use uuid::Uuid;

pub type Params = Result<Query<HashMap<String, String>>, QueryRejection>;
pub type Body = Result<Bytes, BytesRejection>;

/// Parses an id from a path or a body; `what` names it in the error.
pub fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_request(format!("{what} {raw:?} is not a UUID")))
}

/// Parses a JSON body into `T`, with the parser's message on failure. PostgreSQL's text and
/// jsonb cannot hold the NUL character, so a body with one in any string or key is refused
/// here rather than failing in the database.
pub fn parse_body<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    // Every body of this API is a JSON object; serde would also fill a struct from an array.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_request("invalid JSON body: expected a JSON object"));
    }
    let parsed =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    // In JSON text a NUL can only be the escape `\u0000`; only a body with one is walked.
    if bytes.windows(6).any(|w| w == b"\\u0000") && serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| holds_nul(&v))
    {
        return Err(ApiError::bad_request("text must not contain the NUL character (U+0000)"));
    }
    Ok(parsed)
}

/// Whether any string or key of `v` holds U+0000.
fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

pub fn parse_params(params: Params) -> Result<HashMap<String, String>, ApiError> {
    params.map(|Query(p)| p).map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
}

/// Checks the caller against the tenant named in the path and returns its id. The operator
/// may name any tenant, so for the operator the tenant must exist (404 otherwise); a tenant
/// admin's own tenant exists as long as the token does.
pub async fn authorize(app: &App, caller: &Caller, tenant: &str, need: Need) -> Result<Uuid, ApiError> {
    let tenant_id = parse_id(tenant, "tenant id")?;
    caller.require(tenant_id, need)?;
    if matches!(caller, Caller::Operator) && app.state.store.tenant(tenant_id).await?.is_none() {
        return Err(ApiError::not_found("no such tenant"));
    }
    Ok(tenant_id)
}

/// One page request of a newest-first list.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub before: Option<Cursor>,
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

impl Page {
    pub fn from_params(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        let limit = match params.get("limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(ApiError::bad_request(format!("limit must be a whole number from 1 to {MAX_LIMIT}"))),
            },
        };
        let before = match params.get("before").filter(|b| !b.is_empty()) {
            None => None,
            Some(raw) => Some(Cursor::parse(raw).ok_or_else(|| {
                ApiError::bad_request("before is not a cursor this API returned (use the `next` of a previous page)")
            })?),
        };
        Ok(Self { limit, before })
    }

    /// Trims the extra row fetched to learn whether another page follows and returns the
    /// cursor of that next page.
    pub fn finish<T>(&self, rows: &mut Vec<T>, cursor: impl Fn(&T) -> Cursor) -> Option<String> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| cursor(r).encode())
        } else {
            None
        }
    }
}

/// An optional id query parameter.
pub fn optional_id(params: &HashMap<String, String>, name: &str) -> Result<Option<Uuid>, ApiError> {
    params.get(name).filter(|v| !v.is_empty()).map(|v| parse_id(v, name)).transpose()
}

/// A required, non-empty text of at most `max` characters as sent (the bound the OpenAPI
/// document states), stored trimmed.
pub fn required_text(value: &str, what: &str, max: usize) -> Result<String, ApiError> {
    let value = optional_text(value, what, max)?;
    if value.is_empty() {
        return Err(ApiError::bad_request(format!("{what} must not be empty")));
    }
    Ok(value)
}

/// A text of at most `max` characters as sent, stored trimmed (possibly empty).
pub fn optional_text(value: &str, what: &str, max: usize) -> Result<String, ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::bad_request(format!("{what} must be at most {max} characters")));
    }
    Ok(value.trim().to_string())
}
