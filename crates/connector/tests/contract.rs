//! One contract every app adapter keeps, run against every implementation: the business hub
//! against its emulator, the SCIM adapter against the project's SCIM emulator and against a
//! real third-party SCIM server (`scim2-server` from PyPI, installed into a venv under
//! ~/.cache on first use). Each step checks the app's own state, not just what the adapter
//! said.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use unseat_connector::{converge, AppAdapter, AppHttp, BusinessHub, Converged, RateLimits, ScimApp};
use unseat_emulator::{Emulator, Settings};
use unseat_store::apply::Integration;
use uuid::Uuid;

const BIZ: &str = "4200000077";
const TOKEN: &str = "contract-token";

fn http(rate: f64) -> AppHttp {
    AppHttp::new(Duration::from_secs(5), Arc::new(RateLimits::new()), rate).expect("http client")
}

fn integration(app_kind: &str, base_url: String, settings: Value) -> Integration {
    Integration {
        tenant_id: Uuid::new_v4(),
        id: Uuid::new_v4(),
        name: "Contract app".into(),
        app_kind: app_kind.into(),
        base_url,
        settings,
        credential: TOKEN.into(),
        roles: vec!["ADMIN".into(), "EMPLOYEE".into()],
        asset_roles: Vec::new(),
        needs_attention: None,
    }
}

/// An app under test: how to seed it and read what it really holds.
trait Fixture {
    fn integration(&self) -> &Integration;
    /// An id the app never issued (for the stale-id paths).
    fn never_issued_id(&self) -> &'static str;
    async fn seed(&self, email: &str, role: &str);
    /// The role of the *active* account for `email`, if there is one.
    async fn holds(&self, email: &str) -> Option<String>;
    /// What a removal does in this app.
    fn removal(&self) -> Converged {
        Converged::Removed
    }
}

/// The contract. Emails are unique per run so that a shared server cannot leak state in.
async fn contract<A: AppAdapter, F: Fixture>(adapter: &A, app: &F) {
    let run = Uuid::new_v4().simple().to_string();
    let email = |name: &str| format!("{name}.{}@example.com", &run[..8]);
    let (alice, bob, carol, dave) = (email("alice"), email("bob"), email("carol"), email("dave"));
    let i = app.integration();
    let none = BTreeMap::new();
    app.seed(&alice, "ADMIN").await;
    app.seed(&carol, "EMPLOYEE").await;

    // A role change finds the account by email and reports its id.
    let changed = converge(adapter, i, &alice, None, Some("EMPLOYEE"), &none, None).await.expect("lower alice");
    assert_eq!(changed.converged, Converged::RoleChanged { from: Some("ADMIN".into()), to: "EMPLOYEE".into() });
    let alice_id = changed.account_id.clone().expect("the app's id for alice");
    assert_eq!(app.holds(&alice).await.as_deref(), Some("EMPLOYEE"));

    // Setting the role she holds, by her remembered id, changes nothing.
    let same =
        converge(adapter, i, &alice, Some(&alice_id), Some("EMPLOYEE"), &none, Some("EMPLOYEE")).await.expect("again");
    assert_eq!(same.converged, Converged::AlreadyHeld { role: "EMPLOYEE".into() });
    assert_eq!(same.account_id.as_deref(), Some(alice_id.as_str()));

    // Someone the app does not have is added with the role.
    let added = converge(adapter, i, &bob, None, Some("EMPLOYEE"), &none, None).await.expect("add bob");
    assert_eq!(added.converged, Converged::Added { role: "EMPLOYEE".into() });
    assert!(added.account_id.is_some());
    assert_eq!(app.holds(&bob).await.as_deref(), Some("EMPLOYEE"));

    // Removal by remembered id, then again: already removed.
    let removed =
        converge(adapter, i, &alice, Some(&alice_id), None, &none, Some("EMPLOYEE")).await.expect("remove alice");
    assert_eq!(removed.converged, app.removal());
    assert_eq!(removed.account_id, None);
    assert_eq!(app.holds(&alice).await, None);
    let again = converge(adapter, i, &alice, None, None, &none, None).await.expect("remove alice again");
    assert_eq!(again.converged, Converged::AlreadyRemoved);

    // A stale remembered id falls back to a lookup by email and still removes the account.
    let stale =
        converge(adapter, i, &carol, Some(app.never_issued_id()), None, &none, None).await.expect("remove carol");
    assert_eq!(stale.converged, app.removal());
    assert_eq!(app.holds(&carol).await, None);

    // Never there: already removed, and nobody else was touched.
    let absent = converge(adapter, i, &dave, None, None, &none, None).await.expect("remove dave");
    assert_eq!(absent.converged, Converged::AlreadyRemoved);
    assert_eq!(app.holds(&bob).await.as_deref(), Some("EMPLOYEE"));

    // Assets granted to an app that has none are a misconfiguration, not a silent no-op.
    let assets = BTreeMap::from([("act_1".to_string(), "ANALYZE".to_string())]);
    let refused = converge(adapter, i, &bob, None, Some("EMPLOYEE"), &assets, Some("EMPLOYEE")).await;
    assert!(refused.is_err(), "{refused:?}");
}

