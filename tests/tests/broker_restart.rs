//! RabbitMQ restarts under a running pipeline. This binary holds one test so that restarting
//! the local broker disturbs no other test (cargo runs test binaries one after another).

use std::process::Command;
use std::time::Duration;

use unseat_tests::spawn_app;

async fn rabbitmqctl(args: &'static [&'static str]) {
    let out = tokio::task::spawn_blocking(move || Command::new("rabbitmqctl").args(args).output())
        .await
        .expect("join")
        .expect("rabbitmqctl must be installed next to the local RabbitMQ for this test");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Starts the broker again however the test ends, so a failure here cannot break later tests.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
    }
}

#[tokio::test]
async fn changes_accepted_while_the_broker_is_down_reach_the_app_after_it_returns() {
    let app = spawn_app().await;
    let alice = app.person("alice@example.com", "ADMIN").await;
    let bob = app.person("bob@example.com", "EMPLOYEE").await;
    app.team("Admins", &[alice], "ADMIN").await;
    app.team("Staff", &[bob], "EMPLOYEE").await;
    app.settle(2).await;

    let _guard = RestartOnDrop;
    rabbitmqctl(&["stop_app"]).await;
    // SCIM keeps accepting: the change and its outbox row commit in PostgreSQL.
    let accepted = app.scim.deactivate(alice).await;
    rabbitmqctl(&["start_app"]).await;
    rabbitmqctl(&["await_startup"]).await;
    accepted.expect("SCIM accepts while the broker is down");
    app.scim.deactivate(bob).await.unwrap();

    let tasks = app.try_settle(4, Duration::from_secs(90)).await.expect("the pipeline recovers");
    let removals: Vec<_> = tasks.iter().filter(|t| t.outcome == "remove").collect();
    assert_eq!(removals.len(), 2, "{tasks:#?}");
    assert!(removals.iter().all(|t| t.status == "succeeded"), "{tasks:#?}");
    assert!(app.app_users().await.is_empty());
    app.stop().await;
}
