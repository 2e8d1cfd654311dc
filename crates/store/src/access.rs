//! What the resolver reads and writes: the current directory facts about one user, the grants
//! that reach them, the desired access state per (integration, user), and the Automation Log
//! entries (jobs, tasks) its decisions open. Everything runs in the resolver's transaction.

use crate::Result;
use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;
use uuid::Uuid;

/// The directory's current view of a user; None when the user is deleted.
#[derive(Debug, Clone)]
pub struct UserFacts {
    pub active: bool,
    /// The address the app knows the user by: primary email, else userName.
    pub email: String,
}

/// One grant that reaches a user, with the name of the team it comes through.
#[derive(Debug, Clone)]
pub struct ReachingGrant {
    pub integration_id: Uuid,
    pub role: String,
    /// None for an individual grant.
    pub team_name: Option<String>,
}

/// An integration as the resolver needs it.
#[derive(Debug, Clone)]
pub struct IntegrationFacts {
    pub id: Uuid,
    pub name: String,
    pub app_kind: String,
    pub roles: Vec<String>,
}

/// The stored desired state of one (integration, user).
#[derive(Debug, Clone)]
pub struct AccessRow {
    pub integration_id: Uuid,
    pub email: String,
    pub desired_role: Option<String>,
    pub desired_version: i64,
}

/// Serialises every resolver decision about one user until the transaction ends, so two
/// resolvers working on the same user decide one after the other, each on the state the other
/// left. Callers lock users in a fixed order (sorted ids) to avoid deadlocks.
pub async fn lock_user(tx: &Transaction<'_>, tenant_id: Uuid, user_id: Uuid) -> Result<()> {
    tx.execute(
        "select pg_advisory_xact_lock(hashtext($1::text), hashtext($2::text))",
        &[&tenant_id.to_string(), &user_id.to_string()],
    )
    .await?;
    Ok(())
}

pub async fn user_facts(tx: &Transaction<'_>, tenant_id: Uuid, user_id: Uuid) -> Result<Option<UserFacts>> {
    let row = tx
        .query_opt(
            "select active, coalesce(email, user_name) from scim_users where tenant_id = $1 and id = $2",
            &[&tenant_id, &user_id],
        )
        .await?;
    Ok(row.map(|r| UserFacts { active: r.get(0), email: r.get(1) }))
}

/// Every grant that reaches the user now: individual grants and those of every team they are in.
pub async fn reaching_grants(tx: &Transaction<'_>, tenant_id: Uuid, user_id: Uuid) -> Result<Vec<ReachingGrant>> {
    let rows = tx
        .query(
            "select g.integration_id, g.role, sg.display_name
               from grants g
               left join scim_groups sg on g.subject_kind = 'team' and sg.tenant_id = g.tenant_id and sg.id = g.subject_id
              where g.tenant_id = $1
                and ((g.subject_kind = 'user' and g.subject_id = $2)
                  or (g.subject_kind = 'team' and g.subject_id in
                        (select group_id from group_members where tenant_id = $1 and user_id = $2)))",
            &[&tenant_id, &user_id],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ReachingGrant { integration_id: r.get(0), role: r.get(1), team_name: r.get(2) })
        .collect())
}

/// The user's stored desired state on every integration.
pub async fn access_rows(tx: &Transaction<'_>, tenant_id: Uuid, user_id: Uuid) -> Result<Vec<AccessRow>> {
    let rows = tx
        .query(
            "select integration_id, email, desired_role, desired_version from access_state
              where tenant_id = $1 and user_id = $2",
            &[&tenant_id, &user_id],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| AccessRow {
            integration_id: r.get(0),
            email: r.get(1),
            desired_role: r.get(2),
            desired_version: r.get(3),
        })
        .collect())
}

pub async fn integrations(tx: &Transaction<'_>, tenant_id: Uuid, ids: &[Uuid]) -> Result<Vec<IntegrationFacts>> {
    let rows = tx
        .query(
            "select id, name, app_kind, roles from integrations where tenant_id = $1 and id = any($2) order by id",
            &[&tenant_id, &ids],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| IntegrationFacts { id: r.get(0), name: r.get(1), app_kind: r.get(2), roles: r.get(3) })
        .collect())
}

/// Records a new desired state and returns its version (one more than the last).
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

/// Opens a job; false when it already exists (the message was handled before).
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

pub async fn delete_job(tx: &Transaction<'_>, tenant_id: Uuid, job_id: Uuid) -> Result<()> {
    tx.execute("delete from jobs where tenant_id = $1 and id = $2", &[&tenant_id, &job_id]).await?;
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
    pub reason: &'a str,
    pub desired_version: i64,
    /// `queued` for work a connector will do, `kept` for a decision that needs none.
    pub status: &'a str,
}

/// Inserts the task and its first event; false if it existed already.
pub async fn insert_task(tx: &Transaction<'_>, t: &NewTask<'_>) -> Result<bool> {
    let finished: Option<DateTime<Utc>> = (t.status == "kept").then(Utc::now);
    let n = tx
        .execute(
            "insert into tasks (tenant_id, id, job_id, integration_id, user_id, user_email, outcome, from_role, to_role,
                                reason, desired_version, status, finished_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) on conflict do nothing",
            &[
                &t.tenant_id,
                &t.id,
                &t.job_id,
                &t.integration_id,
                &t.user_id,
                &t.user_email,
                &t.outcome,
                &t.from_role,
                &t.to_role,
                &t.reason,
                &t.desired_version,
                &t.status,
                &finished,
            ],
        )
        .await?;
    if n == 1 {
        tx.execute(
            "insert into task_events (tenant_id, task_id, kind, detail) values ($1, $2, 'decided', $3)",
            &[&t.tenant_id, &t.id, &t.reason],
        )
        .await?;
    }
    Ok(n == 1)
}
