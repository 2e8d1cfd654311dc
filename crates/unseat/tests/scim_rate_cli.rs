//! `unseat admin scim-rate-limit` gives a tenant a SCIM rate of its own, returns it to the
//! fleet's, prints what the tenant has, and refuses bad input without changing anything (a real
//! PostgreSQL).

mod common;

use common::text;
use std::process::Output;
use uuid::Uuid;

/// `unseat admin scim-rate-limit <args>`.
fn admin(database_url: &str, args: &[&str]) -> Output {
    common::admin(database_url, &[&["scim-rate-limit"][..], args].concat())
}

#[tokio::test]
async fn the_operator_sets_and_clears_a_tenants_scim_rate_from_the_command_line() {
    let (url, store) = unseat_store::testing::fresh_database().await.unwrap();
    let tenant = store.create_tenant("Acme", "scim_cli", "adm_cli").await.unwrap().id;
    let t = tenant.to_string();
    let stored = || async { store.tenant(tenant).await.unwrap().unwrap().scim_rate_limit };

    let out = admin(&url, &["--tenant", &t]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("the fleet's SCIM rate"), "{}", text(&out));

    let out = admin(&url, &["--tenant", &t, "--per-second", "10", "--burst", "20"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("10 requests/s, burst 20"), "{}", text(&out));
    assert_eq!(stored().await, Some(unseat_store::admin::ScimRateLimit { per_second: 10, burst: 20 }));

    // Bad input: a clear error, a failing exit, and the tenant keeps its rate.
    for (args, says) in [
        (vec!["--per-second", "0", "--burst", "20"], "per_second must be"),
        (vec!["--per-second", "10", "--burst", "1000001"], "burst must be"),
        (vec!["--per-second", "10"], "--burst"),
        (vec!["--per-second", "10", "--burst", "20", "--fleet"], "--fleet"),
        (vec!["--per-second", "ten", "--burst", "20"], "invalid value"),
    ] {
        let out = admin(&url, &[&["--tenant", t.as_str()][..], &args].concat());
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    let missing = Uuid::new_v4().to_string();
    let out = admin(&url, &["--tenant", &missing, "--per-second", "10", "--burst", "20"]);
    assert!(!out.status.success() && text(&out).contains("no tenant"), "{}", text(&out));
    assert_eq!(stored().await, Some(unseat_store::admin::ScimRateLimit { per_second: 10, burst: 20 }));

    let out = admin(&url, &["--tenant", &t, "--fleet"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("the fleet's SCIM rate"), "{}", text(&out));
    assert_eq!(stored().await, None);
}
