//! Embedded migrations. `unseat migrate` and every role at start-up call [`migrate`]: it
//! creates the database when missing, then applies pending migrations in one transaction under
//! an advisory lock, so several processes starting together apply each migration once.

use crate::directory::email_keys;
use crate::{Result, StoreError};
use std::collections::HashSet;
use std::str::FromStr;
use tokio_postgres::{NoTls, Transaction};
use unseat_domain::text::fold;
use uuid::Uuid;

/// (version, SQL), in order. The SQL lives in `schemas/sql/`.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../schemas/sql/0001_init.sql")),
    (2, include_str!("../../../schemas/sql/0002_assets.sql")),
    (3, include_str!("../../../schemas/sql/0003_integration_directories.sql")),
    (4, include_str!("../../../schemas/sql/0004_access_batches.sql")),
    (5, include_str!("../../../schemas/sql/0005_connector_runtime.sql")),
    (6, include_str!("../../../schemas/sql/0006_log_pages.sql")),
    (7, include_str!("../../../schemas/sql/0007_shared_rate_limits.sql")),
    (8, include_str!("../../../schemas/sql/0008_resolver_throughput.sql")),
    (9, include_str!("../../../schemas/sql/0009_hot_user_updates.sql")),
    (10, include_str!("../../../schemas/sql/0010_outbox_message_index.sql")),
    (11, include_str!("../../../schemas/sql/0011_text_sources.sql")),
    (12, include_str!("../../../schemas/sql/0012_outbox_batches.sql")),
    (13, include_str!("../../../schemas/sql/0013_user_emails.sql")),
    (14, include_str!("../../../schemas/sql/0014_integration_owners.sql")),
    (15, include_str!("../../../schemas/sql/0015_token_ids.sql")),
    (16, include_str!("../../../schemas/sql/0016_shared_scim_rate.sql")),
    (17, include_str!("../../../schemas/sql/0017_unlogged_scim_rate.sql")),
    (18, include_str!("../../../schemas/sql/0018_tenant_scim_rate.sql")),
    (19, include_str!("../../../schemas/sql/0019_case_keys.sql")),
    (20, include_str!("../../../schemas/sql/0020_case_key_indexes.sql")),
    (21, include_str!("../../../schemas/sql/0021_task_email_keys.sql")),
    (22, include_str!("../../../schemas/sql/0022_task_throttled_attempts.sql")),
    (23, include_str!("../../../schemas/sql/0023_grants_of_deleted_subjects.sql")),
    (24, include_str!("../../../schemas/sql/0024_integration_pause.sql")),
    (25, include_str!("../../../schemas/sql/0025_task_paused_time.sql")),
    (26, include_str!("../../../schemas/sql/0026_access_state_address.sql")),
    (27, include_str!("../../../schemas/sql/0027_applied_email.sql")),
    (28, include_str!("../../../schemas/sql/0028_task_resend.sql")),
    (29, include_str!("../../../schemas/sql/0029_console_sessions.sql")),
    (30, include_str!("../../../schemas/sql/0030_token_expiry.sql")),
];

const LOCK_KEY: i64 = 0x756e_7365_6174; // "unseat"

/// Creates the database named in `url` if it does not exist, then applies every pending
/// migration. Returns the versions applied now.
pub async fn migrate(url: &str) -> Result<Vec<i64>> {
    create_database_if_missing(url).await?;
    let config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Config(e.to_string()))?;
    let (mut client, conn) = config.connect(NoTls).await?;
    let conn = tokio::spawn(conn);
    let tx = client.transaction().await?;
    tx.execute("select pg_advisory_xact_lock($1)", &[&LOCK_KEY]).await?;
    // Quietly: PostgreSQL's notice that the table already exists would be logged on every start.
    tx.batch_execute(
        "set local client_min_messages = warning;
         create table if not exists schema_migrations (version bigint primary key, applied_at timestamptz not null default now());
         set local client_min_messages = notice;",
    )
    .await?;
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        let done = tx.query_opt("select 1 from schema_migrations where version = $1", &[version]).await?;
        if done.is_none() {
            tx.batch_execute(sql).await?;
            if *version == 19 {
                fill_case_keys(&tx).await?;
            }
            tx.execute("insert into schema_migrations (version) values ($1)", &[version]).await?;
            applied.push(*version);
        }
    }
    tx.commit().await?;
    drop(client);
    let _ = conn.await;
    if !applied.is_empty() {
        tracing::info!(?applied, "migrations applied");
    }
    Ok(applied)
}

/// Checks, without creating or changing anything, that the database named in `url` exists and
/// holds exactly this build's migrations: what a command that only reads or touches a few rows
/// (`unseat admin …`) needs, so that a mistyped URL is an error instead of a fresh, empty
/// database, and a newer build does not migrate a fleet's database ahead of it.
pub async fn check_current(url: &str) -> Result<()> {
    let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    let config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Config(e.to_string()))?;
    let name = config.get_dbname().unwrap_or("postgres").to_string();
    let (client, conn) = config.connect(NoTls).await.map_err(|e| match e.as_db_error() {
        Some(db) if db.code() == &tokio_postgres::error::SqlState::INVALID_CATALOG_NAME => StoreError::Invalid(
            format!("there is no database {name:?} (is the database URL right? `unseat migrate` creates it)"),
        ),
        _ => StoreError::from(e),
    })?;
    let conn = tokio::spawn(conn);
    let exists: bool = client.query_one("select to_regclass('schema_migrations') is not null", &[]).await?.get(0);
    let at: i64 = if exists {
        client.query_one("select coalesce(max(version), 0) from schema_migrations", &[]).await?.get(0)
    } else {
        0
    };
    drop(client);
    let _ = conn.await;
    match at.cmp(&latest) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less if at == 0 => Err(StoreError::Invalid(format!(
            "database {name:?} holds no unseat schema (is the database URL right? `unseat migrate` sets it up)"
        ))),
        std::cmp::Ordering::Less => Err(StoreError::Invalid(format!(
            "database {name:?} is at migration {at} and this unseat needs {latest}: run `unseat migrate` first"
        ))),
        std::cmp::Ordering::Greater => Err(StoreError::Invalid(format!(
            "database {name:?} is at migration {at}, newer than this unseat ({latest}): use the unseat it was migrated by"
        ))),
    }
}

