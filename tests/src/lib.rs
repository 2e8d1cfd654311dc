//! Harness for unseat's end-to-end tests: [`spawn_app`] starts every role in-process against
//! the real PostgreSQL (a fresh database per test) and RabbitMQ (a unique topology prefix per
//! test) on localhost, plus the business-hub emulator, and seeds a tenant with one integration.
//! Tests then act as an IdP over SCIM and check the emulator's final state and the log.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use unseat::client::{AdminClient, EmulatorClient, ScimClient};
use unseat::{Roles, Running, Settings};
use unseat_store::Store;
use uuid::Uuid;

pub use unseat;

pub const BUSINESS: &str = "1001";

/// The business of the hub with assets a test creates with [`TestApp::ads_hub`].
pub const ADS_BUSINESS: &str = "6006";

pub fn amqp_url() -> String {
    std::env::var("UNSEAT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The body of the first message in `queue`'s dead-letter queue, taken off it, waiting up to
/// five seconds for one to arrive; `None` if none did.
pub async fn dead_lettered(queue: &str) -> Option<Vec<u8>> {
    let conn = unseat_bus::connect(&amqp_url(), "test").await.expect("broker");
    let ch = conn.create_channel().await.expect("channel");
    let dlq = unseat_bus::Topology::dead_letter_queue(queue);
    let mut got = None;
    for _ in 0..100 {
        let options = lapin::options::BasicGetOptions { no_ack: true };
        if let Some(m) = ch.basic_get(dlq.as_str().into(), options).await.expect("basic.get") {
            got = Some(m.delivery.data);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = conn.close(200, "bye".into()).await;
    got
}

pub struct TestApp {
    pub base: String,
    /// Where `/metrics` is served when the settings moved it off `base`.
    pub metrics_base: Option<String>,
    pub emulator_url: String,
    pub database_url: String,
    pub settings: Settings,
    pub store: Store,
    pub scim: ScimClient,
    pub admin: AdminClient,
    pub operator: AdminClient,
    pub emulator: EmulatorClient,
    pub tenant: Uuid,
    pub integration: Uuid,
    /// Stops unseat; the emulator, standing for an app unseat does not own, stops after it.
    pub shutdown: CancellationToken,
    running: Option<Running>,
    app_shutdown: CancellationToken,
    app_tasks: tokio_util::task::TaskTracker,
}

/// Starts unseat (all roles) and the emulator; creates a tenant and a business-hub integration
/// (roles ADMIN > EMPLOYEE) pointing at the emulator, whose business already has an owner.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`] with `configure` applied to the test settings before unseat starts.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    try_spawn_app(configure).await.expect("spawn unseat for a test")
}

async fn try_spawn_app(configure: impl FnOnce(&mut Settings)) -> anyhow::Result<TestApp> {
    let (database_url, _) = unseat_store::testing::fresh_database().await?;
    let mut settings = Settings::new(&database_url, amqp_url());
    settings.amqp_prefix = format!("t{}", Uuid::new_v4().simple());
    let operator_token = unseat_store::tokens::generate("op");
    settings.admin_token = Some(operator_token.clone());
    settings.pool_size = 12;
    // Tests look at what was published (and at what a refused request did not publish): keep
    // published rows. tests/pipeline.rs runs the default too, which deletes them.
    settings.outbox_keep_sent = Duration::from_secs(3600);
    settings.resolver.grace = Duration::from_secs(2);
    settings.connector.grace = Duration::from_secs(2);
    settings.connector.min_backoff = Duration::from_millis(50);
    settings.connector.max_backoff = Duration::from_millis(400);
    settings.connector.throttle_wait = Duration::from_millis(300);
    settings.connector.max_attempts = 5;
    configure(&mut settings);
    let shutdown = CancellationToken::new();
    let running = unseat::start(settings.clone(), Roles::ALL, shutdown.clone()).await?;
    // The app outlives unseat's stop, as a real one does: a drain may still be calling it.
    let (app_shutdown, app_tasks) = (CancellationToken::new(), tokio_util::task::TaskTracker::new());
    let (emu_addr, _) =
        unseat::start_emulator(SocketAddr::from(([127, 0, 0, 1], 0)), &app_tasks, app_shutdown.clone()).await?;
    let base = format!("http://{}", running.addr);
    let metrics_base = running.metrics_addr.map(|a| format!("http://{a}"));
    let emulator_url = format!("http://{emu_addr}");
    let operator = AdminClient::new(&base, &operator_token);
    let tenant = operator.create_tenant("Test tenant").await?;
    let admin = AdminClient::new(&base, &tenant.admin_token);
    let scim = ScimClient::new(format!("{base}/scim/v2"), &tenant.scim_token);
    let emulator = EmulatorClient::new(&emulator_url);
    emulator.seed(BUSINESS, "owner@example.com", "ADMIN").await?;
    let integration = admin.create_business_hub(tenant.id, "Meta Business", &emulator_url, BUSINESS).await?;
    Ok(TestApp {
        base,
        metrics_base,
        emulator_url,
        database_url,
        store: running.store.clone(),
        settings,
        scim,
        admin,
        operator,
        emulator,
        tenant: tenant.id,
        integration,
        shutdown,
        running: Some(running),
        app_shutdown,
        app_tasks,
    })
}

impl TestApp {
    /// Creates a SCIM user and a matching account in the app with `role`.
    pub async fn person(&self, email: &str, role: &str) -> Uuid {
        self.emulator.seed(BUSINESS, email, role).await.expect("seed app account");
        self.scim.create_user(email).await.expect("create SCIM user")
    }

    pub async fn team(&self, name: &str, members: &[Uuid], role: &str) -> Uuid {
        let team = self.scim.create_group(name, members).await.expect("create group");
        self.admin.grant_team(self.tenant, self.integration, team, role).await.expect("grant team");
        team
    }

    /// The app's accounts as (email, role), without the business owner.
    pub async fn app_users(&self) -> Vec<(String, String)> {
        let mut users = self.emulator.users(BUSINESS).await.expect("emulator users");
        users.retain(|(e, _)| e != "owner@example.com");
        users
    }

    /// The addresses of the app's pending invitations, sorted.
    pub async fn pending_invitations(&self) -> Vec<String> {
        let url = format!("{}/_emulator/businesses/{BUSINESS}/invitations", self.emulator_url);
        let all: Value = reqwest::get(&url).await.expect("invitations").json().await.expect("json");
        let mut emails: Vec<String> = all
            .as_array()
            .expect("a list")
            .iter()
            .filter(|i| i["status"] == "PENDING")
            .map(|i| i["email"].as_str().unwrap_or_default().to_string())
            .collect();
        emails.sort();
        emails
    }

    /// Tasks of the tenant, straight from the log store, oldest first.
    pub async fn tasks(&self) -> Vec<TaskRow> {
        let client = self.store.client().await.expect("db");
        client
            .query(
                "select id, user_email, outcome, status, reason, attempts, last_error, dead_lettered, from_role, to_role, job_id
                   from tasks where tenant_id = $1 order by created_at, id",
                &[&self.tenant],
            )
            .await
            .expect("query tasks")
            .into_iter()
            .map(|r| TaskRow {
                id: r.get(0),
                email: r.get(1),
                outcome: r.get(2),
                status: r.get(3),
                reason: r.get(4),
                attempts: r.get(5),
                last_error: r.get(6),
                dead_lettered: r.get(7),
                from_role: r.get(8),
                to_role: r.get(9),
                job_id: r.get(10),
            })
            .collect()
    }

    /// Waits until the pipeline is quiet: every outbox row sent and no task queued, running or
    /// retrying; at least `min_tasks` tasks exist. Returns the tasks.
    pub async fn settle(&self, min_tasks: usize) -> Vec<TaskRow> {
        self.try_settle(min_tasks, Duration::from_secs(60)).await.expect("pipeline settles")
    }

    pub async fn try_settle(&self, min_tasks: usize, limit: Duration) -> anyhow::Result<Vec<TaskRow>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let client = self.store.client().await?;
            let pending: i64 = client
                .query_one(
                    "select (select count(*) from outbox where sent_at is null and tenant_id = $1)
                          + (select count(*) from tasks where tenant_id = $1 and status in ('queued', 'running', 'retrying'))",
                    &[&self.tenant],
                )
                .await?
                .get(0);
            drop(client);
            let tasks = self.tasks().await;
            if pending == 0 && tasks.len() >= min_tasks {
                // The resolver may still hold a delivered message: give it a beat and re-check.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let again = self.tasks().await;
                if again.len() == tasks.len() && again.iter().all(|t| !t.is_open()) {
                    return Ok(again);
                }
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("pipeline not quiet after {limit:?}: pending {pending}, tasks {tasks:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Number of directory messages ever written to the outbox of this tenant.
    pub async fn outbox_count(&self) -> i64 {
        let client = self.store.client().await.expect("db");
        client
            .query_one("select count(*) from outbox where tenant_id = $1", &[&self.tenant])
            .await
            .expect("count")
            .get(0)
    }

    /// Calls the admin API as `token`: the status and the JSON body (Null when there is none),
    /// whatever the status, so tests can look at refusals.
    pub async fn call_as(&self, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.admin.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin call");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A new viewer admin token of the tenant (reads only).
    pub async fn viewer_token(&self) -> String {
        let v = self
            .admin
            .post(&format!("/api/v1/tenants/{}/admin-tokens", self.tenant), &json!({"role": "viewer"}))
            .await
            .expect("mint a viewer token");
        v["token"].as_str().expect("token").to_string()
    }

    /// A SCIM client holding a new token for the test integration's own directory (the IdLCM
    /// flow), as the IdP's app for that integration would.
    pub async fn integration_scim(&self) -> ScimClient {
        let v = self
            .admin
            .post(
                &format!("/api/v1/tenants/{}/scim-tokens", self.tenant),
                &json!({"integration_id": self.integration, "label": "Okta app"}),
            )
            .await
            .expect("mint an integration SCIM token");
        assert_eq!(v["scope"], json!(self.integration));
        ScimClient::new(format!("{}/scim/v2", self.base), v["token"].as_str().expect("token"))
    }

    /// [`Self::call_as`] the tenant's owner.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(&self.admin.token, method, path, body).await
    }

    /// Creates "Ads Hub", a business hub on [`ADS_BUSINESS`] (whose owner it seeds in the
    /// emulator) with the given ladders and assets (id, kind, name; seed them in the emulator
    /// first); returns the integration as the API answered.
    pub async fn ads_hub(&self, roles: &[&str], asset_roles: &[&str], assets: &[(&str, &str, &str)]) -> Value {
        self.emulator.seed(ADS_BUSINESS, "owner@example.com", "ADMIN").await.expect("seed the hub's owner");
        let assets: Vec<Value> =
            assets.iter().map(|(id, kind, name)| json!({"asset_id": id, "kind": kind, "name": name})).collect();
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/tenants/{}/integrations", self.tenant),
                Some(json!({
                    "name": "Ads Hub",
                    "app_kind": "business_hub",
                    "base_url": self.emulator_url,
                    "roles": roles,
                    "asset_roles": asset_roles,
                    "assets": assets,
                    "settings": {"business_id": ADS_BUSINESS},
                    "credential": "emulator-token",
                })),
            )
            .await;
        assert_eq!(status, 201, "create the ads hub: {v}");
        v
    }

    /// Who holds which Graph tasks on `asset` of [`ADS_BUSINESS`] in the emulator, by email.
    pub async fn asset_holders(&self, asset: &str) -> BTreeMap<String, BTreeSet<String>> {
        self.emulator.asset_tasks(ADS_BUSINESS).await.expect("emulator assets").remove(asset).unwrap_or_default()
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        self.admin.get(path).await.with_context(|| path.to_string()).expect("admin GET")
    }

    /// Stops every role, waits for them, and deletes this test's queues and exchanges.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            r.wait().await;
        }
        self.app_shutdown.cancel();
        self.app_tasks.close();
        self.app_tasks.wait().await;
        delete_topology(&self.settings.topology()).await;
    }
}

/// Deletes a test's own queues and exchanges so quorum queues do not pile up on the broker.
async fn delete_topology(topology: &unseat_bus::Topology) {
    let _ = topology.delete_at(&amqp_url(), "test-cleanup").await;
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.app_shutdown.cancel();
        if self.running.is_some() {
            // The test ended without `stop` (it failed, say): still clean up the broker.
            let topology = self.settings.topology();
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(delete_topology(&topology));
                }
            })
            .join();
        }
    }
}

