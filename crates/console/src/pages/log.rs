//! The Automation Log (every job, newest first, each with its tasks), one job's tasks paged
//! (a job may hold 10,000), and an integration's Activity with its health.

use super::html::{attr, duration, esc, page, query, status, time, time_opt, Shell};
use super::{refusal, Path, Session};
use crate::api::{parse_id, within_years, Page, YEARS};
use crate::auth::Need;
use crate::error::ApiError;
use crate::App;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use unseat_store::admin::Integration;
use unseat_store::logs::{TaskRow, TASK_STATUSES};
use unseat_store::pages::{LogJob, PageFilter, UserRef, DEAD_LETTERED};
use uuid::Uuid;

/// Tasks shown under each job in the log; the job's page lists the rest.
const TASKS_PER_JOB: i64 = 20;
/// Jobs per log page and tasks per list page.
const PAGE_SIZE: i64 = 25;
const TASK_PAGE_SIZE: i64 = 50;
/// The window of an integration's health figures.
const HEALTH_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

type Params = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

/// The filters as the URL carries them, kept verbatim so links and forms repeat them.
#[derive(Default)]
struct Filters {
    status: String,
    integration: String,
    user: String,
    from: String,
    to: String,
}

impl Filters {
    fn read(params: &HashMap<String, String>) -> Self {
        let get = |k: &str| params.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
        Self {
            status: get("status"),
            integration: get("integration"),
            user: get("user"),
            from: get("from"),
            to: get("to"),
        }
    }

    fn is_empty(&self) -> bool {
        self.status.is_empty()
            && self.integration.is_empty()
            && self.user.is_empty()
            && self.from.is_empty()
            && self.to.is_empty()
    }

    fn parse(&self) -> Result<PageFilter, ApiError> {
        let status = match self.status.as_str() {
            "" => None,
            s if PageFilter::status_is_known(s) => Some(s.to_string()),
            s => {
                return Err(ApiError::bad_request(format!(
                    "status {s:?} is not one of {}, {DEAD_LETTERED}",
                    TASK_STATUSES.join(", ")
                )))
            }
        };
        let integration =
            if self.integration.is_empty() { None } else { Some(parse_id(&self.integration, "integration")?) };
        if self.user.chars().count() > 320 {
            return Err(ApiError::bad_request("user must be an email or a user id"));
        }
        Ok(PageFilter {
            status,
            integration,
            user: UserRef::parse(&self.user),
            job: None,
            from: parse_time(&self.from, "from")?,
            to: parse_time(&self.to, "to")?,
        })
    }

    /// The query string of these filters plus `extra`.
    fn query(&self, extra: &[(&str, &str)]) -> String {
        let mut pairs = vec![
            ("status", self.status.as_str()),
            ("integration", self.integration.as_str()),
            ("user", self.user.as_str()),
            ("from", self.from.as_str()),
            ("to", self.to.as_str()),
        ];
        pairs.extend_from_slice(extra);
        query(&pairs)
    }
}

/// A time filter: `YYYY-MM-DDTHH:MM[:SS]` (what a datetime-local field sends) read as UTC, or
/// RFC 3339 with any offset; in the years the log's times can take ([`YEARS`]), so that a time
/// PostgreSQL cannot compare with is refused like any other bad one.
fn parse_time(raw: &str, what: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let parsed = DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc)).ok().or_else(|| {
        ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|format| NaiveDateTime::parse_from_str(raw, format).ok())
            .map(|t| t.and_utc())
    });
    match parsed {
        Some(t) if within_years(t) => Ok(Some(t)),
        _ => Err(ApiError::bad_request(format!(
            "{what} must be a UTC time like 2026-11-25T14:30, in the years {} to {}",
            YEARS.start(),
            YEARS.end()
        ))),
    }
}

/// The page's query parameters; one given twice is refused (which value was meant cannot be
/// told), as the API refuses it.
fn params_of(params: Params) -> Result<HashMap<String, String>, Response> {
    let given = params
        .map(|Query(p)| p)
        .map_err(|e| refusal(&ApiError::bad_request(format!("invalid query string: {}", e.body_text()))))?;
    let mut params = HashMap::with_capacity(given.len());
    for (name, value) in given {
        if params.contains_key(&name) {
            let name: String = name.chars().take(100).collect();
            return Err(refusal(&ApiError::bad_request(format!("query parameter {name:?} is given more than once"))));
        }
        params.insert(name, value);
    }
    Ok(params)
}

