//! The shared connector runtime under the faults real apps produce: an outage window of 503s,
//! throttling with Retry-After (short: waited in place; long: parked in the delay queue),
//! an answer lost after the app applied the request, and a per-integration rate limit under a
//! backlog, kept by one connector and by two replicas together. A fresh database, the real
//! RabbitMQ (a unique topology per test) and the emulator on a loopback port (see `common`);
//! each test checks the app's final state, the request log the app saw, and the task log.

mod common;

use chrono::{DateTime, Utc};
use common::{emails, eventually, quick_config, Fixture, Setup};
use serde_json::json;
use std::time::Duration;
use unseat_connector::ConnectorConfig;
use unseat_emulator::{FaultRule, RequestRecord};
use unseat_store::admin;

const BIZ: &str = "4200000002";
const TOKEN: &str = "runtime-credential";

async fn harness(settings: serde_json::Value) -> Fixture {
    Setup::new(BIZ, TOKEN).settings(settings).build().await
}

fn at(r: &RequestRecord) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&r.at).expect("rfc3339").with_timezone(&Utc)
}

fn config() -> ConnectorConfig {
    ConnectorConfig { min_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(2), ..quick_config() }
}

/// How much later than its slot a request may reach the app: the limiter spaces the slots
/// (1/3 s apart at 3 per second), but a request that left a busy machine 20 ms late lands next
/// to the following ones, and a window starting at it then holds one more slot than a second
/// does. Counting over a second less this allowance still catches a limiter that lets through
/// a few percent more than its rate.
const TRANSIT_ALLOWANCE_MS: i64 = 50;

/// The most requests the app saw within any one second (arrival times, sorted), less the
/// transit allowance above.
fn busiest_second(log: &[RequestRecord]) -> usize {
    let mut times: Vec<DateTime<Utc>> = log.iter().map(at).collect();
    times.sort();
    let window = chrono::Duration::milliseconds(1000 - TRANSIT_ALLOWANCE_MS);
    let mut worst = 0;
    for (i, start) in times.iter().enumerate() {
        let within = times[i..].iter().take_while(|t| **t < *start + window).count();
        worst = worst.max(within);
    }
    worst
}

#[tokio::test]
async fn half_the_requests_fail_with_503_for_ten_seconds_and_every_task_still_succeeds() {
    let mut h = harness(json!({ "business_id": BIZ, "rate_limit_per_second": 1000 })).await;
    h.emu
        .add_fault(FaultRule { status: Some(503), probability: Some(0.5), for_ms: Some(10_000), ..Default::default() })
        .expect("fault");
    let tasks = h.removals(&emails("outage", 20), true).await;
    h.start(ConnectorConfig { max_attempts: 30, ..config() });

    assert_eq!(h.all_finished().await, [("succeeded".to_string(), 20)]);
    assert!(h.hub_emails().is_empty(), "everyone was removed: {:?}", h.hub_emails());
    let log = h.emu.requests();
    assert!(log.iter().any(|r| r.status == 503), "the outage was seen");
    // Exactly one effective DELETE per user: retries never removed anyone twice.
    let deleted = log.iter().filter(|r| r.method == "DELETE" && r.status == 200).count();
    assert_eq!(deleted, 20);
    let retried = futures_util::future::join_all(tasks.iter().map(|t| h.event_kinds(*t))).await;
    assert!(retried.iter().any(|k| k.contains(&"retry_scheduled".to_string())), "some task retried");
    assert!(retried.iter().all(|k| k.last().map(String::as_str) == Some("succeeded")));
}

#[tokio::test]
async fn a_429_with_retry_after_2_is_not_retried_sooner() {
    let mut h = harness(json!({ "business_id": BIZ })).await;
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

    assert_eq!(h.all_finished().await, [("succeeded".to_string(), 1)]);
    assert!(h.hub_emails().is_empty());
    let deletes: Vec<RequestRecord> = h.emu.requests().into_iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletes.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    let gap = at(&deletes[1]) - at(&deletes[0]);
    assert!(gap >= chrono::Duration::milliseconds(2000), "the app saw the retry after {gap:?}");
    assert_eq!(
        h.event_kinds(tasks[0]).await,
        ["attempt_started", "attempt_failed", "retry_scheduled", "attempt_started", "succeeded"]
    );
}

