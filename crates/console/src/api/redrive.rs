//! Re-driving a failed or dead-lettered connector task: the task goes back to `queued` and a
//! connector task for the *current* desired version of its (integration, user) goes to the
//! outbox in the same transaction, so the relay publishes it like any other. A desired state
//! that changed meanwhile simply wins: the connector converges to whatever is current.
//!
//! `POST /api/v1/tenants/{tenant}/tasks/{task}/redrive` answers 202 with the task id, its new
//! status and the desired version it now aims at; 409 when the task is not failed (or its
//! integration is gone), or when a later task already applied the current desired state (the
//! task is then marked superseded: re-driven, it would log an action that never happened);
//! 404 when there is no such task.

use super::{authorize, parse_body, parse_id, Body, Path};
use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use unseat_bus::messages::{ConnectorTask, MESSAGE_VERSION};
use unseat_bus::Topology;
use unseat_store::apply::{Redrive, RedriveMessage, RedriveTarget};

/// The connector exchange of the deployment whose directory exchange the console announces
/// grant changes on (both share the topology prefix).
fn connector_exchange(directory_exchange: &str) -> String {
    let prefix = directory_exchange.strip_suffix(".directory").unwrap_or(directory_exchange);
    Topology::new(prefix, Vec::new()).connector_exchange()
}

/// The outbox row of a re-driven task (the admin API and `unseat admin` both send this).
pub fn message(target: &RedriveTarget, exchange: &str) -> RedriveMessage {
    let task = ConnectorTask {
        v: MESSAGE_VERSION,
        message_id: unseat_bus::messages::new_message_id(),
        tenant_id: target.tenant_id,
        job_id: target.job_id,
        task_id: target.task_id,
        integration_id: target.integration_id,
        user_id: target.user_id,
        app_kind: target.app_kind.clone(),
        desired_version: target.desired_version,
    };
    RedriveMessage {
        message_id: task.message_id,
        exchange: exchange.to_string(),
        routing_key: target.app_kind.clone(),
        payload: serde_json::to_value(&task).unwrap_or_else(|_| json!({})),
    }
}

/// A re-drive takes no fields: no body, or `{}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

pub async fn redrive(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path((tenant, task)): Path<(String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant_id = authorize(&app, &caller, &tenant, Need::Write).await?;
    let task_id = parse_id(&task, "task id")?;
    if body.as_ref().map_or(true, |b| !b.trim_ascii().is_empty()) {
        parse_body::<NoFields>(body)?;
    }
    let actor = format!("{} via the admin API", caller.actor());
    let exchange = connector_exchange(&app.state.directory_exchange);
    let outcome = app.state.store.redrive_task(tenant_id, task_id, &actor, |t| message(t, &exchange)).await?;
    match outcome {
        Redrive::Requeued { desired_version } => {
            tracing::info!(tenant = %tenant_id, task = %task_id, desired_version, "task re-driven");
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "task_id": task_id, "status": "queued", "desired_version": desired_version })),
            ))
        }
        Redrive::NotFailed { status } => Err(ApiError::new(
            StatusCode::CONFLICT,
            match status.as_str() {
                // Its copy may still sit in the dead-letter queue (`dead_lettered`), but there is
                // nothing left to do: a later task for the user, its integration's deletion, or
                // (a removal) another user of the same app account who still has access.
                "superseded" => "only failed tasks can be re-driven; this task is superseded: a later task for \
                                 the user, or the deletion of its integration, left it nothing to do, or the app \
                                 account it would remove is kept for another user with its address (see its events)"
                    .to_string(),
                _ => format!("only failed tasks can be re-driven; this task is {status}"),
            },
        )),
        Redrive::NoDesiredState => Err(ApiError::new(
            StatusCode::CONFLICT,
            "the task's integration or desired state no longer exists; nothing to re-drive",
        )),
        Redrive::Outdated { applied_version } => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "a later task applied this user's access (version {applied_version}); this task is outdated \
                 and is now marked superseded"
            ),
        )),
        Redrive::NoSuchTask => Err(ApiError::not_found("no such task")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connector_exchange_shares_the_directory_prefix() {
        assert_eq!(connector_exchange("unseat.directory"), "unseat.connector");
        assert_eq!(connector_exchange("t123.directory"), "t123.connector");
    }
}
