//! What connectors read and write while they apply a task: the integration (with its
//! credential), the desired/applied state of one (integration, user) locked for the length of
//! an attempt, and the task's status and progress events in the log store.
//!
//! Invariant 4 lives here: [`lock_access`] takes a row lock on the access_state row, so two
//! connectors never act on the same (integration, user) at once, and [`record_applied`] only
//! lets `applied_version` grow.

use crate::{Result, Store};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use tokio_postgres::Transaction;
use uuid::Uuid;

/// An integration as a connector needs it. The credential is never logged: `Debug` hides it.
#[derive(Clone)]
pub struct Integration {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub name: String,
    pub app_kind: String,
    pub base_url: String,
    pub settings: serde_json::Value,
    pub credential: String,
    pub roles: Vec<String>,
    /// The asset-role ladder, highest first; empty when the integration manages no assets.
    pub asset_roles: Vec<String>,
    pub needs_attention: Option<String>,
}

impl std::fmt::Debug for Integration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integration")
            .field("tenant_id", &self.tenant_id)
            .field("id", &self.id)
            .field("name", &self.name)
            .field("app_kind", &self.app_kind)
            .field("base_url", &self.base_url)
            .field("settings", &self.settings)
            .field("credential", &"<redacted>")
            .field("roles", &self.roles)
            .field("asset_roles", &self.asset_roles)
            .field("needs_attention", &self.needs_attention)
            .finish()
    }
}

/// The desired and applied state of one (integration, user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRow {
    pub email: String,
    /// None: the user should not be in the app.
    pub desired_role: Option<String>,
    pub desired_version: i64,
    pub applied_version: i64,
    pub applied_role: Option<String>,
    /// The assets the user should hold: asset id → asset role (empty: none).
    pub desired_assets: BTreeMap<String, String>,
    /// The assets last applied; None when no connector has applied assets yet.
    pub applied_assets: Option<BTreeMap<String, String>>,
    /// The app's id for the account, remembered from an earlier task; may be stale.
    pub app_account_id: Option<String>,
    /// The address the app was last converged at while the user was in it; None once out.
    pub applied_email: Option<String>,
}

/// What a connector converged the app to, recorded with [`record_applied_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<'a> {
    pub version: i64,
    /// None: the user is not in the app.
    pub role: Option<&'a str>,
    pub assets: &'a BTreeMap<String, String>,
    /// The app's id for the account; None forgets it (the account is gone).
    pub app_account_id: Option<&'a str>,
}

/// A task's status and attempt count, as a connector sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub status: String,
    pub attempts: i32,
    /// `attempts` when the task was last re-driven: the attempt budget counts from here.
    pub attempt_base: i32,
    /// Attempts since the last re-drive that the app throttled: not counted in the budget.
    pub throttled_attempts: i32,
    /// When the task was created or last re-driven: its age counts from here.
    pub since: DateTime<Utc>,
    /// How long it waited since then while its integration was paused (counted at each
    /// resume): not part of its age.
    pub paused_for: std::time::Duration,
    pub last_error: Option<String>,
}

/// One progress event of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent<'a> {
    /// `attempt_started`, `attempt_failed`, `retry_scheduled`, `succeeded`, `already_removed`,
    /// `kept_for_another_user`, `superseded`, `failed`, `dead_lettered`, ...
    pub kind: &'a str,
    pub attempt: Option<i32>,
    pub status_code: Option<i32>,
    pub detail: &'a str,
}

impl<'a> NewEvent<'a> {
    pub fn new(kind: &'a str, detail: &'a str) -> Self {
        Self { kind, attempt: None, status_code: None, detail }
    }

    pub fn attempt(mut self, attempt: i32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    pub fn status_code(mut self, code: Option<i32>) -> Self {
        self.status_code = code;
        self
    }
}

/// A task's final (or waiting) status with what goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskUpdate<'a> {
    Succeeded,
    Superseded,
    /// Waiting before the next attempt; `last_error` says why the last one failed.
    Retrying {
        last_error: &'a str,
    },
    /// Waiting before the next attempt because the app throttled the last one: as `Retrying`,
    /// and the attempt is counted in `throttled_attempts`, outside the attempt budget.
    Throttled {
        last_error: &'a str,
    },
    /// Given up; `dead_lettered` when the message goes to the dead-letter queue.
    Failed {
        last_error: &'a str,
        dead_lettered: bool,
    },
}

