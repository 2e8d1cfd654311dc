//! An integration's assets (ad accounts, pages, catalogs…) after it was created: list, add,
//! rename, remove. Adding or renaming an asset gives nobody anything (a grant has to name it).
//! Removing one takes it out of every grant that names it and, in the same transaction,
//! announces every user those grants reach or whose desired state holds the asset: the
//! resolver recomputes their access and the connector takes the asset away in the app, the same
//! resolve-and-apply path as any grant change.

use super::grants::{announce_users, subject_label, Request};
use super::{
    authorize, null_as_default, optional_text, parse_body, parse_id, parse_params, required_text, Body, Params, Path,
};
use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::App;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use unseat_domain::MAX_ASSET_ID_CHARS;
use unseat_store::admin::{self, Asset, Integration};
use unseat_store::Transaction;
use uuid::Uuid;

/// Most assets one integration may hold (the same bound as at creation).
pub const MAX_ASSETS: usize = 1000;
const MAX_KIND_CHARS: usize = 64;
const MAX_NAME_CHARS: usize = 200;
/// How many grants the log's summary of a removal names before it counts the rest.
const SUMMARY_GRANTS: usize = 5;

pub(crate) fn kind(raw: &str) -> Result<String, ApiError> {
    required_text(raw, "asset kind", MAX_KIND_CHARS)
}

pub(crate) fn name(raw: &str) -> Result<String, ApiError> {
    optional_text(raw, "asset name", MAX_NAME_CHARS)
}

/// The integration, locked against concurrent grant and asset changes until the transaction
/// ends.
async fn locked(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid) -> Result<Integration, ApiError> {
    admin::integration_for_update(tx, tenant_id, id).await?.ok_or_else(|| ApiError::not_found("no such integration"))
}

fn no_such_asset(asset_id: &str) -> ApiError {
    ApiError::not_found(format!("the integration has no asset {asset_id:?}"))
}

/// `GET …/integrations/{i}/assets`.
pub async fn list(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, integration)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    parse_params(params, &[])?;
    let id = parse_id(&integration, "integration id")?;
    let integration =
        app.state.store.integration(tenant_id, id).await?.ok_or_else(|| ApiError::not_found("no such integration"))?;
    Ok(Json(json!({ "asset_roles": integration.asset_roles, "assets": integration.assets })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAsset {
    asset_id: String,
    kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    name: String,
}

/// `POST …/integrations/{i}/assets`: one more asset grants may name.
pub async fn add(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, integration_id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    let integration_id = parse_id(&integration_id, "integration id")?;
    let req: NewAsset = parse_body(body)?;
    let asset = Asset {
        asset_id: required_text(&req.asset_id, "asset_id", MAX_ASSET_ID_CHARS)?,
        kind: kind(&req.kind)?,
        name: name(&req.name)?,
    };
    let request = Request::new("POST", &uri, &headers, &caller);

    let mut client = app.state.store.client().await?;
    let tx = client.transaction().await?;
    let integration = locked(&tx, tenant_id, integration_id).await?;
    if integration.asset_roles.is_empty() {
        return Err(ApiError::bad_request("the integration has no asset_roles ladder, so it cannot have assets"));
    }
    if integration.assets.len() >= MAX_ASSETS {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("the integration already has {MAX_ASSETS} assets, the most it may have"),
        ));
    }
    admin::insert_asset(&tx, tenant_id, integration_id, &asset).await?;
    // Grants cannot name an unknown asset and lose an asset when it is removed, so normally no
    // grant names this one; should one still do (written before either rule held), the users it
    // reaches are looked at again, because it now gives them the asset.
    let grants = admin::grants_naming_asset(&tx, tenant_id, integration_id, &asset.asset_id).await?;
    if !grants.is_empty() {
        let users = admin::users_of_asset(&tx, tenant_id, integration_id, &asset.asset_id, &grants).await?;
        let summary = format!("asset {} added to {}", asset.asset_id, integration.name);
        announce_users(&app, &tx, tenant_id, users, &request, summary, false).await?;
    }
    tx.commit().await?;
    tracing::info!(tenant = %tenant_id, integration = %integration_id, by = %caller.actor(), "asset added");
    Ok((StatusCode::CREATED, Json(json!(asset))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssetUpdate {
    kind: Option<String>,
    name: Option<String>,
}

/// `PATCH …/integrations/{i}/assets/{asset}`: a new kind or name. The id is the app's and
/// stays; changing neither access nor the app, it announces nothing.
pub async fn update(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, integration_id, asset_id)): Path<(String, String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    let integration_id = parse_id(&integration_id, "integration id")?;
    let req: AssetUpdate = parse_body(body)?;
    if req.kind.is_none() && req.name.is_none() {
        return Err(ApiError::bad_request("give kind, name or both"));
    }
    let new_kind = req.kind.as_deref().map(kind).transpose()?;
    let new_name = req.name.as_deref().map(name).transpose()?;

    let mut client = app.state.store.client().await?;
    let tx = client.transaction().await?;
    let integration = locked(&tx, tenant_id, integration_id).await?;
    let mut asset =
        integration.assets.into_iter().find(|a| a.asset_id == asset_id).ok_or_else(|| no_such_asset(&asset_id))?;
    if let Some(k) = new_kind {
        asset.kind = k;
    }
    if let Some(n) = new_name {
        asset.name = n;
    }
    admin::update_asset(&tx, tenant_id, integration_id, &asset).await?;
    tx.commit().await?;
    tracing::info!(tenant = %tenant_id, integration = %integration_id, by = %caller.actor(), "asset changed");
    Ok(Json(json!(asset)))
}

/// `DELETE …/integrations/{i}/assets/{asset}`: the asset goes, from the integration and from
/// every grant; whoever held it loses it in the app.
pub async fn delete(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, integration_id, asset_id)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    let integration_id = parse_id(&integration_id, "integration id")?;
    let request = Request::new("DELETE", &uri, &headers, &caller);

    let mut client = app.state.store.client().await?;
    let tx = client.transaction().await?;
    let integration = locked(&tx, tenant_id, integration_id).await?;
    let Some(asset) = integration.assets.iter().find(|a| a.asset_id == asset_id) else {
        return Err(no_such_asset(&asset_id));
    };
    let grants = admin::grants_naming_asset(&tx, tenant_id, integration_id, &asset_id).await?;
    // Who to look at again is read before the grants lose the asset.
    let users = admin::users_of_asset(&tx, tenant_id, integration_id, &asset_id, &grants).await?;
    admin::delete_asset(&tx, tenant_id, integration_id, &asset_id).await?;
    let label = if asset.name.is_empty() { asset_id.clone() } else { format!("{asset_id} ({})", asset.name) };
    let summary = if grants.is_empty() {
        format!("asset {label} removed from {}", integration.name)
    } else {
        let mut from: Vec<String> =
            grants.iter().take(SUMMARY_GRANTS).map(|g| subject_label(g.subject, &g.subject_name)).collect();
        if grants.len() > SUMMARY_GRANTS {
            from.push(format!("{} more", grants.len() - SUMMARY_GRANTS));
        }
        format!("asset {label} removed from {} and from the grants of {}", integration.name, from.join(", "))
    };
    announce_users(&app, &tx, tenant_id, users, &request, summary, true).await?;
    tx.commit().await?;
    tracing::info!(tenant = %tenant_id, integration = %integration_id, grants = grants.len(), by = %caller.actor(), "asset removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}
