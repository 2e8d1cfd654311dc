//! The integration directory (IdLCM) flow end to end: an IdP provisions users to one
//! integration's own SCIM endpoint; unassigning them the way Okta and Entra do takes them out
//! of the app, and the integration's Activity shows it.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use unseat::client::ScimClient;
use unseat_tests::{spawn_app, TestApp};
use uuid::Uuid;

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

async fn provision(scim: &ScimClient, body: Value) -> Uuid {
    let resp = scim.send(Method::POST, "/Users", Some(&body)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: Value = resp.json().await.unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

async fn patch(scim: &ScimClient, path: &str, ops: Value) {
    let resp = scim.patch(path, ops).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
}

/// Pushes a group named `name` with `member` in it, as Okta's group push does; its id.
async fn push_group(scim: &ScimClient, name: &str, member: Uuid) -> String {
    let resp = scim
        .send(Method::POST, "/Groups", Some(&json!({"displayName": name, "members": [{"value": member}]})))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let group: Value = resp.json().await.unwrap();
    group["id"].as_str().unwrap().to_string()
}

/// The integration's Activity as (email, outcome, status), oldest first.
async fn activity(app: &TestApp) -> Vec<(String, String, String)> {
    let v = app.admin_get(&format!("/api/v1/tenants/{}/integrations/{}/activity", app.tenant, app.integration)).await;
    let mut tasks: Vec<(String, String, String)> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
            (s("user_email"), s("outcome"), s("status"))
        })
        .collect();
    tasks.reverse();
    tasks
}