/// Rows read and written at a time by [`fill_case_keys`].
const FILL_BATCH: i32 = 5_000;

/// Migration 19's data, which only unseat can compute: every user's and group's key (its name
/// folded, [`fold`]) and every user's rows in `scim_user_emails` ([`email_keys`]). Two users of
/// one directory whose names were told apart by `lower()` but fold alike (under a `C`
/// collation, `Émile` and `émile`) cannot share a key: the first created keeps it, and each
/// later one gets a key of its own (its fold and id), with a warning, so that the upgrade
/// goes through; a lookup of that name then finds the first.
async fn fill_case_keys(tx: &Transaction<'_>) -> Result<()> {
    let users = tx
        .bind(
            "select tenant_id, scope, id, user_name, jsonb_build_object('emails', resource -> 'emails')
               from scim_users order by tenant_id, scope, created_at, id",
            &[],
        )
        .await?;
    // The keys of one directory at a time: the rows come directory by directory.
    let mut directory: Option<(Uuid, String)> = None;
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let rows = tx.query_portal(&users, FILL_BATCH).await?;
        if rows.is_empty() {
            break;
        }
        let (mut tenants, mut ids, mut keys, mut email_users, mut email_tenants, mut emails) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for r in &rows {
            let (tenant, scope, id, name): (Uuid, String, Uuid, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
            if directory.as_ref() != Some(&(tenant, scope.clone())) {
                directory = Some((tenant, scope.clone()));
                seen.clear();
            }
            let mut key = fold(&name);
            if !seen.insert(key.clone()) {
                tracing::warn!(%tenant, %scope, user = %id, user_name = %name,
                    "another user of this directory has the same userName ignoring case; this one keeps its own key \
                     (an IdP takes them for one user: `unseat admin case-duplicates` lists them)");
                key = format!("{key}\u{1}{id}");
            }
            // Of the representation, only its emails are read.
            let emails_of: serde_json::Value = r.get(4);
            for email in email_keys(&emails_of) {
                email_tenants.push(tenant);
                email_users.push(id);
                emails.push(email);
            }
            tenants.push(tenant);
            ids.push(id);
            keys.push(key);
        }
        set_keys(tx, "scim_users", "user_name_key", &tenants, &ids, &keys).await?;
        tx.execute(
            "delete from scim_user_emails e using unnest($1::uuid[], $2::uuid[]) as k(tenant_id, id)
              where e.tenant_id = k.tenant_id and e.user_id = k.id",
            &[&tenants, &ids],
        )
        .await?;
        tx.execute(
            "insert into scim_user_emails (tenant_id, user_id, email) select * from unnest($1::uuid[], $2::uuid[], $3::text[])",
            &[&email_tenants, &email_users, &emails],
        )
        .await?;
    }
    let groups = tx.bind("select tenant_id, id, display_name from scim_groups", &[]).await?;
    loop {
        let rows = tx.query_portal(&groups, FILL_BATCH).await?;
        if rows.is_empty() {
            break;
        }
        let tenants: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
        let ids: Vec<Uuid> = rows.iter().map(|r| r.get(1)).collect();
        let keys: Vec<String> = rows.iter().map(|r| fold(r.get(2))).collect();
        set_keys(tx, "scim_groups", "display_name_key", &tenants, &ids, &keys).await?;
    }
    Ok(())
}

/// Sets `column` of the rows of `table` named by `tenants` and `ids` to `keys`, in order.
async fn set_keys(
    tx: &Transaction<'_>,
    table: &str,
    column: &str,
    tenants: &[Uuid],
    ids: &[Uuid],
    keys: &[String],
) -> Result<()> {
    let sql = format!(
        "update {table} t set {column} = k.key
           from unnest($1::uuid[], $2::uuid[], $3::text[]) as k(tenant_id, id, key)
          where t.tenant_id = k.tenant_id and t.id = k.id"
    );
    tx.execute(&sql, &[&tenants, &ids, &keys]).await?;
    Ok(())
}

async fn create_database_if_missing(url: &str) -> Result<()> {
    let config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Config(e.to_string()))?;
    let name = config.get_dbname().unwrap_or("postgres").to_string();
    if name == "postgres" {
        return Ok(());
    }
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, conn) = admin.connect(NoTls).await?;
    let conn = tokio::spawn(conn);
    let exists = client.query_opt("select 1 from pg_database where datname = $1", &[&name]).await?;
    if exists.is_none() {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match client.batch_execute(&format!("create database {quoted}")).await {
            Ok(()) => tracing::info!(database = %name, "database created"),
            // Another process created it between our check and our create.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    drop(client);
    let _ = conn.await;
    Ok(())
}
