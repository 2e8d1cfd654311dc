//! The resolver: consumes directory changes from RabbitMQ, recomputes the effective access of
//! every named user from the *current* state (invariant 1: messages are hints), and, per
//! (integration, user), records the new desired state with a version, opens the Automation Log
//! entries, and queues one connector task per change through the outbox.
//!
//! One message is handled in one PostgreSQL transaction; the delivery is acked only after it
//! commits (invariant 2). The job id is the message id, so a redelivered message finds its job
//! and changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio_util::sync::CancellationToken;
use unseat_bus::messages::{ConnectorTask, DirectoryChanged, MESSAGE_VERSION};
use unseat_bus::{ConsumerSettings, Delivery, Topology};
use unseat_domain::{decide, effective_access, Grant, GrantSource, Outcome, RoleLadder, UserStatus};
use unseat_store::access::{self, NewJob, NewTask};
use unseat_store::{Store, StoreError};
use unseat_telemetry::{Metrics, OutcomeLabels};
use uuid::Uuid;

/// Settings of a resolver worker.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    pub prefetch: u16,
    pub grace: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self { prefetch: 8, grace: Duration::from_secs(30) }
    }
}

/// What handling one message did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// False when the message had been handled before.
    pub fresh: bool,
    pub decisions: Vec<(Uuid, Uuid, Outcome)>,
    pub tasks_queued: usize,
}

/// Consumes the resolver queue until `shutdown` fires.
pub async fn run(
    store: Store,
    amqp_url: String,
    topology: Topology,
    metrics: Arc<Metrics>,
    config: ResolverConfig,
    shutdown: CancellationToken,
) {
    let settings = ConsumerSettings {
        url: amqp_url,
        queue: topology.resolver_queue(),
        topology: topology.clone(),
        prefetch: config.prefetch,
        grace: config.grace,
        name: "resolver".into(),
    };
    let connector_exchange = Arc::new(topology.connector_exchange());
    unseat_bus::consume(settings, shutdown, move |delivery: Delivery| {
        let store = store.clone();
        let metrics = metrics.clone();
        let exchange = connector_exchange.clone();
        async move { handle_delivery(&store, &exchange, &metrics, delivery).await }
    })
    .await;
}

async fn handle_delivery(store: &Store, connector_exchange: &str, metrics: &Metrics, delivery: Delivery) {
    let message: DirectoryChanged = match serde_json::from_slice(&delivery.data) {
        Ok(m) => m,
        Err(error) => {
            tracing::error!(%error, "unreadable directory message; dead-lettering it");
            count(metrics, "rejected");
            let _ = delivery.acker.nack(BasicNackOptions { requeue: false, ..Default::default() }).await;
            return;
        }
    };
    if message.v != MESSAGE_VERSION {
        tracing::error!(v = message.v, message_id = %message.message_id, "unsupported message version; dead-lettering it");
        count(metrics, "rejected");
        let _ = delivery.acker.nack(BasicNackOptions { requeue: false, ..Default::default() }).await;
        return;
    }
    match resolve(store, connector_exchange, &message).await {
        Ok(resolved) => {
            for (_, _, outcome) in &resolved.decisions {
                metrics.resolver_decisions.get_or_create(&OutcomeLabels { outcome: outcome.as_str().into() }).inc();
            }
            count(metrics, if resolved.fresh { "resolved" } else { "duplicate" });
            tracing::debug!(
                message_id = %message.message_id,
                users = message.users.len(),
                decisions = resolved.decisions.len(),
                queued = resolved.tasks_queued,
                fresh = resolved.fresh,
                "directory change resolved"
            );
            if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
                tracing::warn!(%error, "ack failed after commit; the redelivery will be recognised as a duplicate");
            }
        }
        Err(error) => {
            // The transaction rolled back; requeue so it is tried again (the queue's delivery
            // limit dead-letters a message that keeps failing).
            tracing::warn!(error = %error, message_id = %message.message_id, "resolving failed; requeueing");
            count(metrics, "retried");
            let _ = delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
        }
    }
}

fn count(metrics: &Metrics, outcome: &str) {
    metrics.resolver_messages.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
}

