//! Reads behind the console's web pages (Automation Log, Activity, Task detail, live updates)
//! that the JSON reads in [`crate::logs`] do not cover: filters by email, by dead-lettering and by
//! time, jobs that hold a matching task, a few tasks per job in one query, per-status counts
//! that include dead-lettered tasks, an integration's health, and the cheap change probe the
//! live updates poll. Single rows (a task, its events, a job) come from [`crate::logs`].
//!
//! Lists use the same newest-first [`Cursor`] as the JSON reads, so a page after a cursor stays
//! the same while new jobs arrive.

use crate::logs::{task_from_row, Cursor, JobTrigger, TaskRow, TASK_STATUSES};
use crate::{Result, Store};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use unseat_domain::text::fold;
use uuid::Uuid;

/// The status filter value that selects dead-lettered tasks (a flag on failed tasks, not a
/// status of its own in the store).
pub const DEAD_LETTERED: &str = "dead_lettered";

/// Who a user filter names: the SCIM user id, or the email the task recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(Uuid),
    Email(String),
}

impl UserRef {
    /// An id when `raw` is a UUID, an email otherwise. None for blank input.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        if raw.is_empty() {
            return None;
        }
        Some(match Uuid::parse_str(raw) {
            Ok(id) => Self::Id(id),
            Err(_) => Self::Email(raw.to_string()),
        })
    }
}

/// What the pages filter on; every field set narrows the list.
#[derive(Debug, Clone, Default)]
pub struct PageFilter {
    /// One of [`TASK_STATUSES`] or [`DEAD_LETTERED`]; anything else is refused by
    /// [`PageFilter::status_is_known`] before a query runs.
    pub status: Option<String>,
    pub integration: Option<Uuid>,
    pub user: Option<UserRef>,
    pub job: Option<Uuid>,
    /// Inclusive lower bound on when the job (log) or task (lists) was created.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub to: Option<DateTime<Utc>>,
}

impl PageFilter {
    pub fn status_is_known(status: &str) -> bool {
        status == DEAD_LETTERED || TASK_STATUSES.contains(&status)
    }

    /// True when a filter applies to tasks (so a job is listed only if one of its tasks matches).
    fn narrows_tasks(&self) -> bool {
        self.status.is_some() || self.integration.is_some() || self.user.is_some()
    }

    fn user_id(&self) -> Option<Uuid> {
        match &self.user {
            Some(UserRef::Id(id)) => Some(*id),
            _ => None,
        }
    }

    /// The address the filter names, folded ([`fold`]) as tasks' keys are.
    fn user_email(&self) -> Option<String> {
        match &self.user {
            Some(UserRef::Email(e)) => Some(fold(e)),
            _ => None,
        }
    }
}

/// A job in the log with its tasks counted per status. `counts` has every status of
/// [`TASK_STATUSES`] plus [`DEAD_LETTERED`], zero when none.
#[derive(Debug, Clone)]
pub struct LogJob {
    pub id: Uuid,
    pub scope: String,
    pub trigger: JobTrigger,
    pub summary: String,
    pub created_at: DateTime<Utc>,
    pub counts: BTreeMap<String, i64>,
    pub total: i64,
}

impl LogJob {
    pub fn cursor(&self) -> Cursor {
        Cursor { created_at: self.created_at, id: self.id }
    }
}

/// An integration's health over a recent window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// Tasks that finished in the window (succeeded, kept, failed).
    pub finished: i64,
    pub failed: i64,
    /// Failed tasks still waiting for an admin (dead-lettered), whenever they failed.
    pub dead_lettered: i64,
    /// Retries scheduled in the window, and the total wait they announced.
    pub retries: i64,
    pub retry_wait_ms: i64,
    /// Attempts the app refused with 429 (rate limited) in the window.
    pub rate_limited: i64,
}

// The task filter, as SQL over alias `t` with parameters $1 (tenant) … $5. $2 status, $3
// integration, $4 user id, $5 user email, folded ([`fold`]): compared with the task's key, or,
// for a task written before tasks had keys (migration 21), by `lower()` as then.
const TASK_MATCH: &str = "t.tenant_id = $1
    and ($2::text is null or (case when $2 = 'dead_lettered' then t.dead_lettered else t.status = $2 end))
    and ($3::uuid is null or t.integration_id = $3)
    and ($4::uuid is null or t.user_id = $4)
    and ($5::text is null or t.user_email_key = $5
         or (t.user_email_key is null and lower(t.user_email) = lower($5)))";

