//! Grants: shares of an integration with a team or one user, each with a role. A grant change
//! alters who has access, so each one writes, in its own transaction, a `DirectoryChanged`
//! outbox row naming the users the grant reaches; the resolver recomputes their access.

use super::{authorize, parse_body, parse_id, parse_params, unique_assets, unique_assets_or_none, Body, Params, Path};
use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::App;
use axum::extract::State;
use axum::http::{header::USER_AGENT, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use unseat_bus::messages::{DirectoryChanged, Trigger, MESSAGE_VERSION};
use unseat_domain::{AccessModel, AssetLadder, AssetMap, LadderError, RoleLadder};
use unseat_store::admin::{self, GrantRow, GrantSubject, Integration};
use unseat_store::Transaction;
use uuid::Uuid;

pub fn grant_json(g: &GrantRow) -> Value {
    let (team_id, user_id) = match g.subject {
        GrantSubject::Team(id) => (Some(id), None),
        GrantSubject::User(id) => (None, Some(id)),
    };
    json!({
        "id": g.id,
        "integration_id": g.integration_id,
        "subject_kind": g.subject.kind(),
        "team_id": team_id,
        "user_id": user_id,
        "subject_name": g.subject_name,
        "role": g.role,
        "assets": g.assets,
        "created_at": g.created_at,
    })
}

/// The request line of a grant or asset change, for the Automation Log entry it causes.
pub(crate) struct Request {
    method: &'static str,
    path: String,
    user_agent: String,
    /// Who made the change ([`Caller::actor`]); the log entry's summary ends with it.
    actor: String,
}

impl Request {
    pub(crate) fn new(method: &'static str, uri: &Uri, headers: &HeaderMap, caller: &Caller) -> Self {
        let user_agent = headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(|v| v.chars().take(200).collect())
            .unwrap_or_else(|| "console".to_string());
        Self { method, path: uri.path().to_string(), user_agent, actor: caller.actor() }
    }
}

/// "{act_1: MANAGE}" as "act_1 MANAGE", or "none".
fn asset_words(assets: &AssetMap) -> String {
    if assets.is_empty() {
        return "none".to_string();
    }
    assets.iter().map(|(a, r)| format!("{a} {r}")).collect::<Vec<_>>().join(", ")
}

pub(crate) fn subject_label(subject: GrantSubject, name: &str) -> String {
    format!("{} {name}", subject.kind())
}

/// Writes the outbox row announcing a grant change to the users it reaches (none when the
/// grant reaches nobody).
async fn announce(
    app: &App,
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    subject: GrantSubject,
    request: &Request,
    summary: String,
    may_revoke: bool,
) -> Result<(), ApiError> {
    let users = admin::reached_users(tx, tenant_id, subject).await?;
    announce_users(app, tx, tenant_id, users, request, summary, may_revoke).await
}

/// Writes, in the caller's transaction, the outbox row asking the resolver to look at `users`
/// of the workspace directory again (none when `users` is empty): the same resolve-and-apply
/// path as an IdP change.
pub(crate) async fn announce_users(
    app: &App,
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    users: Vec<Uuid>,
    request: &Request,
    summary: String,
    may_revoke: bool,
) -> Result<(), ApiError> {
    announce_users_in(app, tx, tenant_id, unseat_store::directory::WORKSPACE, users, request, summary, may_revoke).await
}

/// [`announce_users`] for the users of one directory, `scope`: `workspace` or an integration's
/// id (its own directory, whose assignments the resolver turns into that integration's grants).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn announce_users_in(
    app: &App,
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    scope: &str,
    users: Vec<Uuid>,
    request: &Request,
    summary: String,
    may_revoke: bool,
) -> Result<(), ApiError> {
    if users.is_empty() {
        return Ok(());
    }
    let message_id = unseat_bus::messages::new_message_id();
    let msg = DirectoryChanged {
        v: MESSAGE_VERSION,
        message_id,
        tenant_id,
        scope: scope.to_string(),
        trigger: Trigger {
            method: request.method.to_string(),
            path: request.path.clone(),
            user_agent: request.user_agent.clone(),
            received_at: Utc::now(),
            summary: format!("{summary}; by {}", request.actor),
            may_revoke,
        },
        users,
    };
    let payload = serde_json::to_value(&msg).map_err(|e| {
        tracing::error!(error = %e, "directory message could not be encoded");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })?;
    unseat_store::outbox::enqueue(
        tx,
        tenant_id,
        message_id,
        &app.state.directory_exchange,
        unseat_bus::DIRECTORY_ROUTING_KEY,
        &payload,
    )
    .await?;
    Ok(())
}

