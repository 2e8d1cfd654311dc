//! `unseat admin delete-topology` tears a deployment's queues and exchanges off the broker (a
//! real RabbitMQ), and only when told `--yes` and the prefix is typed out as the deployment's.

use std::process::{Command, Output};

fn amqp_url() -> String {
    std::env::var("UNSEAT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn delete_topology(prefix: &str, yes: bool) -> Output {
    delete_named(prefix, prefix, yes)
}

/// With `typed` as `--prefix` and `prefix` as the deployment's (UNSEAT_AMQP_PREFIX).
fn delete_named(prefix: &str, typed: &str, yes: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unseat"));
    cmd.args(["admin", "delete-topology", "--prefix", typed])
        .env("UNSEAT_AMQP_PREFIX", prefix)
        .env("UNSEAT_AMQP_URL", amqp_url());
    if yes {
        cmd.arg("--yes");
    }
    cmd.output().expect("run unseat")
}

/// Whether `queue` exists (a passive declare on a channel of its own: a missing queue closes it).
async fn exists(conn: &lapin::Connection, queue: &str) -> bool {
    let ch = conn.create_channel().await.expect("channel");
    let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    ch.queue_declare(queue.into(), options, Default::default()).await.is_ok()
}

#[tokio::test]
async fn delete_topology_removes_every_queue_of_the_prefix_and_only_with_yes() {
    let prefix = format!("teardown-{}", uuid::Uuid::new_v4().simple());
    let mut settings = unseat::Settings::new("postgres://unused", amqp_url());
    settings.amqp_prefix = prefix.clone();
    let topology = settings.topology();
    let conn = unseat_bus::connect(&amqp_url(), "teardown-test").await.expect("broker");
    topology.declare(&conn.create_channel().await.unwrap()).await.expect("declare");
    let queues = topology.queues();
    assert!(queues.len() > 3, "{queues:?}");
    for q in &queues {
        assert!(exists(&conn, q).await, "{q} was declared");
    }

    let refused = delete_topology(&prefix, false);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(exists(&conn, &queues[0]).await, "nothing is deleted without --yes");
    // A prefix typed that is not the deployment's (the default one, from a forgotten variable).
    let mismatched = delete_named(&prefix, "unseat", true);
    assert!(!mismatched.status.success());
    let said = String::from_utf8_lossy(&mismatched.stderr);
    assert!(said.contains("is not the deployment's prefix"), "{said}");
    assert!(exists(&conn, &queues[0]).await, "nothing is deleted for a prefix typed wrong");

    let done = delete_topology(&prefix, true);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    for q in &queues {
        assert!(!exists(&conn, q).await, "{q} is still on the broker");
    }
    // Deleting what is already gone succeeds.
    assert!(delete_topology(&prefix, true).status.success());
    let _ = conn.close(200, "bye".into()).await;
}
