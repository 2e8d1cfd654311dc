//! The SCIM app kind end to end: the connector runtime on a fresh database and the real
//! RabbitMQ, against the emulator's SCIM app switched to behave as real apps do (ids with `|`,
//! attribute names in lower case, filters ignored, writes that do not take, redirects, 501s,
//! strict parsing). Each test checks the app's final state and the task's log.

mod common;

use common::{Desire, Fixture, Setup};
use serde_json::{json, Value};
use unseat_emulator::{FaultRule, ScimUser, Settings};

const TOKEN: &str = "scim-runtime-credential";
const APP: &str = "Acme SCIM App";

async fn scim(roles: &[&str], settings: Value) -> Fixture {
    let mut h = Setup::scim(TOKEN, roles, settings).build().await;
    h.start(common::quick_config());
    h
}

fn seed(h: &Fixture, user_name: &str, role: Option<&str>, active: bool, external_id: Option<&str>) -> ScimUser {
    let user = ScimUser {
        id: String::new(),
        user_name: user_name.into(),
        active,
        roles: role.into_iter().map(str::to_string).collect(),
        external_id: external_id.map(str::to_string),
    };
    h.emu.seed_scim_account(&user).expect("seed")
}

fn account(h: &Fixture, id: &str) -> Option<ScimUser> {
    h.emu.scim_users().into_iter().find(|u| u.id == id)
}

/// The text of the task's last event, as the Automation Log shows it.
async fn last_event(h: &Fixture, task: uuid::Uuid) -> (String, String) {
    let events = h.events(task).await;
    let last = events.last().expect("an event");
    (last.0.clone(), last.3.clone())
}

/// An update: `role` desired (version 2 over an applied 1), the app's id remembered or not.
fn update<'a>(email: &'a str, role: &'a str, remembered: Option<&str>) -> Desire<'a> {
    Desire { desired_role: Some(role), app_account_id: remembered.map(str::to_string), ..Desire::removal(email) }
}

fn removal<'a>(email: &'a str, remembered: Option<&str>) -> Desire<'a> {
    Desire { app_account_id: remembered.map(str::to_string), ..Desire::removal(email) }
}

#[tokio::test]
async fn after_an_email_change_the_remembered_account_takes_the_new_address_and_is_then_deactivated() {
    let h = scim(&["admin", "member"], json!({})).await;
    let jane = seed(&h, "jane@old.example", Some("member"), true, None);
    // The IdP changed her email; the id remembered from an earlier task is the app's account.
    let (user, first) = h.queue(update("jane@new.example", "admin", Some(&jane.id))).await;
    assert_eq!(h.finished(first).await.status, "succeeded");
    assert_eq!(
        last_event(&h, first).await.1,
        format!("role changed from member to admin in {APP}; its address changed from jane@old.example in {APP}")
    );
    // The app shows her new address, and finds the account by it.
    let moved = account(&h, &jane.id).expect("the original account");
    assert_eq!(moved.user_name, "jane@new.example", "{moved:?}");
    let found = h.emu.scim_users().into_iter().filter(|u| u.user_name == "jane@new.example").count();
    assert_eq!(found, 1);
    let (second, _) = h.queue_change(user, None).await;
    assert_eq!(h.finished(second).await.status, "succeeded");
    assert_eq!(last_event(&h, second).await.1, format!("deactivated in {APP}"));

    let users = h.emu.scim_users();
    assert_eq!(users.len(), 1, "no second account: {users:?}");
    let original = account(&h, &jane.id).expect("the original account");
    assert!(!original.active, "the original account is deactivated: {original:?}");
}