/// The integration with the access model its grants are checked against.
async fn integration(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid) -> Result<(Integration, AccessModel), ApiError> {
    let integration = admin::integration_for_grant(tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such integration"))?;
    let model = (|| {
        Ok::<_, unseat_domain::LadderError>(AccessModel {
            roles: RoleLadder::for_integration(integration.roles.clone())?,
            asset_roles: AssetLadder::parse(integration.asset_roles.clone())?,
            assets: integration.assets.iter().map(|a| a.asset_id.clone()).collect(),
        })
    })()
    .map_err(|e| {
        tracing::error!(integration = %id, error = %e, "stored ladder is invalid");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })?;
    Ok((integration, model))
}

/// Checks a grant's role and assets against the integration: a grant gives exactly what it
/// says or is refused.
fn check_grant(model: &AccessModel, role: &str, assets: &AssetMap) -> Result<(), ApiError> {
    if assets.len() > MAX_GRANT_ASSETS {
        return Err(ApiError::bad_request(format!("a grant names at most {MAX_GRANT_ASSETS} assets")));
    }
    model.check_grant(role, assets).map_err(|e| match e {
        LadderError::UnknownRole(_) => ApiError::bad_request(format!("role: {e}")),
        e => ApiError::bad_request(format!("assets: {e}")),
    })
}

/// Most assets one grant may name (bounded input).
const MAX_GRANT_ASSETS: usize = 1000;

/// True when a grant change can take something away: a lower role, or an asset dropped or
/// lowered. Such a change is announced so that the resolver also logs the access it kept.
fn lowers(model: &AccessModel, from: (&str, &AssetMap), to: (&str, &AssetMap)) -> bool {
    let rank = |r: &str| model.roles.rank(r).unwrap_or(usize::MAX);
    let asset_rank = |r: Option<&String>| r.and_then(|r| model.asset_roles.rank(r)).unwrap_or(usize::MAX);
    rank(to.0) > rank(from.0) || from.1.iter().any(|(asset, role)| asset_rank(to.1.get(asset)) > asset_rank(Some(role)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGrant {
    team_id: Option<String>,
    user_id: Option<String>,
    /// May be left out on an integration with a one-role ladder (a seat-only app): the grant
    /// then gives that role (the seat).
    role: Option<String>,
    #[serde(default, deserialize_with = "unique_assets_or_none")]
    assets: AssetMap,
}

/// The role a new grant gives: the one asked for, or the only role of a one-role ladder.
fn grant_role(model: &AccessModel, asked: Option<String>) -> Result<String, ApiError> {
    match (asked, model.roles.roles()) {
        (Some(role), _) => Ok(role),
        (None, [only]) => Ok(only.clone()),
        (None, ladder) => Err(ApiError::bad_request(format!(
            "role is required: the integration's role ladder has {} roles ({})",
            ladder.len(),
            ladder.join(", ")
        ))),
    }
}

pub async fn create(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, integration_id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let integration_id = parse_id(&integration_id, "integration id")?;
    let tenant_id = authorize(&app, &caller, &tenant, Need::Share(integration_id)).await?;
    let req: CreateGrant = parse_body(body)?;
    let subject = match (req.team_id.as_deref(), req.user_id.as_deref()) {
        (Some(team), None) => GrantSubject::Team(parse_id(team, "team_id")?),
        (None, Some(user)) => GrantSubject::User(parse_id(user, "user_id")?),
        _ => return Err(ApiError::bad_request("give exactly one of team_id and user_id")),
    };
    let request = Request::new("POST", &uri, &headers, &caller);

    let mut client = app.state.store.client().await?;
    let tx = client.transaction().await?;
    let (integration, model) = integration(&tx, tenant_id, integration_id).await?;
    if admin::access_sources(&tx, tenant_id, integration_id).await?.own_directory {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{} takes its users from its own SCIM endpoint (the app's assignments in the IdP); \
                 assign people there instead of sharing it here",
                integration.name
            ),
        ));
    }
    let role = grant_role(&model, req.role)?;
    check_grant(&model, &role, &req.assets)?;
    let name = admin::subject_name(&tx, tenant_id, subject)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no {} with that id in this tenant's directory", subject.kind())))?;
    let grant = admin::insert_grant(&tx, tenant_id, integration_id, subject, &name, &role, &req.assets).await?;
    let summary = format!("grant {} on {} to {} added", grant.role, integration.name, subject_label(subject, &name));
    announce(&app, &tx, tenant_id, subject, &request, summary, false).await?;
    tx.commit().await?;
    tracing::info!(tenant = %tenant_id, integration = %integration_id, grant = %grant.id, kind = subject.kind(), by = %caller.actor(), "grant added");
    Ok((StatusCode::CREATED, Json(grant_json(&grant))))
}

pub async fn list(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, integration_id)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    parse_params(params, &[])?;
    let integration_id = parse_id(&integration_id, "integration id")?;
    if app.state.store.integration(tenant_id, integration_id).await?.is_none() {
        return Err(ApiError::not_found("no such integration"));
    }
    let grants = app.state.store.grants(tenant_id, integration_id).await?;
    Ok(Json(json!({ "grants": grants.iter().map(grant_json).collect::<Vec<_>>() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateGrant {
    role: Option<String>,
    /// The grant's whole asset map after the change (an asset left out is removed).
    #[serde(default, deserialize_with = "unique_assets")]
    assets: Option<AssetMap>,
}

pub async fn update(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, integration_id, grant_id)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let integration_id = parse_id(&integration_id, "integration id")?;
    let tenant_id = authorize(&app, &caller, &tenant, Need::Share(integration_id)).await?;
    let grant_id = parse_id(&grant_id, "grant id")?;
    let req: UpdateGrant = parse_body(body)?;
    let request = Request::new("PATCH", &uri, &headers, &caller);

    if req.role.is_none() && req.assets.is_none() {
        return Err(ApiError::bad_request("give role, assets or both"));
    }
    let mut client = app.state.store.client().await?;
    let tx = client.transaction().await?;
    let (integration, model) = integration(&tx, tenant_id, integration_id).await?;
    let mut grant = admin::grant_for_update(&tx, tenant_id, integration_id, grant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such grant"))?;
    let role = req.role.unwrap_or_else(|| grant.role.clone());
    let assets = req.assets.unwrap_or_else(|| grant.assets.clone());
    check_grant(&model, &role, &assets)?;
    if grant.role == role && grant.assets == assets {
        // Nothing changes, so nothing is announced.
        return Ok(Json(grant_json(&grant)));
    }
    admin::update_grant(&tx, tenant_id, integration_id, grant_id, &role, &assets).await?;
    let mut changes = Vec::new();
    if grant.role != role {
        changes.push(format!("role {} → {role}", grant.role));
    }
    if grant.assets != assets {
        changes.push(format!("assets {} → {}", asset_words(&grant.assets), asset_words(&assets)));
    }
    let summary = if grant.assets == assets {
        format!(
            "grant on {} to {} changed from {} to {role}",
            integration.name,
            subject_label(grant.subject, &grant.subject_name),
            grant.role
        )
    } else {
        format!(
            "grant on {} to {} changed: {}",
            integration.name,
            subject_label(grant.subject, &grant.subject_name),
            changes.join(", ")
        )
    };
    let may_revoke = lowers(&model, (&grant.role, &grant.assets), (&role, &assets));
    announce(&app, &tx, tenant_id, grant.subject, &request, summary, may_revoke).await?;
    tx.commit().await?;
    tracing::info!(tenant = %tenant_id, integration = %integration_id, grant = %grant_id, may_revoke, by = %caller.actor(), "grant changed");
    grant.role = role;
    grant.assets = assets;
    Ok(Json(grant_json(&grant)))
}

pub async fn delete(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, integration_id, grant_id)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let integration_id = parse_id(&integration_id, "integration id")?;
    let tenant_id = authorize(&app, &caller, &tenant, Need::Share(integration_id)).await?;
    let grant_id = parse_id(&grant_id, "grant id")?;
    let request = Request::new("DELETE", &uri, &headers, &caller);

    let mut client = app.state.store.client().await?;
    let tx = client.transaction().await?;
    let (integration, _) = integration(&tx, tenant_id, integration_id).await?;
    let grant = admin::grant_for_update(&tx, tenant_id, integration_id, grant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such grant"))?;
    admin::delete_grant(&tx, tenant_id, integration_id, grant_id).await?;
    let summary = format!(
        "grant {} on {} to {} removed",
        grant.role,
        integration.name,
        subject_label(grant.subject, &grant.subject_name)
    );
    announce(&app, &tx, tenant_id, grant.subject, &request, summary, true).await?;
    tx.commit().await?;
    tracing::info!(tenant = %tenant_id, integration = %integration_id, grant = %grant_id, by = %caller.actor(), "grant removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}
