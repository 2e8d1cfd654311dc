//! Re-driving a failed task end to end: the app refuses with 403, the removal fails at once,
//! is dead-lettered (the message sits in the dead-letter queue) and the integration is flagged;
//! once the fault is gone, an admin re-drives the task through the admin API, the user
//! leaves the app, and the task's stale copy leaves the dead-letter queue: the store is its
//! record again.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::json;
use unseat_bus::Topology;
use unseat_tests::spawn_app;

/// Messages waiting in the business-hub dead-letter queue of this test's topology.
async fn dead_letters(app: &unseat_tests::TestApp) -> u32 {
    let conn = unseat_bus::connect(&app.settings.amqp_url, "redrive-test").await.expect("amqp");
    let ch = conn.create_channel().await.expect("channel");
    let dlq = Topology::dead_letter_queue(&app.settings.topology().connector_queue("business_hub"));
    let q = ch
        .queue_declare(
            dlq.as_str().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("the dead-letter queue exists");
    let _ = conn.close(200, "bye".into()).await;
    q.message_count()
}

/// Alice, an admin through team Admins, is taken out of it while the app refuses removals
/// with 403: the app, alice and Admins, the tasks before her removal, and every task after.
async fn a_refused_removal() -> (unseat_tests::TestApp, uuid::Uuid, uuid::Uuid, usize, Vec<unseat_tests::TaskRow>) {
    let app = spawn_app().await;
    let alice = app.person("alice@example.com", "ADMIN").await;
    let admins = app.team("Admins", &[alice], "ADMIN").await;
    let before = app.settle(1).await.len();
    app.emulator.fault(json!({ "method": "DELETE", "status": 403 })).await.expect("fault");
    app.scim.remove_member(admins, alice).await.expect("remove member");
    let tasks = app.settle(before + 1).await;
    (app, alice, admins, before, tasks)
}

#[tokio::test]
async fn a_403_dead_letters_the_task_and_a_redrive_after_the_fix_removes_the_user() {
    let (app, _, _, before, tasks) = a_refused_removal().await;
    let t = tasks.iter().find(|t| t.outcome == "remove").expect("removal task").clone();
    assert_eq!((t.status.as_str(), t.attempts, t.dead_lettered), ("failed", 1, true), "a 403 is never retried");
    let why = t.last_error.clone().unwrap_or_default();
    assert!(why.contains("HTTP 403"), "{why}");
    assert!(app.app_users().await.iter().any(|(e, _)| e == "alice@example.com"), "alice is still in the app");
    let detail = app.admin_get(&format!("/api/v1/tenants/{}/tasks/{}", app.tenant, t.id)).await;
    assert!(detail.to_string().contains("dead_lettered"), "{detail}");
    let integration = app.admin_get(&format!("/api/v1/tenants/{}/integrations/{}", app.tenant, app.integration)).await;
    assert!(integration["needs_attention"].as_str().is_some_and(|n| n.contains("403")), "{integration}");
    assert_eq!(dead_letters(&app).await, 1);

    // Only failed tasks can be re-driven.
    let kept = tasks.iter().find(|t| t.status == "succeeded").expect("an earlier task");
    let url = |task: uuid::Uuid| format!("{}/api/v1/tenants/{}/tasks/{task}/redrive", app.base, app.tenant);
    let http = reqwest::Client::new();
    let refused = http.post(url(kept.id)).bearer_auth(&app.admin.token).send().await.expect("post");
    assert_eq!(refused.status(), reqwest::StatusCode::CONFLICT);

    // A re-drive takes no fields; anything else is refused and leaves the task failed.
    for body in ["true", "null", r#"{"force": true}"#] {
        let bad = http.post(url(t.id)).bearer_auth(&app.admin.token).body(body).send().await.expect("post");
        assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST, "{body}");
    }
    let still = app.admin_get(&format!("/api/v1/tenants/{}/tasks/{}", app.tenant, t.id)).await;
    assert_eq!(still["task"]["status"], "failed", "{still}");

    app.emulator.clear_faults().await.expect("clear faults");
    let accepted =
        http.post(url(t.id)).bearer_auth(&app.admin.token).json(&serde_json::json!({})).send().await.expect("post");
    assert_eq!(accepted.status(), reqwest::StatusCode::ACCEPTED);
    let body: serde_json::Value = accepted.json().await.expect("json");
    assert_eq!(body["status"], "queued");

    let tasks = app.settle(before + 1).await;
    let t = tasks.iter().find(|x| x.id == t.id).expect("the same task");
    assert_eq!((t.status.as_str(), t.dead_lettered, t.attempts), ("succeeded", false, 2), "{t:?}");
    assert!(!app.app_users().await.iter().any(|(e, _)| e == "alice@example.com"), "alice is gone");
    let events = app.store.connector_task_events(app.tenant, t.id).await.expect("events");
    // The connector's part of the log (the resolver's decision comes first).
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).skip_while(|k| *k != "attempt_started").collect();
    assert_eq!(
        kinds,
        ["attempt_started", "attempt_failed", "failed", "dead_lettered", "redriven", "attempt_started", "succeeded"]
    );
    let integration = app.admin_get(&format!("/api/v1/tenants/{}/integrations/{}", app.tenant, app.integration)).await;
    assert!(integration["needs_attention"].is_null(), "fixed integrations are no longer flagged: {integration}");
    // The connector that picked the re-driven task up swept its old copy out of the
    // dead-letter queue (a bound for the sweep to finish, not a timing assertion).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while dead_letters(&app).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the re-driven task's copy is still in the dead-letter queue");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A second re-drive of a task that succeeded is refused.
    let again = http.post(url(t.id)).bearer_auth(&app.admin.token).send().await.expect("post");
    assert_eq!(again.status(), reqwest::StatusCode::CONFLICT);
    app.stop().await;
}

