//! The business-hub connector end to end: a fresh database, the real RabbitMQ (a unique
//! topology per test), the emulator on a loopback port, and `unseat_connector::run` (see
//! `common`). Rows are inserted directly in SQL, a ConnectorTask is published, and the tests
//! check what an operator would: the hub's users, the task row and its events, the
//! dead-letter queue.

mod common;

use common::{eventually, quick_config, Desire, Fixture, Setup};
use serde_json::json;
use std::time::Duration;
use unseat_bus::messages::ConnectorTask;
use unseat_connector::ConnectorConfig;
use unseat_emulator::FaultRule;
use unseat_store::Store;

const BIZ: &str = "4200000001";
const TOKEN: &str = "hub-credential-do-not-log";

/// Backoffs shorter still than `quick_config`'s, so that retries do not slow these tests down.
fn config() -> ConnectorConfig {
    ConnectorConfig {
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        grace: Duration::from_secs(5),
        ..quick_config()
    }
}

/// The hub answers every DELETE with 403: the credential lacks a permission.
fn refuse_deletes(app: &Fixture) {
    app.emu
        .add_fault(FaultRule { method: Some("DELETE".into()), status: Some(403), ..Default::default() })
        .expect("fault");
}

#[tokio::test]
async fn removes_a_user_from_the_business() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.seed_user(BIZ, "alice@example.com", "EMPLOYEE", None).expect("seed");
    let (user, task) = app.queue(Desire::removal("alice@example.com")).await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts, t.dead_lettered), ("succeeded", 1, false));
    assert!(app.hub_user("alice@example.com").is_none(), "alice is gone from the hub");
    assert!(app.hub_user("owner@example.com").is_some(), "nobody else was touched");
    assert_eq!(app.applied(user).await, (2, None));
    assert_eq!(app.event_kinds(task).await, ["attempt_started", "succeeded"]);
    let writes = app.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!((writes[0].0.as_str(), writes[0].2), ("DELETE", 200));
    assert_eq!(app.metric("connector_tasks", "succeeded"), 1);
    app.stop().await;
}

/// The hub's address and the directory's differ in the case of a letter outside ASCII: still
/// the same person, who is removed (not taken for already gone).
#[tokio::test]
async fn finds_the_user_whatever_the_case_of_any_letter() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.seed_user(BIZ, "émile.øre@example.com", "EMPLOYEE", None).expect("seed");
    let (user, task) = app.queue(Desire::removal("Émile.Øre@Example.com")).await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!(t.status, "succeeded");
    assert!(app.hub_user("émile.øre@example.com").is_none(), "émile is gone from the hub");
    assert_eq!(app.applied(user).await, (2, None));
    assert_eq!(app.event_kinds(task).await, ["attempt_started", "succeeded"]);
    app.stop().await;
}

#[tokio::test]
async fn changes_a_role_to_employee() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    let bob = app.emu.seed_user(BIZ, "bob@example.com", "ADMIN", None).expect("seed");
    let (user, task) = app
        .queue(Desire {
            desired_role: Some("EMPLOYEE"),
            desired_version: 5,
            applied_version: 4,
            task_version: 5,
            ..Desire::removal("Bob@Example.com")
        })
        .await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!(t.status, "succeeded");
    let now = app.hub_user("bob@example.com").expect("bob stays in the hub");
    assert_eq!((now.id, now.role.as_str()), (bob.id.clone(), "EMPLOYEE"));
    assert_eq!(app.applied(user).await, (5, Some("EMPLOYEE".into())));
    let events = app.events(task).await;
    assert_eq!(events.last().map(|e| e.3.as_str()), Some("role changed from ADMIN to EMPLOYEE in Acme Business Hub"));
    assert_eq!(app.writes(), [("POST".to_string(), format!("/v25.0/{}", bob.id), 200)]);
    app.stop().await;
}

