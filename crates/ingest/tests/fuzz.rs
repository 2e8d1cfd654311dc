//! No client input makes the SCIM service answer 5xx: generated bodies, PATCH operations and
//! filters (arbitrary text, and well-formed filters of every shape the service looks up in the
//! database, with arbitrary values) are sent over real HTTP to a service on a fresh database,
//! and every answer must be a success or a SCIM client error. The corpus of past crashers (`crates/scim/tests/corpus/`)
//! is replayed the same way. `PROPTEST_CASES=2000 cargo test -p unseat-ingest --test fuzz`
//! runs it longer.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use unseat_ingest::{router, IngestConfig, IngestState};
use uuid::Uuid;

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

struct App {
    base: String,
    token: String,
    http: reqwest::Client,
    user: String,
    group: String,
}

async fn spawn_app() -> App {
    let (_url, store) = unseat_store::testing::fresh_database().await.expect("test database");
    let tenant = Uuid::new_v4();
    store.client().await.unwrap().execute("insert into tenants (id, name) values ($1, 'F')", &[&tenant]).await.unwrap();
    let token = unseat_store::tokens::generate("scim");
    store.insert_token(tenant, &token, "scim", None, None, "fuzz").await.unwrap();
    let config = IngestConfig { rate_limit: 0, ..Default::default() };
    let state = IngestState::new(store, Arc::new(unseat_telemetry::Metrics::new()), "fuzz.directory".into(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    let mut app = App {
        base: format!("http://{addr}/scim/v2"),
        token,
        http: reqwest::Client::new(),
        user: String::new(),
        group: String::new(),
    };
    let (s, b) = app.send(Method::POST, "/Users", Some(json!({"userName": "fuzz@example.com"}).to_string())).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    app.user = b["id"].as_str().unwrap().to_string();
    let (s, b) = app
        .send(Method::POST, "/Groups", Some(json!({"displayName": "F", "members": [{"value": app.user}]}).to_string()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    app.group = b["id"].as_str().unwrap().to_string();
    app
}

impl App {
    async fn send(&self, method: Method, path: &str, body: Option<String>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Sends and checks the answer: a success, or a SCIM error body with a 4xx status.
    async fn check(&self, method: Method, path: &str, body: Option<String>) -> Result<(), String> {
        let (status, b) = self.send(method.clone(), path, body.clone()).await;
        if status.is_server_error() {
            return Err(format!("{method} {path} {body:?} -> {status} {b}"));
        }
        if status.is_client_error() && b["status"] != status.as_str() {
            return Err(format!("{method} {path} -> {status} without a SCIM error body: {b}"));
        }
        Ok(())
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        // The ends of the double range, which the database stores as long exact decimals.
        prop::sample::select(vec![f64::MAX, -f64::MAX, 1.7976931348623155e308, 5e-324, f64::MIN_POSITIVE])
            .prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        "\\PC{0,12}".prop_map(Value::String),
        prop_oneof![Just("\u{0}"), Just("True"), Just("😀😀"), Just("members"), Just("active")]
            .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("userName".to_string()),
                    Just("active".to_string()),
                    Just("value".to_string()),
                    Just("emails".to_string()),
                    Just("displayName".to_string()),
                    Just("members".to_string()),
                    Just("name.givenName".to_string()),
                    "\\PC{0,6}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("active".to_string()),
        Just("userName".to_string()),
        Just("displayName".to_string()),
        Just("emails[type eq \"work\"].value".to_string()),
        Just("members".to_string()),
        Just("name.familyName".to_string()),
        Just("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager".to_string()),
        "\\PC{0,16}",
        "[a-zA-Z]{1,6}\\[[a-zA-Z \"=]{0,12}\\]".prop_map(|s| s.to_string()),
    ]
}

/// Well-formed filters of the shapes the service looks up (indexed terms, emails, members, text
/// searches with every operator, `meta` dates) with arbitrary values, alone or combined.
fn structured_filter() -> impl Strategy<Value = String> {
    let attr = prop_oneof![
        Just("userName"),
        Just("externalId"),
        Just("id"),
        Just("title"),
        Just("displayName"),
        Just("emails.value"),
        Just("emails[type eq \"work\"].value"),
        Just("phoneNumbers[type eq \"work\"].value"),
        Just("members.value"),
        Just("meta.lastModified"),
        Just("meta.created"),
        Just("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
    ];
    let op = prop_oneof![Just("eq"), Just("sw"), Just("ew"), Just("co"), Just("ne"), Just("gt"), Just("le")];
    // Date-times at the edges of what parses: years 0000 and 9999, offsets of a day, a leap
    // second, more fractional digits than a microsecond holds.
    let date_time = (
        prop_oneof![Just("0000"), Just("1969"), Just("2026"), Just("9999")],
        prop_oneof![Just("01-01T00:00:00"), Just("12-31T23:59:60"), Just("06-30T23:59:59.999999999")],
        prop_oneof![Just("Z"), Just("+23:59"), Just("-23:59"), Just("+00:00")],
    )
        .prop_map(|(y, rest, offset)| format!("{y}-{rest}{offset}"));
    let value = prop_oneof![
        1 => "\\PC{0,12}",
        3 => "[%_\\\\\"a-zA-Z0-9 ]{1,8}",
        1 => Just("2026-01-01T00:00:00Z".to_string()),
        1 => date_time,
    ];
    let term =
        (attr, op, value).prop_map(|(a, o, v)| format!("{a} {o} {}", serde_json::to_string(&v).unwrap_or_default()));
    let member =
        "\\PC{0,8}".prop_map(|v| format!("members[value eq {}]", serde_json::to_string(&v).unwrap_or_default()));
    let atom = prop_oneof![3 => term, 1 => member, 1 => Just("members pr".to_string())];
    atom.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            3 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            1 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or ({b})")),
            1 => inner.prop_map(|a| format!("not ({a})")),
        ]
    })
}

fn patch_body() -> impl Strategy<Value = String> {
    let op = (
        prop_oneof![Just("add"), Just("Replace"), Just("remove"), Just("x")],
        prop::option::of(path()),
        prop::option::of(json_value()),
    )
        .prop_map(|(op, path, value)| {
            let mut o = serde_json::Map::new();
            o.insert("op".into(), json!(op));
            if let Some(p) = path {
                o.insert("path".into(), json!(p));
            }
            if let Some(v) = value {
                o.insert("value".into(), v);
            }
            Value::Object(o)
        });
    prop::collection::vec(op, 1..4).prop_map(|ops| json!({"schemas": [PATCH_OP], "Operations": ops}).to_string())
}

fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(cases);
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_never_get_a_server_error() {
    let app = Arc::new(spawn_app().await);
    let handle = tokio::runtime::Handle::current();
    let a = app.clone();
    tokio::task::spawn_blocking(move || {
        let mut runner = runner(400);
        let strategy = (0u8..7, patch_body(), json_value(), "\\PC{0,40}", structured_filter());
        runner
            .run(&strategy, |(kind, patch, value, filter, structured)| {
                let r = handle.block_on(async {
                    match kind {
                        0 => a.check(Method::PATCH, &format!("/Users/{}", a.user), Some(patch)).await,
                        1 => a.check(Method::PATCH, &format!("/Groups/{}", a.group), Some(patch)).await,
                        2 => a.check(Method::POST, "/Users", Some(value.to_string())).await,
                        3 => a.check(Method::PUT, &format!("/Groups/{}", a.group), Some(value.to_string())).await,
                        4 => {
                            let q: String = url_encode(&filter);
                            a.check(Method::GET, &format!("/Users?filter={q}&startIndex={}", filter.len()), None).await
                        }
                        5 => a.check(Method::GET, &format!("/Users?filter={}", url_encode(&structured)), None).await,
                        _ => a.check(Method::GET, &format!("/Groups?filter={}", url_encode(&structured)), None).await,
                    }
                });
                r.map_err(TestCaseError::fail)
            })
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test]
async fn the_corpus_of_past_crashers_gets_client_errors_over_http() {
    let app = spawn_app().await;
    for line in include_str!("../../scim/tests/corpus/filters.txt").lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let f: String = serde_json::from_str(line).unwrap();
        for resource in ["Users", "Groups"] {
            app.check(Method::GET, &format!("/{resource}?filter={}", url_encode(&f)), None).await.unwrap();
            let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": f});
            app.check(Method::POST, &format!("/{resource}/.search"), Some(search.to_string())).await.unwrap();
        }
    }
    for line in include_str!("../../scim/tests/corpus/patches.jsonl").lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let body = v["body"].to_string();
        app.check(Method::PATCH, &format!("/Users/{}", app.user), Some(body.clone())).await.unwrap();
        app.check(Method::PATCH, &format!("/Groups/{}", app.group), Some(body)).await.unwrap();
    }
    // The values of those PATCHes as whole resources.
    for body in [
        json!({"userName": "nul\u{0}@example.com"}),
        json!({"userName": "😀".repeat(300)}),
        json!({"displayName": "😀".repeat(300)}),
        json!({"userName": "a@example.com", "title": "x\u{0}"}),
    ] {
        app.check(Method::POST, "/Users", Some(body.to_string())).await.unwrap();
        app.check(Method::POST, "/Groups", Some(body.to_string())).await.unwrap();
    }
}

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
