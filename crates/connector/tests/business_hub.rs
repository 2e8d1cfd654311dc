//! The business-hub connector end to end: a fresh database, the real RabbitMQ (a unique
//! topology per test), the emulator on a loopback port, and `unseat_connector::run`.
//! Rows are inserted directly in SQL, a ConnectorTask is published, and the tests check what
//! an operator would: the hub's users, the task row and its events, the dead-letter queue.

use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use serde_json::json;
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

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const BIZ: &str = "4200000001";
const TOKEN: &str = "hub-credential-do-not-log";
/// Upper bound for anything the tests wait on; a bound, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

struct TestApp {
    store: Store,
    emu: Emulator,
    topology: Topology,
    metrics: Arc<Metrics>,
    tenant: Uuid,
    integration: Uuid,
    job: Uuid,
    publisher: Publisher,
    conn: lapin::Connection,
    shutdown: CancellationToken,
    connector: Option<tokio::task::JoinHandle<()>>,
}

/// What the task row says.
#[derive(Debug)]
struct TaskState {
    status: String,
    attempts: i32,
    last_error: Option<String>,
    dead_lettered: bool,
}

async fn spawn_app() -> TestApp {
    let (_url, store) = unseat_store::testing::fresh_database().await.expect("fresh database");
    let emu = Emulator::new();
    let base_url = unseat_emulator::serve_local(emu.clone()).await.expect("emulator");
    emu.require_token(BIZ, TOKEN).expect("token");
    emu.seed_user(BIZ, "owner@example.com", "ADMIN", Some("Olive Owner")).expect("seed owner");

    let tenant = Uuid::new_v4();
    let integration = Uuid::new_v4();
    let job = Uuid::new_v4();
    {
        let client = store.client().await.expect("client");
        client.execute("insert into tenants (id, name) values ($1, 'Acme')", &[&tenant]).await.expect("tenant");
        let settings = json!({ "business_id": BIZ });
        let roles = vec!["ADMIN".to_string(), "EMPLOYEE".to_string()];
        client
            .execute(
                "insert into integrations (tenant_id, id, name, app_kind, base_url, settings, credential, roles)
                 values ($1, $2, 'Acme Business Hub', 'business_hub', $3, $4, $5, $6)",
                &[&tenant, &integration, &base_url, &settings, &TOKEN, &roles],
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
    }

    let topology = Topology::new(format!("t{}", Uuid::new_v4().simple()), vec!["business_hub".into()]);
    let conn = unseat_bus::connect(AMQP, "connector-test").await.expect("amqp");
    let channel = conn.create_channel().await.expect("channel");
    topology.declare(&channel).await.expect("declare");
    let publisher = Publisher::new(&conn).await.expect("publisher");

    TestApp {
        store,
        emu,
        topology,
        metrics: Arc::new(Metrics::new()),
        tenant,
        integration,
        job,
        publisher,
        conn,
        shutdown: CancellationToken::new(),
        connector: None,
    }
}

impl TestApp {
    fn start_connector(&mut self) {
        self.start_connector_with(self.store.clone());
    }

    /// Starts the connector on `store` (another database than the test's, say).
    fn start_connector_with(&mut self, store: Store) {
        let config = ConnectorConfig {
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            request_timeout: Duration::from_secs(5),
            grace: Duration::from_secs(5),
            ..ConnectorConfig::default()
        };
        let run = unseat_connector::run(
            store,
            AMQP.to_string(),
            self.topology.clone(),
            Arc::clone(&self.metrics),
            config,
            self.shutdown.clone(),
        );
        self.connector = Some(tokio::spawn(run));
    }

    /// Stores the desired state of one user and a queued task for `version`; returns the
    /// (user id, task id).
    async fn desire(
        &self,
        email: &str,
        desired_role: Option<&str>,
        desired_version: i64,
        applied_version: i64,
        task_version: i64,
    ) -> (Uuid, Uuid) {
        let user = Uuid::new_v4();
        let task = Uuid::new_v4();
        let client = self.store.client().await.expect("client");
        client
            .execute(
                "insert into access_state (tenant_id, integration_id, user_id, email, desired_role, desired_version,
                                           applied_version, applied_role)
                 values ($1, $2, $3, $4, $5, $6, $7, 'EMPLOYEE')",
                &[&self.tenant, &self.integration, &user, &email, &desired_role, &desired_version, &applied_version],
            )
            .await
            .expect("access_state");
        let outcome = if desired_role.is_some() { "update" } else { "remove" };
        client
            .execute(
                "insert into tasks (tenant_id, id, job_id, integration_id, user_id, user_email, outcome, from_role, to_role,
                                    reason, desired_version, status)
                 values ($1, $2, $3, $4, $5, $6, $7, 'EMPLOYEE', $8, 'test', $9, 'queued')",
                &[&self.tenant, &task, &self.job, &self.integration, &user, &email, &outcome, &desired_role, &task_version],
            )
            .await
            .expect("task");
        (user, task)
    }

    async fn publish(&self, user: Uuid, task: Uuid, version: i64) {
        let message = ConnectorTask {
            v: MESSAGE_VERSION,
            message_id: Uuid::new_v4(),
            tenant_id: self.tenant,
            job_id: self.job,
            task_id: task,
            integration_id: self.integration,
            user_id: user,
            app_kind: "business_hub".into(),
            desired_version: version,
        };
        let payload = serde_json::to_vec(&message).expect("json");
        self.publisher
            .publish(&self.topology.connector_exchange(), "business_hub", &message.message_id.to_string(), &payload)
            .await
            .expect("publish");
    }

    async fn task(&self, task: Uuid) -> TaskState {
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
    async fn finished(&self, task: Uuid) -> TaskState {
        eventually("the task to finish", || async {
            let t = self.task(task).await;
            matches!(t.status.as_str(), "succeeded" | "failed" | "superseded" | "kept").then_some(t)
        })
        .await
    }

    async fn event_kinds(&self, task: Uuid) -> Vec<String> {
        self.events(task).await.into_iter().map(|e| e.0).collect()
    }

    async fn events(&self, task: Uuid) -> Vec<(String, Option<i32>, Option<i32>, String)> {
        self.store.connector_task_events(self.tenant, task).await.expect("events")
    }

    async fn applied(&self, user: Uuid) -> (i64, Option<String>) {
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

    fn hub_user(&self, email: &str) -> Option<BusinessUser> {
        self.emu.users(BIZ).into_iter().find(|u| u.email == email)
    }

    /// App calls that changed something (anything but GET).
    fn writes(&self) -> Vec<(String, String, u16)> {
        self.emu.requests().into_iter().filter(|r| r.method != "GET").map(|r| (r.method, r.path, r.status)).collect()
    }

    fn metric(&self, name: &str, result: &str) -> u64 {
        let prefix = format!("unseat_{name}_total{{");
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with(&prefix) && l.contains(&format!("result=\"{result}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Takes one message from the connector queue's dead-letter queue, waiting for it.
    async fn dead_lettered_message(&self) -> Vec<u8> {
        let dlq = Topology::dead_letter_queue(&self.topology.connector_queue("business_hub"));
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

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.connector.take() {
            handle.await.expect("connector task");
        }
        let channel = self.conn.create_channel().await.expect("channel");
        let queues = [self.topology.resolver_queue(), self.topology.connector_queue("business_hub")];
        for queue in queues {
            for q in [Topology::dead_letter_queue(&queue), queue] {
                let _ = channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
            }
        }
        for ex in [
            self.topology.directory_exchange(),
            self.topology.connector_exchange(),
            self.topology.dead_letter_exchange(),
        ] {
            let _ = channel.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default()).await;
        }
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

/// Polls `probe` until it returns Some, or fails the test after [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
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

#[tokio::test]
async fn removes_a_user_from_the_business() {
    let mut app = spawn_app().await;
    app.emu.seed_user(BIZ, "alice@example.com", "EMPLOYEE", None).expect("seed");
    let (user, task) = app.desire("alice@example.com", None, 2, 1, 2).await;
    app.publish(user, task, 2).await;
    app.start_connector();

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts, t.dead_lettered), ("succeeded", 1, false));
    assert!(app.hub_user("alice@example.com").is_none(), "alice is gone from the hub");
    assert!(app.hub_user("owner@example.com").is_some(), "nobody else was touched");
    assert_eq!(app.applied(user).await, (2, None));
    assert_eq!(app.event_kinds(task).await, ["attempt_started", "succeeded"]);
    let writes = app.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!((writes[0].0.as_str(), writes[0].2), ("DELETE", 200));
    assert_eq!(app.metric("connector_tasks", "succeeded"), 1);
    app.stop().await;
}

#[tokio::test]
async fn changes_a_role_to_employee() {
    let mut app = spawn_app().await;
    let bob = app.emu.seed_user(BIZ, "bob@example.com", "ADMIN", None).expect("seed");
    let (user, task) = app.desire("Bob@Example.com", Some("EMPLOYEE"), 5, 4, 5).await;
    app.publish(user, task, 5).await;
    app.start_connector();

    let t = app.finished(task).await;
    assert_eq!(t.status, "succeeded");
    let now = app.hub_user("bob@example.com").expect("bob stays in the hub");
    assert_eq!((now.id, now.role.as_str()), (bob.id.clone(), "EMPLOYEE"));
    assert_eq!(app.applied(user).await, (5, Some("EMPLOYEE".into())));
    let events = app.events(task).await;
    assert_eq!(events.last().map(|e| e.3.as_str()), Some("role changed from ADMIN to EMPLOYEE in Acme Business Hub"));
    assert_eq!(app.writes(), [("POST".to_string(), format!("/v25.0/{}", bob.id), 200)]);
    app.stop().await;
}

#[tokio::test]
async fn removing_someone_already_absent_succeeds_without_a_delete() {
    let mut app = spawn_app().await;
    // Enough users for the lookup to page through several pages.
    for i in 0..130 {
        app.emu.seed_user(BIZ, &format!("person{i}@example.com"), "EMPLOYEE", None).expect("seed");
    }
    let (user, task) = app.desire("ghost@example.com", None, 2, 1, 2).await;
    app.publish(user, task, 2).await;
    app.start_connector();

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("succeeded", 1));
    assert_eq!(app.event_kinds(task).await, ["attempt_started", "already_removed"]);
    assert!(app.writes().is_empty(), "no DELETE for someone who is not there");
    let pages = app.emu.requests().iter().filter(|r| r.method == "GET").count();
    assert_eq!(pages, 2, "131 users at 100 per page");
    assert_eq!(app.applied(user).await, (2, None));
    app.stop().await;
}

#[tokio::test]
async fn retries_through_two_503s_then_succeeds() {
    let mut app = spawn_app().await;
    app.emu.seed_user(BIZ, "carol@example.com", "EMPLOYEE", None).expect("seed");
    app.emu
        .add_fault(unseat_emulator::FaultRule {
            method: Some("DELETE".into()),
            status: Some(503),
            times: Some(2),
            ..Default::default()
        })
        .expect("fault");
    let (user, task) = app.desire("carol@example.com", None, 2, 1, 2).await;
    app.publish(user, task, 2).await;
    app.start_connector();

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts, t.dead_lettered), ("succeeded", 3, false));
    assert_eq!(t.last_error, None);
    assert!(app.hub_user("carol@example.com").is_none());
    let events = app.events(task).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "attempt_started",
            "attempt_failed",
            "retry_scheduled",
            "attempt_started",
            "attempt_failed",
            "retry_scheduled",
            "attempt_started",
            "succeeded"
        ]
    );
    let failures: Vec<_> = events.iter().filter(|e| e.0 == "attempt_failed").collect();
    assert!(failures.iter().all(|e| e.2 == Some(503) && e.3.contains("code 2")), "{failures:?}");
    let attempts: Vec<Option<i32>> = events.iter().filter(|e| e.0 == "attempt_started").map(|e| e.1).collect();
    assert_eq!(attempts, [Some(1), Some(2), Some(3)]);
    let deletes: Vec<u16> = app.writes().into_iter().map(|w| w.2).collect();
    assert_eq!(deletes, [503, 503, 200]);
    assert_eq!(app.metric("connector_attempts", "transient_error"), 2);
    assert_eq!(app.metric("connector_attempts", "succeeded"), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_403_fails_the_task_dead_letters_it_and_flags_the_integration() {
    let mut app = spawn_app().await;
    app.emu.seed_user(BIZ, "dave@example.com", "EMPLOYEE", None).expect("seed");
    app.emu
        .add_fault(unseat_emulator::FaultRule {
            method: Some("DELETE".into()),
            status: Some(403),
            ..Default::default()
        })
        .expect("fault");
    let (user, task) = app.desire("dave@example.com", None, 2, 1, 2).await;
    app.publish(user, task, 2).await;
    app.start_connector();

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts, t.dead_lettered), ("failed", 1, true), "a 403 is never retried");
    let last_error = t.last_error.expect("last_error");
    assert!(last_error.contains("HTTP 403") && last_error.contains("(#200)"), "{last_error}");
    assert!(!last_error.contains(TOKEN));
    assert_eq!(app.event_kinds(task).await, ["attempt_started", "attempt_failed", "failed", "dead_lettered"]);
    assert!(app.hub_user("dave@example.com").is_some(), "dave is still in the hub");
    assert_eq!(app.applied(user).await, (1, Some("EMPLOYEE".into())), "nothing recorded as applied");

    let dead: ConnectorTask = serde_json::from_slice(&app.dead_lettered_message().await).expect("the task message");
    assert_eq!(dead.task_id, task);

    let client = app.store.client().await.expect("client");
    let flag: Option<String> = client
        .query_one(
            "select needs_attention from integrations where tenant_id = $1 and id = $2",
            &[&app.tenant, &app.integration],
        )
        .await
        .expect("integration")
        .get(0);
    let flag = flag.expect("the integration needs attention");
    assert!(flag.contains("403"), "{flag}");
    assert_eq!(app.metric("connector_tasks", "failed"), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_stale_task_is_superseded_without_an_app_call() {
    let mut app = spawn_app().await;
    app.emu.seed_user(BIZ, "erin@example.com", "EMPLOYEE", None).expect("seed");
    // The stored desire is version 3 (keep EMPLOYEE); the task carries version 2 (remove).
    let (user, task) = app.desire("erin@example.com", Some("EMPLOYEE"), 3, 1, 2).await;
    app.publish(user, task, 2).await;
    app.start_connector();

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("superseded", 0));
    assert_eq!(app.event_kinds(task).await, ["superseded"]);
    assert!(app.emu.requests().is_empty(), "no app call at all");
    assert!(app.hub_user("erin@example.com").is_some());
    assert_eq!(app.applied(user).await, (1, Some("EMPLOYEE".into())));
    app.stop().await;
}

