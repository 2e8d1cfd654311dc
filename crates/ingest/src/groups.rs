//! `/Groups` (teams): create, read, list, patch, replace and delete. Members are changed row
//! by row; every member added or removed, and every group deleted, is announced to the
//! resolver with the users concerned.

use crate::lookup::{self, Found, Keys, Lookup};
use crate::removals::Removal;
use crate::response::{
    check_if_match, group_location, no_content, not_modified, render_group, resource_response, scim_response,
};
use crate::{announce, json_body, ApiError, Ctx, IngestState, ListQuery, Params, Shape};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use unseat_scim::{group_patch, list_response, Elements, Filter, Group, PatchRequest, ScimError};
use unseat_store::directory::{self as dir, Dir, GroupFields, GroupRecord, Member};
use unseat_store::Transaction;
use uuid::Uuid;

fn parse_id(id: &str) -> Result<Uuid, ScimError> {
    Uuid::parse_str(id).map_err(|_| ScimError::not_found(format!("no group {id:?}")))
}

fn not_found(id: Uuid) -> ScimError {
    ScimError::not_found(format!("no group {id}"))
}

/// Resolves member ids that must all be users of the directory (to add or to set).
async fn existing_members(tx: &Transaction<'_>, d: Dir, ids: &[String]) -> Result<Vec<Uuid>, ApiError> {
    let mut parsed = Vec::with_capacity(ids.len());
    for id in ids {
        let u = Uuid::parse_str(id)
            .map_err(|_| ScimError::invalid_value(format!("member {id:?} is not a user of this directory")))?;
        parsed.push(u);
    }
    let found: HashSet<Uuid> = dir::existing_users(tx, d, &parsed).await?.into_iter().map(|m| m.user_id).collect();
    if let Some(missing) = parsed.iter().find(|p| !found.contains(p)) {
        return Err(ScimError::invalid_value(format!("member {missing} is not a user of this directory")).into());
    }
    Ok(parsed)
}

/// Ids to remove: ones that cannot be users are simply not members.
fn removable(ids: &[String]) -> Vec<Uuid> {
    ids.iter().filter_map(|i| Uuid::parse_str(i).ok()).collect()
}

/// One line for the Automation Log about a membership change.
async fn membership_summary(
    tx: &Transaction<'_>,
    d: Dir,
    group: &str,
    added: &[Uuid],
    removed: &[Uuid],
) -> Result<String, ApiError> {
    let name = |m: &Member| m.email.clone().unwrap_or_else(|| m.user_name.clone());
    let one = |id: Uuid| async move {
        Ok::<_, ApiError>(dir::existing_users(tx, d, &[id]).await?.first().map(name).unwrap_or_else(|| id.to_string()))
    };
    Ok(match (added.len(), removed.len()) {
        (1, 0) => format!("{} added to group {group}", one(added[0]).await?),
        (0, 1) => format!("{} removed from group {group}", one(removed[0]).await?),
        (a, 0) => format!("{} added to group {group}", crate::members(a)),
        (0, r) => format!("{} removed from group {group}", crate::members(r)),
        (a, r) => format!("{} added to and {r} removed from group {group}", crate::members(a)),
    })
}

/// In an integration's own directory a pushed group's name is the role its members hold there
/// (DESIGN.md, IdLCM): a renamed group's members are all announced, and may be lowered or
/// removed. Elsewhere a name is only a label and a rename announces nobody.
async fn announce_rename(
    tx: &Transaction<'_>,
    state: &IngestState,
    ctx: &Ctx,
    old: &str,
    new: &str,
    group_id: Uuid,
) -> Result<(), ApiError> {
    if ctx.dir.integration.is_none() || old == new {
        return Ok(());
    }
    let members: Vec<Uuid> = dir::group_members(tx, ctx.dir, group_id).await?.into_iter().map(|m| m.user_id).collect();
    if members.is_empty() {
        return Ok(());
    }
    let summary = format!("group {old} renamed to {new} ({})", crate::members(members.len()));
    announce(tx, state, ctx, summary, members, true).await
}

/// Announces a membership change when there is one.
async fn announce_members(
    tx: &Transaction<'_>,
    state: &IngestState,
    ctx: &Ctx,
    group: &str,
    added: Vec<Uuid>,
    removed: Vec<Uuid>,
) -> Result<(), ApiError> {
    if added.is_empty() && removed.is_empty() {
        return Ok(());
    }
    let summary = membership_summary(tx, ctx.dir, group, &added, &removed).await?;
    let may_revoke = !removed.is_empty();
    let mut users = added;
    users.extend(removed);
    announce(tx, state, ctx, summary, users, may_revoke).await
}

