//! Integrations: the tenant's connections to external apps. The app credential goes in and
//! never comes out: answers say only `has_credential`, and nothing logs it. A plain secret is
//! encrypted under the deployment's credential key before it is stored (`env:`/`file:`
//! references stay references); without a key it is refused with 400 unless plaintext was
//! explicitly allowed (see `unseat_store::credentials::Sealing`). The role ladder, asset-role
//! ladder and default role can change after creation ([`update`]); since that changes what
//! existing grants give, the change re-resolves everyone the integration's grants and own
//! directory reach, like a grant change.

use super::grants::{announce_users, announce_users_in, subject_label, Request};
use super::{authorize, null_as_default, parse_body, parse_id, parse_params, required_text, Body, Params, Path};
use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::App;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use unseat_domain::{rung_key, AssetLadder, AssetMap, RoleLadder, MAX_APP_RATE, MAX_ASSET_ID_CHARS, MIN_APP_RATE};
use unseat_store::admin::{self, Asset, GrantRow, NewIntegration};
use unseat_store::credentials::{Sealing, StoredCredential};

/// App kinds a connector exists for.
pub const APP_KINDS: &[&str] = &["business_hub", "scim"];

const MAX_CREDENTIAL_CHARS: usize = 8192;
const MAX_BASE_URL_CHARS: usize = 2048;

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

/// Checks an asset-role ladder an admin submits: no two names the same ignoring case, since
/// an app compares the tasks they stand for so (a stored ladder that predates the check stays).
fn check_submitted_asset_roles(ladder: &AssetLadder) -> Result<(), ApiError> {
    let roles = ladder.roles();
    for (i, a) in roles.iter().enumerate() {
        if let Some(b) = roles[..i].iter().find(|b| b.eq_ignore_ascii_case(a)) {
            return Err(ApiError::bad_request(format!("asset_roles: {b:?} and {a:?} differ only in case")));
        }
    }
    Ok(())
}

fn validate_assets(asset_roles: Vec<String>, assets: Vec<NewAssetBody>) -> Result<(Vec<String>, Vec<Asset>), ApiError> {
    let ladder = asset_ladder(asset_roles)?;
    check_submitted_asset_roles(&ladder)?;
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

/// The business roles Graph's `role` parameter takes (the BusinessUser `role` enum).
pub const META_BUSINESS_ROLES: [&str; 15] = [
    "ADMIN",
    "EMPLOYEE",
    "FINANCE_EDITOR",
    "FINANCE_ANALYST",
    "ADS_RIGHTS_REVIEWER",
    "DEVELOPER",
    "PARTNER_CENTER_ADMIN",
    "PARTNER_CENTER_ANALYST",
    "PARTNER_CENTER_OPERATIONS",
    "PARTNER_CENTER_MARKETING",
    "PARTNER_CENTER_EDUCATION",
    "MANAGE",
    "DEFAULT",
    "FINANCE_EDIT",
    "FINANCE_VIEW",
];

/// Checks a ladder an admin submits: no two of its roles may be the same name ignoring case, as
/// an IdP's role names are matched, and a business hub's roles are Meta's business roles as
/// Graph spells them (it refuses any other, so every task giving one would fail). A stored
/// ladder that predates the checks is left as it is, and a role it already holds (`stored`)
/// may stay: grants name it, and the connector sends roles upper case.
fn check_submitted_roles(app_kind: &str, ladder: &RoleLadder, stored: &[String]) -> Result<(), ApiError> {
    ladder.check_apart_ignoring_case().map_err(|e| ApiError::bad_request(format!("roles: {e}")))?;
    if app_kind != "business_hub" {
        return Ok(());
    }
    for role in ladder.roles() {
        if META_BUSINESS_ROLES.contains(&role.as_str()) || stored.contains(role) {
            continue;
        }
        return Err(ApiError::bad_request(
            match META_BUSINESS_ROLES.iter().find(|m| m.eq_ignore_ascii_case(role.trim())) {
                Some(meta) => format!("roles: {role:?} is spelt {meta:?} in Meta's Graph API; use that"),
                None => format!(
                    "roles: {role:?} is not a Meta business role (a business_hub's roles are: {})",
                    META_BUSINESS_ROLES.join(", ")
                ),
            },
        ));
    }
    Ok(())
}

fn check_default_role(ladder: &RoleLadder, role: &str) -> Result<(), ApiError> {
    ladder.check(role).map_err(|e| ApiError::bad_request(format!("default_role: {e}")))
}

/// Checks a create request; nothing is written unless all of it is valid.
fn validate(req: CreateIntegration, sealing: &Sealing, caller: &Caller) -> Result<NewIntegration, ApiError> {
    let name = integration_name(&req.name)?;
    if !APP_KINDS.contains(&req.app_kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "app_kind {:?} is not supported (supported: {})",
            req.app_kind,
            APP_KINDS.join(", ")
        )));
    }
    let base_url = base_url(&req.base_url)?;
    let (roles, ladder) = role_ladder(&req.app_kind, req.roles)?;
    check_submitted_roles(&req.app_kind, &ladder, &[])?;
    let default_role = req.default_role.filter(|r| !r.is_empty());
    if let Some(role) = &default_role {
        check_default_role(&ladder, role)?;
    }
    let settings = settings(&req.app_kind, req.settings.unwrap_or_else(|| json!({})))?;
    let (asset_roles, assets) = validate_assets(req.asset_roles, req.assets)?;
    let credential = seal_credential(sealing, caller, &req.credential.unwrap_or_default())?;
    Ok(NewIntegration {
        name,
        app_kind: req.app_kind,
        base_url,
        settings,
        credential,
        roles,
        default_role,
        asset_roles,
        assets,
    })
}

