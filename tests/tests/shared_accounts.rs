//! One app account two workspace users share (one address: a person's admin and everyday
//! directory users), through the real admin API and pipeline into the business-hub emulator:
//! the account holds the most either is granted, and what each user's next task trusts is what
//! the account really holds.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use unseat::client::ScimClient;
use unseat_tests::{spawn_app, TestApp, BUSINESS};
use uuid::Uuid;

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// A workspace user named `user_name` whose work address is `email`.
async fn user(scim: &ScimClient, user_name: &str, email: &str) -> Uuid {
    let body = json!({"schemas": [USER_SCHEMA], "userName": user_name, "active": true,
                      "emails": [{"value": email, "type": "work", "primary": true}]});
    let resp = scim.send(Method::POST, "/Users", Some(&body)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: Value = resp.json().await.unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

fn grants(app: &TestApp) -> String {
    format!("/api/v1/tenants/{}/integrations/{}/grants", app.tenant, app.integration)
}

async fn grant(app: &TestApp, body: Value) -> String {
    let (status, v) = app.call(Method::POST, &grants(app), Some(body)).await;
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().expect("grant id").to_string()
}

fn pair(email: &str, role: &str) -> (String, String) {
    (email.to_string(), role.to_string())
}

/// Graph reports FINANCE_EDITOR as EMPLOYEE (the integration says so), and the connector then
/// trusts the role it last applied. When one user's task changes the account the other holds
/// too, the other's record must follow: it said FINANCE_EDITOR (the account's role while both
/// had access), the account went down to EMPLOYEE when the first left, and the second's grant
/// of FINANCE_EDITOR then found "already held" and never raised it.
#[tokio::test]
async fn a_users_next_task_trusts_what_the_shared_account_holds_now() {
    let app = spawn_app().await;
    let integration = format!("/api/v1/tenants/{}/integrations/{}", app.tenant, app.integration);
    let body = json!({"roles": ["ADMIN", "FINANCE_EDITOR", "EMPLOYEE"],
                      "settings": {"business_id": BUSINESS, "reported_roles": "base"}});
    let (status, v) = app.call(Method::PATCH, &integration, Some(body)).await;
    assert_eq!(status, 200, "{v}");
    let settings = format!("{}/_emulator/settings", app.emulator_url);
    let resp = reqwest::Client::new().post(&settings).json(&json!({"base_roles_only": true})).send().await.unwrap();
    assert!(resp.status().is_success());

    let fin = user(&app.scim, "sam.finance", "sam@example.com").await;
    let everyday = user(&app.scim, "sam", "sam@example.com").await;
    let team = app.scim.create_group("Finance", &[fin]).await.unwrap();
    grant(&app, json!({"team_id": team, "role": "FINANCE_EDITOR"})).await;
    app.settle(1).await;
    // The everyday user's task runs second, and records the account's FINANCE_EDITOR.
    let own = grant(&app, json!({"user_id": everyday, "role": "EMPLOYEE"})).await;
    app.settle(2).await;
    assert_eq!(app.app_users().await, vec![pair("sam@example.com", "FINANCE_EDITOR")]);

    app.scim.remove_member(team, fin).await.unwrap();
    let done = app.settle(3).await.len();
    assert_eq!(app.app_users().await, vec![pair("sam@example.com", "EMPLOYEE")], "lowered to the other's grant");
    let access = app.admin_get(&format!("/api/v1/tenants/{}/users/{everyday}/access", app.tenant)).await;
    let entry = &access["integrations"][0];
    assert_eq!(entry["applied"]["role"], "EMPLOYEE", "recorded at what the account holds: {access}");

    let (status, v) =
        app.call(Method::PATCH, &format!("{}/{own}", grants(&app)), Some(json!({"role": "FINANCE_EDITOR"}))).await;
    assert_eq!(status, 200, "{v}");
    let tasks = app.settle(done + 1).await;
    assert_eq!(tasks.last().map(|t| t.status.as_str()), Some("succeeded"), "{tasks:#?}");
    assert_eq!(app.app_users().await, vec![pair("sam@example.com", "FINANCE_EDITOR")], "raised");
    app.stop().await;
}

/// A user whose address changed leaves the account at the old address to the other user who
/// has it, at what that user is granted (it kept their ADMIN before), and is given their own
/// account at the new address; losing access then removes only that one.
#[tokio::test]
async fn a_moved_user_leaves_the_shared_account_at_the_others_grants() {
    let app = spawn_app().await;
    let admin = user(&app.scim, "pat.admin", "pat@example.com").await;
    let everyday = user(&app.scim, "pat", "pat@example.com").await;
    let team = app.scim.create_group("Admins", &[admin]).await.unwrap();
    grant(&app, json!({"team_id": team, "role": "ADMIN"})).await;
    grant(&app, json!({"user_id": everyday, "role": "EMPLOYEE"})).await;
    let granted = app.settle(2).await.len();
    assert_eq!(app.app_users().await, vec![pair("pat@example.com", "ADMIN")]);

    let ops = json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "pat.new@example.com"}]);
    let resp = app.scim.patch(&format!("/Users/{admin}"), ops).await.unwrap();
    assert!(resp.status().is_success());
    let tasks = app.settle(granted + 1).await;
    let moved = tasks[granted..].iter().find(|t| t.email == "pat.new@example.com").expect("the address change");
    assert_eq!((moved.outcome.as_str(), moved.status.as_str()), ("update", "succeeded"), "{moved:?}");
    let held = vec![pair("pat.new@example.com", "ADMIN"), pair("pat@example.com", "EMPLOYEE")];
    assert_eq!(app.app_users().await, held, "the admin role went with them to their new address");
    let events = app.store.connector_task_events(app.tenant, moved.id).await.expect("events");
    let (_, _, _, detail) = events.last().expect("an event");
    assert!(
        detail.contains(&format!(
            "the account at the former address pat@example.com is left to the other users with that address (pat \
             ({everyday})), at what they are granted: role changed from ADMIN to EMPLOYEE"
        )),
        "{detail}"
    );

    app.scim.remove_member(team, admin).await.unwrap();
    let tasks = app.settle(tasks.len() + 1).await;
    let removal = tasks.iter().rfind(|t| t.outcome == "remove").expect("a removal");
    assert_eq!(removal.status, "succeeded", "{removal:?}");
    assert_eq!(app.app_users().await, vec![pair("pat@example.com", "EMPLOYEE")], "only their own account went");
    app.stop().await;
}

