//! Integrations: the tenant's connections to external apps. The app credential goes in and
//! never comes out: answers say only `has_credential`, and nothing logs it. A plain secret is
//! encrypted under the deployment's credential key before it is stored (`env:`/`file:`
//! references stay references); without a key it is refused with 400 unless plaintext was
//! explicitly allowed (see `unseat_store::credentials::Sealing`). The role ladder, asset-role
//! ladder and default role can change after creation ([`update`]); since that changes what
//! existing grants give, the change re-resolves everyone the integration's grants and own
//! directory reach, like a grant change.

use super::grants::{announce_users, announce_users_in, subject_label, Request};
use super::{authorize, null_as_default, parse_body, parse_id, required_text, Body, Path};
use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::App;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use unseat_domain::{AssetLadder, AssetMap, RoleLadder, MAX_ASSET_ID_CHARS};
use unseat_store::admin::{self, Asset, GrantRow, NewIntegration};
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
    #[serde(default, deserialize_with = "null_as_default")]
    roles: Vec<String>,
    default_role: Option<String>,
    #[serde(default)]
    settings: Option<Value>,
    credential: Option<String>,
    /// The asset-role ladder, highest first (for a Meta-style hub: MANAGE, ADVERTISE, ANALYZE).
    #[serde(default, deserialize_with = "null_as_default")]
    asset_roles: Vec<String>,
    /// The assets grants may name.
    #[serde(default, deserialize_with = "null_as_default")]
    assets: Vec<NewAssetBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAssetBody {
    asset_id: String,
    kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    name: String,
}

/// Most assets one integration may list (bounded input).
const MAX_ASSETS: usize = 1000;

/// The asset-role ladder to store: possibly empty (an app without assets), no blank names, no
/// duplicates.
fn asset_ladder(asset_roles: Vec<String>) -> Result<AssetLadder, ApiError> {
    AssetLadder::parse(asset_roles).map_err(|e| ApiError::bad_request(format!("asset_roles: {e}")))
}

