//! The one fixture every connector test starts from: a fresh database holding a tenant, a
//! business-hub integration pointing at the emulator (served on a loopback port, with a
//! required token and an owner who stays ADMIN) and a job; the real RabbitMQ with a unique
//! topology; helpers to store desired states and queued tasks, publish them, start connector
//! runtimes (one per replica) and read what an operator would: the hub, the task rows and
//! events, the dead-letter queue.

#![allow(dead_code)]

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use unseat_bus::messages::{ConnectorTask, MESSAGE_VERSION};
use unseat_bus::{Publisher, Topology};
use unseat_connector::ConnectorConfig;
use unseat_emulator::{BusinessUser, Emulator};
use unseat_store::Store;
use unseat_telemetry::Metrics;
use uuid::Uuid;

pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Upper bound for anything the tests wait on (the system going quiet on a busy machine); a
/// bound, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// What the fixture's integration looks like.
pub struct Setup {
    pub business: &'static str,
    pub token: &'static str,
    pub settings: Value,
    pub asset_roles: Vec<String>,
    /// The integration's stored credential; None stores `token` itself.
    pub credential: Option<String>,
    /// `business_hub`, or `scim` for the emulator's SCIM app.
    pub app_kind: &'static str,
    pub roles: Vec<String>,
}

impl Setup {
    pub fn new(business: &'static str, token: &'static str) -> Self {
        Self {
            business,
            token,
            settings: json!({ "business_id": business }),
            asset_roles: Vec::new(),
            credential: None,
            app_kind: "business_hub",
            roles: vec!["ADMIN".into(), "EMPLOYEE".into()],
        }
    }

    /// An integration of the emulator's SCIM app (named "Acme SCIM App"), with the role
    /// ladder `roles` and `settings`.
    pub fn scim(token: &'static str, roles: &[&str], settings: Value) -> Self {
        Self {
            app_kind: "scim",
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Self::new("0", token).settings(settings)
        }
    }

    pub fn settings(mut self, settings: Value) -> Self {
        self.settings = settings;
        self
    }

    pub fn asset_roles(mut self, roles: &[&str]) -> Self {
        self.asset_roles = roles.iter().map(|r| r.to_string()).collect();
        self
    }

    pub async fn build(self) -> Fixture {
        let (_url, store) = unseat_store::testing::fresh_database().await.expect("fresh database");
        let emu = Emulator::new();
        let mut base_url = unseat_emulator::serve_local(emu.clone()).await.expect("emulator");
        let name = if self.app_kind == "scim" {
            base_url.push_str("/scim/v2");
            emu.require_scim_token(self.token);
            "Acme SCIM App"
        } else {
            emu.require_token(self.business, self.token).expect("token");
            emu.seed_user(self.business, "owner@example.com", "ADMIN", Some("Olive Owner")).expect("seed owner");
            "Acme Business Hub"
        };

        let (tenant, integration, job) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let client = store.client().await.expect("client");
        client.execute("insert into tenants (id, name) values ($1, 'Acme')", &[&tenant]).await.expect("tenant");
        let roles = self.roles;
        let credential = self.credential.unwrap_or_else(|| self.token.to_string());
        client
            .execute(
                "insert into integrations (tenant_id, id, name, app_kind, base_url, settings, credential, roles, asset_roles)
                 values ($1, $2, $8, $9, $3, $4, $5, $6, $7)",
                &[
                    &tenant,
                    &integration,
                    &base_url,
                    &self.settings,
                    &credential,
                    &roles,
                    &self.asset_roles,
                    &name,
                    &self.app_kind,
                ],
            )
            .await
            .expect("integration");
        client
            .execute(
                "insert into jobs (tenant_id, id, trigger_method, trigger_path, received_at)
                 values ($1, $2, 'PATCH', '/scim/v2/Users/x', now())",
                &[&tenant, &job],
            )
            .await
            .expect("job");

        let topology = Topology::new(format!("t{}", Uuid::new_v4().simple()), vec![self.app_kind.into()]);
        let conn = unseat_bus::connect(AMQP, "connector-test").await.expect("amqp");
        let channel = conn.create_channel().await.expect("channel");
        topology.declare(&channel).await.expect("declare");
        let publisher = Publisher::new(&conn).await.expect("publisher");
        Fixture {
            store,
            emu,
            base_url,
            business: self.business,
            app_kind: self.app_kind,
            topology,
            metrics: Arc::new(Metrics::new()),
            tenant,
            integration,
            job,
            publisher,
            conn,
            shutdown: CancellationToken::new(),
            connectors: Vec::new(),
            stopped: false,
        }
    }
}

