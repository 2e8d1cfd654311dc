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

/// `--integration` re-drives every failed task of the integration: one that a later task has
/// made moot by its turn (its user's access applied since) is marked superseded and said so,
/// and is no failure of the command; a single `--task` that needed nothing still is.
#[tokio::test]
async fn redrive_of_an_integration_is_no_failure_when_a_task_needed_nothing_any_more() {
    let (url, store) = unseat_store::testing::fresh_database().await.expect("fresh database");
    let tenant = store.create_tenant("Acme", "scim_redrive_moot", "adm_redrive_moot").await.expect("tenant").id;
    let (integration, job) = (Uuid::new_v4(), Uuid::new_v4());
    let (moot_user, open_user) = (Uuid::new_v4(), Uuid::new_v4());
    let (moot_task, open_task) = (Uuid::new_v4(), Uuid::new_v4());
    let client = store.client().await.expect("client");
    client
        .batch_execute(&format!(
            "insert into integrations (tenant_id, id, name, app_kind, base_url, settings, credential, roles)
             values ('{tenant}', '{integration}', 'Hub', 'business_hub', 'http://127.0.0.1:9', '{{\"business_id\": \"1\"}}',
                     'token', '{{ADMIN,EMPLOYEE}}');
             insert into jobs (tenant_id, id, trigger_method, trigger_path, received_at)
             values ('{tenant}', '{job}', 'PATCH', '/scim/v2/Users/x', now());
             -- The first user's removal failed, and a later task has applied their access since.
             insert into access_state (tenant_id, integration_id, user_id, email, desired_role, desired_version,
                                       applied_version)
             values ('{tenant}', '{integration}', '{moot_user}', 'moot@example.com', 'EMPLOYEE', 3, 3),
                    ('{tenant}', '{integration}', '{open_user}', 'open@example.com', null, 2, 1);
             insert into tasks (tenant_id, id, job_id, integration_id, user_id, user_email, outcome, reason,
                                desired_version, status, last_error, dead_lettered)
             values ('{tenant}', '{moot_task}', '{job}', '{integration}', '{moot_user}', 'moot@example.com', 'remove',
                     'test', 2, 'failed', 'HTTP 500', true),
                    ('{tenant}', '{open_task}', '{job}', '{integration}', '{open_user}', 'open@example.com', 'remove',
                     'test', 2, 'failed', 'HTTP 500', true);"
        ))
        .await
        .expect("an integration with two failed tasks");

    let out = admin(&url, &["redrive", "--tenant", &tenant.to_string(), "--integration", &integration.to_string()]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&format!("{open_task}: queued again for desired version 2")), "{said}");
    assert!(said.contains(&format!("{moot_task}: not re-driven: a later task applied version 3")), "{said}");
    assert!(said.contains("1 task(s) queued again"), "{said}");
    assert!(said.contains("1 task(s) no longer failed by their turn"), "{said}");
    let statuses: Vec<(Uuid, String)> = client
        .query("select id, status from tasks where tenant_id = $1 order by user_email", &[&tenant])
        .await
        .expect("tasks")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(statuses, [(moot_task, "superseded".to_string()), (open_task, "queued".to_string())]);

    // The same task named on its own: the operator asked for that one, and it was not queued.
    let out = admin(&url, &["redrive", "--tenant", &tenant.to_string(), "--task", &moot_task.to_string()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("only failed tasks are, and it is superseded"), "{}", text(&out));
}
