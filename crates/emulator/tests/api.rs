//! The emulator over real HTTP: the app API behaves like Meta's business-user endpoints, and
//! the control plane seeds, injects faults and reports what happened.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use unseat_emulator::{serve_local, Emulator, FaultRule, Settings};

const BIZ: &str = "1234567890";

struct Hub {
    base: String,
    http: Client,
    emu: Emulator,
}

impl Hub {
    async fn start() -> Self {
        let emu = Emulator::new();
        let base = serve_local(emu.clone()).await.expect("emulator listens");
        Self { base, http: Client::new(), emu }
    }

    async fn control(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self.http.post(format!("{}/_emulator/{path}", self.base)).json(&body).send().await.expect("control");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Asserts Meta's answer for an id that does not exist.
    fn assert_no_object(what: &str, status: StatusCode, body: &Value) {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(
            (body["error"]["code"].as_i64(), body["error"]["error_subcode"].as_i64()),
            (Some(100), Some(33)),
            "{what}: {body}"
        );
        assert_eq!(body["error"]["type"], "GraphMethodException", "{what}");
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

#[tokio::test]
async fn invitations_stay_pending_when_asked_and_are_listed_changed_accepted_and_revoked() {
    let hub = Hub::start().await;
    hub.seed(BIZ, "admin@example.com", "ADMIN").await;
    // By default an invited person is a business user at once.
    let (_, body) =
        hub.post(&format!("{BIZ}/business_users"), &[("access_token", "tok"), ("email", "now@example.com")]).await;
    assert!(hub.state(BIZ).await.iter().any(|u| u["id"] == body["id"]), "a member at once: {body}");

    let (status, settings) = hub.control("settings", json!({ "invitations_pending": true })).await;
    assert_eq!((status, settings["invitations_pending"].as_bool()), (StatusCode::OK, Some(true)));
    let (status, body) = hub
        .post(
            &format!("{BIZ}/business_users"),
            &[("access_token", "tok"), ("email", "ivy@example.com"), ("role", "EMPLOYEE")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let ivy = body["id"].as_str().expect("the invitation's id").to_string();
    assert!(!hub.state(BIZ).await.iter().any(|u| u["email"] == "ivy@example.com"), "not a business user yet");
    let (status, body) =
        hub.post(&format!("{BIZ}/business_users"), &[("access_token", "tok"), ("email", "IVY@example.com")]).await;
    assert_eq!((status, body["error"]["code"].as_i64()), (StatusCode::BAD_REQUEST, Some(100)), "invited twice");
    for i in 0..3 {
        let (status, _) = hub
            .control(
                &format!("businesses/{BIZ}/invitations"),
                json!({ "email": format!("p{i}@example.com"), "role": "EMPLOYEE" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }

    // Listed with the email filter (any case), the fields asked for and a summary.
    let pending = format!("{BIZ}/pending_users");
    let (status, body) = hub
        .get(
            &pending,
            &[
                ("access_token", "tok"),
                ("email", "Ivy@Example.com"),
                ("fields", "id,email,role,status"),
                ("summary", "total_count"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"],
        json!([{ "id": ivy, "email": "ivy@example.com", "role": "EMPLOYEE", "status": "PENDING" }])
    );
    assert_eq!(body["summary"]["total_count"], 1);
    // Paged like every edge.
    let (_, body) = hub.get(&pending, &[("access_token", "tok"), ("limit", "2"), ("summary", "total_count")]).await;
    assert_eq!((body["data"].as_array().map(Vec::len), body["summary"]["total_count"].as_i64()), (Some(2), Some(4)));
    assert!(body["paging"]["next"].is_string(), "{body}");
    let (_, body) = hub.get(&format!("{BIZ}/business_users"), &[("access_token", "tok")]).await;
    assert!(body.get("summary").is_none(), "a summary only when asked for");

    // The role it offers changes; then it is revoked, and a second revocation is an unknown object.
    let (status, body) = hub.post(&ivy, &[("access_token", "tok"), ("role", "DEVELOPER")]).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "success": true })));
    let (_, body) = hub.get(&ivy, &[("access_token", "tok"), ("fields", "id,role")]).await;
    assert_eq!(body, json!({ "id": ivy, "role": "DEVELOPER" }));
    let (status, body) = hub.delete(&ivy).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "success": true })));
    let (status, body) = hub.delete(&ivy).await;
    Hub::assert_no_object("revoked twice", status, &body);
    let (status, body) = hub.post("300000000009999", &[("access_token", "tok"), ("role", "ADMIN")]).await;
    Hub::assert_no_object("an unknown invitation", status, &body);

    // Accepting makes a business user with the invitation's role.
    let p0 = hub.emu.invitations(BIZ).into_iter().find(|i| i.email == "p0@example.com").expect("p0");
    let (status, user) = hub.control(&format!("invitations/{}/accept", p0.id), json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!((user["email"].as_str(), user["role"].as_str()), (Some("p0@example.com"), Some("EMPLOYEE")));
    assert_ne!(user["id"], json!(p0.id), "a business user's id, not the invitation's");
    let left: Vec<String> = hub.emu.invitations(BIZ).into_iter().map(|i| i.email).collect();
    assert_eq!(left, ["p1@example.com", "p2@example.com"]);
}

#[tokio::test]
async fn unknown_ids_are_unknown_objects_on_every_edge() {
    let hub = Hub::start().await;
    hub.seed(BIZ, "admin@example.com", "ADMIN").await;
    let gone = hub.seed(BIZ, "gone@example.com", "EMPLOYEE").await["id"].as_str().expect("id").to_string();
    let (status, _) = hub.delete(&gone).await;
    assert_eq!(status, StatusCode::OK);
    let q = [("access_token", "tok"), ("business", BIZ)];
    for path in [
        format!("{gone}/assigned_ad_accounts"),
        format!("{gone}/assigned_pages"),
        "999999999999999/assigned_ad_accounts".to_string(),
        "act_999/assigned_users".to_string(),
        "999/pending_users".to_string(),
    ] {
        let (status, body) = hub.get(&path, &q).await;
        Hub::assert_no_object(&path, status, &body);
    }
    // An edge the node does not have is a nonexisting field, not an unknown object.
    let admin = hub.state(BIZ).await[0]["id"].as_str().expect("id").to_string();
    let (status, body) = hub.get(&format!("{admin}/assigned_widgets"), &q).await;
    assert_eq!((status, body["error"]["code"].as_i64()), (StatusCode::BAD_REQUEST, Some(100)));
    assert!(body["error"].get("error_subcode").is_none(), "{body}");
}

#[tokio::test]
async fn a_cursor_stops_working_once_its_item_is_deleted() {
    let hub = Hub::start().await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..5 {
            let role = if i == 0 { "ADMIN" } else { "EMPLOYEE" };
            ids.push(hub.seed(BIZ, &format!("u{i}@example.com"), role).await["id"].as_str().expect("id").to_string());
        }
        ids
    };
    let list = format!("{BIZ}/business_users");
    let (_, page) = hub.get(&list, &[("access_token", "tok"), ("limit", "2")]).await;
    let after = page["paging"]["cursors"]["after"].as_str().expect("after").to_string();
    let (status, body) = hub.get(&list, &[("access_token", "tok"), ("limit", "2"), ("after", &after)]).await;
    assert_eq!((status, body["data"].as_array().map(Vec::len)), (StatusCode::OK, Some(2)), "the cursor works");
    let (status, _) = hub.delete(&ids[1]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = hub.get(&list, &[("access_token", "tok"), ("limit", "2"), ("after", &after)]).await;
    assert_eq!((status, body["error"]["code"].as_i64()), (StatusCode::BAD_REQUEST, Some(100)), "{body}");
}

#[tokio::test]
async fn an_empty_page_fault_answers_nothing_with_a_next_that_goes_on() {
    let hub = Hub::start().await;
    for i in 0..5 {
        hub.seed(BIZ, &format!("u{i}@example.com"), if i == 0 { "ADMIN" } else { "EMPLOYEE" }).await;
    }
    hub.emu
        .add_fault(FaultRule {
            empty_page: true,
            path_contains: Some("/business_users".into()),
            times: Some(2),
            ..Default::default()
        })
        .expect("fault");
    let list = format!("{BIZ}/business_users");
    let query = [("access_token", "tok"), ("limit", "2"), ("fields", "email")];
    let mut emails = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let body: Value = match &next {
            None => hub.get(&list, &query).await.1,
            Some(url) => hub.http.get(url).send().await.expect("next").json().await.expect("json"),
        };
        let data = body["data"].as_array().expect("data").clone();
        pages.push(data.len());
        if data.is_empty() {
            assert!(body["paging"].get("cursors").is_none(), "an empty page has no cursors: {body}");
        }
        emails.extend(data.iter().map(|u| u["email"].as_str().expect("email").to_string()));
        match body["paging"]["next"].as_str() {
            Some(url) => next = Some(url.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, [0, 0, 2, 2, 1], "two empty pages first, then everything");
    assert_eq!(emails, (0..5).map(|i| format!("u{i}@example.com")).collect::<Vec<_>>());
}

#[tokio::test]
async fn each_kind_of_asset_takes_its_own_tasks() {
    let hub = Hub::start().await;
    let user = hub.seed(BIZ, "admin@example.com", "ADMIN").await["id"].as_str().expect("id").to_string();
    let ads = hub.emu.seed_asset(BIZ, "ad_account", "Ads").expect("ads").id;
    let page = hub.emu.seed_asset(BIZ, "page", "Page").expect("page").id;
    let assign = |asset: &str, tasks: &str| {
        let (hub, asset, user, tasks) = (&hub, asset.to_string(), user.clone(), tasks.to_string());
        async move {
            hub.post(
                &format!("{asset}/assigned_users"),
                &[("access_token", "tok"), ("user", &user), ("tasks", &tasks), ("business", BIZ)],
            )
            .await
        }
    };
    for tasks in [r#"["AA_ANALYZE"]"#, r#"["DRAFT","ANALYZE"]"#, r#"["MANAGE","ADVERTISE","ANALYZE"]"#] {
        let (status, body) = assign(&ads, tasks).await;
        assert_eq!(status, StatusCode::OK, "{tasks} on an ad account: {body}");
    }
    for tasks in [r#"["CREATE_CONTENT"]"#, r#"["MESSAGING"]"#, r#"["FULL_CONTROL"]"#] {
        let (status, body) = assign(&ads, tasks).await;
        assert_eq!(
            (status, body["error"]["code"].as_i64()),
            (StatusCode::BAD_REQUEST, Some(100)),
            "{tasks} on an ad account"
        );
    }
    for tasks in [
        r#"["FULL_CONTROL"]"#,
        r#"["CONTENT","MESSAGES","COMMUNITY_ACTIVITY"]"#,
        r#"["CREATE_CONTENT","MODERATE"]"#,
        r#"["ADVERTISE","ANALYZE"]"#,
    ] {
        let (status, body) = assign(&page, tasks).await;
        assert_eq!(status, StatusCode::OK, "{tasks} on a page: {body}");
    }
    for tasks in [r#"["AA_ANALYZE"]"#, r#"["DRAFT"]"#] {
        let (status, _) = assign(&page, tasks).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{tasks} on a page");
    }
    let held = |asset: &str| {
        hub.emu.assets(BIZ).into_iter().find(|a| a.id == asset).and_then(|a| a.assigned.get(&user).cloned())
    };
    assert_eq!(
        held(&ads),
        Some(vec!["MANAGE".into(), "ADVERTISE".into(), "ANALYZE".into()]),
        "a refused POST changes nothing"
    );
    assert_eq!(held(&page), Some(vec!["ADVERTISE".into(), "ANALYZE".into()]));
}

#[tokio::test]
async fn the_role_field_can_report_base_roles_only_as_meta_does() {
    let hub = Hub::start().await;
    hub.seed(BIZ, "admin@example.com", "ADMIN").await;
    let dev = hub.seed(BIZ, "dev@example.com", "DEVELOPER").await["id"].as_str().expect("id").to_string();
    let query = [("access_token", "tok"), ("fields", "role")];
    assert_eq!(hub.get(&dev, &query).await.1["role"], "DEVELOPER");
    hub.emu.set_settings(Settings { base_roles_only: true, ..Default::default() });
    assert_eq!(hub.get(&dev, &query).await.1["role"], "EMPLOYEE");
    let (_, body) =
        hub.get(&format!("{BIZ}/business_users"), &[("access_token", "tok"), ("fields", "email,role")]).await;
    assert_eq!(
        body["data"],
        json!([{ "email": "admin@example.com", "role": "ADMIN" }, { "email": "dev@example.com", "role": "EMPLOYEE" }])
    );
    assert!(hub.state(BIZ).await.iter().any(|u| u["role"] == "DEVELOPER"), "the control plane shows the role held");
}

/// With an hourly budget, the usage headers report the share of it used, and once it is spent
/// every call is throttled as Meta throttles: HTTP 400, code 4, no Retry-After, and the
/// minutes until access comes back in the use-case usage. The throttled calls count too.
#[tokio::test]
async fn an_hourly_budget_is_reported_and_then_enforced_like_meta() {
    let hub = Hub::start().await;
    hub.seed(BIZ, "a@example.com", "ADMIN").await;
    let (status, settings) = hub.control("settings", json!({ "hourly_call_budget": 4 })).await;
    assert_eq!((status, settings["hourly_call_budget"].as_u64()), (StatusCode::OK, Some(4)));
    let list = || {
        hub.http
            .get(hub.url(&format!("{BIZ}/business_users")))
            .query(&[("access_token", "tok"), ("fields", "id,email")])
            .send()
    };
    let usage = |resp: &reqwest::Response| -> (u64, u64, u64) {
        let app: Value = serde_json::from_str(resp.headers()["x-app-usage"].to_str().expect("ascii")).expect("json");
        let buc: Value =
            serde_json::from_str(resp.headers()["x-business-use-case-usage"].to_str().expect("ascii")).expect("json");
        let entry = &buc[BIZ][0];
        (
            app["call_count"].as_u64().expect("app call_count"),
            entry["call_count"].as_u64().expect("buc call_count"),
            entry["estimated_time_to_regain_access"].as_u64().expect("regain"),
        )
    };
    let mut seen = Vec::new();
    for _ in 0..4 {
        let resp = list().await.expect("list");
        assert_eq!(resp.status(), StatusCode::OK);
        seen.push(usage(&resp));
    }
    assert_eq!(seen, [(25, 25, 0), (50, 50, 0), (75, 75, 0), (100, 100, 0)]);
    for _ in 0..2 {
        let resp = list().await.expect("list");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(!resp.headers().contains_key("retry-after"));
        let (app, buc, regain) = usage(&resp);
        assert_eq!((app, buc), (100, 100));
        assert!((1..=60).contains(&regain), "{regain} minutes");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], 4, "{body}");
    }
    assert_eq!(hub.emu.requests().iter().filter(|r| r.status == 400).count(), 2);
}

/// A control body that is not one JSON object is refused and changes nothing: `[]` once read as
/// "every setting off", and `[true]` as the first field on.
#[tokio::test]
async fn a_control_body_that_is_not_an_object_is_refused() {
    let hub = Hub::start().await;
    let (status, _) = hub.control("settings", json!({ "invitations_pending": true })).await;
    assert_eq!(status, StatusCode::OK);
    for body in [json!([]), json!([true]), json!("x"), json!(null)] {
        let (status, answer) = hub.control("settings", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}: {answer}");
    }
    let (status, answer) = hub.control(&format!("businesses/{BIZ}/users"), json!([["a@example.com", "ADMIN"]])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    // A field given twice is refused, not read as its last value.
    let twice = r#"{"invitations_pending": false, "invitations_pending": false}"#;
    let resp = hub
        .http
        .post(format!("{}/_emulator/settings", hub.base))
        .header("content-type", "application/json")
        .body(twice)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.expect("text").contains("duplicate field"));
    let settings: Value =
        hub.http.get(format!("{}/_emulator/settings", hub.base)).send().await.expect("get").json().await.expect("json");
    assert_eq!(settings["invitations_pending"], json!(true), "unchanged: {settings}");
    assert!(hub.state(BIZ).await.is_empty(), "no user seeded");
}