// ---------------------------------------------------------------------------------------------
// Business hub on the emulator.

struct HubFixture {
    emu: Emulator,
    integration: Integration,
}

impl HubFixture {
    async fn start(settings: Value, asset_roles: &[&str]) -> Self {
        let emu = Emulator::new();
        let base = unseat_emulator::serve_local(emu.clone()).await.expect("emulator");
        emu.require_token(BIZ, TOKEN).expect("token");
        emu.seed_user(BIZ, "owner@example.com", "ADMIN", None).expect("owner");
        let mut integration = integration("business_hub", base, settings);
        integration.asset_roles = asset_roles.iter().map(|s| s.to_string()).collect();
        Self { emu, integration }
    }
}

impl Fixture for HubFixture {
    fn integration(&self) -> &Integration {
        &self.integration
    }
    fn never_issued_id(&self) -> &'static str {
        "999999999999999"
    }
    async fn seed(&self, email: &str, role: &str) {
        self.emu.seed_user(BIZ, email, role, None).expect("seed");
    }
    async fn holds(&self, email: &str) -> Option<String> {
        self.emu.users(BIZ).into_iter().find(|u| u.email.eq_ignore_ascii_case(email)).map(|u| u.role)
    }
}

#[tokio::test]
async fn business_hub_keeps_the_contract() {
    let app = HubFixture::start(json!({ "business_id": BIZ }), &[]).await;
    contract(&BusinessHub::new(http(1000.0)), &app).await;
}

#[tokio::test]
async fn business_hub_sets_asset_tasks_and_takes_users_off_every_asset_before_removing_them() {
    let app = HubFixture::start(json!({ "business_id": BIZ }), &["MANAGE", "ADVERTISE", "ANALYZE"]).await;
    let adapter = BusinessHub::new(http(1000.0));
    let ads = app.emu.seed_asset(BIZ, "ad_account", "Ads").expect("ad account");
    let page = app.emu.seed_asset(BIZ, "page", "Page").expect("page");
    let other = app.emu.seed_asset(BIZ, "ad_account", "Other ads").expect("ad account");
    let erin = app.emu.seed_user(BIZ, "erin@example.com", "ADMIN", None).expect("erin");
    app.emu.assign_asset(&ads.id, &erin.id, &["MANAGE", "ADVERTISE", "ANALYZE"]).expect("assign");
    app.emu.assign_asset(&page.id, &erin.id, &["ANALYZE"]).expect("assign");
    let i = app.integration();

    // Update: role down to EMPLOYEE, ADVERTISE on the ad account, the page taken away, MANAGE
    // on the other ad account.
    let desired = BTreeMap::from([(ads.id.clone(), "ADVERTISE".to_string()), (other.id.clone(), "MANAGE".to_string())]);
    let done = converge(&adapter, i, "erin@example.com", None, Some("EMPLOYEE"), &desired, None).await.expect("update");
    assert_eq!(done.assets_set, Some(2));
    assert_eq!(app.holds("erin@example.com").await.as_deref(), Some("EMPLOYEE"));
    let tasks_on = |asset: &str| {
        app.emu.assets(BIZ).into_iter().find(|a| a.id == asset).and_then(|a| a.assigned.get(&erin.id).cloned())
    };
    assert_eq!(tasks_on(&ads.id), Some(vec!["ADVERTISE".to_string(), "ANALYZE".to_string()]));
    assert_eq!(tasks_on(&page.id), None);
    assert_eq!(tasks_on(&other.id), Some(vec!["MANAGE".into(), "ADVERTISE".into(), "ANALYZE".into()]));

    // The same desired state again changes nothing in the app.
    app.emu.clear_requests();
    let again = converge(
        &adapter,
        i,
        "erin@example.com",
        done.account_id.as_deref(),
        Some("EMPLOYEE"),
        &desired,
        Some("EMPLOYEE"),
    )
    .await
    .expect("again");
    assert_eq!((again.converged, again.assets_set), (Converged::AlreadyHeld { role: "EMPLOYEE".into() }, None));
    assert!(app.emu.requests().iter().all(|r| r.method == "GET"), "no writes: {:?}", app.emu.requests());

    // Removal: off every asset first, then the business user.
    app.emu.clear_requests();
    let removed = converge(&adapter, i, "erin@example.com", done.account_id.as_deref(), None, &BTreeMap::new(), None)
        .await
        .expect("remove");
    assert_eq!(removed.converged, Converged::Removed);
    assert_eq!(app.holds("erin@example.com").await, None);
    assert!(app.emu.assets(BIZ).iter().all(|a| a.assigned.is_empty()));
    let writes: Vec<String> = app
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        writes,
        [
            format!("DELETE /v25.0/{}/assigned_users", ads.id),
            format!("DELETE /v25.0/{}/assigned_users", other.id),
            format!("DELETE /v25.0/{}", erin.id),
        ]
    );

    // Removing her again by her remembered id: her asset edges say she does not exist, so
    // she is already removed.
    let again = converge(&adapter, i, "erin@example.com", done.account_id.as_deref(), None, &BTreeMap::new(), None)
        .await
        .expect("remove again");
    assert_eq!(again.converged, Converged::AlreadyRemoved);
}