/// A ladder stored before role names were checked may spell a role `Admin`: Graph takes only
/// its upper-case enum values, so the role is sent as `ADMIN`.
#[tokio::test]
async fn a_role_spelt_in_another_case_is_sent_as_graph_spells_it() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.seed_user(BIZ, "cy@example.com", "EMPLOYEE", None).expect("seed");
    let (_, task) = app.queue(Desire { desired_role: Some("Admin"), ..Desire::removal("cy@example.com") }).await;
    app.start(config());
    let t = app.finished(task).await;
    assert_eq!(t.status, "succeeded", "{t:?}");
    assert_eq!(app.hub_user("cy@example.com").expect("in the hub").role, "ADMIN");
    app.stop().await;
}

/// The IdP changed the person's email: the business user remembered from an earlier task is
/// still theirs. Its role is changed and nobody is invited under the new email.
#[tokio::test]
async fn after_an_email_change_the_remembered_business_user_is_the_one_changed() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    let bob = app.emu.seed_user(BIZ, "bob@old.example", "EMPLOYEE", None).expect("seed");
    let (user, task) = app
        .queue(Desire {
            desired_role: Some("ADMIN"),
            app_account_id: Some(bob.id.clone()),
            ..Desire::removal("bob@new.example")
        })
        .await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!(t.status, "succeeded", "{:?}", t.last_error);
    let events = app.events(task).await;
    assert_eq!(events.last().map(|e| e.3.as_str()), Some("role changed from EMPLOYEE to ADMIN in Acme Business Hub"));
    assert_eq!(app.hub_emails(), ["bob@old.example"], "nobody invited under the new email");
    assert_eq!(app.hub_user("bob@old.example").expect("bob").role, "ADMIN");
    let (queued, _) = app.queue_change(user, None).await;
    assert_eq!(app.finished(queued).await.status, "succeeded");
    assert_eq!(app.hub_emails(), Vec::<String>::new(), "the original business user is removed");
    app.stop().await;
}

/// Meta reports a FINANCE_EDITOR as EMPLOYEE. Someone unseat made FINANCE_EDITOR and then
/// lowers to EMPLOYEE really is lowered: the role last applied says the reported EMPLOYEE
/// may be the FINANCE_EDITOR, so EMPLOYEE is written. A later task for EMPLOYEE, with
/// EMPLOYEE applied, writes nothing.
#[tokio::test]
async fn lowers_a_non_base_role_to_employee_though_meta_reports_both_as_employee() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.set_settings(unseat_emulator::Settings { base_roles_only: true, ..app.emu.settings() });
    let fay = app.emu.seed_user(BIZ, "fay@example.com", "EMPLOYEE", None).expect("seed");
    let (user, raised) =
        app.queue(Desire { desired_role: Some("FINANCE_EDITOR"), ..Desire::removal("fay@example.com") }).await;
    app.start(config());
    assert_eq!(app.finished(raised).await.status, "succeeded");
    assert_eq!(app.hub_user("fay@example.com").expect("fay").role, "FINANCE_EDITOR");
    assert_eq!(app.applied(user).await, (2, Some("FINANCE_EDITOR".into())));

    let (lowered, version) = app.queue_change(user, Some("EMPLOYEE")).await;
    let t = app.finished(lowered).await;
    assert_eq!(t.status, "succeeded", "{t:?}");
    assert_eq!(app.hub_user("fay@example.com").expect("fay stays").role, "EMPLOYEE", "no finance rights left");
    assert_eq!(app.applied(user).await, (version, Some("EMPLOYEE".into())));
    let events = app.events(lowered).await;
    assert_eq!(
        events.last().map(|e| e.3.as_str()),
        Some("role set to EMPLOYEE in Acme Business Hub, which reports EMPLOYEE for other roles too")
    );
    let post = ("POST".to_string(), format!("/v25.0/{}", fay.id), 200);
    assert_eq!(app.writes(), [post.clone(), post.clone()], "FINANCE_EDITOR, then EMPLOYEE");

    let (again, _) = app.queue_change(user, Some("EMPLOYEE")).await;
    assert_eq!(app.finished(again).await.status, "succeeded");
    assert_eq!(app.writes().len(), 2, "EMPLOYEE applied and reported: no write");
    let events = app.events(again).await;
    assert_eq!(
        events.last().map(|e| e.3.as_str()),
        Some("already holds EMPLOYEE in Acme Business Hub; nothing to change")
    );
    app.stop().await;
}

