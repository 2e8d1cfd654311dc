//! What the resolver reads and writes: the current directory facts about a batch of users, the
//! grants that reach them, the desired access state per (integration, user), the Automation Log
//! entries (jobs, tasks) its decisions open, and how far it got through a large change.
//! Everything runs in the caller's transaction; reads and writes take a whole batch of users at
//! once, so a batch costs a fixed number of round trips however many users it holds. Statements
//! are prepared once per connection, and the independent ones of a batch can be issued together
//! (tokio-postgres pipelines them on the connection).

use crate::{Result, StoreError, Transaction};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use unseat_domain::text::fold;
use unseat_domain::{AssetMap, Grant, GrantSource};
use uuid::Uuid;

/// The directory's current view of a user; absent when the user is deleted.
#[derive(Debug, Clone)]
pub struct UserFacts {
    pub active: bool,
    /// The address the app knows the user by: primary email, else userName.
    pub email: String,
}

/// One grant that reaches a user, with the name of the team it comes through.
#[derive(Debug, Clone)]
pub struct ReachingGrant {
    pub user_id: Uuid,
    pub integration_id: Uuid,
    pub grant_id: Uuid,
    pub role: String,
    pub assets: AssetMap,
    /// None for an individual grant.
    pub team_name: Option<String>,
    /// The team's id; None for an individual grant.
    pub team_id: Option<Uuid>,
}

/// An integration as the resolver needs it.
#[derive(Debug, Clone)]
pub struct IntegrationFacts {
    pub id: Uuid,
    pub name: String,
    pub app_kind: String,
    pub roles: Vec<String>,
    pub asset_roles: Vec<String>,
    /// The asset ids the integration knows.
    pub assets: BTreeSet<String>,
    /// The names admins gave them (asset id → name), where one was given: reasons say them.
    pub asset_names: BTreeMap<String, String>,
}

/// The stored desired state of one (integration, user).
#[derive(Debug, Clone)]
pub struct AccessRow {
    pub user_id: Uuid,
    pub integration_id: Uuid,
    pub email: String,
    pub desired_role: Option<String>,
    pub desired_assets: AssetMap,
    pub desired_version: i64,
    /// The grants behind the desired state when it was decided.
    pub desired_sources: Vec<Grant>,
    pub applied_version: i64,
    pub applied_role: Option<String>,
    /// The assets last applied (none before the first application).
    pub applied_assets: AssetMap,
}

fn asset_map(value: serde_json::Value) -> AssetMap {
    // Written by this crate only; anything else (a hand edit) counts as no assets.
    serde_json::from_value(value).unwrap_or_default()
}

fn asset_map_text(text: &str) -> AssetMap {
    serde_json::from_str(text).unwrap_or_default()
}

fn to_json_text<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// One grant behind a desired state, as `access_state.desired_sources` stores it: `t` the
/// team's name (absent for an individual grant), `r` the role, `a` the assets (absent when
/// none). A third of the size of the domain's own JSON form, which a desired state of a user in
/// many teams repeats for every grant; rows written in that older form are still read.
#[derive(Serialize, Deserialize)]
struct StoredSource {
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    team: Option<String>,
    /// From an integration's own directory: the IdP's assignment (no team) or a pushed group.
    #[serde(rename = "i", default, skip_serializing_if = "std::ops::Not::not")]
    idp: bool,
    #[serde(rename = "r")]
    role: String,
    #[serde(rename = "a", default, skip_serializing_if = "BTreeMap::is_empty")]
    assets: AssetMap,
}

/// The stored form of the grants behind a desired state (see [`StoredSource`]).
pub fn encode_sources(grants: &[Grant]) -> Result<String> {
    let stored: Vec<StoredSource> = grants
        .iter()
        .map(|g| StoredSource {
            team: match &g.source {
                GrantSource::Team { name } | GrantSource::PushedGroup { name } => Some(name.clone()),
                GrantSource::Individual | GrantSource::Assignment => None,
            },
            idp: matches!(g.source, GrantSource::PushedGroup { .. } | GrantSource::Assignment),
            role: g.role.clone(),
            assets: g.assets.clone(),
        })
        .collect();
    to_json_text(&stored)
}

