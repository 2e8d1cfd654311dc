//! A retry parked in a delay queue comes back only by the broker dead-lettering it, at most
//! once: a RabbitMQ restart as it expires can drop it. Through the real pipeline, a parked
//! retry is taken off its delay queue (what such a restart does) and the connector must still
//! finish the task.

use serde_json::json;
use std::time::Duration;
use unseat_tests::{amqp_url, spawn_app_with};

#[tokio::test]
async fn a_parked_retry_the_broker_lost_is_sent_again() {
    let app = spawn_app_with(|s| {
        // Every retry is parked, and overdue ones are looked for often.
        s.connector.park_after = Duration::from_millis(10);
        s.connector.lost_park_check = Duration::from_millis(200);
        s.connector.lost_park_slack = Duration::from_millis(500);
    })
    .await;
    let ann = app.person("ann@example.com", "EMPLOYEE").await;
    app.team("Staff", &[ann], "EMPLOYEE").await;
    let before = app.settle(1).await.len();

    // The app refuses the next call for a moment and asks for 3 s: the retry is parked.
    app.emulator.fault(json!({"status": 503, "retry_after_s": 3, "times": 1})).await.expect("fault");
    app.scim.deactivate(ann).await.expect("deactivate");
    let task = loop {
        let tasks = app.tasks().await;
        if let Some(t) = tasks.get(before) {
            let events = app.store.connector_task_events(app.tenant, t.id).await.expect("events");
            if events.iter().any(|e| e.0 == "retry_scheduled" && e.3.contains("parked")) {
                break t.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The broker loses it.
    let queue = app.settings.topology().delay_queue("business_hub", Duration::from_secs(3));
    let conn = unseat_bus::connect(&amqp_url(), "test").await.expect("broker");
    let ch = conn.create_channel().await.expect("channel");
    // The event is written before the message is parked: wait until it is there.
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    for _ in 0..100 {
        let q = ch.queue_declare(queue.as_str().into(), passive, Default::default()).await.expect("declare");
        if q.message_count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let purged = ch.queue_purge(queue.as_str().into(), Default::default()).await.expect("purge");
    let _ = conn.close(200, "bye".into()).await;
    assert_eq!(purged, 1, "the parked retry was taken off {queue}");

    let tasks = app.settle(before + 1).await;
    let done = tasks.iter().find(|t| t.id == task.id).expect("the task");
    assert_eq!((done.outcome.as_str(), done.status.as_str()), ("remove", "succeeded"), "{done:?}");
    let events = app.store.connector_task_events(app.tenant, task.id).await.expect("events");
    assert!(events.iter().any(|e| e.0 == "resent"), "{events:?}");
    assert!(app.app_users().await.is_empty(), "ann is out of the app");
    app.stop().await;
}