fn page_of(params: &HashMap<String, String>, size: i64) -> Result<Page, Response> {
    let mut p = Page::from_params(params).map_err(|e| refusal(&e))?;
    if !params.contains_key("limit") {
        p.limit = size;
    }
    Ok(p)
}

/// The navigation every tenant page shows: the log, then each integration's Activity.
fn nav(tenant: Uuid, integrations: &[Integration]) -> Vec<(String, String)> {
    let mut nav = vec![("Automation Log".to_string(), format!("/console/tenants/{tenant}/log"))];
    for i in integrations {
        let mark = match (i.paused_at.is_some(), i.needs_attention.is_some()) {
            (true, _) => " ⏸",
            (false, true) => " ⚠",
            (false, false) => "",
        };
        nav.push((format!("{}{mark}", i.name), format!("/console/tenants/{tenant}/integrations/{}/activity", i.id)));
    }
    nav
}

/// The shell of a tenant page. `since` is the log fingerprint read before the page's data, so
/// the live stream reports any change made after it.
pub(super) fn shell_for<'a>(
    title: &'a str,
    tenant: Uuid,
    integrations: &[Integration],
    session: &'a Session,
    since: &str,
) -> Shell<'a> {
    Shell {
        title,
        nav: nav(tenant, integrations),
        live: Some(format!("/console/tenants/{tenant}/live{}", query(&[("since", since)]))),
        csrf: Some(&session.csrf),
    }
}

fn integration_name(integrations: &[Integration], id: Uuid) -> String {
    integrations.iter().find(|i| i.id == id).map_or_else(|| format!("a deleted integration ({id})"), |i| i.name.clone())
}