impl Store {
    /// The integration a task names, or None if it was deleted.
    pub async fn integration_for_apply(&self, tenant_id: Uuid, integration_id: Uuid) -> Result<Option<Integration>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "select name, app_kind, base_url, settings, credential, roles, needs_attention, asset_roles
                 from integrations where tenant_id = $1 and id = $2",
                &[&tenant_id, &integration_id],
            )
            .await?;
        Ok(row.map(|r| Integration {
            tenant_id,
            id: integration_id,
            name: r.get(0),
            app_kind: r.get(1),
            base_url: r.get(2),
            settings: r.get(3),
            credential: r.get(4),
            roles: r.get(5),
            needs_attention: r.get(6),
            asset_roles: r.get(7),
        }))
    }

    /// Shows a task as running as soon as a connector picks it up (outside the attempt's
    /// transaction, so the log shows it while the app call is in flight), unless its
    /// integration is paused. Only a queued or retrying task moves; a finished one keeps its
    /// status. Returns whether the integration is paused, None when it no longer exists: read
    /// here, at every attempt, so a pause stops app calls at once.
    pub async fn mark_task_picked_up(
        &self,
        tenant_id: Uuid,
        task_id: Uuid,
        integration_id: Uuid,
    ) -> Result<Option<bool>> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "with integration as (
                     select paused_at is not null as paused from integrations where tenant_id = $1 and id = $3),
                 picked as (
                     update tasks set status = 'running', started_at = coalesce(started_at, clock_timestamp()),
                            updated_at = clock_timestamp()
                      where tenant_id = $1 and id = $2 and status in ('queued', 'retrying')
                        and not coalesce((select paused from integration), false)
                     returning 1)
                 select (select paused from integration)",
                &[&tenant_id, &task_id, &integration_id],
            )
            .await?;
        Ok(row.get(0))
    }

    /// A task's events in order, as (kind, attempt, status_code, detail). For tests and
    /// diagnostics; the console has its own views.
    pub async fn connector_task_events(
        &self,
        tenant_id: Uuid,
        task_id: Uuid,
    ) -> Result<Vec<(String, Option<i32>, Option<i32>, String)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "select kind, attempt, status_code, detail from task_events where tenant_id = $1 and task_id = $2 order by id",
                &[&tenant_id, &task_id],
            )
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
    }
}

/// Locks the access_state row of (integration, user) until the transaction ends and returns
/// it; None when there is no desired state for the pair.
pub async fn lock_access(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    user_id: Uuid,
) -> Result<Option<AccessRow>> {
    let row = tx
        .query_opt(
            "select email, desired_role, desired_version, applied_version, applied_role, desired_assets,
                    applied_assets, app_account_id, applied_email
             from access_state where tenant_id = $1 and integration_id = $2 and user_id = $3 for update",
            &[&tenant_id, &integration_id, &user_id],
        )
        .await?;
    Ok(row.map(|r| AccessRow {
        email: r.get(0),
        desired_role: r.get(1),
        desired_version: r.get(2),
        applied_version: r.get(3),
        applied_role: r.get(4),
        desired_assets: asset_map(r.get(5)),
        applied_assets: r.get::<_, Option<serde_json::Value>>(6).map(asset_map),
        app_account_id: r.get(7),
        applied_email: r.get(8),
    }))
}

/// Holds the app address `email` of an integration until the transaction ends: tasks of two
/// users the app knows by one address (two directory users with one email, or a person the IdP
/// provisioned again under a new id while the old one's removal still retries) run one after
/// the other, each seeing what the other did. Addresses are compared ignoring case.
pub async fn lock_address(tx: &Transaction<'_>, tenant_id: Uuid, integration_id: Uuid, email: &str) -> Result<()> {
    tx.execute(
        "select pg_advisory_xact_lock(hashtextextended(
                    'app address ' || $1::uuid::text || ' ' || $2::uuid::text || ' ' || lower(btrim($3)), 0))",
        &[&tenant_id, &integration_id, &email],
    )
    .await?;
    Ok(())
}

/// Another user of the integration with the same app address (ignoring case) whose desired
/// state gives access: the app account is theirs too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub user_id: Uuid,
    /// Their userName in the directory, while they are in it.
    pub name: Option<String>,
    pub role: String,
    pub assets: BTreeMap<String, String>,
}

