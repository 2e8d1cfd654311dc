//! The shared connector runtime under the faults real apps produce: an outage window of 503s,
//! throttling with Retry-After (short: waited in place; long: parked in the delay queue),
//! an answer lost after the app applied the request, and a per-integration rate limit under a
//! backlog. A fresh database, the real RabbitMQ (a unique topology per test) and the emulator
//! on a loopback port; each test checks the app's final state, the request log the app saw,
//! and the task log.

use chrono::{DateTime, Utc};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use unseat_bus::messages::{ConnectorTask, MESSAGE_VERSION};
use unseat_bus::{Publisher, Topology};
use unseat_connector::ConnectorConfig;
use unseat_emulator::{Emulator, FaultRule, RequestRecord};
use unseat_store::Store;
use unseat_telemetry::Metrics;
use uuid::Uuid;

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const BIZ: &str = "4200000002";
const TOKEN: &str = "runtime-credential";
/// Upper bound for anything the tests wait on; a bound, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(90);

struct Harness {
    store: Store,
    emu: Emulator,
    topology: Topology,
    tenant: Uuid,
    integration: Uuid,
    job: Uuid,
    publisher: Publisher,
    _conn: lapin::Connection,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn harness(settings: serde_json::Value) -> Harness {
    let (_url, store) = unseat_store::testing::fresh_database().await.expect("fresh database");
    let emu = Emulator::new();
    let base_url = unseat_emulator::serve_local(emu.clone()).await.expect("emulator");
    emu.require_token(BIZ, TOKEN).expect("token");
    emu.seed_user(BIZ, "owner@example.com", "ADMIN", None).expect("owner");
    let (tenant, integration, job) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let client = store.client().await.expect("client");
    client.execute("insert into tenants (id, name) values ($1, 'Acme')", &[&tenant]).await.expect("tenant");
    let roles = vec!["ADMIN".to_string(), "EMPLOYEE".to_string()];
    client
        .execute(
            "insert into integrations (tenant_id, id, name, app_kind, base_url, settings, credential, roles)
             values ($1, $2, 'Acme Hub', 'business_hub', $3, $4, $5, $6)",
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
    let topology = Topology::new(format!("t{}", Uuid::new_v4().simple()), vec!["business_hub".into()]);
    let conn = unseat_bus::connect(AMQP, "runtime-test").await.expect("amqp");
    let channel = conn.create_channel().await.expect("channel");
    topology.declare(&channel).await.expect("declare");
    let publisher = Publisher::new(&conn).await.expect("publisher");
    Harness {
        store,
        emu,
        topology,
        tenant,
        integration,
        job,
        publisher,
        _conn: conn,
        shutdown: CancellationToken::new(),
    }
}

impl Harness {
    fn start(&self, config: ConnectorConfig) {
        tokio::spawn(unseat_connector::run(
            self.store.clone(),
            AMQP.to_string(),
            self.topology.clone(),
            Arc::new(Metrics::new()),
            config,
            self.shutdown.clone(),
        ));
    }

    /// Seeds `emails` in the hub (EMPLOYEE) and stores a removal for each, with the hub's id
    /// remembered when `remember` (as after an earlier task); publishes one task each.
    async fn removals(&self, emails: &[String], remember: bool) -> Vec<Uuid> {
        let mut ids = Vec::new();
        let client = self.store.client().await.expect("client");
        for email in emails {
            let hub_id = self.emu.seed_user(BIZ, email, "EMPLOYEE", None).expect("seed").id;
            let (user, task) = (Uuid::new_v4(), Uuid::new_v4());
            let known = remember.then_some(hub_id);
            client
                .execute(
                    "insert into access_state (tenant_id, integration_id, user_id, email, desired_role, desired_version,
                                               applied_version, applied_role, app_account_id)
                     values ($1, $2, $3, $4, null, 2, 1, 'EMPLOYEE', $5)",
                    &[&self.tenant, &self.integration, &user, &email, &known],
                )
                .await
                .expect("access_state");
            client
                .execute(
                    "insert into tasks (tenant_id, id, job_id, integration_id, user_id, user_email, outcome, from_role,
                                        reason, desired_version, status)
                     values ($1, $2, $3, $4, $5, $6, 'remove', 'EMPLOYEE', 'test', 2, 'queued')",
                    &[&self.tenant, &task, &self.job, &self.integration, &user, &email],
                )
                .await
                .expect("task");
            let message = ConnectorTask {
                v: MESSAGE_VERSION,
                message_id: Uuid::new_v4(),
                tenant_id: self.tenant,
                job_id: self.job,
                task_id: task,
                integration_id: self.integration,
                user_id: user,
                app_kind: "business_hub".into(),
                desired_version: 2,
            };
            let payload = serde_json::to_vec(&message).expect("json");
            self.publisher
                .publish(&self.topology.connector_exchange(), "business_hub", &message.message_id.to_string(), &payload)
                .await
                .expect("publish");
            ids.push(task);
        }
        ids
    }

