//! Read-only views of the workspace directory, so admins can pick the teams and users to share
//! an integration with. The IdP owns the directory: nothing here changes it.

use super::{authorize, parse_params, Params, Path};
use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::App;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

fn limit(params: &std::collections::HashMap<String, String>) -> Result<i64, ApiError> {
    match params.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!("limit must be a whole number from 1 to {MAX_LIMIT}"))),
        },
    }
}

/// Teams by name, at most `limit` (default 100, at most 1000); `after` (the `next` of a
/// previous page: the last team's id) pages on.
pub async fn teams(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    let params = parse_params(params, &["limit", "after"])?;
    let limit = limit(&params)?;
    let gone = || {
        ApiError::bad_request("after is not a team of this directory (the `next` of a previous page; deleted since?)")
    };
    let after = match params.get("after").map(String::as_str).filter(|a| !a.is_empty()) {
        None => None,
        Some(raw) => Some(uuid::Uuid::parse_str(raw).map_err(|_| gone())?),
    };
    let mut teams = app.state.store.teams(tenant_id, after, limit + 1).await?.ok_or_else(gone)?;
    let next = if teams.len() as i64 > limit {
        teams.truncate(limit as usize);
        teams.last().map(|t| t.id)
    } else {
        None
    };
    let teams: Vec<Value> = teams
        .into_iter()
        .map(|t| json!({ "id": t.id, "displayName": t.display_name, "member_count": t.member_count }))
        .collect();
    Ok(Json(json!({ "teams": teams, "next": next })))
}

/// Users by userName; `filter_email` keeps those whose email contains it; `after` (the `next`
/// of a previous page: the last userName) pages on.
pub async fn users(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    let params = parse_params(params, &["limit", "after", "filter_email"])?;
    let limit = limit(&params)?;
    let filter = params.get("filter_email").map(|f| f.trim()).filter(|f| !f.is_empty());
    let after = params.get("after").map(String::as_str).filter(|a| !a.is_empty());
    let mut users = app.state.store.directory_users(tenant_id, filter, after, limit + 1).await?;
    let next = if users.len() as i64 > limit {
        users.truncate(limit as usize);
        users.last().map(|u| u.user_name.clone())
    } else {
        None
    };
    let users: Vec<Value> = users
        .into_iter()
        .map(|u| {
            let teams: Vec<Value> =
                u.teams.into_iter().map(|t| json!({ "id": t.id, "displayName": t.display_name })).collect();
            json!({ "id": u.id, "userName": u.user_name, "email": u.email, "active": u.active, "teams": teams })
        })
        .collect();
    Ok(Json(json!({ "users": users, "next": next })))
}