#[tokio::test]
async fn removing_someone_already_absent_succeeds_without_a_delete() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    // Enough users for the lookup to page through several pages.
    for i in 0..130 {
        app.emu.seed_user(BIZ, &format!("person{i}@example.com"), "EMPLOYEE", None).expect("seed");
    }
    let (user, task) = app.queue(Desire::removal("ghost@example.com")).await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("succeeded", 1));
    assert_eq!(app.event_kinds(task).await, ["attempt_started", "already_removed"]);
    assert!(app.writes().is_empty(), "no DELETE for someone who is not there");
    let gets = |edge: &str| app.emu.requests().iter().filter(|r| r.method == "GET" && r.path.ends_with(edge)).count();
    assert_eq!(gets("/business_users"), 2, "131 users at 100 per page");
    assert_eq!(gets("/pending_users"), 1, "and no open invitation either");
    assert_eq!(app.applied(user).await, (2, None));
    app.stop().await;
}

#[tokio::test]
async fn retries_through_two_503s_then_succeeds() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.seed_user(BIZ, "carol@example.com", "EMPLOYEE", None).expect("seed");
    app.emu
        .add_fault(FaultRule { method: Some("DELETE".into()), status: Some(503), times: Some(2), ..Default::default() })
        .expect("fault");
    let (_, task) = app.queue(Desire::removal("carol@example.com")).await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts, t.dead_lettered), ("succeeded", 3, false));
    assert_eq!(t.last_error, None);
    assert!(app.hub_user("carol@example.com").is_none());
    let events = app.events(task).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "attempt_started",
            "attempt_failed",
            "retry_scheduled",
            "attempt_started",
            "attempt_failed",
            "retry_scheduled",
            "attempt_started",
            "succeeded"
        ]
    );
    let failures: Vec<_> = events.iter().filter(|e| e.0 == "attempt_failed").collect();
    assert!(failures.iter().all(|e| e.2 == Some(503) && e.3.contains("code 2")), "{failures:?}");
    let attempts: Vec<Option<i32>> = events.iter().filter(|e| e.0 == "attempt_started").map(|e| e.1).collect();
    assert_eq!(attempts, [Some(1), Some(2), Some(3)]);
    let deletes: Vec<u16> = app.writes().into_iter().map(|w| w.2).collect();
    assert_eq!(deletes, [503, 503, 200]);
    assert_eq!(app.metric("connector_attempts", "transient_error"), 2);
    assert_eq!(app.metric("connector_attempts", "succeeded"), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_403_fails_the_task_dead_letters_it_and_flags_the_integration() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.seed_user(BIZ, "dave@example.com", "EMPLOYEE", None).expect("seed");
    refuse_deletes(&app);
    let (user, task) = app.queue(Desire::removal("dave@example.com")).await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts, t.dead_lettered), ("failed", 1, true), "a 403 is never retried");
    let last_error = t.last_error.expect("last_error");
    assert!(last_error.contains("HTTP 403") && last_error.contains("(#200)"), "{last_error}");
    assert!(!last_error.contains(TOKEN));
    assert_eq!(app.event_kinds(task).await, ["attempt_started", "attempt_failed", "failed", "dead_lettered"]);
    assert!(app.hub_user("dave@example.com").is_some(), "dave is still in the hub");
    assert_eq!(app.applied(user).await, (1, Some("EMPLOYEE".into())), "nothing recorded as applied");

    let dead: ConnectorTask = serde_json::from_slice(&app.dead_lettered_message().await).expect("the task message");
    assert_eq!(dead.task_id, task);

    let flag = app.needs_attention().await;
    let flag = flag.expect("the integration needs attention");
    assert!(flag.contains("403"), "{flag}");
    assert_eq!(app.metric("connector_tasks", "failed"), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_stale_task_is_superseded_without_an_app_call() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.seed_user(BIZ, "erin@example.com", "EMPLOYEE", None).expect("seed");
    // The stored desire is version 3 (keep EMPLOYEE); the task carries version 2 (remove).
    let (user, task) = app
        .queue(Desire {
            desired_role: Some("EMPLOYEE"),
            desired_version: 3,
            applied_version: 1,
            task_version: 2,
            ..Desire::removal("erin@example.com")
        })
        .await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("superseded", 0));
    assert_eq!(app.event_kinds(task).await, ["superseded"]);
    assert!(app.emu.requests().is_empty(), "no app call at all");
    assert!(app.hub_user("erin@example.com").is_some());
    assert_eq!(app.applied(user).await, (1, Some("EMPLOYEE".into())));
    app.stop().await;
}