    /// Waits until no task is open; returns (status, count).
    async fn finished(&self) -> Vec<(String, i64)> {
        eventually("every task to finish", || async {
            let client = self.store.client().await.expect("client");
            let rows = client
                .query(
                    "select status, count(*) from tasks where tenant_id = $1 group by status order by 1",
                    &[&self.tenant],
                )
                .await
                .expect("tasks");
            let counts: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            counts.iter().all(|(s, _)| !matches!(s.as_str(), "queued" | "running" | "retrying")).then_some(counts)
        })
        .await
    }

    async fn kinds(&self, task: Uuid) -> Vec<String> {
        self.store.connector_task_events(self.tenant, task).await.expect("events").into_iter().map(|e| e.0).collect()
    }

    fn hub_emails(&self) -> Vec<String> {
        self.emu.users(BIZ).into_iter().map(|u| u.email).filter(|e| e != "owner@example.com").collect()
    }
}

fn at(r: &RequestRecord) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&r.at).expect("rfc3339").with_timezone(&Utc)
}

fn emails(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}@example.com")).collect()
}

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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config() -> ConnectorConfig {
    ConnectorConfig {
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        grace: Duration::from_secs(2),
        ..ConnectorConfig::default()
    }
}

#[tokio::test]
async fn half_the_requests_fail_with_503_for_ten_seconds_and_every_task_still_succeeds() {
    let h = harness(json!({ "business_id": BIZ, "rate_limit_per_second": 1000 })).await;
    h.emu
        .add_fault(FaultRule { status: Some(503), probability: Some(0.5), for_ms: Some(10_000), ..Default::default() })
        .expect("fault");
    let tasks = h.removals(&emails("outage", 20), true).await;
    h.start(ConnectorConfig { max_attempts: 30, ..config() });

    assert_eq!(h.finished().await, [("succeeded".to_string(), 20)]);
    assert!(h.hub_emails().is_empty(), "everyone was removed: {:?}", h.hub_emails());
    let log = h.emu.requests();
    assert!(log.iter().any(|r| r.status == 503), "the outage was seen");
    // Exactly one effective DELETE per user: retries never removed anyone twice.
    let deleted = log.iter().filter(|r| r.method == "DELETE" && r.status == 200).count();
    assert_eq!(deleted, 20);
    let retried = futures_util::future::join_all(tasks.iter().map(|t| h.kinds(*t))).await;
    assert!(retried.iter().any(|k| k.contains(&"retry_scheduled".to_string())), "some task retried");
    assert!(retried.iter().all(|k| k.last().map(String::as_str) == Some("succeeded")));
}

#[tokio::test]
async fn a_429_with_retry_after_2_is_not_retried_sooner() {
    let h = harness(json!({ "business_id": BIZ })).await;
    h.emu
        .add_fault(FaultRule {
            method: Some("DELETE".into()),
            status: Some(429),
            retry_after_s: Some(2),
            times: Some(1),
            ..Default::default()
        })
        .expect("fault");
    let tasks = h.removals(&emails("throttled", 1), true).await;
    h.start(config());

    assert_eq!(h.finished().await, [("succeeded".to_string(), 1)]);
    assert!(h.hub_emails().is_empty());
    let deletes: Vec<RequestRecord> = h.emu.requests().into_iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletes.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    let gap = at(&deletes[1]) - at(&deletes[0]);
    assert!(gap >= chrono::Duration::milliseconds(2000), "the app saw the retry after {gap:?}");
    assert_eq!(
        h.kinds(tasks[0]).await,
        ["attempt_started", "attempt_failed", "retry_scheduled", "attempt_started", "succeeded"]
    );
}

