//! Integrations: the tenant's connections to external apps. The app credential goes in and
//! never comes out: answers say only `has_credential`, and nothing logs it. A plain secret is
//! encrypted under the deployment's credential key before it is stored (`env:`/`file:`
//! references stay references); without a key it is refused with 400 unless plaintext was
//! explicitly allowed (see `unseat_store::credentials::Sealing`).

use super::{authorize, parse_body, parse_id, required_text, Body};
use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::App;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use unseat_domain::{AssetLadder, RoleLadder, MAX_ASSET_ID_CHARS};
use unseat_store::admin::{Asset, NewIntegration};
use unseat_store::credentials::Sealing;

/// App kinds a connector exists for.
pub const APP_KINDS: &[&str] = &["business_hub", "scim"];

const MAX_CREDENTIAL_CHARS: usize = 8192;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateIntegration {
    name: String,
    app_kind: String,
    base_url: String,
    /// The role ladder, highest first; empty or left out for a seat-only app (see
    /// [`role_ladder`]).
    #[serde(default)]
    roles: Vec<String>,
    default_role: Option<String>,
    #[serde(default)]
    settings: Option<Value>,
    credential: Option<String>,
    /// The asset-role ladder, highest first (for a Meta-style hub: MANAGE, ADVERTISE, ANALYZE).
    #[serde(default)]
    asset_roles: Vec<String>,
    /// The assets grants may name.
    #[serde(default)]
    assets: Vec<NewAssetBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAssetBody {
    asset_id: String,
    kind: String,
    #[serde(default)]
    name: String,
}

/// Most assets one integration may list (bounded input).
const MAX_ASSETS: usize = 1000;

fn validate_assets(asset_roles: Vec<String>, assets: Vec<NewAssetBody>) -> Result<(Vec<String>, Vec<Asset>), ApiError> {
    let ladder = AssetLadder::parse(asset_roles).map_err(|e| ApiError::bad_request(format!("asset_roles: {e}")))?;
    if !assets.is_empty() && ladder.roles().is_empty() {
        return Err(ApiError::bad_request("assets need an asset_roles ladder"));
    }
    if assets.len() > MAX_ASSETS {
        return Err(ApiError::bad_request(format!("at most {MAX_ASSETS} assets per integration")));
    }
    let mut out: Vec<Asset> = Vec::with_capacity(assets.len());
    for a in assets {
        let asset_id = required_text(&a.asset_id, "asset_id", MAX_ASSET_ID_CHARS)?;
        if out.iter().any(|o| o.asset_id == asset_id) {
            return Err(ApiError::bad_request(format!("asset {asset_id:?} is listed twice")));
        }
        let kind = required_text(&a.kind, "asset kind", 64)?;
        let name = a.name.trim().to_string();
        if name.chars().count() > 200 {
            return Err(ApiError::bad_request("asset name must be at most 200 characters"));
        }
        out.push(Asset { asset_id, kind, name });
    }
    Ok((ladder.roles().to_vec(), out))
}

/// The role a seat-only business hub gives: a Meta business user always holds a role, so the
/// seat is the base role EMPLOYEE (Admin and Employee are the base roles; Employee is the one
/// that gives nothing beyond what assets give).
pub const HUB_SEAT_ROLE: &str = "EMPLOYEE";

/// The ladder to store. An empty ladder is a seat-only app (a seat or no seat): kept empty for
/// a SCIM app (the domain's one role SEAT), and for a business hub, whose users always hold a
/// role, the one-role ladder [`HUB_SEAT_ROLE`], so the app is told a role it knows.
fn role_ladder(app_kind: &str, roles: Vec<String>) -> Result<(Vec<String>, RoleLadder), ApiError> {
    let stored = match (app_kind, roles.is_empty()) {
        ("business_hub", true) => vec![HUB_SEAT_ROLE.to_string()],
        (_, true) => Vec::new(),
        (_, false) => {
            RoleLadder::parse(roles.clone()).map_err(|e| ApiError::bad_request(format!("roles: {e}")))?;
            roles
        }
    };
    let ladder =
        RoleLadder::for_integration(stored.clone()).map_err(|e| ApiError::bad_request(format!("roles: {e}")))?;
    Ok((stored, ladder))
}

/// Checks a create request; nothing is written unless all of it is valid.
fn validate(req: CreateIntegration, sealing: &Sealing) -> Result<NewIntegration, ApiError> {
    let name = required_text(&req.name, "name", 200)?;
    if !APP_KINDS.contains(&req.app_kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "app_kind {:?} is not supported (supported: {})",
            req.app_kind,
            APP_KINDS.join(", ")
        )));
    }
    let base_url = url::Url::parse(req.base_url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| ApiError::bad_request("base_url must be an absolute http or https URL"))?;
    let (roles, ladder) = role_ladder(&req.app_kind, req.roles)?;
    if let Some(role) = &req.default_role {
        ladder.check(role).map_err(|e| ApiError::bad_request(format!("default_role: {e}")))?;
    }
    let settings = req.settings.unwrap_or_else(|| json!({}));
    let Some(fields) = settings.as_object() else {
        return Err(ApiError::bad_request("settings must be a JSON object"));
    };
    if req.app_kind == "business_hub" {
        match fields.get("business_id").and_then(Value::as_str) {
            Some(id) if !id.trim().is_empty() => {}
            _ => return Err(ApiError::bad_request("settings.business_id is required for a business_hub integration")),
        }
    }
    let (asset_roles, assets) = validate_assets(req.asset_roles, req.assets)?;
    let credential = req.credential.unwrap_or_default();
    if credential.chars().count() > MAX_CREDENTIAL_CHARS {
        return Err(ApiError::bad_request(format!("credential must be at most {MAX_CREDENTIAL_CHARS} characters")));
    }
    // The error names the rule broken, never the submitted value.
    let credential = sealing.seal(&credential).map_err(|e| ApiError::bad_request(format!("credential: {e}")))?;
    Ok(NewIntegration {
        name,
        app_kind: req.app_kind,
        base_url: base_url.to_string().trim_end_matches('/').to_string(),
        settings,
        credential,
        roles,
        default_role: req.default_role,
        asset_roles,
        assets,
    })
}

pub async fn create(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    let new = validate(parse_body(body)?, &app.state.credentials)?;
    let integration = app.state.store.create_integration(tenant_id, &new).await?;
    tracing::info!(tenant = %tenant_id, integration = %integration.id, app = %integration.app_kind, "integration created");
    Ok((StatusCode::CREATED, Json(json!(integration))))
}

pub async fn list(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    let integrations = app.state.store.integrations(tenant_id).await?;
    Ok(Json(json!({ "integrations": integrations })))
}

pub async fn get(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, integration)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    let id = parse_id(&integration, "integration id")?;
    let integration =
        app.state.store.integration(tenant_id, id).await?.ok_or_else(|| ApiError::not_found("no such integration"))?;
    Ok(Json(json!(integration)))
}