async fn respond(
    tx: unseat_store::Transaction<'_>,
    ctx: &Ctx,
    rec: &GroupRecord,
    shape: &Shape,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let members = if shape.wants("members") { Some(dir::group_members(&tx, ctx.dir, rec.id).await?) } else { None };
    tx.commit().await?;
    let loc = group_location(&ctx.base, rec.id);
    let location = (status == StatusCode::CREATED).then_some(loc.as_str());
    Ok(resource_response(status, &shape.apply(render_group(&ctx.base, rec, members.as_deref())), rec.version, location))
}

pub(crate) async fn create(
    State(state): State<IngestState>,
    Extension(ctx): Extension<Ctx>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let shape = Shape::from_params(&Params::from_query(query)?);
    let group = Group::parse(&json_body(&headers, body)?)?;
    let mut client = state.store.client().await?;
    let tx = client.transaction().await?;
    let members = existing_members(&tx, ctx.dir, &group.members).await?;
    let fields = GroupFields {
        display_name: &group.display_name,
        external_id: group.external_id.as_deref(),
        resource: &group.resource,
    };
    let rec = dir::insert_group(&tx, ctx.dir, Uuid::new_v4(), fields).await?;
    let added = dir::add_members(&tx, ctx.dir, rec.id, &members).await?;
    if !added.is_empty() {
        let summary = format!("group {} created with {}", rec.display_name, crate::members(added.len()));
        announce(&tx, &state, &ctx, summary, added, false).await?;
    }
    tracing::info!(tenant = %ctx.tenant_id, group = %rec.id, "group created");
    respond(tx, &ctx, &rec, &shape, StatusCode::CREATED).await
}

pub(crate) async fn get_one(
    State(state): State<IngestState>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = Params::from_query(query)?;
    let id = parse_id(&id)?;
    let mut client = state.store.client().await?;
    let tx = client.transaction().await?;
    let rec = dir::get_group(&tx, ctx.dir, id).await?.ok_or_else(|| not_found(id))?;
    // Its members are not read when the client holds this version.
    if let Some(unchanged) = not_modified(&headers, rec.version) {
        tx.commit().await?;
        return Ok(unchanged);
    }
    respond(tx, &ctx, &rec, &Shape::from_params(&params), StatusCode::OK).await
}

/// `GET /Groups` and `POST /Groups/.search`: a page of the groups the filter selects.
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
            let (total, rows) = dir::list_groups(&tx, ctx.dir, page.offset() as i64, page.count as i64).await?;
            (total as usize, rows)
        }
        Some(f) => {
            let matched = matching(&tx, &ctx, &state.metrics, f).await?;
            let total = matched.len();
            (total, matched.into_iter().skip(page.offset()).take(page.count).collect::<Vec<_>>())
        }
    };
    let resources = render_all(&tx, &ctx, &rows, q.shape.wants("members")).await?;
    tx.commit().await?;
    let resources = resources.into_iter().map(|g| q.shape.apply(g)).collect();
    Ok(scim_response(StatusCode::OK, &list_response(total, page, resources)))
}

/// Renders groups, loading the members of all of them in one query when asked.
pub(crate) async fn render_all(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    rows: &[GroupRecord],
    with_members: bool,
) -> Result<Vec<Value>, ApiError> {
    let members = if with_members && !rows.is_empty() {
        let ids: Vec<Uuid> = rows.iter().map(|g| g.id).collect();
        by_group(dir::members_of_groups(tx, ctx.dir, &ids).await?)
    } else {
        HashMap::new()
    };
    Ok(rows.iter().map(|g| render_group(&ctx.base, g, with_members.then(|| members_in(&members, g.id)))).collect())
}

/// (group id, member) rows, per group.
fn by_group(rows: Vec<(Uuid, Member)>) -> HashMap<Uuid, Vec<Member>> {
    let mut members: HashMap<Uuid, Vec<Member>> = HashMap::new();
    for (g, m) in rows {
        members.entry(g).or_default().push(m);
    }
    members
}

fn members_in(members: &HashMap<Uuid, Vec<Member>>, group: Uuid) -> &[Member] {
    members.get(&group).map(Vec::as_slice).unwrap_or(&[])
}

