//! Reads of the log store behind the Automation Log and an integration's Activity: jobs (one
//! per trigger), their tasks (one per user per integration) and each task's progress events.
//! The resolver and the connectors write these rows; the console only reads them here.
//!
//! Lists are newest first and paged with a [`Cursor`] on (created_at, id): a page after a
//! cursor never changes when new rows arrive, because new rows sort before it.

use crate::{Result, Store};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Every status a task can have, in the order a task moves through them.
pub const TASK_STATUSES: &[&str] = &["queued", "running", "retrying", "succeeded", "kept", "failed", "superseded"];

/// A position in a newest-first list: the (created_at, id) of the last row of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    /// The text form clients pass back: `<microseconds since epoch>.<id>`. Postgres keeps
    /// microseconds, so the round trip is exact.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_micros(), self.id.simple())
    }

    /// None for anything [`Cursor::encode`] did not produce.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (micros, id) = s.split_once('.')?;
        let micros: i64 = micros.parse().ok()?;
        let created_at = DateTime::<Utc>::from_timestamp_micros(micros)?;
        let id = Uuid::parse_str(id).ok()?;
        Some(Cursor { created_at, id })
    }
}

/// What caused a job, as the IdP's (or admin's) request showed it.
#[derive(Debug, Clone, Serialize)]
pub struct JobTrigger {
    pub method: String,
    pub path: String,
    pub user_agent: String,
    pub received_at: DateTime<Utc>,
}

/// A job with the count of its tasks by status (every status present, zero when none).
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: Uuid,
    pub scope: String,
    pub trigger: JobTrigger,
    pub summary: String,
    pub created_at: DateTime<Utc>,
    pub task_counts: BTreeMap<String, i64>,
}

impl JobSummary {
    pub fn cursor(&self) -> Cursor {
        Cursor { created_at: self.created_at, id: self.id }
    }
}

/// One (user, integration) task as the log shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub id: Uuid,
    pub job_id: Uuid,
    pub integration_id: Uuid,
    pub user_id: Uuid,
    pub user_email: String,
    pub outcome: String,
    pub from_role: Option<String>,
    pub to_role: Option<String>,
    pub reason: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub dead_lettered: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl TaskRow {
    pub fn cursor(&self) -> Cursor {
        Cursor { created_at: self.created_at, id: self.id }
    }
}

/// One progress event of a task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub attempt: Option<i32>,
    pub status_code: Option<i32>,
    pub detail: String,
}

/// Which tasks to list; every field narrows the list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub job: Option<Uuid>,
    pub integration: Option<Uuid>,
    pub user: Option<Uuid>,
    /// One of [`TASK_STATUSES`], or `dead_lettered` (the tasks sent to a dead-letter queue and
    /// not re-driven since).
    pub status: Option<String>,
}

const JOB_COLUMNS: &str = "id, scope, trigger_method, trigger_path, user_agent, received_at, summary, created_at";

const TASK_COLUMNS: &str =
    "id, job_id, integration_id, user_id, user_email, outcome, from_role, to_role, reason, status,
                            attempts, last_error, dead_lettered, created_at, started_at, finished_at";

fn job_from_row(r: &tokio_postgres::Row) -> JobSummary {
    JobSummary {
        id: r.get(0),
        scope: r.get(1),
        trigger: JobTrigger { method: r.get(2), path: r.get(3), user_agent: r.get(4), received_at: r.get(5) },
        summary: r.get(6),
        created_at: r.get(7),
        task_counts: TASK_STATUSES.iter().map(|s| (s.to_string(), 0)).collect(),
    }
}

/// Maps a row selected with the task columns in log order (shared with the pages' queries).
pub(crate) fn task_from_row(r: &tokio_postgres::Row) -> TaskRow {
    TaskRow {
        id: r.get(0),
        job_id: r.get(1),
        integration_id: r.get(2),
        user_id: r.get(3),
        user_email: r.get(4),
        outcome: r.get(5),
        from_role: r.get(6),
        to_role: r.get(7),
        reason: r.get(8),
        status: r.get(9),
        attempts: r.get(10),
        last_error: r.get(11),
        dead_lettered: r.get(12),
        created_at: r.get(13),
        started_at: r.get(14),
        finished_at: r.get(15),
    }
}

