//! What operators rely on: `/healthz` answers whenever the process runs and `/readyz` only while
//! it reaches PostgreSQL and is not draining after a stop signal, so that a load balancer routes
//! around a replica that cannot work; a
//! revoked SCIM token stops working; a tenant given a SCIM rate of its own is limited at it.

use std::time::{Duration, Instant};
use unseat_tests::{spawn_app, spawn_app_with};

async fn get(base: &str, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("{base}{path}")).await.expect("HTTP");
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// One series of `/metrics` (name with its labels, as exposed).
async fn metric(base: &str, series: &str) -> Option<f64> {
    let (_, text) = get(base, "/metrics").await;
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Reads `series` until `wanted` holds of it (the process checks PostgreSQL every 5 s); the
/// last value seen when it never does.
async fn metric_until(base: &str, series: &str, wanted: impl Fn(f64) -> bool) -> Result<f64, Option<f64>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = metric(base, series).await;
        match seen {
            Some(v) if wanted(v) => return Ok(v),
            _ if Instant::now() > deadline => return Err(seen),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test]
async fn readiness_follows_the_database_and_liveness_does_not() {
    let app = spawn_app().await;
    assert_eq!(get(&app.base, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(get(&app.base, "/readyz").await, (200, "ready\n".to_string()));

    unseat_store::testing::refuse_connections(&app.database_url, true).await.unwrap();
    let (status, body) = get(&app.base, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("PostgreSQL unreachable"), "{body}");
    assert_eq!(get(&app.base, "/healthz").await.0, 200);
    metric_until(&app.base, "unseat_database_up", |v| v == 0.0).await.expect("unseat_database_up says 0");

    unseat_store::testing::refuse_connections(&app.database_url, false).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(&app.base, "/readyz").await;
        if status == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        assert!(Instant::now() < deadline, "still not ready once PostgreSQL took connections again: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

/// Every pooled connection busy (a lock pile-up, a burst) makes requests wait, but PostgreSQL
/// answers: the process stays ready, and its pool gauges show the pile-up.
#[tokio::test]
async fn a_process_whose_pool_is_all_busy_is_still_ready_and_says_so() {
    let app = spawn_app_with(|s| s.pool_size = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(app.store.client().await.expect("a pooled connection"));
    }
    // A request waiting for one of them.
    let (url, token) = (format!("{}/Users", app.scim.base), app.scim.token.clone());
    let waiting = tokio::spawn(async move {
        let resp = reqwest::Client::new().get(url).bearer_auth(token).send().await?;
        Ok::<_, reqwest::Error>((resp.status().as_u16(), resp.text().await?))
    });
    let (status, body) = get(&app.base, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"), "a busy pool is not an unreachable database");
    metric_until(&app.base, r#"unseat_database_pool_connections{state="busy"}"#, |v| v == 3.0).await.expect("busy");
    metric_until(&app.base, "unseat_database_pool_waiting", |v| v >= 1.0).await.expect("a caller waits");
    assert_eq!(metric(&app.base, "unseat_database_up").await, Some(1.0));
    drop(held);
    let answer = waiting.await.expect("join").expect("the waiting request is answered once a connection is free");
    assert_eq!(answer.0, 200, "{answer:?}");
    metric_until(&app.base, "unseat_database_pool_waiting", |v| v == 0.0).await.expect("nobody waits any more");
    app.stop().await;
}

/// A process that never reached RabbitMQ (away, or its URL wrong) still accepts SCIM changes
/// into the outbox, and its backlog gauges show them waiting: what the stalled-outbox alert
/// reads.
#[tokio::test]
async fn the_outbox_backlog_shows_when_the_broker_was_never_reached() {
    let app = spawn_app_with(|s| s.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into()).await;
    let alice = app.scim.create_user("alice@example.com").await.expect("create user");
    app.scim.deactivate(alice).await.expect("deactivation accepted without a broker");
    let (waiting, _) = app.store.pending_under(&app.settings.amqp_prefix).await.expect("backlog");
    assert!(waiting >= 1, "the deactivation waits in the outbox");
    metric_until(&app.base, "unseat_outbox_pending", |v| v == waiting as f64)
        .await
        .expect("the waiting changes are counted");
    metric_until(&app.base, "unseat_outbox_oldest_pending_seconds", |v| v > 0.0).await.expect("and their age");
    assert_eq!(metric(&app.base, "unseat_database_up").await, Some(1.0));
    app.stop().await;
}

/// Told to stop while a connector is calling a slow app, the process keeps answering HTTP
/// until its work has drained: /readyz says it is draining (503, so a load balancer routes
/// around it), /metrics is still there to scrape, and the removal in flight completes.
#[tokio::test]
async fn a_stopping_process_answers_draining_until_its_work_in_flight_is_done() {
    // A grace longer than the app's answer takes: the drain waits for it (with the tests'
    // usual 2 s, the process stopped first and the call finished after, or not, by chance).
    let app = spawn_app_with(|s| s.connector.grace = Duration::from_secs(30)).await;
    let alice = app.person("alice@example.com", "ADMIN").await;
    let admins = app.team("Admins", &[alice], "ADMIN").await;
    let before = app.settle(1).await.len();
    app.emulator.fault(serde_json::json!({"method": "DELETE", "latency_ms": 3000})).await.expect("slow app");
    app.scim.remove_member(admins, alice).await.expect("remove member");
    // Until the connector is calling the app.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app.tasks().await.iter().skip(before).any(|t| t.status == "running") {
        assert!(Instant::now() < deadline, "the removal never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    app.shutdown.cancel();
    let (status, body) = get(&app.base, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("draining"), "{body}");
    assert_eq!(get(&app.base, "/metrics").await.0, 200);
    assert_eq!(get(&app.base, "/healthz").await.0, 200);
    let base = app.base.clone();
    let store = app.store.clone();
    let tenant = app.tenant;
    app.stop().await;
    let done: i64 = store
        .client()
        .await
        .expect("client")
        .query_one(
            "select count(*) from tasks where tenant_id = $1 and outcome = 'remove' and status = 'succeeded'",
            &[&tenant],
        )
        .await
        .expect("tasks")
        .get(0);
    assert_eq!(done, 1, "the removal in flight finished before the process stopped");
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err(), "stopped serving once drained");
}

#[tokio::test]
async fn a_revoked_scim_token_is_refused_by_the_scim_endpoint() {
    let app = spawn_app().await;
    let tenant = app.tenant;
    let (status, minted) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/tenants/{tenant}/scim-tokens"),
            Some(serde_json::json!({"label": "old okta"})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let token = minted["token"].as_str().unwrap().to_string();
    let users = |token: String| {
        let url = format!("{}/scim/v2/Users", app.base);
        async move { reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(users(token.clone()).await, 200);

    let (_, listed) = app.call(reqwest::Method::GET, &format!("/api/v1/tenants/{tenant}/tokens"), None).await;
    let id = listed["tokens"].as_array().unwrap().iter().find(|t| t["label"] == "old okta").unwrap()["id"].clone();
    let (status, _) = app
        .call(reqwest::Method::DELETE, &format!("/api/v1/tenants/{tenant}/tokens/{}", id.as_str().unwrap()), None)
        .await;
    assert_eq!(status, 204);
    // The revocation reaches the ingest's token cache as a notification (the deadline covers
    // its delivery).
    let deadline = Instant::now() + Duration::from_secs(10);
    while users(token.clone()).await != 401 {
        assert!(Instant::now() < deadline, "the revoked token was still accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(users(app.scim.token.clone()).await, 200, "the tenant's other token still works");
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_given_a_scim_rate_of_its_own_is_limited_at_it() {
    let app = spawn_app().await;
    let tenant = app.tenant;
    let operator = app.settings.admin_token.clone().unwrap();
    let path = format!("/api/v1/tenants/{tenant}/scim-rate-limit");
    let body = serde_json::json!({"per_second": 1, "burst": 3});
    let (status, answer) = app.call_as(&operator, reqwest::Method::PUT, &path, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    let users = || {
        let url = format!("{}/scim/v2/Users?count=1", app.base);
        let token = app.scim.token.clone();
        async move {
            let resp = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
            let wait = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            (resp.status().as_u16(), wait)
        }
    };
    // The fleet's limit here is 5,000 a second: only the tenant's own stops its IdP, after its
    // burst (and at most one more each second).
    let mut admitted = 0;
    let refused = loop {
        match users().await {
            (200, _) => admitted += 1,
            (429, wait) => break wait,
            other => panic!("{other:?}"),
        }
        assert!(admitted <= 5, "still admitted after {admitted}: the tenant's own rate is not applied");
    };
    assert!(admitted >= 3, "{admitted}: less than the burst");
    assert_eq!(refused.as_deref(), Some("1"), "Retry-After");

    // Back to the fleet's rate: admitted again once the refusal has passed.
    let (status, _) = app.call_as(&operator, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..10 {
        assert_eq!(users().await.0, 200);
    }
    app.stop().await;
}

/// With /metrics moved to an address of its own, the port IdPs reach no longer shows it, and
/// the metrics port serves nothing else.
#[tokio::test]
async fn metrics_can_move_off_the_port_idps_reach() {
    let app = spawn_app_with(|s| s.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))).await;
    let metrics = app.metrics_base.clone().expect("a metrics address");
    app.scim.create_user("alice@example.com").await.expect("a SCIM request");
    assert_eq!(get(&app.base, "/metrics").await.0, 404, "not on the SCIM port");
    let (status, text) = get(&metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains(r#"unseat_scim_requests_total{method="POST",resource="Users",status="2xx"} 1"#), "{text}");
    assert_eq!(get(&metrics, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(get(&app.base, "/healthz").await.0, 200);
    assert_eq!(get(&app.base, "/readyz").await.0, 200);
    assert_eq!(get(&metrics, "/scim/v2/ServiceProviderConfig").await.0, 404, "SCIM only on its port");

    // An ingest on its own: its SCIM authentication covers the port, yet /metrics there is a
    // plain 404, not the SCIM endpoint's 401.
    let mut settings = app.settings.clone();
    settings.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let roles = unseat::Roles { ingest: true, console: false, resolver: false, connector: false };
    let stop = tokio_util::sync::CancellationToken::new();
    let ingest = unseat::start(settings, roles, stop.clone()).await.expect("an ingest");
    let (status, body) = get(&format!("http://{}", ingest.addr), "/metrics").await;
    assert_eq!((status, body.as_str()), (404, "not served on this port\n"));
    let moved = format!("http://{}", ingest.metrics_addr.expect("its metrics address"));
    let (status, text) = get(&moved, "/metrics").await;
    assert_eq!(status, 200);
    // It says which role it runs (what an alert on a role gone altogether looks for).
    assert!(text.contains("unseat_role_running{role=\"ingest\"} 1"), "{text}");
    assert!(!text.contains("role=\"console\""), "{text}");
    stop.cancel();
    ingest.wait().await;
    app.stop().await;
}

/// With a drain delay, a process with nothing in flight (an ingest, say) keeps answering HTTP
/// for that long after the stop signal, /readyz saying `draining`, so a load balancer stops
/// sending requests before the port closes; without one it would close at once.
#[tokio::test]
async fn a_drain_delay_keeps_http_up_and_not_ready_after_the_stop_signal() {
    let app = spawn_app_with(|s| s.drain_delay = Duration::from_secs(2)).await;
    app.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, body) = get(&app.base, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("draining"), "{body}");
    assert_eq!(get(&app.base, "/healthz").await.0, 200, "still serving");
    let base = app.base.clone();
    app.stop().await;
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err(), "stopped serving after the delay");
}

/// `url` with its host and port replaced by `127.0.0.1:port`, and the host and port it named.
fn via_port(url: &str, port: u16) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, path) = rest.split_once('/').expect("a database name");
    let (user, server) = authority.rsplit_once('@').map_or(("", authority), |(u, s)| (u, s));
    let user = if user.is_empty() { String::new() } else { format!("{user}@") };
    (format!("{scheme}://{user}127.0.0.1:{port}/{path}"), server.to_string())
}

/// A role started while PostgreSQL cannot be reached (not started yet, restarting) waits for it,
/// as it waits for RabbitMQ, and comes up once it answers; the stop signal ends the wait.
#[tokio::test]
async fn a_role_started_before_postgresql_answers_waits_for_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
    let (url, server) = via_port(&unseat_store::testing::new_database_url(), port);
    let mut settings = unseat::Settings::new(&url, unseat_tests::amqp_url());
    settings.amqp_prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    settings.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let roles = unseat::Roles { ingest: true, console: false, resolver: false, connector: false };
    let stop = tokio_util::sync::CancellationToken::new();
    let starting = tokio::spawn(unseat::start(settings.clone(), roles, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!starting.is_finished(), "the role gave up instead of waiting for PostgreSQL");

    // PostgreSQL answers at that port from now on.
    let relay = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the port again");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = relay.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                if let Ok(mut db) = tokio::net::TcpStream::connect(server).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut db).await;
                }
            });
        }
    });
    let running = starting.await.expect("join").expect("started once PostgreSQL answered");
    assert_eq!(get(&format!("http://{}", running.addr), "/readyz").await.0, 200);
    stop.cancel();
    running.wait().await;
    let _ = settings.topology().delete_at(&unseat_tests::amqp_url(), "test-cleanup").await;

    // Waiting for a PostgreSQL that never comes: the stop signal ends it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
    settings.database_url = via_port(&unseat_store::testing::new_database_url(), dead).0;
    let stop = tokio_util::sync::CancellationToken::new();
    let starting = tokio::spawn(unseat::start(settings, roles, stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let Err(error) = starting.await.expect("join") else { panic!("started without PostgreSQL") };
    assert!(format!("{error:#}").contains("stopped while waiting for PostgreSQL"), "{error:#}");
}
