//! The SCIM service driven over real HTTP against a fresh database: responses, stored state
//! and the outbox rows each change writes.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use unseat_ingest::{router, IngestConfig, IngestState};
use unseat_store::Store;
use uuid::Uuid;

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const EXCHANGE: &str = "test.directory";

struct App {
    base: String,
    token: String,
    tenant: Uuid,
    database_url: String,
    store: Store,
    metrics: Arc<unseat_telemetry::Metrics>,
    http: reqwest::Client,
}

async fn spawn_app() -> App {
    spawn_app_with_limit(256 * 1024).await
}

async fn spawn_app_with_limit(body_limit: usize) -> App {
    spawn_app_with(IngestConfig { body_limit, ..Default::default() }).await
}

async fn spawn_app_with(config: IngestConfig) -> App {
    spawn_app_in(unseat_store::testing::fresh_database().await.expect("test database"), config).await
}

async fn spawn_app_in((database_url, store): (String, unseat_store::Store), config: IngestConfig) -> App {
    let tenant = Uuid::new_v4();
    store
        .client()
        .await
        .unwrap()
        .execute("insert into tenants (id, name) values ($1, $2)", &[&tenant, &"Acme"])
        .await
        .unwrap();
    let token = unseat_store::tokens::generate("scim");
    store.insert_token(tenant, &token, "scim", None, None, "test").await.unwrap();
    let metrics = Arc::new(unseat_telemetry::Metrics::new());
    let state = IngestState::new(store.clone(), metrics.clone(), EXCHANGE.to_string(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router(state)).await.unwrap();
    });
    let http = reqwest::Client::new();
    App { base: format!("http://{addr}/scim/v2"), token, tenant, database_url, store, metrics, http }
}

impl App {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        self.call_with(method, path, body, &[]).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, body, headers)
    }

    /// `n` users named `{prefix}{i}@example.com`, their ids in order.
    async fn create_users(&self, prefix: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            ids.push(self.create_user(&format!("{prefix}{i}@example.com")).await);
        }
        ids
    }

    async fn create_user(&self, user_name: &str) -> String {
        let (s, b, _) = self
            .call(
                Method::POST,
                "/Users",
                Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name,
                            "emails": [{"value": user_name, "type": "work", "primary": true}], "active": true})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["id"].as_str().unwrap().to_string()
    }

    async fn create_group(&self, name: &str, members: &[&str]) -> String {
        let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
        let (s, b, _) =
            self.call(Method::POST, "/Groups", Some(json!({"displayName": name, "members": members}))).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["id"].as_str().unwrap().to_string()
    }

    /// The service's answer to `filter` is what the filter selects evaluated in memory on `all`
    /// (every user); `at` names the case in a failure.
    async fn assert_selects_as_evaluated(&self, all: &[Value], filter: &str, at: &str) {
        let parsed = unseat_scim::Filter::parse(filter).unwrap();
        let mut expected: Vec<String> =
            all.iter().filter(|u| parsed.matches(u)).map(|u| u["id"].as_str().unwrap().to_string()).collect();
        expected.sort();
        let (s, b, _) = self.call(Method::GET, &format!("/Users?filter={}", filter_query(filter)), None).await;
        assert_eq!(s, StatusCode::OK, "{at} {filter}: {b}");
        assert_eq!(ids_of(&b), expected, "{at} {filter}");
    }

    /// `n` users `bulk1`, `bulk2`, … written straight into the directory, announcing nothing.
    async fn add_bulk_users(&self, n: i32) {
        let c = self.store.client().await.unwrap();
        c.execute(
            "insert into scim_users (tenant_id, id, user_name, user_name_key, resource)
             select $1, gen_random_uuid(), 'bulk' || i, 'bulk' || i, jsonb_build_object('userName', 'bulk' || i)
               from generate_series(1, $2) i",
            &[&self.tenant, &n],
        )
        .await
        .unwrap();
    }

    /// Every outbox row of the tenant, oldest first: (exchange, routing key, payload).
    async fn outbox(&self) -> Vec<(String, String, Value)> {
        let c = self.store.client().await.unwrap();
        c.query("select exchange, routing_key, payload from outbox where tenant_id = $1 order by id", &[&self.tenant])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    async fn count(&self, table: &str) -> i64 {
        let c = self.store.client().await.unwrap();
        c.query_one(&format!("select count(*) from {table} where tenant_id = $1"), &[&self.tenant])
            .await
            .unwrap()
            .get(0)
    }
}

fn patch(ops: Value) -> Option<Value> {
    Some(json!({"schemas": [PATCH_OP], "Operations": ops}))
}

fn users_of(payload: &Value) -> Vec<String> {
    let mut u: Vec<String> =
        payload["users"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    u.sort();
    u
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn assert_scim_error(body: &Value, status: &str, scim_type: Option<&str>) {
    assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error", "{body}");
    assert_eq!(body["status"], status, "{body}");
    if let Some(t) = scim_type {
        assert_eq!(body["scimType"], t, "{body}");
    }
}

#[tokio::test]
async fn user_lifecycle_with_outbox_rows_only_for_access_changes() {
    let app = spawn_app().await;
    let (s, created, h) = app
        .call(
            Method::POST,
            "/Users",
            Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice@example.com",
                        "name": {"givenName": "Alice"}, "password": "secret", "externalId": "ext-a",
                        "emails": [{"value": "alice@example.com", "type": "work", "primary": true}]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(h["content-type"], "application/scim+json");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(h["location"].to_str().unwrap(), format!("{}/Users/{id}", app.base));
    assert_eq!(created["meta"]["resourceType"], "User");
    assert_eq!(created["meta"]["version"], "W/\"1\"");
    assert_eq!(created["meta"]["location"], format!("{}/Users/{id}", app.base));
    assert!(created["meta"]["created"].is_string() && created["meta"]["lastModified"].is_string());
    assert!(created.get("password").is_none());
    // Sent without `active`: the user counts as active.
    let (_, list, _) = app.call(Method::GET, "/Users?filter=active%20eq%20true", None).await;
    assert_eq!(list["totalResults"], 1);

    let (s, got, h) = app.call(Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["userName"], "alice@example.com");
    assert_eq!(h["etag"], "W/\"1\"");

    // filter by userName, case-insensitively, and by externalId
    let (s, list, _) = app
        .call(Method::GET, "/Users?filter=userName%20eq%20%22ALICE%40example.com%22&startIndex=1&count=100", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["itemsPerPage"], 1);
    assert_eq!(list["startIndex"], 1);
    assert_eq!(list["Resources"][0]["id"], id.as_str());
    let (_, list, _) = app.call(Method::GET, "/Users?filter=userName%20eq%20%22nobody%22", None).await;
    assert_eq!(list["totalResults"], 0);
    assert_eq!(list["Resources"], json!([]));
    let (_, list, _) = app.call(Method::GET, "/Users?filter=externalId%20eq%20%22ext-a%22", None).await;
    assert_eq!(list["totalResults"], 1);
    let (_, list, _) = app.call(Method::GET, "/Users?filter=name.givenName%20sw%20%22ali%22", None).await;
    assert_eq!(list["totalResults"], 1);

    // A displayName change does not alter access: no outbox row.
    let (s, b, _) = app
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            patch(json!([{"op": "replace", "path": "displayName", "value": "Al"}])),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["displayName"], "Al");
    assert_eq!(b["meta"]["version"], "W/\"2\"");
    assert!(app.outbox().await.is_empty());

    // Deactivate with a boolean.
    let (s, b, _) = app
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            patch(json!([{"op": "replace", "path": "active", "value": false}])),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["active"], false);
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, EXCHANGE);
    assert_eq!(rows[0].1, unseat_bus::DIRECTORY_ROUTING_KEY);
    let msg: unseat_bus::messages::DirectoryChanged = serde_json::from_value(rows[0].2.clone()).unwrap();
    assert_eq!(msg.tenant_id, app.tenant);
    assert_eq!(msg.scope, "workspace");
    assert_eq!(msg.users, vec![Uuid::parse_str(&id).unwrap()]);
    assert_eq!(msg.trigger.method, "PATCH");
    assert_eq!(msg.trigger.path, format!("/scim/v2/Users/{id}"));
    assert_eq!(msg.trigger.summary, "user alice@example.com deactivated");

    // The same PATCH again changes nothing: no row, no new version.
    let (s, b, _) = app
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            patch(json!([{"op": "Replace", "path": "active", "value": "False"}])),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["meta"]["version"], "W/\"3\"");
    assert_eq!(app.outbox().await.len(), 1);

    // Reactivate with Entra's string, path-less.
    let (s, b, _) = app
        .call(Method::PATCH, &format!("/Users/{id}"), patch(json!([{"op": "Replace", "value": {"active": "True"}}])))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["active"], true);
    // Deactivate with the string "False".
    let (s, _, _) = app
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            patch(json!([{"op": "Replace", "path": "active", "value": "False"}])),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1].2["trigger"]["summary"], "user alice@example.com reactivated");
    assert_eq!(rows[2].2["trigger"]["summary"], "user alice@example.com deactivated");

    // PUT that reactivates: one row. PUT that changes only the name: none.
    let put = |active: bool, given: &str| {
        Some(
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": id, "userName": "alice@example.com",
                    "name": {"givenName": given}, "active": active, "groups": [], "meta": {"resourceType": "User"},
                    "emails": [{"value": "alice@example.com", "type": "work", "primary": true}]}),
        )
    };
    let (s, b, _) = app.call(Method::PUT, &format!("/Users/{id}"), put(true, "Alice")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["active"], true);
    assert_eq!(app.outbox().await.len(), 4);
    let (s, b, _) = app.call(Method::PUT, &format!("/Users/{id}"), put(true, "Alicia")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["name"]["givenName"], "Alicia");
    assert!(b.get("displayName").is_none(), "PUT replaces the whole resource");
    assert_eq!(app.outbox().await.len(), 4);

    // Delete: 204, one row, then 404.
    let (s, b, _) = app.call(Method::DELETE, &format!("/Users/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(b, Value::Null);
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 5);
    assert_eq!(users_of(&rows[4].2), vec![id.clone()]);
    assert_eq!(rows[4].2["trigger"]["summary"], "user alice@example.com deleted");
    assert_eq!(rows[4].2["trigger"]["method"], "DELETE");
    let (s, b, _) = app.call(Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_scim_error(&b, "404", None);
}

#[tokio::test]
async fn deactivations_are_written_on_the_generic_plan_connections() {
    let app = spawn_app().await;
    let new_user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "gen@example.com"});
    let (status, user, _) = app.call(Method::POST, "/Users", Some(new_user)).await;
    assert_eq!(status, StatusCode::CREATED);
    let path = format!("/Users/{}", user["id"].as_str().unwrap());
    let deactivate =
        json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active", "value": false}]});
    let (status, body, _) = app.call(Method::PATCH, &path, Some(deactivate)).await;
    assert_eq!((status, &body["active"]), (StatusCode::OK, &json!(false)));
    // The writer's session is the only one of that pool, and the last thing it ran was the
    // group-commit statement (its plan mode is the pool's, checked in unseat-store).
    let last: Vec<String> = app
        .store
        .client()
        .await
        .unwrap()
        .query(
            "select query from pg_stat_activity where datname = current_database() and application_name = $1",
            &[&unseat_store::GENERIC_PLANS_APP],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(last.len(), 1, "{last:?}");
    assert!(last[0].contains("update scim_users s set active"), "{last:?}");
}