impl Holder {
    /// How the log names them: by userName, with the id that tells two of one name apart.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} ({})", self.user_id),
            None => self.user_id.to_string(),
        }
    }
}

/// The other users of the integration whose desired state gives access through the app
/// address `email` of `user_id`, and those through its `former` address ([`Holder`]), each by
/// user id, in one query.
pub async fn other_holders(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    user_id: Uuid,
    email: &str,
    former: Option<&str>,
) -> Result<(Vec<Holder>, Vec<Holder>)> {
    let rows = tx
        .query(
            "select a.user_id, u.user_name, a.desired_role, a.desired_assets,
                    lower(btrim(a.email)) = lower(btrim($4)) as here
               from access_state a
               left join scim_users u on u.tenant_id = a.tenant_id and u.id = a.user_id
              where a.tenant_id = $1 and a.integration_id = $2 and a.user_id <> $3
                and lower(btrim(a.email)) in (lower(btrim($4)), lower(btrim($5::text)))
                and a.desired_role is not null
              order by a.user_id",
            &[&tenant_id, &integration_id, &user_id, &email, &former],
        )
        .await?;
    let (mut here, mut there) = (Vec::new(), Vec::new());
    for r in &rows {
        let holder = Holder { user_id: r.get(0), name: r.get(1), role: r.get(2), assets: asset_map(r.get(3)) };
        if r.get::<_, bool>(4) {
            here.push(holder)
        } else {
            there.push(holder)
        }
    }
    Ok((here, there))
}