#[tokio::test]
async fn a_duplicate_delivery_makes_no_second_app_call() {
    let mut app = spawn_app().await;
    app.emu.seed_user(BIZ, "frank@example.com", "EMPLOYEE", None).expect("seed");
    let (user, task) = app.desire("frank@example.com", None, 2, 1, 2).await;
    app.publish(user, task, 2).await;
    app.publish(user, task, 2).await;
    app.start_connector();

    eventually("both deliveries to be handled", || async {
        (app.metric("connector_tasks", "succeeded") + app.metric("connector_tasks", "duplicate") == 2).then_some(())
    })
    .await;
    let t = app.task(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("succeeded", 1));
    assert_eq!(app.metric("connector_tasks", "duplicate"), 1);
    assert_eq!(app.writes().len(), 1, "one DELETE for two deliveries");
    assert!(app.hub_user("frank@example.com").is_none());
    assert_eq!(app.event_kinds(task).await, ["attempt_started", "succeeded"]);
    app.stop().await;
}

#[tokio::test]
async fn an_unreadable_message_goes_to_the_dead_letter_queue() {
    let mut app = spawn_app().await;
    app.publisher
        .publish(&app.topology.connector_exchange(), "business_hub", "junk-1", b"{\"v\": 99}")
        .await
        .expect("publish");
    app.start_connector();
    assert_eq!(app.dead_lettered_message().await, b"{\"v\": 99}");
    assert!(app.emu.requests().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn invites_someone_the_hub_does_not_have_yet() {
    let mut app = spawn_app().await;
    let (user, task) = app.desire("grace@example.com", Some("EMPLOYEE"), 1, 0, 1).await;
    app.publish(user, task, 1).await;
    app.start_connector();

    let t = app.finished(task).await;
    assert_eq!(t.status, "succeeded");
    let grace = app.hub_user("grace@example.com").expect("grace was invited");
    assert_eq!(grace.role, "EMPLOYEE");
    assert_eq!(app.writes(), [("POST".to_string(), format!("/v25.0/{BIZ}/business_users"), 200)]);
    assert_eq!(app.applied(user).await, (1, Some("EMPLOYEE".into())));
    app.stop().await;
}

#[tokio::test]
async fn a_delete_answered_with_object_not_found_counts_as_already_removed() {
    let mut app = spawn_app().await;
    app.emu.seed_user(BIZ, "heidi@example.com", "EMPLOYEE", None).expect("seed");
    app.emu
        .add_fault(unseat_emulator::FaultRule {
            method: Some("DELETE".into()),
            status: Some(400),
            graph_code: Some(100),
            graph_subcode: Some(33),
            times: Some(1),
            ..Default::default()
        })
        .expect("fault");
    let (user, task) = app.desire("heidi@example.com", None, 2, 1, 2).await;
    app.publish(user, task, 2).await;
    app.start_connector();

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("succeeded", 1));
    assert_eq!(app.event_kinds(task).await, ["attempt_started", "already_removed"]);
    assert_eq!(app.applied(user).await, (2, None));
    app.stop().await;
}

#[tokio::test]
async fn throttling_waits_at_least_as_long_as_retry_after() {
    let mut app = spawn_app().await;
    app.emu.seed_user(BIZ, "ivan@example.com", "EMPLOYEE", None).expect("seed");
    app.emu
        .add_fault(unseat_emulator::FaultRule {
            method: Some("GET".into()),
            status: Some(429),
            retry_after_s: Some(1),
            times: Some(1),
            ..Default::default()
        })
        .expect("fault");
    let (user, task) = app.desire("ivan@example.com", None, 2, 1, 2).await;
    app.publish(user, task, 2).await;
    app.start_connector();

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("succeeded", 2));
    let events = app.events(task).await;
    let failed = events.iter().find(|e| e.0 == "attempt_failed").expect("a failed attempt");
    assert_eq!(failed.2, Some(429));
    assert!(failed.3.contains("code 4"), "{}", failed.3);
    let scheduled = events.iter().find(|e| e.0 == "retry_scheduled").expect("a scheduled retry");
    let wait_ms: u64 =
        scheduled.3.trim_start_matches("retrying in ").trim_end_matches(" ms").parse().expect("the wait in ms");
    assert!(wait_ms >= 1000, "Retry-After: 1 is the minimum wait, got {wait_ms} ms");
    assert!(app.hub_user("ivan@example.com").is_none());
    app.stop().await;
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_dead_letters() {
    let mut app = spawn_app().await;
    app.emu.seed_user(BIZ, "judy@example.com", "EMPLOYEE", None).expect("seed");
    app.emu
        .add_fault(unseat_emulator::FaultRule {
            method: Some("DELETE".into()),
            status: Some(502),
            ..Default::default()
        })
        .expect("fault");
    let (user, task) = app.desire("judy@example.com", None, 2, 1, 2).await;
    app.publish(user, task, 2).await;
    app.start_connector();

    let t = app.finished(task).await;
    let max = ConnectorConfig::default().max_attempts as i32;
    assert_eq!((t.status.as_str(), t.attempts, t.dead_lettered), ("failed", max, true));
    let last_error = t.last_error.expect("last_error");
    assert!(last_error.starts_with(&format!("gave up after {max} attempts")), "{last_error}");
    let kinds = app.event_kinds(task).await;
    assert_eq!(kinds.iter().filter(|k| *k == "attempt_failed").count(), max as usize);
    assert_eq!(kinds.iter().filter(|k| *k == "retry_scheduled").count(), max as usize - 1);
    assert_eq!(kinds[kinds.len() - 2..], ["failed", "dead_lettered"]);
    let dead: ConnectorTask = serde_json::from_slice(&app.dead_lettered_message().await).expect("the task message");
    assert_eq!(dead.task_id, task);
    assert!(app.hub_user("judy@example.com").is_some());
    let client = app.store.client().await.expect("client");
    let flag: Option<String> = client
        .query_one(
            "select needs_attention from integrations where tenant_id = $1 and id = $2",
            &[&app.tenant, &app.integration],
        )
        .await
        .expect("integration")
        .get(0);
    assert_eq!(flag, None, "an outage is not the integration's fault");
    assert!(app.metrics.encode().contains("unseat_connector_retry_wait_seconds_total{app=\"business_hub\"}"));
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_credential_fails_with_code_190_and_never_leaks_the_token() {
    let mut app = spawn_app().await;
    app.emu.require_token(BIZ, "a-different-token").expect("token");
    app.emu.seed_user(BIZ, "ken@example.com", "EMPLOYEE", None).expect("seed");
    let (user, task) = app.desire("ken@example.com", None, 2, 1, 2).await;
    app.publish(user, task, 2).await;
    app.start_connector();

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts, t.dead_lettered), ("failed", 1, true));
    let last_error = t.last_error.expect("last_error");
    assert!(last_error.contains("HTTP 401 (code 190)"), "{last_error}");
    for event in app.events(task).await {
        assert!(!event.3.contains(TOKEN), "{event:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn without_a_database_the_message_is_requeued_until_the_delivery_limit() {
    let mut app = spawn_app().await;
    app.emu.seed_user(BIZ, "liam@example.com", "EMPLOYEE", None).expect("seed");
    let (user, task) = app.desire("liam@example.com", None, 2, 1, 2).await;
    app.publish(user, task, 2).await;
    // Nothing listens on port 1: every store call fails as if the database were down.
    let unreachable = Store::connect("postgres://postgres@127.0.0.1:1/unseat", 2).expect("pool");
    app.start_connector_with(unreachable);

    let dead: ConnectorTask = serde_json::from_slice(&app.dead_lettered_message().await).expect("the task message");
    assert_eq!(dead.task_id, task, "the broker dead-letters it once the delivery limit is reached");
    assert!(app.emu.requests().is_empty(), "no app call without the desired state");
    let t = app.task(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("queued", 0));
    assert!(app.hub_user("liam@example.com").is_some());
    app.stop().await;
}