/// Concurrent deactivations are all carried out, each announced once, and the group-commit
/// metric accounts for every one of them (however they were batched).
#[tokio::test]
async fn concurrent_deactivations_all_take_effect_and_the_group_commit_metric_counts_each() {
    let app = Arc::new(spawn_app().await);
    let ids = app.create_users("c", 40).await;
    let deactivate =
        json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active", "value": false}]});
    let requests: Vec<_> = ids
        .iter()
        .map(|id| {
            let (app, path, body) = (app.clone(), format!("/Users/{id}"), deactivate.clone());
            tokio::spawn(async move { app.call(Method::PATCH, &path, Some(body)).await })
        })
        .collect();
    for request in requests {
        let (status, body, _) = request.await.unwrap();
        assert_eq!((status, &body["active"]), (StatusCode::OK, &json!(false)), "{body}");
    }
    let client = app.store.client().await.unwrap();
    let inactive: i64 = client
        .query_one("select count(*) from scim_users where tenant_id = $1 and not active", &[&app.tenant])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inactive, 40);
    let announced: i64 = client
        .query_one(
            "select count(*) from outbox where tenant_id = $1 and payload->'trigger'->>'summary' like '%deactivated'",
            &[&app.tenant],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(announced, 40, "one directory change per deactivation");
    let value = |part: &str| {
        let series = format!("unseat_scim_group_commit_changes_{part}{{kind=\"activations\"}}");
        app.metrics.sample(&series).unwrap_or_else(|| panic!("no {series} in {}", app.metrics.encode()))
    };
    assert_eq!(value("sum"), 40.0, "every deactivation written once");
    let writes = value("count");
    assert!((1.0..=40.0).contains(&writes), "{writes} writes for 40 changes");
}

