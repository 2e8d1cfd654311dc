//! The messages that really cross RabbitMQ match their JSON Schemas in `schemas/messages/`.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use unseat_tests::{amqp_url, spawn_app};

fn validator(file: &str) -> jsonschema::Validator {
    let path = format!("{}/../schemas/messages/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("schema file");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options().should_validate_formats(true).build(&schema).expect("schema compiles")
}

#[tokio::test]
async fn messages_on_the_wire_match_their_schemas() {
    let app = spawn_app().await;
    let topology = app.settings.topology();
    // A tap: an exclusive queue bound like the real consumers, so it sees copies of every message.
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
    for (exchange, key) in [
        (topology.directory_exchange(), unseat_bus::DIRECTORY_ROUTING_KEY.to_string()),
        (topology.connector_exchange(), "business_hub".to_string()),
    ] {
        ch.queue_bind(
            tap_name.as_str().into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let mut consumer = ch
        .basic_consume(tap_name.as_str().into(), "tap".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();

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
        let body: Value = serde_json::from_slice(&delivery.data).expect("message is JSON");
        let (v, counter) = if delivery.exchange.as_str() == topology.directory_exchange() {
            (&directory, &mut seen_directory)
        } else {
            (&task, &mut seen_task)
        };
        let errors: Vec<String> = v.iter_errors(&body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{body} does not match its schema: {errors:?}");
        *counter += 1;
    }
    // grant (team share), member removal, deactivation; two grants and two removals.
    assert!(seen_directory >= 3, "directory messages seen: {seen_directory}");
    assert!(seen_task >= 4, "connector tasks seen: {seen_task}");
    // And a wrong message does not pass: the schemas are not vacuous.
    let bad = serde_json::json!({"v": 2, "message_id": "x"});
    assert!(!directory.is_valid(&bad) && !task.is_valid(&bad));
    let _ = conn.close(200, "bye".into()).await;
    app.stop().await;
}
