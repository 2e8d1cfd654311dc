//! An app credential from the admin API to the app: submitted in plain through the real
//! console API, stored encrypted (the raw column holds `enc:v1:` ciphertext, not the secret),
//! never shown by the API nor written to the log, and still what the connector authenticates
//! to the app with.

mod common;

use common::{quick_config, Desire, Setup};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex};
use unseat_connector::ConnectorConfig;
use unseat_store::credentials::{CredentialKey, Sealing};
use unseat_telemetry::Metrics;
use uuid::Uuid;

const BIZ: &str = "4200000003";
const SECRET: &str = "EAAB-system-user-token-s3cret";
const OPERATOR: &str = "operator-token-for-credentials-test";

/// Everything logged in this test binary, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, String) {
    let mut request = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_submitted_through_the_admin_api_is_stored_encrypted_and_still_authenticates() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    // The hub accepts only the secret; the fixture's own integration is not used.
    let mut app =
        Setup { credential: Some("unused-fixture-credential".into()), ..Setup::new(BIZ, SECRET) }.build().await;
    let key = CredentialKey::generate();
    let console = unseat_console::router(unseat_console::ConsoleState {
        store: app.store.clone(),
        metrics: Arc::new(Metrics::new()),
        operator_token: Some(OPERATOR.into()),
        directory_exchange: app.topology.directory_exchange(),
        credentials: Sealing { key: Some(key.clone()), allow_plaintext: false },
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, console).await.expect("console") });

    let http = reqwest::Client::new();
    let (status, text) =
        call(&http, reqwest::Method::POST, format!("{base}/api/v1/tenants"), OPERATOR, Some(json!({ "name": "Beta" })))
            .await;
    assert_eq!(status, 201, "{text}");
    let tenant: Value = serde_json::from_str(&text).expect("json");
    let (tenant_id, admin) =
        (tenant["id"].as_str().expect("id").to_string(), tenant["admin_token"].as_str().expect("token").to_string());
    let body = json!({
        "name": "Beta Business",
        "app_kind": "business_hub",
        "base_url": app.base_url,
        "roles": ["ADMIN", "EMPLOYEE"],
        "settings": { "business_id": BIZ },
        "credential": SECRET,
    });
    let integrations = format!("{base}/api/v1/tenants/{tenant_id}/integrations");
    let (status, text) = call(&http, reqwest::Method::POST, integrations.clone(), &admin, Some(body)).await;
    assert_eq!(status, 201, "{text}");
    assert!(!text.contains(SECRET), "the answer does not echo the secret: {text}");
    let created: Value = serde_json::from_str(&text).expect("json");
    let integration: Uuid = created["id"].as_str().expect("id").parse().expect("uuid");
    let tenant_id: Uuid = tenant_id.parse().expect("uuid");

    // At rest: ciphertext only.
    let client = app.store.client().await.expect("client");
    let stored: String = client
        .query_one("select credential from integrations where tenant_id = $1 and id = $2", &[&tenant_id, &integration])
        .await
        .expect("integration")
        .get(0);
    assert!(stored.starts_with("enc:v1:"), "stored as {}…", &stored[..stored.len().min(10)]);
    assert!(!stored.contains(SECRET) && !stored.contains(&hex_of(SECRET)));

    // Read back: never shown.
    for url in [format!("{integrations}/{integration}"), integrations.clone()] {
        let (status, text) = call(&http, reqwest::Method::GET, url, &admin, None).await;
        assert_eq!(status, 200, "{text}");
        assert!(!text.contains(SECRET) && !text.contains(&stored), "{text}");
        assert!(text.contains("\"has_credential\":true"), "{text}");
    }

    // The connector decrypts it and the hub, which accepts only the secret, lets it in.
    app.adopt(tenant_id, integration).await;
    app.emu.seed_user(BIZ, "quinn@example.com", "EMPLOYEE", None).expect("seed");
    let (user, task) = app.desire(Desire::removal("quinn@example.com")).await;
    app.publish(user, task, 2).await;
    app.start(ConnectorConfig { credential_key: Some(key), ..quick_config() });
    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("succeeded", 1), "{t:?}");
    assert!(app.hub_user("quinn@example.com").is_none());
    assert!(app.emu.requests().iter().all(|r| r.status != 401), "the hub never refused the token");

    // And nothing logged it, at any level.
    let logged = log.text();
    assert!(logged.contains("integration created"), "the log was captured");
    let leaks: Vec<&str> = logged.lines().filter(|l| l.contains(SECRET)).collect();
    assert!(leaks.is_empty(), "the secret is in the log: {leaks:#?}");
    app.stop().await;
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}