#[tokio::test]
async fn duplicate_user_name_is_409_uniqueness_ignoring_case() {
    let app = spawn_app().await;
    app.create_user("Bob@Example.com").await;
    let (s, b, _) = app.call(Method::POST, "/Users", Some(json!({"userName": "bob@example.COM"}))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_scim_error(&b, "409", Some("uniqueness"));
    assert_eq!(app.count("scim_users").await, 1);
    // Renaming another user onto it is a conflict too, and changes nothing.
    let other = app.create_user("carol@example.com").await;
    let (s, b, _) = app
        .call(
            Method::PATCH,
            &format!("/Users/{other}"),
            patch(json!([{"op": "replace", "path": "userName", "value": "BOB@example.com"}])),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_scim_error(&b, "409", Some("uniqueness"));
    let (_, b, _) = app.call(Method::GET, &format!("/Users/{other}"), None).await;
    assert_eq!(b["userName"], "carol@example.com");
}

#[tokio::test]
async fn authentication_failures_are_401_and_change_nothing() {
    let app = spawn_app().await;
    let body = json!({"userName": "mallory@example.com"}).to_string();
    for auth in [None, Some("Bearer wrong-token"), Some("Basic dXNlcjpwYXNz"), Some("Bearer ")] {
        let mut req = app
            .http
            .post(format!("{}/Users", app.base))
            .header("content-type", "application/scim+json")
            .body(body.clone());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let b: Value = resp.json().await.unwrap();
        assert_scim_error(&b, "401", None);
    }
    // A token of another (real) tenant's admin is not a SCIM token either.
    let admin = unseat_store::tokens::generate("adm");
    app.store.insert_token(app.tenant, &admin, "admin", None, Some("owner"), "t").await.unwrap();
    let resp = app.http.get(format!("{}/Users", app.base)).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.count("scim_users").await, 0);
    assert!(app.outbox().await.is_empty());
}

#[tokio::test]
async fn malformed_and_invalid_bodies_are_400_and_change_nothing() {
    let app = spawn_app().await;
    let id = app.create_user("dave@example.com").await;
    for (method, path) in [
        (Method::POST, "/Users".to_string()),
        (Method::PATCH, format!("/Users/{id}")),
        (Method::PUT, format!("/Users/{id}")),
    ] {
        let resp = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .bearer_auth(&app.token)
            .header("content-type", "application/json")
            .body("{\"userName\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{method} {path}");
        assert_eq!(resp.headers()["content-type"], "application/scim+json");
        let b: Value = resp.json().await.unwrap();
        assert_scim_error(&b, "400", Some("invalidSyntax"));
    }
    // Well-formed JSON that is not a valid change.
    let (s, b, _) = app.call(Method::POST, "/Users", Some(json!({"userName": ""}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_scim_error(&b, "400", Some("invalidValue"));
    let (s, b, _) = app
        .call(Method::PATCH, &format!("/Users/{id}"), patch(json!([{"op": "replace", "path": "id", "value": "x"}])))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_scim_error(&b, "400", Some("mutability"));
    // A PATCH whose second op fails applies nothing.
    let (s, b, _) = app
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            patch(json!([{"op": "replace", "path": "active", "value": false}, {"op": "replace", "path": "active", "value": "maybe"}])),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_scim_error(&b, "400", Some("invalidValue"));
    let (s, b, _) = app.call(Method::GET, "/Users?filter=userName%20xx%20%22a%22", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_scim_error(&b, "400", Some("invalidFilter"));

    let (_, b, _) = app.call(Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(b["active"], true);
    assert_eq!(b["meta"]["version"], "W/\"1\"");
    assert_eq!(app.count("scim_users").await, 1);
    assert!(app.outbox().await.is_empty());
}

/// JSON numbers at the ends of what a parser holds come back as they were sent: PostgreSQL
/// keeps them as exact decimals, and reading one back must neither fail nor round it (the
/// largest ones once made the handler panic).
#[tokio::test]
async fn extreme_numbers_in_extra_attributes_come_back_as_sent() {
    let app = spawn_app().await;
    let numbers =
        json!([1.7976931348623155e308, f64::MAX, -f64::MAX, 5e-324, 2.2250738585072014e-308, 0.1, u64::MAX, i64::MIN]);
    let (s, b, _) = app.call(Method::POST, "/Users", Some(json!({"userName": "n@example.com", "x": numbers}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(b["x"], numbers);
    let (s, b, _) = app.call(Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["x"], numbers);
    let (s, b, _) = app
        .call(Method::PATCH, &format!("/Users/{id}"), patch(json!([{"op": "add", "path": "y", "value": f64::MAX}])))
        .await;
    assert!(s.is_success(), "{s} {b}");
    let (_, b, _) = app.call(Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!((&b["x"], &b["y"]), (&numbers, &json!(f64::MAX)));
}

/// A body is SCIM's or plain JSON in UTF-8, however the IdP spells the media type; anything
/// else is 415 and changes nothing.
#[tokio::test]
async fn a_body_of_another_media_type_is_415() {
    let app = spawn_app().await;
    let post = |ct: &'static str, name: &str| {
        app.http
            .post(format!("{}/Users", app.base))
            .bearer_auth(&app.token)
            .header("content-type", ct)
            .body(json!({"userName": name}).to_string())
            .send()
    };
    for (i, ct) in [
        "application/scim+json",
        "application/json",
        "Application/SCIM+JSON; charset=UTF-8",
        "application/json;charset=\"utf-8\"",
    ]
    .into_iter()
    .enumerate()
    {
        let resp = post(ct, &format!("u{i}@example.com")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{ct}");
    }
    for ct in ["text/plain", "application/jsonp", "text/json", "application/json; charset=utf-16", "multipart/json"] {
        let resp = post(ct, "refused@example.com").await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
        let b: Value = resp.json().await.unwrap();
        assert_scim_error(&b, "415", None);
    }
    assert_eq!(app.count("scim_users").await, 4);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = spawn_app_with_limit(1024).await;
    let (s, b, _) = app.call(Method::POST, "/Users", Some(json!({"userName": "big", "title": "x".repeat(4000)}))).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_scim_error(&b, "413", None);
    assert_eq!(app.count("scim_users").await, 0);
    // Search requests are bodies too.
    for path in ["/Users/.search", "/Groups/.search", "/.search"] {
        let (s, b, _) =
            app.call(Method::POST, path, Some(json!({"filter": format!("title eq \"{}\"", "x".repeat(4000))}))).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_scim_error(&b, "413", None);
        let resp = app
            .http
            .post(format!("{}{path}", app.base))
            .bearer_auth(&app.token)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path}");
        let (s, b, _) = app.call(Method::POST, path, Some(json!(["filter"]))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {b}");
        assert_scim_error(&b, "400", Some("invalidSyntax"));
    }
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let app = spawn_app_with(IngestConfig { rate_limit: 1, rate_burst: 3, ..Default::default() }).await;
    for _ in 0..3 {
        let (s, _, _) = app.call(Method::GET, "/Users", None).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, b, h) = app.call(Method::POST, "/Users", Some(json!({"userName": "late@example.com"}))).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_scim_error(&b, "429", None);
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(app.count("scim_users").await, 0, "a limited request changes nothing");
    // Operators see throttling apart from the requests an IdP gets wrong.
    let text = app.metrics.encode();
    assert!(text.contains(r#"unseat_scim_requests_total{method="POST",resource="Users",status="429"} 1"#), "{text}");
    assert!(!text.contains(r#"status="4xx""#), "{text}");
    // Another tenant of the same process is not limited by this one.
    let other = Uuid::new_v4();
    app.store
        .client()
        .await
        .unwrap()
        .execute("insert into tenants (id, name) values ($1, 'Other')", &[&other])
        .await
        .unwrap();
    let token = unseat_store::tokens::generate("scim");
    app.store.insert_token(other, &token, "scim", None, None, "t").await.unwrap();
    let resp = app.http.get(format!("{}/Users", app.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Another ingest process on `app`'s database, as a balancer would put beside it; its SCIM base URL.
async fn second_ingest(app: &App, config: IngestConfig) -> String {
    let second = IngestState::new(app.store.clone(), app.metrics.clone(), EXCHANGE.to_string(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/scim/v2", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(second)).await.unwrap() });
    base
}

/// The most two ingest processes may admit for one tenant over `elapsed` seconds: the burst,
/// the rate over that time, and one request per process admitted ahead of its lease. A lease
/// slower than 250 ms (a loaded machine) sends its process to a bucket of its own for a
/// second, as documented; only then each process is allowed its own bucket too.
fn most_admitted(app: &App, rate: u32, burst: u32, elapsed: f64) -> f64 {
    let shared = f64::from(burst) + f64::from(rate) * elapsed;
    let failed = app.metrics.sample("unseat_scim_rate_lease_failures_total").unwrap_or(0.0);
    shared + 2.0 + if failed > 0.0 { 2.0 * shared } else { 0.0 }
}

/// A tenant's rate is the tenant's across every ingest process on the database: two processes
/// behind a balancer admit the burst and the rate between them, not each, and both refuse.
#[tokio::test]
async fn the_rate_limit_holds_across_ingest_processes() {
    let (rate, burst) = (2, 6);
    let config = IngestConfig { rate_limit: rate, rate_burst: burst, ..Default::default() };
    let app = spawn_app_with(config.clone()).await;
    let second_base = second_ingest(&app, config).await;

    let started = std::time::Instant::now();
    let (mut admitted, mut refused) = ([0u32; 2], [0u32; 2]);
    for i in 0..24 {
        let base = if i % 2 == 0 { &app.base } else { &second_base };
        let resp = app.http.get(format!("{base}/Users")).bearer_auth(&app.token).send().await.unwrap();
        match resp.status() {
            StatusCode::OK => admitted[i % 2] += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let wait: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(wait >= 1, "{wait}");
                refused[i % 2] += 1;
            }
            other => panic!("{other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = f64::from(admitted[0] + admitted[1]);
    let most = most_admitted(&app, rate, burst, elapsed);
    assert!(total <= most, "admitted {admitted:?} in {elapsed:.2} s: more than the tenant's {most:.1}");
    assert!(total >= f64::from(burst), "admitted {admitted:?}: less than the burst");
    assert!(refused[0] > 0 && refused[1] > 0, "refused {refused:?}: both processes refuse");
}

/// The same bound when the IdP floods: two processes, eight clients each, sending as fast as
/// they are answered. Each process may admit one request per tenant ahead of its lease, owing
/// the token, so the fleet admits at most the burst, the rate over the time taken, and one
/// request per process.
#[tokio::test]
async fn the_rate_limit_holds_across_ingest_processes_under_concurrent_load() {
    let (rate, burst) = (20, 20);
    let config = IngestConfig { rate_limit: rate, rate_burst: burst, ..Default::default() };
    let app = spawn_app_with(config.clone()).await;
    let second_base = second_ingest(&app, config).await;

    let started = std::time::Instant::now();
    let until = started + std::time::Duration::from_millis(1500);
    let clients = (0..16).map(|i| {
        let url = format!("{}/Users?count=1", if i % 2 == 0 { &app.base } else { &second_base });
        let (http, token) = (app.http.clone(), app.token.clone());
        tokio::spawn(async move {
            let (mut admitted, mut refused) = (0u32, 0u32);
            while std::time::Instant::now() < until {
                let resp = http.get(&url).bearer_auth(&token).send().await.unwrap();
                match resp.status() {
                    StatusCode::OK => admitted += 1,
                    StatusCode::TOO_MANY_REQUESTS => refused += 1,
                    other => panic!("{other}"),
                }
            }
            (admitted, refused)
        })
    });
    let (mut admitted, mut refused) = (0u32, 0u32);
    for client in clients.collect::<Vec<_>>() {
        let (a, r) = client.await.unwrap();
        admitted += a;
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let most = most_admitted(&app, rate, burst, elapsed);
    assert!(refused > 0, "the clients asked for more than the rate: {admitted} admitted, none refused");
    assert!(f64::from(admitted) <= most, "admitted {admitted} in {elapsed:.2} s: more than the tenant's {most:.1}");
    assert!(admitted >= burst, "admitted {admitted}: less than the burst");
}

/// A revoked token is refused at once, not when it expires from the token cache: the store
/// announces the revocation and every ingest process clears its cache.
#[tokio::test]
async fn a_revoked_token_is_refused_before_its_cache_entry_expires() {
    let app =
        spawn_app_with(IngestConfig { token_cache: std::time::Duration::from_secs(300), ..Default::default() }).await;
    // The process clears its cache when its listener connects (revocations may have been
    // missed before); wait for that, so that only the announcement can clear it below.
    let c = app.store.client().await.unwrap();
    let listening =
        "select count(*) from pg_stat_activity where datname = current_database() and query ilike 'listen %'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c.query_one(listening, &[]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "the ingest never listened for revocations");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (s, _, _) = app.call(Method::GET, "/Users", None).await;
    assert_eq!(s, StatusCode::OK, "the token is now cached for five minutes");
    let id: Uuid = c.query_one("select id from tokens where tenant_id = $1", &[&app.tenant]).await.unwrap().get(0);
    assert!(app.store.revoke_token(app.tenant, id).await.unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (s, b, _) = app.call(Method::GET, "/Users", None).await;
        if s == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(s, StatusCode::OK, "{b}");
        assert!(std::time::Instant::now() < deadline, "the revoked token is still accepted from the cache");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let app = spawn_app().await;
    let missing = Uuid::new_v4();
    for (m, p, body) in [
        (Method::GET, format!("/Users/{missing}"), None),
        (Method::GET, "/Users/not-a-uuid".to_string(), None),
        (
            Method::PATCH,
            format!("/Users/{missing}"),
            patch(json!([{"op": "replace", "path": "active", "value": false}])),
        ),
        (Method::PUT, format!("/Users/{missing}"), Some(json!({"userName": "x"}))),
        (Method::DELETE, format!("/Users/{missing}"), None),
        (Method::GET, format!("/Groups/{missing}"), None),
        (Method::PATCH, format!("/Groups/{missing}"), patch(json!([{"op": "remove", "path": "members"}]))),
        (Method::DELETE, format!("/Groups/{missing}"), None),
        (Method::GET, "/Nothing".to_string(), None),
    ] {
        let (s, b, _) = app.call(m.clone(), &p, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} {p}");
        assert_scim_error(&b, "404", None);
    }
    assert!(app.outbox().await.is_empty());
}

#[tokio::test]
async fn unsupported_features_are_501() {
    let app = spawn_app().await;
    let (_, config, _) = app.call(Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(config["bulk"]["supported"], false);
    let bulk = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": "a", "data": {"userName": "bulk@example.com"}}]});
    for (m, p, body) in [
        (Method::GET, "/Me", None),
        (Method::PATCH, "/Me", patch(json!([{"op": "replace", "path": "active", "value": false}]))),
        (Method::POST, "/Bulk", Some(bulk)),
    ] {
        let (s, b, _) = app.call(m.clone(), p, body).await;
        assert_eq!(s, StatusCode::NOT_IMPLEMENTED, "{m} {p}: {b}");
        assert_scim_error(&b, "501", None);
    }
    let (_, users, _) = app.call(Method::GET, "/Users", None).await;
    assert_eq!(users["totalResults"], 0, "the bulk request created nobody");
    assert!(app.outbox().await.is_empty());
    // Counted apart from server errors, which an alert pages someone for.
    let text = app.metrics.encode();
    assert!(text.contains(r#"status="501""#), "{text}");
    assert!(!text.contains(r#"status="5xx""#), "{text}");
}

#[tokio::test]
async fn if_match_with_a_stale_version_is_412() {
    let app = spawn_app().await;
    let id = app.create_user("erin@example.com").await;
    let deactivate = patch(json!([{"op": "replace", "path": "active", "value": false}]));
    let (s, b, _) =
        app.call_with(Method::PATCH, &format!("/Users/{id}"), deactivate.clone(), &[("if-match", "W/\"7\"")]).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    assert_scim_error(&b, "412", None);
    let (s, _, _) = app.call_with(Method::DELETE, &format!("/Users/{id}"), None, &[("if-match", "W/\"7\"")]).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    assert!(app.outbox().await.is_empty());
    let (s, b, _) = app.call_with(Method::PATCH, &format!("/Users/{id}"), deactivate, &[("if-match", "W/\"1\"")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["active"], false);
    assert_eq!(app.outbox().await.len(), 1);
}

#[tokio::test]
async fn if_none_match_with_the_current_version_is_304_without_a_body() {
    let app = spawn_app().await;
    let id = app.create_user("erin@example.com").await;
    let user = format!("/Users/{id}");
    let (s, _, h) = app.call(Method::GET, &user, None).await;
    assert_eq!(s, StatusCode::OK);
    let tag = h["etag"].to_str().unwrap().to_string();
    for held in [tag.as_str(), "*", &tag.replace("W/", ""), &format!("W/\"99\", {tag}")] {
        let (s, b, h) = app.call_with(Method::GET, &user, None, &[("if-none-match", held)]).await;
        assert_eq!((s, &b), (StatusCode::NOT_MODIFIED, &Value::Null), "{held}");
        assert_eq!(h["etag"], tag.as_str());
    }
    // Changed since: the client reads it again.
    let deactivate = patch(json!([{"op": "replace", "path": "active", "value": false}]));
    app.call(Method::PATCH, &user, deactivate).await;
    let (s, b, h) = app.call_with(Method::GET, &user, None, &[("if-none-match", &tag)]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["active"], false);
    assert_ne!(h["etag"], tag.as_str());

    let group = app.create_group("Staff", &[id.as_str()]).await;
    let path = format!("/Groups/{group}");
    let (_, _, h) = app.call(Method::GET, &path, None).await;
    let tag = h["etag"].to_str().unwrap().to_string();
    let (s, b, _) = app.call_with(Method::GET, &path, None, &[("if-none-match", &tag)]).await;
    assert_eq!((s, b), (StatusCode::NOT_MODIFIED, Value::Null));
    let (s, b, _) = app.call_with(Method::GET, &path, None, &[("if-none-match", "W/\"0\"")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["members"][0]["value"], id.as_str());
}

#[tokio::test]
async fn group_membership_changes_in_every_form() {
    let app = spawn_app().await;
    let a = app.create_user("a@example.com").await;
    let b = app.create_user("b@example.com").await;
    let c = app.create_user("c@example.com").await;

    // Created with one member: one row for that member.
    let g = app.create_group("Admins", &[&a]).await;
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(users_of(&rows[0].2), vec![a.clone()]);
    assert_eq!(rows[0].2["trigger"]["path"], "/scim/v2/Groups");
    let path = format!("/Groups/{g}");

    // add with path: 204 with the new ETag (no body unless attributes are asked for)
    let (s, body, h) =
        app.call(Method::PATCH, &path, patch(json!([{"op": "add", "path": "members", "value": [{"value": b}]}]))).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let (_, got, _) = app.call(Method::GET, &path, None).await;
    assert_eq!(got["members"].as_array().unwrap().len(), 2);
    assert_eq!(h["etag"], got["meta"]["version"].as_str().unwrap());
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(users_of(&rows[1].2), vec![b.clone()]);
    assert_eq!(rows[1].2["trigger"]["summary"], "b@example.com added to group Admins");

    // adding an existing member again changes nothing
    let (s, _, _) = app
        .call(
            Method::PATCH,
            &path,
            patch(json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": b}]}])),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(app.outbox().await.len(), 2);

    // remove with a filter path
    let (s, _, _) = app
        .call(Method::PATCH, &path, patch(json!([{"op": "remove", "path": format!("members[value eq \"{a}\"]")}])))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 3);
    assert_eq!(users_of(&rows[2].2), vec![a.clone()]);
    assert_eq!(rows[2].2["trigger"]["summary"], "a@example.com removed from group Admins");

    // Entra's remove with a value array
    let (s, _, _) = app
        .call(Method::PATCH, &path, patch(json!([{"op": "Remove", "path": "members", "value": [{"value": b}]}])))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 4);
    assert_eq!(users_of(&rows[3].2), vec![b.clone()]);

    // path-less add of two members
    let (s, _, _) = app
        .call(Method::PATCH, &path, patch(json!([{"op": "add", "value": {"members": [{"value": a}, {"value": c}]}}])))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 5);
    assert_eq!(users_of(&rows[4].2), sorted(&[&a, &c]));

    // Okta's replace with the full list: a and c out, b in (asking for the members: 200)
    let (s, body, _) = app
        .call(
            Method::PATCH,
            &format!("{path}?attributes=members"),
            patch(json!([{"op": "replace", "path": "members", "value": [{"value": b}]}])),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["members"], json!([{"value": b, "$ref": format!("{}/Users/{b}", app.base), "type": "User"}]));
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 6);
    assert_eq!(users_of(&rows[5].2), sorted(&[&a, &b, &c]));

    // renames: no row
    let (s, body, _) = app
        .call(Method::PATCH, &path, patch(json!([{"op": "Replace", "path": "displayName", "value": "Owners"}])))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(app.call(Method::GET, &path, None).await.1["displayName"], "Owners");
    let (s, body, _) = app
        .call(
            Method::PATCH,
            &format!("{path}?excludedAttributes=members"),
            patch(json!([{"op": "replace", "value": {"id": g, "displayName": "Admins"}}])),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["displayName"], "Admins");
    assert!(body.get("members").is_none());
    assert_eq!(app.outbox().await.len(), 6);

    // removing a non-member (even a malformed id) with an add in one request
    let (s, _, _) = app
        .call(
            Method::PATCH,
            &path,
            patch(json!([{"op": "remove", "path": "members[value eq \"deadbeef\"]"}, {"op": "add", "path": "members", "value": [{"value": c}]}])),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 7);
    assert_eq!(users_of(&rows[6].2), vec![c.clone()]);

    // adding a user that does not exist is rejected and changes nothing
    let (s, body, _) = app
        .call(Method::PATCH, &path, patch(json!([{"op": "remove", "path": "members"}, {"op": "add", "path": "members", "value": [{"value": Uuid::new_v4()}]}])))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_scim_error(&body, "400", Some("invalidValue"));
    assert_eq!(app.count("group_members").await, 2);

    // remove all members without a value
    let (s, body, _) = app.call(Method::PATCH, &path, patch(json!([{"op": "remove", "path": "members"}]))).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(app.count("group_members").await, 0);
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 8);
    assert_eq!(users_of(&rows[7].2), sorted(&[&b, &c]));
    assert_eq!(rows[7].2["trigger"]["summary"], "2 members removed from group Admins");
}

#[tokio::test]
async fn group_put_get_list_and_delete() {
    let app = spawn_app().await;
    let a = app.create_user("a@example.com").await;
    let b = app.create_user("b@example.com").await;
    let c = app.create_user("c@example.com").await;
    let g = app.create_group("Staff", &[&a, &b]).await;
    let other = app.create_group("Other", &[]).await;
    assert_eq!(app.outbox().await.len(), 1, "an empty group's creation changes no access");

    // GET with and without members
    let (s, body, h) = app.call(Method::GET, &format!("/Groups/{g}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["members"].as_array().unwrap().len(), 2);
    assert_eq!(body["meta"]["resourceType"], "Group");
    assert_eq!(h["etag"], body["meta"]["version"].as_str().unwrap());
    let (_, body, _) = app.call(Method::GET, &format!("/Groups/{g}?excludedAttributes=members"), None).await;
    assert!(body.get("members").is_none());

    // list by displayName, case-insensitively, without members
    let (s, list, _) =
        app.call(Method::GET, "/Groups?excludedAttributes=members&filter=displayName%20eq%20%22staff%22", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["Resources"][0]["id"], g.as_str());
    assert!(list["Resources"][0].get("members").is_none());
    let (_, list, _) = app.call(Method::GET, "/Groups?startIndex=1&count=100", None).await;
    assert_eq!(list["totalResults"], 2);
    let staff = list["Resources"].as_array().unwrap().iter().find(|r| r["id"] == g.as_str()).unwrap();
    assert_eq!(staff["members"].as_array().unwrap().len(), 2);
    let (_, list, _) = app.call(Method::GET, "/Groups?startIndex=2&count=1", None).await;
    assert_eq!(
        (list["totalResults"].as_i64(), list["itemsPerPage"].as_i64(), list["startIndex"].as_i64()),
        (Some(2), Some(1), Some(2))
    );

    // PUT replaces members by diff: a stays, b leaves, c joins
    let (s, body, _) = app
        .call(
            Method::PUT,
            &format!("/Groups/{g}"),
            Some(json!({"displayName": "Staff", "members": [{"value": a}, {"value": c}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(users_of(&rows[1].2), sorted(&[&b, &c]));
    assert_eq!(rows[1].2["trigger"]["method"], "PUT");
    // a PUT with the same members and a new name writes no row
    let (s, body, _) = app
        .call(
            Method::PUT,
            &format!("/Groups/{g}"),
            Some(json!({"displayName": "Crew", "members": [{"value": c}, {"value": a}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["displayName"], "Crew");
    assert_eq!(app.outbox().await.len(), 2);

    // delete: one row naming the members it had
    let (s, _, _) = app.call(Method::DELETE, &format!("/Groups/{g}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 3);
    assert_eq!(users_of(&rows[2].2), sorted(&[&a, &c]));
    assert_eq!(rows[2].2["trigger"]["summary"], "group Crew deleted (2 members)");
    let (s, _, _) = app.call(Method::GET, &format!("/Groups/{g}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(app.count("group_members").await, 0);
    assert_eq!(app.count("scim_users").await, 3, "users stay when their group goes");
    let (s, _, _) = app.call(Method::GET, &format!("/Groups/{other}"), None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn concurrent_member_removals_all_take_effect() {
    let app = Arc::new(spawn_app().await);
    let ids = app.create_users("u", 8).await;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let g = app.create_group("Everyone", &refs).await;
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let app = app.clone();
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            let (s, _, _) = app
                .call(
                    Method::PATCH,
                    &format!("/Groups/{g}?excludedAttributes=members"),
                    patch(json!([{"op": "remove", "path": format!("members[value eq \"{id}\"]")}])),
                )
                .await;
            s
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let (_, body, _) = app.call(Method::GET, &format!("/Groups/{g}"), None).await;
    assert_eq!(body["members"], json!([]));
    assert_eq!(body["meta"]["version"], "W/\"9\"");
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 9);
    let mut removed: Vec<String> = rows[1..].iter().flat_map(|r| users_of(&r.2)).collect();
    removed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(removed, want);
}

#[tokio::test]
async fn discovery_endpoints_and_metrics() {
    let (_url, store) = unseat_store::testing::fresh_database().await.unwrap();
    let tenant = Uuid::new_v4();
    store.client().await.unwrap().execute("insert into tenants (id, name) values ($1, 'T')", &[&tenant]).await.unwrap();
    store.insert_token(tenant, "tok", "scim", None, None, "test").await.unwrap();
    let metrics = Arc::new(unseat_telemetry::Metrics::new());
    let config = IngestConfig { body_limit: 65536, ..Default::default() };
    let state = IngestState::new(store, metrics.clone(), EXCHANGE.into(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    let http = reqwest::Client::new();
    let get = |p: &str| http.get(format!("http://{addr}/scim/v2{p}")).bearer_auth("tok").send();

    let spc: Value = get("/ServiceProviderConfig").await.unwrap().json().await.unwrap();
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["bulk"]["supported"], false);
    assert_eq!(spc["filter"]["maxResults"], 200);
    assert_eq!(spc["authenticationSchemes"][0]["type"], "oauthbearertoken");
    let rt: Value = get("/ResourceTypes").await.unwrap().json().await.unwrap();
    assert_eq!(rt["totalResults"], 2);
    let schemas: Value = get("/Schemas").await.unwrap().json().await.unwrap();
    assert_eq!(schemas["totalResults"], 3);
    let user_schema = get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User").await.unwrap();
    assert_eq!(user_schema.status(), StatusCode::OK);
    // The attributes an integration's role comes from are described with the rest.
    let user_schema: Value = user_schema.json().await.unwrap();
    let names: Vec<&str> =
        user_schema["attributes"].as_array().unwrap().iter().filter_map(|a| a["name"].as_str()).collect();
    for name in ["userName", "active", "emails", "roles", "entitlements"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert_eq!(get("/Users/nope").await.unwrap().status(), StatusCode::NOT_FOUND);
    let unauth = http.get(format!("http://{addr}/scim/v2/Users")).send().await.unwrap();
    assert_eq!(unauth.status(), StatusCode::UNAUTHORIZED);

    let text = metrics.encode();
    assert!(text.contains(r#"unseat_scim_requests_total{method="GET",resource="other",status="2xx"} 4"#), "{text}");
    assert!(text.contains(r#"unseat_scim_requests_total{method="GET",resource="Users",status="4xx"} 2"#), "{text}");
    assert!(text.contains("unseat_scim_request_duration_seconds_count"), "{text}");
}

#[tokio::test]
async fn database_unavailable_is_503_with_retry_after_and_nothing_half_applied() {
    let app = spawn_app().await;
    let id = app.create_user("frank@example.com").await;
    unseat_store::testing::refuse_connections(&app.database_url, true).await.unwrap();

    let (s, b, h) = app
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            patch(json!([{"op": "replace", "path": "active", "value": false}])),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(h["retry-after"], "5");
    assert_scim_error(&b, "503", None);

    unseat_store::testing::refuse_connections(&app.database_url, false).await.unwrap();
    let (s, b, _) = app.call(Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["active"], true);
    assert!(app.outbox().await.is_empty());
}

#[tokio::test]
async fn attribute_selection_and_search_requests() {
    let app = spawn_app().await;
    let a = app.create_user("gina@example.com").await;
    let g = app.create_group("Sales", &[&a]).await;

    let (_, b, _) = app.call(Method::GET, &format!("/Users/{a}?attributes=userName"), None).await;
    assert_eq!(b["userName"], "gina@example.com");
    assert_eq!(b["id"], a.as_str());
    assert!(b.get("emails").is_none() && b.get("active").is_none());
    let (_, b, _) = app.call(Method::GET, &format!("/Users/{a}?excludedAttributes=emails"), None).await;
    assert!(b.get("emails").is_none());
    assert_eq!(b["active"], true);

    let search = |filter: &str| {
        Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": filter,
                    "attributes": ["userName", "displayName"], "startIndex": 1, "count": 10}))
    };
    let (s, b, _) = app.call(Method::POST, "/Users/.search", search("userName eq \"GINA@example.com\"")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["totalResults"], 1);
    assert!(b["Resources"][0].get("emails").is_none());
    let (s, b, _) = app.call(Method::POST, "/Groups/.search", search("displayName eq \"sales\"")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["Resources"][0]["id"], g.as_str());
    assert!(b["Resources"][0].get("members").is_none(), "members were not asked for");
    let (s, b, _) = app.call(Method::POST, "/.search", Some(json!({"count": 10}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["totalResults"], 2);
    assert_eq!(b["Resources"][1]["members"][0]["value"], a.as_str());
    let (s, b, _) = app.call(Method::POST, "/Users/.search", Some(json!({"filter": "userName eq"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_scim_error(&b, "400", Some("invalidFilter"));
    for path in ["/Users?count=ten", "/Groups?startIndex=x", "/Users?filter=userName%20eq"] {
        let (s, b, _) = app.call(Method::GET, path, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {b}");
        assert_scim_error(&b, "400", Some(if path.contains("filter") { "invalidFilter" } else { "invalidValue" }));
    }
    assert!(app.outbox().await.len() == 1, "searches change nothing");
}

#[tokio::test]
async fn every_scim_type_is_answered_where_the_rfc_says() {
    let app = spawn_app().await;
    let id = app.create_user("grace@example.com").await;
    let g = app.create_group("Ops", &[&id]).await;
    let user = format!("/Users/{id}");
    let cases: Vec<(Method, String, Option<Value>, &str, &str)> = vec![
        (Method::POST, "/Users".into(), Some(json!(["not", "an", "object"])), "400", "invalidSyntax"),
        (Method::GET, "/Users?filter=userName%20eq".into(), None, "400", "invalidFilter"),
        (
            Method::PATCH,
            user.clone(),
            patch(json!([{"op": "replace", "path": "emails[type eq \"work\"", "value": "x"}])),
            "400",
            "invalidPath",
        ),
        (
            Method::PATCH,
            user.clone(),
            patch(json!([{"op": "replace", "path": "active", "value": 3}])),
            "400",
            "invalidValue",
        ),
        (Method::POST, "/Users".into(), Some(json!({"userName": "GRACE@example.com"})), "409", "uniqueness"),
        (
            Method::PATCH,
            user.clone(),
            patch(json!([{"op": "replace", "path": "id", "value": "x"}])),
            "400",
            "mutability",
        ),
        (Method::PATCH, user.clone(), patch(json!([{"op": "remove"}])), "400", "noTarget"),
        (
            Method::PATCH,
            user.clone(),
            patch(json!([{"op": "replace", "path": "emails[type eq \"home\" or type eq \"x\"].value", "value": "h"}])),
            "400",
            "noTarget",
        ),
        (
            Method::PATCH,
            format!("/Groups/{g}"),
            patch(json!([{"op": "replace", "path": "members[value eq \"x\"]", "value": []}])),
            "400",
            "invalidPath",
        ),
    ];
    for (method, path, body, status, scim_type) in cases {
        let (s, b, _) = app.call(method.clone(), &path, body).await;
        assert_eq!(s.as_str(), status, "{method} {path}: {b}");
        assert_scim_error(&b, status, Some(scim_type));
    }
    // Which groups a user is in: a filter on members.value.
    let (s, b, _) = app.call(Method::GET, &format!("/Groups?filter=members.value%20eq%20%22{id}%22"), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["totalResults"], 1);
    assert_eq!(b["Resources"][0]["id"], g.as_str());
    let other = Uuid::new_v4();
    let (_, b, _) = app.call(Method::GET, &format!("/Groups?filter=members.value%20eq%20%22{other}%22"), None).await;
    assert_eq!(b["totalResults"], 0);
    // A filter that needs a scan of more users than the service evaluates in memory: tooMany.
    app.add_bulk_users(20_001).await;
    let (s, b, _) = app.call(Method::GET, "/Users?filter=title%20pr", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_scim_error(&b, "400", Some("tooMany"));
    // The indexed lookups IdPs use still answer.
    let (s, b, _) = app.call(Method::GET, "/Users?filter=userName%20eq%20%22bulk77%22", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["totalResults"], 1);
    // Nothing above changed the user.
    let (_, b, _) = app.call(Method::GET, &user, None).await;
    assert_eq!(b["meta"]["version"], "W/\"1\"");
}

/// A filter as a query parameter: every byte but letters, digits and `-._~` percent-encoded.
fn filter_query(filter: &str) -> String {
    filter
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn ids_of(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        list["Resources"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_lookups_idps_send_answer_exactly_in_a_directory_too_large_to_scan() {
    let app = spawn_app().await;
    let alice = app.create_user("alice@corp.example").await;
    let (s, b, _) = app
        .call(
            Method::POST,
            "/Users",
            Some(json!({"userName": "other@example.com",
                        "emails": [{"value": "ALICE@corp.example", "type": "home"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let other = b["id"].as_str().unwrap().to_string();
    let bob = app.create_user("bob@corp.example").await;
    let g = app.create_group("Admins", &[&alice]).await;
    let announced = app.outbox().await.len();
    // More users, and more members in the group, than the service scans or loads for a filter.
    app.add_bulk_users(20_001).await;
    let c = app.store.client().await.unwrap();
    c.execute(
        "insert into group_members (tenant_id, group_id, user_id)
         select $1, $2, id from scim_users where tenant_id = $1 and user_name like 'bulk%'",
        &[&app.tenant, &Uuid::parse_str(&g).unwrap()],
    )
    .await
    .unwrap();
    let get = |path: String| {
        let app = &app;
        async move {
            let (s, b, _) = app.call(Method::GET, &path, None).await;
            assert_eq!(s, StatusCode::OK, "{path}: {b}");
            b
        }
    };

    // Entra's lookup by work email, ignoring case: the user whose work address it is, not the
    // one who has it as a home address; any email's value finds both.
    let users = |f: &str| get(format!("/Users?filter={}", filter_query(f)));
    assert_eq!(ids_of(&users(r#"emails[type eq "work"].value eq "Alice@Corp.example""#).await), sorted(&[&alice]));
    assert_eq!(ids_of(&users(r#"emails.value eq "alice@corp.example""#).await), sorted(&[&alice, &other]));
    assert_eq!(ids_of(&users(r#"emails[type eq "home"].value eq "alice@corp.example""#).await), sorted(&[&other]));
    assert_eq!(ids_of(&users(r#"emails[type eq "work"].value eq "nobody@corp.example""#).await), sorted(&[]));
    assert_eq!(
        ids_of(&users(r#"emails[type eq "work"].value eq "bob@corp.example" and active eq false"#).await),
        sorted(&[]),
        "the rest of the filter still applies"
    );

    // A membership check, on a group of 20,002 members: only the member named is read.
    let groups = |f: &str| get(format!("/Groups?excludedAttributes=members&filter={}", filter_query(f)));
    let found = groups(&format!(r#"id eq "{g}" and members[value eq "{alice}"]"#)).await;
    assert_eq!(ids_of(&found), sorted(&[&g]));
    assert!(found["Resources"][0].get("members").is_none(), "{found}");
    assert_eq!(ids_of(&groups(&format!(r#"id eq "{g}" and members[value eq "{bob}"]"#)).await), sorted(&[]));
    assert_eq!(
        ids_of(&groups(&format!(r#"members[value eq "{alice}"] and displayName eq "admins""#)).await),
        sorted(&[&g])
    );
    assert_eq!(ids_of(&groups(&format!(r#"id eq "{g}" and not (members.value eq "{bob}")"#)).await), sorted(&[&g]));
    assert_eq!(ids_of(&groups(&format!(r#"id eq "{g}" and members eq "{other}""#)).await), sorted(&[]));

    // Lookups joined by `or` (a client matching several users in one request): each side's
    // lookup, together; a side with none leaves the filter to the scan, tooMany here.
    let (alice_name, bob_name) = ("alice@corp.example", "bob@corp.example");
    assert_eq!(
        ids_of(&users(&format!(r#"userName eq "{alice_name}" or userName eq "{bob_name}""#)).await),
        sorted(&[&alice, &bob])
    );
    let found = users(&format!(r#"userName eq "{alice_name}" or emails.value eq "{alice_name}""#)).await;
    assert_eq!(ids_of(&found), sorted(&[&alice, &other]), "each user once");
    assert_eq!(found["totalResults"], 2, "{found}");
    assert_eq!(
        ids_of(
            &users(&format!(
                r#"(userName eq "{alice_name}" or emails.value eq "{alice_name}") and not (userName eq "{alice_name}")"#
            ))
            .await
        ),
        sorted(&[&other])
    );
    assert_eq!(
        ids_of(&users(&format!(r#"externalId eq "none" or id eq "{bob}" or id eq "x" or title eq "y""#)).await),
        sorted(&[&bob])
    );
    // Operators see how filters were read.
    let reads = |read: &str| {
        app.metrics
            .sample(&format!("unseat_scim_filter_reads_total{{resource=\"Users\",read=\"{read}\"}}"))
            .unwrap_or(0.0)
    };
    let (lookups, scans) = (reads("lookup"), reads("scan"));
    let (s, b, _) = app
        .call(
            Method::GET,
            &format!("/Users?filter={}", filter_query(&format!(r#"userName eq "{bob_name}" or title ne "y""#))),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_scim_error(&b, "400", Some("tooMany"));
    assert_eq!((reads("lookup"), reads("scan")), (lookups, scans + 1.0));
    users(&format!(r#"userName eq "{bob_name}""#)).await;
    assert_eq!((reads("lookup"), reads("scan")), (lookups + 1.0, scans + 1.0));
    assert_eq!(ids_of(&groups(r#"displayName eq "Admins" or displayName eq "None""#).await), sorted(&[&g]));
    assert_eq!(
        ids_of(&groups(&format!(r#"members[value eq "{bob}"] or members[value eq "{alice}"]"#)).await),
        sorted(&[&g])
    );
    assert_eq!(ids_of(&groups(&format!(r#"members[value eq "{bob}"] or displayName eq "x""#)).await), sorted(&[]));

    // A search of the whole directory without a filter pages through users, then groups.
    let search = |start: i64, count: i64| {
        let app = &app;
        async move {
            let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                              "startIndex": start, "count": count, "excludedAttributes": ["members"]});
            let (s, b, _) = app.call(Method::POST, "/.search", Some(body)).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            assert_eq!(b["totalResults"], 20_005, "{b}");
            b["Resources"].as_array().unwrap().clone()
        }
    };
    let first = search(1, 2).await;
    assert_eq!((first[0]["id"].as_str(), first[1]["id"].as_str()), (Some(alice.as_str()), Some(other.as_str())));
    let last = search(20_004, 5).await;
    assert_eq!(last.len(), 2, "{last:?}");
    assert!(last[0]["userName"].as_str().unwrap().starts_with("bulk"), "{last:?}");
    assert_eq!(last[1]["id"], g.as_str());
    assert!(search(20_006, 5).await.is_empty());

    // A filter that needs every member of a group larger than the service loads: tooMany.
    let (s, b, _) = app
        .call(Method::GET, &format!("/Groups?filter={}", filter_query(&format!(r#"id eq "{g}" and members pr"#))), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_scim_error(&b, "400", Some("tooMany"));
    assert_eq!(app.outbox().await.len(), announced, "lookups change nothing");

    // A PATCH of the work address moves the lookup with it.
    let work = r#"emails[type eq "work"].value"#;
    let (s, b, _) = app
        .call(
            Method::PATCH,
            &format!("/Users/{alice}"),
            patch(json!([{"op": "replace", "path": work, "value": "alice@new.example"}])),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(ids_of(&users(&format!(r#"{work} eq "alice@corp.example""#)).await), sorted(&[]));
    assert_eq!(ids_of(&users(&format!(r#"{work} eq "Alice@New.example""#)).await), sorted(&[&alice]));
}

/// An IdP's custom schema extension is kept whole under its URN, named in `schemas`, and
/// changed, read and filtered through that URN.
#[tokio::test]
async fn a_custom_extension_is_kept_under_its_urn() {
    const CUSTOM: &str = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User";
    let app = spawn_app().await;
    let (s, b, _) = app
        .call(
            Method::POST,
            "/Users",
            Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", CUSTOM],
                        "userName": "x@example.com", CUSTOM: {"employeeNumber": "1"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["schemas"][1], CUSTOM, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let (s, b, _) = app
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            patch(json!([{"op": "replace", "value": {CUSTOM: {"employeeNumber": "2", "costCenter": "C"}}}])),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b, _) = app.call(Method::GET, &format!("/Users/{id}?attributes={CUSTOM}"), None).await;
    assert_eq!(b[CUSTOM], json!({"employeeNumber": "2", "costCenter": "C"}), "{b}");
    let filter = filter_query(&format!(r#"{CUSTOM}:employeeNumber eq "2""#));
    let (s, b, _) = app.call(Method::GET, &format!("/Users?filter={filter}"), None).await;
    assert_eq!((s, ids_of(&b)), (StatusCode::OK, vec![id.clone()]), "{b}");
}

/// Entra writes booleans as "True"/"False" in filters and paths; they select what `true` and
/// `false` select, and an ordering of booleans is refused.
#[tokio::test]
async fn a_boolean_is_true_or_false_however_a_filter_writes_it() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for (name, active, roles) in [
        ("on@example.com", true, json!([{"value": "Admin", "primary": true}])),
        ("off@example.com", false, json!([{"value": "Viewer", "primary": "False"}])),
    ] {
        let (s, b, _) =
            app.call(Method::POST, "/Users", Some(json!({"userName": name, "active": active, "roles": roles}))).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        ids.push(b["id"].as_str().unwrap().to_string());
    }
    let (_, all, _) = app.call(Method::GET, "/Users", None).await;
    let all = all["Resources"].as_array().unwrap().clone();
    for (filter, want) in [
        (r#"active eq "True""#, &ids[..1]),
        (r#"active eq "false""#, &ids[1..]),
        ("active eq true", &ids[..1]),
        (r#"roles[primary eq "True"]"#, &ids[..1]),
        (r#"roles[primary eq "false"].value eq "viewer""#, &ids[1..]),
    ] {
        let (s, b, _) = app.call(Method::GET, &format!("/Users?filter={}", filter_query(filter)), None).await;
        assert_eq!(s, StatusCode::OK, "{filter}: {b}");
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        assert_eq!(ids_of(&b), sorted(&want), "{filter}");
        app.assert_selects_as_evaluated(&all, filter, "").await;
    }
    for filter in ["active gt true", r#"active le "True""#, r#"roles[primary co "t"]"#] {
        let (s, b, _) = app.call(Method::GET, &format!("/Users?filter={}", filter_query(filter)), None).await;
        assert_eq!((s, b["scimType"].as_str()), (StatusCode::BAD_REQUEST, Some("invalidFilter")), "{filter}: {b}");
    }
}

#[tokio::test]
async fn a_filter_on_any_attribute_selects_what_it_selects_evaluated_on_every_user() {
    let app = spawn_app().await;
    let values =
        ["Engineer", "ENGINEER", "engineer ii", "a\"b", "a\\b", "50%", "5_0", "50x", "2026-01-01T00:00:00.000Z", "x"];
    let n = values.len();
    for i in 0..n {
        let (s, b, _) = app
            .call(
                Method::POST,
                "/Users",
                Some(json!({"userName": format!("u{i}@example.com"), "title": values[i],
                            "phoneNumbers": [{"type": "work", "value": values[(i + 1) % n]},
                                             {"type": "home", "value": values[(i + 2) % n]}],
                            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": values[(i + 3) % n]}})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let (_, all, _) = app.call(Method::GET, "/Users?count=200", None).await;
    let all = all["Resources"].as_array().unwrap().clone();
    assert_eq!(all.len(), n);
    let mut probes: Vec<&str> = values.to_vec();
    probes.extend(["engineer", "A\"B", "50_", "5%0", "2026-01-01T00:00:00Z", "a", "ii", "\"", "\\", "0", "NG"]);
    for probe in probes {
        let v = serde_json::to_string(probe).unwrap();
        for filter in [
            format!("title eq {v}"),
            format!(r#"phoneNumbers[type eq "work"].value eq {v}"#),
            format!("phoneNumbers.value eq {v} and title ne {v}"),
            format!("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq {v}"),
            format!(r#"title eq {v} or title eq "x""#),
            format!("title sw {v}"),
            format!(r#"phoneNumbers[type eq "home"].value ew {v}"#),
            format!("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department co {v}"),
        ] {
            app.assert_selects_as_evaluated(&all, &filter, "").await;
        }
    }

    // Groups are searched the same way.
    let g = app.create_group("Ops", &[]).await;
    let (s, b, _) = app
        .call(
            Method::GET,
            &format!("/Groups?filter={}", filter_query(r#"schemas eq "urn:ietf:params:scim:schemas:core:2.0:group""#)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(ids_of(&b), sorted(&[&g]));

    // In a directory larger than the service scans, a text found in few users is still looked
    // up; one found in too many is tooMany.
    app.add_bulk_users(20_001).await;
    let (s, b, _) =
        app.call(Method::GET, &format!("/Users?filter={}", filter_query(r#"title eq "engineer""#)), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["totalResults"], 2, "{b}");
    // Any letters, not only ASCII, and characters JSON escapes.
    let (s, b, _) = app
        .call(Method::POST, "/Users", Some(json!({"userName": "m@example.com", "title": "Vertrieb München\t2"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b, _) = app
        .call(Method::GET, &format!("/Users?filter={}", filter_query("title eq \"VERTRIEB MÜNCHEN\\t2\"")), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["totalResults"], 1, "{b}");
    let (s, b, _) = app.call(Method::GET, &format!("/Users?filter={}", filter_query(r#"title co "ünch""#)), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["totalResults"], 1, "{b}");
    // An eq searches for a whole JSON string: "u" is in every bulk user's JSON, but not as one.
    let (s, b, _) = app.call(Method::GET, &format!("/Users?filter={}", filter_query(r#"title eq "u""#)), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["totalResults"], 0, "{b}");
    let (s, b, _) = app.call(Method::GET, &format!("/Users?filter={}", filter_query(r#"title co "bulk""#)), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_scim_error(&b, "400", Some("tooMany"));
}

/// Case is ignored the same way on any database: the server's collation, here `C`, where
/// PostgreSQL's `lower()` lower-cases ASCII only, makes no difference to uniqueness, lookups or
/// searches, and every filter selects what it selects evaluated in memory.
#[tokio::test]
async fn case_is_ignored_the_same_way_whatever_the_database_collation() {
    for locale in [None, Some("C")] {
        let database = match locale {
            None => unseat_store::testing::fresh_database().await,
            Some(l) => unseat_store::testing::fresh_database_in_locale(l).await,
        };
        let app = spawn_app_in(database.expect("test database"), IngestConfig::default()).await;
        let at = format!("{locale:?}");
        let emile = app.create_user("Émile@Corp.example").await;
        let odos = app.create_user("ΟΔΟΣ@corp.example").await;
        let istanbul = app.create_user("İstanbul@corp.example").await;
        for taken in [
            "émile@corp.EXAMPLE",
            "ÉMILE@CORP.EXAMPLE",
            "οδος@corp.example",
            "Οδοσ@corp.example",
            "i\u{307}stanbul@corp.example",
        ] {
            let (s, b, _) = app.call(Method::POST, "/Users", Some(json!({"userName": taken}))).await;
            assert_eq!(s, StatusCode::CONFLICT, "{at} {taken}: {b}");
            assert_scim_error(&b, "409", Some("uniqueness"));
        }
        for (filter, want) in [
            (r#"userName eq "émile@corp.example""#, vec![emile.as_str()]),
            (r#"userName eq "οδοσ@CORP.example""#, vec![&odos]),
            (r#"userName eq "i̇stanbul@corp.example""#, vec![&istanbul]),
            (r#"userName eq "istanbul@corp.example""#, vec![]),
            (r#"emails[type eq "work"].value eq "ÉMILE@corp.example""#, vec![&emile]),
            (r#"emails.value eq "οδος@corp.example""#, vec![&odos]),
        ] {
            let (s, b, _) = app.call(Method::GET, &format!("/Users?filter={}", filter_query(filter)), None).await;
            assert_eq!(s, StatusCode::OK, "{at} {filter}: {b}");
            assert_eq!(ids_of(&b), sorted(&want), "{at} {filter}");
        }
        let team = app.create_group("Équipe ΣΑΣ", &[]).await;
        let (s, b, _) = app
            .call(Method::GET, &format!("/Groups?filter={}", filter_query(r#"displayName eq "équipe σας""#)), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{at}: {b}");
        assert_eq!(ids_of(&b), sorted(&[&team]), "{at}");

        // Text searched in the stored JSON, each filter next to its evaluation on every user.
        // A text longer than the database searches for (200 letters) is searched by its ends.
        let long = format!("{}Z", "A".repeat(250));
        let titles = ["İSTANBUL Office", "Ærø Ö", "\u{212A}elvin", "ΣΟΦΙΑ Σ", "Straße", "i\u{307}zmir", "plain", &long];
        for (i, title) in titles.iter().enumerate() {
            let (s, b, _) = app
                .call(Method::POST, "/Users", Some(json!({"userName": format!("t{i}@corp.example"), "title": title})))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{at}: {b}");
        }
        let (_, all, _) = app.call(Method::GET, "/Users?count=200", None).await;
        let all = all["Resources"].as_array().unwrap().clone();
        let probes = [
            "i̇stanbul",
            "istanbul",
            "İ",
            "i",
            "\u{307}",
            "ærø ö",
            "ÆRØ",
            "kelvin",
            "KELVIN",
            "σοφια ς",
            "ΣΟΦΙΑ σ",
            "strasse",
            "STRASSE",
            "İZMIR",
            "izmir",
            "office",
            "Σ",
            &format!("{}z", "a".repeat(250)),
            &format!("{}y", "a".repeat(250)),
            &format!("b{}z", "a".repeat(240)),
        ];
        for probe in probes {
            let v = serde_json::to_string(probe).unwrap();
            for filter in
                [format!("title eq {v}"), format!("title sw {v}"), format!("title ew {v}"), format!("title co {v}")]
            {
                app.assert_selects_as_evaluated(&all, &filter, &at).await;
            }
        }
        // The evaluation itself ignores case letter by letter.
        let one = |filter: &str| {
            let parsed = unseat_scim::Filter::parse(filter).unwrap();
            all.iter().filter(|u| parsed.matches(u)).count()
        };
        assert_eq!(one(r#"title eq "σοφια σ""#), 1, "{at}");
        assert_eq!(one(r#"title co "kelvin""#), 1, "{at}");
        assert_eq!(one(r#"title sw "i̇stanbul""#), 1, "{at}");
        assert_eq!(one(r#"title co "strasse""#), 0, "{at}");

        // A text as long as a filter may hold is still searched, and found nowhere.
        let (s, b, _) = app
            .call(
                Method::POST,
                "/Users/.search",
                Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                            "filter": format!("title co \"{}\"", "ab".repeat(2_000))})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{at}: {b}");
        assert_eq!(b["totalResults"], 0, "{at}: {b}");
    }
}

/// Date-time spellings of `t` moved by `micros`: in UTC and at +01:00.
fn instants_near(t: &str, micros: i64) -> [String; 2] {
    let t = chrono::DateTime::parse_from_rfc3339(t).unwrap() + chrono::TimeDelta::microseconds(micros);
    let plus_one = chrono::FixedOffset::east_opt(3600).unwrap();
    [
        t.to_utc().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        t.with_timezone(&plus_one).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
    ]
}

#[tokio::test]
async fn a_filter_on_meta_dates_reads_only_the_resources_stamped_in_its_range() {
    let app = spawn_app().await;
    // More users than the service scans, all stamped at one instant; then three more, each
    // change at least a few milliseconds after the one before.
    app.add_bulk_users(20_001).await;
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(3));
    pause().await;
    let a = app.create_user("a@corp.example").await;
    pause().await;
    let b = app.create_user("b@corp.example").await;
    pause().await;
    let (s, body, _) = app
        .call(
            Method::PATCH,
            &format!("/Users/{a}"),
            patch(json!([{"op": "replace", "path": "title", "value": "Lead"}])),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let get = |path: String| {
        let app = &app;
        async move {
            let (s, b, _) = app.call(Method::GET, &path, None).await;
            assert_eq!(s, StatusCode::OK, "{path}: {b}");
            b
        }
    };
    let bulk = get(format!("/Users?filter={}", filter_query(r#"userName eq "bulk1""#))).await["Resources"][0].clone();
    let known = [get(format!("/Users/{a}")).await, get(format!("/Users/{b}")).await];
    assert_ne!(known[0]["meta"]["created"], known[0]["meta"]["lastModified"]);

    // Around every stamp, a millisecond before and half of one after, each operator on each date:
    // the answer is what the filter selects evaluated on every user; tooMany when that takes
    // in the bulk users.
    let mut stamps: Vec<&str> = Vec::new();
    for user in known.iter().chain([&bulk]) {
        stamps.push(user["meta"]["created"].as_str().unwrap());
        stamps.push(user["meta"]["lastModified"].as_str().unwrap());
    }
    stamps.sort();
    stamps.dedup();
    for stamp in stamps {
        for micros in [-1000, 0, 500] {
            for (i, t) in instants_near(stamp, micros).iter().enumerate() {
                for attr in ["meta.created", "meta.lastModified"] {
                    for op in ["eq", "gt", "ge", "lt", "le"] {
                        if i == 1 && (op != "eq" || micros != 0) {
                            continue; // the +01:00 spelling for the stamp itself
                        }
                        let filter = format!(r#"{attr} {op} "{t}""#);
                        let parsed = unseat_scim::Filter::parse(&filter).unwrap();
                        let (s, found, _) =
                            app.call(Method::GET, &format!("/Users?filter={}", filter_query(&filter)), None).await;
                        if parsed.matches(&bulk) {
                            assert_eq!(s, StatusCode::BAD_REQUEST, "{filter}: {found}");
                            assert_scim_error(&found, "400", Some("tooMany"));
                        } else {
                            let mut expected: Vec<String> = known
                                .iter()
                                .filter(|u| parsed.matches(u))
                                .map(|u| u["id"].as_str().unwrap().to_string())
                                .collect();
                            expected.sort();
                            assert_eq!(s, StatusCode::OK, "{filter}: {found}");
                            assert_eq!(ids_of(&found), expected, "{filter}");
                        }
                    }
                }
            }
        }
    }
    // The rest of the filter still applies.
    let since = known[1]["meta"]["created"].as_str().unwrap();
    let filter = format!(r#"meta.lastModified ge "{since}" and title eq "Lead""#);
    assert_eq!(ids_of(&get(format!("/Users?filter={}", filter_query(&filter))).await), sorted(&[&a]));

    // Groups the same way.
    let c = app.store.client().await.unwrap();
    c.execute(
        "insert into scim_groups (tenant_id, id, display_name, display_name_key, resource)
         select $1, gen_random_uuid(), 'bulk' || i, 'bulk' || i, jsonb_build_object('displayName', 'bulk' || i)
           from generate_series(1, 20001) i",
        &[&app.tenant],
    )
    .await
    .unwrap();
    pause().await;
    let g = app.create_group("Ops", &[]).await;
    let created = get(format!("/Groups/{g}")).await["meta"]["created"].as_str().unwrap().to_string();
    pause().await;
    let (s, body, _) = app
        .call(
            Method::PATCH,
            &format!("/Groups/{g}"),
            patch(json!([{"op": "add", "path": "members", "value": [{"value": b}]}])),
        )
        .await;
    assert!(s.is_success(), "{body}");
    let groups = |f: String| get(format!("/Groups?excludedAttributes=members&filter={}", filter_query(&f)));
    assert_eq!(ids_of(&groups(format!(r#"meta.lastModified gt "{created}""#)).await), sorted(&[&g]));
    assert_eq!(ids_of(&groups(format!(r#"meta.created gt "{created}""#)).await), sorted(&[]));
    assert_eq!(ids_of(&groups(format!(r#"meta.created eq "{created}""#)).await), sorted(&[&g]));
    let (s, body, _) = app
        .call(
            Method::GET,
            &format!("/Groups?filter={}", filter_query(&format!(r#"meta.created lt "{created}""#))),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_scim_error(&body, "400", Some("tooMany"));
}

/// A SCIM token past its end is refused like a revoked one (401, saying nothing of the tenant);
/// one before its end works.
#[tokio::test]
async fn a_scim_token_past_its_end_is_refused() {
    let app = spawn_app().await;
    let client = app.store.client().await.unwrap();
    let at = |seconds: i64| Some(chrono::Utc::now() + chrono::Duration::seconds(seconds));
    let (ended, running) = (unseat_store::tokens::generate("scim"), unseat_store::tokens::generate("scim"));
    for (t, expires_at) in [(&ended, at(-1)), (&running, at(3600))] {
        let new = unseat_store::tokens::NewToken {
            kind: "scim",
            scope_integration: None,
            role: None,
            label: "with an end",
            expires_at,
        };
        unseat_store::tokens::insert_token(&**client, app.tenant, t, &new).await.unwrap();
    }
    let resp = app.http.get(format!("{}/Users", app.base)).bearer_auth(&ended).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = app.http.get(format!("{}/Users", app.base)).bearer_auth(&running).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