#[tokio::test]
async fn a_duplicate_delivery_makes_no_second_app_call() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.seed_user(BIZ, "frank@example.com", "EMPLOYEE", None).expect("seed");
    let (user, task) = app.queue(Desire::removal("frank@example.com")).await;
    app.publish(user, task, 2).await; // the same task a second time
    app.start(config());

    eventually("both deliveries to be handled", || async {
        (app.metric("connector_tasks", "succeeded") + app.metric("connector_tasks", "duplicate") == 2).then_some(())
    })
    .await;
    let t = app.task(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("succeeded", 1));
    assert_eq!(app.metric("connector_tasks", "duplicate"), 1);
    assert_eq!(app.writes().len(), 1, "one DELETE for two deliveries");
    assert!(app.hub_user("frank@example.com").is_none());
    assert_eq!(app.event_kinds(task).await, ["attempt_started", "succeeded"]);
    app.stop().await;
}

#[tokio::test]
async fn an_unreadable_message_goes_to_the_dead_letter_queue() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.publisher
        .publish(&app.topology.connector_exchange(), "business_hub", "junk-1", b"{\"v\": 99}")
        .await
        .expect("publish");
    app.start(config());
    assert_eq!(app.dead_lettered_message().await, b"{\"v\": 99}");
    assert!(app.emu.requests().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn invites_someone_the_hub_does_not_have_yet() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    let (user, task) = app
        .queue(Desire {
            desired_role: Some("EMPLOYEE"),
            desired_version: 1,
            applied_version: 0,
            task_version: 1,
            ..Desire::removal("grace@example.com")
        })
        .await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!(t.status, "succeeded");
    let grace = app.hub_user("grace@example.com").expect("grace was invited");
    assert_eq!(grace.role, "EMPLOYEE");
    assert_eq!(app.writes(), [("POST".to_string(), format!("/v25.0/{BIZ}/business_users"), 200)]);
    assert_eq!(app.applied(user).await, (1, Some("EMPLOYEE".into())));
    app.stop().await;
}

#[tokio::test]
async fn a_delete_answered_with_object_not_found_counts_as_already_removed() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.seed_user(BIZ, "heidi@example.com", "EMPLOYEE", None).expect("seed");
    app.emu
        .add_fault(FaultRule {
            method: Some("DELETE".into()),
            status: Some(400),
            graph_code: Some(100),
            graph_subcode: Some(33),
            times: Some(1),
            ..Default::default()
        })
        .expect("fault");
    let (user, task) = app.queue(Desire::removal("heidi@example.com")).await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("succeeded", 1));
    assert_eq!(app.event_kinds(task).await, ["attempt_started", "already_removed"]);
    assert_eq!(app.applied(user).await, (2, None));
    app.stop().await;
}