/// The writes (method and path) the emulator saw since its log was last cleared.
fn writes(emu: &Emulator) -> Vec<String> {
    emu.requests().into_iter().filter(|r| r.method != "GET").map(|r| format!("{} {}", r.method, r.path)).collect()
}

#[tokio::test]
async fn business_hub_counts_a_pending_invitation_as_present_and_sets_assets_once_accepted() {
    let app = HubFixture::start(json!({ "business_id": BIZ }), &["MANAGE", "ADVERTISE", "ANALYZE"]).await;
    app.emu.set_settings(Settings { invitations_pending: true, ..Default::default() });
    let adapter = BusinessHub::new(http(1000.0));
    let page = app.emu.seed_asset(BIZ, "page", "Page").expect("page");
    let assets = BTreeMap::from([(page.id.clone(), "ANALYZE".to_string())]);
    let i = app.integration();
    let email = "quinn@example.com";

    // Invited: the hub holds an invitation, whose id is not remembered as an account's, and
    // the assets wait.
    let invited = converge(&adapter, i, email, None, Some("EMPLOYEE"), &assets, None).await.expect("invite");
    assert_eq!(invited.converged, Converged::Invited { role: "EMPLOYEE".into(), assets_waiting: 1 });
    assert_eq!((invited.account_id.as_deref(), invited.assets_set), (None, None));
    assert_eq!(
        invited.describe("Hub"),
        "invited to Hub as EMPLOYEE; the invitation is pending; the 1 granted asset is set at a task after it is accepted"
    );
    let invitation = app.emu.invitations(BIZ).pop().expect("a pending invitation");
    assert_eq!(app.holds(email).await, None, "not a business user yet");
    assert!(writes(&app.emu).iter().all(|w| !w.contains("assigned_users")), "{:?}", writes(&app.emu));

    // Again: the invitation counts as present; nothing is sent.
    app.emu.clear_requests();
    let again = converge(&adapter, i, email, None, Some("EMPLOYEE"), &assets, Some("EMPLOYEE")).await.expect("again");
    assert_eq!(
        again.converged,
        Converged::StillInvited {
            role: "EMPLOYEE".into(),
            changed: false,
            from: Some("EMPLOYEE".into()),
            assets_waiting: 1
        }
    );
    assert_eq!(writes(&app.emu), Vec::<String>::new());

    // Another role: the invitation is changed, not sent again.
    let admin = converge(&adapter, i, email, None, Some("ADMIN"), &assets, Some("EMPLOYEE")).await.expect("admin");
    assert_eq!(
        admin.converged,
        Converged::StillInvited {
            role: "ADMIN".into(),
            changed: true,
            from: Some("EMPLOYEE".into()),
            assets_waiting: 1
        }
    );
    assert_eq!(writes(&app.emu), [format!("POST /v25.0/{}", invitation.id)]);
    assert_eq!(app.emu.invitations(BIZ)[0].role, "ADMIN");

    // Once accepted, the next task finds the business user and sets the assets.
    let user = app.emu.accept_invitation(&invitation.id).expect("accept");
    let joined = converge(&adapter, i, email, None, Some("ADMIN"), &assets, Some("ADMIN")).await.expect("joined");
    assert_eq!((joined.converged, joined.assets_set), (Converged::AlreadyHeld { role: "ADMIN".into() }, Some(1)));
    assert_eq!(joined.account_id.as_deref(), Some(user.id.as_str()));
    let holder = app.emu.assets(BIZ).into_iter().find(|a| a.id == page.id).expect("page").assigned;
    assert_eq!(holder.get(&user.id), Some(&vec!["ANALYZE".to_string()]));

    // An open invitation of someone removed is revoked.
    app.emu.seed_invitation(BIZ, "rory@example.com", "EMPLOYEE").expect("invite");
    let revoked = converge(&adapter, i, "Rory@Example.com", None, None, &BTreeMap::new(), None).await.expect("revoke");
    assert_eq!(revoked.converged, Converged::InvitationRevoked { count: 1 });
    assert_eq!(revoked.event_kind(), "succeeded");
    assert!(app.emu.invitations(BIZ).is_empty());
}