fn integration_name(name: &str) -> Result<String, ApiError> {
    required_text(name, "name", 200)
}

/// The base URL to store: absolute http(s), with nothing the connector could not append a
/// path to and no secret in it, without its trailing slash.
fn base_url(submitted: &str) -> Result<String, ApiError> {
    if submitted.chars().count() > MAX_BASE_URL_CHARS {
        return Err(ApiError::bad_request(format!("base_url must be at most {MAX_BASE_URL_CHARS} characters")));
    }
    let base_url = url::Url::parse(submitted.trim())
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
    Ok(base_url.to_string().trim_end_matches('/').to_string())
}

/// The settings object to store, checked for the app kind ([`check_settings`]).
fn settings(app_kind: &str, settings: Value) -> Result<Value, ApiError> {
    let Some(fields) = settings.as_object() else {
        return Err(ApiError::bad_request("settings must be a JSON object"));
    };
    check_settings(app_kind, fields)?;
    Ok(settings)
}

/// Whether two stored base URLs (both checked by [`base_url`]) have one origin: scheme, host
/// and port, ignoring case and the scheme's default port.
fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// The credential to store ([`Sealing::seal`]); an empty one is no credential. The error names
/// the rule broken, never the submitted value.
fn seal_credential(sealing: &Sealing, caller: &Caller, credential: &str) -> Result<StoredCredential, ApiError> {
    // A reference names a secret of the deployment (its environment or credential directory),
    // not of the tenant: a tenant's admin naming one could have any of the deployment's app
    // secrets sent to an address of their choosing.
    let reference = credential.starts_with("env:") || credential.starts_with("file:");
    if reference && !matches!(caller, Caller::Operator) {
        return Err(ApiError::forbidden(
            "only the operator may give a credential as an env: or file: reference (it names a secret of the \
             deployment, not of the tenant); give the secret itself, or an enc:v1: value",
        ));
    }
    if credential.chars().count() > MAX_CREDENTIAL_CHARS {
        return Err(ApiError::bad_request(format!("credential must be at most {MAX_CREDENTIAL_CHARS} characters")));
    }
    // Sent in a header or a query parameter: a line break or other control character would
    // fail every request, and spaces around a pasted token are a mistake, never part of it.
    if credential.chars().any(char::is_control) {
        return Err(ApiError::bad_request("credential must not contain control characters (line breaks, tabs)"));
    }
    if credential.trim() != credential {
        return Err(ApiError::bad_request("credential must not start or end with spaces"));
    }
    sealing.seal(credential).map_err(|e| ApiError::bad_request(format!("credential: {e}")))
}

/// The settings the connectors of `app_kind` read.
fn known_settings(app_kind: &str) -> &'static [&'static str] {
    match app_kind {
        "business_hub" => &["business_id", "reported_roles", "rate_limit_per_second"],
        "scim" => &["match_attribute", "deprovision", "rate_limit_per_second"],
        _ => &["rate_limit_per_second"],
    }
}

