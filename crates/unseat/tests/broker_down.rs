//! A process started while RabbitMQ is unreachable still serves HTTP: /healthz and /metrics
//! answer and the ingest accepts SCIM changes into the outbox (nothing accepted is lost: the
//! relay publishes them once the broker is back). The broker's roles start once it answers.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn every_role_serves_http_while_the_broker_is_unreachable() {
    let (url, store) = unseat_store::testing::fresh_database().await.expect("fresh database");
    // Nothing listens on port 1.
    let mut settings = unseat::Settings::new(url, "amqp://guest:guest@127.0.0.1:1/%2f");
    settings.amqp_prefix = format!("broker-down-{}", uuid::Uuid::new_v4().simple());
    let shutdown = CancellationToken::new();
    let started =
        tokio::time::timeout(Duration::from_secs(30), unseat::start(settings, unseat::Roles::ALL, shutdown.clone()))
            .await
            .expect("start returns without the broker")
            .expect("started");
    let base = format!("http://{}", started.addr);
    let http = reqwest::Client::new();

    let health = http.get(format!("{base}/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    let metrics = http.get(format!("{base}/metrics")).send().await.expect("metrics");
    assert_eq!(metrics.status(), 200);

    let token = unseat_store::tokens::generate("scim");
    let tenant = store.create_tenant("Acme", &token, &unseat_store::tokens::generate("adm")).await.expect("tenant").id;
    let created = http
        .post(format!("{base}/scim/v2/Users"))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body(r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann@example.com"}"#)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let user: serde_json::Value = created.json().await.expect("json");
    let id = user["id"].as_str().expect("id");
    // Okta's deactivation: a change the resolver must hear of.
    let patched = http
        .patch(format!("{base}/scim/v2/Users/{id}"))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body(r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}"#)
        .send()
        .await
        .expect("deactivate");
    assert_eq!(patched.status(), 200);
    let pending: i64 = store
        .client()
        .await
        .expect("client")
        .query_one("select count(*) from outbox where tenant_id = $1 and sent_at is null", &[&tenant])
        .await
        .expect("outbox")
        .get(0);
    assert_eq!(pending, 1, "the change waits in the outbox for the broker");

    shutdown.cancel();
    started.tasks.close();
    tokio::time::timeout(Duration::from_secs(30), started.tasks.wait()).await.expect("stops while still retrying");
}