/// Meta's `role` field reports base roles only. With the integration saying so, a non-base
/// role reading back as its base role is held when it is the role last applied: three tasks,
/// one write, and a move to another non-base role is written. Roles compare ignoring case.
#[tokio::test]
async fn business_hub_takes_the_base_role_meta_reports_as_the_non_base_role_it_set() {
    let app = HubFixture::start(json!({ "business_id": BIZ, "reported_roles": "base" }), &[]).await;
    app.emu.set_settings(Settings { base_roles_only: true, ..Default::default() });
    let adapter = BusinessHub::new(http(1000.0));
    let sam = app.emu.seed_user(BIZ, "sam@example.com", "ADMIN", None).expect("sam");
    let i = app.integration();
    let none = BTreeMap::new();
    app.emu.clear_requests();
    // The first task applies it; the next ones pass it as the runtime does, as last applied.
    for last_applied in [None, Some("DEVELOPER"), Some("DEVELOPER")] {
        converge(&adapter, i, "sam@example.com", Some(&sam.id), Some("DEVELOPER"), &none, last_applied)
            .await
            .expect("developer");
    }
    assert_eq!(writes(&app.emu), [format!("POST /v25.0/{}", sam.id)], "one write for three tasks");
    assert_eq!(app.holds("sam@example.com").await.as_deref(), Some("DEVELOPER"));
    let same = converge(&adapter, i, "sam@example.com", Some(&sam.id), Some("developer"), &none, Some("DEVELOPER"))
        .await
        .expect("case");
    assert_eq!(same.converged, Converged::AlreadyHeld { role: "developer".into() });
    assert_eq!(writes(&app.emu).len(), 1);

    // From one non-base role to another: both read back as EMPLOYEE, the move is still made.
    let moved =
        converge(&adapter, i, "sam@example.com", Some(&sam.id), Some("FINANCE_EDITOR"), &none, Some("DEVELOPER"))
            .await
            .expect("moved");
    assert!(matches!(moved.converged, Converged::RoleChanged { .. }), "{:?}", moved.converged);
    assert_eq!(app.holds("sam@example.com").await.as_deref(), Some("FINANCE_EDITOR"));
    assert_eq!(writes(&app.emu).len(), 2);
    let sam_role = "FINANCE_EDITOR";

    // Without the setting, a non-base role Meta reports as its base role is written again.
    let mut exact = i.clone();
    exact.settings = json!({ "business_id": BIZ });
    converge(&adapter, &exact, "sam@example.com", Some(&sam.id), Some(sam_role), &none, Some(sam_role))
        .await
        .expect("exact");
    assert_eq!(writes(&app.emu).len(), 3);
}