#[tokio::test]
async fn throttling_waits_at_least_as_long_as_retry_after() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.seed_user(BIZ, "ivan@example.com", "EMPLOYEE", None).expect("seed");
    app.emu
        .add_fault(FaultRule {
            method: Some("GET".into()),
            status: Some(429),
            retry_after_s: Some(1),
            times: Some(1),
            ..Default::default()
        })
        .expect("fault");
    let (_, task) = app.queue(Desire::removal("ivan@example.com")).await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("succeeded", 2));
    let events = app.events(task).await;
    let failed = events.iter().find(|e| e.0 == "attempt_failed").expect("a failed attempt");
    assert_eq!(failed.2, Some(429));
    assert!(failed.3.contains("code 4"), "{}", failed.3);
    let scheduled = events.iter().find(|e| e.0 == "retry_scheduled").expect("a scheduled retry");
    let wait_ms: u64 = scheduled
        .3
        .strip_prefix("retrying in ")
        .and_then(|rest| rest.split_once(" ms"))
        .and_then(|(ms, _)| ms.parse().ok())
        .expect("the wait in ms");
    assert!(wait_ms >= 1000, "Retry-After: 1 is the minimum wait, got {wait_ms} ms");
    assert!(scheduled.3.contains("throttled"), "{}", scheduled.3);
    assert!(app.hub_user("ivan@example.com").is_none());
    app.stop().await;
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_dead_letters() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.seed_user(BIZ, "judy@example.com", "EMPLOYEE", None).expect("seed");
    app.emu
        .add_fault(FaultRule { method: Some("DELETE".into()), status: Some(502), ..Default::default() })
        .expect("fault");
    let (_, task) = app.queue(Desire::removal("judy@example.com")).await;
    app.start(config());

    let t = app.finished(task).await;
    let max = ConnectorConfig::default().max_attempts as i32;
    assert_eq!((t.status.as_str(), t.attempts, t.dead_lettered), ("failed", max, true));
    let last_error = t.last_error.expect("last_error");
    assert!(last_error.starts_with(&format!("gave up after {max} attempts")), "{last_error}");
    let kinds = app.event_kinds(task).await;
    assert_eq!(kinds.iter().filter(|k| *k == "attempt_failed").count(), max as usize);
    assert_eq!(kinds.iter().filter(|k| *k == "retry_scheduled").count(), max as usize - 1);
    assert_eq!(kinds[kinds.len() - 2..], ["failed", "dead_lettered"]);
    let dead: ConnectorTask = serde_json::from_slice(&app.dead_lettered_message().await).expect("the task message");
    assert_eq!(dead.task_id, task);
    assert!(app.hub_user("judy@example.com").is_some());
    let flag = app.needs_attention().await;
    assert_eq!(flag, None, "an outage is not the integration's fault");
    assert!(app.metrics.encode().contains("unseat_connector_retry_wait_seconds_total{app=\"business_hub\"}"));
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_credential_fails_with_code_190_and_never_leaks_the_token() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.require_token(BIZ, "a-different-token").expect("token");
    app.emu.seed_user(BIZ, "ken@example.com", "EMPLOYEE", None).expect("seed");
    let (_, task) = app.queue(Desire::removal("ken@example.com")).await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts, t.dead_lettered), ("failed", 1, true));
    let last_error = t.last_error.expect("last_error");
    assert!(last_error.contains("HTTP 401 (code 190)"), "{last_error}");
    for event in app.events(task).await {
        assert!(!event.3.contains(TOKEN), "{event:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn without_a_database_the_message_is_requeued_until_the_delivery_limit() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.seed_user(BIZ, "liam@example.com", "EMPLOYEE", None).expect("seed");
    let (_, task) = app.queue(Desire::removal("liam@example.com")).await;
    // Nothing listens on port 1: every store call fails as if the database were down.
    let unreachable = Store::connect("postgres://postgres@127.0.0.1:1/unseat", 2).expect("pool");
    app.start_with(unreachable, config());

    let dead: ConnectorTask = serde_json::from_slice(&app.dead_lettered_message().await).expect("the task message");
    assert_eq!(dead.task_id, task, "the broker dead-letters it once the delivery limit is reached");
    assert!(app.emu.requests().is_empty(), "no app call without the desired state");
    let t = app.task(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("queued", 0));
    assert!(app.hub_user("liam@example.com").is_some());
    app.stop().await;
}

/// A hub whose user holds ANALYZE on `n` ad accounts (more than one page of the user's
/// `assigned_ad_accounts` edge); returns the fixture, the user and the accounts in order.
async fn hub_with_ad_accounts(n: usize) -> (Fixture, unseat_emulator::BusinessUser, Vec<unseat_emulator::Asset>) {
    let app = Setup::new(BIZ, TOKEN)
        .settings(json!({ "business_id": BIZ, "rate_limit_per_second": 1000 }))
        .asset_roles(&["MANAGE", "ADVERTISE", "ANALYZE"])
        .build()
        .await;
    let paula = app.emu.seed_user(BIZ, "paula@example.com", "EMPLOYEE", None).expect("seed");
    let accounts: Vec<_> =
        (0..n).map(|i| app.emu.seed_asset(BIZ, "ad_account", &format!("Account {i}")).expect("asset")).collect();
    for account in &accounts {
        app.emu.assign_asset(&account.id, &paula.id, &["ANALYZE"]).expect("assign");
    }
    (app, paula, accounts)
}

/// The assets of the hub that `user` holds tasks on.
fn held_by(app: &Fixture, user: &str) -> Vec<String> {
    app.emu.assets(BIZ).into_iter().filter(|a| a.assigned.contains_key(user)).map(|a| a.id).collect()
}

#[tokio::test]
async fn a_removal_takes_the_user_off_assets_on_every_page() {
    let (mut app, paula, accounts) = hub_with_ad_accounts(250).await;
    let (_, task) = app.queue(Desire::removal("paula@example.com")).await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("succeeded", 1), "{t:?}");
    assert!(app.hub_user("paula@example.com").is_none());
    // The hub forgets a deleted user's assignments by itself, so the request log tells
    // whether the connector unassigned each asset first, the last one included.
    let unassigned: Vec<String> = app
        .writes()
        .into_iter()
        .filter(|(method, path, status)| method == "DELETE" && path.ends_with("/assigned_users") && *status == 200)
        .map(|(_, path, _)| path)
        .collect();
    assert_eq!(unassigned.len(), 250);
    let last = accounts.last().expect("accounts");
    assert!(unassigned.contains(&format!("/v25.0/{}/assigned_users", last.id)), "the 250th account too");
    let pages = app.emu.requests().iter().filter(|r| r.path.ends_with("/assigned_ad_accounts")).count();
    assert_eq!(pages, 3, "250 accounts at 100 per page");
    assert_eq!(held_by(&app, &paula.id), Vec::<String>::new());
    app.stop().await;
}

