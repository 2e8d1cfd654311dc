//! Delivery guarantees end to end: duplicates and stale tasks change nothing; transient app
//! failures are retried with every attempt logged; permanent ones fail, are dead-lettered and
//! explained.

use std::time::Duration;

use serde_json::{json, Value};
use unseat_tests::{amqp_url, dead_lettered, spawn_app, TestApp};

async fn metric(app: &TestApp, name_and_labels: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", app.base)).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_metric(app: &TestApp, name_and_labels: &str, at_least: f64) {
    for _ in 0..300 {
        if metric(app, name_and_labels).await >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name_and_labels} never reached {at_least}");
}

/// Publishes a payload straight to the broker, as a redelivery would.
async fn republish(exchange: &str, key: &str, payload: &Value) {
    let conn = unseat_bus::connect(&amqp_url(), "test").await.unwrap();
    let publisher = unseat_bus::Publisher::new(&conn).await.unwrap();
    let body = serde_json::to_vec(payload).unwrap();
    publisher.publish(exchange, key, "replay", &body).await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
}

async fn outbox_payloads(app: &TestApp, exchange: &str) -> Vec<Value> {
    let client = app.store.client().await.unwrap();
    client
        .query(
            "select m::jsonb from outbox, unnest(coalesce(payloads, array[payload::text])) with ordinality as t(m, n)
              where tenant_id = $1 and exchange = $2 order by id, n",
            &[&app.tenant, &exchange],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn the_same_directory_message_twice_changes_nothing() {
    let app = spawn_app().await;
    let alice = app.person("alice@example.com", "ADMIN").await;
    let team = app.team("Admins", &[alice], "ADMIN").await;
    app.settle(1).await;
    app.scim.remove_member(team, alice).await.unwrap();
    let tasks = app.settle(2).await;
    let requests = app.emulator.requests().await.unwrap().len();
    let topology = app.settings.topology();
    let removal = outbox_payloads(&app, &topology.directory_exchange())
        .await
        .into_iter()
        .find(|p| p["message_id"] == json!(tasks[1].job_id))
        .expect("the removal's directory message");

    republish(&topology.directory_exchange(), unseat_bus::DIRECTORY_ROUTING_KEY, &removal).await;
    wait_metric(&app, "unseat_resolver_messages_total{outcome=\"duplicate\"}", 1.0).await;
    let after = app.settle(2).await;
    assert_eq!(after.len(), tasks.len(), "no new task");
    assert_eq!(app.emulator.requests().await.unwrap().len(), requests, "no new app call");
    assert!(app.app_users().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_task_older_than_the_stored_version_does_nothing() {
    let app = spawn_app().await;
    let alice = app.person("alice@example.com", "ADMIN").await;
    let team = app.team("Admins", &[alice], "ADMIN").await;
    app.settle(1).await;
    app.scim.remove_member(team, alice).await.unwrap();
    app.settle(2).await;
    app.scim.add_member(team, alice).await.unwrap();
    let tasks = app.settle(3).await;
    assert_eq!(tasks[2].outcome, "grant");
    assert_eq!(app.app_users().await, vec![("alice@example.com".to_string(), "ADMIN".to_string())]);

    // Replay the removal's connector task (version 2) after the re-grant (version 3).
    let topology = app.settings.topology();
    let stale = outbox_payloads(&app, &topology.connector_exchange())
        .await
        .into_iter()
        .find(|p| p["task_id"] == json!(tasks[1].id))
        .expect("the removal's connector task");
    assert_eq!(stale["desired_version"], 2);
    let requests = app.emulator.requests().await.unwrap().len();
    republish(&topology.connector_exchange(), "business_hub", &stale).await;
    wait_metric(&app, "unseat_connector_tasks_total{app=\"business_hub\",result=\"superseded\"}", 1.0).await;

    assert_eq!(app.emulator.requests().await.unwrap().len(), requests, "no app call");
    assert_eq!(app.app_users().await, vec![("alice@example.com".to_string(), "ADMIN".to_string())]);
    let after = app.settle(3).await;
    assert_eq!(after[1].status, "succeeded", "the finished task keeps its history");
    app.stop().await;
}

#[tokio::test]
async fn transient_failures_are_retried_and_every_attempt_is_logged() {
    let app = spawn_app().await;
    let alice = app.person("alice@example.com", "ADMIN").await;
    app.team("Admins", &[alice], "ADMIN").await;
    app.settle(1).await;
    app.emulator.fault(json!({"method": "DELETE", "status": 503, "times": 2})).await.unwrap();
    app.scim.deactivate(alice).await.unwrap();
    let tasks = app.settle(2).await;
    let t = &tasks[1];
    assert_eq!((t.outcome.as_str(), t.status.as_str(), t.attempts), ("remove", "succeeded", 3), "{t:?}");
    assert!(app.app_users().await.is_empty());

    let detail = app.admin_get(&format!("/api/v1/tenants/{}/tasks/{}", app.tenant, t.id)).await;
    let events = detail["events"].as_array().expect("events");
    let failed: Vec<&Value> = events.iter().filter(|e| e["kind"] == "attempt_failed").collect();
    assert_eq!(failed.len(), 2, "{detail:#}");
    assert!(failed.iter().all(|e| e["status_code"] == 503), "{detail:#}");
    assert_eq!(events.iter().filter(|e| e["kind"] == "retry_scheduled").count(), 2, "{detail:#}");
    app.stop().await;
}

#[tokio::test]
async fn a_permanent_failure_is_failed_dead_lettered_and_explained() {
    let app = spawn_app().await;
    let alice = app.person("alice@example.com", "ADMIN").await;
    app.team("Admins", &[alice], "ADMIN").await;
    app.settle(1).await;
    app.emulator.fault(json!({"method": "DELETE", "status": 403})).await.unwrap();
    app.scim.deactivate(alice).await.unwrap();
    let tasks = app.settle(2).await;
    let t = &tasks[1];
    assert_eq!((t.status.as_str(), t.attempts, t.dead_lettered), ("failed", 1, true), "{t:?}");
    let error = t.last_error.clone().unwrap_or_default();
    assert!(error.contains("403"), "last error names the refusal: {error}");
    // Still in the app: nothing pretended to succeed.
    assert_eq!(app.app_users().await, vec![("alice@example.com".to_string(), "ADMIN".to_string())]);

    // The message sits in the dead-letter queue.
    let queue = app.settings.topology().connector_queue("business_hub");
    let got = dead_lettered(&queue).await.expect("a dead-lettered message");
    let body: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(body["task_id"], json!(t.id));

    // The log says why, through the admin API.
    let detail = app.admin_get(&format!("/api/v1/tenants/{}/tasks/{}", app.tenant, t.id)).await;
    assert_eq!(detail["task"]["status"], "failed");
    assert!(detail["task"]["last_error"].as_str().unwrap_or_default().contains("403"), "{detail:#}");
    let integration = app.admin_get(&format!("/api/v1/tenants/{}/integrations/{}", app.tenant, app.integration)).await;
    assert!(!integration["needs_attention"].is_null(), "the integration is flagged: {integration}");
    app.stop().await;
}

#[tokio::test]
async fn a_directory_message_of_a_version_this_build_does_not_know_is_kept_and_changes_nothing() {
    let app = spawn_app().await;
    let alice = app.person("alice@example.com", "ADMIN").await;
    app.team("Admins", &[alice], "ADMIN").await;
    let tasks = app.settle(1).await;
    // Alice is deactivated without a message of this version saying so; one of another version
    // claims it. Were it handled anyway, she would be removed from the app.
    let client = app.store.client().await.unwrap();
    client.execute("update scim_users set active = false where id = $1", &[&alice]).await.unwrap();
    let topology = app.settings.topology();
    let mut message =
        outbox_payloads(&app, &topology.directory_exchange()).await.pop().expect("a directory message to copy");
    let message_id = uuid::Uuid::new_v4();
    message["v"] = json!(2);
    message["message_id"] = json!(message_id);
    message["users"] = json!([alice]);
    republish(&topology.directory_exchange(), unseat_bus::DIRECTORY_ROUTING_KEY, &message).await;
    wait_metric(&app, "unseat_resolver_messages_total{outcome=\"rejected\"}", 1.0).await;

    // Kept for a person in the resolver's dead-letter queue, as it came.
    let kept = dead_lettered(&topology.resolver_queue()).await.expect("the message in the dead-letter queue");
    assert_eq!(serde_json::from_slice::<Value>(&kept).unwrap(), message);

    // Nothing was decided or carried out on its account.
    let after = app.settle(1).await;
    assert_eq!(after.len(), tasks.len(), "no new task");
    assert!(after.iter().all(|t| t.job_id != message_id), "no job for it: {after:?}");
    assert_eq!(app.app_users().await, vec![("alice@example.com".to_string(), "ADMIN".to_string())]);
    app.stop().await;
}
