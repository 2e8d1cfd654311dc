//! The connector runtime every adapter shares: one delivery → one task → attempts with
//! backoff → a final status in the log store → ack, or nack to the dead-letter queue.
//!
//! Each attempt runs in its own transaction that holds the access_state row lock of the
//! (integration, user) while the app is called, so one action at a time reaches the app for
//! that pair (invariant 4). No lock or transaction is held while waiting between attempts.
//! A message is acked only after the outcome committed (invariant 2); when the database is
//! unreachable the message is requeued and the queue's delivery limit bounds the loop.
//!
//! Waits: a retry wait (full-jitter backoff, at least what the app asked for) up to
//! `park_after` is slept in place; a longer one parks the message in a delay queue (acked only
//! once the broker confirmed the parked copy), and so does a task whose integration's rate
//! limit has no slot within `park_after`. The attempt budget counts across deliveries (from
//! the last re-drive), and a task older than `max_task_age` gives up too: both end failed,
//! dead-lettered, logged with the last error and counted. Picking up a re-driven task asks
//! for a sweep of the dead-letter queue ([`crate::dead_letters`]), so that the task's stale
//! copy does not stay there.

use crate::adapter::{converge, same_email, withdraw_invitations, AppAdapter};
use crate::breaker::{Breakers, HeldBack};
use crate::dead_letters::Sweeper;
use crate::error::ErrorClass;
use crate::limit::Admission;
use crate::retry::{next_wait, throttle_wait};
use crate::Assets;
use crate::ConnectorConfig;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use unseat_bus::messages::{ConnectorTask, MESSAGE_VERSION};
use unseat_bus::{ConsumerSettings, Delivery, Publisher, Topology};
use unseat_store::apply::{self, Applied, Integration, NewEvent, TaskUpdate};
use unseat_store::{Store, StoreError};
use unseat_telemetry::{AppLabels, AppResultLabels, Metrics};

/// Pause before requeueing a message whose work could not reach the database, so an outage
/// does not spin through the delivery limit in milliseconds.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

/// Consumes the adapter's queue (`topology.connector_queue(adapter.app_kind())`) until
/// `shutdown` fires. [`crate::run`] picks the adapter from the configuration; tests and future
/// app kinds call this directly.
pub async fn run_with<A: AppAdapter>(
    store: Store,
    amqp_url: String,
    topology: Topology,
    metrics: Arc<Metrics>,
    config: ConnectorConfig,
    adapter: A,
    shutdown: CancellationToken,
) {
    let app = adapter.app_kind().to_string();
    export_from_zero(&metrics, &app);
    let queue = topology.connector_queue(&app);
    let dead_letter_queue = Topology::dead_letter_queue(&queue);
    let settings = ConsumerSettings {
        url: amqp_url.clone(),
        topology: topology.clone(),
        queue,
        prefetch: config.prefetch.max(1),
        grace: config.grace,
        name: format!("connector-{app}"),
    };
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let sweeps = Arc::new(Notify::new());
    let sweeper = Sweeper {
        store: store.clone(),
        amqp_url: amqp_url.clone(),
        queue: dead_letter_queue.clone(),
        app: app.clone(),
        wanted: Arc::clone(&sweeps),
        every: config.dead_letter_sweep,
    };
    let sweeping = tokio::spawn(sweeper.run(shutdown.clone()));
    let worker = Arc::new(Worker {
        store,
        adapter,
        metrics,
        breakers: Breakers::new(config.hold_back_after),
        config,
        app,
        dead_letter_queue,
        shutdown: shutdown.clone(),
        topology,
        amqp_url,
        delay: Mutex::new(None),
        slots,
        sweeps,
    });
    let resending = {
        let (worker, shutdown) = (Arc::clone(&worker), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(worker.config.lost_park_check) => worker.resend_lost().await,
                }
            }
        })
    };
    unseat_bus::consume(settings, shutdown, move |delivery| {
        let worker = Arc::clone(&worker);
        async move { worker.handle(delivery).await }
    })
    .await;
    let _ = sweeping.await;
    let _ = resending.await;
}

/// The event of a task ended because its integration was deleted.
const INTEGRATION_GONE: &str = "superseded: the integration no longer exists";

/// Every final status a task of the pool can end with, as counted in `connector_tasks`.
const TASK_RESULTS: [&str; 4] = ["succeeded", "failed", "superseded", "duplicate"];
/// Every result an attempt (or a wait before one) is counted under in `connector_attempts`.
const ATTEMPT_RESULTS: [&str; 9] = [
    "paused",
    "held_back",
    "succeeded",
    "transient_error",
    "throttled",
    "permanent_error",
    "needs_attention",
    "budget_exhausted",
    "rate_limited",
];

/// Creates the pool's counters at zero: a series that first appears at 1 (or at 111) has no
/// earlier sample, so `increase()` and `rate()` see no change and an alert on the first
/// failures after a start would never fire.
fn export_from_zero(metrics: &Metrics, app: &str) {
    for result in TASK_RESULTS {
        let _ = metrics
            .connector_tasks
            .get_or_create(&AppResultLabels { app: app.to_string(), result: result.to_string() });
    }
    for result in ATTEMPT_RESULTS {
        let _ = metrics
            .connector_attempts
            .get_or_create(&AppResultLabels { app: app.to_string(), result: result.to_string() });
    }
    let _ = metrics.connector_retry_wait.get_or_create(&AppLabels { app: app.to_string() });
    let _ = metrics.connector_integrations_held_back.get_or_create(&AppLabels { app: app.to_string() });
}