/// One Automation Log task, as stored.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub id: Uuid,
    pub email: String,
    pub outcome: String,
    pub status: String,
    pub reason: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub dead_lettered: bool,
    pub from_role: Option<String>,
    pub to_role: Option<String>,
    pub job_id: Uuid,
}

impl TaskRow {
    pub fn is_open(&self) -> bool {
        matches!(self.status.as_str(), "queued" | "running" | "retrying")
    }
}

/// Signs in to the console at `base` with `token` through its sign-in form, as a browser does,
/// and returns the session cookie's value (`unseat_console`); the operator token signs in on its
/// way to a page. Panics when the sign-in is refused.
pub async fn console_session(base: &str, token: &str) -> String {
    fn cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
        resp.headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next()?.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let form = http.get(format!("{base}/console/sign-in")).send().await.expect("the sign-in page");
    let csrf = cookie(&form, "unseat_console_csrf").expect("the sign-in form's cookie");
    let signed_in = http
        .post(format!("{base}/console/sign-in"))
        .header("cookie", format!("unseat_console_csrf={csrf}"))
        .form(&[
            ("token", token),
            ("csrf", &csrf),
            ("next", "/console/tenants/00000000-0000-0000-0000-000000000000/log"),
        ])
        .send()
        .await
        .expect("sign in");
    cookie(&signed_in, "unseat_console").filter(|s| !s.is_empty()).expect("a session")
}
