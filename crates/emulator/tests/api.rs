//! The emulator over real HTTP: the app API behaves like Meta's business-user endpoints, and
//! the control plane seeds, injects faults and reports what happened.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use unseat_emulator::{serve_local, Emulator};

const BIZ: &str = "1234567890";

struct Hub {
    base: String,
    http: Client,
}

impl Hub {
    async fn start() -> Self {
        let base = serve_local(Emulator::new()).await.expect("emulator listens");
        Self { base, http: Client::new() }
    }

    async fn seed(&self, business: &str, email: &str, role: &str) -> Value {
        let resp = self
            .http
            .post(format!("{}/_emulator/businesses/{business}/users", self.base))
            .json(&json!({ "email": email, "role": role }))
            .send()
            .await
            .expect("seed");
        assert_eq!(resp.status(), StatusCode::CREATED);
        resp.json().await.expect("json")
    }

    async fn state(&self, business: &str) -> Vec<Value> {
        self.http
            .get(format!("{}/_emulator/businesses/{business}/users", self.base))
            .send()
            .await
            .expect("state")
            .json()
            .await
            .expect("json")
    }

    async fn fault(&self, rule: Value) {
        let resp = self.http.post(format!("{}/_emulator/faults", self.base)).json(&rule).send().await.expect("fault");
        assert_eq!(resp.status(), StatusCode::CREATED);
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v25.0/{path}", self.base)
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let resp = self.http.get(self.url(path)).query(query).send().await.expect("get");
        let status = resp.status();
        (status, resp.json().await.expect("json"))
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let resp = self.http.post(self.url(path)).form(form).send().await.expect("post");
        let status = resp.status();
        (status, resp.json().await.expect("json"))
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.delete(self.url(path)).query(&[("access_token", "tok")]).send().await.expect("delete");
        let status = resp.status();
        (status, resp.json().await.expect("json"))
    }
}

#[tokio::test]
async fn lists_business_users_page_by_page_with_cursors() {
    let hub = Hub::start().await;
    for i in 0..30 {
        hub.seed(BIZ, &format!("user{i:02}@example.com"), if i == 0 { "ADMIN" } else { "EMPLOYEE" }).await;
    }
    hub.seed("999", "other@example.com", "ADMIN").await;

    let mut emails = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query =
            vec![("access_token", "tok".to_string()), ("fields", "id,name,email,role".into()), ("limit", "7".into())];
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let resp = hub.http.get(hub.url(&format!("{BIZ}/business_users"))).query(&query).send().await.expect("list");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().contains_key("x-app-usage"));
        let buc: Value = serde_json::from_str(resp.headers()["x-business-use-case-usage"].to_str().expect("ascii"))
            .expect("json header");
        assert!(buc[BIZ].is_array());
        let body: Value = resp.json().await.expect("json");
        let data = body["data"].as_array().expect("data");
        assert!(data.len() <= 7);
        for u in data {
            assert!(u["id"].as_str().expect("id").bytes().all(|b| b.is_ascii_digit()));
            emails.push(u["email"].as_str().expect("email").to_string());
        }
        pages += 1;
        match body["paging"]["next"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&hub.base), "next is a full URL: {next}");
                after = Some(body["paging"]["cursors"]["after"].as_str().expect("cursor").to_string());
            }
            None => break,
        }
    }
    assert_eq!(pages, 5);
    let expected: Vec<String> = (0..30).map(|i| format!("user{i:02}@example.com")).collect();
    assert_eq!(emails, expected);

    // The default page is 25 users; limits above 100 are clamped, garbage cursors refused.
    let (_, body) = hub.get(&format!("{BIZ}/business_users"), &[("access_token", "tok")]).await;
    assert_eq!(body["data"].as_array().expect("data").len(), 25);
    assert!(body["data"][0].get("email").is_none(), "email only when asked for");
    let (status, body) =
        hub.get(&format!("{BIZ}/business_users"), &[("access_token", "tok"), ("after", "nonsense")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], 100);
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let hub = Hub::start().await;
    hub.seed(BIZ, "admin@example.com", "ADMIN").await;

    let (status, body) = hub.get(&format!("{BIZ}/business_users"), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], 190);
    assert_eq!(body["error"]["type"], "OAuthException");
    assert!(body["error"]["fbtrace_id"].is_string());

    let resp = hub
        .http
        .post(format!("{}/_emulator/businesses/{BIZ}/token", hub.base))
        .json(&json!({ "token": "s3cret" }))
        .send()
        .await
        .expect("token");
    assert!(resp.status().is_success());

    let (status, body) = hub.get(&format!("{BIZ}/business_users"), &[("access_token", "wrong")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], 190);
    let (status, _) = hub.get(&format!("{BIZ}/business_users"), &[("access_token", "s3cret")]).await;
    assert_eq!(status, StatusCode::OK);
    let resp =
        hub.http.get(hub.url(&format!("{BIZ}/business_users"))).bearer_auth("s3cret").send().await.expect("bearer");
    assert_eq!(resp.status(), StatusCode::OK);
    // The form body of a POST carries the token too.
    let (status, _) =
        hub.post(&format!("{BIZ}/business_users"), &[("access_token", "s3cret"), ("email", "new@example.com")]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn invites_changes_roles_and_removes_users_like_meta() {
    let hub = Hub::start().await;
    let admin = hub.seed(BIZ, "admin@example.com", "ADMIN").await;
    let admin_id = admin["id"].as_str().expect("id").to_string();

    let (status, body) = hub
        .post(
            &format!("{BIZ}/business_users"),
            &[("access_token", "tok"), ("email", "bob@example.com"), ("role", "ADMIN")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let bob = body["id"].as_str().expect("id").to_string();

    let (status, body) = hub
        .post(
            &format!("{BIZ}/business_users"),
            &[("access_token", "tok"), ("email", "BOB@example.com"), ("role", "EMPLOYEE")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], 100);
    let (status, body) = hub
        .post(
            &format!("{BIZ}/business_users"),
            &[("access_token", "tok"), ("email", "c@example.com"), ("role", "BOSS")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], 100);
    assert_eq!(hub.state(BIZ).await.len(), 2);

    let (status, body) = hub.get(&bob, &[("access_token", "tok"), ("fields", "id,name,email,role")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "id": bob, "name": "Bob", "email": "bob@example.com", "role": "ADMIN" }));

    let (status, body) = hub.post(&bob, &[("access_token", "tok"), ("role", "EMPLOYEE")]).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "success": true })));

    // Bob is no longer an admin, so the first admin is the last one.
    let (status, body) = hub.post(&admin_id, &[("access_token", "tok"), ("role", "EMPLOYEE")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], 3914);
    let (status, body) = hub.delete(&admin_id).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], 3914);

    let (status, body) = hub.delete(&bob).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "success": true })));
    let state = hub.state(BIZ).await;
    assert_eq!(state.len(), 1);
    assert_eq!(state[0]["email"], "admin@example.com");
    assert_eq!(state[0]["role"], "ADMIN");

    let (status, body) = hub.delete(&bob).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], 100);
    assert_eq!(body["error"]["error_subcode"], 33);
    assert_eq!(body["error"]["type"], "GraphMethodException");
    assert_eq!(
        body["error"]["message"],
        format!(
            "Unsupported delete request. Object with ID '{bob}' does not exist, cannot be loaded due to missing permissions, \
             or does not support this operation"
        )
    );
}