#[tokio::test]
async fn an_account_found_by_external_id_is_deactivated_whatever_its_user_name() {
    let h = scim(&["admin", "member"], json!({ "match_attribute": "externalId" })).await;
    let jane = seed(&h, "j.doe@legacy.example", Some("member"), true, Some("jane@example.com"));
    let (_, task) = h.queue(removal("jane@example.com", None)).await;
    assert_eq!(h.finished(task).await.status, "succeeded");
    assert_eq!(last_event(&h, task).await, ("succeeded".into(), format!("deactivated in {APP}")));
    assert!(!account(&h, &jane.id).expect("kept").active);
    assert_eq!(h.emu.scim_users().len(), 1);
}

#[tokio::test]
async fn an_account_under_the_other_attribute_is_updated_not_duplicated() {
    let h = scim(&["admin", "member"], json!({ "match_attribute": "externalId" })).await;
    // Made by hand before the integration: the email is its userName, it has no externalId.
    let jane = seed(&h, "jane@example.com", Some("member"), true, None);
    let (_, task) = h.queue(update("jane@example.com", "admin", None)).await;
    let t = h.finished(task).await;
    assert_eq!(t.status, "succeeded", "{:?}", t.last_error);
    assert_eq!(last_event(&h, task).await.1, format!("role changed from member to admin in {APP}"));
    assert_eq!(h.emu.scim_users().len(), 1, "{:?}", h.emu.scim_users());
    assert_eq!(account(&h, &jane.id).expect("kept").roles, ["admin"]);
}

#[tokio::test]
async fn delete_mode_deletes_an_account_found_already_inactive() {
    let h = scim(&["admin", "member"], json!({ "deprovision": "delete" })).await;
    let jane = seed(&h, "jane@example.com", Some("member"), false, None);
    let (_, task) = h.queue(removal("jane@example.com", None)).await;
    assert_eq!(h.finished(task).await.status, "succeeded");
    assert_eq!(last_event(&h, task).await, ("succeeded".into(), format!("deleted from {APP}")));
    assert_eq!(account(&h, &jane.id), None, "deleted");
}

#[tokio::test]
async fn a_deactivation_answered_with_a_redirect_fails_and_flags_the_integration() {
    let h = scim(&["admin", "member"], json!({})).await;
    let jane = seed(&h, "jane@example.com", Some("member"), true, None);
    // A base URL that redirects writes to a page that answers GETs with 200.
    let location = format!("{}/Users/{}", h.base_url, jane.id);
    h.emu
        .add_fault(FaultRule {
            method: Some("PATCH".into()),
            status: Some(303),
            location: Some(location),
            ..Default::default()
        })
        .expect("fault");
    let (_, task) = h.queue(removal("jane@example.com", Some(&jane.id))).await;
    let t = h.finished(task).await;
    assert_eq!(t.status, "failed");
    let reason = t.last_error.unwrap_or_default();
    assert!(reason.contains("redirect (HTTP 303") && reason.contains("base_url"), "{reason}");
    assert!(h.needs_attention().await.is_some());
    assert!(account(&h, &jane.id).expect("kept").active, "still active, and the log says it failed");
}

#[tokio::test]
async fn a_deactivation_the_app_answers_with_the_account_still_active_fails() {
    let h = scim(&["admin", "member"], json!({})).await;
    h.emu.set_settings(Settings { scim_keeps_active: true, ..Default::default() });
    let jane = seed(&h, "jane@example.com", Some("member"), true, None);
    let (_, task) = h.queue(removal("jane@example.com", Some(&jane.id))).await;
    let t = h.finished(task).await;
    assert_eq!(t.status, "failed");
    let reason = t.last_error.unwrap_or_default();
    assert!(reason.contains("still active") && reason.contains(&jane.id), "{reason}");
    assert!(account(&h, &jane.id).expect("kept").active);
}

#[tokio::test]
async fn a_role_change_the_app_answers_with_the_old_role_fails() {
    let h = scim(&["admin", "member"], json!({})).await;
    h.emu.set_settings(Settings { scim_keeps_roles: true, ..Default::default() });
    let jane = seed(&h, "jane@example.com", Some("member"), true, None);
    let (_, task) = h.queue(update("jane@example.com", "admin", Some(&jane.id))).await;
    let t = h.finished(task).await;
    assert_eq!(t.status, "failed");
    let reason = t.last_error.unwrap_or_default();
    assert!(reason.contains("did not take the role") && reason.contains(&jane.id), "{reason}");
    assert_eq!(account(&h, &jane.id).expect("kept").roles, vec!["member".to_string()]);
}