/// Reads stored grants in either form; anything else (a hand edit) counts as none.
pub fn decode_sources(text: &str) -> Vec<Grant> {
    if let Ok(stored) = serde_json::from_str::<Vec<StoredSource>>(text) {
        return stored
            .into_iter()
            .map(|s| Grant {
                source: match (s.team, s.idp) {
                    (Some(name), false) => GrantSource::Team { name },
                    (None, false) => GrantSource::Individual,
                    (Some(name), true) => GrantSource::PushedGroup { name },
                    (None, true) => GrantSource::Assignment,
                },
                role: s.role,
                assets: s.assets,
            })
            .collect();
    }
    serde_json::from_str(text).unwrap_or_default()
}

/// Serialises every resolver decision about one user until the transaction ends, so two
/// resolvers working on the same user decide one after the other, each on the state the other
/// left. Callers lock users in a fixed order (sorted ids) to avoid deadlocks.
pub async fn lock_user(tx: &Transaction<'_>, tenant_id: Uuid, user_id: Uuid) -> Result<()> {
    lock_users(tx, tenant_id, &[user_id]).await
}

/// [`lock_user`] for a batch, in the order given (callers sort it), in one round trip.
pub async fn lock_users(tx: &Transaction<'_>, tenant_id: Uuid, user_ids: &[Uuid]) -> Result<()> {
    if user_ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = user_ids.iter().map(Uuid::to_string).collect();
    let stmt = tx
        .prepare_cached("select pg_advisory_xact_lock(hashtext($1::text), hashtext(u)) from unnest($2::text[]) as t(u)")
        .await?;
    tx.execute(&stmt, &[&tenant_id.to_string(), &ids]).await?;
    Ok(())
}

/// Facts of the users that exist; deleted users are missing from the map.
pub async fn users_facts_many(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    user_ids: &[Uuid],
) -> Result<HashMap<Uuid, UserFacts>> {
    let stmt = tx
        .prepare_cached(
            "select id, active, coalesce(email, user_name) from scim_users where tenant_id = $1 and id = any($2)",
        )
        .await?;
    let rows = tx.query(&stmt, &[&tenant_id, &user_ids]).await?;
    Ok(rows.into_iter().map(|r| (r.get(0), UserFacts { active: r.get(1), email: r.get(2) })).collect())
}

/// One membership of a user of the batch: the team's id and its name.
#[derive(Debug, Clone)]
pub struct Membership {
    pub user_id: Uuid,
    pub team_id: Uuid,
    pub team_name: String,
}

/// Every team the users are in now, with its name. One row per membership.
pub async fn memberships_many(tx: &Transaction<'_>, tenant_id: Uuid, user_ids: &[Uuid]) -> Result<Vec<Membership>> {
    let stmt = tx
        .prepare_cached(
            "select m.user_id, m.group_id, sg.display_name from group_members m
               join scim_groups sg on sg.tenant_id = m.tenant_id and sg.id = m.group_id
              where m.tenant_id = $1 and m.user_id = any($2)",
        )
        .await?;
    let rows = tx.query(&stmt, &[&tenant_id, &user_ids]).await?;
    Ok(rows.into_iter().map(|r| Membership { user_id: r.get(0), team_id: r.get(1), team_name: r.get(2) }).collect())
}

/// Who a grant is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    Team(Uuid),
    User(Uuid),
}

/// A grant as stored, for a team or a user.
#[derive(Debug, Clone)]
pub struct SubjectGrant {
    pub subject: Subject,
    pub integration_id: Uuid,
    pub role: String,
    pub assets: AssetMap,
}