/// The filter form. `with_integration` adds the integration picker (not on an Activity page,
/// which is one integration already).
fn filter_form(action: &str, filters: &Filters, integrations: &[Integration], with_integration: bool) -> String {
    let mut statuses = String::from(r#"<option value="">any status</option>"#);
    for s in TASK_STATUSES.iter().chain(std::iter::once(&DEAD_LETTERED)) {
        let selected = if filters.status == *s { " selected" } else { "" };
        let _ = write!(statuses, r#"<option value="{s}"{selected}>{}</option>"#, s.replace('_', "-"));
    }
    let integration = if with_integration {
        let mut options = String::from(r#"<option value="">any integration</option>"#);
        for i in integrations {
            let id = i.id.to_string();
            let selected = if filters.integration == id { " selected" } else { "" };
            let _ = write!(options, r#"<option value="{id}"{selected}>{}</option>"#, esc(&i.name));
        }
        // Filtered on an integration since deleted (its tasks stay in the log): say so.
        if !filters.integration.is_empty() && !integrations.iter().any(|i| i.id.to_string() == filters.integration) {
            let _ = write!(
                options,
                r#"<option value="{id}" selected>a deleted integration ({id})</option>"#,
                id = attr(&filters.integration)
            );
        }
        format!(r#"<label>Integration <select name="integration">{options}</select></label>"#)
    } else {
        String::new()
    };
    format!(
        r#"<form method="get" action="{action}" class="filters" role="search">
<label>Status <select name="status">{statuses}</select></label>
{integration}
<label>User <input name="user" value="{user}" placeholder="email or user id" size="24"></label>
<label>From (UTC) <input name="from" type="datetime-local" value="{from}"></label>
<label>To (UTC) <input name="to" type="datetime-local" value="{to}"></label>
<button type="submit">Apply</button> <a href="{action}">Clear filters</a>
</form>"#,
        action = attr(action),
        user = attr(&filters.user),
        from = attr(&filters.from),
        to = attr(&filters.to),
    )
}

/// The decision of a task in words: "remove", "ADMIN → EMPLOYEE", "keep ADMIN".
fn decision(t: &TaskRow) -> String {
    match (t.outcome.as_str(), t.from_role.as_deref(), t.to_role.as_deref()) {
        ("remove", Some(from), _) => format!("remove ({from})"),
        ("update", Some(from), Some(to)) => format!("{from} → {to}"),
        ("grant", _, Some(to)) => format!("grant {to}"),
        ("keep", _, Some(role)) => format!("keep {role}"),
        (outcome, _, _) => outcome.to_string(),
    }
}

fn timing(t: &TaskRow) -> String {
    let took = t
        .finished_at
        .map_or_else(String::new, |f| format!(r#"<br><span class="took">took {}</span>"#, duration(t.created_at, f)));
    format!("{}<br>→ {}{took}", time(t.created_at), time_opt(t.finished_at))
}

/// The task table: one row per (user, integration) decision.
fn task_table(tenant: Uuid, tasks: &[TaskRow], integrations: &[Integration], with_integration: bool) -> String {
    let mut rows = String::new();
    for t in tasks {
        let integration = if with_integration {
            format!("<td>{}</td>", esc(&integration_name(integrations, t.integration_id)))
        } else {
            String::new()
        };
        let error = t
            .last_error
            .as_deref()
            .map_or_else(|| "—".to_string(), |e| format!(r#"<span class="error">{}</span>"#, esc(e)));
        let _ = write!(
            rows,
            r#"<tr class="task" data-task="{id}" data-outcome="{outcome}" data-status="{st}"><td><a href="/console/tenants/{tenant}/tasks/{id}">{email}</a></td>{integration}<td>{decision}</td><td>{reason}</td><td>{badge}</td><td class="num">{attempts}</td><td>{error}</td><td class="timing">{timing}</td></tr>"#,
            id = t.id,
            outcome = attr(&t.outcome),
            st = if t.dead_lettered { "dead_lettered" } else { t.status.as_str() },
            email = esc(&t.user_email),
            decision = esc(&decision(t)),
            reason = esc(&t.reason),
            badge = status(&t.status, t.dead_lettered),
            attempts = t.attempts,
            timing = timing(t),
        );
    }
    let integration_head = if with_integration { r#"<th scope="col">Integration</th>"# } else { "" };
    format!(
        r#"<table class="tasks"><thead><tr><th scope="col">User</th>{integration_head}<th scope="col">Decision</th><th scope="col">Reason</th><th scope="col">Status</th><th scope="col">Attempts</th><th scope="col">Last error</th><th scope="col">Queued → finished</th></tr></thead><tbody>{rows}</tbody></table>"#
    )
}

/// Per-status counts as labelled chips; each links to the job's page filtered to that status.
fn counts(tenant: Uuid, job: &LogJob) -> String {
    let mut out =
        format!(r#"<ul class="counts" aria-label="tasks per status"><li><strong>{}</strong> tasks</li>"#, job.total);
    for s in TASK_STATUSES.iter().chain(std::iter::once(&DEAD_LETTERED)) {
        let n = job.counts.get(*s).copied().unwrap_or(0);
        if n > 0 {
            let _ = write!(
                out,
                r#"<li><a href="/console/tenants/{tenant}/jobs/{}?status={s}">{} <strong>{n}</strong></a></li>"#,
                job.id,
                status(s, false)
            );
        }
    }
    out.push_str("</ul>");
    out
}

fn trigger(job: &LogJob) -> String {
    let agent =
        if job.trigger.user_agent.is_empty() { "unknown client".to_string() } else { job.trigger.user_agent.clone() };
    format!(
        r#"<p class="trigger"><code>{} {}</code> from <span class="agent">{}</span>, received {}</p>"#,
        esc(&job.trigger.method),
        esc(&job.trigger.path),
        esc(&agent),
        time(job.trigger.received_at)
    )
}

/// `GET /console/tenants/{tenant}/log`: the Automation Log.
pub(crate) async fn automation_log(
    session: Session,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    params: Params,
) -> Result<Response, Response> {
    let tenant = session.tenant(&app, &tenant, Need::Read).await?;
    let params = params_of(params)?;
    let paging = page_of(&params, PAGE_SIZE)?;
    let filters = Filters::read(&params);
    let filter = filters.parse().map_err(|e| refusal(&e))?;
    let store = &app.state.store;
    let since = super::live::fingerprint(store, tenant).await;
    let integrations = store.integrations(tenant).await.map_err(|e| refusal(&e.into()))?;
    let mut jobs =
        store.log_jobs(tenant, &filter, paging.before, paging.limit + 1).await.map_err(|e| refusal(&e.into()))?;
    let next = paging.finish(&mut jobs, LogJob::cursor);
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let tasks = store.tasks_of_jobs(tenant, &ids, &filter, TASKS_PER_JOB).await.map_err(|e| refusal(&e.into()))?;

    let action = format!("/console/tenants/{tenant}/log");
    let mut list = String::new();
    for job in &jobs {
        let mine: Vec<TaskRow> = tasks.iter().filter(|t| t.job_id == job.id).cloned().collect();
        let users: std::collections::BTreeSet<&str> = mine.iter().map(|t| t.user_email.as_str()).collect();
        let more = if job.total > mine.len() as i64 || !filters.is_empty() {
            format!(
                r#"<p class="more"><a href="/console/tenants/{tenant}/jobs/{}{}">Every task of this job ({}) →</a></p>"#,
                job.id,
                query(&[("status", &filters.status)]),
                job.total
            )
        } else {
            String::new()
        };
        let affected = if users.is_empty() {
            String::new()
        } else {
            let listed = users.iter().map(|u| esc(u)).collect::<Vec<_>>().join(", ");
            let rest = job.total - mine.len() as i64;
            if filters.is_empty() && rest > 0 {
                format!(r#"<p class="affected">Affected: {listed} and the users of {rest} more tasks</p>"#)
            } else {
                format!(r#"<p class="affected">Affected: {listed}</p>"#)
            }
        };
        let table = if mine.is_empty() {
            r#"<p class="empty">No tasks yet: the resolver has not expanded this change. It appears here as soon as it does.</p>"#.to_string()
        } else {
            task_table(tenant, &mine, &integrations, true)
        };
        let summary = if job.summary.is_empty() { String::new() } else { format!("<h2>{}</h2>", esc(&job.summary)) };
        let _ = write!(
            list,
            r#"<section class="job" data-job="{id}">{summary}{trigger}{counts}{affected}{table}{more}</section>"#,
            id = job.id,
            trigger = trigger(job),
            counts = counts(tenant, job),
        );
    }
    if jobs.is_empty() {
        list = if filters.is_empty() && paging.before.is_none() {
            format!(
                r#"<div class="empty"><p><strong>No jobs yet.</strong> A job appears here each time your identity provider sends a change that can affect access
(a user deactivated or deleted, removed from a group, a group deleted) or a share changes.</p>
<p>Next: point your IdP's SCIM app at <code>/scim/v2</code> on this server with a workspace SCIM token, share an integration with a team
(<a href="/api/v1/openapi.json">admin API</a>), then deactivate a test user.{}</p></div>"#,
                if integrations.is_empty() { " You have no integration yet: add one first." } else { "" }
            )
        } else {
            format!(
                r#"<div class="empty"><p><strong>No jobs match these filters.</strong></p><p><a href="{}">Clear the filters</a> or widen the time range.</p></div>"#,
                attr(&action)
            )
        };
    }
    let pager = pager(&action, &filters, paging.before.is_some(), next.as_deref(), "Older jobs");
    let body = format!(
        r#"<p class="lead">Every change your identity provider sent, newest first, and what unseat did about it in each app.</p>
{form}
<div id="log" data-live-region>{list}{pager}</div>"#,
        form = filter_form(&action, &filters, &integrations, true),
    );
    Ok(page(StatusCode::OK, shell_for("Automation Log", tenant, &integrations, &session, &since).render(&body)))
}

fn pager(action: &str, filters: &Filters, paged: bool, next: Option<&str>, older: &str) -> String {
    let mut out = String::from(r#"<nav class="pager" aria-label="pages">"#);
    if paged {
        let _ = write!(out, r#"<a href="{}{}">← Newest</a> "#, attr(action), attr(&filters.query(&[])));
    }
    if let Some(next) = next {
        let _ = write!(
            out,
            r#"<a rel="next" href="{}{}">{older} →</a>"#,
            attr(action),
            attr(&filters.query(&[("before", next)]))
        );
    }
    out.push_str("</nav>");
    out
}

/// `GET /console/tenants/{tenant}/jobs/{job}`: one job, its counts at once, its tasks paged.
pub(crate) async fn job(
    session: Session,
    State(app): State<Arc<App>>,
    Path((tenant, job)): Path<(String, String)>,
    params: Params,
) -> Result<Response, Response> {
    let tenant = session.tenant(&app, &tenant, Need::Read).await?;
    let job_id = parse_id(&job, "job id").map_err(|e| refusal(&e))?;
    let params = params_of(params)?;
    let paging = page_of(&params, TASK_PAGE_SIZE)?;
    let filters = Filters::read(&params);
    let mut filter = filters.parse().map_err(|e| refusal(&e))?;
    filter.job = Some(job_id);
    let store = &app.state.store;
    let since = super::live::fingerprint(store, tenant).await;
    let Some(summary) = store.job(tenant, job_id).await.map_err(|e| refusal(&e.into()))? else {
        return Err(refusal(&ApiError::not_found("no such job in this tenant")));
    };
    let integrations = store.integrations(tenant).await.map_err(|e| refusal(&e.into()))?;
    let (counts_by_status, total) =
        store.job_counts(tenant, &[job_id]).await.map_err(|e| refusal(&e.into()))?.remove(&job_id).unwrap_or_default();
    let job = LogJob {
        id: summary.id,
        scope: summary.scope,
        trigger: summary.trigger,
        summary: summary.summary,
        created_at: summary.created_at,
        counts: counts_by_status,
        total,
    };
    let started = std::time::Instant::now();
    let mut tasks =
        store.filtered_tasks(tenant, &filter, paging.before, paging.limit + 1).await.map_err(|e| refusal(&e.into()))?;
    tracing::debug!(tasks = tasks.len(), elapsed_ms = started.elapsed().as_millis() as u64, "job page tasks read");
    let next = paging.finish(&mut tasks, TaskRow::cursor);
    let action = format!("/console/tenants/{tenant}/jobs/{job_id}");
    let list = if tasks.is_empty() {
        format!(
            r#"<div class="empty"><p><strong>No tasks match.</strong></p><p><a href="{}">Show every task of this job</a>.</p></div>"#,
            attr(&action)
        )
    } else {
        task_table(tenant, &tasks, &integrations, true)
    };
    let title = if job.summary.is_empty() { "Job".to_string() } else { job.summary.clone() };
    let body = format!(
        r#"<p><a href="/console/tenants/{tenant}/log">← Automation Log</a></p>
<div id="job" data-live-region>{trigger}{counts}</div>
{form}
<div id="tasks" data-live-region>{list}{pager}</div>"#,
        trigger = trigger(&job),
        counts = counts(tenant, &job),
        form = filter_form(&action, &filters, &integrations, true),
        pager = pager(&action, &filters, paging.before.is_some(), next.as_deref(), "Next tasks"),
    );
    Ok(page(StatusCode::OK, shell_for(&title, tenant, &integrations, &session, &since).render(&body)))
}

/// `GET /console/tenants/{tenant}/integrations/{integration}/activity`.
pub(crate) async fn activity(
    session: Session,
    State(app): State<Arc<App>>,
    Path((tenant, integration)): Path<(String, String)>,
    params: Params,
) -> Result<Response, Response> {
    let tenant = session.tenant(&app, &tenant, Need::Read).await?;
    let integration_id = parse_id(&integration, "integration id").map_err(|e| refusal(&e))?;
    let params = params_of(params)?;
    let paging = page_of(&params, TASK_PAGE_SIZE)?;
    let mut filters = Filters::read(&params);
    filters.integration = String::new();
    let mut filter = filters.parse().map_err(|e| refusal(&e))?;
    filter.integration = Some(integration_id);
    let store = &app.state.store;
    let since = super::live::fingerprint(store, tenant).await;
    let integrations = store.integrations(tenant).await.map_err(|e| refusal(&e.into()))?;
    let Some(integration) = integrations.iter().find(|i| i.id == integration_id) else {
        return Err(refusal(&ApiError::not_found("no such integration in this tenant")));
    };
    let health =
        store.integration_health(tenant, integration_id, HEALTH_WINDOW).await.map_err(|e| refusal(&e.into()))?;
    let mut tasks =
        store.filtered_tasks(tenant, &filter, paging.before, paging.limit + 1).await.map_err(|e| refusal(&e.into()))?;
    let next = paging.finish(&mut tasks, TaskRow::cursor);

    let paused = integration.paused_at.map_or_else(String::new, |since| {
        format!(
            r#"<p class="attention" role="status"><span class="status s-queued">paused</span> since {}: connectors call the app for none of its tasks, which wait until an admin resumes it.</p>"#,
            time(since)
        )
    });
    let attention = match &integration.needs_attention {
        Some(why) => format!(r#"<p class="attention" role="alert"><span class="status s-failed">needs attention</span> {}</p>"#, esc(why)),
        None => r#"<p><span class="status s-succeeded">healthy</span> The app accepts the integration's credentials and settings.</p>"#.to_string(),
    };
    let rate = if health.finished == 0 {
        "no task finished".to_string()
    } else {
        format!(
            "{:.1}% ({} of {} finished tasks)",
            health.failed as f64 * 100.0 / health.finished as f64,
            health.failed,
            health.finished
        )
    };
    let dead = if health.dead_lettered > 0 {
        format!(
            r#"<a href="?status={DEAD_LETTERED}">{} dead-lettered</a>: open each to see why, fix the cause, then re-drive it."#,
            health.dead_lettered
        )
    } else {
        "none".to_string()
    };
    let health_html = format!(
        r#"<section class="health" aria-label="health">{paused}{attention}
<dl>
<dt>Failure rate, last 24 h</dt><dd>{rate}</dd>
<dt>Retries, last 24 h</dt><dd>{retries} (waited {wait:.1} s in all)</dd>
<dt>Rate-limited attempts (429), last 24 h</dt><dd>{limited}</dd>
<dt>Waiting for an admin</dt><dd>{dead}</dd>
</dl></section>"#,
        retries = health.retries,
        wait = health.retry_wait_ms as f64 / 1000.0,
        limited = health.rate_limited,
    );
    let action = format!("/console/tenants/{tenant}/integrations/{integration_id}/activity");
    let list = if tasks.is_empty() {
        if filters.is_empty() && paging.before.is_none() {
            r#"<div class="empty"><p><strong>No activity yet.</strong> Tasks appear here when a change in your identity provider reaches someone
this integration is shared with. Share it with a team or a user, then remove a test user from that team.</p></div>"#
                .to_string()
        } else {
            format!(
                r#"<div class="empty"><p><strong>No tasks match these filters.</strong></p><p><a href="{}">Clear the filters</a>.</p></div>"#,
                attr(&action)
            )
        }
    } else {
        task_table(tenant, &tasks, &integrations, false)
    };
    let body = format!(
        r#"<p class="lead">What unseat did in <strong>{name}</strong> (<code>{kind}</code>), newest first.</p>
<div id="health" data-live-region>{health_html}</div>
{form}
<div id="activity" data-live-region>{list}{pager}</div>"#,
        name = esc(&integration.name),
        kind = esc(&integration.app_kind),
        form = filter_form(&action, &filters, &integrations, false),
        pager = pager(&action, &filters, paging.before.is_some(), next.as_deref(), "Older tasks"),
    );
    let title = format!("Activity · {}", integration.name);
    Ok(page(StatusCode::OK, shell_for(&title, tenant, &integrations, &session, &since).render(&body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_filters_read_utc_and_refuse_garbage() {
        assert_eq!(parse_time("2026-11-25T14:30", "from").unwrap().unwrap().to_rfc3339(), "2026-11-25T14:30:00+00:00");
        assert_eq!(
            parse_time("2026-11-25T15:30:00+01:00", "from").unwrap().unwrap().to_rfc3339(),
            "2026-11-25T14:30:00+00:00"
        );
        assert_eq!(parse_time("", "from").unwrap(), None);
        assert!(parse_time("yesterday", "from").is_err());
        assert!(parse_time("0001-01-01T00:00", "from").unwrap().is_some());
        assert!(parse_time("9999-12-31T23:59:59", "to").unwrap().is_some());
        for outside in ["-5000-01-01T00:00", "-4713-01-01T00:00", "0000-12-31T23:59", "+10000-01-01T00:00"] {
            assert!(parse_time(outside, "from").is_err(), "{outside}");
        }
    }

    #[test]
    fn unknown_status_is_refused() {
        let f = Filters { status: "exploded".into(), ..Filters::default() };
        assert!(f.parse().is_err());
        let f = Filters { status: "dead_lettered".into(), user: "a@example.com".into(), ..Filters::default() };
        let parsed = f.parse().unwrap();
        assert_eq!(parsed.user, Some(UserRef::Email("a@example.com".into())));
    }
}