impl Store {
    /// The tenant's jobs, newest first, strictly after `before` when given, at most `limit`.
    pub async fn jobs(&self, tenant_id: Uuid, before: Option<Cursor>, limit: i64) -> Result<Vec<JobSummary>> {
        let client = self.client().await?;
        let (at, id) = (before.map(|c| c.created_at), before.map(|c| c.id));
        let rows = client
            .query(
                &format!(
                    "select {JOB_COLUMNS} from jobs
                      where tenant_id = $1 and ($2::timestamptz is null or (created_at, id) < ($2, $3::uuid))
                      order by created_at desc, id desc limit $4"
                ),
                &[&tenant_id, &at, &id, &limit],
            )
            .await?;
        let mut jobs: Vec<JobSummary> = rows.iter().map(job_from_row).collect();
        self.fill_task_counts(&client, tenant_id, &mut jobs).await?;
        Ok(jobs)
    }

    pub async fn job(&self, tenant_id: Uuid, job_id: Uuid) -> Result<Option<JobSummary>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("select {JOB_COLUMNS} from jobs where tenant_id = $1 and id = $2"),
                &[&tenant_id, &job_id],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut jobs = vec![job_from_row(&row)];
        self.fill_task_counts(&client, tenant_id, &mut jobs).await?;
        Ok(jobs.pop())
    }

    async fn fill_task_counts(&self, client: &crate::Client, tenant_id: Uuid, jobs: &mut [JobSummary]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        let rows = client
            .query(
                "select job_id, status, count(*) from tasks where tenant_id = $1 and job_id = any($2) group by job_id, status",
                &[&tenant_id, &ids],
            )
            .await?;
        for r in rows {
            let job_id: Uuid = r.get(0);
            if let Some(job) = jobs.iter_mut().find(|j| j.id == job_id) {
                job.task_counts.insert(r.get(1), r.get(2));
            }
        }
        Ok(())
    }

    /// The tenant's tasks matching `filter`, newest first, strictly after `before` when given,
    /// at most `limit`.
    pub async fn tasks(
        &self,
        tenant_id: Uuid,
        filter: &TaskFilter,
        before: Option<Cursor>,
        limit: i64,
    ) -> Result<Vec<TaskRow>> {
        let client = self.client().await?;
        let (at, id) = (before.map(|c| c.created_at), before.map(|c| c.id));
        let rows = client
            .query(
                &format!(
                    "select {TASK_COLUMNS} from tasks
                      where tenant_id = $1
                        and ($2::uuid is null or job_id = $2)
                        and ($3::uuid is null or integration_id = $3)
                        and ($4::uuid is null or user_id = $4)
                        and ($5::text is null
                             or (case when $5 = 'dead_lettered' then dead_lettered else status = $5 end))
                        and ($6::timestamptz is null or (created_at, id) < ($6, $7::uuid))
                      order by created_at desc, id desc limit $8"
                ),
                &[&tenant_id, &filter.job, &filter.integration, &filter.user, &filter.status, &at, &id, &limit],
            )
            .await?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    pub async fn task(&self, tenant_id: Uuid, task_id: Uuid) -> Result<Option<TaskRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("select {TASK_COLUMNS} from tasks where tenant_id = $1 and id = $2"),
                &[&tenant_id, &task_id],
            )
            .await?;
        Ok(row.as_ref().map(task_from_row))
    }

    /// A task's progress events in the order they happened, at most `limit`. The first is
    /// always `decided`, with the reason the resolver stored on the task (id 0: it is read from
    /// the task, not stored as an event row).
    pub async fn task_events(&self, tenant_id: Uuid, task_id: Uuid, limit: i64) -> Result<Vec<TaskEvent>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "select * from (
                   select 0::bigint as id, created_at as at, 'decided' as kind, null::int as attempt,
                          null::int as status_code, reason as detail
                     from tasks where tenant_id = $1 and id = $2
                   union all
                   select id, at, kind, attempt, status_code, detail from task_events
                    where tenant_id = $1 and task_id = $2
                 ) e order by id limit $3",
                &[&tenant_id, &task_id, &limit],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| TaskEvent {
                id: r.get(0),
                at: r.get(1),
                kind: r.get(2),
                attempt: r.get(3),
                status_code: r.get(4),
                detail: r.get(5),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c =
            Cursor { created_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(), id: Uuid::new_v4() };
        assert_eq!(Cursor::parse(&c.encode()), Some(c));
        for bad in [
            "",
            "x",
            "12",
            "12.",
            ".abc",
            "abc.0b7c",
            "1.not-a-uuid",
            "99999999999999999999.00000000000000000000000000000000",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
