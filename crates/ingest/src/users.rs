//! `/Users`: create, read, list (with filters), replace, patch and delete. A change of
//! `active`, of the address the apps know the user by, and a delete are announced to the
//! resolver; other attribute changes are not, since they change nothing in any app.

use crate::activations::Activation;
use crate::lookup::{self, Found, Keys, Lookup};
use crate::response::{check_if_match, not_modified, render_user, resource_response, user_location};
use crate::{announce, json_body, ApiError, Ctx, IngestState, ListQuery, Params, Shape};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use unseat_scim::patch::only_active;
use unseat_scim::{apply_user_patch, list_response, Filter, PatchRequest, ScimError, User};
use unseat_store::directory::{self as dir, UserFields, UserRecord};
use unseat_store::Transaction;
use uuid::Uuid;

fn fields(u: &User) -> UserFields<'_> {
    UserFields {
        user_name: &u.user_name,
        external_id: u.external_id.as_deref(),
        active: u.active,
        email: u.primary_email(),
        resource: &u.resource,
    }
}

fn parse_id(id: &str) -> Result<Uuid, ScimError> {
    Uuid::parse_str(id).map_err(|_| ScimError::not_found(format!("no user {id:?}")))
}

/// How a user is named in the Automation Log.
fn label(u: &UserRecord) -> &str {
    u.email.as_deref().unwrap_or(&u.user_name)
}

pub(crate) async fn create(
    State(state): State<IngestState>,
    Extension(ctx): Extension<Ctx>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let shape = Shape::from_params(&Params::from_query(query)?);
    let user = User::parse(&json_body(&headers, body)?)?;
    let mut client = state.store.client().await?;
    let tx = client.transaction().await?;
    let rec = dir::insert_user(&tx, ctx.dir, Uuid::new_v4(), fields(&user)).await?;
    // In an integration's directory a provisioned user is an assignment: it grants access.
    if ctx.dir.integration.is_some() && rec.active {
        announce(&tx, &state, &ctx, format!("user {} assigned", label(&rec)), vec![rec.id], false).await?;
    }
    tx.commit().await?;
    tracing::info!(tenant = %ctx.tenant_id, user = %rec.id, "user created");
    let loc = user_location(&ctx.base, rec.id);
    Ok(resource_response(StatusCode::CREATED, &shape.apply(render_user(&ctx.base, &rec)), rec.version, Some(&loc)))
}

pub(crate) async fn get_one(
    State(state): State<IngestState>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let shape = Shape::from_params(&Params::from_query(query)?);
    let id = parse_id(&id)?;
    let mut client = state.store.client().await?;
    let tx = client.transaction().await?;
    let rec = dir::get_user(&tx, ctx.dir, id).await?.ok_or_else(|| ScimError::not_found(format!("no user {id}")))?;
    tx.commit().await?;
    if let Some(unchanged) = not_modified(&headers, rec.version) {
        return Ok(unchanged);
    }
    Ok(resource_response(StatusCode::OK, &shape.apply(render_user(&ctx.base, &rec)), rec.version, None))
}

/// `GET /Users` and `POST /Users/.search`: a page of the users the filter selects.
pub(crate) async fn list(
    State(state): State<IngestState>,
    Extension(ctx): Extension<Ctx>,
    q: ListQuery,
) -> Result<Response, ApiError> {
    let page = q.page;
    let mut client = state.store.client().await?;
    let tx = client.transaction().await?;
    let (total, rows) = match &q.filter {
        None => {
            let (total, rows) = dir::list_users(&tx, ctx.dir, page.offset() as i64, page.count as i64).await?;
            (total as usize, rows)
        }
        Some(f) => {
            let matched = matching(&tx, &ctx, &state.metrics, f).await?;
            let total = matched.len();
            (total, matched.into_iter().skip(page.offset()).take(page.count).collect())
        }
    };
    tx.commit().await?;
    let resources = rows.iter().map(|u| q.shape.apply(render_user(&ctx.base, u))).collect();
    Ok(crate::response::scim_response(StatusCode::OK, &list_response(total, page, resources)))
}