/// The scope the Automation Log recorded for every job of the tenant.
async fn job_scopes(app: &TestApp) -> Vec<String> {
    let c = app.store.client().await.unwrap();
    c.query("select scope from jobs where tenant_id = $1", &[&app.tenant])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn pair(email: &str, role: &str) -> (String, String) {
    (email.to_string(), role.to_string())
}

#[tokio::test]
async fn okta_unassignment_removes_the_user_and_shows_in_the_activity() {
    let app = spawn_app().await;
    let scim = app.integration_scim().await;
    app.emulator.seed(unseat_tests::BUSINESS, "okta.user@example.com", "EMPLOYEE").await.unwrap();
    // Okta's create, with the app role Okta maps into `roles`.
    let id = provision(
        &scim,
        json!({"schemas": [USER_SCHEMA], "userName": "okta.user@example.com", "active": true,
               "name": {"givenName": "Okta", "familyName": "User"},
               "emails": [{"primary": true, "value": "okta.user@example.com", "type": "work"}],
               "roles": [{"value": "Admin", "primary": true}], "password": "x"}),
    )
    .await;
    app.settle(1).await;
    assert_eq!(app.app_users().await, vec![pair("okta.user@example.com", "ADMIN")]);
    // The workspace directory does not see the integration's users.
    let ws = app.scim.send(Method::GET, &format!("/Users/{id}"), None).await.unwrap();
    assert_eq!(ws.status(), StatusCode::NOT_FOUND);

    // Okta unassigns: a path-less replace of active.
    patch(&scim, &format!("/Users/{id}"), json!([{"op": "replace", "value": {"active": false}}])).await;
    let tasks = app.settle(2).await;
    let removal = tasks.iter().find(|t| t.outcome == "remove").expect("a removal task");
    assert_eq!(removal.status, "succeeded", "{removal:?}");
    assert_eq!(removal.reason, "removed: unassigned from the app or deactivated in the IdP");
    assert!(app.app_users().await.is_empty());
    assert_eq!(
        activity(&app).await,
        vec![
            ("okta.user@example.com".into(), "grant".into(), "succeeded".into()),
            ("okta.user@example.com".into(), "remove".into(), "succeeded".into()),
        ]
    );
    let scope = app.integration.to_string();
    assert!(job_scopes(&app).await.iter().all(|s| *s == scope));
    app.stop().await;
}

#[tokio::test]
async fn entra_unassignment_then_delete_removes_the_user_once() {
    let app = spawn_app().await;
    let scim = app.integration_scim().await;
    app.emulator.seed(unseat_tests::BUSINESS, "entra.user@example.com", "EMPLOYEE").await.unwrap();
    // Entra's create: no role attribute, so the integration's lowest role (EMPLOYEE here).
    let id = provision(
        &scim,
        json!({"schemas": [USER_SCHEMA, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
               "externalId": "0a21f0f2", "userName": "entra.user@example.com", "active": true,
               "displayName": "Entra User", "emails": [{"primary": true, "type": "work", "value": "entra.user@example.com"}],
               "meta": {"resourceType": "User"}}),
    )
    .await;
    app.settle(0).await;
    assert_eq!(app.app_users().await, vec![pair("entra.user@example.com", "EMPLOYEE")]);

    // Entra unassigns: a capitalised Replace with the string "False", later a DELETE.
    patch(&scim, &format!("/Users/{id}"), json!([{"op": "Replace", "path": "active", "value": "False"}])).await;
    let tasks = app.settle(1).await;
    assert_eq!(tasks.iter().filter(|t| t.outcome == "remove").count(), 1, "{tasks:#?}");
    assert!(app.app_users().await.is_empty());
    let resp = scim.send(Method::DELETE, &format!("/Users/{id}"), None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let after = app.settle(1).await;
    assert_eq!(after.len(), tasks.len(), "the user was already out of the app: nothing more to do");
    assert_eq!(
        activity(&app).await,
        vec![
            ("entra.user@example.com".into(), "grant".into(), "succeeded".into()),
            ("entra.user@example.com".into(), "remove".into(), "succeeded".into()),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn leaving_a_pushed_group_lowers_the_role_and_deactivation_removes() {
    let app = spawn_app().await;
    let scim = app.integration_scim().await;
    app.emulator.seed(unseat_tests::BUSINESS, "pat@example.com", "ADMIN").await.unwrap();
    let id = provision(&scim, json!({"schemas": [USER_SCHEMA], "userName": "pat@example.com", "active": true})).await;
    // A pushed group named after a role on the ladder gives that role.
    let group = push_group(&scim, "Admin", id).await;
    app.settle(1).await;
    assert_eq!(app.app_users().await, vec![pair("pat@example.com", "ADMIN")]);

    // Okta's group push removes the member: the direct assignment still gives EMPLOYEE. (The
    // user and the group may have reached the app in one task or, the machine busy, in two: a
    // grant of EMPLOYEE, then an update to ADMIN. Only what the removal did counts here.)
    let earlier = app.tasks().await.len();
    patch(&scim, &format!("/Groups/{group}"), json!([{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]))
        .await;
    let tasks = app.settle(earlier + 1).await;
    let update = tasks[earlier..].iter().find(|t| t.outcome == "update").expect("an update task");
    assert_eq!((update.from_role.as_deref(), update.to_role.as_deref()), (Some("ADMIN"), Some("EMPLOYEE")));
    assert_eq!(update.status, "succeeded");
    assert_eq!(app.app_users().await, vec![pair("pat@example.com", "EMPLOYEE")]);

    // Okta then unassigns the user.
    let earlier = tasks.len();
    patch(&scim, &format!("/Users/{id}"), json!([{"op": "replace", "value": {"active": false}}])).await;
    app.settle(earlier + 1).await;
    assert!(app.app_users().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn renaming_a_pushed_group_gives_its_members_the_role_of_the_new_name() {
    let app = spawn_app().await;
    let scim = app.integration_scim().await;
    app.emulator.seed(unseat_tests::BUSINESS, "sam@example.com", "ADMIN").await.unwrap();
    let id = provision(&scim, json!({"schemas": [USER_SCHEMA], "userName": "sam@example.com", "active": true})).await;
    let group = push_group(&scim, "Admin", id).await;
    app.settle(1).await;
    assert_eq!(app.app_users().await, vec![pair("sam@example.com", "ADMIN")]);

    // Okta renames the pushed group to a name that is no role: its member keeps only what the
    // direct assignment gives (the lowest role).
    let earlier = app.tasks().await.len();
    patch(&scim, &format!("/Groups/{group}"), json!([{"op": "replace", "path": "displayName", "value": "Sales"}]))
        .await;
    let tasks = app.settle(earlier + 1).await;
    let update = tasks[earlier..].iter().find(|t| t.outcome == "update").expect("an update task");
    assert_eq!((update.from_role.as_deref(), update.to_role.as_deref()), (Some("ADMIN"), Some("EMPLOYEE")));
    assert_eq!(update.status, "succeeded", "{update:?}");
    assert_eq!(
        update.reason,
        "ADMIN → EMPLOYEE: left pushed group Admin; pushed group Sales and the IdP's assignment grant EMPLOYEE"
    );
    assert_eq!(app.app_users().await, vec![pair("sam@example.com", "EMPLOYEE")]);

    // Entra's PUT of the group under a role's name again raises them back.
    let earlier = tasks.len();
    let resp = scim
        .send(
            Method::PUT,
            &format!("/Groups/{group}"),
            Some(&json!({"displayName": "Admin", "members": [{"value": id}]})),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let tasks = app.settle(earlier + 1).await;
    assert!(tasks[earlier..].iter().any(|t| t.to_role.as_deref() == Some("ADMIN")), "{tasks:#?}");
    assert_eq!(app.app_users().await, vec![pair("sam@example.com", "ADMIN")]);
    app.stop().await;
}

/// Entra's SingleAppRoleAssignment mapping: the POST carries the role plainly, a role change
/// arrives as an Add of the new app role assignment JSON-encoded in `value`.
#[tokio::test]
async fn entras_single_app_role_change_lowers_the_role_in_the_app() {
    let app = spawn_app().await;
    let scim = app.integration_scim().await;
    app.emulator.seed(unseat_tests::BUSINESS, "lee@example.com", "EMPLOYEE").await.unwrap();
    let id = provision(
        &scim,
        json!({"schemas": [USER_SCHEMA], "userName": "lee@example.com", "active": true,
               "roles": [{"primary": "True", "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}]}),
    )
    .await;
    app.settle(1).await;
    assert_eq!(app.app_users().await, vec![pair("lee@example.com", "ADMIN")]);

    let earlier = app.tasks().await.len();
    let encoded = r#"{"id":"06b07648-ecfe-589f-9d2f-6325724a46ee","value":"Employee","displayName":"Employee"}"#;
    patch(&scim, &format!("/Users/{id}"), json!([{"op": "Add", "path": "roles", "value": [{"value": encoded}]}])).await;
    let tasks = app.settle(earlier + 1).await;
    let update = tasks[earlier..].iter().find(|t| t.outcome == "update").expect("an update task");
    assert_eq!((update.from_role.as_deref(), update.to_role.as_deref()), (Some("ADMIN"), Some("EMPLOYEE")));
    assert_eq!(app.app_users().await, vec![pair("lee@example.com", "EMPLOYEE")]);
    // The IdP reads back the role it sent, plainly, and primary as a boolean where it was one.
    let user: Value = scim.send(Method::GET, &format!("/Users/{id}"), None).await.unwrap().json().await.unwrap();
    assert_eq!(user["roles"], json!([{"value": "Employee", "display": "Employee"}]));
    app.stop().await;
}

/// A role the IdP names that is not on the integration's ladder (a mapping misspelt in the
/// IdP) gives the lowest role, and the log says which role was not on the ladder.
#[tokio::test]
async fn a_role_not_on_the_ladder_gives_the_lowest_role_and_the_log_names_it() {
    let app = spawn_app().await;
    let scim = app.integration_scim().await;
    app.emulator.seed(unseat_tests::BUSINESS, "kim@example.com", "EMPLOYEE").await.unwrap();
    provision(
        &scim,
        json!({"schemas": [USER_SCHEMA], "userName": "kim@example.com", "roles": [{"value": "Administrator"}]}),
    )
    .await;
    let tasks = app.settle(1).await;
    assert_eq!(app.app_users().await, vec![pair("kim@example.com", "EMPLOYEE")]);
    let grant = tasks.iter().find(|t| t.outcome == "grant").expect("a grant");
    assert!(grant.reason.ends_with("not on this integration's role ladder: Administrator"), "{}", grant.reason);
    app.stop().await;
}

/// Two users of a directory the app knows by one address (a person's admin and everyday
/// accounts sharing a mailbox, or Entra provisioning a person again under a new id): the app
/// account holds the most either is granted, a removal of one leaves it to the other at what
/// the other is granted (and the log says superseded), and removing the last takes it away.
#[tokio::test]
async fn an_account_two_users_share_holds_the_most_either_is_granted() {
    let app = spawn_app().await;
    let scim = app.integration_scim().await;
    app.emulator.seed(unseat_tests::BUSINESS, "lee@example.com", "EMPLOYEE").await.unwrap();
    let email = json!([{"primary": true, "type": "work", "value": "lee@example.com"}]);
    let admin = provision(
        &scim,
        json!({"schemas": [USER_SCHEMA], "userName": "lee.admin", "emails": email, "roles": [{"value": "ADMIN"}]}),
    )
    .await;
    app.settle(1).await;
    assert_eq!(app.app_users().await, vec![pair("lee@example.com", "ADMIN")]);
    // The everyday account, granted less, leaves the account as the admin one needs it.
    let everyday = provision(
        &scim,
        json!({"schemas": [USER_SCHEMA], "userName": "lee", "emails": email, "roles": [{"value": "EMPLOYEE"}]}),
    )
    .await;
    app.settle(2).await;
    assert_eq!(app.app_users().await, vec![pair("lee@example.com", "ADMIN")], "not lowered by the other user");

    // The admin account unassigned: the account stays, lowered to what the everyday one has.
    patch(&scim, &format!("/Users/{admin}"), json!([{"op": "replace", "value": {"active": false}}])).await;
    let tasks = app.settle(3).await;
    let removal = tasks.iter().find(|t| t.outcome == "remove").expect("a removal task");
    assert_eq!(removal.status, "superseded", "{removal:?}");
    let events = app.store.connector_task_events(app.tenant, removal.id).await.expect("events");
    let (kind, _, _, detail) = events.last().expect("an event");
    assert_eq!(kind, "kept_for_another_user", "{events:?}");
    // The other user is named as the directory names them.
    assert!(detail.contains(&format!("lee ({everyday})")) && detail.contains("lee@example.com"), "{detail}");
    assert_eq!(app.app_users().await, vec![pair("lee@example.com", "EMPLOYEE")], "lowered, not removed");

    let resp = scim.send(Method::DELETE, &format!("/Users/{everyday}"), None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    app.settle(4).await;
    assert!(app.app_users().await.is_empty(), "the last user with the address removed: the account goes");
    app.stop().await;
}

/// One of two users sharing an app account moves to an address of their own: their tasks no
/// longer touch the shared account (which their remembered id still names), they are given an
/// account at the new address, and unassigning them removes only that one.
#[tokio::test]
async fn a_user_who_moves_off_a_shared_address_leaves_the_shared_account_alone() {
    let app = spawn_app().await;
    let scim = app.integration_scim().await;
    let email = |a: &str| json!([{"primary": true, "type": "work", "value": a}]);
    let mover = provision(
        &scim,
        json!({"schemas": [USER_SCHEMA], "userName": "ann.1", "emails": email("ann@example.com"), "roles": [{"value": "EMPLOYEE"}]}),
    )
    .await;
    app.settle(1).await;
    provision(
        &scim,
        json!({"schemas": [USER_SCHEMA], "userName": "ann.2", "emails": email(" Ann@Example.com"), "roles": [{"value": "ADMIN"}]}),
    )
    .await;
    app.settle(2).await;
    assert_eq!(app.app_users().await, vec![pair("ann@example.com", "ADMIN")]);

    patch(
        &scim,
        &format!("/Users/{mover}"),
        json!([{"op": "replace", "value": {"emails": email("ann.new@example.com"), "roles": [{"value": "ADMIN"}]}}]),
    )
    .await;
    app.settle(3).await;
    assert_eq!(
        app.app_users().await,
        vec![pair("ann.new@example.com", "ADMIN"), pair("ann@example.com", "ADMIN")],
        "an account of her own at the new address; the shared one untouched"
    );
    patch(&scim, &format!("/Users/{mover}"), json!([{"op": "replace", "value": {"active": false}}])).await;
    app.settle(4).await;
    assert_eq!(app.app_users().await, vec![pair("ann@example.com", "ADMIN")], "only her own account removed");
    app.stop().await;
}

/// While Meta invitations stay pending, a person the IdP assigns is invited; if the IdP then
/// changes their address, the invitation to the old one is withdrawn when the person is next
/// changed or unassigned: accepted later, it would give access nobody is granted.
#[tokio::test]
async fn an_invitation_to_a_former_address_is_withdrawn_at_unassignment() {
    let app = spawn_app().await;
    let scim = app.integration_scim().await;
    let http = reqwest::Client::new();
    let settings = format!("{}/_emulator/settings", app.emulator_url);
    let resp = http.post(&settings).json(&json!({"invitations_pending": true})).send().await.unwrap();
    assert!(resp.status().is_success());
    let email = |a: &str| json!([{"primary": true, "type": "work", "value": a}]);
    let ola = provision(
        &scim,
        json!({"schemas": [USER_SCHEMA], "userName": "ola@acme.test", "emails": email("ola@acme.test")}),
    )
    .await;
    app.settle(1).await;
    assert_eq!(app.pending_invitations().await, ["ola@acme.test"]);

    // Okta changes her address (nothing to do in the app), then unassigns her.
    patch(
        &scim,
        &format!("/Users/{ola}"),
        json!([{"op": "replace", "value": {"userName": "ola.x@acme.test", "emails": email("ola.x@acme.test")}}]),
    )
    .await;
    // The attempt's next call (looking her up at the new address) fails once: the withdrawal
    // it made first is in that attempt's event, since the retry finds nothing to withdraw.
    let fault = json!({"method": "GET", "path_contains": "business_users", "status": 503, "times": 1});
    let resp = http.post(format!("{}/_emulator/faults", app.emulator_url)).json(&fault).send().await.unwrap();
    assert!(resp.status().is_success());
    let earlier = app.tasks().await.len();
    patch(&scim, &format!("/Users/{ola}"), json!([{"op": "replace", "value": {"active": false}}])).await;
    let tasks = app.settle(earlier + 1).await;
    let removal = tasks.iter().find(|t| t.outcome == "remove").expect("a removal");
    assert_eq!(removal.status, "succeeded", "{removal:?}");
    assert!(app.pending_invitations().await.is_empty(), "the invitation to the former address is withdrawn");
    let events = app.store.connector_task_events(app.tenant, removal.id).await.expect("events");
    let said = "1 pending invitation to the former address ola@acme.test withdrawn";
    let failed: Vec<_> = events.iter().filter(|e| e.0 == "attempt_failed").collect();
    assert!(failed.len() == 1 && failed[0].3.contains(said), "{events:?}");
    let (_, _, _, detail) = events.last().expect("an event");
    assert!(!detail.contains("withdrawn"), "the retry withdrew nothing: {detail}");
    app.stop().await;
}

/// An integration takes its users from its own SCIM endpoint or from console shares, never
/// both: otherwise one person would be two users of one app account, and unassigning them in
/// the IdP would remove access a team still grants (or the other way round). Each side refuses
/// with 409 once the other is in use, and the refusal changes nothing.
#[tokio::test]
async fn an_integration_is_shared_in_the_console_or_fed_by_its_own_scim_endpoint_not_both() {
    let app = spawn_app().await;
    let tokens = format!("/api/v1/tenants/{}/scim-tokens", app.tenant);
    let grants = format!("/api/v1/tenants/{}/integrations/{}/grants", app.tenant, app.integration);
    let count = |sql: &'static str| {
        let store = app.store.clone();
        let tenant = app.tenant;
        async move { store.client().await.unwrap().query_one(sql, &[&tenant]).await.unwrap().get::<_, i64>(0) }
    };
    let token_count = || count("select count(*) from tokens where tenant_id = $1");
    let grant_count = || count("select count(*) from grants where tenant_id = $1");

    // Shared with a team first: the integration's own endpoint is refused.
    let ann = app.scim.create_user("ann@example.com").await.unwrap();
    let team = app.team("Ads", &[ann], "EMPLOYEE").await;
    app.settle(1).await;
    let tokens_before = token_count().await;
    let (status, v) =
        app.call(Method::POST, &tokens, Some(json!({"integration_id": app.integration, "label": "Okta app"}))).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("remove its grants"), "{v}");
    assert_eq!(token_count().await, tokens_before, "no token was minted");

    // Once the share is gone, the endpoint can be connected; then shares are refused.
    let listed = app.admin_get(&grants).await;
    let grant_id = listed["grants"][0]["id"].as_str().unwrap().to_string();
    let (status, v) = app.call(Method::DELETE, &format!("{grants}/{grant_id}"), None).await;
    assert!(status == 204 || status == 200, "{status} {v}");
    // With the share gone Ann loses the app: wait for it, so the counts below see only what
    // the refused requests could write.
    app.settle(2).await;
    let scim = app.integration_scim().await;
    let outbox_before = app.outbox_count().await;
    let grants_before = grant_count().await;
    let (status, v) = app.call(Method::POST, &grants, Some(json!({"team_id": team, "role": "EMPLOYEE"}))).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("own SCIM endpoint"), "{v}");
    let (status, v) = app.call(Method::POST, &grants, Some(json!({"user_id": ann, "role": "EMPLOYEE"}))).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!((grant_count().await, app.outbox_count().await), (grants_before, outbox_before), "nothing changed");

    // The endpoint itself works as before.
    let id = provision(&scim, json!({"schemas": [USER_SCHEMA], "userName": "ida@example.com", "active": true})).await;
    assert!(!id.is_nil());
    app.stop().await;
}

/// The access explanation of a user of an integration's own directory comes from that
/// directory: their assignment and its role, kept; once unassigned, a removal.
#[tokio::test]
async fn the_access_explanation_of_an_integration_directory_user_reads_their_assignment() {
    let app = spawn_app().await;
    let scim = app.integration_scim().await;
    let id = provision(
        &scim,
        json!({"schemas": [USER_SCHEMA], "userName": "ann@example.com", "active": true,
               "emails": [{"primary": true, "value": "ann@example.com", "type": "work"}],
               "roles": [{"value": "Admin", "primary": true}]}),
    )
    .await;
    app.settle(1).await;
    assert_eq!(app.app_users().await, vec![pair("ann@example.com", "ADMIN")]);

    let explain = format!("/api/v1/tenants/{}/users/{id}/access", app.tenant);
    let v = app.admin_get(&explain).await;
    assert_eq!(v["status"], "active", "{v}");
    let one = &v["integrations"][0];
    assert_eq!(one["integration_id"], app.integration.to_string(), "{v}");
    assert_eq!(one["access"]["role"], "ADMIN", "{v}");
    assert_eq!(one["access"]["because"], json!(["the IdP's assignment"]), "no console grant: {v}");
    assert!(!one["grants"].as_array().expect("grants").is_empty(), "the assignment is the grant: {v}");
    assert!(one["pending"].is_null(), "nothing to do while she is assigned: {v}");

    patch(&scim, &format!("/Users/{id}"), json!([{"op": "replace", "path": "active", "value": "False"}])).await;
    app.settle(2).await;
    let v = app.admin_get(&explain).await;
    assert_eq!(v["status"], "inactive", "{v}");
    assert!(v["integrations"][0]["access"].is_null(), "{v}");
    app.stop().await;
}

/// A preview of a change in an integration's own directory plans from that directory: leaving
/// a pushed group that gave Admin lowers the user to the role of their direct assignment.
#[tokio::test]
async fn a_preview_in_an_integration_directory_reads_its_assignments() {
    let app = spawn_app().await;
    let scim = app.integration_scim().await;
    let id = provision(&scim, json!({"schemas": [USER_SCHEMA], "userName": "pia@example.com", "active": true})).await;
    let group = push_group(&scim, "Admin", id).await;
    app.settle(1).await;
    assert_eq!(app.app_users().await, vec![pair("pia@example.com", "ADMIN")]);

    let (status, v) = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/access/preview", app.tenant),
            Some(json!({"change": "leave_group", "user_id": id, "group_id": group})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let outcome = &v["outcomes"][0];
    assert_eq!(outcome["outcome"], "update", "{v}");
    assert_eq!((outcome["from"]["role"].as_str(), outcome["to"]["role"].as_str()), (Some("ADMIN"), Some("EMPLOYEE")));
    assert_eq!(app.app_users().await, vec![pair("pia@example.com", "ADMIN")], "a preview changes nothing");
    app.stop().await;
}

#[tokio::test]
async fn deleting_an_integration_stops_managing_its_app_and_keeps_its_log() {
    let app = spawn_app().await;
    let scim = app.integration_scim().await;
    let id = provision(
        &scim,
        json!({"schemas": [USER_SCHEMA], "userName": "okta.user@example.com", "active": true,
               "emails": [{"primary": true, "value": "okta.user@example.com", "type": "work"}],
               "roles": [{"value": "Admin", "primary": true}]}),
    )
    .await;
    app.settle(1).await;
    // The app refuses the unassignment: a failed removal that only a re-drive would finish.
    app.emulator.fault(json!({ "method": "DELETE", "status": 403 })).await.unwrap();
    patch(&scim, &format!("/Users/{id}"), json!([{"op": "replace", "value": {"active": false}}])).await;
    let tasks = app.settle(2).await;
    let failed = tasks.iter().find(|t| t.outcome == "remove").expect("a removal task").clone();
    assert_eq!(failed.status, "failed", "{failed:?}");
    // Another integration, shared with a team in the console: untouched by the deletion.
    let ads = app.ads_hub(&["ADMIN", "EMPLOYEE"], &[], &[]).await;
    let ads: Uuid = ads["id"].as_str().unwrap().parse().unwrap();
    let bob = app.scim.create_user("bob@example.com").await.unwrap();
    let team = app.scim.create_group("Ads", &[bob]).await.unwrap();
    app.admin.grant_team(app.tenant, ads, team, "EMPLOYEE").await.unwrap();
    let before = app.settle(3).await.len();

    let path = format!("/api/v1/tenants/{}/integrations/{}", app.tenant, app.integration);
    let viewer = app.viewer_token().await;
    let (status, _) = app.call_as(&viewer, Method::DELETE, &path, None).await;
    assert_eq!(status, 403, "a viewer may not delete an integration");
    let (status, answer) = app.call(Method::DELETE, &path, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deleted"]["id"], json!(app.integration), "{answer}");
    let counts: Vec<&Value> =
        ["grants", "tokens", "directory_users", "tasks_superseded"].iter().map(|k| &answer[*k]).collect();
    assert_eq!(counts, [&json!(0), &json!(1), &json!(1), &json!(1)], "{answer}");
    assert_eq!(app.call(Method::GET, &path, None).await.0, 404);
    assert_eq!(app.call(Method::DELETE, &path, None).await.0, 404, "deleted once");

    // Its SCIM token is refused and its directory is gone; the app keeps what people hold.
    let resp = scim.send(Method::GET, "/Users", None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let c = app.store.client().await.unwrap();
    let left: i64 = c
        .query_one(
            "select count(*) from scim_users where tenant_id = $1 and scope = $2",
            &[&app.tenant, &app.integration.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    assert_eq!(app.app_users().await, vec![("okta.user@example.com".to_string(), "ADMIN".to_string())]);

    // The log keeps the tasks; the failed one is superseded, saying why, and no more failed.
    let detail = app.admin_get(&format!("/api/v1/tenants/{}/tasks/{}", app.tenant, failed.id)).await;
    assert_eq!(detail["task"]["status"], "superseded", "{detail}");
    assert!(detail.to_string().contains("was deleted"), "{detail}");
    assert_eq!(app.tasks().await.len(), before, "no task went");

    // The other integration still works: bob leaves the team and its app.
    let in_ads = || async { app.emulator.users(unseat_tests::ADS_BUSINESS).await.unwrap() };
    assert!(in_ads().await.iter().any(|(e, _)| e == "bob@example.com"));
    app.emulator.clear_faults().await.unwrap();
    app.scim.remove_member(team, bob).await.unwrap();
    let tasks = app.settle(before + 1).await;
    let removal = tasks.iter().find(|t| t.email == "bob@example.com" && t.outcome == "remove").expect("bob's removal");
    assert_eq!(removal.status, "succeeded", "{removal:?}");
    assert!(!in_ads().await.iter().any(|(e, _)| e == "bob@example.com"));
    app.stop().await;
}