/// Meta throttles with HTTP 400, a Graph code and no `Retry-After`. Four throttles in a row
/// outlast an attempt budget of two, and the removal still happens: throttled attempts are
/// not counted, and each wait is at least the throttle wait, doubling.
#[tokio::test]
async fn meta_style_throttling_waits_longer_each_time_and_does_not_spend_the_attempt_budget() {
    let mut h = harness(json!({ "business_id": BIZ, "rate_limit_per_second": 1000 })).await;
    h.emu
        .add_fault(FaultRule {
            method: Some("DELETE".into()),
            status: Some(400),
            graph_code: Some(17),
            times: Some(4),
            ..Default::default()
        })
        .expect("fault");
    let tasks = h.removals(&emails("meta-throttled", 1), true).await;
    let floor = Duration::from_millis(300);
    h.start(ConnectorConfig { max_attempts: 2, throttle_wait: floor, ..config() });

    let t = h.finished(tasks[0]).await;
    assert_eq!((t.status.as_str(), t.attempts, t.dead_lettered), ("succeeded", 5, false), "{:?}", t.last_error);
    assert!(h.hub_emails().is_empty(), "removed: {:?}", h.hub_emails());
    let deletes: Vec<RequestRecord> = h.emu.requests().into_iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletes.iter().map(|r| r.status).collect::<Vec<_>>(), [400, 400, 400, 400, 200]);
    for (n, pair) in deletes.windows(2).enumerate() {
        let gap = (at(&pair[1]) - at(&pair[0])).to_std().unwrap_or_default();
        let least = floor * 2u32.pow(n as u32);
        assert!(gap >= least, "throttle {}: the app saw the retry after {gap:?}, before {least:?}", n + 1);
    }
    let events = h.events(tasks[0]).await;
    let scheduled: Vec<&str> = events.iter().filter(|e| e.0 == "retry_scheduled").map(|e| e.3.as_str()).collect();
    assert_eq!(scheduled.len(), 4);
    assert!(scheduled.iter().all(|d| d.contains("throttled")), "{scheduled:?}");
    assert_eq!(h.metric("connector_attempts", "throttled"), 4);
}

/// A throttle that names a wait pauses the whole integration: no request of any task reaches
/// the app before the wait has passed (every call counts against the app's limit), and then
/// every removal goes through.
#[tokio::test]
async fn a_named_wait_pauses_every_task_of_the_integration() {
    let mut h = harness(json!({ "business_id": BIZ, "rate_limit_per_second": 1000 })).await;
    h.emu
        .add_fault(FaultRule {
            method: Some("DELETE".into()),
            status: Some(429),
            retry_after_s: Some(4),
            times: Some(1),
            ..Default::default()
        })
        .expect("fault");
    h.removals(&emails("paused", 6), true).await;
    // One task at a time: a request already sent when the throttle came back cannot be
    // recalled, and here none is.
    h.start(ConnectorConfig { park_after: Duration::from_secs(1), prefetch: 1, concurrency: 1, ..config() });

    assert_eq!(h.all_finished().await, [("succeeded".to_string(), 6)]);
    assert!(h.hub_emails().is_empty(), "{:?}", h.hub_emails());
    let log = h.emu.requests();
    let throttled = log.iter().find(|r| r.status == 429).expect("the throttle");
    let resume = at(throttled) + chrono::Duration::seconds(4);
    let during: Vec<&RequestRecord> = log.iter().filter(|r| at(r) > at(throttled) && at(r) < resume).collect();
    assert!(during.is_empty(), "requests during the pause: {during:?}");
}