#[tokio::test]
async fn a_long_retry_after_parks_the_task_in_the_delay_queue_and_it_comes_back() {
    let h = harness(json!({ "business_id": BIZ })).await;
    h.emu
        .add_fault(FaultRule {
            method: Some("DELETE".into()),
            status: Some(503),
            retry_after_s: Some(3),
            times: Some(1),
            ..Default::default()
        })
        .expect("fault");
    let tasks = h.removals(&emails("parked", 1), true).await;
    // Waits over 1 s leave the worker: prefetch 1 proves the slot was free meanwhile.
    h.start(ConnectorConfig { park_after: Duration::from_secs(1), prefetch: 1, concurrency: 1, ..config() });

    assert_eq!(h.finished().await, [("succeeded".to_string(), 1)]);
    let deletes: Vec<RequestRecord> = h.emu.requests().into_iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletes.iter().map(|r| r.status).collect::<Vec<_>>(), [503, 200]);
    assert!(at(&deletes[1]) - at(&deletes[0]) >= chrono::Duration::milliseconds(3000));
    let events = h.store.connector_task_events(h.tenant, tasks[0]).await.expect("events");
    let scheduled = events.iter().find(|e| e.0 == "retry_scheduled").expect("retry scheduled");
    assert!(scheduled.3.contains("parked in the delay queue"), "{}", scheduled.3);
}

#[tokio::test]
async fn an_applied_delete_whose_answer_is_lost_succeeds_on_retry_without_a_second_effect() {
    let h = harness(json!({ "business_id": BIZ })).await;
    h.emu
        .add_fault(FaultRule {
            method: Some("DELETE".into()),
            lose_response: true,
            hold_ms: Some(3_000),
            times: Some(1),
            ..Default::default()
        })
        .expect("fault");
    let tasks = h.removals(&emails("lost", 1), false).await;
    h.emu.seed_user(BIZ, "bystander@example.com", "EMPLOYEE", None).expect("bystander");
    h.start(ConnectorConfig { request_timeout: Duration::from_millis(700), ..config() });

    assert_eq!(h.finished().await, [("succeeded".to_string(), 1)]);
    assert_eq!(h.hub_emails(), ["bystander@example.com"]);
    let deletes = h.emu.requests().into_iter().filter(|r| r.method == "DELETE").count();
    assert_eq!(deletes, 1, "the retry found the user gone and deleted nothing more");
    let events = h.store.connector_task_events(h.tenant, tasks[0]).await.expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds, ["attempt_started", "attempt_failed", "retry_scheduled", "attempt_started", "already_removed"]);
    assert!(events[1].3.contains("did not answer"), "{}", events[1].3);
}

// Several worker threads, so the emulator answers while the connector sends: on one thread a
// busy moment would queue requests up and let them arrive in a bunch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_tasks_for_one_integration_never_exceed_its_rate_limit() {
    const LIMIT: usize = 50;
    let h = harness(json!({ "business_id": BIZ, "rate_limit_per_second": LIMIT })).await;
    h.removals(&emails("bulk", 1000), true).await;
    h.emu.clear_requests();
    h.start(ConnectorConfig { prefetch: 64, concurrency: 64, ..config() });

    assert_eq!(h.finished().await, [("succeeded".to_string(), 1000)]);
    assert!(h.hub_emails().is_empty());
    let mut times: Vec<DateTime<Utc>> = h.emu.requests().iter().map(at).collect();
    times.sort();
    assert!(times.len() >= 1000, "{} requests", times.len());
    let mut worst = 0;
    for (i, start) in times.iter().enumerate() {
        let within = times[i..].iter().take_while(|t| **t < *start + chrono::Duration::seconds(1)).count();
        worst = worst.max(within);
    }
    assert!(worst <= LIMIT, "{worst} requests reached the app within one second (limit {LIMIT})");
}