/// Every group `filter` selects, in creation order. When a term that must hold can be looked up
/// (`displayName`, `externalId` or `id` eq; a member's value eq, as in `members[value eq "…"]`,
/// from the member rows; else any attribute eq, sw, ew or co a text, or a `meta` date compared with
/// a date-time, searched in the database; or such terms on every side of an `or`) only the groups
/// they find are read; any other filter scans the directory; either way at most [`dir::MAX_SCAN`]
/// groups are read, else the answer is `tooMany`. The filter is evaluated on each group with the
/// members it tests: when it names them (a membership check, `id eq "…" and members[value eq "…"]`)
/// just those, whatever the group's size; otherwise all of them, up to [`dir::MAX_SCAN`] members
/// over the groups read.
pub(crate) async fn matching(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    metrics: &unseat_telemetry::Metrics,
    filter: &Filter,
) -> Result<Vec<GroupRecord>, ApiError> {
    let found = looked_up(tx, ctx, filter).await?;
    let candidates = lookup::found_or_scanned(
        metrics,
        "Groups",
        found,
        dir::scan_groups(tx, ctx.dir, dir::MAX_SCAN),
        "this search reads too many groups; filter on displayName, externalId, a member, meta.lastModified or another attribute eq",
    )
    .await?;
    let ids: Vec<Uuid> = candidates.iter().map(|g| g.id).collect();
    let members = match filter.elements("members", "value") {
        Elements::Named(values) if values.is_empty() => None,
        Elements::Named(values) => {
            let users: Vec<Uuid> = values.iter().filter_map(|v| Uuid::parse_str(v).ok()).collect();
            Some(by_group(dir::named_members_of_groups(tx, ctx.dir, &ids, &users).await?))
        }
        Elements::All => {
            if dir::count_members(tx, ctx.dir, &ids).await? > dir::MAX_SCAN {
                return Err(ScimError::too_many(
                    "this filter tests the members of groups too large to load; name the member (members[value eq \"…\"])",
                )
                .into());
            }
            Some(by_group(dir::members_of_groups(tx, ctx.dir, &ids).await?))
        }
    };
    Ok(candidates
        .into_iter()
        .filter(|g| filter.matches(&render_group(&ctx.base, g, members.as_ref().map(|m| members_in(m, g.id)))))
        .collect())
}

/// What groups are looked up by.
const KEYS: Keys =
    Keys { name: "displayName", elements: "members", computed: &["id", "meta", "displayName", "members"] };

/// The groups the lookups of `filter`'s [plan](Keys::plan) find, when it has one.
async fn looked_up(tx: &Transaction<'_>, ctx: &Ctx, filter: &Filter) -> Result<Found<GroupRecord>, ApiError> {
    let Some(plan) = KEYS.plan(filter) else { return Ok(Found::Unplanned) };
    let d = ctx.dir;
    // Indexed lookups read what they find; searches read nothing when they find too many.
    let run = |lookup| async move {
        let max = dir::MAX_SCAN;
        let found = match lookup {
            Lookup::Name(v) => dir::groups_by_display_name(tx, d, v).await?,
            Lookup::ExternalId(v) => dir::groups_by_external_id(tx, d, v).await?,
            Lookup::Id(v) => match Uuid::parse_str(v) {
                Ok(id) => dir::get_group(tx, d, id).await?.into_iter().collect(),
                Err(_) => Vec::new(),
            },
            Lookup::Element(v) => match Uuid::parse_str(v) {
                Ok(user) => dir::groups_with_member(tx, d, user).await?,
                Err(_) => Vec::new(),
            },
            Lookup::Text(text, within) => return dir::groups_containing(tx, d, text, within, max).await,
            Lookup::Stamped(range) => return dir::groups_stamped(tx, d, &range, max).await,
        };
        Ok(Some(found))
    };
    lookup::gathered(plan, run, |r| r.id, |r| (r.created_at, r.id)).await
}