/// The task row, as an operator reads it.
#[derive(Debug)]
pub struct TaskState {
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub dead_lettered: bool,
}

/// A desired state to store for one user, with its queued task.
pub struct Desire<'a> {
    pub email: &'a str,
    pub desired_role: Option<&'a str>,
    pub desired_assets: Value,
    pub desired_version: i64,
    pub applied_version: i64,
    pub task_version: i64,
    /// The hub's id of the user, as remembered from an earlier task.
    pub app_account_id: Option<String>,
}

impl<'a> Desire<'a> {
    /// Remove `email` (version 2 over an applied version 1).
    pub fn removal(email: &'a str) -> Self {
        Self {
            email,
            desired_role: None,
            desired_assets: json!({}),
            desired_version: 2,
            applied_version: 1,
            task_version: 2,
            app_account_id: None,
        }
    }
}

pub struct Fixture {
    pub store: Store,
    pub emu: Emulator,
    pub base_url: String,
    pub business: &'static str,
    pub app_kind: &'static str,
    pub topology: Topology,
    pub metrics: Arc<Metrics>,
    pub tenant: Uuid,
    pub integration: Uuid,
    pub job: Uuid,
    pub publisher: Publisher,
    pub conn: lapin::Connection,
    pub shutdown: CancellationToken,
    connectors: Vec<tokio::task::JoinHandle<()>>,
    /// `stop` ran: it deleted the queues.
    stopped: bool,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if !self.stopped {
            // The test ended without `stop` (it needed no more, or failed): still take its
            // queues off the broker, so that test runs do not pile quorum queues up there.
            let topology = self.topology.clone();
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    let _ = rt.block_on(topology.delete_at(AMQP, "connector-test-cleanup"));
                }
            })
            .join();
        }
    }
}

/// Short backoffs so that retries do not slow the tests down.
pub fn quick_config() -> ConnectorConfig {
    ConnectorConfig {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        throttle_wait: Duration::from_millis(300),
        request_timeout: Duration::from_secs(5),
        grace: Duration::from_secs(2),
        held_back_recheck: Duration::from_millis(500),
        ..ConnectorConfig::default()
    }
}

impl Fixture {
    /// Makes the fixture work on another tenant and integration of its database (one created
    /// through the admin API, say), with a job of that tenant.
    pub async fn adopt(&mut self, tenant: Uuid, integration: Uuid) {
        let job = Uuid::new_v4();
        let client = self.store.client().await.expect("client");
        client
            .execute(
                "insert into jobs (tenant_id, id, trigger_method, trigger_path, received_at)
                 values ($1, $2, 'PATCH', '/scim/v2/Users/x', now())",
                &[&tenant, &job],
            )
            .await
            .expect("job");
        (self.tenant, self.integration, self.job) = (tenant, integration, job);
    }

    /// Adds a second business-hub integration to the tenant, at another business of the same
    /// emulator (token `token`), and makes the fixture's helpers work on it from now on.
    /// Returns the first integration's id.
    pub async fn switch_to_another_business(&mut self, business: &'static str, token: &str) -> Uuid {
        self.emu.require_token(business, token).expect("token");
        self.emu.seed_user(business, "owner@example.com", "ADMIN", Some("Olive Owner")).expect("seed owner");
        let integration = Uuid::new_v4();
        let client = self.store.client().await.expect("client");
        client
            .execute(
                "insert into integrations (tenant_id, id, name, app_kind, base_url, settings, credential, roles)
                 values ($1, $2, 'Second Business Hub', 'business_hub', $3, $4, $5, '{ADMIN,EMPLOYEE}')",
                &[&self.tenant, &integration, &self.base_url, &json!({ "business_id": business }), &token],
            )
            .await
            .expect("integration");
        self.business = business;
        std::mem::replace(&mut self.integration, integration)
    }