/// The grants that can reach the users: their individual grants, and each grant of a team any
/// of them is in, once per team (not once per member: the caller joins them with
/// [`memberships_many`]).
pub async fn subject_grants_many(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    user_ids: &[Uuid],
) -> Result<Vec<SubjectGrant>> {
    let stmt = tx
        .prepare_cached(
            "select false, g.subject_id, g.integration_id, g.role, g.assets::text
               from grants g
              where g.tenant_id = $1 and g.subject_kind = 'user' and g.subject_id = any($2)
             union all
             select true, g.subject_id, g.integration_id, g.role, g.assets::text
               from grants g
              where g.tenant_id = $1 and g.subject_kind = 'team'
                and g.subject_id in (select m.group_id from group_members m
                                      where m.tenant_id = $1 and m.user_id = any($2))",
        )
        .await?;
    let rows = tx.query(&stmt, &[&tenant_id, &user_ids]).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let id: Uuid = r.get(1);
            SubjectGrant {
                subject: if r.get(0) { Subject::Team(id) } else { Subject::User(id) },
                integration_id: r.get(2),
                role: r.get(3),
                assets: asset_map_text(r.get(4)),
            }
        })
        .collect())
}

/// Every grant that reaches the users now: individual grants and those of every team they are
/// in.
pub async fn reaching_grants_many(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    user_ids: &[Uuid],
) -> Result<Vec<ReachingGrant>> {
    let rows = tx
        .query(
            "select g.subject_id, g.integration_id, g.id, g.role, g.assets, null::text, null::uuid
               from grants g
              where g.tenant_id = $1 and g.subject_kind = 'user' and g.subject_id = any($2)
             union all
             select m.user_id, g.integration_id, g.id, g.role, g.assets, sg.display_name, sg.id
               from group_members m
               join grants g on g.tenant_id = m.tenant_id and g.subject_kind = 'team' and g.subject_id = m.group_id
               join scim_groups sg on sg.tenant_id = m.tenant_id and sg.id = m.group_id
              where m.tenant_id = $1 and m.user_id = any($2)",
            &[&tenant_id, &user_ids],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ReachingGrant {
            user_id: r.get(0),
            integration_id: r.get(1),
            grant_id: r.get(2),
            role: r.get(3),
            assets: asset_map(r.get(4)),
            team_name: r.get(5),
            team_id: r.get(6),
        })
        .collect())
}

/// The names of the teams each user is in now (to tell "left team X" from a revoked grant).
pub async fn team_names(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    user_ids: &[Uuid],
) -> Result<HashMap<Uuid, BTreeSet<String>>> {
    let rows = tx
        .query(
            "select m.user_id, sg.display_name from group_members m
               join scim_groups sg on sg.tenant_id = m.tenant_id and sg.id = m.group_id
              where m.tenant_id = $1 and m.user_id = any($2)",
            &[&tenant_id, &user_ids],
        )
        .await?;
    let mut out: HashMap<Uuid, BTreeSet<String>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().insert(r.get(1));
    }
    Ok(out)
}

fn access_row(r: &tokio_postgres::Row) -> AccessRow {
    AccessRow {
        user_id: r.get(0),
        integration_id: r.get(1),
        email: r.get(2),
        desired_role: r.get(3),
        desired_assets: asset_map_text(r.get(4)),
        desired_version: r.get(5),
        desired_sources: decode_sources(r.get(6)),
        applied_version: r.get(7),
        applied_role: r.get(8),
        applied_assets: r.get::<_, Option<&str>>(9).map(asset_map_text).unwrap_or_default(),
    }
}

/// The users' stored desired state on every integration.
pub async fn access_rows_many(tx: &Transaction<'_>, tenant_id: Uuid, user_ids: &[Uuid]) -> Result<Vec<AccessRow>> {
    let stmt = tx
        .prepare_cached(
            "select user_id, integration_id, email, desired_role, desired_assets::text, desired_version,
                    desired_sources, applied_version, applied_role, applied_assets::text
               from access_state where tenant_id = $1 and user_id = any($2)",
        )
        .await?;
    let rows = tx.query(&stmt, &[&tenant_id, &user_ids]).await?;
    Ok(rows.iter().map(access_row).collect())
}