/// A failed removal that a later change made moot: alice is back in Admins and a later task
/// applied her access. The old removal is no failure to act on any more: the later task's
/// success marks it superseded, and re-driving it is refused (it would find that version
/// applied and log a removal that never happened).
#[tokio::test]
async fn a_failed_task_a_later_one_made_moot_is_superseded_and_not_re_driven() {
    let (app, alice, admins, before, tasks) = a_refused_removal().await;
    let failed = tasks.iter().find(|t| t.outcome == "remove" && t.status == "failed").expect("failed removal").clone();
    app.emulator.clear_faults().await.expect("clear faults");
    app.scim.add_member(admins, alice).await.expect("add member back");
    let tasks = app.settle(before + 2).await;
    let later = tasks.iter().rfind(|t| t.id != failed.id).expect("a later task").clone();
    assert_eq!(later.status, "succeeded", "{tasks:#?}");

    let detail = app.admin_get(&format!("/api/v1/tenants/{}/tasks/{}", app.tenant, failed.id)).await;
    assert_eq!(detail["task"]["status"], "superseded", "{detail}");
    let events = app.store.connector_task_events(app.tenant, failed.id).await.expect("events");
    let last = events.last().expect("events");
    assert_eq!(last.0, "superseded", "{events:?}");
    assert!(last.3.contains("later task"), "{events:?}");
    let failed_list = app.admin_get(&format!("/api/v1/tenants/{}/tasks?status=failed", app.tenant)).await;
    assert!(!failed_list.to_string().contains(&failed.id.to_string()), "no longer listed as failed: {failed_list}");
    // It was dead-lettered, and the list of dead-lettered tasks still says so (the page's
    // filter); the later task is not in it.
    let dead = app.admin_get(&format!("/api/v1/tenants/{}/tasks?status=dead_lettered", app.tenant)).await;
    let ids: Vec<&str> = dead["tasks"].as_array().expect("tasks").iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, [failed.id.to_string()], "{dead}");
    // A filter a list does not take is refused, not ignored.
    let (status, answer) = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/tenants/{}/jobs?integration={}", app.tenant, app.integration),
            None,
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| e.contains("unknown query parameter \"integration\"")),
        "{answer}"
    );

    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/tenants/{}/tasks/{}/redrive", app.base, app.tenant, failed.id);
    let refused = http.post(&url).bearer_auth(&app.admin.token).send().await.expect("post");
    assert_eq!(refused.status(), reqwest::StatusCode::CONFLICT);
    let events = app.store.connector_task_events(app.tenant, failed.id).await.expect("events");
    assert!(!events.iter().any(|e| e.0 == "succeeded" || e.0 == "already_applied"), "{events:?}");
    assert!(app.app_users().await.iter().any(|(e, _)| e == "alice@example.com"), "alice stays in the app");
    app.stop().await;
}

#[tokio::test]
async fn a_rotated_credential_is_used_at_the_next_task_and_a_redrive_then_removes_the_user() {
    let app = spawn_app().await;
    let alice = app.person("alice@example.com", "ADMIN").await;
    let admins = app.team("Admins", &[alice], "ADMIN").await;
    let before = app.settle(1).await.len();
    // The app's token was rotated there: the one unseat holds is refused from now on.
    let http = reqwest::Client::new();
    let rotated = http
        .post(format!("{}/_emulator/businesses/{}/token", app.emulator_url, unseat_tests::BUSINESS))
        .json(&json!({ "token": "rotated-token" }))
        .send()
        .await
        .expect("require a token");
    assert_eq!(rotated.status(), reqwest::StatusCode::NO_CONTENT);
    app.scim.remove_member(admins, alice).await.expect("remove member");
    let tasks = app.settle(before + 1).await;
    let failed = tasks.iter().find(|t| t.outcome == "remove").expect("removal task").clone();
    assert_eq!(failed.status, "failed", "{failed:?}");
    let path = format!("/api/v1/tenants/{}/integrations/{}", app.tenant, app.integration);
    let integration = app.admin_get(&path).await;
    assert!(
        integration["needs_attention"].as_str().is_some(),
        "the refused token flags the integration: {integration}"
    );
    assert!(app.app_users().await.iter().any(|(e, _)| e == "alice@example.com"), "alice is still in the app");

    let (status, answer) =
        app.call(reqwest::Method::PATCH, &path, Some(json!({ "credential": "rotated-token" }))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["has_credential"], true, "{answer}");
    assert!(!answer.to_string().contains("rotated-token"), "the credential never comes back: {answer}");
    let stored: String = app
        .store
        .client()
        .await
        .expect("db")
        .query_one("select credential from integrations where id = $1", &[&app.integration])
        .await
        .expect("row")
        .get(0);
    assert!(!stored.contains("rotated-token"), "stored sealed, not as given");

    let redrive = format!("{}/api/v1/tenants/{}/tasks/{}/redrive", app.base, app.tenant, failed.id);
    let accepted = http.post(redrive).bearer_auth(&app.admin.token).json(&json!({})).send().await.expect("post");
    assert_eq!(accepted.status(), reqwest::StatusCode::ACCEPTED);
    let tasks = app.settle(before + 1).await;
    let t = tasks.iter().find(|x| x.id == failed.id).expect("the same task");
    assert_eq!(t.status, "succeeded", "{t:?}");
    assert!(!app.app_users().await.iter().any(|(e, _)| e == "alice@example.com"), "alice is gone");
    let integration = app.admin_get(&path).await;
    assert!(integration["needs_attention"].is_null(), "{integration}");
    app.stop().await;
}