#[tokio::test]
async fn an_update_sees_assets_beyond_the_first_page() {
    let (mut app, paula, accounts) = hub_with_ad_accounts(250).await;
    // Keep only the last account; everything before it goes.
    let last = accounts.last().expect("accounts").id.clone();
    let desired = json!({ last.clone(): "ANALYZE" });
    let (_, task) = app
        .queue(Desire {
            desired_role: Some("EMPLOYEE"),
            desired_assets: desired,
            desired_version: 2,
            applied_version: 1,
            task_version: 2,
            ..Desire::removal("paula@example.com")
        })
        .await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!(t.status, "succeeded", "{t:?}");
    assert_eq!(held_by(&app, &paula.id), vec![last], "only the desired account is left");
    let hub = app.hub_user("paula@example.com").expect("paula stays");
    assert_eq!(hub.role, "EMPLOYEE");
    // Nothing was re-assigned: the account she keeps was seen on the last page.
    assert!(app.writes().iter().all(|(method, _, _)| method == "DELETE"), "no POST of a task she already held");
    app.stop().await;
}

#[tokio::test]
async fn picking_up_a_redriven_task_sweeps_only_its_stale_copy_out_of_the_dead_letter_queue() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.publisher
        .publish(&app.topology.connector_exchange(), "business_hub", "junk-2", b"not a task")
        .await
        .expect("publish");
    app.emu.seed_user(BIZ, "rita@example.com", "EMPLOYEE", None).expect("seed");
    refuse_deletes(&app);
    let (user, task) = app.queue(Desire::removal("rita@example.com")).await;
    app.start(config());
    assert_eq!(app.finished(task).await.status, "failed");
    eventually("both messages in the dead-letter queue", || async {
        (app.dead_letter_count().await == 2).then_some(())
    })
    .await;

    // The fault is fixed; an admin re-drives the task (the outbox row is published here, as
    // the relay would).
    app.emu.clear_faults();
    let exchange = app.topology.connector_exchange();
    let outcome = app
        .store
        .redrive_task(app.tenant, task, "a test", |t| unseat_console::redrive_message(t, &exchange))
        .await
        .expect("redrive");
    assert!(matches!(outcome, unseat_store::apply::Redrive::Requeued { desired_version: 2 }), "{outcome:?}");
    app.publish(user, task, 2).await;

    let t = eventually("the re-driven task to succeed", || async {
        let t = app.task(task).await;
        (t.status == "succeeded").then_some(t)
    })
    .await;
    assert_eq!((t.attempts, t.dead_lettered), (2, false));
    assert!(app.hub_user("rita@example.com").is_none());
    eventually("the stale copy to leave the dead-letter queue", || async {
        (app.dead_letter_count().await == 1).then_some(())
    })
    .await;
    assert_eq!(app.dead_lettered_message().await, b"not a task", "what nobody re-drove stays");
    app.stop().await;
}