/// Integrations with their ladders and known assets.
pub async fn integrations(tx: &Transaction<'_>, tenant_id: Uuid, ids: &[Uuid]) -> Result<Vec<IntegrationFacts>> {
    let (integrations, assets) = futures_util::future::try_join(
        tx.prepare_cached(
            "select id, name, app_kind, roles, asset_roles from integrations
              where tenant_id = $1 and id = any($2) order by id",
        ),
        tx.prepare_cached(
            "select integration_id, asset_id, name from integration_assets
              where tenant_id = $1 and integration_id = any($2)",
        ),
    )
    .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&tenant_id, &ids];
    let (rows, assets) =
        futures_util::future::try_join(tx.query(&integrations, &params), tx.query(&assets, &params)).await?;
    let mut out: Vec<IntegrationFacts> = rows
        .into_iter()
        .map(|r| IntegrationFacts {
            id: r.get(0),
            name: r.get(1),
            app_kind: r.get(2),
            roles: r.get(3),
            asset_roles: r.get(4),
            assets: BTreeSet::new(),
            asset_names: BTreeMap::new(),
        })
        .collect();
    let mut by_integration: BTreeMap<Uuid, Vec<(String, String)>> = BTreeMap::new();
    for r in assets {
        by_integration.entry(r.get(0)).or_default().push((r.get(1), r.get(2)));
    }
    for i in &mut out {
        for (id, name) in by_integration.remove(&i.id).unwrap_or_default() {
            if !name.trim().is_empty() {
                i.asset_names.insert(id.clone(), name);
            }
            i.assets.insert(id);
        }
    }
    Ok(out)
}

/// A new desired state for one (integration, user).
#[derive(Debug, Clone)]
pub struct NewDesired<'a> {
    pub integration_id: Uuid,
    pub user_id: Uuid,
    pub email: &'a str,
    /// None: the user must not be in the app.
    pub role: Option<&'a str>,
    pub assets: &'a AssetMap,
    pub sources: &'a [Grant],
}

/// Records new desired states and returns each one's version (one more than the last), keyed
/// by (integration, user). One statement for the whole batch.
pub async fn set_desired_many(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    batch: &[NewDesired<'_>],
) -> Result<HashMap<(Uuid, Uuid), i64>> {
    if batch.is_empty() {
        return Ok(HashMap::new());
    }
    let integrations: Vec<Uuid> = batch.iter().map(|d| d.integration_id).collect();
    let users: Vec<Uuid> = batch.iter().map(|d| d.user_id).collect();
    let emails: Vec<&str> = batch.iter().map(|d| d.email).collect();
    let roles: Vec<Option<&str>> = batch.iter().map(|d| d.role).collect();
    let assets = batch.iter().map(|d| to_json_text(d.assets)).collect::<Result<Vec<_>>>()?;
    let sources = batch.iter().map(|d| encode_sources(d.sources)).collect::<Result<Vec<_>>>()?;
    let stmt = tx
        .prepare_cached(
            "insert into access_state (tenant_id, integration_id, user_id, email, desired_role, desired_assets,
                                       desired_sources, desired_version)
             select $1, i, u, e, r, a::jsonb, s, 1
               from unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[]) as t(i, u, e, r, a, s)
             on conflict (tenant_id, integration_id, user_id) do update
               set desired_role = excluded.desired_role,
                   desired_assets = excluded.desired_assets,
                   desired_sources = excluded.desired_sources,
                   email = excluded.email,
                   desired_version = access_state.desired_version + 1,
                   updated_at = now()
             returning integration_id, user_id, desired_version",
        )
        .await?;
    let rows = tx.query(&stmt, &[&tenant_id, &integrations, &users, &emails, &roles, &assets, &sources]).await?;
    Ok(rows.into_iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect())
}

/// Records the grants behind an unchanged desired state (a keep), without a new version.
pub async fn set_sources(tx: &Transaction<'_>, tenant_id: Uuid, batch: &[(Uuid, Uuid, &[Grant])]) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let integrations: Vec<Uuid> = batch.iter().map(|d| d.0).collect();
    let users: Vec<Uuid> = batch.iter().map(|d| d.1).collect();
    let sources = batch.iter().map(|d| encode_sources(d.2)).collect::<Result<Vec<_>>>()?;
    let stmt = tx
        .prepare_cached(
            "update access_state a set desired_sources = t.s
               from unnest($2::uuid[], $3::uuid[], $4::text[]) as t(i, u, s)
              where a.tenant_id = $1 and a.integration_id = t.i and a.user_id = t.u",
        )
        .await?;
    tx.execute(&stmt, &[&tenant_id, &integrations, &users, &sources]).await?;
    Ok(())
}

