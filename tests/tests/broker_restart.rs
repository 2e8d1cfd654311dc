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
    // The backlog shows in the relay's gauges while the broker is away.
    let waiting = backlog_until(&app, |rows, oldest| rows >= 1.0 && oldest > 0.0).await;
    rabbitmqctl(&["start_app"]).await;
    rabbitmqctl(&["await_startup"]).await;
    accepted.expect("SCIM accepts while the broker is down");
    app.scim.deactivate(bob).await.unwrap();

    let tasks = app.try_settle(4, Duration::from_secs(90)).await.expect("the pipeline recovers");
    let removals: Vec<_> = tasks.iter().filter(|t| t.outcome == "remove").collect();
    assert_eq!(removals.len(), 2, "{tasks:#?}");
    assert!(removals.iter().all(|t| t.status == "succeeded"), "{tasks:#?}");
    assert!(app.app_users().await.is_empty());
    waiting.expect("unseat_outbox_pending and unseat_outbox_oldest_pending_seconds show the waiting change");
    backlog_until(&app, |rows, oldest| rows == 0.0 && oldest == 0.0).await.expect("the gauges drop back to 0");
    app.stop().await;
}

/// Reads the relay's backlog gauges from `/metrics` until `wanted` holds (every relay reads its
/// backlog every 5 s); the last values seen when it never does.
async fn backlog_until(app: &unseat_tests::TestApp, wanted: impl Fn(f64, f64) -> bool) -> Result<(), String> {
    let gauge = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(f64::NAN)
    };
    let mut seen = (f64::NAN, f64::NAN);
    for _ in 0..80 {
        let text = reqwest::get(format!("{}/metrics", app.base)).await.unwrap().text().await.unwrap();
        seen = (gauge(&text, "unseat_outbox_pending"), gauge(&text, "unseat_outbox_oldest_pending_seconds"));
        if wanted(seen.0, seen.1) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("gauges (pending, oldest seconds) still {seen:?}"))
}
