//! Explain, preview and grants with assets, through the real admin API and pipeline: what an
//! admin asks and what they see.

use serde_json::{json, Value};
use unseat_tests::{spawn_app, TestApp};
use uuid::Uuid;

struct Company {
    alice: Uuid,
    bob: Uuid,
    admins: Uuid,
    staff: Uuid,
    /// A hub with assets: pages and ad accounts with MANAGE > ADVERTISE > ANALYZE.
    ads: Uuid,
    staff_ads_grant: Uuid,
}

/// Alice: ADMIN via Admins. Bob: ADMIN via Admins and EMPLOYEE via Staff. On the Ads hub, Staff
/// gets EMPLOYEE with MANAGE on act_1 and ANALYZE on page_9; Admins gets ADMIN with ANALYZE on act_1.
async fn company() -> (TestApp, Company) {
    let app = spawn_app().await;
    let alice = app.person("alice@example.com", "ADMIN").await;
    let bob = app.person("bob@example.com", "ADMIN").await;
    let admins = app.team("Admins", &[alice, bob], "ADMIN").await;
    let staff = app.team("Staff", &[bob], "EMPLOYEE").await;
    app.emulator.seed("5005", "owner@example.com", "ADMIN").await.expect("second business");
    let v = app
        .admin
        .post(
            &format!("/api/v1/tenants/{}/integrations", app.tenant),
            &json!({
                "name": "Ads Hub",
                "app_kind": "business_hub",
                "base_url": app.emulator_url,
                "roles": ["ADMIN", "EMPLOYEE"],
                "asset_roles": ["MANAGE", "ADVERTISE", "ANALYZE"],
                "assets": [
                    {"asset_id": "act_1", "kind": "ad_account", "name": "Brand ads"},
                    {"asset_id": "page_9", "kind": "page", "name": "Brand page"}
                ],
                "settings": {"business_id": "5005"},
                "credential": "emulator-token",
            }),
        )
        .await
        .expect("integration with assets");
    assert_eq!(v["asset_roles"], json!(["MANAGE", "ADVERTISE", "ANALYZE"]));
    assert_eq!(v["assets"][0]["asset_id"], "act_1");
    let ads: Uuid = v["id"].as_str().unwrap().parse().unwrap();
    let grants = format!("/api/v1/tenants/{}/integrations/{ads}/grants", app.tenant);
    let g = app
        .admin
        .post(
            &grants,
            &json!({"team_id": staff, "role": "EMPLOYEE", "assets": {"act_1": "MANAGE", "page_9": "ANALYZE"}}),
        )
        .await
        .expect("staff grant");
    assert_eq!(g["assets"], json!({"act_1": "MANAGE", "page_9": "ANALYZE"}));
    let staff_ads_grant = g["id"].as_str().unwrap().parse().unwrap();
    app.admin
        .post(&grants, &json!({"team_id": admins, "role": "ADMIN", "assets": {"act_1": "ANALYZE"}}))
        .await
        .expect("admins grant");
    // Meta Business: alice and bob granted ADMIN. Ads Hub: alice and bob granted (bob perhaps
    // in two steps, as the two shares arrive).
    app.settle(4).await;
    (app, Company { alice, bob, admins, staff, ads, staff_ads_grant })
}