/// How far the resolver got through one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub users_done: i64,
    pub finished: bool,
}

/// Locks (creating it if needed) the progress row of a message until the transaction ends, so
/// two resolvers given the same message work through it one batch at a time.
/// One statement: the upsert's update arm takes the row lock as `for update` would.
pub async fn lock_progress(tx: &Transaction<'_>, tenant_id: Uuid, message_id: Uuid) -> Result<Progress> {
    let stmt = tx
        .prepare_cached(
            "insert into resolver_progress (tenant_id, message_id) values ($1, $2)
             on conflict (tenant_id, message_id) do update set users_done = resolver_progress.users_done
             returning users_done, finished_at is not null",
        )
        .await?;
    let row = tx.query_one(&stmt, &[&tenant_id, &message_id]).await?;
    Ok(Progress { users_done: row.get(0), finished: row.get(1) })
}

/// How far the resolver got through a message, without locking anything ((0, unfinished) for a
/// message not seen before). A batch confirms it with [`lock_progress`] before it writes.
pub async fn read_progress(client: &crate::Client, tenant_id: Uuid, message_id: Uuid) -> Result<Progress> {
    let stmt = client
        .prepare_cached(
            "select users_done, finished_at is not null from resolver_progress
              where tenant_id = $1 and message_id = $2",
        )
        .await?;
    Ok(match client.query_opt(&stmt, &[&tenant_id, &message_id]).await? {
        Some(row) => Progress { users_done: row.get(0), finished: row.get(1) },
        None => Progress { users_done: 0, finished: false },
    })
}

pub async fn save_progress(tx: &Transaction<'_>, tenant_id: Uuid, message_id: Uuid, progress: Progress) -> Result<()> {
    let stmt = tx
        .prepare_cached(
            "update resolver_progress set users_done = $3, finished_at = case when $4 then now() end
              where tenant_id = $1 and message_id = $2",
        )
        .await?;
    tx.execute(&stmt, &[&tenant_id, &message_id, &progress.users_done, &progress.finished]).await?;
    Ok(())
}

/// Deletes the progress rows of messages finished more than `keep` ago, at most `limit` of
/// them (a sweep calls it until it returns less than `limit`). A finished row is what tells a
/// redelivery of its message from a new one; the broker redelivers only unacknowledged
/// messages, within seconds of the consumer that held them going away, so a row older than a
/// generous `keep` has done its job. Unfinished rows (a message still being worked through, or
/// dead-lettered midway and waiting for an operator) stay.
pub async fn purge_finished_progress(store: &crate::Store, keep: std::time::Duration, limit: i64) -> Result<u64> {
    let client = store.client().await?;
    let secs = keep.as_secs_f64();
    Ok(client
        .execute(
            "delete from resolver_progress where (tenant_id, message_id) in (
                select tenant_id, message_id from resolver_progress
                 where finished_at < now() - make_interval(secs => $1)
                 limit $2)",
            &[&secs, &limit],
        )
        .await?)
}

/// One user's facts; None when the user is deleted.
pub async fn user_facts(tx: &Transaction<'_>, tenant_id: Uuid, user_id: Uuid) -> Result<Option<UserFacts>> {
    Ok(users_facts_many(tx, tenant_id, &[user_id]).await?.remove(&user_id))
}

/// Every grant that reaches one user now.
pub async fn reaching_grants(tx: &Transaction<'_>, tenant_id: Uuid, user_id: Uuid) -> Result<Vec<ReachingGrant>> {
    reaching_grants_many(tx, tenant_id, &[user_id]).await
}

/// One user's stored desired state on every integration.
pub async fn access_rows(tx: &Transaction<'_>, tenant_id: Uuid, user_id: Uuid) -> Result<Vec<AccessRow>> {
    access_rows_many(tx, tenant_id, &[user_id]).await
}

/// Records a new desired role (assets unchanged) for one (integration, user) and returns its
/// version.
pub async fn set_desired(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    user_id: Uuid,
    email: &str,
    desired_role: Option<&str>,
) -> Result<i64> {
    let row = tx
        .query_one(
            "insert into access_state (tenant_id, integration_id, user_id, email, desired_role, desired_version)
             values ($1, $2, $3, $4, $5, 1)
             on conflict (tenant_id, integration_id, user_id) do update
               set desired_role = excluded.desired_role,
                   email = excluded.email,
                   desired_version = access_state.desired_version + 1,
                   updated_at = now()
             returning desired_version",
            &[&tenant_id, &integration_id, &user_id, &email, &desired_role],
        )
        .await?;
    Ok(row.get(0))
}