/// Handles one directory change in one transaction: see the crate docs.
pub async fn resolve(
    store: &Store,
    connector_exchange: &str,
    message: &DirectoryChanged,
) -> Result<Resolved, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let tenant = message.tenant_id;
    let job = NewJob {
        tenant_id: tenant,
        id: message.message_id,
        scope: &message.scope,
        method: &message.trigger.method,
        path: &message.trigger.path,
        user_agent: &message.trigger.user_agent,
        summary: &message.trigger.summary,
        received_at: message.trigger.received_at,
    };
    if !access::insert_job(&tx, &job).await? {
        tx.commit().await?;
        return Ok(Resolved { fresh: false, ..Default::default() });
    }
    let mut resolved = Resolved { fresh: true, ..Default::default() };
    let users: BTreeSet<Uuid> = message.users.iter().copied().collect();
    for user_id in users {
        access::lock_user(&tx, tenant, user_id).await?;
        resolve_user(&tx, connector_exchange, message, user_id, &mut resolved).await?;
    }
    if resolved.decisions.is_empty() {
        // Nothing to show: the change did not touch anyone's access.
        access::delete_job(&tx, tenant, message.message_id).await?;
    }
    tx.commit().await?;
    Ok(resolved)
}

async fn resolve_user(
    tx: &unseat_store::Transaction<'_>,
    connector_exchange: &str,
    message: &DirectoryChanged,
    user_id: Uuid,
    resolved: &mut Resolved,
) -> Result<(), StoreError> {
    let tenant = message.tenant_id;
    let facts = access::user_facts(tx, tenant, user_id).await?;
    let status = match &facts {
        None => UserStatus::Deleted,
        Some(f) if !f.active => UserStatus::Inactive,
        Some(_) => UserStatus::Active,
    };
    let grants = access::reaching_grants(tx, tenant, user_id).await?;
    let rows: BTreeMap<Uuid, access::AccessRow> =
        access::access_rows(tx, tenant, user_id).await?.into_iter().map(|r| (r.integration_id, r)).collect();
    let ids: BTreeSet<Uuid> = grants.iter().map(|g| g.integration_id).chain(rows.keys().copied()).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ids.into_iter().collect();
    for integration in access::integrations(tx, tenant, &ids).await? {
        let ladder = match RoleLadder::parse(integration.roles.clone()) {
            Ok(l) => l,
            Err(error) => {
                tracing::error!(integration = %integration.id, %error, "integration has an invalid role ladder; skipping it");
                continue;
            }
        };
        let its_grants: Vec<Grant> = grants
            .iter()
            .filter(|g| g.integration_id == integration.id)
            .map(|g| Grant {
                source: match &g.team_name {
                    Some(name) => GrantSource::Team { name: name.clone() },
                    None => GrantSource::Individual,
                },
                role: g.role.clone(),
            })
            .collect();
        let now = effective_access(&ladder, status == UserStatus::Active, &its_grants);
        let row = rows.get(&integration.id);
        let held = row.and_then(|r| r.desired_role.as_deref());
        let Some(decision) = decide(held, now.as_ref(), status) else { continue };
        if decision.outcome == Outcome::Keep && !message.trigger.may_revoke {
            continue;
        }
        let email = match (&facts, row) {
            (Some(f), _) => f.email.clone(),
            (None, Some(r)) => r.email.clone(),
            (None, None) => continue,
        };
        let task_id = Uuid::new_v5(&message.message_id, format!("{}/{}", integration.id, user_id).as_bytes());
        let (version, status_text) = if decision.outcome == Outcome::Keep {
            (row.map(|r| r.desired_version).unwrap_or(0), "kept")
        } else {
            let v =
                access::set_desired(tx, tenant, integration.id, user_id, &email, decision.to_role.as_deref()).await?;
            (v, "queued")
        };
        let task = NewTask {
            tenant_id: tenant,
            id: task_id,
            job_id: message.message_id,
            integration_id: integration.id,
            user_id,
            user_email: &email,
            outcome: decision.outcome.as_str(),
            from_role: decision.from_role.as_deref(),
            to_role: decision.to_role.as_deref(),
            reason: &decision.reason,
            desired_version: version,
            status: status_text,
        };
        access::insert_task(tx, &task).await?;
        if decision.outcome != Outcome::Keep {
            let connector_task = ConnectorTask {
                v: MESSAGE_VERSION,
                message_id: Uuid::new_v4(),
                tenant_id: tenant,
                job_id: message.message_id,
                task_id,
                integration_id: integration.id,
                user_id,
                app_kind: integration.app_kind.clone(),
                desired_version: version,
            };
            let payload = serde_json::to_value(&connector_task).map_err(|e| StoreError::Invalid(e.to_string()))?;
            unseat_store::outbox::enqueue(
                tx,
                tenant,
                connector_task.message_id,
                connector_exchange,
                &integration.app_kind,
                &payload,
            )
            .await?;
            resolved.tasks_queued += 1;
        }
        tracing::info!(
            tenant = %tenant,
            integration = %integration.id,
            outcome = decision.outcome.as_str(),
            reason = %decision.reason,
            "access decided"
        );
        resolved.decisions.push((user_id, integration.id, decision.outcome));
    }
    Ok(())
}