/// Meta reports a FINANCE_EDITOR as EMPLOYEE, so a reported EMPLOYEE is taken as the EMPLOYEE
/// desired only when EMPLOYEE is the role last applied: otherwise EMPLOYEE is written, and a
/// person lowered from a non-base role really is lowered. Both readings of `reported_roles`.
#[tokio::test]
async fn business_hub_writes_employee_unless_employee_was_last_applied() {
    for settings in [json!({ "business_id": BIZ }), json!({ "business_id": BIZ, "reported_roles": "base" })] {
        let app = HubFixture::start(settings.clone(), &[]).await;
        app.emu.set_settings(Settings { base_roles_only: true, ..Default::default() });
        let adapter = BusinessHub::new(http(1000.0));
        let i = app.integration();
        let none = BTreeMap::new();
        let fin = app.emu.seed_user(BIZ, "fin@example.com", "FINANCE_EDITOR", None).expect("fin");
        let emma = app.emu.seed_user(BIZ, "emma@example.com", "EMPLOYEE", None).expect("emma");
        app.emu.clear_requests();

        // Lowered from FINANCE_EDITOR, which the hub reports as EMPLOYEE: EMPLOYEE is written.
        let lowered =
            converge(&adapter, i, "fin@example.com", Some(&fin.id), Some("EMPLOYEE"), &none, Some("FINANCE_EDITOR"))
                .await
                .expect("lowered");
        let employee = || "EMPLOYEE".to_string();
        assert_eq!(lowered.converged, Converged::RoleChanged { from: Some(employee()), to: employee() }, "{settings}");
        assert_eq!(app.holds("fin@example.com").await.as_deref(), Some("EMPLOYEE"), "{settings}");
        assert_eq!(writes(&app.emu), [format!("POST /v25.0/{}", fin.id)], "{settings}");
        assert_eq!(
            lowered.describe("Hub"),
            "role set to EMPLOYEE in Hub, which reports EMPLOYEE for other roles too",
            "{settings}"
        );

        // EMPLOYEE last applied and reported: held, no write.
        app.emu.clear_requests();
        let held = converge(&adapter, i, "emma@example.com", Some(&emma.id), Some("EMPLOYEE"), &none, Some("employee"))
            .await
            .expect("held");
        assert_eq!(held.converged, Converged::AlreadyHeld { role: employee() }, "{settings}");
        assert_eq!(writes(&app.emu), Vec::<String>::new(), "{settings}");

        // No role known to have been applied (added by hand, say): written, not assumed.
        let unknown = converge(&adapter, i, "emma@example.com", Some(&emma.id), Some("EMPLOYEE"), &none, None)
            .await
            .expect("unknown");
        assert_eq!(unknown.converged, Converged::RoleChanged { from: Some(employee()), to: employee() }, "{settings}");
        assert_eq!(writes(&app.emu), [format!("POST /v25.0/{}", emma.id)], "{settings}");
        assert_eq!(app.holds("emma@example.com").await.as_deref(), Some("EMPLOYEE"), "{settings}");

        // An open invitation offering EMPLOYEE, sent by hand: its role is set once, then held.
        let ivy = app.emu.seed_invitation(BIZ, "ivy@example.com", "EMPLOYEE").expect("invitation");
        app.emu.clear_requests();
        let set = converge(&adapter, i, "ivy@example.com", None, Some("EMPLOYEE"), &none, None).await.expect("set");
        assert_eq!(
            set.describe("Hub"),
            "pending invitation to Hub set to EMPLOYEE, which it reports for other roles too",
            "{settings}"
        );
        let kept = converge(&adapter, i, "ivy@example.com", None, Some("EMPLOYEE"), &none, Some("EMPLOYEE"))
            .await
            .expect("kept");
        assert!(matches!(kept.converged, Converged::StillInvited { changed: false, .. }), "{settings}: {kept:?}");
        assert_eq!(writes(&app.emu), [format!("POST /v25.0/{}", ivy.id)], "{settings}");
    }
}