pub async fn delete_job(tx: &Transaction<'_>, tenant_id: Uuid, job_id: Uuid) -> Result<()> {
    tx.execute("delete from jobs where tenant_id = $1 and id = $2", &[&tenant_id, &job_id]).await?;
    Ok(())
}

/// The trigger of a job, as the Automation Log shows it.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub scope: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub user_agent: &'a str,
    pub summary: &'a str,
    pub received_at: DateTime<Utc>,
}

/// Opens a job; false when it already exists.
pub async fn insert_job(tx: &Transaction<'_>, job: &NewJob<'_>) -> Result<bool> {
    let n = tx
        .execute(
            "insert into jobs (tenant_id, id, scope, trigger_method, trigger_path, user_agent, summary, received_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict do nothing",
            &[
                &job.tenant_id,
                &job.id,
                &job.scope,
                &job.method,
                &job.path,
                &job.user_agent,
                &job.summary,
                &job.received_at,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Deletes a job that has no task: the change it stood for touched nobody's access.
pub async fn delete_job_if_empty(tx: &Transaction<'_>, tenant_id: Uuid, job_id: Uuid) -> Result<()> {
    tx.execute(
        "delete from jobs j where j.tenant_id = $1 and j.id = $2
            and not exists (select 1 from tasks t where t.tenant_id = j.tenant_id and t.job_id = j.id)",
        &[&tenant_id, &job_id],
    )
    .await?;
    Ok(())
}

/// A task the resolver opens for one (user, integration).
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub job_id: Uuid,
    pub integration_id: Uuid,
    pub user_id: Uuid,
    pub user_email: &'a str,
    pub outcome: &'a str,
    pub from_role: Option<&'a str>,
    pub to_role: Option<&'a str>,
    pub from_assets: Option<&'a AssetMap>,
    pub to_assets: Option<&'a AssetMap>,
    pub reason: &'a str,
    pub desired_version: i64,
    /// `queued` for work a connector will do, `kept` for a decision that needs none.
    pub status: &'a str,
}

/// Inserts one task; false if it existed already.
pub async fn insert_task(tx: &Transaction<'_>, t: &NewTask<'_>) -> Result<bool> {
    Ok(insert_tasks(tx, std::slice::from_ref(t)).await? == 1)
}

/// Inserts tasks (all of one tenant) in one statement; tasks that exist already are skipped.
/// Returns how many were new. A task's first event, `decided` with its reason, is not a row of
/// its own: the log reads it from the task (see `Store::task_events`), which saves the
/// resolver a row per decision.
pub async fn insert_tasks(tx: &Transaction<'_>, tasks: &[NewTask<'_>]) -> Result<u64> {
    let Some(first) = tasks.first() else { return Ok(0) };
    let tenant = first.tenant_id;
    if tasks.iter().any(|t| t.tenant_id != tenant) {
        return Err(StoreError::Invalid("tasks of one batch must share a tenant".into()));
    }
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
    let jobs: Vec<Uuid> = tasks.iter().map(|t| t.job_id).collect();
    let integrations: Vec<Uuid> = tasks.iter().map(|t| t.integration_id).collect();
    let users: Vec<Uuid> = tasks.iter().map(|t| t.user_id).collect();
    let emails: Vec<&str> = tasks.iter().map(|t| t.user_email).collect();
    let email_keys: Vec<String> = tasks.iter().map(|t| fold(t.user_email)).collect();
    let outcomes: Vec<&str> = tasks.iter().map(|t| t.outcome).collect();
    let from_roles: Vec<Option<&str>> = tasks.iter().map(|t| t.from_role).collect();
    let to_roles: Vec<Option<&str>> = tasks.iter().map(|t| t.to_role).collect();
    let from_assets =
        tasks.iter().map(|t| t.from_assets.map(to_json_text).transpose()).collect::<Result<Vec<Option<_>>>>()?;
    let to_assets =
        tasks.iter().map(|t| t.to_assets.map(to_json_text).transpose()).collect::<Result<Vec<Option<_>>>>()?;
    let reasons: Vec<&str> = tasks.iter().map(|t| t.reason).collect();
    let versions: Vec<i64> = tasks.iter().map(|t| t.desired_version).collect();
    let statuses: Vec<&str> = tasks.iter().map(|t| t.status).collect();
    let stmt = tx
        .prepare_cached(
            "with new as (
               insert into tasks (tenant_id, id, job_id, integration_id, user_id, user_email, user_email_key, outcome,
                                  from_role, to_role, from_assets, to_assets, reason, desired_version, status,
                                  finished_at)
               select $1, id, j, i, u, e, ek, o, fr, tr, fa::jsonb, ta::jsonb, r, v, s,
                      case when s = 'kept' then now() end
                 from unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::text[],
                             $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[], $14::text[], $15::text[])
                      with ordinality as t(id, j, i, u, e, o, fr, tr, fa, ta, r, v, s, ek, n)
                order by n
               on conflict do nothing
               returning id
             )
             select count(*) from new",
        )
        .await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &tenant,
                &ids,
                &jobs,
                &integrations,
                &users,
                &emails,
                &outcomes,
                &from_roles,
                &to_roles,
                &from_assets,
                &to_assets,
                &reasons,
                &versions,
                &statuses,
                &email_keys,
            ],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// A directory or console change an admin asks about without making it (a preview).
