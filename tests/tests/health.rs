//! `/healthz` answers whenever the process runs; `/readyz` only while it reaches PostgreSQL, so
//! that a load balancer or orchestrator routes around a replica that cannot work.

use std::time::{Duration, Instant};
use unseat_tests::spawn_app;

async fn get(base: &str, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("{base}{path}")).await.expect("HTTP");
    (resp.status().as_u16(), resp.text().await.unwrap())
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
