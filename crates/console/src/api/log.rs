//! The Automation Log (jobs and their tasks) and an integration's Activity, newest first, paged
//! with the `next` cursor of the previous page.

use super::{authorize, optional_id, parse_id, parse_params, Page, Params, Path};
use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::App;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use unseat_store::logs::{TaskFilter, TASK_STATUSES};
use unseat_store::pages::DEAD_LETTERED;

/// Events shown with one task; a task has a handful per attempt and attempts are bounded.
const MAX_EVENTS: i64 = 1000;

pub async fn jobs(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    let page = Page::from_params(&parse_params(params, &["limit", "before"])?)?;
    let mut jobs = app.state.store.jobs(tenant_id, page.before, page.limit + 1).await?;
    let next = page.finish(&mut jobs, |j| j.cursor());
    Ok(Json(json!({ "jobs": jobs, "next": next })))
}

/// A job with a page of its tasks.
pub async fn job(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, job)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    let job_id = parse_id(&job, "job id")?;
    let page = Page::from_params(&parse_params(params, &["limit", "before"])?)?;
    let job = app.state.store.job(tenant_id, job_id).await?.ok_or_else(|| ApiError::not_found("no such job"))?;
    let filter = TaskFilter { job: Some(job_id), ..TaskFilter::default() };
    let mut tasks = app.state.store.tasks(tenant_id, &filter, page.before, page.limit + 1).await?;
    let next = page.finish(&mut tasks, |t| t.cursor());
    Ok(Json(json!({ "job": job, "tasks": tasks, "next": next })))
}

pub async fn tasks(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    let params = parse_params(params, &["limit", "before", "status", "job", "integration", "user"])?;
    let page = Page::from_params(&params)?;
    let status = match params.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) if TASK_STATUSES.contains(&s.as_str()) || s == DEAD_LETTERED => Some(s.clone()),
        Some(s) => {
            return Err(ApiError::bad_request(format!(
                "status {s:?} is not one of {}, {DEAD_LETTERED}",
                TASK_STATUSES.join(", ")
            )))
        }
    };
    let filter = TaskFilter {
        job: optional_id(&params, "job")?,
        integration: optional_id(&params, "integration")?,
        user: optional_id(&params, "user")?,
        status,
    };
    let mut tasks = app.state.store.tasks(tenant_id, &filter, page.before, page.limit + 1).await?;
    let next = page.finish(&mut tasks, |t| t.cursor());
    Ok(Json(json!({ "tasks": tasks, "next": next })))
}

/// A task with its progress events in order.
pub async fn task(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, task)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    let task_id = parse_id(&task, "task id")?;
    let task = app.state.store.task(tenant_id, task_id).await?.ok_or_else(|| ApiError::not_found("no such task"))?;
    let events = app.state.store.task_events(tenant_id, task_id, MAX_EVENTS).await?;
    Ok(Json(json!({ "task": task, "events": events })))
}

/// An integration's Activity: its tasks, newest first, and whether it needs an admin's attention.
pub async fn activity(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, integration)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Read).await?;
    let integration_id = parse_id(&integration, "integration id")?;
    let page = Page::from_params(&parse_params(params, &["limit", "before"])?)?;
    let integration = app
        .state
        .store
        .integration(tenant_id, integration_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such integration"))?;
    let filter = TaskFilter { integration: Some(integration_id), ..TaskFilter::default() };
    let mut tasks = app.state.store.tasks(tenant_id, &filter, page.before, page.limit + 1).await?;
    let next = page.finish(&mut tasks, |t| t.cursor());
    Ok(Json(json!({
        "integration_id": integration.id,
        "needs_attention": integration.needs_attention,
        "tasks": tasks,
        "next": next,
    })))
}
