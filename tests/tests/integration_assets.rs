//! An integration's assets after it was created, and seat-only integrations, through the real
//! admin API and pipeline (SCIM, PostgreSQL + outbox, RabbitMQ, resolver, connector) into the
//! app emulator: what an admin does and what the app ends up holding.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use unseat_tests::{spawn_app, TestApp, ADS_BUSINESS};
use uuid::Uuid;

/// A bad request: what it is, method, path, body, the status it gets, a word of its error.
type BadCall = (&'static str, reqwest::Method, String, Option<Value>, u16, &'static str);

async fn admin(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    app.call(method, path, body).await
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

fn tasks(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|t| t.to_string()).collect()
}

#[tokio::test]
async fn assets_added_after_creation_are_granted_and_removing_one_takes_it_away_in_the_app() {
    let app = spawn_app().await;
    let v = app.ads_hub(&["ADMIN", "EMPLOYEE"], &["MANAGE", "ADVERTISE", "ANALYZE"], &[]).await;
    assert_eq!(v["assets"], json!([]));
    let act = app.emulator.seed_asset(ADS_BUSINESS, "ad_account", "Brand ads").await.unwrap();
    let page = app.emulator.seed_asset(ADS_BUSINESS, "page", "Brand page").await.unwrap();
    let ads: Uuid = v["id"].as_str().unwrap().parse().unwrap();
    let assets = format!("/api/v1/tenants/{}/integrations/{ads}/assets", app.tenant);

    // Assets come after the integration.
    for (id, kind, name) in [(&act, "ad_account", "Brand ads"), (&page, "page", " Brand page ")] {
        let (status, v) =
            admin(&app, reqwest::Method::POST, &assets, Some(json!({"asset_id": id, "kind": kind, "name": name})))
                .await;
        assert_eq!(status, 201, "{v}");
        assert_eq!(v, json!({"asset_id": id, "kind": kind, "name": name.trim()}));
    }
    let (status, v) = admin(&app, reqwest::Method::GET, &assets, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["asset_roles"], json!(["MANAGE", "ADVERTISE", "ANALYZE"]));
    let listed: BTreeSet<&str> =
        v["assets"].as_array().unwrap().iter().map(|a| a["asset_id"].as_str().unwrap()).collect();
    assert_eq!(listed, [act.as_str(), page.as_str()].into_iter().collect());

    // Alice is in Admins; Bob in Admins and Staff. Grants name the new assets.
    let alice = app.scim.create_user("alice@example.com").await.unwrap();
    let bob = app.scim.create_user("bob@example.com").await.unwrap();
    let admins = app.scim.create_group("Admins", &[alice, bob]).await.unwrap();
    let staff = app.scim.create_group("Staff", &[bob]).await.unwrap();
    let grants = format!("/api/v1/tenants/{}/integrations/{ads}/grants", app.tenant);
    let (status, v) = admin(
        &app,
        reqwest::Method::POST,
        &grants,
        Some(json!({"team_id": staff, "role": "EMPLOYEE", "assets": {act.clone(): "MANAGE", page.clone(): "ANALYZE"}})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = admin(
        &app,
        reqwest::Method::POST,
        &grants,
        Some(json!({"team_id": admins, "role": "ADMIN", "assets": {act.clone(): "ANALYZE"}})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let before = app.settle(2).await.len();
    assert_eq!(
        app.asset_holders(&act).await,
        [
            ("alice@example.com".to_string(), tasks(&["ANALYZE"])),
            ("bob@example.com".to_string(), tasks(&["MANAGE", "ADVERTISE", "ANALYZE"]))
        ]
        .into()
    );
    assert_eq!(app.asset_holders(&page).await, [("bob@example.com".to_string(), tasks(&["ANALYZE"]))].into());
    // The explanation says what was applied, assets too.
    let (status, v) =
        admin(&app, reqwest::Method::GET, &format!("/api/v1/tenants/{}/users/{bob}/access", app.tenant), None).await;
    assert_eq!(status, 200, "{v}");
    let hub = v["integrations"].as_array().unwrap().iter().find(|i| i["integration_id"] == ads.to_string()).unwrap();
    assert_eq!(hub["applied"]["assets"], json!({act.clone(): "MANAGE", page.clone(): "ANALYZE"}), "{hub}");

    // Renaming changes nobody's access and announces nothing.
    let outbox = app.outbox_count().await;
    let (status, v) =
        admin(&app, reqwest::Method::PATCH, &format!("{assets}/{page}"), Some(json!({"name": "Brand page (EU)"})))
            .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"asset_id": page, "kind": "page", "name": "Brand page (EU)"}));

    // Bad input: a clear 4xx, and nothing changes.
    let viewer = app.viewer_token().await;
    let no_ladder = format!("/api/v1/tenants/{}/integrations/{}/assets", app.tenant, app.integration);
    let unknown_integration = format!("/api/v1/tenants/{}/integrations/{}/assets", app.tenant, Uuid::new_v4());
    let long = "x".repeat(201);
    let cases: Vec<BadCall> = vec![
        (
            "duplicate",
            reqwest::Method::POST,
            assets.clone(),
            Some(json!({"asset_id": act, "kind": "ad_account"})),
            409,
            "already has",
        ),
        (
            "blank id",
            reqwest::Method::POST,
            assets.clone(),
            Some(json!({"asset_id": "  ", "kind": "page"})),
            400,
            "asset_id",
        ),
        (
            "long id",
            reqwest::Method::POST,
            assets.clone(),
            Some(json!({"asset_id": long, "kind": "page"})),
            400,
            "asset_id",
        ),
        ("no kind", reqwest::Method::POST, assets.clone(), Some(json!({"asset_id": "p2"})), 400, "kind"),
        (
            "unknown field",
            reqwest::Method::POST,
            assets.clone(),
            Some(json!({"asset_id": "p2", "kind": "page", "role": "MANAGE"})),
            400,
            "unknown field",
        ),
        (
            "no asset ladder",
            reqwest::Method::POST,
            no_ladder,
            Some(json!({"asset_id": "p2", "kind": "page"})),
            400,
            "asset_roles",
        ),
        (
            "no integration",
            reqwest::Method::POST,
            unknown_integration.clone(),
            Some(json!({"asset_id": "p2", "kind": "page"})),
            404,
            "no such integration",
        ),
        (
            "empty change",
            reqwest::Method::PATCH,
            format!("{assets}/{page}"),
            Some(json!({})),
            400,
            "give kind, name or both",
        ),
        ("blank kind", reqwest::Method::PATCH, format!("{assets}/{page}"), Some(json!({"kind": " "})), 400, "kind"),
        (
            "rename unknown",
            reqwest::Method::PATCH,
            format!("{assets}/act_404"),
            Some(json!({"name": "x"})),
            404,
            "no asset",
        ),
        ("remove unknown", reqwest::Method::DELETE, format!("{assets}/act_404"), None, 404, "no asset"),
        (
            "remove, no integration",
            reqwest::Method::DELETE,
            format!("{unknown_integration}/{act}"),
            None,
            404,
            "no such integration",
        ),
        (
            "bad integration id",
            reqwest::Method::DELETE,
            format!("/api/v1/tenants/{}/integrations/nope/assets/{act}", app.tenant),
            None,
            400,
            "not a UUID",
        ),
    ];
    for (what, method, path, body, want, needle) in cases {
        let (status, v) = admin(&app, method, &path, body).await;
        assert_eq!(status, want, "{what}: {v}");
        assert!(v["error"].as_str().unwrap_or_default().contains(needle), "{what}: {v}");
    }
    for (method, path, body) in [
        (reqwest::Method::POST, assets.clone(), Some(json!({"asset_id": "p2", "kind": "page"}))),
        (reqwest::Method::PATCH, format!("{assets}/{page}"), Some(json!({"name": "mine"}))),
        (reqwest::Method::DELETE, format!("{assets}/{act}"), None),
    ] {
        let (status, v) = app.call_as(&viewer, method, &path, body).await;
        assert_eq!(status, 403, "a viewer may not change assets: {v}");
    }
    let (_, v) = admin(&app, reqwest::Method::GET, &assets, None).await;
    assert_eq!(
        v["assets"].as_array().unwrap().iter().map(|a| (a["asset_id"].clone(), a["name"].clone())).collect::<Vec<_>>(),
        {
            let mut want = vec![(json!(act), json!("Brand ads")), (json!(page), json!("Brand page (EU)"))];
            want.sort_by_key(|(id, _)| id.as_str().unwrap().to_string());
            want
        }
    );
    assert_eq!(app.outbox_count().await, outbox);

    // Removing the ad account takes it out of both grants and, through the resolver and the
    // connector, away from alice and bob in the app; the page and the roles stay.
    let (status, v) = admin(&app, reqwest::Method::DELETE, &format!("{assets}/{act}"), None).await;
    assert_eq!(status, 204, "{v}");
    let after = app.settle(before + 2).await;
    let (_, v) = admin(&app, reqwest::Method::GET, &grants, None).await;
    let grant_assets: BTreeMap<String, Value> = v["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["subject_name"].as_str().unwrap().to_string(), g["assets"].clone()))
        .collect();
    assert_eq!(grant_assets["Admins"], json!({}));
    assert_eq!(grant_assets["Staff"], json!({page.clone(): "ANALYZE"}));
    assert_eq!(desired(&app, ads, alice).await, (Some("ADMIN".into()), json!({})));
    assert_eq!(desired(&app, ads, bob).await, (Some("ADMIN".into()), json!({page.clone(): "ANALYZE"})));
    assert_eq!(app.asset_holders(&act).await, BTreeMap::new());
    assert_eq!(app.asset_holders(&page).await, [("bob@example.com".to_string(), tasks(&["ANALYZE"]))].into());
    let hub: BTreeSet<(String, String)> = app.emulator.users(ADS_BUSINESS).await.unwrap().into_iter().collect();
    assert!(hub.contains(&("alice@example.com".into(), "ADMIN".into())), "{hub:?}");
    assert!(hub.contains(&("bob@example.com".into(), "ADMIN".into())), "{hub:?}");
    // The log says what the admin did and why each user changed.
    let new: Vec<_> = after[before..].iter().collect();
    assert!(new.iter().all(|t| t.status == "succeeded" && t.outcome == "update"), "{new:#?}");
    let bob_task = new.iter().find(|t| t.email == "bob@example.com").expect("bob's update");
    assert!(bob_task.reason.starts_with(&format!("{act} removed: ")), "{}", bob_task.reason);
    let job = app.admin_get(&format!("/api/v1/tenants/{}/jobs/{}", app.tenant, bob_task.job_id)).await;
    assert!(
        job.to_string().contains(&format!(
            "asset {act} (Brand ads) removed from Ads Hub and from the grants of team Admins, team Staff"
        )),
        "{job}"
    );

    // Adding it back gives nobody anything: the grants lost it for good.
    let outbox = app.outbox_count().await;
    let (status, v) =
        admin(&app, reqwest::Method::POST, &assets, Some(json!({"asset_id": act, "kind": "ad_account"}))).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(app.outbox_count().await, outbox);
    let (_, v) = admin(&app, reqwest::Method::GET, &grants, None).await;
    assert!(!v.to_string().contains(&act), "{v}");
    app.stop().await;
}

#[tokio::test]
async fn seat_only_integrations_give_a_seat_while_any_grant_still_reaches_the_user() {
    let app = spawn_app().await;
    let integrations = format!("/api/v1/tenants/{}/integrations", app.tenant);
    // A SCIM app without roles: the seat is the domain's SEAT.
    let (status, v) = admin(
        &app,
        reqwest::Method::POST,
        &integrations,
        Some(json!({
            "name": "Wiki",
            "app_kind": "scim",
            "base_url": format!("{}/scim/v2", app.emulator_url),
            "credential": "emulator-token",
        })),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["roles"], json!([]));
    let wiki: Uuid = v["id"].as_str().unwrap().parse().unwrap();
    // A business hub without roles: a business user always holds a role, so the seat is EMPLOYEE.
    app.emulator.seed("7007", "owner@example.com", "ADMIN").await.unwrap();
    let (status, v) = admin(
        &app,
        reqwest::Method::POST,
        &integrations,
        Some(json!({
            "name": "Seat Hub",
            "app_kind": "business_hub",
            "base_url": app.emulator_url,
            "roles": [],
            "settings": {"business_id": "7007"},
            "credential": "emulator-token",
        })),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["roles"], json!(["EMPLOYEE"]));
    let hub: Uuid = v["id"].as_str().unwrap().parse().unwrap();

    // A seat-only app has no role to default to or to grant; a ladder still needs its role.
    let integrations_before = app.admin_get(&integrations).await["integrations"].as_array().unwrap().len();
    for (body, needle) in [
        (
            json!({"name": "X", "app_kind": "scim", "base_url": app.emulator_url, "default_role": "ADMIN"}),
            "default_role",
        ),
        (json!({"name": "X", "app_kind": "scim", "base_url": app.emulator_url, "roles": ["A", "A"]}), "twice"),
    ] {
        let (status, v) = admin(&app, reqwest::Method::POST, &integrations, Some(body)).await;
        assert_eq!(status, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
    }
    assert_eq!(app.admin_get(&integrations).await["integrations"].as_array().unwrap().len(), integrations_before);

    // Alice is only in Writers; Bob is in Writers and has an individual seat; Carol is in
    // Writers and Readers. Grants on seat-only apps need no role.
    let alice = app.scim.create_user("alice@example.com").await.unwrap();
    let bob = app.scim.create_user("bob@example.com").await.unwrap();
    let carol = app.scim.create_user("carol@example.com").await.unwrap();
    let writers = app.scim.create_group("Writers", &[alice, bob, carol]).await.unwrap();
    let readers = app.scim.create_group("Readers", &[carol]).await.unwrap();
    for integration in [wiki, hub] {
        let grants = format!("/api/v1/tenants/{}/integrations/{integration}/grants", app.tenant);
        for body in [json!({"team_id": writers}), json!({"team_id": readers}), json!({"user_id": bob})] {
            let (status, v) = admin(&app, reqwest::Method::POST, &grants, Some(body)).await;
            assert_eq!(status, 201, "{v}");
        }
        let (status, v) =
            admin(&app, reqwest::Method::POST, &grants, Some(json!({"user_id": alice, "role": "ADMIN"}))).await;
        assert_eq!(status, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains("role ladder"), "{v}");
    }
    let (_, v) =
        admin(&app, reqwest::Method::GET, &format!("/api/v1/tenants/{}/integrations/{wiki}/grants", app.tenant), None)
            .await;
    assert!(v["grants"].as_array().unwrap().iter().all(|g| g["role"] == "SEAT"), "{v}");
    // On a ladder with several roles, a grant must say which.
    let (status, v) = admin(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/tenants/{}/integrations/{}/grants", app.tenant, app.integration),
        Some(json!({"team_id": writers})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("role is required"), "{v}");
    let granted = app.settle(6).await.len();

    let seats = |users: Vec<Value>| -> BTreeMap<String, bool> {
        users.iter().map(|u| (u["userName"].as_str().unwrap().to_string(), u["active"].as_bool().unwrap())).collect()
    };
    let scim_users = || async {
        let v: Value = app
            .emulator
            .http
            .get(format!("{}/_emulator/scim/users", app.emulator_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_array().unwrap().clone()
    };
    let everyone: BTreeMap<String, bool> =
        ["alice", "bob", "carol"].iter().map(|n| (format!("{n}@example.com"), true)).collect();
    assert_eq!(seats(scim_users().await), everyone);
    let hub_users = || async {
        let mut users = app.emulator.users("7007").await.unwrap();
        users.retain(|(e, _)| e != "owner@example.com");
        users
    };
    let employees = |names: &[&str]| -> Vec<(String, String)> {
        names.iter().map(|n| (format!("{n}@example.com"), "EMPLOYEE".to_string())).collect()
    };
    assert_eq!(hub_users().await, employees(&["alice", "bob", "carol"]));

    // Alice leaves her only team: she loses the seat in both apps.
    app.scim.remove_member(writers, alice).await.unwrap();
    let left = app.settle(granted + 2).await.len();
    let mut want = everyone.clone();
    want.insert("alice@example.com".into(), false);
    assert_eq!(seats(scim_users().await), want);
    assert_eq!(hub_users().await, employees(&["bob", "carol"]));

    // Writers is deleted: Bob keeps his seat by his own grant, Carol by Readers.
    app.scim.delete_group(writers).await.unwrap();
    let tasks = app.settle(left + 4).await;
    assert_eq!(seats(scim_users().await), want);
    assert_eq!(hub_users().await, employees(&["bob", "carol"]));
    let kept: Vec<_> = tasks[left..].iter().collect();
    assert!(kept.iter().all(|t| t.outcome == "keep"), "{kept:#?}");
    assert!(
        kept.iter().any(|t| t.email == "bob@example.com" && t.reason == "kept: an individual grant grants a seat"),
        "{kept:#?}"
    );
    assert!(
        kept.iter().any(|t| t.email == "carol@example.com" && t.reason == "kept: team Readers grants EMPLOYEE"),
        "{kept:#?}"
    );
    assert_eq!(desired(&app, wiki, carol).await.0.as_deref(), Some("SEAT"));
    assert_eq!(desired(&app, hub, bob).await.0.as_deref(), Some("EMPLOYEE"));
    app.stop().await;
}

#[tokio::test]
async fn an_asset_removed_while_a_grant_is_given_it_ends_with_nobody() {
    let app = spawn_app().await;
    let act = app.emulator.seed_asset(ADS_BUSINESS, "ad_account", "Brand ads").await.unwrap();
    let v = app.ads_hub(&["EMPLOYEE"], &["MANAGE", "ANALYZE"], &[]).await;
    let ads: Uuid = v["id"].as_str().unwrap().parse().unwrap();
    let assets = format!("/api/v1/tenants/{}/integrations/{ads}/assets", app.tenant);
    let alice = app.scim.create_user("alice@example.com").await.unwrap();
    let team = app.scim.create_group("Ads", &[alice]).await.unwrap();
    let grants = format!("/api/v1/tenants/{}/integrations/{ads}/grants", app.tenant);
    let grant = app.admin.post(&grants, &json!({"team_id": team})).await.unwrap()["id"].as_str().unwrap().to_string();

    // Each round: the asset is added, then given to the team and removed at the same time.
    // Whichever commits first, the removal wins: the grant never keeps an asset that is gone.
    for round in 0..8 {
        let (status, v) =
            admin(&app, reqwest::Method::POST, &assets, Some(json!({"asset_id": act, "kind": "ad_account"}))).await;
        assert_eq!(status, 201, "round {round}: {v}");
        let (grant_path, asset_path) = (format!("{grants}/{grant}"), format!("{assets}/{act}"));
        let give = admin(
            &app,
            reqwest::Method::PATCH,
            &grant_path,
            Some(json!({"assets": {act.clone(): if round % 2 == 0 { "MANAGE" } else { "ANALYZE" }}})),
        );
        let remove = admin(&app, reqwest::Method::DELETE, &asset_path, None);
        let ((given, v), (removed, w)) = tokio::join!(give, remove);
        assert!(given == 200 || given == 400, "round {round}: {given} {v}");
        assert_eq!(removed, 204, "round {round}: {w}");
        let (_, v) = admin(&app, reqwest::Method::GET, &grants, None).await;
        assert_eq!(v["grants"][0]["assets"], json!({}), "round {round}: {v}");
    }
    app.settle(1).await;
    assert_eq!(desired(&app, ads, alice).await, (Some("EMPLOYEE".into()), json!({})));
    assert_eq!(app.asset_holders(&act).await, BTreeMap::new());
    assert!(app.emulator.users(ADS_BUSINESS).await.unwrap().contains(&("alice@example.com".into(), "EMPLOYEE".into())));
    app.stop().await;
}
