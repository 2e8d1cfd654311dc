//! Starts the console on a free port against a fresh database, as a deployment would.

#![allow(dead_code)]

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use unseat_console::{router, ConsoleState};
use unseat_store::Store;
use unseat_telemetry::Metrics;
use uuid::Uuid;

pub const OPERATOR: &str = "operator-test-token";
pub const EXCHANGE: &str = "unseat_test.directory";

pub struct TestApp {
    pub base: String,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    /// The console session each token signed in to, by token.
    sessions: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// The value of cookie `name` that a response sets, if it sets one.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
    pub content_type: String,
    /// Where a redirect points, if it is one.
    pub location: Option<String>,
}

impl Answer {
    async fn read(resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let location = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(String::from);
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, body, text, content_type, location }
    }
}

pub async fn spawn_app() -> TestApp {
    let sealing = unseat_store::credentials::Sealing {
        key: Some(unseat_store::credentials::CredentialKey::generate()),
        allow_plaintext: false,
    };
    spawn_app_with(sealing).await
}

/// [`spawn_app`] with the given credential sealing (a key, none, plaintext allowed).
pub async fn spawn_app_with(credentials: unseat_store::credentials::Sealing) -> TestApp {
    let (_, store) = unseat_store::testing::fresh_database().await.expect("fresh database");
    let metrics = Arc::new(Metrics::new());
    let state = ConsoleState {
        store: store.clone(),
        metrics: metrics.clone(),
        operator_token: Some(OPERATOR.to_string()),
        directory_exchange: EXCHANGE.to_string(),
        credentials,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metrics_for_ops = metrics.clone();
    tokio::spawn(async move {
        // Served as the role's server does: merged with the ops endpoints and with another
        // router that owns the fallback (as the SCIM router does).
        let other = axum::Router::new().fallback(|| async { (axum::http::StatusCode::IM_A_TEAPOT, "other") });
        let app = router(state).merge(unseat_telemetry::ops_router(metrics_for_ops)).merge(other);
        axum::serve(listener, app).await.expect("serve");
    });
    TestApp {
        base: format!("http://{addr}"),
        store,
        metrics,
        http: reqwest::Client::new(),
        sessions: Default::default(),
    }
}

impl TestApp {
    /// Sends a request; `token` None sends no Authorization header; `body` None sends none.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Answer::read(req.send().await.expect("request")).await
    }

    pub async fn raw(&self, method: Method, path: &str, token: &str, body: impl Into<String>) -> Answer {
        let resp = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await
            .expect("request");
        Answer::read(resp).await
    }

    /// Signs in to the console with `token` through the sign-in form, as a browser does, and
    /// returns the session cookie's value (the same one for every later call with that token);
    /// None when the sign-in is refused.
    pub async fn session(&self, token: &str) -> Option<String> {
        if let Some(session) = self.sessions.lock().expect("sessions").get(token) {
            return Some(session.clone());
        }
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let form = http.get(format!("{}/console/sign-in", self.base)).send().await.expect("the sign-in page");
        let csrf = set_cookie(&form, "unseat_console_csrf").expect("the sign-in form's cookie");
        // The operator token has no tenant of its own: it signs in on its way to a page.
        let next = "/console/tenants/00000000-0000-0000-0000-000000000000/log";
        let body = format!("token={}&csrf={csrf}&next={}", urlencode(token), urlencode(next));
        let signed_in = http
            .post(format!("{}/console/sign-in", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", format!("unseat_console_csrf={csrf}"))
            .body(body)
            .send()
            .await
            .expect("sign in");
        let session = set_cookie(&signed_in, "unseat_console").filter(|s| !s.is_empty())?;
        self.sessions.lock().expect("sessions").insert(token.to_string(), session.clone());
        Some(session)
    }

    /// A console page as a browser signed in with `token` gets it: the session cookie sent
    /// (none when the sign-in was refused), redirects not followed. `form` is a urlencoded form
    /// body to POST.
    pub async fn page(&self, path: &str, token: &str, form: Option<String>) -> Answer {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let url = format!("{}{}", self.base, path);
        let mut req = match form {
            None => http.get(url),
            Some(form) => http.post(url).header("content-type", "application/x-www-form-urlencoded").body(form),
        };
        if let Some(session) = self.session(token).await {
            req = req.header("cookie", format!("unseat_console={session}"));
        }
        Answer::read(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// Creates a tenant as the operator; returns (id, scim token, owner admin token).
    pub async fn tenant(&self, name: &str) -> (Uuid, String, String) {
        let a = self.post("/api/v1/tenants", OPERATOR, json!({ "name": name })).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        let id = a.body["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).expect("tenant id");
        let scim = a.body["scim_token"].as_str().expect("scim token").to_string();
        let admin = a.body["admin_token"].as_str().expect("admin token").to_string();
        (id, scim, admin)
    }

    /// The id (as the token list gives it) of the tenant's first token with `field` equal to
    /// `value` (`role`, `label`), listed with `token`.
    pub async fn token_id(&self, tenant: Uuid, token: &str, field: &str, value: &str) -> String {
        let tokens = self.get(&format!("/api/v1/tenants/{tenant}/tokens"), token).await;
        tokens.body["tokens"]
            .as_array()
            .and_then(|all| all.iter().find(|t| t[field] == value))
            .and_then(|t| t["id"].as_str())
            .unwrap_or_else(|| panic!("no token with {field} {value:?}: {}", tokens.text))
            .to_string()
    }

    pub async fn admin_token(&self, tenant: Uuid, token: &str, role: &str) -> String {
        let a = self.post(&format!("/api/v1/tenants/{tenant}/admin-tokens"), token, json!({ "role": role })).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        a.body["token"].as_str().expect("token").to_string()
    }

    /// A valid business hub integration; returns its id.
    pub async fn integration(&self, tenant: Uuid, token: &str, name: &str) -> Uuid {
        let a = self.post(&format!("/api/v1/tenants/{tenant}/integrations"), token, integration_body(name)).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        a.body["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).expect("integration id")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let client = self.store.client().await.expect("client");
        client.query_one(sql, &[]).await.expect("count").get(0)
    }

    pub async fn exec(&self, sql: &str, params: &[&(dyn unseat_store::tokio_postgres::types::ToSql + Sync)]) {
        let client = self.store.client().await.expect("client");
        client.execute(sql, params).await.expect("exec");
    }

    pub async fn add_user(&self, tenant: Uuid, user_name: &str) -> Uuid {
        let id = Uuid::new_v4();
        self.exec(
            "insert into scim_users (tenant_id, id, user_name, user_name_key, email, resource)
             values ($1, $2, $3, $4, $3, '{}')",
            &[&tenant, &id, &user_name, &unseat_domain::text::fold(user_name)],
        )
        .await;
        id
    }

    pub async fn add_team(&self, tenant: Uuid, name: &str, members: &[Uuid]) -> Uuid {
        let id = Uuid::new_v4();
        self.exec(
            "insert into scim_groups (tenant_id, id, display_name, display_name_key, resource)
             values ($1, $2, $3, $4, '{}')",
            &[&tenant, &id, &name, &unseat_domain::text::fold(name)],
        )
        .await;
        for m in members {
            self.exec(
                "insert into group_members (tenant_id, group_id, user_id) values ($1, $2, $3)",
                &[&tenant, &id, m],
            )
            .await;
        }
        id
    }
}

/// A business hub integration named `name`, at an address of its own (two integrations may
/// not call the same app).
pub fn integration_body(name: &str) -> Value {
    let slug: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    json!({
        "name": name,
        "app_kind": "business_hub",
        "base_url": format!("http://127.0.0.1:9/hub/{slug}"),
        "roles": ["ADMIN", "EMPLOYEE"],
        "default_role": "EMPLOYEE",
        "settings": { "business_id": "4100000001" },
        "credential": "s3cret-credential-value",
    })
}

/// A job of `tenant` created at `at` (RFC 3339), as the resolver would have written it.
pub async fn add_job(app: &TestApp, tenant: Uuid, at: &str, summary: &str) -> Uuid {
    let id = Uuid::new_v4();
    let client = app.store.client().await.unwrap();
    client
        .execute(
            "insert into jobs (tenant_id, id, trigger_method, trigger_path, user_agent, summary, received_at, created_at)
             values ($1, $2, 'PATCH', '/scim/v2/Groups/x', 'Okta SCIM Client', $3, $4::text::timestamptz, $4::text::timestamptz)",
            &[&tenant, &id, &summary, &at],
        )
        .await
        .unwrap();
    id
}

/// A removal task of `job` with `status`, created at `at` (RFC 3339).
pub async fn add_task(app: &TestApp, tenant: Uuid, job: Uuid, integration: Uuid, status: &str, at: &str) -> Uuid {
    let id = Uuid::new_v4();
    let client = app.store.client().await.unwrap();
    client
        .execute(
            "insert into tasks (tenant_id, id, job_id, integration_id, user_id, user_email, outcome, from_role, to_role,
                                reason, desired_version, status, created_at)
             values ($1, $2, $3, $4, $5, 'alice@example.com', 'remove', 'ADMIN', null, 'removed: no grant', 1, $6, $7::text::timestamptz)",
            &[&tenant, &id, &job, &integration, &Uuid::new_v4(), &status, &at],
        )
        .await
        .unwrap();
    id
}

/// A tenant "Acme" with an integration "Hub" and one task of it (see [`tenant_with_a_task`]).
pub struct OneTask {
    pub tenant: Uuid,
    /// The owner's admin token.
    pub owner: String,
    pub integration: Uuid,
    pub job: Uuid,
    pub task: Uuid,
}

/// [`OneTask`] in `status`, of a job of 2026-01-01.
pub async fn tenant_with_a_task(app: &TestApp, status: &str) -> OneTask {
    let (tenant, _, owner) = app.tenant("Acme").await;
    let integration = app.integration(tenant, &owner, "Hub").await;
    let job = add_job(app, tenant, "2026-01-01T00:00:01Z", "job").await;
    let task = add_task(app, tenant, job, integration, status, "2026-01-01T00:00:01Z").await;
    OneTask { tenant, owner, integration, job, task }
}

/// `text` percent-encoded for a form body.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
