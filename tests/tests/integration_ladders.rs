//! Changing an integration's ladders after it was created, and previewing an asset removal,
//! through the real admin API and pipeline (PostgreSQL + outbox, RabbitMQ, resolver, connector)
//! into the app emulator: what an admin does and what the app ends up holding.

use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use unseat_tests::{spawn_app, TaskRow, TestApp, ADS_BUSINESS, BUSINESS};
use uuid::Uuid;

fn tasks(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|t| t.to_string()).collect()
}

fn integration_path(app: &TestApp, integration: impl std::fmt::Display) -> String {
    format!("/api/v1/tenants/{}/integrations/{integration}", app.tenant)
}

async fn patch(app: &TestApp, integration: Uuid, body: Value) -> (u16, Value) {
    app.call(Method::PATCH, &integration_path(app, integration), Some(body)).await
}

/// The trigger summary of the job a task belongs to, without the actor it ends with (checked
/// to be the owner's token that made these changes).
async fn summary(app: &TestApp, task: &TaskRow) -> String {
    let job = app.admin_get(&format!("/api/v1/tenants/{}/jobs/{}", app.tenant, task.job_id)).await;
    let said = job["job"]["summary"].as_str().unwrap_or_else(|| panic!("job without summary: {job}"));
    let (what, who) = said.rsplit_once("; by ").unwrap_or_else(|| panic!("the summary names who: {said}"));
    assert!(who.starts_with("owner token "), "{said}");
    what.to_string()
}

async fn jobs(app: &TestApp) -> usize {
    app.admin_get(&format!("/api/v1/tenants/{}/jobs", app.tenant)).await["jobs"].as_array().map_or(0, Vec::len)
}

fn one<'a>(tasks: &'a [TaskRow], email: &str) -> &'a TaskRow {
    let mine: Vec<&TaskRow> = tasks.iter().filter(|t| t.email == email).collect();
    assert_eq!(mine.len(), 1, "one task for {email}: {tasks:#?}");
    mine[0]
}