#[tokio::test]
async fn faults_are_injected_in_order_and_the_request_log_shows_them() {
    let hub = Hub::start().await;
    hub.seed(BIZ, "admin@example.com", "ADMIN").await;
    let path = format!("{BIZ}/business_users");

    hub.fault(json!({ "method": "GET", "path_contains": "/business_users", "status": 503, "times": 2 })).await;
    for _ in 0..2 {
        let (status, body) = hub.get(&path, &[("access_token", "tok")]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], 2);
    }
    let (status, _) = hub.get(&path, &[("access_token", "tok")]).await;
    assert_eq!(status, StatusCode::OK);

    hub.fault(json!({ "status": 429, "times": 1, "retry_after_s": 2 })).await;
    let resp = hub.http.get(hub.url(&path)).query(&[("access_token", "tok")]).send().await.expect("429");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "2");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], 4);

    hub.fault(json!({ "method": "DELETE", "status": 403 })).await;
    let (status, body) = hub.delete("100000000000001").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], 200);
    let (status, body) = hub.delete("100000000000001").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a rule without times stays until cleared: {body}");
    assert_eq!(hub.state(BIZ).await.len(), 1, "a faulted request changes nothing");

    let resp = hub.http.delete(format!("{}/_emulator/faults", hub.base)).send().await.expect("clear");
    assert!(resp.status().is_success());
    hub.fault(json!({ "latency_ms": 50 })).await;
    let (status, _) = hub.get(&path, &[("access_token", "tok")]).await;
    assert_eq!(status, StatusCode::OK, "a latency-only rule lets the request through");

    let log: Vec<Value> =
        hub.http.get(format!("{}/_emulator/requests", hub.base)).send().await.expect("log").json().await.expect("json");
    let statuses: Vec<u64> = log.iter().map(|r| r["status"].as_u64().expect("status")).collect();
    assert_eq!(statuses, vec![503, 503, 200, 429, 403, 403, 200]);
    assert_eq!(log[4]["method"], "DELETE");
    assert_eq!(log[4]["path"], "/v25.0/100000000000001");
    let at = log[0]["at"].as_str().expect("at");
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.contains('.'), "RFC 3339 with millis: {at}");
    assert!(!serde_json::to_string(&log).expect("json").contains("tok"), "the log never holds the token");

    let resp = hub.http.post(format!("{}/_emulator/reset", hub.base)).send().await.expect("reset");
    assert!(resp.status().is_success());
    assert!(hub.state(BIZ).await.is_empty());
    let log: Vec<Value> =
        hub.http.get(format!("{}/_emulator/requests", hub.base)).send().await.expect("log").json().await.expect("json");
    assert!(log.is_empty());
}

#[tokio::test]
async fn bad_control_input_is_refused_and_changes_nothing() {
    let hub = Hub::start().await;
    let cases = [
        ("abc", json!({ "email": "a@example.com", "role": "ADMIN" })),
        (BIZ, json!({ "email": "not-an-email", "role": "ADMIN" })),
        (BIZ, json!({ "email": "a@example.com", "role": "OVERLORD" })),
        (BIZ, json!({ "role": "ADMIN" })),
    ];
    for (business, body) in cases {
        let resp = hub
            .http
            .post(format!("{}/_emulator/businesses/{business}/users", hub.base))
            .json(&body)
            .send()
            .await
            .expect("seed");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{business} {body}");
    }
    assert!(hub.state(BIZ).await.is_empty());
    let resp = hub
        .http
        .post(format!("{}/_emulator/faults", hub.base))
        .json(&json!({ "times": 1 }))
        .send()
        .await
        .expect("fault");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (status, _) = hub.get(&format!("{BIZ}/business_users"), &[("access_token", "tok")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an unknown business is an unknown object");
}
