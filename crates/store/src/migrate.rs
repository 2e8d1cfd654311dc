//! Embedded migrations. `unseat migrate` and every role at start-up call [`migrate`]: it
//! creates the database when missing, then applies pending migrations in one transaction under
//! an advisory lock, so several processes starting together apply each migration once.

use crate::{Result, StoreError};
use std::str::FromStr;
use tokio_postgres::NoTls;

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
    tx.batch_execute(
        "create table if not exists schema_migrations (version bigint primary key, applied_at timestamptz not null default now())",
    )
    .await?;
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        let done = tx.query_opt("select 1 from schema_migrations where version = $1", &[version]).await?;
        if done.is_none() {
            tx.batch_execute(sql).await?;
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
