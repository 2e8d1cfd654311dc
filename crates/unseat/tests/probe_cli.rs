//! `unseat probe URL`, the healthcheck docker-compose.yml gives every role (the image has no
//! curl): it exits 0 on a 2xx answer from a running role's /healthz or /readyz, and 1 with one
//! line saying why for nothing listening, a 404, a role that is not ready, no answer in time,
//! or a URL it does not probe.

use std::process::{Command, Output};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `unseat probe <args>`, run off the runtime so the role in this process goes on answering.
async fn probe(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_unseat")).arg("probe").args(&args).output().expect("run unseat")
    })
    .await
    .expect("probe")
}

/// Whether it failed with exit code 1, and the one line it said on stderr (nothing on stdout).
fn failure(out: &Output) -> String {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr.trim_end().to_string()
}

fn success(out: &Output) -> String {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    stdout.trim_end().to_string()
}

/// A port of 127.0.0.1 nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn probe_passes_a_ready_role_and_says_why_it_fails_otherwise() {
    let (url, store) = unseat_store::testing::fresh_database().await.expect("fresh database");
    // A resolver, on a free port, with no broker (nothing listens on port 1): it serves HTTP
    // all the same, and declares nothing on a broker.
    let mut settings = unseat::Settings::new(url.clone(), "amqp://guest:guest@127.0.0.1:1/%2f");
    settings.amqp_prefix = format!("probe-{}", uuid::Uuid::new_v4().simple());
    let roles = unseat::Roles { resolver: true, ..Default::default() };
    let shutdown = CancellationToken::new();
    let running = tokio::time::timeout(Duration::from_secs(30), unseat::start(settings, roles, shutdown.clone()))
        .await
        .expect("start returns without the broker")
        .expect("started");
    let base = format!("http://{}", running.addr);

    let said = success(&probe(&[&format!("{base}/healthz")]).await);
    assert_eq!(said, format!("{base}/healthz: HTTP 200 OK: ok"));
    let said = success(&probe(&[&format!("{base}/readyz")]).await);
    assert_eq!(said, format!("{base}/readyz: HTTP 200 OK: ready"));

    // Not 2xx: a path the role does not serve.
    let said = failure(&probe(&[&format!("{base}/no-such-page")]).await);
    assert!(said.starts_with(&format!("{base}/no-such-page: HTTP 404 Not Found")), "{said}");

    // Nothing listens.
    let closed = format!("http://127.0.0.1:{}/readyz", closed_port());
    let said = failure(&probe(&[&closed]).await);
    assert!(said.starts_with(&format!("{closed}: cannot connect: ")), "{said}");
    assert!(said.to_lowercase().contains("refused"), "{said}");

    // Something accepts the connection but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/readyz", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let said = failure(&probe(&["--timeout-seconds", "1", &silent_url]).await);
    assert_eq!(said, format!("{silent_url}: no answer within 1 s"));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    drop(silent);

    // Only plain http:// is probed.
    let said = failure(&probe(&[&format!("https://{}/readyz", running.addr)]).await);
    assert!(said.ends_with("only http:// URLs are probed"), "{said}");

    // The role cannot reach its database: still alive, not ready, and the probe tells why.
    unseat_store::testing::refuse_connections(&url, true).await.expect("refuse connections");
    let said = success(&probe(&[&format!("{base}/healthz")]).await);
    assert!(said.ends_with("HTTP 200 OK: ok"), "{said}");
    let said = failure(&probe(&[&format!("{base}/readyz")]).await);
    assert!(said.starts_with(&format!("{base}/readyz: HTTP 503 Service Unavailable: PostgreSQL")), "{said}");

    shutdown.cancel();
    let unseat::Running { tasks, store: role_store, .. } = running;
    tasks.close();
    tokio::time::timeout(Duration::from_secs(30), tasks.wait()).await.expect("stops");
    drop((role_store, store));
    // Passed: the database goes now rather than with the sweep of stale test databases.
    let server = url.rsplit_once('/').map(|(server, _)| server.to_string()).expect("a database url");
    let name = url.rsplit('/').next().expect("a database name");
    let admin = unseat_store::Store::connect(&format!("{server}/postgres"), 1).expect("server");
    admin
        .client()
        .await
        .expect("client")
        .batch_execute(&format!("drop database if exists \"{name}\" with (force)"))
        .await
        .expect("drop the test database");
}