const TASK_COLUMNS: &str =
    "t.id, t.job_id, t.integration_id, t.user_id, t.user_email, t.outcome, t.from_role, t.to_role,
    t.reason, t.status, t.attempts, t.last_error, t.dead_lettered, t.created_at, t.started_at, t.finished_at";

fn empty_counts() -> BTreeMap<String, i64> {
    TASK_STATUSES.iter().chain(std::iter::once(&DEAD_LETTERED)).map(|s| (s.to_string(), 0)).collect()
}

impl Store {
    /// The tenant's jobs newest first, strictly after `before`, at most `limit`: those created in
    /// the filter's time range and, when the filter names a status, integration or user, holding
    /// at least one matching task. Counts cover all of each job's tasks.
    pub async fn log_jobs(
        &self,
        tenant_id: Uuid,
        filter: &PageFilter,
        before: Option<Cursor>,
        limit: i64,
    ) -> Result<Vec<LogJob>> {
        let client = self.client().await?;
        let (at, id) = (before.map(|c| c.created_at), before.map(|c| c.id));
        let sql = format!(
            "select j.id, j.scope, j.trigger_method, j.trigger_path, j.user_agent, j.received_at, j.summary, j.created_at
               from jobs j
              where j.tenant_id = $1
                and ($6::timestamptz is null or j.created_at >= $6)
                and ($7::timestamptz is null or j.created_at < $7)
                and ($8::timestamptz is null or (j.created_at, j.id) < ($8, $9::uuid))
                and (not $10 or exists (select 1 from tasks t where {TASK_MATCH} and t.job_id = j.id))
              order by j.created_at desc, j.id desc
              limit $11"
        );
        let rows = client
            .query(
                &sql,
                &[
                    &tenant_id,
                    &filter.status,
                    &filter.integration,
                    &filter.user_id(),
                    &filter.user_email(),
                    &filter.from,
                    &filter.to,
                    &at,
                    &id,
                    &filter.narrows_tasks(),
                    &limit,
                ],
            )
            .await?;
        let mut jobs: Vec<LogJob> = rows
            .iter()
            .map(|r| LogJob {
                id: r.get(0),
                scope: r.get(1),
                trigger: JobTrigger { method: r.get(2), path: r.get(3), user_agent: r.get(4), received_at: r.get(5) },
                summary: r.get(6),
                created_at: r.get(7),
                counts: empty_counts(),
                total: 0,
            })
            .collect();
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        let counts = self.job_counts(tenant_id, &ids).await?;
        for job in &mut jobs {
            if let Some((counts, total)) = counts.get(&job.id) {
                job.counts.clone_from(counts);
                job.total = *total;
            }
        }
        Ok(jobs)
    }

