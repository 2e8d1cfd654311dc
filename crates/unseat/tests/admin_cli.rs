//! `unseat admin` against the database: commands never create or migrate it (a mistyped URL
//! is an error, not an answer from a fresh, empty database), and `redrive` says what became of
//! each task in words, failing when any was not queued again.

mod common;

use common::{admin, text};
use uuid::Uuid;

#[tokio::test]
async fn admin_commands_neither_create_nor_migrate_a_database() {
    let (url, store) = unseat_store::testing::fresh_database().await.expect("fresh database");
    let missing = format!("unseat_t_missing_{}", Uuid::new_v4().simple());
    let base = url.rsplit_once('/').map(|(b, _)| b.to_string()).expect("a database url");
    let out = admin(&format!("{base}/{missing}"), &["failed"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("there is no database"), "{}", text(&out));
    let client = store.client().await.expect("client");
    let created: bool = client
        .query_one("select exists (select 1 from pg_database where datname = $1)", &[&missing])
        .await
        .expect("pg_database")
        .get(0);
    assert!(!created, "the command created the database");

    // A database behind this build's migrations is refused, not migrated.
    client
        .execute("delete from schema_migrations where version = (select max(version) from schema_migrations)", &[])
        .await
        .expect("roll the record back");
    let out = admin(&url, &["failed"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("run `unseat migrate` first"), "{}", text(&out));
}

#[tokio::test]
async fn redrive_says_what_became_of_each_task_and_fails_when_one_was_not_queued() {
    let (url, store) = unseat_store::testing::fresh_database().await.expect("fresh database");
    let tenant = store.create_tenant("Acme", "scim_redrive_cli", "adm_redrive_cli").await.expect("tenant").id;
    let nobody = Uuid::new_v4();
    let out = admin(&url, &["redrive", "--tenant", &tenant.to_string(), "--task", &nobody.to_string()]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("{nobody}: not re-driven: tenant {tenant} has no such task")), "{said}");
    assert!(said.contains("1 task(s) not re-driven"), "{said}");
    assert!(!said.contains("NoSuchTask"), "{said}");

    // Every failed task of an integration the tenant does not have (mistyped, or deleted): an
    // error, not "0 task(s) queued again".
    let out = admin(&url, &["redrive", "--tenant", &tenant.to_string(), "--integration", &nobody.to_string()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("has no integration {nobody}")), "{}", text(&out));
}
