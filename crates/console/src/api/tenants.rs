//! Tenants and their tokens. A token is shown once, in the answer that creates it; the store
//! keeps only its hash.

use super::{authorize, optional_text, parse_body, parse_id, parse_params, required_text, Body, Params, Path};
use crate::auth::{AdminRole, Caller, Need};
use crate::error::ApiError;
use crate::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use unseat_store::admin::{self, ScimRateLimit};
use unseat_store::tokens::{self, generate};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
}

pub async fn create_tenant(
    caller: Caller,
    State(app): State<Arc<App>>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_operator()?;
    let req: NewTenant = parse_body(body)?;
    let name = required_text(&req.name, "name", 200)?;
    let scim_token = generate("scim");
    let admin_token = generate("adm");
    let tenant = app.state.store.create_tenant(&name, &scim_token, &admin_token).await?;
    tracing::info!(tenant = %tenant.id, by = %caller.actor(), "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": tenant.id,
            "name": tenant.name,
            "created_at": tenant.created_at,
            "scim_token": scim_token,
            "admin_token": admin_token,
        })),
    ))
}

pub async fn get_tenant(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    let tenant = app.state.store.tenant(tenant_id).await?.ok_or_else(|| ApiError::not_found("no such tenant"))?;
    Ok(Json(json!({
        "id": tenant.id,
        "name": tenant.name,
        "created_at": tenant.created_at,
        "scim_rate_limit": tenant.scim_rate_limit,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitRequest {
    per_second: i64,
    burst: i64,
}

/// `PUT /tenants/{t}/scim-rate-limit`: the operator gives the tenant a SCIM request rate of its
/// own instead of the fleet's (`UNSEAT_SCIM_RATE_LIMIT` / `_BURST`); every ingest process
/// applies it from its next lease.
pub async fn set_scim_rate_limit(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller.require_operator()?;
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    let req: RateLimitRequest = parse_body(body)?;
    let limit = ScimRateLimit::new(req.per_second, req.burst).map_err(ApiError::bad_request)?;
    if !app.state.store.set_scim_rate_limit(tenant_id, Some(limit)).await? {
        return Err(ApiError::not_found("no such tenant"));
    }
    tracing::info!(tenant = %tenant_id, per_second = limit.per_second, burst = limit.burst, by = %caller.actor(), "tenant's SCIM rate limit set");
    Ok(Json(json!(limit)))
}

/// `DELETE /tenants/{t}/scim-rate-limit`: the tenant is limited at the fleet's rate again.
pub async fn clear_scim_rate_limit(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_operator()?;
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    if !app.state.store.set_scim_rate_limit(tenant_id, None).await? {
        return Err(ApiError::not_found("no such tenant"));
    }
    tracing::info!(tenant = %tenant_id, by = %caller.actor(), "tenant's SCIM rate limit back to the fleet's");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /tenants/{t}/tokens`: the tenant's tokens (never the tokens themselves), for those who
/// manage them: owners, super admins and admins. Viewers read logs, and an integration owner
/// shares its one integration; neither needs to know who holds which token.
pub async fn list_tokens(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    parse_params(params, &[])?;
    let tokens = app.state.store.tokens(tenant_id).await?;
    let tokens: Vec<Value> = tokens
        .into_iter()
        .map(|t| {
            let scope = match (t.kind.as_str(), t.scope_integration) {
                ("scim", Some(i)) => json!(i),
                ("scim", None) => json!("workspace"),
                // An integration owner's integration.
                (_, Some(i)) => json!(i),
                _ => Value::Null,
            };
            json!({ "id": t.id, "kind": t.kind, "scope": scope, "role": t.role, "label": t.label,
                    "created_at": t.created_at, "expires_at": t.expires_at })
        })
        .collect();
    Ok(Json(json!({ "tokens": tokens })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewScimToken {
    label: Option<String>,
    integration_id: Option<String>,
    expires_at: Option<String>,
}

fn label(raw: Option<String>) -> Result<String, ApiError> {
    optional_text(raw.as_deref().unwrap_or_default(), "label", 200)
}

/// A new token's end: an RFC 3339 time in the future (with its offset), or None for a token
/// that lasts until revoked.
fn expiry(raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let at = DateTime::parse_from_rfc3339(raw.trim())
        .map_err(|_| ApiError::bad_request("expires_at must be an RFC 3339 time such as 2027-01-31T00:00:00Z"))?
        .with_timezone(&Utc);
    if at <= Utc::now() {
        return Err(ApiError::bad_request("expires_at is not in the future: such a token would never work"));
    }
    Ok(Some(at))
}

pub async fn create_scim_token(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    let req: NewScimToken = parse_body(body)?;
    let label = label(req.label)?;
    let expires_at = expiry(req.expires_at.as_deref())?;
    let token = generate("scim");
    let new =
        |scope_integration| tokens::NewToken { kind: "scim", scope_integration, role: None, label: &label, expires_at };
    let scope = match req.integration_id.as_deref() {
        None => {
            let client = app.state.store.client().await?;
            tokens::insert_token(&**client, tenant_id, &token, &new(None)).await?;
            None
        }
        Some(raw) => {
            let id = parse_id(raw, "integration_id")?;
            // Under the integration's lock, which grant changes wait for: an integration takes
            // its users from its own directory or from console shares, never both.
            let mut client = app.state.store.client().await?;
            let tx = client.transaction().await?;
            let integration = admin::integration_for_update(&tx, tenant_id, id)
                .await?
                .ok_or_else(|| ApiError::not_found("no such integration in this tenant"))?;
            let sources = admin::access_sources(&tx, tenant_id, id).await?;
            if sources.shares > 0 {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "{} is shared in the console ({} grants); remove its grants before giving it its own \
                         SCIM endpoint",
                        integration.name, sources.shares
                    ),
                ));
            }
            tokens::insert_token(&*tx, tenant_id, &token, &new(Some(id))).await?;
            tx.commit().await?;
            Some(id)
        }
    };
    tracing::info!(tenant = %tenant_id, scope = ?scope, by = %caller.actor(), "SCIM token created");
    let scope = scope.map_or_else(|| json!("workspace"), |i| json!(i));
    let answer = json!({ "token": token, "scope": scope, "label": label, "expires_at": expires_at });
    Ok((StatusCode::CREATED, Json(answer)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAdminToken {
    role: String,
    label: Option<String>,
    /// The integration an `integration_owner` owns (and only then).
    integration_id: Option<String>,
    expires_at: Option<String>,
}

pub async fn create_admin_token(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::ManageAdmins).await?;
    let req: NewAdminToken = parse_body(body)?;
    let role = AdminRole::parse(&req.role).ok_or_else(|| {
        ApiError::bad_request(format!(
            "role {:?} is not one of owner, super_admin, admin, integration_owner, viewer",
            req.role
        ))
    })?;
    if let Caller::Admin { role: own, .. } = caller {
        if role.outranks(own) {
            let (own, role) = (own.as_str(), role.as_str());
            return Err(ApiError::forbidden(format!(
                "{} {own} may not create {} {role} token",
                article(own),
                article(role)
            )));
        }
    }
    let label = label(req.label)?;
    let expires_at = expiry(req.expires_at.as_deref())?;
    let integration = match (role, req.integration_id.as_deref()) {
        (AdminRole::IntegrationOwner, Some(raw)) => {
            let id = parse_id(raw, "integration_id")?;
            if app.state.store.integration(tenant_id, id).await?.is_none() {
                return Err(ApiError::not_found("no such integration in this tenant"));
            }
            Some(id)
        }
        (AdminRole::IntegrationOwner, None) => {
            return Err(ApiError::bad_request("an integration_owner token needs the integration_id it owns"))
        }
        (_, Some(_)) => return Err(ApiError::bad_request("only an integration_owner token names an integration_id")),
        (_, None) => None,
    };
    let token = generate("adm");
    let new = tokens::NewToken {
        kind: "admin",
        scope_integration: integration,
        role: Some(role.as_str()),
        label: &label,
        expires_at,
    };
    tokens::insert_token(&**app.state.store.client().await?, tenant_id, &token, &new).await?;
    tracing::info!(tenant = %tenant_id, role = role.as_str(), integration = ?integration, expires_at = ?expires_at, by = %caller.actor(), "admin token created");
    let mut answer = json!({ "token": token, "role": role.as_str(), "label": label, "expires_at": expires_at });
    if let Some(i) = integration {
        answer["integration_id"] = json!(i);
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

/// "a" or "an" before a role's name ("an owner", "a super_admin").
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// `DELETE /tenants/{t}/tokens/{token}`: revokes a token. SCIM tokens: whoever may write;
/// admin tokens: owners and super admins, never of a role above their own.
pub async fn revoke_token(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, token)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    let id = parse_id(&token, "token id")?;
    let info = app.state.store.token(tenant_id, id).await?.ok_or_else(|| ApiError::not_found("no such token"))?;
    if info.kind == "admin" {
        caller.require(tenant_id, Need::ManageAdmins)?;
        let role = info.role.as_deref().and_then(AdminRole::parse).unwrap_or(AdminRole::Viewer);
        if let Caller::Admin { role: own, .. } = caller {
            if role.outranks(own) {
                let (own, role) = (own.as_str(), role.as_str());
                return Err(ApiError::forbidden(format!(
                    "{} {own} may not revoke {} {role} token",
                    article(own),
                    article(role)
                )));
            }
        }
    }
    if !app.state.store.revoke_token(tenant_id, id).await? {
        return Err(ApiError::not_found("no such token"));
    }
    tracing::info!(tenant = %tenant_id, token = %id, kind = %info.kind, by = %caller.actor(), "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