/// Asset roles off the MANAGE/ADVERTISE/ANALYZE ladder are tasks of their own, each asset
/// kind taking its own; a user holds an asset role when the tasks match exactly.
#[tokio::test]
async fn business_hub_converges_asset_roles_by_their_exact_tasks() {
    let roles = ["MANAGE", "ADVERTISE", "ANALYZE", "FULL_CONTROL", "AA_ANALYZE"];
    let app = HubFixture::start(json!({ "business_id": BIZ }), &roles).await;
    let adapter = BusinessHub::new(http(1000.0));
    let ads = app.emu.seed_asset(BIZ, "ad_account", "Ads").expect("ads");
    let reports = app.emu.seed_asset(BIZ, "ad_account", "Reports").expect("reports");
    let page = app.emu.seed_asset(BIZ, "page", "Page").expect("page");
    let tess = app.emu.seed_user(BIZ, "tess@example.com", "EMPLOYEE", None).expect("tess");
    // One task more than ADVERTISE gives.
    app.emu.assign_asset(&ads.id, &tess.id, &["ADVERTISE", "ANALYZE", "DRAFT"]).expect("assign");
    let desired = BTreeMap::from([
        (ads.id.clone(), "ADVERTISE".to_string()),
        (reports.id.clone(), "AA_ANALYZE".to_string()),
        (page.id.clone(), "full_control".to_string()),
    ]);
    let i = app.integration();
    let done = converge(&adapter, i, "tess@example.com", None, Some("EMPLOYEE"), &desired, None).await.expect("set");
    assert_eq!(done.assets_set, Some(3));
    let tasks_on = |asset: &str| {
        app.emu.assets(BIZ).into_iter().find(|a| a.id == asset).and_then(|a| a.assigned.get(&tess.id).cloned())
    };
    assert_eq!(tasks_on(&ads.id), Some(vec!["ADVERTISE".to_string(), "ANALYZE".to_string()]), "DRAFT taken away");
    assert_eq!(tasks_on(&reports.id), Some(vec!["AA_ANALYZE".to_string()]));
    assert_eq!(tasks_on(&page.id), Some(vec!["FULL_CONTROL".to_string()]));

    app.emu.clear_requests();
    for _ in 0..2 {
        let again = converge(
            &adapter,
            i,
            "tess@example.com",
            done.account_id.as_deref(),
            Some("EMPLOYEE"),
            &desired,
            Some("EMPLOYEE"),
        )
        .await
        .expect("again");
        assert_eq!(again.assets_set, None);
    }
    assert_eq!(writes(&app.emu), Vec::<String>::new(), "held: nothing rewritten");
}

// ---------------------------------------------------------------------------------------------
// SCIM on the project's emulator.

struct ScimEmuFixture {
    emu: Emulator,
    integration: Integration,
}

impl ScimEmuFixture {
    async fn start(settings: Value) -> Self {
        let emu = Emulator::new();
        let base = unseat_emulator::serve_local(emu.clone()).await.expect("emulator");
        emu.require_scim_token(TOKEN);
        Self { emu, integration: integration("scim", format!("{base}/scim/v2"), settings) }
    }
}

impl Fixture for ScimEmuFixture {
    fn integration(&self) -> &Integration {
        &self.integration
    }
    fn never_issued_id(&self) -> &'static str {
        "00000000-dead-4e00-8000-000000000000"
    }
    async fn seed(&self, email: &str, role: &str) {
        self.emu.seed_scim_user(email, Some(role)).expect("seed");
    }
    async fn holds(&self, email: &str) -> Option<String> {
        let user = self.emu.scim_users().into_iter().find(|u| u.user_name.eq_ignore_ascii_case(email))?;
        user.active.then(|| user.roles.first().cloned().unwrap_or_default())
    }
    fn removal(&self) -> Converged {
        match self.integration.settings["deprovision"].as_str() {
            Some("delete") => Converged::Deleted,
            _ => Converged::Deactivated,
        }
    }
}

#[tokio::test]
async fn scim_adapter_keeps_the_contract_on_the_emulator() {
    let app = ScimEmuFixture::start(json!({})).await;
    contract(&ScimApp::new(http(1000.0)), &app).await;
    // Deactivation keeps the account, inactive.
    assert!(app.emu.scim_users().iter().any(|u| u.user_name.starts_with("alice.") && !u.active));
}

#[tokio::test]
async fn scim_adapter_deletes_when_the_integration_says_so() {
    let app = ScimEmuFixture::start(json!({ "deprovision": "delete", "match_attribute": "userName" })).await;
    contract(&ScimApp::new(http(1000.0)), &app).await;
    assert!(!app.emu.scim_users().iter().any(|u| u.user_name.starts_with("alice.")), "deleted, not deactivated");
}

