//! A task's detail: its decision, every attempt with the app's answer, every progress event in
//! order, and a re-drive button for failed or dead-lettered tasks, shown to the roles that may
//! re-drive (a viewer sees why there is none). The button posts to this page, which checks the
//! form and then asks the admin API's re-drive endpoint on the signed-in admin's behalf (with the
//! session's caller), so the page can do exactly what the API allows and no more.

use super::html::{attr, duration, esc, page, status, time, time_opt};
use super::{check_form, refusal, CsrfForm, Path, Session};
use crate::api::parse_id;
use crate::auth::Need;
use crate::error::ApiError;
use crate::App;
use axum::extract::{Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;
use unseat_store::logs::TaskEvent;

/// Events shown with one task; a task has a handful per attempt and attempts are bounded.
const MAX_EVENTS: i64 = 1000;

/// How the app's answer is classed, in the connector runtime's terms (its `ErrorClass`):
/// 401/403 need an admin, 408/429/5xx are retried, other 4xx are permanent; no status means the
/// app was unreachable, timed out or answered something unreadable.
fn error_class(status_code: Option<i32>) -> &'static str {
    match status_code {
        Some(429) => "rate limited (retried)",
        Some(408) => "timeout (retried)",
        Some(401 | 403) => "refused: credentials or permissions (needs an admin)",
        Some(s) if s >= 500 => "app error (retried)",
        Some(_) => "request refused (permanent)",
        None => "network, timeout or unreadable answer",
    }
}

/// The wait the runtime announced in a `retry_scheduled` event ("retrying in 50 ms", maybe
/// followed by where the task waits and why).
fn announced_wait(detail: &str) -> Option<String> {
    let (ms, _) = detail.strip_prefix("retrying in ")?.split_once(" ms")?;
    let ms = ms.parse::<u64>().ok()?;
    Some(if ms < 1000 { format!("{ms} ms") } else { format!("{:.1} s", ms as f64 / 1000.0) })
}

/// One attempt, gathered from the events that carry its number.
#[derive(Default)]
struct Attempt<'a> {
    started: Option<&'a TaskEvent>,
    outcome: Option<&'a TaskEvent>,
    wait: Option<String>,
}

fn attempts(events: &[TaskEvent]) -> BTreeMap<i32, Attempt<'_>> {
    let mut out: BTreeMap<i32, Attempt<'_>> = BTreeMap::new();
    for e in events {
        let Some(n) = e.attempt else { continue };
        let a = out.entry(n).or_default();
        match e.kind.as_str() {
            "attempt_started" => a.started = Some(e),
            "retry_scheduled" => a.wait = announced_wait(&e.detail),
            _ => a.outcome = Some(e),
        }
    }
    out
}

