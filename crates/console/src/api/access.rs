//! Explain and preview: what the grants give a user now and why, and what a directory change
//! would do before anyone makes it. Both run the resolver's own planning
//! (`unseat_resolver::plan`, which calls the domain rules) on the current state, so the answer
//! is the decision the resolver would take; neither changes anything.

use super::{authorize, parse_body, parse_id, Body, Path};
use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::App;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use unseat_domain::{Access, Decision, Held};
use unseat_resolver::{Plan, Planned, BATCH_USERS};
use unseat_store::access::{self, Supposition};
use unseat_store::StoreError;

/// Most per-user outcomes a preview lists; the counts cover every user.
const MAX_PREVIEW_OUTCOMES: usize = 1000;

fn held_json(h: Option<&Held>) -> Value {
    match h {
        None => Value::Null,
        Some(h) => json!({ "role": h.role, "assets": h.assets }),
    }
}

fn sources(s: &[unseat_domain::GrantSource]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn access_json(a: Option<&Access>) -> Value {
    match a {
        None => Value::Null,
        Some(a) => json!({
            "role": a.role,
            "because": sources(&a.because),
            "assets": a.assets.iter().map(|(asset, role)| json!({
                "asset_id": asset,
                "role": role,
                "because": sources(a.asset_because.get(asset).map(Vec::as_slice).unwrap_or(&[])),
            })).collect::<Vec<_>>(),
        }),
    }
}

fn decision_json(d: Option<&Decision>) -> Value {
    match d {
        None => Value::Null,
        Some(d) => json!({
            "outcome": d.outcome.as_str(),
            "from": held_json(d.from.as_ref()),
            "to": held_json(d.to.as_ref()),
            "reason": d.reason,
        }),
    }
}

fn status_str(s: unseat_domain::UserStatus) -> &'static str {
    match s {
        unseat_domain::UserStatus::Active => "active",
        unseat_domain::UserStatus::Inactive => "inactive",
        unseat_domain::UserStatus::Deleted => "deleted",
    }
}

/// The integration directory a user belongs to (its scope), or None for the workspace's (and
/// for no such user).
async fn directory_of(
    tx: &unseat_store::Transaction<'_>,
    tenant_id: uuid::Uuid,
    user_id: uuid::Uuid,
) -> Result<Option<String>, StoreError> {
    let row =
        tx.query_opt("select scope from scim_users where tenant_id = $1 and id = $2", &[&tenant_id, &user_id]).await?;
    Ok(row.map(|r| r.get::<_, String>(0)).filter(|s| s != unseat_store::directory::WORKSPACE))
}

/// `GET /tenants/{t}/users/{user}/access`: per integration, what the grants give the user now
/// (role and assets, each with the grants behind it), every grant that reaches them, the state
/// the app is meant to hold and last applied, and what the resolver would decide now.
pub async fn explain(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    let user_id = parse_id(&user, "user id")?;
    let mut client = app.state.store.client().await?;
    let tx = client.build_transaction().read_only(true).start().await?;
    let facts = access::users_facts_many(&tx, tenant_id, &[user_id]).await?.remove(&user_id);
    // A user of an integration's own directory (IdLCM) is that integration's grant: the
    // resolver plans them from the directory's assignments, not from teams and shares.
    let plan = match directory_of(&tx, tenant_id, user_id).await? {
        Some(scope) => unseat_resolver::assignments::plan(&tx, tenant_id, &scope, &[user_id]).await?,
        None => unseat_resolver::plan(&tx, tenant_id, &[user_id]).await?,
    };
    tx.commit().await?;
    if facts.is_none() && plan.items.is_empty() {
        return Err(ApiError::not_found("no such user in this tenant's directory"));
    }
    let integrations: Vec<Value> = plan
        .items
        .iter()
        .map(|item| {
            let integration = plan.integrations.get(&item.integration_id);
            json!({
                "integration_id": item.integration_id,
                "name": integration.map(|i| i.name.as_str()),
                "app_kind": integration.map(|i| i.app_kind.as_str()),
                "access": access_json(item.now.as_ref()),
                "grants": item.grants.iter().map(|g| json!({
                    "source": g.source.to_string(),
                    "role": g.role,
                    "assets": g.assets,
                })).collect::<Vec<_>>(),
                "desired": item.row.as_ref().map(|r| json!({
                    "role": r.desired_role,
                    "assets": r.desired_assets,
                    "version": r.desired_version,
                })),
                "applied": item.row.as_ref().map(|r| json!({
                    "role": r.applied_role,
                    "assets": r.applied_assets,
                    "version": r.applied_version,
                })),
                "pending": decision_json(item.decision.as_ref().filter(|d| d.outcome != unseat_domain::Outcome::Keep)),
            })
        })
        .collect();
    let status = plan.items.first().map(|i| i.status).unwrap_or(match &facts {
        None => unseat_domain::UserStatus::Deleted,
        Some(f) if !f.active => unseat_domain::UserStatus::Inactive,
        Some(_) => unseat_domain::UserStatus::Active,
    });
    Ok(Json(json!({
        "user_id": user_id,
        "email": facts.as_ref().map(|f| f.email.as_str()),
        "status": status_str(status),
        "integrations": integrations,
    })))
}