/// A backlog that outlasts the wait a worker holds a task for is parked, and drains: tasks
/// back from the delay queue start in turn at the integration's rate (they used to go to the
/// back of the line again, behind everyone parked after them, for as long as anyone was
/// parked). Each task's log shows its wait.
#[tokio::test]
async fn a_parked_backlog_drains_at_the_integrations_rate() {
    let mut h = harness(json!({ "business_id": BIZ, "rate_limit_per_second": 3 })).await;
    let tasks = h.removals(&emails("backlog", 24), true).await;
    h.start(ConnectorConfig { park_after: Duration::from_secs(1), ..config() });

    assert_eq!(h.all_finished().await, [("succeeded".to_string(), 24)]);
    assert!(h.hub_emails().is_empty(), "{:?}", h.hub_emails());
    assert!(busiest_second(&h.emu.requests()) <= 3, "the rate limit held");
    let kinds = futures_util::future::join_all(tasks.iter().map(|t| h.event_kinds(*t))).await;
    let waited = kinds.iter().filter(|k| k.contains(&"rate_limited".to_string())).count();
    assert!(waited > 0, "the waits are in the log: {kinds:?}");
}

/// A task the app throttles for good is bounded by its age, not by the attempt budget.
#[tokio::test]
async fn a_task_throttled_without_end_fails_when_it_is_too_old() {
    let mut h = harness(json!({ "business_id": BIZ, "rate_limit_per_second": 1000 })).await;
    h.emu
        .add_fault(FaultRule { method: Some("DELETE".into()), status: Some(429), ..Default::default() })
        .expect("fault");
    let tasks = h.removals(&emails("throttled-for-good", 1), true).await;
    h.start(ConnectorConfig {
        max_attempts: 1,
        throttle_wait: Duration::from_millis(200),
        max_task_age: Duration::from_secs(2),
        ..config()
    });

    let t = h.finished(tasks[0]).await;
    assert_eq!((t.status.as_str(), t.dead_lettered), ("failed", true));
    assert!(t.attempts >= 2, "retried past the attempt budget of one: {} attempts", t.attempts);
    let reason = t.last_error.unwrap_or_default();
    assert!(reason.contains("older than"), "{reason}");
    assert_eq!(h.hub_emails().len(), 1, "the person is still in the app, and the log says so");
}

#[tokio::test]
async fn a_long_retry_after_parks_the_task_in_the_delay_queue_and_it_comes_back() {
    let mut h = harness(json!({ "business_id": BIZ })).await;
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

    assert_eq!(h.all_finished().await, [("succeeded".to_string(), 1)]);
    let deletes: Vec<RequestRecord> = h.emu.requests().into_iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletes.iter().map(|r| r.status).collect::<Vec<_>>(), [503, 200]);
    assert!(at(&deletes[1]) - at(&deletes[0]) >= chrono::Duration::milliseconds(3000));
    let events = h.events(tasks[0]).await;
    let scheduled = events.iter().find(|e| e.0 == "retry_scheduled").expect("retry scheduled");
    assert!(scheduled.3.contains("parked in the delay queue"), "{}", scheduled.3);
}

#[tokio::test]
async fn an_applied_delete_whose_answer_is_lost_succeeds_on_retry_without_a_second_effect() {
    let mut h = harness(json!({ "business_id": BIZ })).await;
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

    assert_eq!(h.all_finished().await, [("succeeded".to_string(), 1)]);
    assert_eq!(h.hub_emails(), ["bystander@example.com"]);
    let deletes = h.emu.requests().into_iter().filter(|r| r.method == "DELETE").count();
    assert_eq!(deletes, 1, "the retry found the user gone and deleted nothing more");
    let events = h.events(tasks[0]).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds, ["attempt_started", "attempt_failed", "retry_scheduled", "attempt_started", "already_removed"]);
    assert!(events[1].3.contains("did not answer"), "{}", events[1].3);
}

// Several worker threads, so the emulator answers while the connector sends: on one thread a
// busy moment would queue requests up and let them arrive in a bunch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_tasks_for_one_integration_never_exceed_its_rate_limit() {
    const LIMIT: usize = 50;
    let mut h = harness(json!({ "business_id": BIZ, "rate_limit_per_second": LIMIT })).await;
    h.removals(&emails("bulk", 1000), true).await;
    h.emu.clear_requests();
    h.start(ConnectorConfig { prefetch: 64, concurrency: 64, ..config() });

    assert_eq!(h.all_finished().await, [("succeeded".to_string(), 1000)]);
    assert!(h.hub_emails().is_empty());
    let log = h.emu.requests();
    assert!(log.len() >= 1000, "{} requests", log.len());
    let worst = busiest_second(&log);
    assert!(worst <= LIMIT, "{worst} requests reached the app within one second (limit {LIMIT})");
    h.stop().await;
}