/// The representation a filter is evaluated against: with the effective `active`, which an
/// IdP may have left unset.
fn filterable(base: &str, u: &UserRecord) -> serde_json::Value {
    let mut v = render_user(base, u);
    if let Some(obj) = v.as_object_mut() {
        obj.entry("active").or_insert(serde_json::Value::Bool(u.active));
    }
    v
}

/// Every user `filter` selects, in creation order. When a term that must hold can be looked up
/// (`userName`, `externalId` or `id` eq; an email's value eq, such as Entra's `emails[type eq
/// "work"].value eq "…"`; all through indexes; else any attribute eq, sw, ew or co a text, or
/// `meta.created`/`meta.lastModified` compared with a date-time, searched in the database; or such
/// terms on every side of an `or`), only the users they find are read and the whole filter is
/// evaluated on them; any other filter scans the directory. Either way at most [`dir::MAX_SCAN`]
/// users are read, else the answer is `tooMany`.
pub(crate) async fn matching(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    metrics: &unseat_telemetry::Metrics,
    filter: &Filter,
) -> Result<Vec<UserRecord>, ApiError> {
    let found = looked_up(tx, ctx, filter).await?;
    let candidates = lookup::found_or_scanned(
        metrics,
        "Users",
        found,
        dir::scan_users(tx, ctx.dir, dir::MAX_SCAN),
        "this search reads too many users; filter on userName, externalId, an email, meta.lastModified or another attribute eq",
    )
    .await?;
    Ok(candidates.into_iter().filter(|u| filter.matches(&filterable(&ctx.base, u))).collect())
}

/// What users are looked up by.
pub(crate) const KEYS: Keys = Keys { name: "userName", elements: "emails", computed: &["id", "meta", "active"] };

/// The users the lookups of `filter`'s [plan](Keys::plan) find, when it has one.
async fn looked_up(tx: &Transaction<'_>, ctx: &Ctx, filter: &Filter) -> Result<Found<UserRecord>, ApiError> {
    let Some(plan) = KEYS.plan(filter) else { return Ok(Found::Unplanned) };
    let d = ctx.dir;
    // Indexed lookups read what they find; searches read nothing when they find too many.
    let run = |lookup| async move {
        let max = dir::MAX_SCAN;
        let found = match lookup {
            Lookup::Name(v) => dir::user_by_user_name(tx, d, v).await?.into_iter().collect(),
            Lookup::ExternalId(v) => dir::users_by_external_id(tx, d, v).await?,
            Lookup::Id(v) => match Uuid::parse_str(v) {
                Ok(id) => dir::get_user(tx, d, id).await?.into_iter().collect(),
                Err(_) => Vec::new(),
            },
            Lookup::Element(v) => return dir::users_by_email(tx, d, v, max).await,
            Lookup::Text(text, within) => return dir::users_containing(tx, d, text, within, max).await,
            Lookup::Stamped(range) => return dir::users_stamped(tx, d, &range, max).await,
        };
        Ok(Some(found))
    };
    lookup::gathered(plan, run, |r| r.id, |r| (r.created_at, r.id)).await
}

/// How a change of `active` reads in the log: in an integration's directory it is an
/// assignment.
fn active_verb(ctx: &Ctx, active: bool) -> &'static str {
    match (ctx.dir.integration.is_some(), active) {
        (false, true) => "reactivated",
        (false, false) => "deactivated",
        (true, true) => "assigned",
        (true, false) => "unassigned",
    }
}

/// Announces that a user's `active` changed.
async fn announce_active(
    tx: &Transaction<'_>,
    state: &IngestState,
    ctx: &Ctx,
    rec: &UserRecord,
) -> Result<(), ApiError> {
    let what = active_verb(ctx, rec.active);
    announce(tx, state, ctx, format!("user {} {what}", label(rec)), vec![rec.id], !rec.active).await
}

/// The attributes an integration's directory takes a user's role from.
fn role_attributes(resource: &serde_json::Value) -> (Option<&serde_json::Value>, Option<&serde_json::Value>) {
    (resource.get("roles"), resource.get("entitlements"))
}

