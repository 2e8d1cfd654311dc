//! The Automation Log, Activity and Task detail pages in a real headless Chromium, driven over
//! WebDriver (Debian's `chromium` and `chromium-driver`; `bash .ci/run` installs them): sign
//! in, watch a deactivation appear and succeed without reloading, filter by failed, open a
//! failed task, re-drive it, and check that another tenant's admin gets a 403. A screenshot of
//! each page lands in `target/test-output/`.
//!
//! The WebDriver client is the handful of W3C WebDriver commands these tests use, over reqwest.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use unseat_tests::{spawn_app, TestApp};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-output");
    std::fs::create_dir_all(&dir).expect("create target/test-output");
    dir
}

/// A chromedriver process and one browser session; both end on drop.
struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    _profile: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    async fn start() -> Browser {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "browser tests need Debian's chromium and chromium-driver (bash .ci/run installs them)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // Its own process group, so that chromedriver and the browsers it starts end together.
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let profile = TempDir(std::env::temp_dir().join(format!("unseat-chromium-{}", uuid::Uuid::new_v4().simple())));
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await.ok();
            if let Some(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == json!(true) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,1100", "--lang=en-US",
                    format!("--user-data-dir={}", profile.0.display()),
                ]
            }
        }}});
        let v: Value =
            http.post(format!("{base}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("new session: {v}")).to_string();
        Browser { http, session: format!("{base}/session/{session}"), driver, _profile: profile }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v["value"].get("error").is_some() {
            panic!("webdriver {path}: {v}");
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    async fn find(&self, css: &str) -> String {
        let v = self.cmd(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}")).to_string()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/click"), Some(json!({}))).await;
    }

    /// Clicks something that loads a new page, and waits until the new page has loaded.
    async fn click_to_load(&self, css: &str) {
        self.js("window.__before_click = true;", json!([])).await;
        self.click(css).await;
        self.wait_for(
            "the next page to load",
            "return window.__before_click !== true && document.readyState === 'complete';",
            json!([]),
            Duration::from_secs(15),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/value"), Some(json!({"text": text}))).await;
    }

    async fn text(&self, css: &str) -> String {
        self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", json!([css]))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until `script` returns true, up to `limit`.
    async fn wait_for(&self, what: &str, script: &str, args: Value, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.js(script, args.clone()).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let body = self.text("main").await;
                panic!("timed out waiting for {what}; the page shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(v.as_str().unwrap_or_default());
        let path = output_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
    }

    async fn sign_in(&self, token: &str) {
        self.type_into("#token", token).await;
        self.click_to_load("form.sign-in button[type=submit]").await;
    }
}

impl Drop for Browser {
    /// Ends chromedriver and every browser process it started (its process group), also when
    /// a test panics.
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = s.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, d)| acc | (d << (18 - 6 * i)));
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

/// Rows of the task tables on the page as (email, status as the row states it).
async fn rows(browser: &Browser) -> Vec<(String, String)> {
    let v = browser
        .js(
            "return [...document.querySelectorAll('tr.task')].map(r => [r.cells[0].innerText.trim(), r.dataset.status]);",
            json!([]),
        )
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap_or_default().to_string(), r[1].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// A script that is true when a removal task of `email` shows with `status` (any status when
/// empty).
fn removal_is(email: &str, status: &str) -> (&'static str, Value) {
    (
        "return [...document.querySelectorAll('tr.task')].some(r => r.cells[0].innerText.trim() === arguments[0]
            && r.dataset.outcome === 'remove' && (arguments[1] === '' || r.dataset.status === arguments[1]));",
        json!([email, status]),
    )
}

/// Alice and Bob hold ADMIN in the hub through team Admins; the app is settled.
async fn company() -> (TestApp, uuid::Uuid, uuid::Uuid) {
    let app = spawn_app().await;
    let alice = app.person("alice@example.com", "ADMIN").await;
    let bob = app.person("bob@example.com", "ADMIN").await;
    app.team("Admins", &[alice, bob], "ADMIN").await;
    app.settle(2).await;
    (app, alice, bob)
}

#[tokio::test]
async fn an_admin_watches_a_deactivation_live_filters_failures_and_reads_a_failed_task() {
    let (app, alice, bob) = company().await;
    let browser = Browser::start().await;
    let log_url = format!("{}/console/tenants/{}/log", app.base, app.tenant);

    // Signed out: the log sends us to sign in, and back to the log after.
    browser.goto(&log_url).await;
    assert!(browser.url().await.contains("/console/sign-in"), "{}", browser.url().await);
    browser.screenshot("sign-in").await;
    browser.sign_in("adm_not-a-real-token").await;
    assert!(browser.text("main").await.contains("not a valid admin token"));
    browser.sign_in(&app.admin.token).await;
    assert_eq!(browser.url().await, log_url);
    assert_eq!(browser.text("h1").await, "Automation Log");
    browser
        .wait_for(
            "live updates",
            "return document.getElementById('live-state').innerText.startsWith('Live');",
            json!([]),
            Duration::from_secs(10),
        )
        .await;

    // A deactivation appears and turns succeeded without a reload (the marker survives) and
    // without losing the scroll position.
    browser.js("window.__still_here = true; window.scrollTo(0, 40);", json!([])).await;
    let scrolled: Value = browser.js("return window.scrollY;", json!([])).await;
    app.scim.deactivate(alice).await.unwrap();
    let (script, args) = removal_is("alice@example.com", "");
    browser.wait_for("alice's removal to appear", script, args, Duration::from_secs(30)).await;
    let (script, args) = removal_is("alice@example.com", "succeeded");
    browser.wait_for("alice's removal to show as succeeded", script, args, Duration::from_secs(30)).await;
    assert_eq!(browser.js("return window.__still_here === true;", json!([])).await, json!(true), "the page reloaded");
    assert_eq!(browser.js("return window.scrollY;", json!([])).await, scrolled, "the scroll position moved");
    let log = browser.text("#log").await;
    assert!(log.contains("PATCH ") && log.contains("/Users/"), "the trigger is shown: {log}");
    // Times are shown in the viewer's zone with the UTC instant on hover.
    let title = browser.js("return document.querySelector('#log time').title;", json!([])).await;
    assert!(title.as_str().unwrap_or_default().ends_with("UTC"), "{title}");
    browser.screenshot("automation-log").await;

    // Bob's removal is refused by the app: it fails, is dead-lettered, and shows up live.
    app.emulator.fault(json!({"method": "DELETE", "status": 403})).await.unwrap();
    app.scim.deactivate(bob).await.unwrap();
    let (script, args) = removal_is("bob@example.com", "dead_lettered");
    browser.wait_for("bob's failure to show", script, args, Duration::from_secs(30)).await;

    // Filter by failed, through the form: only failed tasks remain, and the filter stays in the
    // URL (so live refreshes keep it).
    browser.js("document.querySelector('form.filters select[name=status]').value = 'failed';", json!([])).await;
    browser.click_to_load("form.filters button[type=submit]").await;
    assert!(browser.url().await.contains("status=failed"));
    let shown = rows(&browser).await;
    assert!(!shown.is_empty(), "the failed task is listed");
    assert!(shown.iter().all(|(_, s)| s == "failed" || s == "dead_lettered"), "{shown:?}");
    assert!(shown.iter().any(|(e, _)| e == "bob@example.com"));
    assert!(!shown.iter().any(|(e, _)| e == "alice@example.com"), "{shown:?}");
    browser.screenshot("automation-log-failed").await;

    // The failed task's detail: its attempt with the app's answer, and the re-drive button.
    browser.click_to_load("tr.task td a").await;
    assert_eq!(browser.text("#task-status").await, "failed · dead-lettered");
    let attempts = browser.text("table.attempts").await;
    assert!(attempts.contains("403") && attempts.contains("credentials or permissions"), "{attempts}");
    assert!(browser.text("table.events").await.contains("attempt_failed"));
    assert!(browser.text("form.redrive").await.contains("Re-drive this task"));
    browser.screenshot("task-detail").await;

    // Its job: counts per status at once.
    browser.click_to_load("main > p a").await;
    assert!(browser.text("ul.counts").await.contains("failed"));
    browser.screenshot("job").await;

    // The integration's Activity shows its health: the app refused the credentials.
    browser.click_to_load("header nav a:nth-child(2)").await;
    let health = browser.text("#health").await;
    assert!(health.contains("needs attention"), "{health}");
    assert!(health.contains("1 dead-lettered"), "{health}");
    browser.screenshot("activity").await;

    // A filter that matches nothing says what to do next.
    browser.goto(&format!("{log_url}?user=nobody@example.com")).await;
    assert!(browser.text("#log").await.contains("No jobs match these filters"));

    app.stop().await;
}

#[tokio::test]
async fn another_tenants_admin_gets_403_not_an_empty_page() {
    let app = spawn_app().await;
    let other = app.operator.create_tenant("Other tenant").await.unwrap();
    let log_url = format!("{}/console/tenants/{}/log", app.base, app.tenant);

    // Over plain HTTP with the other tenant's session cookie: 403 on every page and the stream.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let session = unseat_tests::console_session(&app.base, &other.admin_token).await;
    for path in ["log", &format!("integrations/{}/activity", app.integration), "live"] {
        let resp = http
            .get(format!("{}/console/tenants/{}/{path}", app.base, app.tenant))
            .header("Cookie", format!("unseat_console={session}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{path}");
    }
    // Without a session: to the sign-in page.
    let resp = http.get(&log_url).send().await.unwrap();
    assert_eq!(resp.status(), 303);

    // In the browser: the other admin signs in and is refused the first tenant's log.
    let browser = Browser::start().await;
    browser.goto(&log_url).await;
    browser.sign_in(&other.admin_token).await;
    assert_eq!(browser.text("h1").await, "Not your tenant");
    assert!(!browser.text("main").await.contains("Automation Log"));
    browser.screenshot("other-tenant-403").await;
    // Their own log is there, and empty, saying what to do next.
    browser.goto(&format!("{}/console", app.base)).await;
    assert!(browser.url().await.ends_with(&format!("/console/tenants/{}/log", other.id)));
    assert!(browser.text("#log").await.contains("No jobs yet"));
    app.stop().await;
}

#[tokio::test]
async fn a_failed_task_is_redriven_from_its_page() {
    let (app, _alice, bob) = company().await;
    app.emulator.fault(json!({"method": "DELETE", "status": 403})).await.unwrap();
    app.scim.deactivate(bob).await.unwrap();
    let tasks = app.settle(3).await;
    let failed = tasks.iter().find(|t| t.email == "bob@example.com" && t.status == "failed").expect("failed task");
    app.emulator.clear_faults().await.unwrap();

    let browser = Browser::start().await;
    browser.goto(&format!("{}/console/tenants/{}/tasks/{}", app.base, app.tenant, failed.id)).await;
    browser.sign_in(&app.admin.token).await;
    browser.click_to_load("form.redrive button[type=submit]").await;
    let notice = browser.text("main").await;
    assert!(notice.contains("Re-drive requested"), "{notice}");
    browser
        .wait_for(
            "the re-driven task to succeed",
            "return document.getElementById('task-status').innerText.includes('succeeded');",
            json!([]),
            Duration::from_secs(30),
        )
        .await;
    browser.screenshot("task-redriven").await;
    assert!(!app.app_users().await.iter().any(|(e, _)| e == "bob@example.com"), "bob is out of the app");
    app.stop().await;
}

/// Not a browser test: the job page of a 10,000-task job, read over HTTP, timed and printed
/// (never asserted).
#[tokio::test]
async fn a_ten_thousand_task_job_pages_fast() {
    let app = spawn_app().await;
    let job = uuid::Uuid::new_v4();
    let client = app.store.client().await.unwrap();
    client
        .execute(
            "insert into jobs (tenant_id, id, trigger_method, trigger_path, user_agent, summary, received_at)
             values ($1, $2, 'DELETE', '/scim/v2/Groups/all-staff', 'Okta SCIM Client 1.0.0', 'group All Staff deleted', now())",
            &[&app.tenant, &job],
        )
        .await
        .unwrap();
    client
        .execute(
            "insert into tasks (tenant_id, id, job_id, integration_id, user_id, user_email, outcome, from_role, reason,
                                desired_version, status, attempts, dead_lettered, created_at)
             select $1, gen_random_uuid(), $2, $3, gen_random_uuid(), 'user' || n || '@example.com', 'remove', 'EMPLOYEE',
                    'no grant reaches them any more', 1,
                    (array['succeeded','succeeded','succeeded','failed','queued'])[1 + n % 5], 1, n % 5 = 3,
                    now() - (n || ' milliseconds')::interval
               from generate_series(1, 10000) n",
            &[&app.tenant, &job, &app.integration],
        )
        .await
        .unwrap();
    client.execute("analyze tasks", &[]).await.unwrap();
    drop(client);

    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookie = format!("unseat_console={}", unseat_tests::console_session(&app.base, &app.admin.token).await);
    let mut url = format!("{}/console/tenants/{}/jobs/{job}", app.base, app.tenant);
    let mut pages = 0;
    let mut timings = Vec::new();
    while pages < 20 {
        let started = Instant::now();
        let resp = http.get(&url).header("Cookie", &cookie).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let html = resp.text().await.unwrap();
        timings.push(started.elapsed());
        if pages == 0 {
            assert!(html.contains("<strong>10000</strong> tasks"), "the total is shown at once");
            assert!(html.contains("<strong>6000</strong>"), "succeeded count shown at once");
        }
        assert_eq!(html.matches("<tr class=\"task\"").count(), 50);
        pages += 1;
        let Some(next) = html.split("rel=\"next\" href=\"").nth(1).and_then(|s| s.split('"').next()) else { break };
        url = format!("{}{}", app.base, next.replace("&amp;", "&"));
    }
    let ms: Vec<u128> = timings.iter().map(|d| d.as_millis()).collect();
    println!(
        "10,000-task job page: first page {} ms, pages 2-{pages}: median {} ms, max {} ms",
        ms[0],
        {
            let mut rest = ms[1..].to_vec();
            rest.sort_unstable();
            rest.get(rest.len() / 2).copied().unwrap_or_default()
        },
        ms[1..].iter().max().copied().unwrap_or_default()
    );
    app.stop().await;
}