/// The settings a connector reads, checked as it reads them (`unseat-connector`'s
/// `business_hub` and `scim` adapters and its HTTP client), so that an integration the
/// connectors would refuse is refused here instead of failing every task of it.
fn check_settings(app_kind: &str, fields: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    // A misspelt setting would be stored and silently ignored, the connector doing the
    // default instead (deactivating where the admin asked to delete).
    let known = known_settings(app_kind);
    if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "settings.{unknown} is not a setting of a {app_kind} integration (its settings: {})",
            known.join(", ")
        )));
    }
    if app_kind == "business_hub" {
        let id = match fields.get("business_id") {
            Some(Value::String(s)) => s.trim().to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(ApiError::bad_request("settings.business_id is required for a business_hub integration")),
        };
        if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::bad_request("settings.business_id must be the business's numeric id"));
        }
        match fields.get("reported_roles") {
            None => {}
            Some(Value::String(s)) if s == "exact" || s == "base" => {}
            Some(_) => return Err(ApiError::bad_request("settings.reported_roles must be exact or base")),
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
        Some(v) if v.as_f64().is_some_and(|r| (MIN_APP_RATE..=MAX_APP_RATE).contains(&r)) => Ok(()),
        Some(_) => Err(ApiError::bad_request(format!(
            "settings.rate_limit_per_second must be a number from {MIN_APP_RATE} (a call every 100 s) to {MAX_APP_RATE}"
        ))),
    }
}

pub async fn create(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    let new = validate(parse_body(body)?, &app.state.credentials, &caller)?;
    let integration = app.state.store.create_integration(tenant_id, &new).await?;
    tracing::info!(tenant = %tenant_id, integration = %integration.id, app = %integration.app_kind, by = %caller.actor(), "integration created");
    Ok((StatusCode::CREATED, Json(json!(integration))))
}