/// What to tell the broker about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack,
    /// nack without requeue: the broker moves the message to the dead-letter queue.
    DeadLetter,
    /// nack with requeue: another delivery will try again.
    Requeue,
}

/// Where one attempt left the task.
enum Step {
    Finished {
        result: &'static str,
        settle: Settle,
    },
    Retry {
        wait: Duration,
    },
    /// The integration is paused: no app call until an admin resumes it.
    Paused,
    /// The integration's app failed every recent attempt and another task is trying it: this
    /// one waits (parked) and looks again later.
    HeldBack,
}

struct Worker<A> {
    store: Store,
    adapter: A,
    metrics: Arc<Metrics>,
    config: ConnectorConfig,
    app: String,
    dead_letter_queue: String,
    shutdown: CancellationToken,
    topology: Topology,
    amqp_url: String,
    /// The connection and publisher that park tasks in delay queues, made on first use.
    delay: Mutex<Option<(lapin::Connection, Publisher)>>,
    /// Tasks talking to the app at once (the pool's concurrency); prefetch bounds how many
    /// deliveries wait for a slot.
    slots: Arc<Semaphore>,
    /// Asks the pool's dead-letter sweeper to remove copies of re-driven tasks.
    sweeps: Arc<Notify>,
    /// Integrations whose app failed every recent attempt: one task at a time tries them.
    breakers: Arc<Breakers>,
}

/// Reads a delivery as a connector task of this build's message version.
pub(crate) fn parse_task(data: &[u8]) -> Result<ConnectorTask, String> {
    let task: ConnectorTask = serde_json::from_slice(data).map_err(|e| format!("not a connector task: {e}"))?;
    if task.v != MESSAGE_VERSION {
        return Err(format!("message version {} is not {MESSAGE_VERSION}", task.v));
    }
    Ok(task)
}