#[tokio::test]
async fn scim_adapter_refuses_a_bad_token_as_needing_attention() {
    let mut app = ScimEmuFixture::start(json!({})).await;
    app.integration.credential = "wrong".into();
    let err =
        converge(&ScimApp::new(http(1000.0)), app.integration(), "x@example.com", None, None, &BTreeMap::new(), None)
            .await
            .expect_err("401");
    assert_eq!(err.status_code(), Some(401));
    assert_eq!(err.class(), unseat_connector::ErrorClass::NeedsAttention);
    assert!(!err.to_string().contains(TOKEN));
}

// ---------------------------------------------------------------------------------------------
// SCIM on a real third-party server: scim2-server (PyPI), started by the test.

/// The scim2-server executable, installed into a venv under ~/.cache on first use.
fn scim2_server() -> std::path::PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    let venv = std::path::Path::new(&home).join(".cache/unseat-scim2-server");
    let exe = venv.join("bin/scim2-server");
    if !exe.exists() {
        let made = std::process::Command::new("python3").arg("-m").arg("venv").arg(&venv).status();
        assert!(made.is_ok_and(|s| s.success()), "python3 -m venv {venv:?} failed (python3 with venv is needed)");
        let pip = std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "scim2-server==0.8.3"])
            .status();
        assert!(pip.is_ok_and(|s| s.success()), "pip install scim2-server failed");
    }
    exe
}

struct Scim2Server {
    child: std::process::Child,
    integration: Integration,
    http: reqwest::Client,
    base: String,
}

impl Drop for Scim2Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Scim2Server {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let child = std::process::Command::new(scim2_server())
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string(), "--bearer-token", TOKEN])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start scim2-server");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let up = http.get(format!("{base}/ServiceProviderConfig")).bearer_auth(TOKEN).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "scim2-server did not start on {base}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let integration = integration("scim", base.clone(), json!({}));
        Self { child, integration, http, base }
    }
}

impl Fixture for Scim2Server {
    fn integration(&self) -> &Integration {
        &self.integration
    }
    fn never_issued_id(&self) -> &'static str {
        "0000000000000000000000000000dead"
    }
    async fn seed(&self, email: &str, role: &str) {
        let user = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": email, "active": true,
            "emails": [{ "value": email, "primary": true }],
            "roles": [{ "value": role, "primary": true }],
        });
        let resp =
            self.http.post(format!("{}/Users", self.base)).bearer_auth(TOKEN).json(&user).send().await.expect("seed");
        assert!(resp.status().is_success(), "seed: {}", resp.status());
    }
    async fn holds(&self, email: &str) -> Option<String> {
        let filter = format!("userName eq \"{email}\"");
        let list: Value = self
            .http
            .get(format!("{}/Users", self.base))
            .query(&[("filter", filter.as_str())])
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let user = list["Resources"].as_array()?.first()?.clone();
        if user["active"].as_bool() == Some(false) {
            return None;
        }
        Some(user["roles"][0]["value"].as_str().unwrap_or_default().to_string())
    }
    fn removal(&self) -> Converged {
        Converged::Deactivated
    }
}

#[tokio::test]
async fn scim_adapter_keeps_the_contract_on_scim2_server() {
    let app = Scim2Server::start().await;
    contract(&ScimApp::new(http(1000.0)), &app).await;
}

/// Every Graph throttling code lowers the integration's rate, 341 and 368 (blocked for
/// abuse: wait) included, whatever HTTP status carries it.
#[tokio::test]
async fn business_hub_slows_down_on_every_graph_throttling_code() {
    for code in [4, 341, 368, 80004] {
        let app = HubFixture::start(json!({ "business_id": BIZ }), &[]).await;
        let limits = Arc::new(RateLimits::new());
        let adapter =
            BusinessHub::new(AppHttp::new(Duration::from_secs(5), Arc::clone(&limits), 1000.0).expect("http client"));
        let uma = app.emu.seed_user(BIZ, "uma@example.com", "EMPLOYEE", None).expect("uma");
        app.emu
            .add_fault(unseat_emulator::FaultRule {
                method: Some("DELETE".into()),
                status: Some(400),
                graph_code: Some(code),
                times: Some(1),
                ..Default::default()
            })
            .expect("fault");
        let i = app.integration();
        let err = converge(&adapter, i, "uma@example.com", Some(&uma.id), None, &BTreeMap::new(), None).await;
        assert!(err.is_err(), "code {code}: {err:?}");
        let rate = limits.current_rate(i.id).expect("the integration's rate was used");
        assert!(rate < 1000.0, "code {code} lowers the rate: {rate}");
    }
}