pub(crate) async fn patch(
    State(state): State<IngestState>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let params = Params::from_query(query)?;
    let id = parse_id(&id)?;
    let req = PatchRequest::parse(&json_body(&headers, body)?)?;
    let change = group_patch(&req, &id.to_string())?;
    let shape = Shape::from_params(&params);
    // The IdPs' member removal, answered 204: written together with the removals that arrive
    // with it (see `removals`). Anything else takes the general path below.
    let remove_only = change.add.is_empty()
        && change.replace_all.is_none()
        && change.display_name.is_none()
        && change.external_id.is_none()
        && !change.remove.is_empty();
    if remove_only && shape.is_default() && headers.get(header::IF_MATCH).is_none() {
        let removal = Removal { ctx: ctx.clone(), group_id: id, users: removable(&change.remove) };
        let version = state.removals.submit(removal).await?;
        return Ok(no_content(version));
    }
    let mut client = state.store.client().await?;
    let tx = client.transaction().await?;
    let old = dir::lock_group(&tx, ctx.dir, id).await?.ok_or_else(|| not_found(id))?;
    check_if_match(&headers, old.version)?;

    // Attributes first, so the summary names the group as it is now.
    let mut rec = old.clone();
    let name = change.display_name.clone().unwrap_or_else(|| old.display_name.clone());
    let external_id = match &change.external_id {
        Some(e) => e.clone(),
        None => old.external_id.clone(),
    };
    if name != old.display_name || external_id != old.external_id {
        let mut resource = old.resource.clone();
        if let Some(obj) = resource.as_object_mut() {
            obj.insert("displayName".into(), Value::String(name.clone()));
            match &external_id {
                Some(e) => obj.insert("externalId".into(), Value::String(e.clone())),
                None => obj.remove("externalId"),
            };
        }
        let fields = GroupFields { display_name: &name, external_id: external_id.as_deref(), resource: &resource };
        rec = dir::update_group(&tx, ctx.dir, id, fields).await?;
    }

    let (added, removed) = match &change.replace_all {
        Some(all) => {
            let all = existing_members(&tx, ctx.dir, all).await?;
            dir::replace_members(&tx, ctx.dir, id, &all).await?
        }
        None => {
            let add = existing_members(&tx, ctx.dir, &change.add).await?;
            let removed = dir::remove_members(&tx, ctx.dir, id, &removable(&change.remove)).await?;
            let added = dir::add_members(&tx, ctx.dir, id, &add).await?;
            (added, removed)
        }
    };
    if (!added.is_empty() || !removed.is_empty()) && rec.version == old.version {
        rec = dir::touch_group(&tx, ctx.dir, id).await?;
    }
    announce_members(&tx, &state, &ctx, &rec.display_name, added, removed).await?;
    announce_rename(&tx, &state, &ctx, &old.display_name, &rec.display_name, id).await?;
    if shape.is_default() {
        // RFC 7644 §3.5.2 lets a PATCH answer 204 unless the client asked for attributes; Okta
        // and Entra expect it for groups. The full group would carry every member: a one-member
        // change must not load and send 100,000 of them.
        tx.commit().await?;
        return Ok(no_content(rec.version));
    }
    respond(tx, &ctx, &rec, &shape, StatusCode::OK).await
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
    let group = Group::parse(&json_body(&headers, body)?)?;
    let mut client = state.store.client().await?;
    let tx = client.transaction().await?;
    let old = dir::lock_group(&tx, ctx.dir, id).await?.ok_or_else(|| not_found(id))?;
    check_if_match(&headers, old.version)?;
    let members = existing_members(&tx, ctx.dir, &group.members).await?;
    let mut rec = old.clone();
    if old.display_name != group.display_name || old.external_id != group.external_id || old.resource != group.resource
    {
        let fields = GroupFields {
            display_name: &group.display_name,
            external_id: group.external_id.as_deref(),
            resource: &group.resource,
        };
        rec = dir::update_group(&tx, ctx.dir, id, fields).await?;
    }
    let (added, removed) = dir::replace_members(&tx, ctx.dir, id, &members).await?;
    if (!added.is_empty() || !removed.is_empty()) && rec.version == old.version {
        rec = dir::touch_group(&tx, ctx.dir, id).await?;
    }
    announce_members(&tx, &state, &ctx, &rec.display_name, added, removed).await?;
    announce_rename(&tx, &state, &ctx, &old.display_name, &rec.display_name, id).await?;
    respond(tx, &ctx, &rec, &shape, StatusCode::OK).await
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
    let old = dir::lock_group(&tx, ctx.dir, id).await?.ok_or_else(|| not_found(id))?;
    check_if_match(&headers, old.version)?;
    let members = dir::delete_group(&tx, ctx.dir, id).await?.unwrap_or_default();
    let summary = format!("group {} deleted ({})", old.display_name, crate::members(members.len()));
    announce(&tx, &state, &ctx, summary, members, true).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