/// The kind of a task's last event, if it has any.
pub async fn last_event_kind(store: &Store, tenant_id: Uuid, task_id: Uuid) -> Result<Option<String>> {
    let client = store.client().await?;
    let row = client
        .query_opt(
            "select kind from task_events where tenant_id = $1 and task_id = $2 order by id desc limit 1",
            &[&tenant_id, &task_id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Puts a task picked up for an attempt back to waiting (`queued` before its first attempt
/// since the last re-drive, else `retrying`): its integration's app is failing and the task
/// was held back without calling it. In the caller's transaction, under the task's lock.
/// Returns whether its last event already says it is held back (so that a task held back
/// again and again says it once).
pub async fn hold_back(tx: &Transaction<'_>, tenant_id: Uuid, task_id: Uuid) -> Result<bool> {
    let row = tx
        .query_one(
            "with waiting as (
                 update tasks set status = case when attempts > attempt_base then 'retrying' else 'queued' end,
                        updated_at = clock_timestamp()
                  where tenant_id = $1 and id = $2 and status = 'running')
             select coalesce((select kind = 'held_back' from task_events where tenant_id = $1 and task_id = $2
                               order by id desc limit 1), false)",
            &[&tenant_id, &task_id],
        )
        .await?;
    Ok(row.get(0))
}

/// Whether the tenant still has the integration.
pub async fn integration_exists(tx: &Transaction<'_>, tenant_id: Uuid, integration_id: Uuid) -> Result<bool> {
    let row = tx
        .query_opt("select 1 from integrations where tenant_id = $1 and id = $2", &[&tenant_id, &integration_id])
        .await?;
    Ok(row.is_some())
}

/// Locks a task row (after its access_state row, always in that order) and returns it.
pub async fn lock_task(tx: &Transaction<'_>, tenant_id: Uuid, task_id: Uuid) -> Result<Option<TaskRow>> {
    let row = tx
        .query_opt(
            "select status, attempts, coalesce(redriven_at, created_at), attempt_base, last_error, throttled_attempts,
                    extract(epoch from paused_for)::float8
             from tasks where tenant_id = $1 and id = $2 for update",
            &[&tenant_id, &task_id],
        )
        .await?;
    Ok(row.map(|r| TaskRow {
        status: r.get(0),
        attempts: r.get(1),
        since: r.get(2),
        attempt_base: r.get(3),
        last_error: r.get(4),
        throttled_attempts: r.get(5),
        paused_for: std::time::Duration::try_from_secs_f64(r.get(6)).unwrap_or_default(),
    }))
}

/// Counts a new attempt: status running, attempts + 1, an `attempt_started` event. Returns the
/// attempt's number (1 for the first attempt of the task, across deliveries).
pub async fn begin_attempt(tx: &Transaction<'_>, tenant_id: Uuid, task_id: Uuid, detail: &str) -> Result<i32> {
    let row = tx
        .query_one(
            "update tasks set status = 'running', attempts = attempts + 1, resend_after = null,
                    started_at = coalesce(started_at, clock_timestamp()), updated_at = clock_timestamp()
             where tenant_id = $1 and id = $2 returning attempts",
            &[&tenant_id, &task_id],
        )
        .await?;
    let attempt: i32 = row.get(0);
    add_event(tx, tenant_id, task_id, NewEvent::new("attempt_started", detail).attempt(attempt)).await?;
    Ok(attempt)
}

/// Records that the app now holds `role` (None = absent) as of `version`. Only moves forward:
/// returns false (and changes nothing) when a version at least as new is already recorded.
pub async fn record_applied(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    user_id: Uuid,
    version: i64,
    role: Option<&str>,
) -> Result<bool> {
    let n = tx
        .execute(
            "update access_state set applied_version = $4, applied_role = $5, updated_at = clock_timestamp()
             where tenant_id = $1 and integration_id = $2 and user_id = $3 and applied_version < $4",
            &[&tenant_id, &integration_id, &user_id, &version, &role],
        )
        .await?;
    Ok(n == 1)
}

/// Records what the app now holds as of `applied.version`, with its assets, the app's
/// account id and the address it was converged at (the row's email; none once out). Like
/// [`record_applied`], only moves forward.
pub async fn record_applied_state(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    user_id: Uuid,
    applied: &Applied<'_>,
) -> Result<bool> {
    let assets = serde_json::to_value(applied.assets).unwrap_or_else(|_| serde_json::json!({}));
    let n = tx
        .execute(
            "update access_state set applied_version = $4, applied_role = $5, applied_assets = $6,
                    app_account_id = $7, applied_email = case when $5::text is null then null else email end,
                    updated_at = clock_timestamp()
             where tenant_id = $1 and integration_id = $2 and user_id = $3 and applied_version < $4",
            &[&tenant_id, &integration_id, &user_id, &applied.version, &applied.role, &assets, &applied.app_account_id],
        )
        .await?;
    Ok(n == 1)
}

/// Records what the app account at `address` now holds (`role`, `assets`) on the other users
/// of the integration (`users`) who were converged at that address, without moving their
/// versions: a task of one user changed the account they share, and their next task must trust
/// no role the account no longer holds (an app that reports base roles only cannot tell).
///
/// A row another task holds is skipped, not waited for: that task locked its row before it
/// waits for the address lock this one holds, so waiting would deadlock; and once it has the
/// address it converges the account itself and records what it holds.
pub async fn record_account_held(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    users: &[Uuid],
    address: &str,
    role: Option<&str>,
    assets: &BTreeMap<String, String>,
) -> Result<()> {
    if users.is_empty() {
        return Ok(());
    }
    let assets = serde_json::to_value(assets).unwrap_or_else(|_| serde_json::json!({}));
    tx.execute(
        "update access_state a set applied_role = $5, applied_assets = $6, updated_at = clock_timestamp()
           from (select user_id from access_state
                  where tenant_id = $1 and integration_id = $2 and user_id = any($3)
                    and lower(btrim(applied_email)) = lower(btrim($4))
                    and (applied_role, applied_assets) is distinct from ($5::text, $6::jsonb)
                  for update skip locked) free
          where a.tenant_id = $1 and a.integration_id = $2 and a.user_id = free.user_id",
        &[&tenant_id, &integration_id, &users, &address, &role, &assets],
    )
    .await?;
    Ok(())
}

/// Remembers the app's account id for (integration, user) without touching the applied
/// state: a lookup found it, even if the attempt then failed.
pub async fn remember_account_id(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    user_id: Uuid,
    app_account_id: Option<&str>,
) -> Result<()> {
    tx.execute(
        "update access_state set app_account_id = $4
         where tenant_id = $1 and integration_id = $2 and user_id = $3 and app_account_id is distinct from $4",
        &[&tenant_id, &integration_id, &user_id, &app_account_id],
    )
    .await?;
    Ok(())
}

/// Reads a stored asset map (asset id → asset role); entries that are not strings are
/// ignored, so a malformed row cannot make a connector act on garbage.
pub fn asset_map(value: serde_json::Value) -> BTreeMap<String, String> {
    match value {
        serde_json::Value::Object(fields) => fields
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(role) => Some((k, role)),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Records that the task was parked in a delay queue and should be back by `within` from now:
/// past that, [`take_lost_parked`] sends it again.
pub async fn mark_parked(store: &Store, tenant_id: Uuid, task_id: Uuid, within: std::time::Duration) -> Result<()> {
    let client = store.client().await?;
    let seconds = within.as_secs_f64();
    client
        .execute(
            "update tasks set resend_after = clock_timestamp() + $3::float8 * interval '1 second'
              where tenant_id = $1 and id = $2 and status in ('queued', 'retrying')",
            &[&tenant_id, &task_id, &seconds],
        )
        .await?;
    Ok(())
}

/// A parked task that did not come back in time ([`take_lost_parked`]).
#[derive(Debug, Clone)]
pub struct LostTask {
    pub tenant_id: Uuid,
    pub task_id: Uuid,
    pub job_id: Uuid,
    pub integration_id: Uuid,
    pub user_id: Uuid,
    pub desired_version: i64,
    pub app_kind: String,
}

/// Takes up to `limit` tasks of `app_kind` parked past their `resend_after` and still
/// waiting, for the caller to send again: each gets a `resent` event, and its `resend_after`
/// moves `again` ahead (so a send that fails is tried again, and one that works is not
/// repeated before the task's next attempt clears it). Rows another connector is taking are
/// skipped.
pub async fn take_lost_parked(
    store: &Store,
    app_kind: &str,
    again: std::time::Duration,
    limit: i64,
) -> Result<Vec<LostTask>> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let seconds = again.as_secs_f64();
    let rows = tx
        .query(
            "with lost as (
                 select t.tenant_id, t.id, i.app_kind from tasks t
                   join integrations i on i.tenant_id = t.tenant_id and i.id = t.integration_id
                  where t.resend_after < clock_timestamp() and t.status in ('queued', 'retrying')
                    and i.app_kind = $1
                  order by t.resend_after
                  limit $3
                  for update of t skip locked)
             update tasks t set resend_after = clock_timestamp() + $2::float8 * interval '1 second'
               from lost where t.tenant_id = lost.tenant_id and t.id = lost.id
             returning t.tenant_id, t.id, t.job_id, t.integration_id, t.user_id, t.desired_version, lost.app_kind",
            &[&app_kind, &seconds, &limit],
        )
        .await?;
    let lost: Vec<LostTask> = rows
        .iter()
        .map(|r| LostTask {
            tenant_id: r.get(0),
            task_id: r.get(1),
            job_id: r.get(2),
            integration_id: r.get(3),
            user_id: r.get(4),
            desired_version: r.get(5),
            app_kind: r.get(6),
        })
        .collect();
    for t in &lost {
        // Said before the send: one that fails is tried again a minute later, with this event
        // again.
        let detail = "the retry parked in the broker's delay queue did not come back in time (lost in a broker \
                      restart?): sending it to the connector again";
        add_event(&tx, t.tenant_id, t.task_id, NewEvent::new("resent", detail)).await?;
    }
    tx.commit().await?;
    Ok(lost)
}

/// Clears the needs-attention flag once the app accepted the integration again.
pub async fn clear_needs_attention(tx: &Transaction<'_>, tenant_id: Uuid, integration_id: Uuid) -> Result<()> {
    tx.execute(
        "update integrations set needs_attention = null
         where tenant_id = $1 and id = $2 and needs_attention is not null",
        &[&tenant_id, &integration_id],
    )
    .await?;
    Ok(())
}

/// Sets a task's status and what goes with it (last_error, dead_lettered, finished_at).
pub async fn update_task(tx: &Transaction<'_>, tenant_id: Uuid, task_id: Uuid, update: TaskUpdate<'_>) -> Result<()> {
    let (status, last_error, dead_lettered, finished, throttled): (&str, Option<&str>, bool, bool, bool) = match update
    {
        TaskUpdate::Succeeded => ("succeeded", None, false, true, false),
        TaskUpdate::Superseded => ("superseded", None, false, true, false),
        TaskUpdate::Retrying { last_error } => ("retrying", Some(last_error), false, false, false),
        TaskUpdate::Throttled { last_error } => ("retrying", Some(last_error), false, false, true),
        TaskUpdate::Failed { last_error, dead_lettered } => ("failed", Some(last_error), dead_lettered, true, false),
    };
    tx.execute(
        "update tasks set status = $3, last_error = $4, dead_lettered = $5,
                finished_at = case when $6 then clock_timestamp() else null end,
                throttled_attempts = throttled_attempts + $7::bool::int,
                updated_at = clock_timestamp()
         where tenant_id = $1 and id = $2",
        &[&tenant_id, &task_id, &status, &last_error, &dead_lettered, &finished, &throttled],
    )
    .await?;
    Ok(())
}

/// Marks superseded the failed tasks of the (integration, user) that aimed at a version older
/// than `applied`, which a later task (`by`) has just applied: a re-drive of them would find
/// nothing left to do, so they are no failures to act on any more. Each gets an event saying
/// so; their history stays. In the caller's transaction; returns how many there were.
pub async fn supersede_failed(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    user_id: Uuid,
    applied: i64,
    by: Uuid,
) -> Result<u64> {
    let detail = format!("superseded: a later task applied version {applied} of this user's access");
    Ok(tx
        .execute(
            "with moot as (
                 update tasks set status = 'superseded', updated_at = clock_timestamp()
                  where tenant_id = $1 and user_id = $3 and integration_id = $2 and status = 'failed'
                    and desired_version < $4 and id <> $5
                 returning id)
             insert into task_events (tenant_id, task_id, at, kind, detail)
             select $1, id, clock_timestamp(), 'superseded', $6 from moot",
            &[&tenant_id, &integration_id, &user_id, &applied, &by, &detail],
        )
        .await?)
}

/// Appends a progress event to a task. Events carry the wall-clock time of the insert (not
/// the transaction's start), so the attempts of one transaction keep their real timing.
pub async fn add_event(tx: &Transaction<'_>, tenant_id: Uuid, task_id: Uuid, event: NewEvent<'_>) -> Result<()> {
    tx.execute(
        "insert into task_events (tenant_id, task_id, at, kind, attempt, status_code, detail)
         values ($1, $2, clock_timestamp(), $3, $4, $5, $6)",
        &[&tenant_id, &task_id, &event.kind, &event.attempt, &event.status_code, &event.detail],
    )
    .await?;
    Ok(())
}

/// Flags an integration for an admin (the app rejected its credential or permissions); the
/// console shows the reason until someone fixes the integration.
pub async fn mark_needs_attention(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    reason: &str,
) -> Result<()> {
    tx.execute(
        "update integrations set needs_attention = $3 where tenant_id = $1 and id = $2",
        &[&tenant_id, &integration_id, &reason],
    )
    .await?;
    Ok(())
}

/// A failed task, as `unseat admin` and the re-drive API list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailedTask {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub job_id: Uuid,
    pub integration_id: Uuid,
    pub integration_name: String,
    pub user_email: String,
    pub outcome: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub dead_lettered: bool,
    pub redriven: i32,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a re-drive publishes: a connector task for the current desired version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveTarget {
    pub tenant_id: Uuid,
    pub task_id: Uuid,
    pub job_id: Uuid,
    pub integration_id: Uuid,
    pub user_id: Uuid,
    pub app_kind: String,
    pub desired_version: i64,
}

/// The outbox row a re-drive writes, built by the caller (which knows the message format and
/// the exchange names).
#[derive(Debug, Clone)]
pub struct RedriveMessage {
    pub message_id: Uuid,
    pub exchange: String,
    pub routing_key: String,
    pub payload: serde_json::Value,
}

/// What a re-drive did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redrive {
    /// The task is queued again for `desired_version`; its message is in the outbox.
    Requeued { desired_version: i64 },
    /// Only failed tasks can be re-driven; this one has `status`.
    NotFailed { status: String },
    /// No such task in this tenant.
    NoSuchTask,
    /// The (integration, user) has no desired state any more (the integration was deleted).
    NoDesiredState,
    /// A later task applied the current desired state (`applied_version`): there is nothing
    /// left for this one to do, and it is marked superseded instead of re-driven.
    Outdated { applied_version: i64 },
}

impl Store {
    /// Failed tasks, newest first: of one tenant (or every tenant), optionally of one
    /// integration, at most `limit`.
    pub async fn failed_tasks(
        &self,
        tenant_id: Option<Uuid>,
        integration_id: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<FailedTask>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "select t.tenant_id, t.id, t.job_id, t.integration_id, coalesce(i.name, ''), t.user_email, t.outcome,
                        t.attempts, t.last_error, t.dead_lettered, t.redriven, t.finished_at
                 from tasks t
                 left join integrations i on i.tenant_id = t.tenant_id and i.id = t.integration_id
                 where t.status = 'failed' and ($1::uuid is null or t.tenant_id = $1)
                   and ($2::uuid is null or t.integration_id = $2)
                 order by t.created_at desc, t.id desc
                 limit $3",
                &[&tenant_id, &integration_id, &limit],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| FailedTask {
                tenant_id: r.get(0),
                id: r.get(1),
                job_id: r.get(2),
                integration_id: r.get(3),
                integration_name: r.get(4),
                user_email: r.get(5),
                outcome: r.get(6),
                attempts: r.get(7),
                last_error: r.get(8),
                dead_lettered: r.get(9),
                redriven: r.get(10),
                finished_at: r.get(11),
            })
            .collect())
    }

    /// Queues a failed task again for the *current* desired version of its (integration,
    /// user): in one transaction the task returns to `queued` (not dead-lettered, attempts
    /// kept for the record), a `redriven` event names `actor`, and the message built by
    /// `message` goes to the outbox. A newer desired state recorded meanwhile simply wins: the
    /// connector converges to whatever is current.
    pub async fn redrive_task(
        &self,
        tenant_id: Uuid,
        task_id: Uuid,
        actor: &str,
        message: impl FnOnce(&RedriveTarget) -> RedriveMessage,
    ) -> Result<Redrive> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "select t.job_id, t.integration_id, t.user_id, i.app_kind from tasks t
                 left join integrations i on i.tenant_id = t.tenant_id and i.id = t.integration_id
                 where t.tenant_id = $1 and t.id = $2",
                &[&tenant_id, &task_id],
            )
            .await?
        else {
            return Ok(Redrive::NoSuchTask);
        };
        let (job_id, integration_id, user_id, app_kind): (Uuid, Uuid, Uuid, Option<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        // The connector's lock order: access_state, then the task.
        let access = lock_access(&tx, tenant_id, integration_id, user_id).await?;
        let Some(task) = lock_task(&tx, tenant_id, task_id).await? else {
            return Ok(Redrive::NoSuchTask);
        };
        if task.status != "failed" {
            return Ok(Redrive::NotFailed { status: task.status });
        }
        let (Some(access), Some(app_kind)) = (access, app_kind) else {
            return Ok(Redrive::NoDesiredState);
        };
        // Re-driven, it would find its version applied and end "succeeded" without a call: a
        // removal that never happened, in the log, for someone a later task granted again.
        if access.applied_version >= access.desired_version {
            update_task(&tx, tenant_id, task_id, TaskUpdate::Superseded).await?;
            let detail = format!(
                "not re-driven by {actor}: a later task applied version {} of this user's access",
                access.applied_version
            );
            add_event(&tx, tenant_id, task_id, NewEvent::new("superseded", &detail)).await?;
            tx.commit().await?;
            return Ok(Redrive::Outdated { applied_version: access.applied_version });
        }
        let target = RedriveTarget {
            tenant_id,
            task_id,
            job_id,
            integration_id,
            user_id,
            app_kind,
            desired_version: access.desired_version,
        };
        tx.execute(
            "update tasks set status = 'queued', dead_lettered = false, desired_version = $3, finished_at = null,
                    redriven = redriven + 1, attempt_base = attempts, throttled_attempts = 0, paused_for = '0',
                    redriven_at = clock_timestamp(), updated_at = clock_timestamp()
             where tenant_id = $1 and id = $2",
            &[&tenant_id, &task_id, &target.desired_version],
        )
        .await?;
        let detail = format!("re-driven by {actor} for desired version {}", target.desired_version);
        add_event(&tx, tenant_id, task_id, NewEvent::new("redriven", &detail)).await?;
        let m = message(&target);
        crate::outbox::enqueue(&tx, tenant_id, m.message_id, &m.exchange, &m.routing_key, &m.payload).await?;
        tx.commit().await?;
        Ok(Redrive::Requeued { desired_version: target.desired_version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// applied_version only grows, and the row lock is what a second connector waits on.
    #[tokio::test]
    async fn applied_version_only_grows() {
        let (_url, store) = crate::testing::fresh_database().await.expect("fresh database");
        let (tenant, integration, user) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut client = store.client().await.expect("client");
        client.execute("insert into tenants (id, name) values ($1, 't')", &[&tenant]).await.expect("tenant");
        client
            .execute(
                "insert into integrations (tenant_id, id, name, app_kind, base_url, roles)
                 values ($1, $2, 'i', 'business_hub', 'http://x', '{ADMIN}')",
                &[&tenant, &integration],
            )
            .await
            .expect("integration");
        client
            .execute(
                "insert into access_state (tenant_id, integration_id, user_id, email, desired_role, desired_version)
                 values ($1, $2, $3, 'a@x.io', null, 3)",
                &[&tenant, &integration, &user],
            )
            .await
            .expect("access_state");

        let tx = client.transaction().await.expect("tx");
        let row = lock_access(&tx, tenant, integration, user).await.expect("lock").expect("row");
        assert_eq!((row.desired_version, row.applied_version), (3, 0));
        assert!(record_applied(&tx, tenant, integration, user, 3, None).await.expect("apply 3"));
        assert!(!record_applied(&tx, tenant, integration, user, 2, Some("ADMIN")).await.expect("apply 2"));
        tx.commit().await.expect("commit");

        let tx = client.transaction().await.expect("tx");
        let row = lock_access(&tx, tenant, integration, user).await.expect("lock").expect("row");
        assert_eq!((row.applied_version, row.applied_role), (3, None));
        assert_eq!(lock_access(&tx, Uuid::new_v4(), integration, user).await.expect("other tenant"), None);
    }

    /// A failed task whose version a later task applied is no failure to act on: the later
    /// task's success marks it superseded, and a re-drive of one still failed is refused as
    /// outdated and marks it so.
    #[tokio::test]
    async fn failed_tasks_a_later_one_made_moot_are_superseded() {
        let (_url, store) = crate::testing::fresh_database().await.expect("fresh database");
        let (tenant, integration, user, job) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut client = store.client().await.expect("client");
        client
            .batch_execute(&format!(
                "insert into tenants (id, name) values ('{tenant}', 't');
                 insert into integrations (tenant_id, id, name, app_kind, base_url, roles)
                 values ('{tenant}', '{integration}', 'i', 'business_hub', 'http://x', '{{ADMIN}}');
                 insert into jobs (tenant_id, id, trigger_method, trigger_path, received_at)
                 values ('{tenant}', '{job}', 'PATCH', '/Groups/x', now());
                 insert into access_state (tenant_id, integration_id, user_id, email, desired_role, desired_version,
                                           applied_version, applied_role)
                 values ('{tenant}', '{integration}', '{user}', 'a@x.io', 'ADMIN', 3, 3, 'ADMIN');"
            ))
            .await
            .expect("setup");
        let task = |version: i64| {
            let id = Uuid::new_v4();
            let c = &client;
            async move {
                c.execute(
                    "insert into tasks (tenant_id, id, job_id, integration_id, user_id, user_email, outcome, reason,
                                        desired_version, status, dead_lettered)
                     values ($1, $2, $3, $4, $5, 'a@x.io', 'remove', 'removed', $6, 'failed', true)",
                    &[&tenant, &id, &job, &integration, &user, &version],
                )
                .await
                .expect("task");
                id
            }
        };
        let (older, moot, later) = (task(1).await, task(2).await, Uuid::new_v4());
        async fn status(c: &tokio_postgres::Client, id: Uuid) -> String {
            c.query_one("select status from tasks where id = $1", &[&id]).await.expect("status").get(0)
        }

        // A re-drive of a failed task whose version is applied: refused, marked superseded.
        let outcome = store.redrive_task(tenant, moot, "a test", |_| unreachable_message()).await.expect("redrive");
        assert_eq!(outcome, Redrive::Outdated { applied_version: 3 });
        assert_eq!(status(&client, moot).await, "superseded");

        // A later task's success supersedes what failed before it, for this pair only.
        let tx = client.transaction().await.expect("tx");
        assert_eq!(supersede_failed(&tx, tenant, integration, user, 3, later).await.expect("supersede"), 1);
        assert_eq!(supersede_failed(&tx, tenant, integration, Uuid::new_v4(), 3, later).await.expect("other"), 0);
        tx.commit().await.expect("commit");
        assert_eq!(status(&client, older).await, "superseded");
        let kinds: Vec<String> = client
            .query("select kind from task_events where task_id = $1", &[&older])
            .await
            .expect("events")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(kinds, ["superseded"]);
    }

    fn unreachable_message() -> RedriveMessage {
        RedriveMessage {
            message_id: Uuid::new_v4(),
            exchange: "never-sent".into(),
            routing_key: "never".into(),
            payload: serde_json::json!({}),
        }
    }
}
