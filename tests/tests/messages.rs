//! The messages that really cross RabbitMQ match their JSON Schemas in `schemas/messages/`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use unseat_bus::messages::DIRECTORY_CHANGES_TYPE;
use unseat_tests::{amqp_url, dead_lettered, spawn_app, spawn_app_with, TestApp};
use uuid::Uuid;

fn validator(file: &str) -> jsonschema::Validator {
    let path = format!("{}/../schemas/messages/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("schema file");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options().should_validate_formats(true).build(&schema).expect("schema compiles")
}

fn assert_valid(schema: &jsonschema::Validator, message: &Value) {
    let errors: Vec<String> = schema.iter_errors(message).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{message} does not match its schema: {errors:?}");
}

/// The directory changes a delivery carries, each checked against directory-changed.v1.json; a
/// packed delivery (AMQP type `directory-changes.v1`) is first checked against
/// directory-changes.v1.json.
fn directory_changes(delivery: &Delivery) -> Vec<Value> {
    let body: Value = serde_json::from_slice(&delivery.data).expect("message is JSON");
    let packed = delivery.properties.kind().as_ref().is_some_and(|k| k.as_str() == DIRECTORY_CHANGES_TYPE);
    let changes = if packed {
        assert_valid(&validator("directory-changes.v1.json"), &body);
        body["changes"].as_array().unwrap().clone()
    } else {
        vec![body]
    };
    let directory = validator("directory-changed.v1.json");
    for change in &changes {
        assert_valid(&directory, change);
    }
    changes
}

/// A tap: an exclusive queue bound like the real consumers to each (exchange, routing key) of
/// `bindings`, so it sees copies of every message published there.
async fn tap(bindings: &[(String, String)]) -> (lapin::Connection, lapin::Consumer) {
    let conn = unseat_bus::connect(&amqp_url(), "tap").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let tap = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let tap_name = tap.name().to_string();
    for (exchange, key) in bindings {
        ch.queue_bind(
            tap_name.as_str().into(),
            exchange.as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let consumer = ch
        .basic_consume(tap_name.as_str().into(), "tap".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    (conn, consumer)
}

#[tokio::test]
async fn messages_on_the_wire_match_their_schemas() {
    let app = spawn_app().await;
    let topology = app.settings.topology();
    let (conn, mut consumer) = tap(&[
        (topology.directory_exchange(), unseat_bus::DIRECTORY_ROUTING_KEY.to_string()),
        (topology.connector_exchange(), "business_hub".to_string()),
    ])
    .await;

    let alice = app.person("alice@example.com", "ADMIN").await;
    let bob = app.person("bob@example.com", "ADMIN").await;
    let team = app.team("Admins", &[alice, bob], "ADMIN").await;
    app.settle(2).await;
    app.scim.remove_member(team, alice).await.unwrap();
    app.scim.deactivate(bob).await.unwrap();
    app.settle(4).await;

    let directory = validator("directory-changed.v1.json");
    let task = validator("connector-task.v1.json");
    let (mut seen_directory, mut seen_task) = (0, 0);
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
        delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
        if delivery.exchange.as_str() == topology.directory_exchange() {
            seen_directory += directory_changes(&delivery).len();
            continue;
        }
        let body: Value = serde_json::from_slice(&delivery.data).expect("message is JSON");
        assert_valid(&task, &body);
        seen_task += 1;
    }
    // grant (team share), member removal, deactivation; two grants and two removals.
    assert!(seen_directory >= 3, "directory messages seen: {seen_directory}");
    assert!(seen_task >= 4, "connector tasks seen: {seen_task}");
    // And a wrong message does not pass: the schemas are not vacuous.
    let bad = serde_json::json!({"v": 2, "message_id": "x"});
    assert!(!directory.is_valid(&bad) && !task.is_valid(&bad));
    assert!(!validator("directory-changes.v1.json").is_valid(&serde_json::json!({"v": 1, "changes": [{}]})));
    let _ = conn.close(200, "bye".into()).await;
    app.stop().await;
}

/// Runs a relay of `app`'s settings, with metrics of its own, until the returned token is
/// cancelled.
fn start_relay(app: &TestApp) -> (CancellationToken, tokio::task::JoinHandle<()>, Arc<unseat_telemetry::Metrics>) {
    let stop = CancellationToken::new();
    let metrics = Arc::new(unseat_telemetry::Metrics::new());
    let relay =
        unseat_relay::run(app.store.clone(), metrics.clone(), unseat::relay_config(&app.settings), stop.clone());
    (stop, tokio::spawn(relay), metrics)
}

#[tokio::test]
async fn changes_that_waited_together_travel_in_one_message_and_each_is_resolved() {
    const PEOPLE: usize = 30;
    let app = spawn_app_with(|s| {
        s.relay = false;
        s.connector.business_hub_rate = 1000.0;
    })
    .await;
    let (stop, relay, _) = start_relay(&app);
    let mut people = Vec::new();
    for n in 0..PEOPLE {
        people.push(app.person(&format!("p{n}@example.com"), "ADMIN").await);
    }
    app.team("Staff", &people, "ADMIN").await;
    app.settle(PEOPLE).await;
    stop.cancel();
    relay.await.unwrap();

    // With no relay running, every deactivation waits in the outbox; then one relay round
    // claims them all.
    let topology = app.settings.topology();
    let (conn, mut consumer) =
        tap(&[(topology.directory_exchange(), unseat_bus::DIRECTORY_ROUTING_KEY.to_string())]).await;
    for user in &people {
        app.scim.deactivate(*user).await.unwrap();
    }
    let client = app.store.client().await.unwrap();
    let waiting: BTreeSet<Uuid> = client
        .query("select message_id from outbox where tenant_id = $1 and sent_at is null", &[&app.tenant])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(waiting.len(), PEOPLE, "one change per deactivation");
    let (stop, relay, metrics) = start_relay(&app);
    let tasks = app.settle(2 * PEOPLE).await;

    let mut deliveries = Vec::new();
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
        delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
        deliveries.push(delivery);
    }
    assert_eq!(deliveries.len(), 1, "the waiting changes went as one message");
    let changes = directory_changes(&deliveries[0]);
    assert_eq!(deliveries[0].properties.kind().as_ref().map(|k| k.to_string()), Some(DIRECTORY_CHANGES_TYPE.into()));
    let carried: BTreeSet<Uuid> = changes.iter().map(|c| c["message_id"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!((carried.len(), &carried), (PEOPLE, &waiting), "every waiting change once, under its own id");
    assert_eq!(metrics.outbox_packs.get(), 1, "the relay counts the pack");

    // Each change was resolved as if it had come alone: its own job with its removal, done.
    let removals: Vec<_> = tasks.iter().filter(|t| t.outcome == "remove").collect();
    assert_eq!(removals.len(), PEOPLE);
    assert!(removals.iter().all(|t| t.status == "succeeded"), "{removals:#?}");
    let jobs: BTreeSet<Uuid> = removals.iter().map(|t| t.job_id).collect();
    assert_eq!(jobs, waiting, "one job per change, named by its message id");
    assert!(app.app_users().await.is_empty(), "everyone is out of the app");

    stop.cancel();
    relay.await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
    app.stop().await;
}

#[tokio::test]
async fn a_packed_change_that_cannot_be_read_does_not_hold_back_the_others_and_is_kept() {
    let app = spawn_app_with(|s| {
        s.relay = false;
        s.connector.business_hub_rate = 1000.0;
    })
    .await;
    let (stop, relay, _) = start_relay(&app);
    let alice = app.person("alice@example.com", "ADMIN").await;
    let bob = app.person("bob@example.com", "ADMIN").await;
    app.team("Admins", &[alice, bob], "ADMIN").await;
    app.settle(2).await;
    stop.cancel();
    relay.await.unwrap();

    // Both deactivations wait in the outbox; they are taken out and published by hand, packed
    // around a change nobody can read.
    app.scim.deactivate(alice).await.unwrap();
    app.scim.deactivate(bob).await.unwrap();
    let client = app.store.client().await.unwrap();
    let waiting: Vec<String> = client
        .query("delete from outbox where tenant_id = $1 and sent_at is null returning payload::text", &[&app.tenant])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(waiting.len(), 2);
    let unreadable = r#"{"v":1,"message_id":"not an id"}"#;
    let body = unseat_bus::messages::pack_directory_changes([waiting[0].as_str(), unreadable, waiting[1].as_str()]);
    let topology = app.settings.topology();
    let conn = unseat_bus::connect(&amqp_url(), "test").await.unwrap();
    let publisher = unseat_bus::Publisher::new(&conn).await.unwrap();
    publisher
        .start(
            &topology.directory_exchange(),
            unseat_bus::DIRECTORY_ROUTING_KEY,
            "packed-by-hand",
            Some(DIRECTORY_CHANGES_TYPE),
            body.as_bytes(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    // The two readable changes are resolved and carried out...
    let (stop, relay, _) = start_relay(&app);
    let tasks = app.settle(4).await;
    let removed: BTreeSet<&str> =
        tasks.iter().filter(|t| t.outcome == "remove" && t.status == "succeeded").map(|t| t.email.as_str()).collect();
    assert_eq!(removed, BTreeSet::from(["alice@example.com", "bob@example.com"]));
    assert!(app.app_users().await.is_empty());
    // ...and the message that held the unreadable one is dead-lettered whole, kept for a person.
    let kept = dead_lettered(&topology.resolver_queue()).await.expect("the packed message in the dead-letter queue");
    assert_eq!(kept, body.as_bytes());

    stop.cancel();
    relay.await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
    app.stop().await;
}