#[tokio::test]
async fn ids_with_characters_a_url_must_escape_are_addressed() {
    let h = scim(&["admin", "member"], json!({})).await;
    h.emu.set_settings(Settings { scim_id_prefix: Some("auth0|jane@corp/".into()), ..Default::default() });
    let jane = seed(&h, "jane@example.com", Some("member"), true, None);
    assert!(jane.id.starts_with("auth0|jane@corp/"), "{}", jane.id);
    let (_, task) = h.queue(removal("jane@example.com", Some(&jane.id))).await;
    let t = h.finished(task).await;
    assert_eq!(t.status, "succeeded", "{:?}", t.last_error);
    assert_eq!(last_event(&h, task).await.1, format!("deactivated in {APP}"));
    assert!(!account(&h, &jane.id).expect("kept").active);
}

#[tokio::test]
async fn an_app_without_patch_fails_the_task_at_once() {
    let mut h = Setup::scim(TOKEN, &["admin", "member"], json!({})).build().await;
    h.start(unseat_connector::ConnectorConfig { max_attempts: 5, ..common::quick_config() });
    h.emu
        .add_fault(FaultRule { method: Some("PATCH".into()), status: Some(501), ..Default::default() })
        .expect("fault");
    let jane = seed(&h, "jane@example.com", Some("member"), true, None);
    let (_, task) = h.queue(removal("jane@example.com", Some(&jane.id))).await;
    let t = h.finished(task).await;
    assert_eq!((t.status.as_str(), t.attempts), ("failed", 1), "not retried: {:?}", t.last_error);
    let reason = t.last_error.unwrap_or_default();
    assert!(reason.contains("does not implement PATCH"), "{reason}");
    assert!(account(&h, &jane.id).expect("kept").active);
}

#[tokio::test]
async fn a_strict_app_finds_and_adds_people() {
    let h = scim(&["admin", "member"], json!({})).await;
    h.emu.set_settings(Settings { scim_strict: true, ..Default::default() });
    let jane = seed(&h, "jane@example.com", Some("member"), true, None);
    let (_, removed) = h.queue(removal("jane@example.com", None)).await;
    let (_, added) = h.queue(update("sam@example.com", "member", None)).await;
    for task in [removed, added] {
        let t = h.finished(task).await;
        assert_eq!(t.status, "succeeded", "{:?}", t.last_error);
    }
    assert!(!account(&h, &jane.id).expect("kept").active);
    assert_eq!(last_event(&h, added).await.1, format!("added to {APP} as member"));
    let sam = h.emu.scim_users().into_iter().find(|u| u.user_name == "sam@example.com").expect("sam added");
    assert!(sam.active && sam.roles == ["member"], "{sam:?}");
}

#[tokio::test]
async fn an_app_that_ignores_the_filter_is_not_taken_for_someone_removed() {
    let h = scim(&["admin", "member"], json!({})).await;
    h.emu.set_settings(Settings { scim_ignores_filter: true, ..Default::default() });
    let bob = seed(&h, "bob@example.com", Some("member"), true, None);
    seed(&h, "carol@example.com", Some("member"), true, None);
    seed(&h, "dave@example.com", Some("member"), true, None);
    let (_, task) = h.queue(removal("jane@example.com", None)).await;
    let t = h.finished(task).await;
    assert_eq!(t.status, "failed");
    let reason = t.last_error.unwrap_or_default();
    assert!(reason.contains("did not apply the filter"), "{reason}");
    assert!(h.needs_attention().await.is_some(), "every lookup fails alike: the integration says so");
    assert!(account(&h, &bob.id).expect("kept").active, "nobody else touched");
}

