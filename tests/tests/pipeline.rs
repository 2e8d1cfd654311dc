//! End to end: real SCIM HTTP → PostgreSQL + outbox → RabbitMQ → resolver → connector → the
//! business-hub emulator. Each test checks the app's final state and the Automation Log.

use serde_json::json;
use unseat_tests::{spawn_app, spawn_app_with, TestApp};

fn pair(email: &str, role: &str) -> (String, String) {
    (email.to_string(), role.to_string())
}

/// Alice (ADMIN via Admins), Bob (ADMIN via Admins, EMPLOYEE via Staff), Carol (EMPLOYEE via
/// Staff and Support), Dave (ADMIN via Admins and Marketing). Returns the settled app.
async fn company() -> (TestApp, Company) {
    let app = spawn_app().await;
    let alice = app.person("alice@example.com", "ADMIN").await;
    let bob = app.person("bob@example.com", "ADMIN").await;
    let carol = app.person("carol@example.com", "EMPLOYEE").await;
    let dave = app.person("dave@example.com", "ADMIN").await;
    let admins = app.team("Admins", &[alice, bob, dave], "ADMIN").await;
    let staff = app.team("Staff", &[bob, carol], "EMPLOYEE").await;
    let support = app.team("Support", &[carol], "EMPLOYEE").await;
    let marketing = app.team("Marketing", &[dave], "ADMIN").await;
    let tasks = app.settle(4).await;
    assert!(tasks.iter().all(|t| t.status == "succeeded" || t.status == "kept"), "{tasks:#?}");
    let c = Company { alice, bob, carol, dave, admins, staff, support, marketing };
    (app, c)
}

#[allow(dead_code)]
struct Company {
    alice: uuid::Uuid,
    bob: uuid::Uuid,
    carol: uuid::Uuid,
    dave: uuid::Uuid,
    admins: uuid::Uuid,
    staff: uuid::Uuid,
    support: uuid::Uuid,
    marketing: uuid::Uuid,
}

#[tokio::test]
async fn removed_from_their_only_team_is_removed_from_the_hub() {
    let (app, c) = company().await;
    let before = app.tasks().await.len();
    app.scim.remove_member(c.admins, c.alice).await.unwrap();
    let tasks = app.settle(before + 1).await;
    let t = tasks.iter().find(|t| t.email == "alice@example.com" && t.outcome == "remove").expect("removal task");
    assert_eq!(t.status, "succeeded", "{t:?}");
    assert!(!app.app_users().await.iter().any(|(e, _)| e == "alice@example.com"));
    // Everyone else is untouched.
    assert!(app.app_users().await.contains(&pair("bob@example.com", "ADMIN")));
    app.stop().await;
}

#[tokio::test]
async fn another_team_with_the_same_role_keeps_access_and_the_log_says_why() {
    let (app, c) = company().await;
    let before = app.tasks().await.len();
    app.scim.remove_member(c.staff, c.carol).await.unwrap();
    let tasks = app.settle(before + 1).await;
    let t = tasks.iter().find(|t| t.email == "carol@example.com" && t.outcome == "keep").expect("keep task");
    assert_eq!(t.status, "kept");
    assert_eq!(t.reason, "kept: team Support grants EMPLOYEE");
    assert!(app.app_users().await.contains(&pair("carol@example.com", "EMPLOYEE")));
    // The log shows it through the admin API too.
    let job = app.admin_get(&format!("/api/v1/tenants/{}/jobs/{}", app.tenant, t.job_id)).await;
    assert!(job.to_string().contains("kept: team Support grants EMPLOYEE"), "{job}");
    app.stop().await;
}

#[tokio::test]
async fn leaving_the_admin_team_lowers_the_role_to_what_remains() {
    let (app, c) = company().await;
    let before = app.tasks().await.len();
    app.scim.remove_member(c.admins, c.bob).await.unwrap();
    let tasks = app.settle(before + 1).await;
    let t = tasks.iter().find(|t| t.email == "bob@example.com" && t.outcome == "update").expect("update task");
    assert_eq!(t.status, "succeeded");
    assert_eq!(t.reason, "ADMIN → EMPLOYEE: left team Admins; team Staff grants EMPLOYEE");
    assert!(app.app_users().await.contains(&pair("bob@example.com", "EMPLOYEE")));
    app.stop().await;
}

