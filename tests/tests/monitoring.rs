//! The monitoring unseat ships (deploy/prometheus, deploy/grafana), checked against a live
//! fleet: the alert rules pass their unit tests (`promtool test rules`), and a real Prometheus,
//! started with the shipped scrape and alert configuration pointed at a running unseat and
//! RabbitMQ's per-queue metrics, answers every query of the Grafana dashboard with data while
//! changes flow, raises no alert for a healthy fleet, and raises `UnseatRoleDown` once unseat
//! stops. Needs Debian's `prometheus` package (prometheus, promtool) and RabbitMQ's
//! `rabbitmq_prometheus` plugin; `bash .ci/run` installs and enables both.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use unseat_tests::spawn_app;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("read deploy/{path}: {e}"))
}

/// RabbitMQ's Prometheus endpoint (the rabbitmq_prometheus plugin).
fn rabbitmq_metrics() -> String {
    std::env::var("UNSEAT_TEST_RABBITMQ_METRICS").unwrap_or_else(|_| "127.0.0.1:15692".into())
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(PROMTOOL)
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("run {PROMTOOL} (Debian package prometheus): {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_shipped_prometheus_configuration_is_valid_and_its_alerts_pass_their_tests() {
    let checked = promtool(&["check", "config", "prometheus.yml"]);
    assert!(checked.contains("SUCCESS: 13 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test.
    let alerts: BTreeSet<String> = names_after(&read("prometheus/alerts.yml"), "- alert: ");
    let tested: BTreeSet<String> = names_after(&read("prometheus/alerts.test.yml"), "alertname: ");
    assert_eq!(alerts.len(), 13);
    assert_eq!(alerts, tested, "alerts without a unit test, or tests of no alert");
}

fn names_after(text: &str, marker: &str) -> BTreeSet<String> {
    text.lines().filter_map(|l| l.trim().strip_prefix(marker.trim_start())).map(|s| s.trim().to_string()).collect()
}

/// The dashboard's panels and their queries, as Grafana would run them.
fn dashboard_queries() -> Vec<(String, String)> {
    let dash: Value = serde_json::from_str(&read("grafana/dashboards/unseat.json")).expect("dashboard JSON");
    assert_eq!(dash["uid"], "unseat-fleet");
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = Vec::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_i64().expect("panel id")), "duplicate panel id in {p}");
        let (x, w) = (p["gridPos"]["x"].as_i64().unwrap(), p["gridPos"]["w"].as_i64().unwrap());
        assert!(x >= 0 && w > 0 && x + w <= 24, "panel outside the grid: {p}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
        let targets = p["targets"].as_array().filter(|t| !t.is_empty()).expect("a panel with queries");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr").to_string();
            queries.push((p["title"].as_str().unwrap().to_string(), expr));
        }
    }
    queries
}