#[tokio::test]
async fn attribute_names_in_lower_case_are_read() {
    let h = scim(&["admin", "member"], json!({})).await;
    h.emu.set_settings(Settings { scim_lowercase_names: true, ..Default::default() });
    let jane = seed(&h, "jane@example.com", Some("member"), true, None);
    let (_, task) = h.queue(removal("jane@example.com", None)).await;
    assert_eq!(h.finished(task).await.status, "succeeded");
    assert_eq!(last_event(&h, task).await, ("succeeded".into(), format!("deactivated in {APP}")));
    assert!(!account(&h, &jane.id).expect("kept").active);
}

#[tokio::test]
async fn a_reactivation_is_logged_as_one() {
    let h = scim(&["admin", "member"], json!({})).await;
    let jane = seed(&h, "jane@example.com", Some("member"), false, None);
    let (_, task) = h.queue(update("jane@example.com", "member", Some(&jane.id))).await;
    assert_eq!(h.finished(task).await.status, "succeeded");
    assert_eq!(last_event(&h, task).await.1, format!("reactivated in {APP} as member"));
    assert!(account(&h, &jane.id).expect("kept").active);
}

#[tokio::test]
async fn a_seat_is_held_by_any_active_account_and_never_named() {
    let h = scim(&[unseat_domain::SEAT], json!({})).await;
    let jane = seed(&h, "jane@example.com", Some("admin"), true, None);
    let ivan = seed(&h, "ivan@example.com", None, false, None);
    let (_, held) = h.queue(update("jane@example.com", unseat_domain::SEAT, Some(&jane.id))).await;
    let (_, back) = h.queue(update("ivan@example.com", unseat_domain::SEAT, Some(&ivan.id))).await;
    let (_, added) = h.queue(update("sam@example.com", unseat_domain::SEAT, None)).await;
    for task in [held, back, added] {
        assert_eq!(h.finished(task).await.status, "succeeded");
    }
    assert_eq!(last_event(&h, held).await.1, format!("already has a seat in {APP}; nothing to change"));
    assert_eq!(last_event(&h, back).await.1, format!("reactivated in {APP}"));
    assert_eq!(last_event(&h, added).await.1, format!("added to {APP}"));
    assert_eq!(account(&h, &jane.id).expect("kept").roles, ["admin"], "her role in the app is left alone");
    assert!(account(&h, &ivan.id).expect("kept").active);
    let patched: Vec<_> = h.writes().into_iter().filter(|w| w.1.contains(&jane.id)).collect();
    assert!(patched.is_empty(), "nothing written to jane: {patched:?}");
}

#[tokio::test]
async fn a_role_differing_only_in_case_is_held() {
    let h = scim(&["admin", "member"], json!({})).await;
    let jane = seed(&h, "jane@example.com", Some("Admin"), true, None);
    let (_, task) = h.queue(update("jane@example.com", "admin", Some(&jane.id))).await;
    assert_eq!(h.finished(task).await.status, "succeeded");
    assert_eq!(last_event(&h, task).await.1, format!("already holds admin in {APP}; nothing to change"));
    assert_eq!(h.writes(), Vec::<(String, String, u16)>::new());
}

#[tokio::test]
async fn an_oversized_answer_fails_the_attempt() {
    let h = scim(&["admin", "member"], json!({})).await;
    let jane = seed(&h, "jane@example.com", Some("member"), true, None);
    h.emu
        .add_fault(FaultRule { method: Some("GET".into()), padding_bytes: Some(2 << 20), ..Default::default() })
        .expect("fault");
    let (_, task) = h.queue(removal("jane@example.com", None)).await;
    let t = h.finished(task).await;
    assert_eq!(t.status, "failed");
    let reason = t.last_error.unwrap_or_default();
    assert!(reason.contains("larger than 1024 KiB"), "{reason}");
    assert!(account(&h, &jane.id).expect("kept").active);
}