#[tokio::test]
async fn deactivated_or_deleted_users_are_removed_everywhere() {
    let (app, c) = company().await;
    // Bob also holds a share of his own, which goes with him.
    app.admin.grant_user(app.tenant, app.integration, c.bob, "EMPLOYEE").await.unwrap();
    let before = app.settle(4).await.len();
    assert!(grant_subjects(&app).await.contains(&"bob@example.com".to_string()));
    app.scim.deactivate(c.dave).await.unwrap();
    app.scim.delete_user(c.bob).await.unwrap();
    let tasks = app.settle(before + 2).await;
    for email in ["dave@example.com", "bob@example.com"] {
        let t = tasks.iter().find(|t| t.email == email && t.outcome == "remove").expect("removal");
        assert_eq!(t.status, "succeeded", "{t:?}");
    }
    let users = app.app_users().await;
    assert_eq!(users, vec![pair("alice@example.com", "ADMIN"), pair("carol@example.com", "EMPLOYEE")]);
    assert_eq!(
        grant_subjects(&app).await,
        ["Admins", "Marketing", "Staff", "Support"],
        "a deactivated user's share stays"
    );
    app.stop().await;
}

/// Whom the integration's shares name, sorted.
async fn grant_subjects(app: &TestApp) -> Vec<String> {
    let v = app.admin_get(&format!("/api/v1/tenants/{}/integrations/{}/grants", app.tenant, app.integration)).await;
    let mut names: Vec<String> =
        v["grants"].as_array().unwrap().iter().map(|g| g["subject_name"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn deleting_a_group_resolves_every_member() {
    let (app, c) = company().await;
    let before = app.tasks().await.len();
    app.scim.delete_group(c.admins).await.unwrap();
    let tasks = app.settle(before + 3).await;
    assert_eq!(grant_subjects(&app).await, ["Marketing", "Staff", "Support"], "the deleted team's share went with it");
    let new: Vec<_> = tasks[before..].to_vec();
    let outcome = |email: &str| new.iter().find(|t| t.email == email).map(|t| t.outcome.clone());
    assert_eq!(outcome("alice@example.com").as_deref(), Some("remove"));
    assert_eq!(outcome("bob@example.com").as_deref(), Some("update"));
    assert_eq!(outcome("dave@example.com").as_deref(), Some("keep"));
    assert_eq!(
        app.app_users().await,
        vec![
            pair("bob@example.com", "EMPLOYEE"),
            pair("carol@example.com", "EMPLOYEE"),
            pair("dave@example.com", "ADMIN")
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn malformed_scim_and_bad_tokens_change_nothing_and_publish_nothing() {
    let (app, _c) = company().await;
    let outbox = app.outbox_count().await;
    let users = app.app_users().await;
    let http = reqwest::Client::new();
    let url = format!("{}/Users", app.scim.base);

    let resp = http
        .post(&url)
        .bearer_auth(&app.scim.token)
        .header("Content-Type", "application/scim+json")
        .body("{\"userName\": \"broken@example.com\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    assert_eq!(body["status"], "400");
    assert_eq!(body["scimType"], "invalidSyntax");

    let valid = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "eve@example.com"});
    let resp =
        http.post(&url).header("Content-Type", "application/scim+json").body(valid.to_string()).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .post(&url)
        .bearer_auth("scim_not-a-real-token")
        .header("Content-Type", "application/scim+json")
        .body(valid.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let list =
        app.scim.send(reqwest::Method::GET, "/Users?filter=userName%20eq%20%22eve@example.com%22", None).await.unwrap();
    let list: serde_json::Value = list.json().await.unwrap();
    assert_eq!(list["totalResults"], 0, "nothing was created: {list}");
    let list = app
        .scim
        .send(reqwest::Method::GET, "/Users?filter=userName%20eq%20%22broken@example.com%22", None)
        .await
        .unwrap();
    let list: serde_json::Value = list.json().await.unwrap();
    assert_eq!(list["totalResults"], 0);
    assert_eq!(app.outbox_count().await, outbox, "nothing published");
    assert_eq!(app.app_users().await, users);
    app.stop().await;
}

/// By default the relay deletes each outbox row once the broker confirmed it (the other tests
/// keep them, to look at what was published): the deactivation still reaches the app, and the
/// outbox ends empty.
#[tokio::test]
async fn published_outbox_rows_are_deleted_by_default_and_the_change_still_arrives() {
    let app = spawn_app_with(|s| s.outbox_keep_sent = std::time::Duration::ZERO).await;
    let alice = app.person("alice@example.com", "ADMIN").await;
    app.team("Admins", &[alice], "ADMIN").await;
    app.settle(1).await;
    app.scim.deactivate(alice).await.unwrap();
    let tasks = app.settle(2).await;
    assert!(tasks.iter().any(|t| t.outcome == "remove" && t.status == "succeeded"), "{tasks:#?}");
    assert!(!app.app_users().await.iter().any(|(email, _)| email == "alice@example.com"));
    assert_eq!(app.outbox_count().await, 0, "published rows are gone");
    app.stop().await;
}