pub async fn list(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    parse_params(params, &[])?;
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

/// `DELETE …/integrations/{i}`: unseat stops managing the app. Whatever people hold in the app
/// stays as it is (nothing is removed there); the grants, assets, desired states, the
/// integration's own directory and the tokens scoped to it go (see
/// [`unseat_store::Store::delete_integration`]), and its log stays. The answer counts what went.
pub async fn delete(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, integration_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    let integration_id = parse_id(&integration_id, "integration id")?;
    let deleted = app
        .state
        .store
        .delete_integration(tenant_id, integration_id, &caller.actor())
        .await?
        .ok_or_else(|| ApiError::not_found("no such integration"))?;
    tracing::info!(
        tenant = %tenant_id, integration = %integration_id, grants = deleted.grants, tokens = deleted.tokens,
        directory_users = deleted.directory_users, tasks_superseded = deleted.tasks_superseded, by = %caller.actor(),
        "integration deleted"
    );
    Ok(Json(json!({
        "deleted": deleted.integration,
        "grants": deleted.grants,
        "tokens": deleted.tokens,
        "directory_users": deleted.directory_users,
        "tasks_superseded": deleted.tasks_superseded,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntegrationChange {
    name: Option<String>,
    base_url: Option<String>,
    /// Replaces the whole settings object.
    settings: Option<Value>,
    /// A new credential (rotation); empty for none.
    credential: Option<String>,
    /// Pause (true: no app calls, the tasks wait) or resume (false).
    paused: Option<bool>,
    /// Never changes: read only to refuse it in words rather than as an unknown field.
    app_kind: Option<Value>,
    /// The new role ladder, highest first; empty for a seat-only app (see [`role_ladder`]).
    roles: Option<Vec<String>>,
    /// The new asset-role ladder, highest first.
    asset_roles: Option<Vec<String>>,
    default_role: Option<String>,
}

impl IntegrationChange {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.base_url.is_none()
            && self.settings.is_none()
            && self.credential.is_none()
            && self.paused.is_none()
            && self.roles.is_none()
            && self.asset_roles.is_none()
            && self.default_role.is_none()
    }
}

/// "ADMIN, EMPLOYEE", or "none" for an empty ladder.
fn ladder_words(roles: &[String]) -> String {
    if roles.is_empty() {
        "none".to_string()
    } else {
        roles.join(", ")
    }
}

/// The rung of `new` that spells `role` otherwise (the same name ignoring case and surrounding
/// spaces), when `new` does not have `role` itself.
fn respelt(role: &str, new: &[String]) -> Option<String> {
    if new.iter().any(|n| n == role) {
        return None;
    }
    new.iter().find(|n| rung_key(n) == rung_key(role)).cloned()
}

/// (old, new) for each rung of `old` that `new` spells otherwise: grants and the default role
/// naming it follow the new spelling, so re-spelling a ladder (`Admin` to Graph's `ADMIN`)
/// takes no access away.
fn respellings(old: &[String], new: &[String]) -> Vec<(String, String)> {
    old.iter().filter_map(|o| respelt(o, new).map(|n| (o.clone(), n))).collect()
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

/// `PATCH …/integrations/{i}`: a new name, connection (base_url, settings, credential) or
/// role ladder, asset-role ladder or default role, each checked as at creation; nothing is
/// written unless all of it is valid.
///
/// The connection changes what the connectors call and how, not who has access: it is written
/// and takes effect at the next task (connectors read the integration for every task), and a
/// new credential replaces the old one unseen. The ladders change access: under the
/// integration row lock (the one asset removal takes, so no grant changes meanwhile) they
/// change and everyone whose access they may alter is announced: a grant naming a role or
/// asset role off the new ladder gives nothing for it, and a new order changes which role is
/// highest. The answer lists those grants.
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
    let req: IntegrationChange = parse_body(body)?;
    if req.app_kind.is_some() {
        return Err(ApiError::bad_request(
            "app_kind cannot change: create an integration for the other app (its grants and log stay with this one)",
        ));
    }
    if req.is_empty() {
        return Err(ApiError::bad_request(
            "give name, base_url, settings, credential, paused, roles, asset_roles, default_role or several of them",
        ));
    }
    let new_name = req.name.as_deref().map(integration_name).transpose()?;
    let new_base_url = req.base_url.as_deref().map(base_url).transpose()?;
    let credential =
        req.credential.as_deref().map(|c| seal_credential(&app.state.credentials, &caller, c)).transpose()?;
    let request = Request::new("PATCH", &uri, &headers, &caller);

    let mut client = app.state.store.client().await?;
    let tx = client.transaction().await?;
    let mut integration = admin::integration_for_update(&tx, tenant_id, integration_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such integration"))?;
    let new_settings = req.settings.map(|s| settings(&integration.app_kind, s)).transpose()?;
    let connection = admin::Connection {
        name: new_name.filter(|n| *n != integration.name),
        base_url: new_base_url.filter(|u| *u != integration.base_url),
        settings: new_settings.filter(|s| *s != integration.settings),
        credential,
        paused: req.paused.filter(|p| *p != integration.paused_at.is_some()),
    };
    let submitted = req.roles.is_some();
    let (roles, ladder) = role_ladder(&integration.app_kind, req.roles.unwrap_or_else(|| integration.roles.clone()))?;
    if submitted {
        check_submitted_roles(&integration.app_kind, &ladder, &integration.roles)?;
    }
    let asset_roles_submitted = req.asset_roles.is_some();
    let asset_roles = asset_ladder(req.asset_roles.unwrap_or_else(|| integration.asset_roles.clone()))?;
    if asset_roles_submitted {
        check_submitted_asset_roles(&asset_roles)?;
    }
    if asset_roles.roles().is_empty() && !integration.assets.is_empty() {
        return Err(ApiError::bad_request(format!(
            "asset_roles must not be empty while the integration has assets ({}); remove the assets first",
            integration.assets.len()
        )));
    }
    let default_role = match (req.default_role, &integration.default_role) {
        // Back to the lowest role of the ladder.
        (Some(role), _) if role.is_empty() => None,
        (Some(role), _) => {
            check_default_role(&ladder, &role)?;
            Some(role)
        }
        // Re-spelt with the ladder.
        (None, Some(current)) if ladder.check(current).is_err() && respelt(current, &roles).is_some() => {
            respelt(current, &roles)
        }
        (None, Some(current)) if ladder.check(current).is_err() => {
            return Err(ApiError::bad_request(format!(
                "the new role ladder drops the default_role {current:?}; give a default_role on it"
            )))
        }
        (None, current) => current.clone(),
    };
    // A reference names a secret of the deployment that the operator gave for this app and
    // business: only the operator may send it elsewhere (another address or business), as
    // only the operator may give one.
    let business = |s: &Value| s.get("business_id").map(|b| b.to_string().trim_matches('"').to_string());
    let moves = connection.base_url.is_some()
        || connection.settings.as_ref().is_some_and(|s| business(s) != business(&integration.settings));
    if moves
        && connection.credential.is_none()
        && !matches!(caller, Caller::Operator)
        && admin::credential_is_reference(&tx, tenant_id, integration_id).await?
    {
        return Err(ApiError::forbidden(
            "this integration's credential is a secret of the deployment (an env: or file: reference): only the \
             operator may change its base_url or business, or give a credential of your own in the same change",
        ));
    }
    // The stored credential goes only where it was given for: a base_url at another origin
    // (scheme, host or port) comes with the credential again, or any writer could have the
    // connector send it to a server of theirs.
    if let Some(new_url) = &connection.base_url {
        if integration.has_credential && connection.credential.is_none() && !same_origin(&integration.base_url, new_url)
        {
            return Err(ApiError::bad_request(
                "a base_url at another scheme, host or port needs the credential again in the same change: the \
                 stored credential is sent only to the address it was given for",
            ));
        }
    }
    let roles_changed = roles != integration.roles;
    let asset_roles_changed = asset_roles.roles() != integration.asset_roles.as_slice();
    let default_changed = default_role != integration.default_role;
    if roles_changed || asset_roles_changed || default_changed {
        admin::update_ladders(&tx, tenant_id, integration_id, &roles, asset_roles.roles(), default_role.as_deref())
            .await?;
        let role_spellings = respellings(&integration.roles, &roles);
        let asset_spellings = respellings(&integration.asset_roles, asset_roles.roles());
        let respelt_grants =
            admin::respell_grants(&tx, tenant_id, integration_id, &role_spellings, &asset_spellings).await?;
        let shown_name = connection.name.as_deref().unwrap_or(&integration.name);
        let mut changes = Vec::new();
        if roles_changed {
            changes.push(format!(
                "role ladder of {} changed: {} → {}",
                shown_name,
                ladder_words(&integration.roles),
                ladder_words(&roles)
            ));
        }
        if asset_roles_changed {
            changes.push(format!(
                "asset-role ladder of {} changed: {} → {}",
                shown_name,
                ladder_words(&integration.asset_roles),
                ladder_words(asset_roles.roles())
            ));
        }
        if default_changed {
            changes.push(format!(
                "default role of {} changed: {} → {}",
                shown_name,
                integration.default_role.as_deref().unwrap_or("none"),
                default_role.as_deref().unwrap_or("none")
            ));
        }
        if respelt_grants > 0 {
            let spellings: Vec<String> =
                role_spellings.iter().chain(&asset_spellings).map(|(o, n)| format!("{o} → {n}")).collect();
            let what = if respelt_grants == 1 { "grant follows" } else { "grants follow" };
            changes.push(format!("{respelt_grants} {what} the new spelling ({})", spellings.join(", ")));
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
        tracing::info!(tenant = %tenant_id, integration = %integration_id, users = announced, by = %caller.actor(), "integration ladders changed");
    }
    let changed = connection.changed();
    if !changed.is_empty() {
        integration.paused_at = admin::update_connection(&tx, tenant_id, integration_id, &connection).await?;
    }
    let grants = admin::integration_grants(&*tx, tenant_id, integration_id).await?;
    tx.commit().await?;
    if !changed.is_empty() {
        // Names the fields, never the credential.
        tracing::info!(tenant = %tenant_id, integration = %integration_id, changed = %changed.join(", "), by = %caller.actor(), "integration connection changed");
    }
    let admin::Connection { name, base_url, settings, credential, .. } = connection;
    integration.name = name.unwrap_or(integration.name);
    integration.base_url = base_url.unwrap_or(integration.base_url);
    integration.settings = settings.unwrap_or(integration.settings);
    if let Some(credential) = credential {
        integration.has_credential = !credential.is_empty();
    }
    integration.roles = roles;
    integration.asset_roles = asset_roles.roles().to_vec();
    integration.default_role = default_role;
    let mut answer = json!(integration);
    answer["grants_without_effect"] = json!(grants_without_effect(&grants, &ladder, &asset_roles));
    Ok(Json(answer))
}