impl<A: AppAdapter> Worker<A> {
    async fn handle(&self, delivery: Delivery) {
        let settle = match parse_task(&delivery.data) {
            Err(why) => {
                tracing::warn!(app = %self.app, reason = %why, "unreadable connector message; dead-lettering it");
                Settle::DeadLetter
            }
            Ok(task) => {
                let span = tracing::info_span!(
                    "connector_task",
                    app = %self.app,
                    tenant_id = %task.tenant_id,
                    task_id = %task.task_id,
                    integration_id = %task.integration_id,
                    desired_version = task.desired_version,
                );
                // Back from a delay queue (the broker dead-lettered it there when its wait ran
                // out): the task already took its turn among the parked ones.
                let returning = unseat_bus::dead_lettered_at(&delivery.properties).is_some();
                self.process(&task, returning).instrument(span).await
            }
        };
        if settle == Settle::Requeue {
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                _ = tokio::time::sleep(REQUEUE_PAUSE) => {}
            }
        }
        let outcome = match settle {
            Settle::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
            Settle::DeadLetter => delivery.acker.nack(BasicNackOptions { requeue: false, ..Default::default() }).await,
            Settle::Requeue => delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await,
        };
        if let Err(error) = outcome {
            tracing::warn!(app = %self.app, error = %error, ?settle, "could not settle the delivery; the broker will redeliver it");
        }
    }

    async fn process(&self, task: &ConnectorTask, mut returning: bool) -> Settle {
        let started = Instant::now();
        let finished = |result: &'static str, settle: Settle| {
            self.metrics
                .connector_tasks
                .get_or_create(&AppResultLabels { app: self.app.clone(), result: result.to_string() })
                .inc();
            self.metrics
                .connector_task_duration
                .get_or_create(&AppLabels { app: self.app.clone() })
                .observe(started.elapsed().as_secs_f64());
            settle
        };

        let integration = match self.store.integration_for_apply(task.tenant_id, task.integration_id).await {
            Ok(Some(i)) => i,
            Ok(None) => {
                return match self.integration_gone(task).await {
                    Ok(()) => finished("superseded", Settle::Ack),
                    Err(error) => self.database_down(&error),
                };
            }
            Err(error) => return self.database_down(&error),
        };
        if integration.app_kind != self.app || task.app_kind != self.app {
            let reason = format!(
                "task for app kind {:?} (integration kind {:?}) reached the {} connector",
                task.app_kind, integration.app_kind, self.app
            );
            return match self.fail_now(task, &reason).await {
                Ok(()) => finished("failed", Settle::DeadLetter),
                Err(error) => self.database_down(&error),
            };
        }

        let mut integration = integration;
        match crate::credentials::resolve_using(&integration.credential, self.config.credential_key.as_ref()) {
            Ok(secret) => integration.credential = secret,
            Err(error) => {
                let reason = format!("the integration's credential cannot be used: {error}");
                return match self.fail_now_needing_attention(task, &reason).await {
                    Ok(()) => finished("failed", Settle::DeadLetter),
                    Err(error) => self.database_down(&error),
                };
            }
        }

        let rate = self.adapter.http().rate_for(&integration);
        loop {
            // Back from a delay queue while its integration is held back: parked again at once,
            // with no database work (its status and `held_back` event were written the first
            // time), so that a large held-back backlog costs the database little as it cycles.
            if returning && self.breakers.holding_back(integration.id) {
                self.count_attempt("held_back");
                if let Some(settle) = self.park_or_wait(task, self.config.held_back_recheck).await {
                    return settle;
                }
                continue;
            }
            // Far-away request slots: park rather than hold a prefetch slot.
            if let Admission::Park(wait) =
                self.adapter.http().limits().admit(integration.id, rate, self.config.park_after, returning)
            {
                tracing::debug!(app = %self.app, wait_ms = wait.as_millis() as u64, "integration at its rate limit; parking the task");
                self.count_attempt("rate_limited");
                let detail = format!("waiting {} ms for the integration's rate limit", wait.as_millis());
                self.note(task, "rate_limited", &detail).await;
                // Waited out here or in the delay queue, the task has had its turn.
                returning = true;
                if let Some(settle) = self.park_or_wait(task, wait).await {
                    return settle;
                }
                continue;
            }
            let _permit = match self.slots.acquire().await {
                Ok(permit) => permit,
                Err(_) => return Settle::Requeue,
            };
            let step = match self.attempt(task, &integration).await {
                Ok(step) => step,
                Err(error) => return self.database_down(&error),
            };
            drop(_permit);
            match step {
                Step::Finished { result, settle } => return finished(result, settle),
                Step::Paused => {
                    self.count_attempt("paused");
                    // Said once per pause, not at every look while it lasts.
                    let said = apply::last_event_kind(&self.store, task.tenant_id, task.task_id).await.ok().flatten();
                    if said.as_deref() != Some("paused") {
                        let detail = "the integration is paused: no app call until an admin resumes it";
                        self.note(task, "paused", detail).await;
                    }
                    returning = true;
                    if let Some(settle) = self.park_or_wait(task, self.config.paused_recheck).await {
                        return settle;
                    }
                }
                Step::HeldBack => {
                    self.count_attempt("held_back");
                    returning = true;
                    if let Some(settle) = self.park_or_wait(task, self.config.held_back_recheck).await {
                        return settle;
                    }
                }
                Step::Retry { wait } if wait > self.config.park_after => match self.park_or_wait(task, wait).await {
                    Some(Settle::Ack) => {
                        self.metrics
                            .connector_retry_wait
                            .get_or_create(&AppLabels { app: self.app.clone() })
                            .inc_by(wait.as_secs_f64());
                        return Settle::Ack;
                    }
                    Some(settle) => return settle,
                    None => {}
                },
                Step::Retry { wait } => {
                    if self.pause(wait).await {
                        tracing::info!(app = %self.app, "stopping during a retry wait; the task returns to the queue");
                        return Settle::Requeue;
                    }
                }
            }
        }
    }

    /// Adds an event to the task's log outside any attempt (a wait before one). A failure is
    /// only logged: the task goes on, and its attempts are recorded as ever.
    async fn note(&self, task: &ConnectorTask, kind: &str, detail: &str) {
        let written = async {
            let mut client = self.store.client().await?;
            let tx = client.transaction().await?;
            apply::add_event(&tx, task.tenant_id, task.task_id, NewEvent::new(kind, detail)).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        };
        if let Err(error) = written.await {
            tracing::warn!(app = %self.app, error = %error, kind, "could not add the event to the task's log");
        }
    }

    /// Parks the task for `wait` or, when it cannot be parked, waits in place: `Some` ends the
    /// delivery (parked: acknowledged; stopped meanwhile: requeued), `None` goes on with it.
    async fn park_or_wait(&self, task: &ConnectorTask, wait: Duration) -> Option<Settle> {
        match self.park(task, wait).await {
            Ok(()) => {
                // Should the broker drop it, [`Worker::resend_lost`] sends it again after this.
                let within = Topology::delay_tier(wait) + self.config.lost_park_slack;
                if let Err(error) = apply::mark_parked(&self.store, task.tenant_id, task.task_id, within).await {
                    tracing::warn!(app = %self.app, error = %error, "could not record when the parked task is due back");
                }
                Some(Settle::Ack)
            }
            Err(()) => self.pause(wait).await.then_some(Settle::Requeue),
        }
    }

    /// Waits `wait` in place (counted as retry wait); true when the stop signal came first.
    async fn pause(&self, wait: Duration) -> bool {
        let waited = Instant::now();
        let interrupted = tokio::select! {
            _ = self.shutdown.cancelled() => true,
            _ = tokio::time::sleep(wait) => false,
        };
        self.metrics
            .connector_retry_wait
            .get_or_create(&AppLabels { app: self.app.clone() })
            .inc_by(waited.elapsed().as_secs_f64());
        interrupted
    }

    /// Puts the task in the delay queue for `wait`; the broker brings it back to the work
    /// queue then. Err when the broker did not confirm it (the caller waits in place instead).
    async fn park(&self, task: &ConnectorTask, wait: Duration) -> Result<(), ()> {
        let payload = match serde_json::to_vec(task) {
            Ok(p) => p,
            Err(error) => {
                tracing::error!(app = %self.app, error = %error, "cannot serialize a connector task");
                return Err(());
            }
        };
        let queue = self.topology.delay_queue(&self.app, wait);
        let publisher = self.delay_publisher().await.ok_or(())?;
        match publisher.publish_delayed(&queue, &task.message_id.to_string(), &payload, wait).await {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::warn!(app = %self.app, error = %error, "could not park the task in the delay queue; waiting in place");
                *self.delay.lock().await = None;
                Err(())
            }
        }
    }

    /// Sends again the pool's parked tasks that are overdue ([`apply::take_lost_parked`]): a
    /// classic delay queue dead-letters at most once, so a broker restart as a message expires
    /// can drop it, and nothing else would ever move its task. A task that was only late gets a
    /// second delivery, which its row lock and version make harmless.
    async fn resend_lost(&self) {
        let lost = match apply::take_lost_parked(&self.store, &self.app, self.config.lost_park_slack, 100).await {
            Ok(lost) => lost,
            Err(error) => {
                tracing::warn!(app = %self.app, error = %error, "could not look for lost parked tasks");
                return;
            }
        };
        if lost.is_empty() {
            return;
        }
        let Some(publisher) = self.delay_publisher().await else { return };
        let exchange = self.topology.connector_exchange();
        for t in &lost {
            let message = ConnectorTask {
                v: unseat_bus::messages::MESSAGE_VERSION,
                message_id: unseat_bus::messages::new_message_id(),
                tenant_id: t.tenant_id,
                job_id: t.job_id,
                task_id: t.task_id,
                integration_id: t.integration_id,
                user_id: t.user_id,
                app_kind: t.app_kind.clone(),
                desired_version: t.desired_version,
            };
            let Ok(payload) = serde_json::to_vec(&message) else { continue };
            let id = message.message_id.to_string();
            match publisher.publish(&exchange, &t.app_kind, &id, &payload).await {
                Ok(()) => tracing::warn!(app = %self.app, task = %t.task_id, "a parked task was overdue; sent again"),
                Err(error) => {
                    tracing::warn!(app = %self.app, error = %error, "could not send a lost parked task again; trying later");
                    *self.delay.lock().await = None;
                    return;
                }
            }
        }
    }

    /// The publisher for delay queues, connecting on first use and after a failure.
    async fn delay_publisher(&self) -> Option<Publisher> {
        let mut slot = self.delay.lock().await;
        if let Some((conn, publisher)) = slot.as_ref() {
            if conn.status().connected() {
                return Some(publisher.clone());
            }
        }
        let connected = async {
            let conn = unseat_bus::connect(&self.amqp_url, &format!("connector-{}-delay", self.app)).await?;
            let publisher = Publisher::new(&conn).await?;
            Ok::<_, unseat_bus::BusError>((conn, publisher))
        };
        match connected.await {
            Ok((conn, publisher)) => {
                *slot = Some((conn, publisher.clone()));
                Some(publisher)
            }
            Err(error) => {
                tracing::warn!(app = %self.app, error = %error, "cannot connect to RabbitMQ to park tasks");
                None
            }
        }
    }

    /// One attempt: lock the pair, decide whether there is anything to do, call the app while
    /// holding the lock, record the outcome, commit.
    async fn attempt(&self, task: &ConnectorTask, integration: &Integration) -> Result<Step, StoreError> {
        let (tenant, task_id) = (task.tenant_id, task.task_id);
        if self.store.mark_task_picked_up(tenant, task_id, task.integration_id).await? == Some(true) {
            return Ok(Step::Paused);
        }
        let mut client = self.store.client().await?;
        let tx = client.transaction().await?;

        let access = apply::lock_access(&tx, tenant, task.integration_id, task.user_id).await?;
        let Some(task_row) = apply::lock_task(&tx, tenant, task_id).await? else {
            tx.rollback().await?;
            tracing::error!(app = %self.app, "the task is not in the log store; dead-lettering the message");
            return Ok(Step::Finished { result: "failed", settle: Settle::DeadLetter });
        };
        // An error on record but no attempt since the last re-drive: a re-driven task, first
        // picked up. Its earlier copy in the dead-letter queue is stale now.
        if task_row.status != "failed" && task_row.last_error.is_some() && task_row.attempts == task_row.attempt_base {
            self.sweeps.notify_one();
        }
        // Ended meanwhile (its integration deleted, say) while this delivery waited to retry.
        if task_row.status == "superseded" {
            tx.commit().await?;
            tracing::info!(app = %self.app, "task superseded while it waited; no app call");
            return Ok(Step::Finished { result: "superseded", settle: Settle::Ack });
        }
        let Some(access) = access else {
            if !apply::integration_exists(&tx, tenant, task.integration_id).await? {
                // Deleted after this delivery read it: its desired states went with it.
                self.supersede_for_deletion(&tx, task, &task_row.status).await?;
                tx.commit().await?;
                return Ok(Step::Finished { result: "superseded", settle: Settle::Ack });
            }
            let reason = "no desired state is recorded for this user and integration";
            self.record_failure(&tx, task, reason).await?;
            tx.commit().await?;
            tracing::warn!(app = %self.app, reason, "task failed; dead-lettering it");
            return Ok(Step::Finished { result: "failed", settle: Settle::DeadLetter });
        };

        if access.desired_version > task.desired_version {
            let detail = format!(
                "superseded: desired version {} is newer than this task's version {}",
                access.desired_version, task.desired_version
            );
            // A late redelivery of a task that already finished leaves its history alone.
            if matches!(task_row.status.as_str(), "queued" | "running" | "retrying") {
                apply::update_task(&tx, tenant, task_id, TaskUpdate::Superseded).await?;
                apply::add_event(&tx, tenant, task_id, NewEvent::new("superseded", &detail)).await?;
            }
            tx.commit().await?;
            tracing::info!(app = %self.app, stored_version = access.desired_version, "task superseded by a newer desired state; no app call");
            return Ok(Step::Finished { result: "superseded", settle: Settle::Ack });
        }
        if access.applied_version >= task.desired_version {
            if task_row.status != "succeeded" {
                let detail = format!("version {} was already applied; no app call", access.applied_version);
                apply::update_task(&tx, tenant, task_id, TaskUpdate::Succeeded).await?;
                apply::add_event(&tx, tenant, task_id, NewEvent::new("already_applied", &detail)).await?;
            }
            tx.commit().await?;
            tracing::info!(app = %self.app, applied_version = access.applied_version, "task already applied (duplicate delivery); no app call");
            return Ok(Step::Finished { result: "duplicate", settle: Settle::Ack });
        }
        // A failed task stays failed until an admin re-drives it (which sets it queued).
        if task_row.status == "failed" {
            tx.commit().await?;
            tracing::info!(app = %self.app, "task already failed; a late delivery does nothing");
            return Ok(Step::Finished { result: "duplicate", settle: Settle::Ack });
        }

        // Tasks of users the app knows by one address wait for each other, and the account
        // holds the most any of them is granted ([`shared_target`]). When the IdP changed the
        // person's address since the app was converged at the old one, both addresses are held,
        // always in one order, so that two tasks cannot wait on each other.
        let moved_from = access.applied_email.as_deref().filter(|old| !same_email(old, &access.email));
        let mut addresses: Vec<&str> = std::iter::once(access.email.as_str()).chain(moved_from).collect();
        addresses.sort_by_key(|a| a.trim().to_lowercase());
        for address in addresses {
            apply::lock_address(&tx, tenant, task.integration_id, address).await?;
        }
        // The others who reach the app through this address, and through the former one. When
        // the former address is someone else's too, this user's remembered id names their
        // account, so it is not used: the user is converged at the new address and the old
        // account is brought to what the others are granted (its invitations are theirs).
        let (others, former_holders) =
            apply::other_holders(&tx, tenant, task.integration_id, task.user_id, &access.email, moved_from).await?;
        let former_shared = !former_holders.is_empty();
        // A user who moved to an address whose account another user has: that account is now
        // how the app knows them, and the one their remembered id names (at the former address)
        // is not theirs to keep: it is removed.
        let joined = moved_from.is_some() && !former_shared && !others.is_empty();
        let known_id = if former_shared || joined { None } else { access.app_account_id.as_deref() };

        let max_attempts = self.config.max_attempts.max(1) as i32;
        let used = task_row.attempts - task_row.attempt_base - task_row.throttled_attempts;
        // Time spent waiting on a paused integration is not age.
        let age =
            (chrono::Utc::now() - task_row.since).to_std().unwrap_or_default().saturating_sub(task_row.paused_for);
        if used >= max_attempts || age > self.config.max_task_age {
            let reason = if used >= max_attempts {
                format!(
                    "gave up after {used} attempts: {}",
                    task_row.last_error.as_deref().unwrap_or("no error recorded")
                )
            } else {
                format!("gave up: the task is older than {} s", self.config.max_task_age.as_secs())
            };
            self.record_failure(&tx, task, &reason).await?;
            tx.commit().await?;
            self.count_attempt("budget_exhausted");
            tracing::warn!(app = %self.app, attempts = used, error = %reason, "task failed; dead-lettering it");
            return Ok(Step::Finished { result: "failed", settle: Settle::DeadLetter });
        }
        // The app failed the integration's last attempts and another task is trying it: this
        // task holds no slot meanwhile (it is not counted as an attempt).
        let ticket = match self.breakers.call(task.integration_id) {
            Ok(ticket) => ticket,
            Err(HeldBack { in_a_row, last_error }) => {
                let said = apply::hold_back(&tx, tenant, task_id).await?;
                if !said {
                    let detail = format!(
                        "held back: {} failed its last {in_a_row} attempts in a row ({last_error}); one task at a \
                         time tries it until it answers",
                        integration.name
                    );
                    apply::add_event(&tx, tenant, task_id, NewEvent::new("held_back", &detail)).await?;
                }
                tx.commit().await?;
                tracing::debug!(app = %self.app, in_a_row, "the integration's app is failing; task held back");
                return Ok(Step::HeldBack);
            }
        };

        let desired_assets =
            if access.desired_role.is_some() { access.desired_assets.clone() } else { Default::default() };
        let (target_role, target_assets) =
            shared_target(integration, access.desired_role.as_deref(), &desired_assets, &others);
        // The account is someone else's too and holds more than this user's own state.
        let shared = target_role != access.desired_role || target_assets != desired_assets;
        // A removal that leaves the account to the others.
        let kept = access.desired_role.is_none() && target_role.is_some();
        let intent = match target_role.as_deref() {
            None => format!("removing from {}", integration.name),
            Some(_) if kept => format!("leaving the account in {} to another user with its address", integration.name),
            Some(role) => format!("setting role {role} in {}", integration.name),
        };
        let attempt = apply::begin_attempt(&tx, tenant, task_id, &intent).await?;
        let used = attempt - task_row.attempt_base - task_row.throttled_attempts;
        // An invitation sent to a former address is not found under the new one, and could
        // still be accepted.
        // The account at the former address is the others' now: it holds what they are granted
        // (this user's share of it goes), found by its address.
        let former_target = match moved_from {
            Some(old) if former_shared => {
                Some((old, shared_target(integration, None, &Default::default(), &former_holders), None))
            }
            Some(old) if joined => Some((old, (None, Default::default()), access.app_account_id.as_deref())),
            _ => None,
        };
        let mut withdrawn = 0;
        let mut former_done = None;
        let result = async {
            if let Some(old) = moved_from.filter(|_| !former_shared) {
                withdrawn = withdraw_invitations(&self.adapter, integration, old).await?;
            }
            if let Some((old, (role, assets), known)) = &former_target {
                let done = converge(&self.adapter, integration, old, *known, role.as_deref(), assets, None).await?;
                former_done = Some(done);
            }
            converge(
                &self.adapter,
                integration,
                &access.email,
                known_id,
                target_role.as_deref(),
                &target_assets,
                if shared { None } else { vouched_applied_role(&access) },
            )
            .await
        }
        .await;
        // Invitations withdrawn are said in the attempt's event, also when a later call of the
        // attempt failed: the next attempt finds none left to withdraw.
        let withdrawal = match (moved_from, withdrawn) {
            (Some(old), 1..) => {
                let what = if withdrawn == 1 { "pending invitation" } else { "pending invitations" };
                format!("; {withdrawn} {what} to the former address {old} withdrawn")
            }
            _ => String::new(),
        };

        match &result {
            Err(error) if error.app_failing() => ticket.failed(&error.to_string()),
            _ => ticket.answered(),
        }
        self.export_held_back();
        match result {
            Ok(done) => {
                let mut detail = format!("{}{withdrawal}", done.describe(&integration.name));
                if let (Some((old, ..)), Some(former)) = (&former_target, &former_done) {
                    let did = former.describe(&integration.name);
                    detail = if former_shared {
                        let names: Vec<String> = former_holders.iter().map(apply::Holder::describe).collect();
                        format!(
                            "{detail}; the account at the former address {old} is left to the other users with that \
                             address ({}), at what they are granted: {did}",
                            names.join(", ")
                        )
                    } else {
                        format!(
                            "{detail}; the user's account at the former address {old}, now that the app knows them by \
                             an address another user has too: {did}"
                        )
                    };
                }
                if shared {
                    let names: Vec<String> = others.iter().map(apply::Holder::describe).collect();
                    detail = format!(
                        "{detail}: the account of {} is also that of another user of the directory ({}), and holds \
                         the most any of them is granted",
                        access.email,
                        names.join(", ")
                    );
                }
                // An invitation not yet accepted holds no assets: the state applied says so.
                let invited = done.converged.is_invitation();
                let no_assets = Default::default();
                let applied = Applied {
                    version: access.desired_version,
                    // What the account holds (more than this user's own state, when shared), so
                    // that the next task trusts no role the app was not given.
                    role: if kept { None } else { target_role.as_deref() },
                    assets: if invited || kept { &no_assets } else { &target_assets },
                    app_account_id: if kept { None } else { done.account_id.as_deref() },
                };
                apply::record_applied_state(&tx, tenant, task.integration_id, task.user_id, &applied).await?;
                // The other users of each account changed are recorded at what it holds now.
                let held_assets = if invited { &no_assets } else { &target_assets };
                let ids: Vec<_> = others.iter().map(|o| o.user_id).collect();
                let (integration_id, email) = (task.integration_id, access.email.as_str());
                apply::record_account_held(
                    &tx,
                    tenant,
                    integration_id,
                    &ids,
                    email,
                    target_role.as_deref(),
                    held_assets,
                )
                .await?;
                if let (Some((old, (role, assets), _)), Some(former)) = (&former_target, &former_done) {
                    let invited = former.converged.is_invitation();
                    let assets = if invited { &no_assets } else { assets };
                    let ids: Vec<_> = former_holders.iter().map(|o| o.user_id).collect();
                    apply::record_account_held(&tx, tenant, integration_id, &ids, old, role.as_deref(), assets).await?;
                }
                // A removal the account outlives did not take place: the log says superseded.
                let update = if kept { TaskUpdate::Superseded } else { TaskUpdate::Succeeded };
                apply::update_task(&tx, tenant, task_id, update).await?;
                // What failed before this version is moot now: no failure to act on any more.
                let (integration_id, user_id) = (task.integration_id, task.user_id);
                apply::supersede_failed(&tx, tenant, integration_id, user_id, access.desired_version, task_id).await?;
                let kind = if kept { "kept_for_another_user" } else { done.event_kind() };
                apply::add_event(&tx, tenant, task_id, NewEvent::new(kind, &detail).attempt(attempt)).await?;
                if integration.needs_attention.is_some() {
                    apply::clear_needs_attention(&tx, tenant, task.integration_id).await?;
                }
                tx.commit().await?;
                self.count_attempt("succeeded");
                tracing::info!(app = %self.app, attempt, outcome = %detail, "task succeeded");
                Ok(Step::Finished { result: "succeeded", settle: Settle::Ack })
            }
            Err(error) => {
                let class = error.class();
                let status_code = error.status_code().map(i32::from);
                let message = error.to_string();
                apply::add_event(
                    &tx,
                    tenant,
                    task_id,
                    NewEvent::new("attempt_failed", &format!("{message}{withdrawal}"))
                        .attempt(attempt)
                        .status_code(status_code),
                )
                .await?;
                // A throttled attempt is retried whatever the budget (the task's age bounds
                // it), after a wait that grows with each throttle in a row.
                let throttled = task_row.throttled_attempts + 1;
                let retry = match class {
                    ErrorClass::Transient { retry_after } if used < max_attempts => Some((
                        next_wait(used as u32, self.config.min_backoff, self.config.max_backoff, retry_after),
                        "",
                        TaskUpdate::Retrying { last_error: &message },
                        "transient_error",
                    )),
                    ErrorClass::Throttled { retry_after } => Some((
                        throttle_wait(throttled as u32, self.config.throttle_wait, retry_after),
                        "; the app throttled this attempt: not counted against the attempt budget",
                        TaskUpdate::Throttled { last_error: &message },
                        "throttled",
                    )),
                    _ => None,
                };
                if let Some((wait, why, update, label)) = retry {
                    let parked = if wait > self.config.park_after { " (parked in the delay queue)" } else { "" };
                    let detail = format!("retrying in {} ms{parked}{why}", wait.as_millis());
                    apply::update_task(&tx, tenant, task_id, update).await?;
                    apply::add_event(&tx, tenant, task_id, NewEvent::new("retry_scheduled", &detail).attempt(attempt))
                        .await?;
                    tx.commit().await?;
                    self.count_attempt(label);
                    tracing::warn!(app = %self.app, attempt, status = ?status_code, wait_ms = wait.as_millis() as u64, error = %message, "attempt failed; retrying");
                    return Ok(Step::Retry { wait });
                }

                let (label, reason) = match class {
                    ErrorClass::Transient { .. } | ErrorClass::Throttled { .. } => {
                        ("transient_error", format!("gave up after {used} attempts: {message}"))
                    }
                    ErrorClass::Permanent => ("permanent_error", message.clone()),
                    ErrorClass::NeedsAttention => ("needs_attention", message.clone()),
                };
                if class == ErrorClass::NeedsAttention {
                    let why = format!("{} refused the integration's credentials or settings: {message}", self.app);
                    apply::mark_needs_attention(&tx, tenant, task.integration_id, &why).await?;
                }
                self.record_failure(&tx, task, &reason).await?;
                tx.commit().await?;
                self.count_attempt(label);
                tracing::warn!(app = %self.app, attempt, status = ?status_code, error = %reason, "task failed; dead-lettering it");
                Ok(Step::Finished { result: "failed", settle: Settle::DeadLetter })
            }
        }
    }

    /// Exports how many integrations the pool holds tasks back for.
    fn export_held_back(&self) {
        let labels = AppLabels { app: self.app.clone() };
        self.metrics.connector_integrations_held_back.get_or_create(&labels).set(self.breakers.holding() as i64);
    }

    /// Marks the task failed and dead-lettered with `reason`, in the caller's transaction.
    async fn record_failure(
        &self,
        tx: &unseat_store::tokio_postgres::Transaction<'_>,
        task: &ConnectorTask,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (tenant, task_id) = (task.tenant_id, task.task_id);
        apply::update_task(tx, tenant, task_id, TaskUpdate::Failed { last_error: reason, dead_lettered: true }).await?;
        apply::add_event(tx, tenant, task_id, NewEvent::new("failed", reason)).await?;
        let detail = format!("sent to {}", self.dead_letter_queue);
        apply::add_event(tx, tenant, task_id, NewEvent::new("dead_lettered", &detail)).await?;
        Ok(())
    }

    /// Ends a task whose integration was deleted: nothing is left to converge, and no re-drive
    /// could, so it is superseded (a deletion has already marked the tasks it found; one
    /// published since, or finished meanwhile, keeps its history).
    async fn integration_gone(&self, task: &ConnectorTask) -> Result<(), StoreError> {
        let mut client = self.store.client().await?;
        let tx = client.transaction().await?;
        if let Some(row) = apply::lock_task(&tx, task.tenant_id, task.task_id).await? {
            self.supersede_for_deletion(&tx, task, &row.status).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks a task of a deleted integration superseded, in the caller's transaction, if it is
    /// still open (`status`, read under its lock).
    async fn supersede_for_deletion(
        &self,
        tx: &unseat_store::tokio_postgres::Transaction<'_>,
        task: &ConnectorTask,
        status: &str,
    ) -> Result<(), StoreError> {
        if matches!(status, "queued" | "running" | "retrying") {
            apply::update_task(tx, task.tenant_id, task.task_id, TaskUpdate::Superseded).await?;
            apply::add_event(tx, task.tenant_id, task.task_id, NewEvent::new("superseded", INTEGRATION_GONE)).await?;
        }
        tracing::info!(app = %self.app, integration = %task.integration_id, "task of a deleted integration; no app call");
        Ok(())
    }

    /// Fails a task that cannot even be attempted (it is misrouted).
    async fn fail_now(&self, task: &ConnectorTask, reason: &str) -> Result<(), StoreError> {
        let mut client = self.store.client().await?;
        let tx = client.transaction().await?;
        self.record_failure(&tx, task, reason).await?;
        tx.commit().await?;
        tracing::warn!(app = %self.app, reason, "task failed; dead-lettering it");
        Ok(())
    }

    /// Fails a task because of the integration itself (its credential), flagging it.
    async fn fail_now_needing_attention(&self, task: &ConnectorTask, reason: &str) -> Result<(), StoreError> {
        let mut client = self.store.client().await?;
        let tx = client.transaction().await?;
        apply::mark_needs_attention(&tx, task.tenant_id, task.integration_id, reason).await?;
        self.record_failure(&tx, task, reason).await?;
        tx.commit().await?;
        tracing::warn!(app = %self.app, reason, "task failed; dead-lettering it");
        Ok(())
    }

    fn database_down(&self, error: &StoreError) -> Settle {
        tracing::warn!(app = %self.app, error = %error, "could not record the task's progress; requeueing the message");
        Settle::Requeue
    }

    fn count_attempt(&self, result: &str) {
        self.metrics
            .connector_attempts
            .get_or_create(&AppResultLabels { app: self.app.clone(), result: result.to_string() })
            .inc();
    }
}

/// The role the app was last made to hold, when the log store can vouch for it: only while
/// the version applied is the one just before the desired one. Versions in between were
/// never recorded as applied, yet one of their tasks may have set its role before it failed
/// or was superseded, so the role the app holds is then not known (None, as when nothing was
/// applied yet), and an adapter that cannot read the role back sets it rather than trusting
/// the record.
/// What the app account of `email` must hold when other users of the integration reach it
/// too (`others`, [`apply::other_holders`]): the highest role any of them (this user included,
/// when granted) is granted on the integration's ladder, and every asset any of them is
/// granted, at the highest asset role. Without others, this user's own state. Roles off the
/// ladder (a ladder changed since) rank lowest.
fn shared_target(
    integration: &Integration,
    own_role: Option<&str>,
    own_assets: &Assets,
    others: &[apply::Holder],
) -> (Option<String>, Assets) {
    let rank = |ladder: &[String], role: &str| ladder.iter().position(|r| r == role).unwrap_or(usize::MAX);
    let mut role = own_role.map(str::to_string);
    let mut assets = own_assets.clone();
    for other in others {
        if role.as_deref().is_none_or(|r| rank(&integration.roles, &other.role) < rank(&integration.roles, r)) {
            role = Some(other.role.clone());
        }
        for (asset, asset_role) in &other.assets {
            let higher = assets
                .get(asset)
                .is_none_or(|held| rank(&integration.asset_roles, asset_role) < rank(&integration.asset_roles, held));
            if higher {
                assets.insert(asset.clone(), asset_role.clone());
            }
        }
    }
    (role, assets)
}

fn vouched_applied_role(access: &apply::AccessRow) -> Option<&str> {
    if access.applied_version + 1 == access.desired_version {
        access.applied_role.as_deref()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn access(desired_version: i64, applied_version: i64, applied_role: Option<&str>) -> apply::AccessRow {
        apply::AccessRow {
            email: "ann@example.com".into(),
            desired_role: Some("EMPLOYEE".into()),
            desired_version,
            applied_version,
            applied_role: applied_role.map(str::to_string),
            desired_assets: Default::default(),
            applied_assets: None,
            app_account_id: None,
            applied_email: None,
        }
    }

    #[test]
    fn the_applied_role_is_vouched_for_only_when_no_version_since_went_unrecorded() {
        assert_eq!(vouched_applied_role(&access(5, 4, Some("FINANCE_EDITOR"))), Some("FINANCE_EDITOR"));
        assert_eq!(vouched_applied_role(&access(5, 4, Some("EMPLOYEE"))), Some("EMPLOYEE"));
        assert_eq!(vouched_applied_role(&access(5, 4, None)), None, "last applied as absent");
        assert_eq!(vouched_applied_role(&access(1, 0, None)), None, "never applied");
        // Version 4 may have set a role before it failed or was superseded.
        assert_eq!(vouched_applied_role(&access(5, 3, Some("EMPLOYEE"))), None);
    }

    #[test]
    fn a_shared_account_holds_the_most_any_of_its_users_is_granted() {
        let hub = Integration {
            tenant_id: Uuid::nil(),
            id: Uuid::nil(),
            name: "Hub".into(),
            app_kind: "business_hub".into(),
            base_url: "http://127.0.0.1:9".into(),
            settings: serde_json::json!({ "business_id": "1" }),
            credential: String::new(),
            roles: vec!["ADMIN".into(), "FINANCE_EDITOR".into(), "EMPLOYEE".into()],
            asset_roles: vec!["MANAGE".into(), "ANALYZE".into()],
            needs_attention: None,
        };
        let assets =
            |pairs: &[(&str, &str)]| -> Assets { pairs.iter().map(|(a, r)| (a.to_string(), r.to_string())).collect() };
        let other = |role: &str, pairs: &[(&str, &str)]| apply::Holder {
            name: None,
            user_id: Uuid::new_v4(),
            role: role.into(),
            assets: assets(pairs),
        };
        let none = assets(&[]);
        assert_eq!(shared_target(&hub, Some("EMPLOYEE"), &none, &[]), (Some("EMPLOYEE".into()), none.clone()));
        assert_eq!(shared_target(&hub, None, &none, &[]), (None, none.clone()), "alone: removed");
        // A removal leaves the account at what the other is granted.
        let others = [other("FINANCE_EDITOR", &[("act_1", "ANALYZE")])];
        assert_eq!(
            shared_target(&hub, None, &none, &others),
            (Some("FINANCE_EDITOR".into()), assets(&[("act_1", "ANALYZE")]))
        );
        // The higher role and every asset at its highest role, whoever is granted them.
        let others = [other("EMPLOYEE", &[("act_1", "MANAGE"), ("page_2", "ANALYZE")]), other("ADMIN", &[])];
        let own = assets(&[("act_1", "ANALYZE"), ("act_3", "ANALYZE")]);
        assert_eq!(
            shared_target(&hub, Some("FINANCE_EDITOR"), &own, &others),
            (Some("ADMIN".into()), assets(&[("act_1", "MANAGE"), ("act_3", "ANALYZE"), ("page_2", "ANALYZE")]))
        );
        // A role no longer on the ladder ranks lowest.
        let others = [other("OWNER", &[])];
        assert_eq!(shared_target(&hub, Some("EMPLOYEE"), &none, &others).0.as_deref(), Some("EMPLOYEE"));
    }

    fn task_json(v: u32) -> Vec<u8> {
        let task = ConnectorTask {
            v,
            message_id: Uuid::new_v4(),
            tenant_id: Uuid::new_v4(),
            job_id: Uuid::new_v4(),
            task_id: Uuid::new_v4(),
            integration_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            app_kind: "business_hub".into(),
            desired_version: 3,
        };
        serde_json::to_vec(&task).expect("serializes")
    }

    #[test]
    fn accepts_only_tasks_of_this_message_version() {
        assert!(parse_task(&task_json(MESSAGE_VERSION)).is_ok());
        assert!(parse_task(&task_json(MESSAGE_VERSION + 1)).is_err());
        assert!(parse_task(b"{}").is_err());
        assert!(parse_task(b"\xff\xfe").is_err());
    }
}