/// The IdP changes a person's address: an account the app already has stays theirs (found by
/// the id the connector remembered, nobody invited twice), while an invitation still pending
/// moves to the new address (the one to the old address could be accepted by whoever reads that
/// mailbox now). Each change is in the log as an update that says why.
#[tokio::test]
async fn a_changed_address_moves_a_pending_invitation_and_keeps_an_account() {
    let app = spawn_app().await;
    let bob = user(&app.scim, "bob", "bob@example.com").await;
    grant(&app, json!({"user_id": bob, "role": "EMPLOYEE"})).await;
    app.settle(1).await;
    assert_eq!(app.app_users().await, vec![pair("bob@example.com", "EMPLOYEE")]);
    let settings = format!("{}/_emulator/settings", app.emulator_url);
    let resp = reqwest::Client::new().post(&settings).json(&json!({"invitations_pending": true})).send().await.unwrap();
    assert!(resp.status().is_success());
    let ann = user(&app.scim, "ann", "ann@example.com").await;
    grant(&app, json!({"user_id": ann, "role": "EMPLOYEE"})).await;
    let before = app.settle(2).await.len();
    assert_eq!(app.pending_invitations().await, ["ann@example.com"]);

    for (id, address) in [(bob, "bob.new@example.com"), (ann, "ann.new@example.com")] {
        let ops = json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": address}]);
        let resp = app.scim.patch(&format!("/Users/{id}"), ops).await.unwrap();
        assert!(resp.status().is_success());
    }
    let tasks = app.settle(before + 2).await;
    for (old, new) in [("bob@example.com", "bob.new@example.com"), ("ann@example.com", "ann.new@example.com")] {
        let task =
            tasks[before..].iter().find(|t| t.email == new).unwrap_or_else(|| panic!("a task for {new}: {tasks:#?}"));
        assert_eq!((task.outcome.as_str(), task.status.as_str()), ("update", "succeeded"), "{task:?}");
        let reason = format!("address changed from {old} to {new}: an individual grant grants EMPLOYEE");
        assert_eq!(task.reason, reason);
    }
    assert_eq!(app.pending_invitations().await, ["ann.new@example.com"], "the invitation moved");
    assert_eq!(app.app_users().await, vec![pair("bob@example.com", "EMPLOYEE")], "bob's account kept, nobody added");
    app.stop().await;
}

/// A user who moves to an address whose account another user has: that account is now how the
/// app knows them, and the account their remembered id names, at the former address, is
/// removed (it was left in the app, holding their role, while the log said they were out).
#[tokio::test]
async fn a_user_who_moves_onto_a_shared_address_leaves_no_account_behind() {
    let app = spawn_app().await;
    let mia = user(&app.scim, "mia", "mia@example.com").await;
    let ops = user(&app.scim, "ops.box", "ops@example.com").await;
    let team = app.scim.create_group("Admins", &[mia]).await.unwrap();
    grant(&app, json!({"team_id": team, "role": "ADMIN"})).await;
    grant(&app, json!({"user_id": ops, "role": "EMPLOYEE"})).await;
    let before = app.settle(2).await.len();
    assert_eq!(app.app_users().await, vec![pair("mia@example.com", "ADMIN"), pair("ops@example.com", "EMPLOYEE")]);

    // One PATCH moves her onto the shared address and deactivates her.
    let ops_patch = json!([
        {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "ops@example.com"},
        {"op": "replace", "path": "active", "value": false}
    ]);
    let resp = app.scim.patch(&format!("/Users/{mia}"), ops_patch).await.unwrap();
    assert!(resp.status().is_success());
    let tasks = app.settle(before + 1).await;
    let removal = tasks[before..].iter().find(|t| t.outcome == "remove").expect("a removal");
    assert_eq!(removal.status, "superseded", "the shared account stays: {removal:?}");
    let events = app.store.connector_task_events(app.tenant, removal.id).await.expect("events");
    let (_, _, _, detail) = events.last().expect("an event");
    assert!(detail.contains("the user's account at the former address mia@example.com"), "{detail}");
    assert_eq!(app.app_users().await, vec![pair("ops@example.com", "EMPLOYEE")], "her old account went");
    app.stop().await;
}