async fn desired(app: &TestApp, integration: Uuid, user: Uuid) -> (Option<String>, Value) {
    let client = app.store.client().await.unwrap();
    let row = client
        .query_one(
            "select desired_role, desired_assets from access_state where tenant_id = $1 and integration_id = $2 and user_id = $3",
            &[&app.tenant, &integration, &user],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn explain_names_the_grants_behind_each_role_and_asset() {
    let (app, c) = company().await;
    let v = app.admin_get(&format!("/api/v1/tenants/{}/users/{}/access", app.tenant, c.bob)).await;
    assert_eq!(v["status"], "active");
    let by_name =
        |name: &str| v["integrations"].as_array().unwrap().iter().find(|i| i["name"] == name).cloned().unwrap();
    let hub = by_name("Meta Business");
    assert_eq!(hub["access"]["role"], "ADMIN");
    assert_eq!(hub["access"]["because"], json!(["team Admins"]));
    assert_eq!(hub["grants"].as_array().unwrap().len(), 2);
    let ads = by_name("Ads Hub");
    assert_eq!(ads["access"]["role"], "ADMIN");
    assert_eq!(
        ads["access"]["assets"],
        json!([
            {"asset_id": "act_1", "role": "MANAGE", "because": ["team Staff"]},
            {"asset_id": "page_9", "role": "ANALYZE", "because": ["team Staff"]}
        ])
    );
    // The resolver already made the desired state what the grants give: nothing pending.
    assert_eq!(ads["pending"], Value::Null);
    assert_eq!(ads["desired"]["assets"], json!({"act_1": "MANAGE", "page_9": "ANALYZE"}));

    // Unknown user: 404; another tenant's admin: 403.
    let (status, _) = app
        .call(reqwest::Method::GET, &format!("/api/v1/tenants/{}/users/{}/access", app.tenant, Uuid::new_v4()), None)
        .await;
    assert_eq!(status, 404);
    let other = app.operator.create_tenant("Other").await.unwrap();
    let resp = app
        .admin
        .http
        .get(format!("{}/api/v1/tenants/{}/users/{}/access", app.base, app.tenant, c.alice))
        .bearer_auth(&other.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    app.stop().await;
}

#[tokio::test]
async fn preview_says_what_would_happen_and_changes_nothing() {
    let (app, c) = company().await;
    let tasks_before = app.tasks().await.len();
    let outbox_before = app.outbox_count().await;
    let path = format!("/api/v1/tenants/{}/access/preview", app.tenant);

    let (status, v) =
        app.call(reqwest::Method::POST, &path, Some(json!({"change": "delete_group", "group_id": c.admins}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["users"], 2);
    let outcome = |email: &str, integration: &str| {
        v["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["email"] == email && o["integration"] == integration)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(outcome("alice@example.com", "Meta Business")["outcome"], "remove");
    let bob = outcome("bob@example.com", "Meta Business");
    assert_eq!(bob["outcome"], "update");
    assert_eq!(bob["reason"], "ADMIN → EMPLOYEE: left team Admins; team Staff grants EMPLOYEE");
    let bob_ads = outcome("bob@example.com", "Ads Hub");
    assert_eq!(bob_ads["outcome"], "update");
    assert_eq!(bob_ads["to"], json!({"role": "EMPLOYEE", "assets": {"act_1": "MANAGE", "page_9": "ANALYZE"}}));

    let (_, v) = app
        .call(
            reqwest::Method::POST,
            &path,
            Some(json!({"change": "leave_group", "user_id": c.bob, "group_id": c.staff})),
        )
        .await;
    let ads = v["outcomes"].as_array().unwrap().iter().find(|o| o["integration"] == "Ads Hub").cloned().unwrap();
    assert_eq!(ads["outcome"], "update");
    assert_eq!(ads["to"], json!({"role": "ADMIN", "assets": {"act_1": "ANALYZE"}}));
    let hub = v["outcomes"].as_array().unwrap().iter().find(|o| o["integration"] == "Meta Business").cloned().unwrap();
    assert_eq!(hub["outcome"], "keep");
    assert_eq!(hub["reason"], "kept: team Admins grants ADMIN");

    let (_, v) =
        app.call(reqwest::Method::POST, &path, Some(json!({"change": "deactivate_user", "user_id": c.alice}))).await;
    assert_eq!(v["counts"], json!({"remove": 2}));

    // Bad input gets a clear error.
    let (status, v) = app.call(reqwest::Method::POST, &path, Some(json!({"change": "explode"}))).await;
    assert_eq!(status, 400, "{v}");
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            &path,
            Some(json!({"change": "leave_group", "user_id": c.alice, "group_id": c.staff})),
        )
        .await;
    assert_eq!(status, 404);

    // Nothing happened: the group and memberships are there, no job, no task, no message.
    let teams = app.admin_get(&format!("/api/v1/tenants/{}/teams", app.tenant)).await;
    assert!(teams.to_string().contains("Admins"), "{teams}");
    let users = app.admin_get(&format!("/api/v1/tenants/{}/users", app.tenant)).await;
    assert!(users.to_string().contains("\"active\":true"), "{users}");
    assert_eq!(app.tasks().await.len(), tasks_before);
    assert_eq!(app.outbox_count().await, outbox_before);
    assert_eq!(desired(&app, app.integration, c.alice).await.0.as_deref(), Some("ADMIN"));
    assert!(app.app_users().await.contains(&("alice@example.com".to_string(), "ADMIN".to_string())));
    app.stop().await;
}

#[tokio::test]
async fn removing_an_asset_from_a_share_goes_through_the_resolver() {
    let (app, c) = company().await;
    let before = app.tasks().await.len();
    let grant = format!("/api/v1/tenants/{}/integrations/{}/grants/{}", app.tenant, c.ads, c.staff_ads_grant);
    let (status, v) = app.call(reqwest::Method::PATCH, &grant, Some(json!({"assets": {"act_1": "ANALYZE"}}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["role"], "EMPLOYEE");
    let tasks = app.settle(before + 1).await;
    let t = tasks[before..]
        .iter()
        .find(|t| t.email == "bob@example.com" && t.reason.contains("(page_9) removed"))
        .expect("the update of bob's assets");
    assert_eq!(t.outcome, "update");
    assert_eq!(
        t.reason,
        "Brand ads (act_1) MANAGE → ANALYZE, Brand page (page_9) removed: team Staff's assets changed; \
         team Admins grants ADMIN, team Admins and team Staff grant ANALYZE on Brand ads (act_1)"
    );
    assert_eq!(desired(&app, c.ads, c.bob).await, (Some("ADMIN".into()), json!({"act_1": "ANALYZE"})));
    // The job says what the admin did.
    let job = app.admin_get(&format!("/api/v1/tenants/{}/jobs/{}", app.tenant, t.job_id)).await;
    assert!(job.to_string().contains("assets act_1 MANAGE, page_9 ANALYZE → act_1 ANALYZE"), "{job}");

    // Grants are checked against the integration's assets and asset ladder; nothing changes.
    let grants = format!("/api/v1/tenants/{}/integrations/{}/grants", app.tenant, c.ads);
    for (body, needle) in [
        (
            json!({"user_id": c.alice, "role": "EMPLOYEE", "assets": {"act_404": "MANAGE"}}),
            "not one of the integration's assets",
        ),
        (json!({"user_id": c.alice, "role": "EMPLOYEE", "assets": {"act_1": "OWN"}}), "asset-role ladder"),
        (json!({"user_id": c.alice, "role": "OWNER"}), "role ladder"),
    ] {
        let (status, v) = app.call(reqwest::Method::POST, &grants, Some(body)).await;
        assert_eq!(status, 400, "{v}");
        assert!(v["error"].as_str().unwrap_or_default().contains(needle), "{v}");
    }
    let (status, _) = app.call(reqwest::Method::PATCH, &grant, Some(json!({"assets": {"page_1": "MANAGE"}}))).await;
    assert_eq!(status, 400);
    let list = app.admin_get(&grants).await;
    assert_eq!(list["grants"].as_array().unwrap().len(), 2);
    assert_eq!(desired(&app, c.ads, c.bob).await.1, json!({"act_1": "ANALYZE"}));
    app.stop().await;
}

#[tokio::test]
async fn integrations_refuse_assets_without_an_asset_ladder() {
    let app = spawn_app().await;
    let (status, v) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/tenants/{}/integrations", app.tenant),
            Some(json!({
                "name": "Bad", "app_kind": "business_hub", "base_url": app.emulator_url, "roles": ["ADMIN"],
                "settings": {"business_id": "1"}, "assets": [{"asset_id": "a", "kind": "page"}]
            })),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("asset_roles"), "{v}");
    let list = app.admin_get(&format!("/api/v1/tenants/{}/integrations", app.tenant)).await;
    assert_eq!(list["integrations"].as_array().unwrap().len(), 1);
    app.stop().await;
}