/// `RemoveAsset` is made the way the console's asset removal makes it: the same store
/// functions under the same integration lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Supposition {
    DeleteGroup { group_id: Uuid },
    LeaveGroup { user_id: Uuid, group_id: Uuid },
    Deactivate { user_id: Uuid },
    RemoveAsset { integration_id: Uuid, asset_id: String },
}

/// Makes the supposed change in the caller's transaction, which the caller then rolls back,
/// and returns the users it concerns (sorted). [`StoreError::NotFound`] when the group, user,
/// membership, integration or asset does not exist.
pub async fn suppose(tx: &Transaction<'_>, tenant_id: Uuid, supposition: &Supposition) -> Result<Vec<Uuid>> {
    let users: Vec<Uuid> = match *supposition {
        Supposition::DeleteGroup { group_id } => {
            let exists = tx
                .query_opt("select 1 from scim_groups where tenant_id = $1 and id = $2", &[&tenant_id, &group_id])
                .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound);
            }
            let rows = tx
                .query(
                    "select user_id from group_members where tenant_id = $1 and group_id = $2 order by user_id",
                    &[&tenant_id, &group_id],
                )
                .await?;
            tx.execute("delete from scim_groups where tenant_id = $1 and id = $2", &[&tenant_id, &group_id]).await?;
            rows.into_iter().map(|r| r.get(0)).collect()
        }
        Supposition::LeaveGroup { user_id, group_id } => {
            let n = tx
                .execute(
                    "delete from group_members where tenant_id = $1 and group_id = $2 and user_id = $3",
                    &[&tenant_id, &group_id, &user_id],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            vec![user_id]
        }
        Supposition::Deactivate { user_id } => {
            let n = tx
                .execute(
                    "update scim_users set active = false where tenant_id = $1 and id = $2",
                    &[&tenant_id, &user_id],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            vec![user_id]
        }
        Supposition::RemoveAsset { integration_id, ref asset_id } => {
            let integration = crate::admin::integration_for_update(tx, tenant_id, integration_id)
                .await?
                .ok_or(StoreError::NotFound)?;
            if !integration.assets.iter().any(|a| &a.asset_id == asset_id) {
                return Err(StoreError::NotFound);
            }
            let grants = crate::admin::grants_naming_asset(tx, tenant_id, integration_id, asset_id).await?;
            let users = crate::admin::users_of_asset(tx, tenant_id, integration_id, asset_id, &grants).await?;
            crate::admin::delete_asset(tx, tenant_id, integration_id, asset_id).await?;
            users
        }
    };
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;
    use unseat_domain::GrantSource;

    #[test]
    fn sources_round_trip_in_the_compact_form_and_the_old_one_is_still_read() {
        let grants = vec![
            Grant { source: GrantSource::Individual, role: "ADMIN".into(), assets: AssetMap::new() },
            Grant {
                source: GrantSource::Team { name: "Ads \"EU\"".into() },
                role: "EMPLOYEE".into(),
                assets: [("act_1".to_string(), "MANAGE".to_string())].into(),
            },
        ];
        let text = encode_sources(&grants).expect("encode");
        assert_eq!(text, r#"[{"r":"ADMIN"},{"t":"Ads \"EU\"","r":"EMPLOYEE","a":{"act_1":"MANAGE"}}]"#);
        assert_eq!(decode_sources(&text), grants);
        let old = serde_json::to_string(&grants).expect("old form");
        assert_eq!(decode_sources(&old), grants);
        // An integration directory's sources keep what they are.
        let idp = vec![
            Grant { source: GrantSource::Assignment, role: "EMPLOYEE".into(), assets: AssetMap::new() },
            Grant {
                source: GrantSource::PushedGroup { name: "Admin".into() },
                role: "ADMIN".into(),
                assets: AssetMap::new(),
            },
        ];
        let text = encode_sources(&idp).expect("encode");
        assert_eq!(text, r#"[{"i":true,"r":"EMPLOYEE"},{"t":"Admin","i":true,"r":"ADMIN"}]"#);
        assert_eq!(decode_sources(&text), idp);
        assert_eq!(decode_sources("[]"), Vec::<Grant>::new());
        assert_eq!(decode_sources(r#"{"not": "a list"}"#), Vec::<Grant>::new());
    }

    /// Finished progress rows older than the retention go; recent ones and unfinished ones
    /// (however old) stay; a small limit deletes in chunks.
    #[tokio::test]
    async fn purging_progress_keeps_recent_and_unfinished_rows() {
        let (_url, store) = crate::testing::fresh_database().await.expect("fresh database");
        let tenant = Uuid::new_v4();
        let client = store.client().await.expect("client");
        let mut old_finished = Vec::new();
        for _ in 0..5 {
            let id = Uuid::new_v4();
            client
                .execute(
                    "insert into resolver_progress (tenant_id, message_id, users_done, finished_at, created_at)
                     values ($1, $2, 3, now() - interval '3 days', now() - interval '3 days')",
                    &[&tenant, &id],
                )
                .await
                .expect("old finished");
            old_finished.push(id);
        }
        let recent = Uuid::new_v4();
        client
            .execute(
                "insert into resolver_progress (tenant_id, message_id, users_done, finished_at)
                 values ($1, $2, 3, now() - interval '1 hour')",
                &[&tenant, &recent],
            )
            .await
            .expect("recent finished");
        let unfinished = Uuid::new_v4();
        client
            .execute(
                "insert into resolver_progress (tenant_id, message_id, users_done, created_at)
                 values ($1, $2, 1, now() - interval '30 days')",
                &[&tenant, &unfinished],
            )
            .await
            .expect("old unfinished");
        let day = std::time::Duration::from_secs(24 * 3600);
        assert_eq!(purge_finished_progress(&store, day, 2).await.expect("purge"), 2);
        assert_eq!(purge_finished_progress(&store, day, 100).await.expect("purge"), 3);
        assert_eq!(purge_finished_progress(&store, day, 100).await.expect("purge"), 0);
        let mut left: Vec<Uuid> = client
            .query("select message_id from resolver_progress where tenant_id = $1", &[&tenant])
            .await
            .expect("left")
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        left.sort();
        let mut want = vec![recent, unfinished];
        want.sort();
        assert_eq!(left, want);

        // A purged message's progress is gone, so its lock starts from the beginning again;
        // the kept one is still recognised as finished.
        let mut client = client;
        let tx = client.transaction().await.expect("tx");
        let p = lock_progress(&tx, tenant, old_finished[0]).await.expect("lock");
        assert_eq!(p, Progress { users_done: 0, finished: false });
        let p = lock_progress(&tx, tenant, recent).await.expect("lock");
        assert_eq!(p, Progress { users_done: 3, finished: true });
    }
}