// Two connector runtimes on the same database and queue, as two replicas would run: the
// integration's limit holds for both together, not for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_together_keep_to_the_integrations_rate_limit() {
    const LIMIT: usize = 20;
    let mut h = harness(json!({ "business_id": BIZ, "rate_limit_per_second": LIMIT })).await;
    h.removals(&emails("replicas", 200), true).await;
    h.emu.clear_requests();
    let one = h.start_replica(ConnectorConfig { prefetch: 32, concurrency: 32, ..config() });
    let two = h.start_replica(ConnectorConfig { prefetch: 32, concurrency: 32, ..config() });

    assert_eq!(h.all_finished().await, [("succeeded".to_string(), 200)]);
    assert!(h.hub_emails().is_empty());
    let log = h.emu.requests();
    assert_eq!(log.iter().filter(|r| r.method == "DELETE" && r.status == 200).count(), 200);
    let worst = busiest_second(&log);
    assert!(worst <= LIMIT, "{worst} requests reached the app within one second (limit {LIMIT})");
    // Both replicas worked: each finished part of the backlog.
    let succeeded = |m: &unseat_telemetry::Metrics| {
        m.encode()
            .lines()
            .filter(|l| l.starts_with("unseat_connector_tasks_total{") && l.contains("result=\"succeeded\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let (a, b) = (succeeded(&one), succeeded(&two));
    assert!(a > 0 && b > 0 && a + b == 200, "replica one finished {a}, replica two {b}");
    let client = h.store.client().await.expect("client");
    let schedules: i64 = client
        .query_one("select count(*) from rate_limit_schedules where integration_id = $1", &[&h.integration])
        .await
        .expect("schedules")
        .get(0);
    assert_eq!(schedules, 1, "the replicas leased their slots from one shared schedule");
    h.stop().await;
}

/// The hub reports the share of its hourly budget used on every answer: once it reaches 90%,
/// the integration's rate is lowered before the hub has to throttle.
#[tokio::test]
async fn a_budget_reported_nearly_used_lowers_the_rate_before_the_app_throttles() {
    let mut h = harness(json!({ "business_id": BIZ, "rate_limit_per_second": 1000 })).await;
    h.emu.set_settings(unseat_emulator::Settings { hourly_call_budget: Some(10), ..h.emu.settings() });
    // Nine removals by remembered id: one DELETE each, the ninth answered at 90%.
    h.removals(&emails("budget", 9), true).await;
    h.start(ConnectorConfig { prefetch: 1, concurrency: 1, ..config() });

    assert_eq!(h.all_finished().await, [("succeeded".to_string(), 9)]);
    let log = h.emu.requests();
    assert_eq!(log.len(), 9, "one call each: {log:?}");
    assert!(log.iter().all(|r| r.status == 200), "nothing throttled yet: {log:?}");
    let client = h.store.client().await.expect("client");
    let rate: f64 = client
        .query_one(
            "select rate from rate_limit_schedules where tenant_id = $1 and integration_id = $2",
            &[&h.tenant, &h.integration],
        )
        .await
        .expect("the integration's schedule")
        .get(0);
    assert!(rate <= 500.0, "the rate was lowered at 90% of the budget: {rate}");
}

/// A pool exports its task and attempt counters from zero as it starts: an alert on
/// `increase(…{result="failed"})` then sees the first failure after a start, which a series
/// born at 1 would hide.
#[tokio::test]
async fn a_pool_exports_its_counters_from_zero() {
    let mut h = harness(json!({ "business_id": BIZ })).await;
    h.start(config());
    let text = common::eventually("the pool's counters", || async {
        let text = h.metrics.encode();
        text.contains(r#"unseat_connector_tasks_total{app="business_hub",result="failed"} 0"#).then_some(text)
    })
    .await;
    for result in ["succeeded", "transient_error", "throttled", "permanent_error", "needs_attention", "rate_limited"] {
        let line = format!(r#"unseat_connector_attempts_total{{app="business_hub",result="{result}"}} 0"#);
        assert!(text.contains(&line), "{line} in {text}");
    }
}

#[tokio::test]
async fn a_task_of_a_deleted_integration_is_superseded_without_an_app_call() {
    let mut h = harness(json!({ "business_id": BIZ })).await;
    let tasks = h.removals(&emails("deleted-integration", 1), true).await;
    // Deleted between the resolver's decision and the connector's turn.
    h.store
        .client()
        .await
        .expect("client")
        .execute("delete from integrations where tenant_id = $1 and id = $2", &[&h.tenant, &h.integration])
        .await
        .expect("delete the integration");
    h.start(config());

    let t = h.finished(tasks[0]).await;
    assert_eq!((t.status.as_str(), t.dead_lettered), ("superseded", false), "{t:?}");
    let events = h.events(tasks[0]).await;
    assert!(events.iter().any(|e| e.0 == "superseded" && e.3.contains("integration no longer exists")), "{events:?}");
    assert!(h.writes().is_empty(), "no app call");
    assert_eq!(h.hub_emails().len(), 1, "whoever is in the app stays");
    assert_eq!(h.dead_letter_count().await, 0);
    assert_eq!(h.metric("connector_tasks", "superseded"), 1);
}

#[tokio::test]
async fn a_task_retrying_when_its_integration_is_deleted_stays_superseded() {
    let mut h = harness(json!({ "business_id": BIZ })).await;
    h.emu
        .add_fault(FaultRule { method: Some("DELETE".into()), status: Some(503), ..Default::default() })
        .expect("fault");
    let tasks = h.removals(&emails("retrying-when-deleted", 1), true).await;
    h.start(ConnectorConfig { max_attempts: 50, ..config() });
    eventually("the removal to be retrying", || async {
        let t = h.task(tasks[0]).await;
        (t.status == "retrying" && t.attempts >= 2).then_some(())
    })
    .await;
    let deleted =
        h.store.delete_integration(h.tenant, h.integration, "the operator").await.expect("delete").expect("it existed");
    assert_eq!(deleted.tasks_superseded, 1);

    // The delivery still retrying finds the task ended and leaves it so, without an app call.
    let deletes = || h.emu.requests().iter().filter(|r| r.method == "DELETE").count();
    let after_delete = deletes();
    let done =
        eventually("the delivery to end", || async { (h.metric("connector_tasks", "superseded") == 1).then_some(()) });
    done.await;
    let t = h.task(tasks[0]).await;
    assert_eq!((t.status.as_str(), t.dead_lettered), ("superseded", false), "{t:?}");
    assert_eq!(h.metric("connector_tasks", "failed"), 0);
    assert_eq!(h.dead_letter_count().await, 0);
    assert!(deletes() <= after_delete + 1, "at most the call in flight at the deletion");
    let kinds = h.event_kinds(tasks[0]).await;
    assert_eq!(kinds.last().map(String::as_str), Some("superseded"), "{kinds:?}");
}

#[tokio::test]
async fn the_dead_letter_copy_of_a_deleted_integrations_failed_task_is_swept_away() {
    let mut h = harness(json!({ "business_id": BIZ })).await;
    h.emu
        .add_fault(FaultRule { method: Some("DELETE".into()), status: Some(403), ..Default::default() })
        .expect("fault");
    let tasks = h.removals(&emails("failed-then-deleted", 1), true).await;
    h.start(ConnectorConfig { dead_letter_sweep: Duration::from_secs(1), ..config() });
    let t = h.finished(tasks[0]).await;
    assert_eq!((t.status.as_str(), t.dead_lettered), ("failed", true), "{t:?}");
    eventually("the copy in the dead-letter queue", || async { (h.dead_letter_count().await == 1).then_some(()) })
        .await;

    h.store.delete_integration(h.tenant, h.integration, "the operator").await.expect("delete").expect("it existed");
    // No re-drive asks for a sweep: the periodic one finds the task superseded.
    eventually("the dead-letter queue to be empty", || async { (h.dead_letter_count().await == 0).then_some(()) })
        .await;
    assert_eq!(h.task(tasks[0]).await.status, "superseded");
}

#[tokio::test]
async fn a_paused_integrations_tasks_wait_without_an_app_call_until_it_is_resumed() {
    let mut h = harness(json!({ "business_id": BIZ })).await;
    let (store, tenant, integration) = (h.store.clone(), h.tenant, h.integration);
    let set_paused = |paused: bool| {
        let store = store.clone();
        async move {
            store
                .client()
                .await
                .expect("client")
                .execute(
                    "update integrations set paused_at = case when $3 then now() end where tenant_id = $1 and id = $2",
                    &[&tenant, &integration, &paused],
                )
                .await
                .expect("pause");
        }
    };
    set_paused(true).await;
    let tasks = h.removals(&emails("paused", 2), true).await;
    h.start(ConnectorConfig { paused_recheck: Duration::from_millis(300), ..config() });

    // Looked at three times each at least, and never called.
    eventually("the tasks to look again while paused", || async {
        (h.metric("connector_attempts", "paused") >= 6).then_some(())
    })
    .await;
    assert!(h.emu.requests().is_empty(), "an app call while paused: {:?}", h.emu.requests());
    for t in &tasks {
        assert_eq!(h.task(*t).await.status, "queued");
        let kinds = h.event_kinds(*t).await;
        assert_eq!(kinds.iter().filter(|k| *k == "paused").count(), 1, "said once: {kinds:?}");
    }
    assert_eq!(h.hub_emails().len(), 2);

    set_paused(false).await;
    assert_eq!(h.all_finished().await, [("succeeded".to_string(), 2)]);
    assert!(h.hub_emails().is_empty());
}

/// A pause longer than a task may live does not fail the tasks it held: their age leaves the
/// paused time out once the integration is resumed the way an admin does it.
#[tokio::test]
async fn a_pause_longer_than_a_tasks_age_limit_does_not_fail_its_tasks() {
    let mut h = harness(json!({ "business_id": BIZ })).await;
    let (store, tenant, integration) = (h.store.clone(), h.tenant, h.integration);
    let change = |paused: bool| {
        let store = store.clone();
        async move {
            let mut client = store.client().await.expect("client");
            let tx = client.transaction().await.expect("transaction");
            admin::integration_for_update(&tx, tenant, integration).await.expect("lock").expect("integration");
            let change = admin::Connection { paused: Some(paused), ..Default::default() };
            admin::update_connection(&tx, tenant, integration, &change).await.expect("pause or resume");
            tx.commit().await.expect("commit");
        }
    };
    change(true).await;
    let tasks = h.removals(&emails("long-pause", 2), true).await;
    h.start(ConnectorConfig {
        paused_recheck: Duration::from_millis(300),
        max_task_age: Duration::from_secs(2),
        ..config()
    });
    eventually("the tasks to wait while paused", || async {
        (h.metric("connector_attempts", "paused") >= 2).then_some(())
    })
    .await;
    // Paused for longer than a task may live.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(h.emu.requests().is_empty(), "an app call while paused: {:?}", h.emu.requests());

    change(false).await;
    assert_eq!(h.all_finished().await, [("succeeded".to_string(), 2)]);
    for t in &tasks {
        let kinds = h.event_kinds(*t).await;
        assert!(kinds.contains(&"paused".to_string()) && !kinds.contains(&"failed".to_string()), "{kinds:?}");
    }
    assert!(h.hub_emails().is_empty(), "both removed from the app");
}

/// An app that stops answering holds back its own tasks, not the other integrations of its app
/// kind: once its attempts failed a few times in a row, one of its tasks at a time calls it and
/// the others wait parked, so the pool's slots stay free for everyone else. When it answers
/// again, the tasks held back go through.
#[tokio::test]
async fn an_app_that_stops_answering_holds_back_its_own_tasks_not_the_other_integrations() {
    const OTHER: &str = "4200000077";
    let mut h = harness(json!({ "business_id": BIZ, "rate_limit_per_second": 1000 })).await;
    // Every request to the first business is answered long after the connector gave up on it.
    h.emu
        .add_fault(FaultRule { path_contains: Some(BIZ.into()), latency_ms: Some(2_000), ..Default::default() })
        .expect("fault");
    let down = h.removals(&emails("down", 30), false).await;
    let down_integration = h.switch_to_another_business(OTHER, "other-credential").await;
    let up = h.removals(&emails("up", 5), false).await;
    let timeout = Duration::from_millis(500);
    h.start(ConnectorConfig {
        prefetch: 4,
        concurrency: 4,
        request_timeout: timeout,
        hold_back_after: 3,
        max_attempts: 100,
        ..config()
    });

    // The other business's users are removed while the first one's tasks are still open.
    for task in &up {
        eventually("the other integration's removal", || async {
            (h.task(*task).await.status == "succeeded").then_some(())
        })
        .await;
    }
    assert!(h.hub_emails().is_empty(), "removed from the answering business: {:?}", h.hub_emails());
    let open: i64 = {
        let client = h.store.client().await.expect("client");
        client
            .query_one(
                "select count(*) from tasks
                  where tenant_id = $1 and integration_id = $2 and status not in ('succeeded', 'failed', 'superseded')",
                &[&h.tenant, &down_integration],
            )
            .await
            .expect("tasks")
            .get(0)
    };
    assert_eq!(open, 30, "every task of the silent app is still waiting");
    let held = h
        .metrics
        .encode()
        .lines()
        .any(|l| l.starts_with("unseat_connector_integrations_held_back{") && l.ends_with(" 1"));
    assert!(held, "the pool exports the integration it holds back");
    let other_done = h
        .emu
        .requests()
        .iter()
        .filter(|r| r.path.contains(OTHER))
        .map(at)
        .max()
        .expect("the other business was called");

    h.emu.clear_faults();
    h.integration = down_integration;
    h.business = BIZ;
    assert_eq!(h.all_finished().await, [("succeeded".to_string(), 35)]);
    assert!(h.hub_emails().is_empty(), "removed from the business once it answered: {:?}", h.hub_emails());

    // What the silent app saw: the pool's first few calls at once, then one at a time (each
    // starting after the one before timed out), and few calls in all while the other
    // integration's tasks ran; without the hold every one of its 30 tasks would have called it
    // first, and each again and again.
    let mut silent: Vec<DateTime<Utc>> =
        h.emu.requests().iter().filter(|r| r.path.contains(BIZ) && r.status != 200).map(at).collect();
    silent.sort();
    let before_other_done = silent.iter().filter(|t| **t < other_done).count();
    assert!(
        before_other_done < 20,
        "{before_other_done} calls to the silent app before the other integration was done"
    );
    // A probe starts once the one before timed out, so two arrive at least a timeout apart less
    // the first one's way to the app; calls made together arrive milliseconds apart. Half a
    // timeout tells the two apart with room for a slow machine.
    let one_at_a_time = chrono::Duration::from_std(timeout / 2).expect("timeout");
    // Arrival order may swap a call started just before the hold with the first probe.
    let before_the_hold = 2 + 4 + 1;
    for pair in silent.windows(2).skip(before_the_hold) {
        assert!(pair[1] - pair[0] >= one_at_a_time, "two calls to the silent app at once after the hold: {silent:?}");
    }
    let kinds = futures_util::future::join_all(down.iter().map(|t| h.event_kinds(*t))).await;
    let held_back = kinds.iter().filter(|k| k.contains(&"held_back".to_string())).count();
    assert!(held_back > 20, "most of the silent app's tasks say they were held back ({held_back})");
    for k in &kinds {
        assert!(k.iter().filter(|e| *e == "held_back").count() <= 1, "said once per hold: {k:?}");
        assert_eq!(k.last().map(String::as_str), Some("succeeded"), "{k:?}");
    }
}