#[tokio::test]
async fn dropping_an_asset_role_takes_the_asset_away_and_previewing_an_asset_removal_changes_nothing() {
    let app = spawn_app().await;
    let act = app.emulator.seed_asset(ADS_BUSINESS, "ad_account", "Brand ads").await.unwrap();
    let page = app.emulator.seed_asset(ADS_BUSINESS, "page", "Brand page").await.unwrap();
    let v = app
        .ads_hub(
            &["ADMIN", "EMPLOYEE"],
            &["MANAGE", "ADVERTISE", "ANALYZE"],
            &[(&act, "ad_account", "Brand ads"), (&page, "page", "Brand page")],
        )
        .await;
    let ads: Uuid = v["id"].as_str().unwrap().parse().unwrap();

    // Alice manages the ad account through team Ads; Bob analyzes it by his own grant.
    let alice = app.scim.create_user("alice@example.com").await.unwrap();
    let bob = app.scim.create_user("bob@example.com").await.unwrap();
    let team = app.scim.create_group("Ads", &[alice]).await.unwrap();
    let grants = format!("{}/grants", integration_path(&app, ads));
    let (status, v) = app
        .call(
            Method::POST,
            &grants,
            Some(json!({"team_id": team, "role": "EMPLOYEE", "assets": {act.clone(): "MANAGE", page.clone(): "ANALYZE"}})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let team_grant = v["id"].clone();
    let (status, v) = app
        .call(
            Method::POST,
            &grants,
            Some(json!({"user_id": bob, "role": "EMPLOYEE", "assets": {act.clone(): "ANALYZE"}})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let granted = app.settle(2).await.len();
    let act_holders: BTreeMap<String, BTreeSet<String>> = [
        ("alice@example.com".to_string(), tasks(&["MANAGE", "ADVERTISE", "ANALYZE"])),
        ("bob@example.com".to_string(), tasks(&["ANALYZE"])),
    ]
    .into();
    let page_holders: BTreeMap<String, BTreeSet<String>> =
        [("alice@example.com".to_string(), tasks(&["ANALYZE"]))].into();
    assert_eq!(app.asset_holders(&act).await, act_holders);
    assert_eq!(app.asset_holders(&page).await, page_holders);

    // Preview: removing the ad account would take it from both, and nothing else.
    let (_, grants_before) = app.call(Method::GET, &grants, None).await;
    let (_, integration_before) = app.call(Method::GET, &integration_path(&app, ads), None).await;
    let outbox = app.outbox_count().await;
    let preview = format!("/api/v1/tenants/{}/access/preview", app.tenant);
    let (status, v) = app
        .call(Method::POST, &preview, Some(json!({"change": "remove_asset", "integration_id": ads, "asset_id": act})))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["users"], 2, "{v}");
    assert_eq!(v["counts"], json!({"update": 2}), "{v}");
    let outcomes: BTreeMap<&str, &Value> =
        v["outcomes"].as_array().unwrap().iter().map(|o| (o["email"].as_str().unwrap(), o)).collect();
    let a = outcomes["alice@example.com"];
    assert_eq!(a["outcome"], "update", "{a}");
    assert_eq!(a["integration"], "Ads Hub", "{a}");
    assert_eq!(a["from"], json!({"role": "EMPLOYEE", "assets": {act.clone(): "MANAGE", page.clone(): "ANALYZE"}}));
    assert_eq!(a["to"], json!({"role": "EMPLOYEE", "assets": {page.clone(): "ANALYZE"}}));
    assert!(a["reason"].as_str().unwrap().starts_with(&format!("{act} removed")), "{a}");
    let b = outcomes["bob@example.com"];
    assert_eq!((&b["outcome"], &b["to"]), (&json!("update"), &json!({"role": "EMPLOYEE", "assets": {}})), "{b}");
    for (body, want, needle) in [
        (json!({"change": "remove_asset", "integration_id": ads, "asset_id": "act_404"}), 404, "no asset \"act_404\""),
        (
            json!({"change": "remove_asset", "integration_id": Uuid::new_v4(), "asset_id": act}),
            404,
            "no such integration",
        ),
        (json!({"change": "remove_asset", "integration_id": "nope", "asset_id": act}), 400, "not a UUID"),
        (json!({"change": "remove_asset", "integration_id": ads}), 400, "asset_id"),
        (json!({"change": "remove_asset", "integration_id": ads, "asset_id": act, "role": "X"}), 400, "unknown field"),
    ] {
        let (status, v) = app.call(Method::POST, &preview, Some(body.clone())).await;
        assert_eq!(status, want, "{body}: {v}");
        assert!(v["error"].as_str().unwrap_or_default().contains(needle), "{body}: {v}");
    }
    // Nothing happened: grants, integration, outbox, log and app as they were.
    assert_eq!(app.call(Method::GET, &grants, None).await.1, grants_before);
    assert_eq!(app.call(Method::GET, &integration_path(&app, ads), None).await.1, integration_before);
    assert_eq!(app.outbox_count().await, outbox);
    assert_eq!(app.tasks().await.len(), granted);
    assert_eq!(app.asset_holders(&act).await, act_holders);
    assert_eq!(app.asset_holders(&page).await, page_holders);

    // MANAGE leaves the asset-role ladder: team Ads's grant still names it but gives nothing on
    // the ad account, so Alice loses it in the app; Bob's ANALYZE stays.
    let (status, v) = patch(&app, ads, json!({"asset_roles": ["ADVERTISE", "ANALYZE"]})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["asset_roles"], json!(["ADVERTISE", "ANALYZE"]));
    assert_eq!(v["roles"], json!(["ADMIN", "EMPLOYEE"]));
    assert_eq!(v["assets"], integration_before["assets"]);
    assert_eq!(
        v["grants_without_effect"],
        json!([{
            "id": team_grant,
            "subject_kind": "team",
            "subject_id": team,
            "subject": "team Ads",
            "role": null,
            "asset_roles": {act.clone(): "MANAGE"},
        }])
    );
    let all = app.settle(granted + 2).await;
    let new = &all[granted..];
    assert!(new.iter().all(|t| t.status == "succeeded" || t.status == "kept"), "{new:#?}");
    assert_eq!(app.asset_holders(&act).await, [("bob@example.com".to_string(), tasks(&["ANALYZE"]))].into());
    assert_eq!(app.asset_holders(&page).await, page_holders);
    let hub: BTreeSet<(String, String)> = app.emulator.users(ADS_BUSINESS).await.unwrap().into_iter().collect();
    assert!(hub.contains(&("alice@example.com".into(), "EMPLOYEE".into())), "{hub:?}");
    let alice_task = one(new, "alice@example.com");
    assert_eq!(alice_task.outcome, "update", "{alice_task:#?}");
    assert!(alice_task.reason.starts_with(&format!("Brand ads ({act}) removed: ")), "{}", alice_task.reason);
    assert_eq!(one(new, "bob@example.com").outcome, "keep");
    assert_eq!(
        summary(&app, alice_task).await,
        "asset-role ladder of Ads Hub changed: MANAGE, ADVERTISE, ANALYZE → ADVERTISE, ANALYZE"
    );
    // The grant keeps what it names (the admin decides what to do with it).
    let (_, v) = app.call(Method::GET, &grants, None).await;
    let team_assets = v["grants"].as_array().unwrap().iter().find(|g| g["id"] == team_grant).unwrap()["assets"].clone();
    assert_eq!(team_assets, json!({act.clone(): "MANAGE", page.clone(): "ANALYZE"}));

    // The same ladder again changes nothing and announces nothing.
    let outbox = app.outbox_count().await;
    let (status, v) = patch(&app, ads, json!({"asset_roles": ["ADVERTISE", "ANALYZE"]})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["grants_without_effect"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(app.outbox_count().await, outbox);
    app.stop().await;
}

#[tokio::test]
async fn a_new_role_order_makes_another_role_highest_and_a_dropped_role_gives_nothing() {
    let app = spawn_app().await;
    // Carol is in Admins and Staff, Dave only in Admins, Erin only in Staff.
    let carol = app.person("carol@example.com", "ADMIN").await;
    let dave = app.person("dave@example.com", "ADMIN").await;
    let erin = app.person("erin@example.com", "EMPLOYEE").await;
    let admins = app.team("Admins", &[carol, dave], "ADMIN").await;
    app.team("Staff", &[carol, erin], "EMPLOYEE").await;
    let before = app.settle(3).await.len();
    let role = |email: &str, role: &str| (email.to_string(), role.to_string());
    assert_eq!(
        app.app_users().await,
        vec![
            role("carol@example.com", "ADMIN"),
            role("dave@example.com", "ADMIN"),
            role("erin@example.com", "EMPLOYEE")
        ]
    );

    // EMPLOYEE becomes the highest role: Carol's team Staff now gives her the highest role.
    let (status, v) = patch(&app, app.integration, json!({"roles": ["EMPLOYEE", "ADMIN"]})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["roles"], json!(["EMPLOYEE", "ADMIN"]));
    assert_eq!(v["grants_without_effect"], json!([]));
    let all = app.settle(before + 3).await;
    let new = &all[before..];
    assert_eq!(
        app.app_users().await,
        vec![
            role("carol@example.com", "EMPLOYEE"),
            role("dave@example.com", "ADMIN"),
            role("erin@example.com", "EMPLOYEE")
        ]
    );
    let carol_task = one(new, "carol@example.com");
    assert_eq!((carol_task.outcome.as_str(), carol_task.status.as_str()), ("update", "succeeded"), "{carol_task:#?}");
    assert!(carol_task.reason.starts_with("ADMIN → EMPLOYEE"), "{}", carol_task.reason);
    assert_eq!(one(new, "dave@example.com").outcome, "keep");
    assert_eq!(one(new, "erin@example.com").outcome, "keep");
    assert_eq!(
        summary(&app, carol_task).await,
        "role ladder of Meta Business changed: ADMIN, EMPLOYEE → EMPLOYEE, ADMIN"
    );

    // ADMIN leaves the ladder: the Admins grant gives nothing, so Dave, who had only that, is
    // removed from the app; the answer names the grant.
    let before = all.len();
    let (status, v) = patch(&app, app.integration, json!({"roles": ["EMPLOYEE"]})).await;
    assert_eq!(status, 200, "{v}");
    let without = v["grants_without_effect"].as_array().unwrap();
    assert_eq!(without.len(), 1, "{v}");
    assert_eq!(
        (&without[0]["subject"], &without[0]["subject_id"], &without[0]["role"], &without[0]["asset_roles"]),
        (&json!("team Admins"), &json!(admins), &json!("ADMIN"), &json!({}))
    );
    let all = app.settle(before + 3).await;
    let new = &all[before..];
    assert_eq!(
        app.app_users().await,
        vec![role("carol@example.com", "EMPLOYEE"), role("erin@example.com", "EMPLOYEE")]
    );
    let dave_task = one(new, "dave@example.com");
    assert_eq!((dave_task.outcome.as_str(), dave_task.status.as_str()), ("remove", "succeeded"), "{dave_task:#?}");
    assert_eq!(summary(&app, dave_task).await, "role ladder of Meta Business changed: EMPLOYEE, ADMIN → EMPLOYEE");
    assert_eq!(one(new, "carol@example.com").outcome, "keep");
    app.stop().await;
}

#[tokio::test]
async fn bad_ladder_changes_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let act = app.emulator.seed_asset(ADS_BUSINESS, "ad_account", "Brand ads").await.unwrap();
    let v = app.ads_hub(&["ADMIN", "EMPLOYEE"], &["MANAGE", "ANALYZE"], &[(&act, "ad_account", "Brand ads")]).await;
    let ads: Uuid = v["id"].as_str().unwrap().parse().unwrap();
    let alice = app.scim.create_user("alice@example.com").await.unwrap();
    let team = app.scim.create_group("Ads", &[alice]).await.unwrap();
    let (status, v) = app
        .call(
            Method::POST,
            &format!("{}/grants", integration_path(&app, ads)),
            Some(json!({"team_id": team, "role": "EMPLOYEE", "assets": {act.clone(): "MANAGE"}})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    app.settle(1).await;
    // A default role changes only what the integration's own directory gives (it has none
    // here), so nothing is announced.
    let outbox = app.outbox_count().await;
    let (status, v) = patch(&app, ads, json!({"default_role": "EMPLOYEE"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["default_role"], "EMPLOYEE");
    assert_eq!(app.outbox_count().await, outbox);

    let (_, before) = app.call(Method::GET, &integration_path(&app, ads), None).await;
    let (jobs_before, tasks_before) = (jobs(&app).await, app.tasks().await.len());
    let viewer = app.viewer_token().await;
    let other = app.operator.create_tenant("Other tenant").await.unwrap();
    let here = integration_path(&app, ads);
    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        (
            "drops the default role",
            here.clone(),
            json!({"roles": ["ADMIN"]}),
            400,
            "drops the default_role \"EMPLOYEE\"",
        ),
        (
            "empty asset ladder with assets",
            here.clone(),
            json!({"asset_roles": []}),
            400,
            "while the integration has assets",
        ),
        ("unknown field", here.clone(), json!({"roles": ["ADMIN", "EMPLOYEE"], "assets": []}), 400, "unknown field"),
        ("nothing asked", here.clone(), json!({}), 400, "give name, base_url, settings, credential, paused, roles"),
        ("duplicate role", here.clone(), json!({"roles": ["ADMIN", "ADMIN", "EMPLOYEE"]}), 400, "twice"),
        (
            "roles differing in case",
            here.clone(),
            json!({"roles": ["ADMIN", "EMPLOYEE", "Admin"]}),
            400,
            "\"ADMIN\" and \"Admin\" differ only in case",
        ),
        ("blank role", here.clone(), json!({"roles": ["ADMIN", " ", "EMPLOYEE"]}), 400, "roles"),
        ("duplicate asset role", here.clone(), json!({"asset_roles": ["MANAGE", "MANAGE"]}), 400, "asset_roles"),
        ("default off the ladder", here.clone(), json!({"default_role": "OWNER"}), 400, "default_role"),
        ("not a Meta role", here.clone(), json!({"roles": ["OWNER", "ADMIN"]}), 400, "not a Meta business role"),
        ("Meta's role misspelt", here.clone(), json!({"roles": ["Admin", "Employee"]}), 400, "spelt \"ADMIN\""),
        (
            "default off the new ladder",
            here.clone(),
            json!({"roles": ["DEVELOPER", "ADMIN"], "default_role": "EMPLOYEE"}),
            400,
            "default_role",
        ),
        ("not an object", here.clone(), json!("roles"), 400, "invalid JSON body"),
        ("wrong type", here.clone(), json!({"roles": "ADMIN"}), 400, "invalid JSON body"),
        ("bad id", integration_path(&app, "nope"), json!({"roles": ["ADMIN"]}), 400, "not a UUID"),
        (
            "no integration",
            integration_path(&app, Uuid::new_v4()),
            json!({"roles": ["ADMIN"]}),
            404,
            "no such integration",
        ),
        (
            "another tenant",
            format!("/api/v1/tenants/{}/integrations/{ads}", other.id),
            json!({"roles": ["ADMIN"]}),
            403,
            "",
        ),
    ];
    for (what, path, body, want, needle) in cases {
        let (status, v) = app.call(Method::PATCH, &path, Some(body)).await;
        assert_eq!(status, want, "{what}: {v}");
        assert!(v["error"].as_str().unwrap_or_default().contains(needle), "{what}: {v}");
    }
    let (status, v) = app.call_as(&viewer, Method::PATCH, &here, Some(json!({"roles": ["EMPLOYEE"]}))).await;
    assert_eq!(status, 403, "a viewer may not change ladders: {v}");
    // Nothing changed, nothing was announced, no job was opened.
    assert_eq!(app.call(Method::GET, &here, None).await.1, before);
    assert_eq!(app.outbox_count().await, outbox);
    assert_eq!(jobs(&app).await, jobs_before);
    assert_eq!(app.tasks().await.len(), tasks_before);

    // A ladder stored before roles had to differ ignoring case still takes other changes.
    let client = app.store.client().await.unwrap();
    let stored = client
        .execute("update integrations set roles = array['ADMIN', 'EMPLOYEE', 'Employee'] where id = $1", &[&ads])
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let (status, v) = patch(&app, ads, json!({"default_role": "ADMIN"})).await;
    assert_eq!((status, &v["default_role"]), (200, &json!("ADMIN")), "{v}");
    let (status, v) = patch(&app, ads, json!({"roles": ["ADMIN", "EMPLOYEE", "Employee"]})).await;
    assert_eq!(status, 400, "{v}");

    // A seat-only SCIM app stays seat-only: no roles stored, and SEAT the only default.
    let (status, v) = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/integrations", app.tenant),
            Some(json!({"name": "Wiki", "app_kind": "scim", "base_url": format!("{}/scim/v2", app.emulator_url)})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let wiki: Uuid = v["id"].as_str().unwrap().parse().unwrap();
    let (status, v) = patch(&app, wiki, json!({"roles": []})).await;
    assert_eq!((status, &v["roles"]), (200, &json!([])), "{v}");
    let (status, v) = patch(&app, wiki, json!({"default_role": "ADMIN"})).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("default_role"), "{v}");
    assert_eq!(app.outbox_count().await, outbox);
    app.stop().await;
}

/// The integration's own directory (the IdLCM flow) is looked at again in its own scope: its
/// users' assignments are its grants, so a ladder change updates them and never mistakes them
/// for workspace users without grants. (Such an integration cannot also be shared in the
/// console: its access has one source.)
#[tokio::test]
async fn the_integration_directory_follows_a_ladder_and_default_role_change() {
    let app = spawn_app().await;
    let idp = app.integration_scim().await;
    // Ida is assigned with the app role Admin, Finn with none (the lowest role, EMPLOYEE).
    for (user, roles) in
        [("ida@example.com", json!([{"value": "Admin", "primary": true}])), ("finn@example.com", json!([]))]
    {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user,
            "active": true,
            "emails": [{"primary": true, "value": user}],
            "roles": roles,
        });
        let resp = idp.send(Method::POST, "/Users", Some(&body)).await.unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().await.unwrap());
    }
    let before = app.settle(2).await.len();
    let role = |email: &str, role: &str| (email.to_string(), role.to_string());
    assert_eq!(app.app_users().await, vec![role("finn@example.com", "EMPLOYEE"), role("ida@example.com", "ADMIN")]);

    // ADMIN leaves the ladder: Ida's assignment now gives EMPLOYEE.
    let (status, v) = patch(&app, app.integration, json!({"roles": ["EMPLOYEE"]})).await;
    assert_eq!(status, 200, "{v}");
    let all = app.settle(before + 2).await;
    let new = &all[before..];
    assert_eq!(app.app_users().await, vec![role("finn@example.com", "EMPLOYEE"), role("ida@example.com", "EMPLOYEE")]);
    assert_eq!(one(new, "ida@example.com").outcome, "update");
    assert_eq!(one(new, "finn@example.com").outcome, "keep");
    // The directory's users were resolved in its own scope, as its IdP changes are.
    let c = app.store.client().await.unwrap();
    let scope_of = |task: &TaskRow| {
        let (c, job) = (&c, task.job_id);
        async move { c.query_one("select scope from jobs where id = $1", &[&job]).await.unwrap().get::<_, String>(0) }
    };
    assert_eq!(scope_of(one(new, "ida@example.com")).await, app.integration.to_string());

    // ADMIN back on top, and the default: Finn, assigned without a role, now gets ADMIN.
    let before = all.len();
    let (status, v) =
        patch(&app, app.integration, json!({"roles": ["ADMIN", "EMPLOYEE"], "default_role": "ADMIN"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["default_role"], "ADMIN");
    let all = app.settle(before + 2).await;
    assert_eq!(app.app_users().await, vec![role("finn@example.com", "ADMIN"), role("ida@example.com", "ADMIN")]);
    assert!(all[before..].iter().all(|t| t.status == "succeeded"), "{:#?}", &all[before..]);
    app.stop().await;
}

#[tokio::test]
async fn a_connection_change_is_checked_as_at_creation_and_a_refused_one_changes_nothing() {
    let app = spawn_app().await;
    let path = integration_path(&app, app.integration);
    let before = app.admin_get(&path).await;
    for (body, words) in [
        (json!({"app_kind": "scim"}), "app_kind cannot change"),
        (json!({"base_url": "ftp://example.com"}), "absolute http or https"),
        (json!({"name": "Renamed", "base_url": "http://user:pw@127.0.0.1:9"}), "must not hold a user"),
        (json!({"settings": {"business_id": "biz1"}}), "numeric id"),
        (json!({"settings": {"business_id": "42", "rate_limit_per_second": 0}}), "a number from"),
        (json!({"settings": "1001"}), "JSON object"),
        (json!({"name": " ", "credential": "other"}), "name"),
        (json!({"credential": "x".repeat(8193)}), "at most 8192"),
        (json!({"base_url": "http://127.0.0.1:9", "roles": ["ADMIN", "admin"]}), "roles"),
        (json!({"credential": "token\nX-Evil: 1"}), "control characters"),
        (json!({"credential": "   "}), "start or end with spaces"),
        (json!({"settings": {"business_id": "1001", "deprovison": "delete"}}), "settings.deprovison is not a setting"),
        (
            json!({"settings": {"business_id": "1001", "match_attribute": "userName"}}),
            "not a setting of a business_hub",
        ),
        (json!({"settings": {"business_id": "1001", "reported_roles": "BASE"}}), "exact or base"),
        (json!({"asset_roles": ["MANAGE", "manage"]}), "differ only in case"),
        (json!({"base_url": format!("http://127.0.0.1/{}", "a".repeat(2100))}), "at most 2048"),
    ] {
        let (status, answer) = patch(&app, app.integration, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.to_string().contains(words), "{body}: {answer}");
    }
    // A tenant's admin may not name a secret of the deployment, nor send the stored
    // credential to another address without giving it again.
    for (body, words) in [
        (json!({"credential": "env:UNSEAT_APP_CREDENTIAL_META"}), "only the operator"),
        (json!({"credential": "file:meta.token"}), "only the operator"),
        (json!({"base_url": "http://127.0.0.1:9"}), "needs the credential again"),
        (json!({"base_url": app.emulator_url.replace("http://", "https://")}), "needs the credential again"),
    ] {
        let (status, answer) = patch(&app, app.integration, body.clone()).await;
        assert_eq!(status, if words == "only the operator" { 403 } else { 400 }, "{body}: {answer}");
        assert!(answer.to_string().contains(words), "{body}: {answer}");
    }
    assert_eq!(app.admin_get(&path).await, before, "refused changes changed nothing");
    let viewer = app.viewer_token().await;
    let (status, _) = app.call_as(&viewer, Method::PATCH, &path, Some(json!({"name": "Renamed"}))).await;
    assert_eq!(status, 403);

    // A rename and a new address and settings: answered and kept as they will be used, the
    // credential untouched and no one's access re-resolved.
    let jobs_before = jobs(&app).await;
    let body = json!({
        "name": "Meta (EU)",
        "base_url": format!("{}/", app.emulator_url),
        "settings": {"business_id": 1001, "rate_limit_per_second": 5},
    });
    let (status, answer) = patch(&app, app.integration, body).await;
    assert_eq!(status, 200, "{answer}");
    let now = app.admin_get(&path).await;
    for field in ["name", "base_url", "settings", "has_credential", "roles"] {
        assert_eq!(answer[field], now[field], "{field}: the answer is what GET reads");
    }
    assert_eq!(now["name"], "Meta (EU)");
    assert_eq!(now["base_url"], app.emulator_url.as_str(), "stored without the trailing slash");
    assert_eq!(now["settings"], json!({"business_id": 1001, "rate_limit_per_second": 5}));
    assert_eq!(
        (now["has_credential"].clone(), now["roles"].clone()),
        (before["has_credential"].clone(), before["roles"].clone())
    );
    assert_eq!(jobs(&app).await, jobs_before, "a connection change announces no one");

    // Paused, then resumed: the answer and GET say since when, and no one is announced.
    let (status, answer) = patch(&app, app.integration, json!({"paused": true})).await;
    assert_eq!(status, 200, "{answer}");
    let since = answer["paused_at"].as_str().expect("paused since").to_string();
    assert_eq!(app.admin_get(&path).await["paused_at"], since.as_str());
    let (status, answer) = patch(&app, app.integration, json!({"paused": true})).await;
    assert_eq!((status, answer["paused_at"].as_str()), (200, Some(since.as_str())), "pausing again keeps since when");
    let (status, answer) = patch(&app, app.integration, json!({"paused": false})).await;
    assert_eq!((status, answer["paused_at"].clone()), (200, Value::Null), "{answer}");
    assert_eq!(jobs(&app).await, jobs_before);
    let (status, _) = app.call_as(&viewer, Method::PATCH, &path, Some(json!({"paused": true}))).await;
    assert_eq!(status, 403, "a viewer may not pause");

    // A default role set can be taken back: "" leaves the ladder's lowest role to apply.
    let (status, answer) = patch(&app, app.integration, json!({"default_role": "EMPLOYEE"})).await;
    assert_eq!((status, answer["default_role"].clone()), (200, json!("EMPLOYEE")), "{answer}");
    let (status, answer) = patch(&app, app.integration, json!({"default_role": ""})).await;
    assert_eq!((status, answer["default_role"].clone()), (200, Value::Null), "{answer}");
    assert_eq!(app.admin_get(&path).await["default_role"], Value::Null);

    // The connection as changed is the one the connectors use: a removal still reaches the app.
    let alice = app.person("alice@example.com", "ADMIN").await;
    let admins = app.team("Admins", &[alice], "ADMIN").await;
    let before = app.settle(1).await.len();
    app.scim.remove_member(admins, alice).await.expect("remove member");
    let tasks = app.settle(before + 1).await;
    assert!(tasks.iter().all(|t| t.status == "succeeded"), "{tasks:#?}");
    assert!(!app.app_users().await.iter().any(|(e, _)| e == "alice@example.com"), "alice is gone");
    app.stop().await;
}

/// Integration names are how people tell integrations apart in the log's filter and on pages:
/// a second one with a name already taken (in any case) is refused and nothing is written,
/// also when two admins create it at once; a rename to another case of its own name is not.
#[tokio::test]
async fn a_name_another_integration_holds_is_refused() {
    let app = spawn_app().await;
    let list = format!("/api/v1/tenants/{}/integrations", app.tenant);
    let taken =
        app.admin_get(&integration_path(&app, app.integration)).await["name"].as_str().expect("name").to_string();
    let create = |name: String| {
        let body = json!({
            "name": name, "app_kind": "business_hub", "base_url": app.emulator_url, "roles": ["ADMIN", "EMPLOYEE"],
            "settings": {"business_id": ADS_BUSINESS}, "credential": "emulator-token",
        });
        let list = list.clone();
        let app = &app;
        async move { app.call(Method::POST, &list, Some(body)).await }
    };
    let count = |v: Value| v["integrations"].as_array().map_or(0, Vec::len);
    let before = count(app.admin_get(&list).await);

    let (status, answer) = create(format!(" {} ", taken.to_uppercase())).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer.to_string().contains(&app.integration.to_string()), "names the holder: {answer}");
    assert!(answer["error"].as_str().unwrap_or_default().contains(&format!("{taken:?}")), "as it is named: {answer}");
    assert_eq!(count(app.admin_get(&list).await), before, "nothing created");

    // Two admins creating the same new name at once: one gets it.
    let (a, b) = tokio::join!(create("Ads EU".into()), create("ads eu".into()));
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{a:?} {b:?}");
    assert_eq!(count(app.admin_get(&list).await), before + 1);
    let second = if a.0 == 201 { &a.1 } else { &b.1 };
    let second: Uuid = second["id"].as_str().and_then(|id| id.parse().ok()).expect("id");

    let (status, answer) = patch(&app, second, json!({"name": taken.to_lowercase(), "paused": true})).await;
    assert_eq!(status, 409, "{answer}");
    let now = app.admin_get(&integration_path(&app, second)).await;
    assert_eq!(
        (now["name"].as_str(), now["paused_at"].clone()),
        (Some(a.1["name"].as_str().or(b.1["name"].as_str()).unwrap_or_default()), Value::Null),
        "a refused rename changes nothing"
    );
    let (status, answer) = patch(&app, app.integration, json!({"name": taken.to_uppercase()})).await;
    assert_eq!((status, answer["name"].as_str()), (200, Some(taken.to_uppercase().as_str())), "{answer}");
    app.stop().await;
}

/// A business hub stored before role names were checked may hold a role spelt otherwise than
/// Graph's enum: grants name it, so a ladder change may keep it, and only new names are checked.
#[tokio::test]
async fn a_role_stored_before_the_spelling_check_may_stay_on_the_ladder() {
    let app = spawn_app().await;
    let client = app.store.client().await.expect("client");
    client
        .execute(
            "update integrations set roles = array['Admin', 'EMPLOYEE'] where tenant_id = $1 and id = $2",
            &[&app.tenant, &app.integration],
        )
        .await
        .expect("an older ladder");
    let (status, answer) = patch(&app, app.integration, json!({"roles": ["Admin", "DEVELOPER", "EMPLOYEE"]})).await;
    assert_eq!((status, &answer["roles"]), (200, &json!(["Admin", "DEVELOPER", "EMPLOYEE"])), "{answer}");
    let (status, answer) = patch(&app, app.integration, json!({"roles": ["Admin", "Developer", "EMPLOYEE"]})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap_or_default().contains("spelt \"DEVELOPER\""), "{answer}");
    app.stop().await;
}

/// Two integrations calling one app (the same kind, address and business) would each keep a
/// desired state of the same accounts and undo each other's changes: the second is refused,
/// at creation and when a change points one at the other's app, and nothing is written.
#[tokio::test]
async fn an_app_another_integration_calls_is_refused() {
    let app = spawn_app().await;
    let list = format!("/api/v1/tenants/{}/integrations", app.tenant);
    let count = |v: Value| v["integrations"].as_array().map_or(0, Vec::len);
    let before = count(app.admin_get(&list).await);
    let hub = |name: &str, base_url: String, business: Value| {
        json!({"name": name, "app_kind": "business_hub", "base_url": base_url, "roles": ["ADMIN", "EMPLOYEE"],
               "settings": {"business_id": business}, "credential": "emulator-token"})
    };
    // The default integration calls BUSINESS on the emulator: the same business written as a
    // number, or the address with a trailing slash or in capitals, is the same app.
    let same = [
        hub("Meta again", app.emulator_url.clone(), json!(BUSINESS.parse::<u64>().unwrap())),
        hub("Meta again", format!("{}/", app.emulator_url), json!(BUSINESS)),
        hub("Meta again", app.emulator_url.to_uppercase().replace("HTTP://", "http://"), json!(BUSINESS)),
    ];
    for body in same {
        let (status, answer) = app.call(Method::POST, &list, Some(body.clone())).await;
        assert_eq!(status, 409, "{body}: {answer}");
        assert!(answer.to_string().contains(&app.integration.to_string()), "names the holder: {answer}");
    }
    assert_eq!(count(app.admin_get(&list).await), before, "nothing created");

    // Another business of the same address is another app.
    let (status, other) =
        app.call(Method::POST, &list, Some(hub("Ads", app.emulator_url.clone(), json!(ADS_BUSINESS)))).await;
    assert_eq!(status, 201, "{other}");
    let other: Uuid = other["id"].as_str().and_then(|id| id.parse().ok()).expect("id");
    let path = integration_path(&app, other);
    let was = app.admin_get(&path).await;
    let (status, answer) =
        patch(&app, other, json!({"name": "Ads moved", "settings": {"business_id": BUSINESS}})).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(app.admin_get(&path).await, was, "a refused move changes nothing");

    // Seat-based SCIM apps: one per base URL.
    let wiki = |name: &str, path: &str| json!({"name": name, "app_kind": "scim", "base_url": format!("{}{path}", app.emulator_url)});
    let (status, answer) = app.call(Method::POST, &list, Some(wiki("Wiki", "/scim/v2"))).await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = app.call(Method::POST, &list, Some(wiki("Wiki 2", "/scim/v2/"))).await;
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = app.call(Method::POST, &list, Some(wiki("Other wiki", "/other/scim/v2"))).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(count(app.admin_get(&list).await), before + 3);
    app.stop().await;
}

/// The app's account ids unseat remembers belong to the app it called: pointed at another
/// address or business, the integration forgets them (they could name someone else there), and
/// the connectors find each person again.
#[tokio::test]
async fn a_new_address_or_business_forgets_the_remembered_accounts() {
    let owned = spawn_app().await;
    let app = &owned;
    let alice = app.person("alice@example.com", "ADMIN").await;
    let admins = app.team("Admins", &[alice], "ADMIN").await;
    let mut settled = app.settle(1).await.len();
    let remembered = || async {
        let client = app.store.client().await.expect("client");
        let row = client
            .query_one(
                "select count(*) filter (where app_account_id is not null) from access_state
                  where tenant_id = $1 and integration_id = $2",
                &[&app.tenant, &app.integration],
            )
            .await
            .expect("access_state");
        row.get::<_, i64>(0)
    };
    let change = |body: Value| async move {
        let (status, answer) = patch(app, app.integration, body.clone()).await;
        assert_eq!(status, 200, "{body}: {answer}");
    };
    assert_eq!(remembered().await, 1, "the connector remembered alice's account");

    change(json!({"name": "Meta (renamed)"})).await;
    assert_eq!(remembered().await, 1, "a rename keeps it");
    change(json!({"settings": {"business_id": 1001, "rate_limit_per_second": 5}})).await;
    assert_eq!(remembered().await, 1, "the same business (as a number) keeps it");
    change(json!({"base_url": app.emulator_url.replace("127.0.0.1", "localhost"), "credential": "emulator-token"}))
        .await;
    assert_eq!(remembered().await, 0, "another address forgets it");

    // Lowered through the new address: found by email, and remembered again.
    let staff = app.team("Staff", &[alice], "EMPLOYEE").await;
    app.scim.remove_member(admins, alice).await.expect("remove member");
    // Staff keeps her, then leaving Admins lowers her: two tasks, or one update when the
    // resolver took both changes in one batch.
    let mut tasks = app.settle(settled + 1).await;
    if !tasks[settled..].iter().any(|t| t.outcome == "update") {
        tasks = app.settle(settled + 2).await;
    }
    let update = tasks[settled..].iter().find(|t| t.outcome == "update").expect("the lowering").clone();
    settled = tasks.len();
    assert_eq!((update.to_role.as_deref(), update.status.as_str()), (Some("EMPLOYEE"), "succeeded"), "{update:?}");
    assert_eq!(app.app_users().await, vec![("alice@example.com".to_string(), "EMPLOYEE".to_string())]);
    assert_eq!(remembered().await, 1);
    change(json!({"settings": {"business_id": ADS_BUSINESS}})).await;
    assert_eq!(remembered().await, 0, "another business forgets it");

    change(json!({"settings": {"business_id": BUSINESS}})).await;
    app.scim.remove_member(staff, alice).await.expect("remove member");
    let tasks = app.settle(settled + 1).await;
    let removal = tasks.iter().find(|t| t.outcome == "remove").expect("a removal");
    assert_eq!(removal.status, "succeeded", "{tasks:#?}");
    assert!(!app.app_users().await.iter().any(|(e, _)| e == "alice@example.com"), "found again and removed");
    owned.stop().await;
}

/// Re-spelling a ladder stored before role names were checked (`Admin` to Graph's `ADMIN`, as
/// the spelling check asks) takes no access away: the grants and the default role that named
/// the old spelling follow it, the answer lists no grant without effect, and the person stays
/// in the app with the role they had.
#[tokio::test]
async fn re_spelling_a_ladder_moves_its_grants_and_default_role_along() {
    let app = spawn_app().await;
    let client = app.store.client().await.expect("client");
    client
        .execute(
            "update integrations set roles = array['Admin', 'Employee'], default_role = null
              where tenant_id = $1 and id = $2",
            &[&app.tenant, &app.integration],
        )
        .await
        .expect("an older ladder");
    let alice = app.scim.create_user("alice@example.com").await.unwrap();
    let bob = app.scim.create_user("bob@example.com").await.unwrap();
    let team = app.scim.create_group("Staff", &[bob]).await.unwrap();
    let grants = format!("{}/grants", integration_path(&app, app.integration));
    for body in [json!({"user_id": alice, "role": "Admin"}), json!({"team_id": team, "role": "Employee"})] {
        let (status, v) = app.call(Method::POST, &grants, Some(body)).await;
        assert_eq!(status, 201, "{v}");
    }
    let granted = app.settle(2).await.len();
    let held =
        vec![("alice@example.com".to_string(), "ADMIN".to_string()), ("bob@example.com".into(), "EMPLOYEE".into())];
    assert_eq!(app.app_users().await, held);

    let (status, answer) = patch(&app, app.integration, json!({"roles": ["ADMIN", "EMPLOYEE"]})).await;
    assert_eq!((status, &answer["roles"]), (200, &json!(["ADMIN", "EMPLOYEE"])), "{answer}");
    assert_eq!(answer["grants_without_effect"], json!([]), "{answer}");
    let (_, listed) = app.call(Method::GET, &grants, None).await;
    let mut roles: Vec<&str> =
        listed["grants"].as_array().expect("grants").iter().map(|g| g["role"].as_str().unwrap_or_default()).collect();
    roles.sort();
    assert_eq!(roles, ["ADMIN", "EMPLOYEE"], "{listed}");
    let changed = app.settle(granted + 2).await;
    for task in &changed[granted..] {
        assert_ne!(task.outcome, "remove", "{task:?}");
        assert!(task.status == "succeeded" || task.status == "superseded", "{task:?}");
    }
    assert!(summary(&app, &changed[granted])
        .await
        .contains("2 grants follow the new spelling (Admin → ADMIN, Employee → EMPLOYEE)"));
    assert_eq!(app.app_users().await, held, "nobody removed or lowered");

    // A default role of the old spelling follows too (before, the change was refused as
    // dropping it).
    client
        .execute(
            "update integrations set roles = array['ADMIN', 'Employee'], default_role = 'Employee'
              where tenant_id = $1 and id = $2",
            &[&app.tenant, &app.integration],
        )
        .await
        .expect("an older default role");
    let (status, answer) = patch(&app, app.integration, json!({"roles": ["ADMIN", "EMPLOYEE"]})).await;
    assert_eq!((status, &answer["default_role"]), (200, &json!("EMPLOYEE")), "{answer}");

    // An asset role re-spelt: the grants' assets follow, and the app keeps the asset.
    let act = app.emulator.seed_asset(ADS_BUSINESS, "ad_account", "Brand ads").await.unwrap();
    let v = app.ads_hub(&["ADMIN", "EMPLOYEE"], &["MANAGE", "Analyze"], &[(&act, "ad_account", "Brand ads")]).await;
    let ads: Uuid = v["id"].as_str().unwrap().parse().unwrap();
    let ads_grants = format!("{}/grants", integration_path(&app, ads));
    let body = json!({"user_id": alice, "role": "EMPLOYEE", "assets": {act.clone(): "Analyze"}});
    let (status, v) = app.call(Method::POST, &ads_grants, Some(body)).await;
    assert_eq!(status, 201, "{v}");
    let before = app.settle(changed.len() + 1).await.len();
    assert_eq!(app.asset_holders(&act).await, [("alice@example.com".to_string(), tasks(&["ANALYZE"]))].into());
    let (status, answer) = patch(&app, ads, json!({"asset_roles": ["MANAGE", "ANALYZE"]})).await;
    assert_eq!((status, &answer["grants_without_effect"]), (200, &json!([])), "{answer}");
    let (_, listed) = app.call(Method::GET, &ads_grants, None).await;
    assert_eq!(listed["grants"][0]["assets"], json!({act.clone(): "ANALYZE"}), "{listed}");
    app.settle(before + 1).await;
    assert_eq!(app.asset_holders(&act).await, [("alice@example.com".to_string(), tasks(&["ANALYZE"]))].into());
    app.stop().await;
}