fn attempts_table(events: &[TaskEvent]) -> String {
    let attempts = attempts(events);
    if attempts.is_empty() {
        return r#"<p class="empty">No attempt yet: nothing had to be called in the app (kept, superseded or already applied), or the task is still queued.</p>"#.to_string();
    }
    let mut rows = String::new();
    for (n, a) in &attempts {
        let (result, code, class) = match a.outcome {
            Some(e) if e.kind == "attempt_failed" => (
                format!(r#"<span class="status s-failed">failed</span> {}"#, esc(&e.detail)),
                e.status_code,
                error_class(e.status_code),
            ),
            Some(e) => (
                format!(
                    r#"<span class="status s-succeeded">{}</span> {}"#,
                    esc(&e.kind.replace('_', " ")),
                    esc(&e.detail)
                ),
                e.status_code,
                "—",
            ),
            None => (r#"<span class="status s-running">in progress</span>"#.to_string(), None, "—"),
        };
        let code = code.map_or_else(|| "—".to_string(), |c| c.to_string());
        let took = match (a.started, a.outcome) {
            (Some(s), Some(o)) => duration(s.at, o.at),
            _ => "—".to_string(),
        };
        let _ = write!(
            rows,
            r#"<tr><td class="num">{n}</td><td>{started}</td><td>{result}</td><td class="num">{code}</td><td>{class}</td><td>{took}</td><td>{wait}</td></tr>"#,
            started = time_opt(a.started.map(|s| s.at)),
            wait = a.wait.as_deref().unwrap_or("—"),
        );
    }
    format!(
        r#"<table class="attempts"><thead><tr><th scope="col">Attempt</th><th scope="col">Started</th><th scope="col">Result</th><th scope="col">Status code</th><th scope="col">Error class</th><th scope="col">Took</th><th scope="col">Wait before next</th></tr></thead><tbody>{rows}</tbody></table>"#
    )
}

fn events_list(events: &[TaskEvent]) -> String {
    if events.is_empty() {
        return r#"<p class="empty">No progress event yet. The task is queued; this page updates by itself.</p>"#
            .to_string();
    }
    let mut rows = String::new();
    for e in events {
        let _ = write!(
            rows,
            r#"<tr data-kind="{kind}"><td>{at}</td><td><code>{kind_text}</code></td><td class="num">{attempt}</td><td class="num">{code}</td><td>{detail}</td></tr>"#,
            kind = attr(&e.kind),
            at = time(e.at),
            kind_text = esc(&e.kind),
            attempt = e.attempt.map_or_else(String::new, |a| a.to_string()),
            code = e.status_code.map_or_else(String::new, |c| c.to_string()),
            detail = esc(&e.detail),
        );
    }
    format!(
        r#"<table class="events"><thead><tr><th scope="col">When</th><th scope="col">Event</th><th scope="col">Attempt</th><th scope="col">Status code</th><th scope="col">Detail</th></tr></thead><tbody>{rows}</tbody></table>"#
    )
}

/// `GET /console/tenants/{tenant}/tasks/{task}`.
pub(crate) async fn detail(
    session: Session,
    State(app): State<Arc<App>>,
    Path((tenant, task)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Response> {
    let tenant = session.tenant(&app, &tenant, Need::Read).await?;
    let task_id = parse_id(&task, "task id").map_err(|e| refusal(&e))?;
    let store = &app.state.store;
    let since = super::live::fingerprint(store, tenant).await;
    let Some(t) = store.task(tenant, task_id).await.map_err(|e| refusal(&e.into()))? else {
        return Err(refusal(&ApiError::not_found("no such task in this tenant")));
    };
    let events = store.task_events(tenant, task_id, MAX_EVENTS).await.map_err(|e| refusal(&e.into()))?;
    let integrations = store.integrations(tenant).await.map_err(|e| refusal(&e.into()))?;
    let integration = integrations.iter().find(|i| i.id == t.integration_id).map(|i| i.name.clone());
    // A deleted integration's tasks stay in the log, with no Activity page and no re-drive.
    let deleted = integration.is_none();
    let (integration_link, integration) = match &integration {
        Some(name) => (
            format!(
                r#"<a href="/console/tenants/{tenant}/integrations/{}/activity">{} Activity</a>"#,
                t.integration_id,
                esc(name)
            ),
            esc(name),
        ),
        None => (
            "its integration was deleted".to_string(),
            format!("a deleted integration <code>{}</code>", t.integration_id),
        ),
    };

    // What a re-drive posted from here came to, as a code (never text from the link, which
    // anyone could write into a link to this page).
    let refused = |why: &str| format!(r#"<p class="problem" role="alert">Re-drive refused: {}</p>"#, esc(why));
    let notice = match params.get("redrive").map(String::as_str) {
        Some("queued") => r#"<p class="notice" role="status">Re-drive requested: the task is queued again and this page follows it.</p>"#.to_string(),
        Some("conflict") if t.status == "superseded" => refused(
            "a later task applied this user's access, so this one had nothing left to do: it is now marked superseded.",
        ),
        Some("conflict") if t.status == "failed" || t.dead_lettered => {
            refused("the task's integration or desired state no longer exists; nothing to re-drive.")
        }
        Some("conflict") => refused(&format!(
            "only failed tasks can be re-driven; this task is {}.",
            t.status
        )),
        Some(_) => refused("the re-drive could not be requested; try again."),
        None => String::new(),
    };
    // The form only for those the re-drive would not refuse (a viewer reads, never re-drives).
    let may_redrive = session.caller.require(tenant, Need::Write);
    let redrive = if !(t.status == "failed" || t.dead_lettered) {
        String::new()
    } else if deleted {
        r#"<p class="hint redrive-refused">Its integration was deleted: there is nothing to re-drive.</p>"#.to_string()
    } else if let Err(refused) = may_redrive {
        format!(
            r#"<p class="hint redrive-refused">Owners, super admins and admins can re-drive this task; {}.</p>"#,
            esc(&refused.message)
        )
    } else {
        format!(
            r#"<form method="post" action="/console/tenants/{tenant}/tasks/{task_id}/redrive" class="redrive">
<input type="hidden" name="csrf" value="{csrf}">
<button type="submit">Re-drive this task</button>
<span class="hint">Runs the task again against the app with the current desired state. Fix the cause first (see the last error).</span>
</form>"#,
            csrf = attr(&session.csrf)
        )
    };
    let error = t
        .last_error
        .as_deref()
        .map_or_else(|| "—".to_string(), |e| format!(r#"<span class="error">{}</span>"#, esc(e)));
    let took = t.finished_at.map_or_else(|| "not finished".to_string(), |f| duration(t.created_at, f));
    let body = format!(
        r#"<p><a href="/console/tenants/{tenant}/jobs/{job}">← its job</a> · {integration_link}</p>
{notice}
<div id="task" data-live-region>
<dl class="task-summary">
<dt>User</dt><dd>{email} <code>{user}</code></dd>
<dt>Integration</dt><dd>{integration}</dd>
<dt>Decision</dt><dd>{outcome}</dd>
<dt>Reason</dt><dd>{reason}</dd>
<dt>Status</dt><dd id="task-status">{badge}</dd>
<dt>Attempts</dt><dd>{attempts}</dd>
<dt>Last error</dt><dd>{error}</dd>
<dt>Queued</dt><dd>{created}</dd>
<dt>Started</dt><dd>{started}</dd>
<dt>Finished</dt><dd>{finished} ({took})</dd>
</dl>
{redrive}
<h2>Attempts</h2>
{attempts_table}
<h2>Every event, in order</h2>
{events}
</div>"#,
        job = t.job_id,
        email = esc(&t.user_email),
        user = t.user_id,
        outcome = esc(&t.outcome),
        reason = esc(&t.reason),
        badge = status(&t.status, t.dead_lettered),
        attempts = t.attempts,
        created = time(t.created_at),
        started = time_opt(t.started_at),
        finished = time_opt(t.finished_at),
        attempts_table = attempts_table(&events),
        events = events_list(&events),
    );
    let title = format!("Task · {}", t.user_email);
    Ok(page(StatusCode::OK, super::log::shell_for(&title, tenant, &integrations, &session, &since).render(&body)))
}

/// `POST /console/tenants/{tenant}/tasks/{task}/redrive`: checks the form, then runs the
/// handler of `POST /api/v1/tenants/{tenant}/tasks/{task}/redrive` as the session's caller and
/// sends the viewer back to the task with its answer.
pub(crate) async fn redrive(
    session: Session,
    State(app): State<Arc<App>>,
    Path((tenant, task)): Path<(String, String)>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, Response> {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    check_form(&session, &headers, &csrf)?;
    let tenant = session.tenant(&app, &tenant, Need::Write).await?;
    let task_id = parse_id(&task, "task id").map_err(|e| refusal(&e))?;
    // The admin API's own handler, with the session's caller: the same checks, the same effect.
    let answer = crate::api::redrive::redrive(
        session.caller.clone(),
        State(app.clone()),
        crate::api::Path((tenant.to_string(), task_id.to_string())),
        Ok(Default::default()),
    )
    .await;
    let back = format!("/console/tenants/{tenant}/tasks/{task_id}");
    let outcome = match answer {
        Ok(_) => {
            tracing::info!(task = %task_id, "re-drive requested from the console");
            "queued"
        }
        Err(e) if e.status == StatusCode::CONFLICT => "conflict",
        // Not found (the page says so itself), refused (the form checks came first) or failed.
        Err(_) => "refused",
    };
    let location = format!("{back}{}", super::html::query(&[("redrive", outcome)]));
    Ok((StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn event(kind: &str, attempt: Option<i32>, code: Option<i32>, detail: &str) -> TaskEvent {
        TaskEvent { id: 0, at: Utc::now(), kind: kind.into(), attempt, status_code: code, detail: detail.into() }
    }

    #[test]
    fn attempts_gather_their_events() {
        let events = vec![
            event("attempt_started", Some(1), None, "removing"),
            event("attempt_failed", Some(1), Some(429), "rate limited"),
            event("retry_scheduled", Some(1), None, "retrying in 1500 ms"),
            event("attempt_started", Some(2), None, "removing"),
            event("succeeded", Some(2), None, "removed from Hub"),
        ];
        let table = attempts_table(&events);
        assert!(table.contains("rate limited (retried)"), "{table}");
        assert!(table.contains("1.5 s"), "{table}");
        assert!(table.contains("removed from Hub"), "{table}");
        assert_eq!(attempts(&events).len(), 2);
        assert_eq!(announced_wait("retrying soon"), None);
        // A parked or throttled retry says more after the wait.
        let parked = "retrying in 61000 ms (parked in the delay queue); the app throttled this attempt";
        assert_eq!(announced_wait(parked).as_deref(), Some("61.0 s"));
    }
}