/// A leaver who was invited but never accepted is no business user, yet could still accept:
/// the invitation is revoked, and the log says so.
#[tokio::test]
async fn revokes_the_open_invitation_of_someone_who_never_accepted() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    let invitation = app.emu.seed_invitation(BIZ, "nina@example.com", "EMPLOYEE").expect("invite");
    app.emu.seed_invitation(BIZ, "other@example.com", "EMPLOYEE").expect("invite");
    // Remembered from an earlier task, her business-user id is gone.
    let (user, task) = app
        .queue(Desire { app_account_id: Some("100000000000999".into()), ..Desire::removal("Nina@Example.com") })
        .await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("succeeded", 1), "{t:?}");
    let events = app.events(task).await;
    assert_eq!(
        events.last().map(|e| (e.0.as_str(), e.3.as_str())),
        Some(("succeeded", "pending invitation to Acme Business Hub revoked"))
    );
    let left: Vec<String> = app.emu.invitations(BIZ).into_iter().map(|i| i.email).collect();
    assert_eq!(left, ["other@example.com"], "hers is gone, nobody else's");
    assert!(app.emu.accept_invitation(&invitation.id).is_err(), "she can no longer accept it");
    let writes = app.writes();
    assert_eq!(writes.last(), Some(&("DELETE".to_string(), format!("/v25.0/{}", invitation.id), 200)), "{writes:?}");
    assert_eq!(app.applied(user).await, (2, None));
    app.stop().await;
}

/// A page may hold nothing and still have a `next`: the lookup follows it.
#[tokio::test]
async fn the_lookup_follows_next_past_an_empty_page() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    for i in 0..130 {
        app.emu.seed_user(BIZ, &format!("person{i}@example.com"), "EMPLOYEE", None).expect("seed");
    }
    app.emu.seed_user(BIZ, "olga@example.com", "EMPLOYEE", None).expect("seed");
    app.emu
        .add_fault(FaultRule {
            empty_page: true,
            path_contains: Some("/business_users".into()),
            skip: Some(1),
            times: Some(1),
            ..Default::default()
        })
        .expect("fault");
    let (_, task) = app.queue(Desire::removal("olga@example.com")).await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("succeeded", 1), "{t:?}");
    assert!(app.hub_user("olga@example.com").is_none(), "found past the empty page and removed");
    let pages = app.emu.requests().iter().filter(|r| r.path.ends_with("/business_users")).count();
    assert_eq!(pages, 3, "a full page, an empty one, then the last");
    app.stop().await;
}

/// Graph refuses a cursor whose item was deleted meanwhile: the lookup starts over, once.
#[tokio::test]
async fn a_refused_cursor_restarts_the_lookup_from_the_first_page() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    for i in 0..130 {
        app.emu.seed_user(BIZ, &format!("person{i}@example.com"), "EMPLOYEE", None).expect("seed");
    }
    app.emu.seed_user(BIZ, "pia@example.com", "EMPLOYEE", None).expect("seed");
    app.emu
        .add_fault(FaultRule {
            method: Some("GET".into()),
            path_contains: Some("/business_users".into()),
            status: Some(400),
            graph_code: Some(100),
            skip: Some(1),
            times: Some(1),
            ..Default::default()
        })
        .expect("fault");
    let (_, task) = app.queue(Desire::removal("pia@example.com")).await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("succeeded", 1), "{t:?}");
    assert!(app.hub_user("pia@example.com").is_none());
    let pages: Vec<u16> =
        app.emu.requests().iter().filter(|r| r.path.ends_with("/business_users")).map(|r| r.status).collect();
    assert_eq!(pages, [200, 400, 200, 200], "page 2 refused, then pages 1 and 2 again");
    app.stop().await;
}

