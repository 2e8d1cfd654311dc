//! `unseat admin case-duplicates` lists the users of one directory whose userNames are the same
//! ignoring case, as an upgrade to migration 19 left them (a real PostgreSQL).

mod common;

use uuid::Uuid;

#[tokio::test]
async fn the_operator_lists_users_an_idp_takes_for_one() {
    let (url, store) = unseat_store::testing::fresh_database().await.unwrap();
    let tenant = store.create_tenant("Acme", "scim_dup", "adm_dup").await.unwrap().id;
    let run = || {
        let out = common::admin(&url, &["case-duplicates"]);
        let text = common::text(&out);
        assert!(out.status.success(), "{text}");
        text
    };
    assert!(run().contains("0 userName(s) held by more than one user"), "{}", run());

    // As migration 19 keys two names told apart before it: the first created keeps the fold,
    // the later one its fold and id. A third user of another name is not listed.
    let (first, later, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let client = store.client().await.unwrap();
    for (id, name, key, at) in [
        (first, "Émile@corp.example", "émile@corp.example".to_string(), "2026-01-01T00:00:00Z"),
        (later, "émile@CORP.example", format!("émile@corp.example\u{1}{later}"), "2026-01-02T00:00:00Z"),
        (other, "ann@corp.example", "ann@corp.example".to_string(), "2026-01-03T00:00:00Z"),
    ] {
        client
            .execute(
                "insert into scim_users (tenant_id, id, user_name, user_name_key, resource, created_at)
                 values ($1, $2, $3, $4, '{}', $5::text::timestamptz)",
                &[&tenant, &id, &name, &key, &at],
            )
            .await
            .unwrap();
    }
    let text = run();
    assert!(text.contains(&format!("tenant {tenant}  directory workspace  userName \"émile@corp.example\"")), "{text}");
    let (at_first, at_later) = (text.find(&first.to_string()), text.find(&later.to_string()));
    assert!(at_first.is_some() && at_later.is_some() && at_first < at_later, "the first created first: {text}");
    assert!(text.contains("(found by lookups of the name)"), "{text}");
    assert!(!text.contains(&other.to_string()), "{text}");
    assert!(text.contains("1 userName(s) held by more than one user"), "{text}");
}