fn validate_assets(asset_roles: Vec<String>, assets: Vec<NewAssetBody>) -> Result<(Vec<String>, Vec<Asset>), ApiError> {
    let ladder = asset_ladder(asset_roles)?;
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
        let (kind, name) = (super::assets::kind(&a.kind)?, super::assets::name(&a.name)?);
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

/// Checks a ladder an admin submits: no two of its roles may be the same name ignoring case, as
/// an IdP's role names are matched (a stored ladder that predates the check is left as it is).
fn check_submitted_roles(ladder: &RoleLadder) -> Result<(), ApiError> {
    ladder.check_apart_ignoring_case().map_err(|e| ApiError::bad_request(format!("roles: {e}")))
}

fn check_default_role(ladder: &RoleLadder, role: &str) -> Result<(), ApiError> {
    ladder.check(role).map_err(|e| ApiError::bad_request(format!("default_role: {e}")))
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
    // Every reader (viewers too) sees base_url, and the connector appends paths to it.
    if !base_url.username().is_empty() || base_url.password().is_some() {
        return Err(ApiError::bad_request("base_url must not hold a user or password: put the secret in credential"));
    }
    if base_url.query().is_some() || base_url.fragment().is_some() {
        return Err(ApiError::bad_request(
            "base_url must not have a query or a fragment (the connector appends paths)",
        ));
    }
    let (roles, ladder) = role_ladder(&req.app_kind, req.roles)?;
    check_submitted_roles(&ladder)?;
    if let Some(role) = &req.default_role {
        check_default_role(&ladder, role)?;
    }
    let settings = req.settings.unwrap_or_else(|| json!({}));
    let Some(fields) = settings.as_object() else {
        return Err(ApiError::bad_request("settings must be a JSON object"));
    };
    check_settings(&req.app_kind, fields)?;
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

/// The settings a connector reads, checked as it reads them (`unseat-connector`'s
/// `business_hub` and `scim` adapters and its HTTP client), so that an integration the
/// connectors would refuse is refused here instead of failing every task of it.
fn check_settings(app_kind: &str, fields: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    if app_kind == "business_hub" {
        let id = match fields.get("business_id") {
            Some(Value::String(s)) => s.trim().to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(ApiError::bad_request("settings.business_id is required for a business_hub integration")),
        };
        if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::bad_request("settings.business_id must be the business's numeric id"));
        }
    }
    if app_kind == "scim" {
        match fields.get("match_attribute") {
            None => {}
            Some(Value::String(s)) if s == "userName" || s == "externalId" => {}
            Some(_) => return Err(ApiError::bad_request("settings.match_attribute must be userName or externalId")),
        }
        match fields.get("deprovision") {
            None => {}
            Some(Value::String(s)) if s == "deactivate" || s == "delete" => {}
            Some(_) => return Err(ApiError::bad_request("settings.deprovision must be deactivate or delete")),
        }
    }
    match fields.get("rate_limit_per_second") {
        None => Ok(()),
        Some(v) if v.as_f64().is_some_and(|r| r.is_finite() && r > 0.0) => Ok(()),
        Some(_) => Err(ApiError::bad_request("settings.rate_limit_per_second must be a positive number")),
    }
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LadderChange {
    /// The new role ladder, highest first; empty for a seat-only app (see [`role_ladder`]).
    roles: Option<Vec<String>>,
    /// The new asset-role ladder, highest first.
    asset_roles: Option<Vec<String>>,
    default_role: Option<String>,
}

/// "ADMIN, EMPLOYEE", or "none" for an empty ladder.
fn ladder_words(roles: &[String]) -> String {
    if roles.is_empty() {
        "none".to_string()
    } else {
        roles.join(", ")
    }
}

/// The grants that name a role or an asset role the ladders do not have: such a grant gives
/// nothing (role off the ladder) or nothing on those assets (asset role off the asset ladder).
fn grants_without_effect(grants: &[GrantRow], roles: &RoleLadder, asset_roles: &AssetLadder) -> Vec<Value> {
    grants
        .iter()
        .filter_map(|g| {
            let role_off = roles.rank(&g.role).is_none();
            let assets_off: AssetMap = g
                .assets
                .iter()
                .filter(|(_, r)| asset_roles.rank(r).is_none())
                .map(|(a, r)| (a.clone(), r.clone()))
                .collect();
            (role_off || !assets_off.is_empty()).then(|| {
                json!({
                    "id": g.id,
                    "subject_kind": g.subject.kind(),
                    "subject_id": g.subject.id(),
                    "subject": subject_label(g.subject, &g.subject_name),
                    "role": role_off.then_some(&g.role),
                    "asset_roles": assets_off,
                })
            })
        })
        .collect()
}

/// `PATCH …/integrations/{i}`: a new role ladder, asset-role ladder or default role, checked
/// as at creation. Under the integration row lock (the one asset removal takes, so no grant
/// changes meanwhile) the ladders change and everyone whose access they may alter is
/// announced: a grant naming a role or asset role off the new ladder gives nothing for it, and
/// a new order changes which role is highest. The answer lists those grants.
pub async fn update(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, integration_id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    let integration_id = parse_id(&integration_id, "integration id")?;
    let req: LadderChange = parse_body(body)?;
    if req.roles.is_none() && req.asset_roles.is_none() && req.default_role.is_none() {
        return Err(ApiError::bad_request("give roles, asset_roles, default_role or several of them"));
    }
    let request = Request::new("PATCH", &uri, &headers);

    let mut client = app.state.store.client().await?;
    let tx = client.transaction().await?;
    let mut integration = admin::integration_for_update(&tx, tenant_id, integration_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such integration"))?;
    let submitted = req.roles.is_some();
    let (roles, ladder) = role_ladder(&integration.app_kind, req.roles.unwrap_or_else(|| integration.roles.clone()))?;
    if submitted {
        check_submitted_roles(&ladder)?;
    }
    let asset_roles = asset_ladder(req.asset_roles.unwrap_or_else(|| integration.asset_roles.clone()))?;
    if asset_roles.roles().is_empty() && !integration.assets.is_empty() {
        return Err(ApiError::bad_request(format!(
            "asset_roles must not be empty while the integration has assets ({}); remove the assets first",
            integration.assets.len()
        )));
    }
    let default_role = match (req.default_role, &integration.default_role) {
        (Some(role), _) => {
            check_default_role(&ladder, &role)?;
            Some(role)
        }
        (None, Some(current)) if ladder.check(current).is_err() => {
            return Err(ApiError::bad_request(format!(
                "the new role ladder drops the default_role {current:?}; give a default_role on it"
            )))
        }
        (None, current) => current.clone(),
    };
    let roles_changed = roles != integration.roles;
    let asset_roles_changed = asset_roles.roles() != integration.asset_roles.as_slice();
    let default_changed = default_role != integration.default_role;
    if roles_changed || asset_roles_changed || default_changed {
        admin::update_ladders(&tx, tenant_id, integration_id, &roles, asset_roles.roles(), default_role.as_deref())
            .await?;
        let mut changes = Vec::new();
        if roles_changed {
            changes.push(format!(
                "role ladder of {} changed: {} → {}",
                integration.name,
                ladder_words(&integration.roles),
                ladder_words(&roles)
            ));
        }
        if asset_roles_changed {
            changes.push(format!(
                "asset-role ladder of {} changed: {} → {}",
                integration.name,
                ladder_words(&integration.asset_roles),
                ladder_words(asset_roles.roles())
            ));
        }
        if default_changed {
            changes.push(format!(
                "default role of {} changed: {} → {}",
                integration.name,
                integration.default_role.as_deref().unwrap_or("none"),
                default_role.as_deref().unwrap_or("none")
            ));
        }
        let summary = changes.join("; ");
        // Workspace grants depend on both ladders; the integration's own directory (whose
        // assignments are grants without assets) on the role ladder and the default role. Any
        // change may take access away (a role gone, or another one now highest).
        let users = admin::users_of_integration(&tx, tenant_id, integration_id).await?;
        let mut announced = 0;
        if roles_changed || asset_roles_changed {
            announced += users.workspace.len();
            announce_users(&app, &tx, tenant_id, users.workspace, &request, summary.clone(), true).await?;
        }
        if roles_changed || default_changed {
            announced += users.own_directory.len();
            let scope = integration_id.to_string();
            announce_users_in(&app, &tx, tenant_id, &scope, users.own_directory, &request, summary, true).await?;
        }
        tracing::info!(tenant = %tenant_id, integration = %integration_id, users = announced, "integration ladders changed");
    }
    let grants = admin::integration_grants(&*tx, tenant_id, integration_id).await?;
    tx.commit().await?;
    integration.roles = roles;
    integration.asset_roles = asset_roles.roles().to_vec();
    integration.default_role = default_role;
    let mut answer = json!(integration);
    answer["grants_without_effect"] = json!(grants_without_effect(&grants, &ladder, &asset_roles));
    Ok(Json(answer))
}