/// A Prometheus server of the test's own, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    http: reqwest::Client,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Prometheus {
    /// Starts Prometheus with the shipped configuration, its targets replaced by `unseat` (every
    /// role of one process, labelled as DNS discovery of the name `all` would label it) and the
    /// local RabbitMQ, scraping and evaluating every second, and the alerts' queue prefix
    /// replaced by `prefix`.
    async fn start(unseat: &str, prefix: &str) -> Prometheus {
        let dir = TempDir(std::env::temp_dir().join(format!("unseat-prometheus-{}", uuid::Uuid::new_v4().simple())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let config = replaced(
            &read("prometheus/prometheus.yml"),
            &[
                ("scrape_interval: 15s", "scrape_interval: 1s".into()),
                ("evaluation_interval: 15s", "evaluation_interval: 1s".into()),
                (
                    SHIPPED_DISCOVERY,
                    format!(
                        "    static_configs:\n      - {{targets: ['{unseat}'], labels: {{__meta_dns_name: all}}}}\n"
                    ),
                ),
                ("[rabbitmq:15692]", format!("['{}']", rabbitmq_metrics())),
            ],
        );
        let alerts = replaced(&read("prometheus/alerts.yml"), &[("unseat\\\\.", format!("{prefix}\\\\."))]);
        std::fs::write(dir.0.join("prometheus.yml"), config).unwrap();
        std::fs::write(dir.0.join("alerts.yml"), alerts).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", dir.0.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {PROMETHEUS} (Debian package prometheus): {e}"));
        let prometheus =
            Prometheus { child, url: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new(), _dir: dir };
        prometheus
            .wait_for("the first scrape of unseat", |p| async move { p.has_data("up{job=\"unseat\"} == 1").await })
            .await;
        prometheus
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let resp = self.http.get(format!("{}{path}", self.url)).query(query).send().await.ok()?;
        let body: Value = resp.json().await.ok()?;
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        Some(body["data"].clone())
    }

    /// The instant vector `expr` evaluates to now (an error if it does not evaluate).
    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.get("/api/v1/query", &[("query", expr)]).await.expect("Prometheus answers");
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"].as_array().cloned().unwrap_or_default()
    }

    async fn has_data(&self, expr: &str) -> bool {
        match self.get("/api/v1/query", &[("query", expr)]).await {
            Some(data) => data["result"].as_array().is_some_and(|r| !r.is_empty()),
            None => false,
        }
    }

    async fn alerts(&self) -> Vec<Value> {
        let data = self.get("/api/v1/alerts", &[]).await.expect("alerts");
        data["alerts"].as_array().cloned().unwrap_or_default()
    }

    async fn wait_for<'a, F, Fut>(&'a self, what: &str, check: F)
    where
        F: Fn(&'a Prometheus) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !check(self).await {
            assert!(Instant::now() < deadline, "Prometheus never saw {what}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// How the shipped configuration finds the roles (DNS names of docker-compose.yml's services).
const SHIPPED_DISCOVERY: &str = "    dns_sd_configs:
      - {names: [ingest], type: A, port: 8080, refresh_interval: 15s}
      - {names: [console], type: A, port: 8081, refresh_interval: 15s}
      - {names: [resolver], type: A, port: 9101, refresh_interval: 15s}
      - {names: [connector], type: A, port: 9102, refresh_interval: 15s}
";

/// `text` with each pattern replaced, every one of which must be there.
fn replaced(text: &str, patterns: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (from, to) in patterns {
        assert!(out.contains(from), "the shipped file no longer has {from}");
        out = out.replace(from, to);
    }
    out
}

#[tokio::test]
async fn prometheus_answers_every_dashboard_query_and_alerts_when_unseat_stops() {
    let queries = dashboard_queries();
    let app = spawn_app().await;
    let prefix = app.settings.amqp_prefix.clone();
    let rabbit = format!("http://{}/metrics", rabbitmq_metrics());
    assert!(
        reqwest::get(&rabbit).await.is_ok_and(|r| r.status().is_success()),
        "RabbitMQ's metrics at {rabbit}: enable them with `rabbitmq-plugins enable rabbitmq_prometheus`"
    );
    let unseat = app.base.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(&unseat, &prefix).await;
    // A target's instance names its service as well as its address.
    assert!(prometheus.has_data(&format!("up{{job=\"unseat\", instance=\"all/{unseat}\"}}")).await);

    // Changes flow while Prometheus scrapes: a lookup, a deactivation whose removal is retried
    // once, a member removal, and the admin API reading the log.
    let alice = app.person("alice@example.com", "ADMIN").await;
    let bob = app.person("bob@example.com", "ADMIN").await;
    let admins = app.team("Admins", &[alice, bob], "ADMIN").await;
    app.settle(2).await;
    let found = app.scim.send(reqwest::Method::GET, "/Users?filter=userName%20eq%20%22alice@example.com%22", None);
    let found: Value = found.await.unwrap().json().await.unwrap();
    assert_eq!(found["totalResults"], 1, "{found}");
    app.emulator.fault(json!({"method": "DELETE", "status": 503, "times": 1})).await.unwrap();
    app.scim.deactivate(alice).await.unwrap();
    app.scim.remove_member(admins, bob).await.unwrap();
    let tasks = app.settle(4).await;
    let removals: Vec<&str> = tasks.iter().filter(|t| t.outcome == "remove").map(|t| t.status.as_str()).collect();
    assert_eq!(removals, ["succeeded", "succeeded"], "{tasks:?}");
    assert!(app.app_users().await.is_empty());
    app.admin_get(&format!("/api/v1/tenants/{}/jobs", app.tenant)).await;

    // Every query of the dashboard evaluates, and has data once the last change is scraped.
    let rate = "[1m]";
    let expand = |e: &str| e.replace("[$__rate_interval]", rate).replace("$prefix", &prefix);
    prometheus
        .wait_for("the connector's last task", |p| async move {
            p.has_data("sum(unseat_connector_tasks_total{result=\"succeeded\"}) >= 2").await
        })
        .await;
    // (A rate needs two scrapes of a series.)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut empty = Vec::new();
        for (panel, expr) in &queries {
            let expr = expand(expr);
            if prometheus.query(&expr).await.is_empty() {
                empty.push(format!("panel {panel:?}: {expr}"));
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "dashboard queries without data:\n{}", empty.join("\n"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The series behind the throughput panels carry the changes themselves, not only zeros. (A
    // rate can read 0 here: a series born with its only increment has no increase to show.)
    for (what, expr) in [
        ("deactivations", "sum(unseat_scim_group_commit_changes_sum{kind=\"activations\"}) > 0"),
        ("member removals", "sum(unseat_scim_group_commit_changes_sum{kind=\"member_removals\"}) > 0"),
        ("retry waits", "sum(unseat_connector_retry_wait_seconds_total{app=\"business_hub\"}) > 0"),
        ("published changes", "sum(unseat_outbox_published_total) > 0"),
        ("removals", "sum(unseat_resolver_decisions_total{outcome=\"remove\"}) > 0"),
        ("lookups", "sum(unseat_scim_filter_reads_total{resource=\"Users\", read=\"lookup\"}) > 0"),
        (
            "connector consumers",
            &expand("sum(rabbitmq_detailed_queue_consumers{queue=\"$prefix.connector.business_hub\"}) > 0"),
        ),
    ] {
        assert!(!prometheus.query(expr).await.is_empty(), "no {what}: {expr}");
    }
    // Every family unseat exports is on the dashboard.
    let exposition = reqwest::get(format!("{}/metrics", app.base)).await.unwrap().text().await.unwrap();
    let dashboard = read("grafana/dashboards/unseat.json");
    for family in exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()) {
        assert!(dashboard.contains(family), "{family} is not on the dashboard");
    }

    // The rules evaluate, and a healthy fleet raises nothing.
    let shipped = names_after(&read("prometheus/alerts.yml"), "- alert: ").len();
    prometheus
        .wait_for("every rule evaluated", |p| async move {
            let data = p.get("/api/v1/rules", &[]).await.unwrap_or_default();
            let rules: Vec<Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            rules.len() == shipped && rules.iter().all(|r| r["health"] == "ok")
        })
        .await;
    assert_eq!(prometheus.alerts().await, Vec::<Value>::new());

    // Unseat stops answering: its role is down (pending for the rule's two minutes).
    app.stop().await;
    prometheus
        .wait_for("UnseatRoleDown pending", |p| async move {
            p.alerts().await.iter().any(|a| a["labels"]["alertname"] == "UnseatRoleDown" && a["state"] == "pending")
        })
        .await;
}