/// Writes `new` over `old` (already locked) unless nothing changed, announcing a change of
/// `active`. Returns the stored user.
async fn store_change(
    tx: &Transaction<'_>,
    state: &IngestState,
    ctx: &Ctx,
    old: UserRecord,
    new: &User,
) -> Result<UserRecord, ApiError> {
    let f = fields(new);
    let unchanged = old.user_name == f.user_name
        && old.external_id.as_deref() == f.external_id
        && old.active == f.active
        && old.email.as_deref() == f.email
        && &old.resource == f.resource;
    if unchanged {
        return Ok(old);
    }
    let rec = dir::update_user(tx, ctx.dir, &old, f).await?;
    let address = |r: &UserRecord| r.email.clone().unwrap_or_else(|| r.user_name.clone());
    let (was, is) = (address(&old), address(&rec));
    if old.active != rec.active {
        announce_active(tx, state, ctx, &rec).await?;
    } else if rec.active && !unseat_domain::same_address(&was, &is) {
        // The apps know the user by this address: an invitation to the old one is withdrawn.
        announce(
            tx,
            state,
            ctx,
            format!("address of user {} changed from {was} to {is}", rec.user_name),
            vec![rec.id],
            false,
        )
        .await?;
    } else if ctx.dir.integration.is_some() && role_attributes(&old.resource) != role_attributes(&rec.resource) {
        // In an integration's directory the roles the IdP sends are the user's role there.
        announce(tx, state, ctx, format!("roles of user {} changed", label(&rec)), vec![rec.id], true).await?;
    }
    Ok(rec)
}

pub(crate) async fn replace(
    State(state): State<IngestState>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let shape = Shape::from_params(&Params::from_query(query)?);
    let id = parse_id(&id)?;
    let user = User::parse(&json_body(&headers, body)?)?;
    let mut client = state.store.client().await?;
    let tx = client.transaction().await?;
    let old = dir::lock_user(&tx, ctx.dir, id).await?.ok_or_else(|| ScimError::not_found(format!("no user {id}")))?;
    check_if_match(&headers, old.version)?;
    let rec = store_change(&tx, &state, &ctx, old, &user).await?;
    tx.commit().await?;
    Ok(resource_response(StatusCode::OK, &shape.apply(render_user(&ctx.base, &rec)), rec.version, None))
}

pub(crate) async fn patch(
    State(state): State<IngestState>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let shape = Shape::from_params(&Params::from_query(query)?);
    let id = parse_id(&id)?;
    let req = PatchRequest::parse(&json_body(&headers, body)?)?;
    // The IdPs' (de)activation: no read first, no explicit transaction; concurrent ones are
    // written together, each user with its outbox row, in one statement. Anything else (and
    // this when it changes nothing, or names no user) takes the general path below.
    if let (Some(active), None) = (only_active(&req), headers.get(header::IF_MATCH)) {
        let verb = active_verb(&ctx, active);
        let (message_id, payload) = crate::directory_message(&ctx, String::new(), vec![id], !active)?;
        let activation = Activation { dir: ctx.dir, id, active, message_id, payload, verb };
        if let Some(rec) = state.activations.submit(activation).await? {
            tracing::info!(tenant = %ctx.tenant_id, %message_id, user = %rec.id, "user {verb}: directory change recorded");
            return Ok(resource_response(
                StatusCode::OK,
                &shape.apply(render_user(&ctx.base, &rec)),
                rec.version,
                None,
            ));
        }
    }
    let mut client = state.store.client().await?;
    let tx = client.transaction().await?;
    let old = dir::lock_user(&tx, ctx.dir, id).await?.ok_or_else(|| ScimError::not_found(format!("no user {id}")))?;
    check_if_match(&headers, old.version)?;
    let user = apply_user_patch(&old.resource, &req, &id.to_string())?;
    let rec = store_change(&tx, &state, &ctx, old, &user).await?;
    tx.commit().await?;
    Ok(resource_response(StatusCode::OK, &shape.apply(render_user(&ctx.base, &rec)), rec.version, None))
}

pub(crate) async fn delete(
    State(state): State<IngestState>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let mut client = state.store.client().await?;
    let tx = client.transaction().await?;
    let old = dir::lock_user(&tx, ctx.dir, id).await?.ok_or_else(|| ScimError::not_found(format!("no user {id}")))?;
    check_if_match(&headers, old.version)?;
    dir::delete_user(&tx, ctx.dir, id).await?;
    announce(&tx, &state, &ctx, format!("user {} deleted", label(&old)), vec![id], true).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