    /// Per job: tasks per status (plus dead-lettered) and the total, in one grouped query on the
    /// job index, so a job of 10,000 tasks shows its counts without listing them.
    pub async fn job_counts(
        &self,
        tenant_id: Uuid,
        job_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, (BTreeMap<String, i64>, i64)>> {
        let mut out = HashMap::new();
        if job_ids.is_empty() {
            return Ok(out);
        }
        let client = self.client().await?;
        let rows = client
            .query(
                "select job_id, status, count(*), count(*) filter (where dead_lettered)
                   from tasks where tenant_id = $1 and job_id = any($2) group by job_id, status",
                &[&tenant_id, &job_ids],
            )
            .await?;
        for r in rows {
            let entry = out.entry(r.get::<_, Uuid>(0)).or_insert_with(|| (empty_counts(), 0));
            let (status, n, dead): (String, i64, i64) = (r.get(1), r.get(2), r.get(3));
            *entry.0.entry(status).or_insert(0) += n;
            *entry.0.entry(DEAD_LETTERED.to_string()).or_insert(0) += dead;
            entry.1 += n;
        }
        Ok(out)
    }

    /// For each job, its first `per_job` tasks matching the filter (newest first), in one query.
    pub async fn tasks_of_jobs(
        &self,
        tenant_id: Uuid,
        job_ids: &[Uuid],
        filter: &PageFilter,
        per_job: i64,
    ) -> Result<Vec<TaskRow>> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let sql = format!(
            "select {TASK_COLUMNS}
               from unnest($6::uuid[]) as j(id)
               cross join lateral (
                 select * from tasks t where {TASK_MATCH} and t.job_id = j.id
                  order by t.created_at desc, t.id desc limit $7
               ) t"
        );
        let rows = client
            .query(
                &sql,
                &[
                    &tenant_id,
                    &filter.status,
                    &filter.integration,
                    &filter.user_id(),
                    &filter.user_email(),
                    &job_ids,
                    &per_job,
                ],
            )
            .await?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    /// The tenant's tasks matching the filter (its `job`, time range and task fields), newest
    /// first, strictly after `before`, at most `limit`.
    pub async fn filtered_tasks(
        &self,
        tenant_id: Uuid,
        filter: &PageFilter,
        before: Option<Cursor>,
        limit: i64,
    ) -> Result<Vec<TaskRow>> {
        let client = self.client().await?;
        let (at, id) = (before.map(|c| c.created_at), before.map(|c| c.id));
        let sql = format!(
            "select {TASK_COLUMNS} from tasks t
              where {TASK_MATCH}
                and ($6::uuid is null or t.job_id = $6)
                and ($7::timestamptz is null or t.created_at >= $7)
                and ($8::timestamptz is null or t.created_at < $8)
                and ($9::timestamptz is null or (t.created_at, t.id) < ($9, $10::uuid))
              order by t.created_at desc, t.id desc
              limit $11"
        );
        let rows = client
            .query(
                &sql,
                &[
                    &tenant_id,
                    &filter.status,
                    &filter.integration,
                    &filter.user_id(),
                    &filter.user_email(),
                    &filter.job,
                    &filter.from,
                    &filter.to,
                    &at,
                    &id,
                    &limit,
                ],
            )
            .await?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    /// An integration's health over the last `window`: finished and failed tasks, retries and
    /// their announced waits, rate-limited attempts; plus its dead-lettered tasks of any age.
    pub async fn integration_health(
        &self,
        tenant_id: Uuid,
        integration_id: Uuid,
        window: std::time::Duration,
    ) -> Result<Health> {
        let client = self.client().await?;
        let since = Utc::now() - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(1));
        let tasks = client
            .query_one(
                "select count(*) filter (where finished_at >= $3 and status in ('succeeded', 'kept', 'failed')),
                        count(*) filter (where finished_at >= $3 and status = 'failed'),
                        count(*) filter (where dead_lettered)
                   from tasks where tenant_id = $1 and integration_id = $2",
                &[&tenant_id, &integration_id, &since],
            )
            .await?;
        // The runtime writes "retrying in N ms" on each retry_scheduled event.
        let events = client
            .query_one(
                r"select count(*) filter (where e.kind = 'retry_scheduled'),
                         coalesce(sum(substring(e.detail from 'retrying in ([0-9]{1,12}) ms')::bigint)
                                  filter (where e.kind = 'retry_scheduled'), 0)::bigint,
                         count(*) filter (where e.kind = 'attempt_failed' and e.status_code = 429)
                    from task_events e
                    join tasks t on t.tenant_id = e.tenant_id and t.id = e.task_id
                   where e.tenant_id = $1 and e.at >= $3 and t.integration_id = $2",
                &[&tenant_id, &integration_id, &since],
            )
            .await?;
        Ok(Health {
            finished: tasks.get(0),
            failed: tasks.get(1),
            dead_lettered: tasks.get(2),
            retries: events.get(0),
            retry_wait_ms: events.get(1),
            rate_limited: events.get(2),
        })
    }

    /// A fingerprint of the tenant's recent log activity: it changes when a job is created or a
    /// task changes status or attempts. The live updates poll it; a task row committed late (its
    /// `updated_at` is stamped before commit) still changes the fingerprint, because the probe
    /// hashes every task touched in the last `lookback` rather than tracking only the newest.
    pub async fn log_fingerprint(&self, tenant_id: Uuid, lookback: std::time::Duration) -> Result<String> {
        let client = self.client().await?;
        let since = Utc::now() - chrono::Duration::from_std(lookback).unwrap_or(chrono::Duration::seconds(10));
        let row = client
            .query_one(
                "select (select count(*) from tasks t where t.tenant_id = $1 and t.updated_at >= $2),
                        (select coalesce(sum(hashtextextended(t.id::text || t.status || t.attempts::text
                                                              || t.dead_lettered::text, 0)), 0)::text
                           from tasks t where t.tenant_id = $1 and t.updated_at >= $2),
                        (select max(updated_at) from tasks where tenant_id = $1),
                        (select max(created_at) from jobs where tenant_id = $1)",
                &[&tenant_id, &since],
            )
            .await?;
        let (count, hash): (i64, String) = (row.get(0), row.get(1));
        let (task_at, job_at): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (row.get(2), row.get(3));
        let micros = |t: Option<DateTime<Utc>>| t.map_or(0, |t| t.timestamp_micros());
        Ok(format!("{count}.{hash}.{}.{}", micros(task_at), micros(job_at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fresh_database;

    async fn seed(store: &Store) -> (Uuid, Uuid, Uuid) {
        let tenant = Uuid::new_v4();
        let integration = Uuid::new_v4();
        let job = Uuid::new_v4();
        let client = store.client().await.unwrap();
        client
            .batch_execute(&format!(
                "insert into tenants (id, name) values ('{tenant}', 't');
                 insert into integrations (tenant_id, id, name, app_kind, base_url, roles)
                   values ('{tenant}', '{integration}', 'Hub', 'business_hub', 'http://x', '{{ADMIN}}');
                 insert into jobs (tenant_id, id, trigger_method, trigger_path, received_at)
                   values ('{tenant}', '{job}', 'PATCH', '/Users/1', now());"
            ))
            .await
            .unwrap();
        for (i, (status, dead)) in
            [("succeeded", false), ("failed", true), ("failed", false), ("queued", false)].into_iter().enumerate()
        {
            client
                .execute(
                    "insert into tasks (tenant_id, id, job_id, integration_id, user_id, user_email, outcome, reason,
                                        desired_version, status, dead_lettered)
                     values ($1, $2, $3, $4, $5, $6, 'remove', 'no grant', 1, $7, $8)",
                    &[
                        &tenant,
                        &Uuid::new_v4(),
                        &job,
                        &integration,
                        &Uuid::new_v4(),
                        &format!("u{i}@example.com"),
                        &status,
                        &dead,
                    ],
                )
                .await
                .unwrap();
        }
        (tenant, integration, job)
    }

    #[tokio::test]
    async fn filters_counts_and_tenancy() {
        let (_, store) = fresh_database().await.unwrap();
        let (tenant, integration, job) = seed(&store).await;
        let all = PageFilter::default();
        let jobs = store.log_jobs(tenant, &all, None, 10).await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].total, jobs[0].counts["failed"], jobs[0].counts[DEAD_LETTERED]), (4, 2, 1));

        let failed = PageFilter { status: Some("failed".into()), ..PageFilter::default() };
        let tasks = store.tasks_of_jobs(tenant, &[job], &failed, 10).await.unwrap();
        assert_eq!(tasks.len(), 2);
        assert!(tasks.iter().all(|t| t.status == "failed"));
        let dead = PageFilter { status: Some(DEAD_LETTERED.into()), ..PageFilter::default() };
        assert_eq!(store.filtered_tasks(tenant, &dead, None, 10).await.unwrap().len(), 1);

        let by_email = PageFilter { user: UserRef::parse("U2@Example.com"), ..PageFilter::default() };
        let tasks = store.filtered_tasks(tenant, &by_email, None, 10).await.unwrap();
        assert_eq!(tasks.iter().map(|t| t.user_email.as_str()).collect::<Vec<_>>(), ["u2@example.com"]);

        let nobody = PageFilter { user: UserRef::parse("nobody@example.com"), ..PageFilter::default() };
        assert!(store.log_jobs(tenant, &nobody, None, 10).await.unwrap().is_empty());
        let later = PageFilter { from: Some(Utc::now() + chrono::Duration::hours(1)), ..PageFilter::default() };
        assert!(store.log_jobs(tenant, &later, None, 10).await.unwrap().is_empty());

        // Another tenant sees nothing of it.
        let other = Uuid::new_v4();
        assert!(store.log_jobs(other, &all, None, 10).await.unwrap().is_empty());
        assert!(store.tasks_of_jobs(other, &[job], &all, 10).await.unwrap().is_empty());

        let health = store.integration_health(tenant, integration, std::time::Duration::from_secs(3600)).await.unwrap();
        assert_eq!(health.dead_lettered, 1);
    }

    /// The log's filter by address ignores case as the rest of unseat does ([`fold`]), whatever
    /// the database's collation: under `C`, `lower()` lower-cases ASCII only, and nowhere does it
    /// take a final sigma for the other one.
    #[tokio::test]
    async fn the_email_filter_ignores_case_the_same_way_whatever_the_database_collation() {
        for locale in [None, Some("C")] {
            let (_, store) = match locale {
                None => fresh_database().await.unwrap(),
                Some(l) => crate::testing::fresh_database_in_locale(l).await.unwrap(),
            };
            let (tenant, integration, job) = seed(&store).await;
            let emails = ["ΟΔΟΣ@Corp.example", "Émile.Øre@Corp.example", "\u{212A}elvin@corp.example"];
            let mut client = store.client().await.unwrap();
            let tx = client.transaction().await.unwrap();
            let tasks: Vec<_> = emails
                .iter()
                .map(|email| crate::access::NewTask {
                    tenant_id: tenant,
                    id: Uuid::new_v4(),
                    job_id: job,
                    integration_id: integration,
                    user_id: Uuid::new_v4(),
                    user_email: email,
                    outcome: "remove",
                    from_role: Some("ADMIN"),
                    to_role: None,
                    from_assets: None,
                    to_assets: None,
                    reason: "no grant",
                    desired_version: 1,
                    status: "queued",
                })
                .collect();
            assert_eq!(crate::access::insert_tasks(&tx, &tasks).await.unwrap(), 3);
            tx.commit().await.unwrap();

            let found = |user: &str| {
                let filter = PageFilter { user: UserRef::parse(user), ..PageFilter::default() };
                let store = store.clone();
                async move {
                    let tasks = store.filtered_tasks(tenant, &filter, None, 10).await.unwrap();
                    let jobs = store.log_jobs(tenant, &filter, None, 10).await.unwrap();
                    (tasks.into_iter().map(|t| t.user_email).collect::<Vec<_>>(), jobs.len())
                }
            };
            for (probe, want) in [
                ("οδος@corp.example", emails[0]),
                ("οδοσ@CORP.EXAMPLE", emails[0]),
                ("ÉMILE.øRE@corp.example", emails[1]),
                ("kelvin@corp.example", emails[2]),
                // A task written before tasks had keys is compared as it was.
                ("U2@Example.com", "u2@example.com"),
            ] {
                assert_eq!(found(probe).await, (vec![want.to_string()], 1), "{probe} under {locale:?}");
            }
            assert_eq!(found("emile.ore@corp.example").await, (vec![], 0), "under {locale:?}");
        }
    }

    #[tokio::test]
    async fn paging_is_stable_and_the_fingerprint_moves() {
        let (_, store) = fresh_database().await.unwrap();
        let (tenant, _, job) = seed(&store).await;
        let filter = PageFilter { job: Some(job), ..PageFilter::default() };
        let first = store.filtered_tasks(tenant, &filter, None, 2).await.unwrap();
        let cursor = first.last().unwrap().cursor();
        let second = store.filtered_tasks(tenant, &filter, Some(cursor), 10).await.unwrap();
        assert_eq!(first.len() + second.len(), 4);
        assert!(second.iter().all(|t| !first.iter().any(|f| f.id == t.id)));

        let lookback = std::time::Duration::from_secs(60);
        let before = store.log_fingerprint(tenant, lookback).await.unwrap();
        store
            .client()
            .await
            .unwrap()
            .execute(
                "update tasks set status = 'running', updated_at = clock_timestamp() where tenant_id = $1 and status = 'queued'",
                &[&tenant],
            )
            .await
            .unwrap();
        assert_ne!(store.log_fingerprint(tenant, lookback).await.unwrap(), before);
        // The page after the cursor did not change.
        assert_eq!(store.filtered_tasks(tenant, &filter, Some(cursor), 10).await.unwrap().len(), second.len());
    }
}