#[derive(Deserialize)]
#[serde(tag = "change", rename_all = "snake_case", deny_unknown_fields)]
enum PreviewRequest {
    DeleteGroup { group_id: String },
    LeaveGroup { user_id: String, group_id: String },
    DeactivateUser { user_id: String },
    RemoveAsset { integration_id: String, asset_id: String },
}

impl PreviewRequest {
    fn parse(self) -> Result<Supposition, ApiError> {
        Ok(match self {
            PreviewRequest::DeleteGroup { group_id } => {
                Supposition::DeleteGroup { group_id: parse_id(&group_id, "group_id")? }
            }
            PreviewRequest::LeaveGroup { user_id, group_id } => Supposition::LeaveGroup {
                user_id: parse_id(&user_id, "user_id")?,
                group_id: parse_id(&group_id, "group_id")?,
            },
            PreviewRequest::DeactivateUser { user_id } => {
                Supposition::Deactivate { user_id: parse_id(&user_id, "user_id")? }
            }
            PreviewRequest::RemoveAsset { integration_id, asset_id } => {
                Supposition::RemoveAsset { integration_id: parse_id(&integration_id, "integration_id")?, asset_id }
            }
        })
    }
}

fn outcome_json(plan: &Plan, item: &Planned, d: &Decision) -> Value {
    json!({
        "user_id": item.user_id,
        "email": item.email,
        "integration_id": item.integration_id,
        "integration": plan.integrations.get(&item.integration_id).map(|i| i.name.as_str()),
        "outcome": d.outcome.as_str(),
        "from": held_json(d.from.as_ref()),
        "to": held_json(d.to.as_ref()),
        "reason": d.reason,
    })
}

/// `POST /tenants/{t}/access/preview`: what would happen if a group were deleted, a user left
/// a group, a user were deactivated or an asset were removed from an integration (as the asset
/// removal makes it: out of every grant, everyone who could hold it looked at). The change is
/// made in a transaction that is always rolled back, and the resolver's planning runs inside
/// it, batch by batch; nothing is written, announced or sent to an app.
pub async fn preview(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    let req: PreviewRequest = parse_body(body)?;
    let supposition = req.parse()?;
    let mut client = app.state.store.client().await?;
    let tx = client.transaction().await?;
    let users = match access::suppose(&tx, tenant_id, &supposition).await {
        Ok(users) => users,
        Err(StoreError::NotFound) => {
            return Err(ApiError::not_found(match &supposition {
                Supposition::DeleteGroup { .. } => "no such group in this tenant's directory".to_string(),
                Supposition::LeaveGroup { .. } => "the user is not a member of that group".to_string(),
                Supposition::Deactivate { .. } => "no such user in this tenant's directory".to_string(),
                Supposition::RemoveAsset { integration_id, asset_id } => {
                    drop(tx);
                    match app.state.store.integration(tenant_id, *integration_id).await? {
                        None => "no such integration".to_string(),
                        Some(_) => format!("the integration has no asset {asset_id:?}"),
                    }
                }
            }))
        }
        Err(e) => return Err(e.into()),
    };
    // Every user a supposition touches is of one directory: the group's, or the user's. Those
    // of an integration's own directory are planned from its assignments, as the resolver does.
    let scope = match users.first() {
        Some(first) => directory_of(&tx, tenant_id, *first).await?,
        None => None,
    };
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut outcomes = Vec::new();
    for chunk in users.chunks(BATCH_USERS) {
        let plan = match &scope {
            Some(scope) => unseat_resolver::assignments::plan(&tx, tenant_id, scope, chunk).await?,
            None => unseat_resolver::plan(&tx, tenant_id, chunk).await?,
        };
        for item in &plan.items {
            let Some(d) = &item.decision else { continue };
            *counts.entry(d.outcome.as_str()).or_default() += 1;
            if outcomes.len() < MAX_PREVIEW_OUTCOMES {
                outcomes.push(outcome_json(&plan, item, d));
            }
        }
    }
    // Never commit: the supposed change must not happen.
    tx.rollback().await?;
    let listed = outcomes.len();
    Ok(Json(json!({
        "users": users.len(),
        "counts": counts,
        "outcomes": outcomes,
        "truncated": counts.values().sum::<usize>() > listed,
    })))
}
