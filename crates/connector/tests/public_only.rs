//! With `UNSEAT_CONNECTOR_PUBLIC_ONLY`, a connector never calls an app at an address that is
//! not public, whether the URL names the address or a name that resolves to it, and the task
//! fails as misconfigured (nothing to retry) without a request reaching the app.

use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use unseat_connector::error::AppError;
use unseat_connector::{converge, AppHttp, BusinessHub, RateLimits};
use unseat_emulator::Emulator;
use unseat_store::apply::Integration;
use uuid::Uuid;

const BIZ: &str = "4200000078";
const TOKEN: &str = "public-only-token";

fn hub(public_only: bool) -> BusinessHub {
    let http = AppHttp::with_reach(Duration::from_secs(5), Arc::new(RateLimits::new()), 1000.0, public_only);
    BusinessHub::new(http.expect("http client"))
}

fn integration(base_url: String) -> Integration {
    Integration {
        tenant_id: Uuid::new_v4(),
        id: Uuid::new_v4(),
        name: "Hub on this machine".into(),
        app_kind: "business_hub".into(),
        base_url,
        settings: json!({ "business_id": BIZ }),
        credential: TOKEN.into(),
        roles: vec!["ADMIN".into(), "EMPLOYEE".into()],
        asset_roles: Vec::new(),
        needs_attention: None,
    }
}

#[tokio::test]
async fn a_public_only_connector_calls_no_app_on_this_machine() {
    let emu = Emulator::new();
    let base = unseat_emulator::serve_local(emu.clone()).await.expect("emulator");
    emu.require_token(BIZ, TOKEN).expect("token");
    emu.seed_user(BIZ, "owner@example.com", "ADMIN", None).expect("owner");
    emu.seed_user(BIZ, "ann@example.com", "ADMIN", None).expect("ann");
    let by_name = base.replace("127.0.0.1", "localhost");
    assert_ne!(by_name, base, "{base}");
    let none = BTreeMap::new();

    emu.clear_requests();
    for url in [base.clone(), by_name] {
        let err =
            converge(&hub(true), &integration(url.clone()), "ann@example.com", None, Some("EMPLOYEE"), &none, None)
                .await
                .expect_err("refused");
        match &err {
            AppError::Misconfigured(why) => assert!(why.contains("UNSEAT_CONNECTOR_PUBLIC_ONLY"), "{url}: {why}"),
            other => panic!("{url}: not a misconfiguration: {other:?}"),
        }
    }
    assert!(emu.requests().is_empty(), "a request reached the app: {:?}", emu.requests());
    let role = |email: &str| emu.users(BIZ).into_iter().find(|u| u.email == email).map(|u| u.role);
    assert_eq!(role("ann@example.com").as_deref(), Some("ADMIN"));

    // Without the setting, the same call goes through.
    converge(&hub(false), &integration(base), "ann@example.com", None, Some("EMPLOYEE"), &none, None)
        .await
        .expect("lowered");
    assert_eq!(role("ann@example.com").as_deref(), Some("EMPLOYEE"));
}