/// While invitations stay pending, a granted person is invited; an invitation holds no assets,
/// so the state recorded as applied holds none either (the log says they wait), and no asset
/// edge is called with the invitation's id.
#[tokio::test]
async fn an_invitation_is_recorded_without_the_assets_it_cannot_hold_yet() {
    let mut app = Setup::new(BIZ, TOKEN)
        .settings(json!({ "business_id": BIZ, "rate_limit_per_second": 1000 }))
        .asset_roles(&["MANAGE", "ADVERTISE", "ANALYZE"])
        .build()
        .await;
    app.emu.set_settings(unseat_emulator::Settings { invitations_pending: true, ..app.emu.settings() });
    let account = app.emu.seed_asset(BIZ, "ad_account", "Account").expect("asset");
    let (user, task) = app
        .queue(Desire {
            desired_role: Some("EMPLOYEE"),
            desired_assets: json!({ account.id.clone(): "ANALYZE" }),
            ..Desire::removal("quinn@example.com")
        })
        .await;
    app.start(config());

    let t = app.finished(task).await;
    assert_eq!(t.status, "succeeded", "{t:?}");
    let events = app.events(task).await;
    let last = events.last().map(|e| e.3.clone()).unwrap_or_default();
    assert!(last.contains("invitation is pending") && last.contains("1 granted asset"), "{last}");
    assert_eq!(app.emu.invitations(BIZ).len(), 1);
    assert!(app.hub_user("quinn@example.com").is_none(), "not a business user until she accepts");
    let client = app.store.client().await.expect("client");
    let row = client
        .query_one(
            "select applied_role, applied_assets, app_account_id from access_state
              where tenant_id = $1 and integration_id = $2 and user_id = $3",
            &[&app.tenant, &app.integration, &user],
        )
        .await
        .expect("access_state");
    let (role, assets, id): (Option<String>, serde_json::Value, Option<String>) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(role.as_deref(), Some("EMPLOYEE"));
    assert_eq!(assets, json!({}), "the invitation holds no asset yet");
    assert_eq!(id, None, "an invitation's id is no account id");
    assert!(app.writes().iter().all(|(_, path, _)| !path.contains("assigned_users")), "{:?}", app.writes());
    app.stop().await;
}

/// Graph throttles with HTTP 400, a code and, for a business use case, the minutes until
/// access comes back: the integration's shared schedule is moved past them, so no task of it
/// calls before, and the throttled task waits as long.
#[tokio::test]
async fn a_business_use_case_throttle_pauses_the_integration_for_the_minutes_it_names() {
    let mut app = Setup::new(BIZ, TOKEN).build().await;
    app.emu.seed_user(BIZ, "rhea@example.com", "EMPLOYEE", None).expect("seed");
    app.emu
        .add_fault(FaultRule {
            method: Some("DELETE".into()),
            status: Some(400),
            graph_code: Some(80004),
            regain_minutes: Some(2),
            times: Some(1),
            ..Default::default()
        })
        .expect("fault");
    let (_, task) = app.queue(Desire::removal("rhea@example.com")).await;
    app.start(config());

    let scheduled = eventually("the throttled attempt's retry", || async {
        app.events(task).await.into_iter().find(|e| e.0 == "retry_scheduled").map(|e| e.3)
    })
    .await;
    let wait_ms: u64 = scheduled
        .strip_prefix("retrying in ")
        .and_then(|rest| rest.split_once(" ms"))
        .and_then(|(ms, _)| ms.parse().ok())
        .expect("the wait in ms");
    assert!(wait_ms >= 120_000, "{scheduled}");
    let client = app.store.client().await.expect("client");
    let paused: f64 = client
        .query_one(
            "select extract(epoch from next_free - clock_timestamp())::float8 from rate_limit_schedules
              where tenant_id = $1 and integration_id = $2",
            &[&app.tenant, &app.integration],
        )
        .await
        .expect("the integration's schedule")
        .get(0);
    assert!(paused > 110.0 && paused <= 121.0, "the next slot is {paused} s away");
    assert!(app.hub_user("rhea@example.com").is_some(), "nothing was removed yet");
    app.stop().await;
}
