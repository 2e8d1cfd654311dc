//! A group of 100,000 members against real PostgreSQL: one member in or out touches one row,
//! reading the group without its members does not carry them, and a full `replace members`
//! (Okta's push of the whole list) changes and announces only the real differences. The
//! directory is set up with SQL (that is setup, not what is tested); the changes go over HTTP.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use unseat_ingest::{router, IngestConfig, IngestState};
use unseat_store::Store;
use uuid::Uuid;

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const MEMBERS: i64 = 100_000;

struct App {
    base: String,
    token: String,
    tenant: Uuid,
    store: Store,
    http: reqwest::Client,
}

impl App {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Membership rows written since the setup transaction (whose id is `setup`).
    async fn rows_written_since(&self, group: Uuid, setup: i64) -> i64 {
        let c = self.store.client().await.unwrap();
        c.query_one(
            "select count(*) from group_members where tenant_id = $1 and group_id = $2 and xmin::text::bigint <> $3",
            &[&self.tenant, &group, &setup],
        )
        .await
        .unwrap()
        .get(0)
    }

    /// The users named by each outbox row of the tenant, oldest first.
    async fn announced(&self) -> Vec<Vec<Uuid>> {
        let c = self.store.client().await.unwrap();
        c.query("select payload from outbox where tenant_id = $1 order by id", &[&self.tenant])
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let p: Value = r.get(0);
                let mut users: Vec<Uuid> =
                    p["users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().parse().unwrap()).collect();
                users.sort();
                users
            })
            .collect()
    }
}

async fn spawn_app() -> App {
    let (_url, store) = unseat_store::testing::fresh_database().await.expect("test database");
    let tenant = Uuid::new_v4();
    store
        .client()
        .await
        .unwrap()
        .execute("insert into tenants (id, name) values ($1, 'Big')", &[&tenant])
        .await
        .unwrap();
    let token = unseat_store::tokens::generate("scim");
    store.insert_token(tenant, &token, "scim", None, None, "big").await.unwrap();
    // A full member list of 100,000 is about 5 MB of JSON.
    let config = IngestConfig { body_limit: 16 * 1024 * 1024, rate_limit: 0, ..Default::default() };
    let state =
        IngestState::new(store.clone(), Arc::new(unseat_telemetry::Metrics::new()), "big.directory".into(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    App { base: format!("http://{addr}/scim/v2"), token, tenant, store, http: reqwest::Client::new() }
}

/// Creates 100,000 users and one group holding all of them, in one transaction; returns the
/// group, the members (in id order) and the setup transaction's id (as rows' `xmin` show it).
async fn big_group(app: &App) -> (Uuid, Vec<Uuid>, i64) {
    let group = Uuid::new_v4();
    let mut c = app.store.client().await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "insert into scim_users (tenant_id, id, user_name, user_name_key, email, resource)
         select $1, gen_random_uuid(), 'member' || i || '@big.example', 'member' || i || '@big.example',
                'member' || i || '@big.example',
                jsonb_build_object('userName', 'member' || i || '@big.example')
           from generate_series(1, $2::bigint) i",
        &[&app.tenant, &MEMBERS],
    )
    .await
    .unwrap();
    tx.execute(
        "insert into scim_groups (tenant_id, id, display_name, display_name_key, resource) values ($1, $2, 'Everyone', 'everyone', '{}')",
        &[&app.tenant, &group],
    )
    .await
    .unwrap();
    tx.execute(
        "insert into group_members (tenant_id, group_id, user_id) select $1, $2, id from scim_users where tenant_id = $1",
        &[&app.tenant, &group],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let setup: i64 = c
        .query_one(
            "select xmin::text::bigint from scim_groups where tenant_id = $1 and id = $2",
            &[&app.tenant, &group],
        )
        .await
        .unwrap()
        .get(0);
    let members: Vec<Uuid> = c
        .query("select id from scim_users where tenant_id = $1 order by id", &[&app.tenant])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (group, members, setup)
}

async fn new_user(app: &App, name: &str) -> Uuid {
    let (s, b) = app.call(Method::POST, "/Users", Some(json!({"userName": name}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_group_of_100000_changes_row_by_row_and_announces_only_differences() {
    let app = spawn_app().await;
    let (group, members, setup) = big_group(&app).await;
    let path = format!("/Groups/{group}");

    // Reading it without members carries none.
    let (s, b) = app.call(Method::GET, &format!("{path}?excludedAttributes=members"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.get("members").is_none(), "{b}");
    assert_eq!(b["displayName"], "Everyone");

    // One member out, one in: one row each, nothing else rewritten.
    let newcomer = new_user(&app, "newcomer@big.example").await;
    let leaver = members[0];
    let ops = json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "remove", "path": format!("members[value eq \"{leaver}\"]")},
        {"op": "add", "path": "members", "value": [{"value": newcomer}]}]});
    let (s, b) = app.call(Method::PATCH, &format!("{path}?excludedAttributes=members"), Some(ops)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(app.rows_written_since(group, setup).await, 1, "only the newcomer's row is new");
    let mut want = vec![newcomer, leaver];
    want.sort();
    assert_eq!(app.announced().await, vec![want]);

    // Okta pushes the whole list: everyone but two more leavers, plus one more newcomer.
    let second = new_user(&app, "second@big.example").await;
    let mut list: Vec<Uuid> = members[3..].to_vec();
    list.push(newcomer);
    list.push(second);
    let values: Vec<Value> = list.iter().map(|m| json!({"value": m, "display": "x"})).collect();
    let ops = json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "members", "value": values}]});
    let (s, b) = app.call(Method::PATCH, &path, Some(ops)).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "no attributes asked: no 100,000-member body; {b}");
    assert_eq!(app.rows_written_since(group, setup).await, 2, "only the two newcomers' rows are new");
    let announced = app.announced().await;
    assert_eq!(announced.len(), 2);
    let mut want = vec![second, members[1], members[2]];
    want.sort();
    assert_eq!(announced[1], want, "only the real differences are announced");

    // The same full list again changes nothing and announces nothing.
    let values: Vec<Value> = list.iter().map(|m| json!({"value": m})).collect();
    let ops = json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "members", "value": values}]});
    let (s, b) = app.call(Method::PATCH, &format!("{path}?excludedAttributes=members"), Some(ops)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(app.announced().await.len(), 2);
    let c = app.store.client().await.unwrap();
    let n: i64 = c
        .query_one("select count(*) from group_members where tenant_id = $1 and group_id = $2", &[&app.tenant, &group])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, MEMBERS - 1);
}