    /// Starts a connector runtime (one replica) on the fixture's store.
    pub fn start(&mut self, config: ConnectorConfig) {
        self.start_with(self.store.clone(), config);
    }

    /// Starts a connector runtime on `store` (another database than the test's, say).
    pub fn start_with(&mut self, store: Store, config: ConnectorConfig) {
        let metrics = Arc::clone(&self.metrics);
        self.spawn(store, metrics, config);
    }

    /// Starts another replica: its own runtime and metrics, the same database and queue.
    pub fn start_replica(&mut self, config: ConnectorConfig) -> Arc<Metrics> {
        let metrics = Arc::new(Metrics::new());
        self.spawn(self.store.clone(), Arc::clone(&metrics), config);
        metrics
    }

    fn spawn(&mut self, store: Store, metrics: Arc<Metrics>, config: ConnectorConfig) {
        let run = unseat_connector::run(
            store,
            AMQP.to_string(),
            self.topology.clone(),
            metrics,
            config,
            self.shutdown.clone(),
        );
        self.connectors.push(tokio::spawn(run));
    }

    /// Stores a desired state and its queued task; returns (user id, task id).
    pub async fn desire(&self, d: Desire<'_>) -> (Uuid, Uuid) {
        let (user, task) = (Uuid::new_v4(), Uuid::new_v4());
        let client = self.store.client().await.expect("client");
        client
            .execute(
                "insert into access_state (tenant_id, integration_id, user_id, email, desired_role, desired_assets,
                                           desired_version, applied_version, applied_role, app_account_id)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, 'EMPLOYEE', $9)",
                &[
                    &self.tenant,
                    &self.integration,
                    &user,
                    &d.email,
                    &d.desired_role,
                    &d.desired_assets,
                    &d.desired_version,
                    &d.applied_version,
                    &d.app_account_id,
                ],
            )
            .await
            .expect("access_state");
        let outcome = if d.desired_role.is_some() { "update" } else { "remove" };
        client
            .execute(
                "insert into tasks (tenant_id, id, job_id, integration_id, user_id, user_email, outcome, from_role, to_role,
                                    reason, desired_version, status)
                 values ($1, $2, $3, $4, $5, $6, $7, 'EMPLOYEE', $8, 'test', $9, 'queued')",
                &[
                    &self.tenant,
                    &task,
                    &self.job,
                    &self.integration,
                    &user,
                    &d.email,
                    &outcome,
                    &d.desired_role,
                    &d.task_version,
                ],
            )
            .await
            .expect("task");
        (user, task)
    }

    /// Publishes the connector task of `task` for `version`.
    pub async fn publish(&self, user: Uuid, task: Uuid, version: i64) {
        let message = ConnectorTask {
            v: MESSAGE_VERSION,
            message_id: Uuid::new_v4(),
            tenant_id: self.tenant,
            job_id: self.job,
            task_id: task,
            integration_id: self.integration,
            user_id: user,
            app_kind: self.app_kind.into(),
            desired_version: version,
        };
        let payload = serde_json::to_vec(&message).expect("json");
        self.publisher
            .publish(&self.topology.connector_exchange(), self.app_kind, &message.message_id.to_string(), &payload)
            .await
            .expect("publish");
    }

    /// Stores a desired state and its queued task and publishes the task's message for the
    /// task's version, as the resolver would; returns (user id, task id).
    pub async fn queue(&self, d: Desire<'_>) -> (Uuid, Uuid) {
        let version = d.task_version;
        let (user, task) = self.desire(d).await;
        self.publish(user, task, version).await;
        (user, task)
    }

    /// Changes `user`'s desired role as the resolver would (the desired version goes up by
    /// one), stores the change's queued task and publishes it; returns (task id, version).
    pub async fn queue_change(&self, user: Uuid, desired_role: Option<&str>) -> (Uuid, i64) {
        let task = Uuid::new_v4();
        let client = self.store.client().await.expect("client");
        let before = client
            .query_one(
                "select email, desired_role from access_state
                  where tenant_id = $1 and integration_id = $2 and user_id = $3",
                &[&self.tenant, &self.integration, &user],
            )
            .await
            .expect("access_state");
        let (email, from_role): (String, Option<String>) = (before.get(0), before.get(1));
        let version: i64 = client
            .query_one(
                "update access_state set desired_role = $4, desired_version = desired_version + 1, updated_at = now()
                  where tenant_id = $1 and integration_id = $2 and user_id = $3 returning desired_version",
                &[&self.tenant, &self.integration, &user, &desired_role],
            )
            .await
            .expect("new desired state")
            .get(0);
        let outcome = if desired_role.is_some() { "update" } else { "remove" };
        client
            .execute(
                "insert into tasks (tenant_id, id, job_id, integration_id, user_id, user_email, outcome, from_role, to_role,
                                    reason, desired_version, status)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'test', $10, 'queued')",
                &[
                    &self.tenant,
                    &task,
                    &self.job,
                    &self.integration,
                    &user,
                    &email,
                    &outcome,
                    &from_role,
                    &desired_role,
                    &version,
                ],
            )
            .await
            .expect("task");
        self.publish(user, task, version).await;
        (task, version)
    }

    /// Seeds each of `emails` in the hub (EMPLOYEE), stores a removal for it (with the hub's
    /// id remembered when `remember`, as after an earlier task) and publishes it.
    pub async fn removals(&self, emails: &[String], remember: bool) -> Vec<Uuid> {
        let mut tasks = Vec::new();
        for email in emails {
            let hub_id = self.emu.seed_user(self.business, email, "EMPLOYEE", None).expect("seed").id;
            let (_, task) =
                self.queue(Desire { app_account_id: remember.then_some(hub_id), ..Desire::removal(email) }).await;
            tasks.push(task);
        }
        tasks
    }

    pub async fn task(&self, task: Uuid) -> TaskState {
        let client = self.store.client().await.expect("client");
        let row = client
            .query_one(
                "select status, attempts, last_error, dead_lettered from tasks where tenant_id = $1 and id = $2",
                &[&self.tenant, &task],
            )
            .await
            .expect("task row");
        TaskState { status: row.get(0), attempts: row.get(1), last_error: row.get(2), dead_lettered: row.get(3) }
    }

    /// Waits until the task reaches a final status and returns it.
    pub async fn finished(&self, task: Uuid) -> TaskState {
        eventually("the task to finish", || async {
            let t = self.task(task).await;
            matches!(t.status.as_str(), "succeeded" | "failed" | "superseded" | "kept").then_some(t)
        })
        .await
    }

    /// Waits until no task of the tenant is open; returns (status, count) sorted by status.
    /// However long a big backlog takes, the test fails only when the tasks stop moving for
    /// [`PATIENCE`] (the system went quiet), never because a slow machine took longer.
    pub async fn all_finished(&self) -> Vec<(String, i64)> {
        let mut deadline = tokio::time::Instant::now() + PATIENCE;
        let mut open_before = i64::MAX;
        loop {
            let client = self.store.client().await.expect("client");
            let rows = client
                .query(
                    "select status, count(*) from tasks where tenant_id = $1 group by status order by 1",
                    &[&self.tenant],
                )
                .await
                .expect("tasks");
            let counts: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            let open: i64 = counts
                .iter()
                .filter(|(s, _)| matches!(s.as_str(), "queued" | "running" | "retrying"))
                .map(|(_, n)| n)
                .sum();
            if open == 0 {
                return counts;
            }
            if open < open_before {
                open_before = open;
                deadline = tokio::time::Instant::now() + PATIENCE;
            }
            assert!(tokio::time::Instant::now() < deadline, "tasks stopped moving with {open} open: {counts:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn events(&self, task: Uuid) -> Vec<(String, Option<i32>, Option<i32>, String)> {
        self.store.connector_task_events(self.tenant, task).await.expect("events")
    }

    pub async fn event_kinds(&self, task: Uuid) -> Vec<String> {
        self.events(task).await.into_iter().map(|e| e.0).collect()
    }

    /// (applied version, applied role) of the user.
    pub async fn applied(&self, user: Uuid) -> (i64, Option<String>) {
        let client = self.store.client().await.expect("client");
        let row = client
            .query_one(
                "select applied_version, applied_role from access_state
                 where tenant_id = $1 and integration_id = $2 and user_id = $3",
                &[&self.tenant, &self.integration, &user],
            )
            .await
            .expect("access_state");
        (row.get(0), row.get(1))
    }

    /// The integration's needs-attention flag.
    pub async fn needs_attention(&self) -> Option<String> {
        let client = self.store.client().await.expect("client");
        client
            .query_one(
                "select needs_attention from integrations where tenant_id = $1 and id = $2",
                &[&self.tenant, &self.integration],
            )
            .await
            .expect("integration")
            .get(0)
    }

    pub fn hub_user(&self, email: &str) -> Option<BusinessUser> {
        self.emu.users(self.business).into_iter().find(|u| u.email == email)
    }

    /// The hub's users other than the owner.
    pub fn hub_emails(&self) -> Vec<String> {
        self.emu.users(self.business).into_iter().map(|u| u.email).filter(|e| e != "owner@example.com").collect()
    }

    /// App calls that changed something (anything but GET): (method, path, status).
    pub fn writes(&self) -> Vec<(String, String, u16)> {
        self.emu.requests().into_iter().filter(|r| r.method != "GET").map(|r| (r.method, r.path, r.status)).collect()
    }

    /// The sum of a `unseat_<name>_total` counter over the labels with `result`.
    pub fn metric(&self, name: &str, result: &str) -> u64 {
        let prefix = format!("unseat_{name}_total{{");
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with(&prefix) && l.contains(&format!("result=\"{result}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    pub fn dead_letter_queue(&self) -> String {
        Topology::dead_letter_queue(&self.topology.connector_queue(self.app_kind))
    }

    /// Takes one message from the connector queue's dead-letter queue, waiting for it.
    pub async fn dead_lettered_message(&self) -> Vec<u8> {
        let dlq = self.dead_letter_queue();
        let channel = self.conn.create_channel().await.expect("channel");
        eventually("a message in the dead-letter queue", || {
            let channel = channel.clone();
            let dlq = dlq.clone();
            async move {
                channel
                    .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
                    .await
                    .expect("basic_get")
                    .map(|m| m.delivery.data.clone())
            }
        })
        .await
    }

    /// Messages ready in the dead-letter queue, as the broker counts them.
    pub async fn dead_letter_count(&self) -> u32 {
        let channel = self.conn.create_channel().await.expect("channel");
        let q = channel
            .queue_declare(
                self.dead_letter_queue().as_str().into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("the dead-letter queue exists");
        let _ = channel.close(200, "bye".into()).await;
        q.message_count()
    }

    /// Stops the connectors (waiting for them) and deletes the test's queues and exchanges.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for handle in std::mem::take(&mut self.connectors) {
            handle.await.expect("connector task");
        }
        // On a connection of its own, as `drop` does: the test's may be gone by now (seen once,
        // on a machine running two test suites at once), and cleaning up must not fail a test
        // whose checks all passed.
        let _ = self.topology.delete_at(AMQP, "connector-test-stop").await;
        let _ = self.conn.close(200, "bye".into()).await;
        self.stopped = true;
    }
}

/// Polls `probe` until it returns Some, or fails the test after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `n` addresses `prefix0@example.com` …
pub fn emails(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}@example.com")).collect()
}
