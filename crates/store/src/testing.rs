//! Test support: a fresh, migrated database per test on the local PostgreSQL, so tests run in
//! parallel without seeing each other. Used by the crates' own tests and `tests/`.
//!
//! A test's database outlives it (a failed test's state can be read afterwards); the first
//! [`fresh_database`] of each test process drops those left by runs more than
//! [`STALE_AFTER`] ago, so a machine that runs the suite every day does not fill its disk.

use crate::{migrate::migrate, Result, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::NoTls;

/// Test databases created longer ago than this are dropped; no test run lasts that long.
pub const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);

const PREFIX: &str = "unseat_t_";

/// The server tests use; `UNSEAT_TEST_DATABASE_URL` overrides it (a URL without a database
/// name, or with `postgres`).
pub fn server_url() -> String {
    std::env::var("UNSEAT_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

/// Creates and migrates a database with a unique name (carrying its creation time); returns its
/// URL and a pool.
pub async fn fresh_database() -> Result<(String, Store)> {
    static SWEPT: AtomicBool = AtomicBool::new(false);
    if !SWEPT.swap(true, Ordering::SeqCst) {
        drop_stale_databases().await;
    }
    let url = new_database_url();
    migrate(&url).await?;
    let store = Store::connect(&url, 16)?;
    Ok((url, store))
}

/// [`fresh_database`] in a database whose collation and character classes are `locale`
/// (`C`: what `lower()` and `ilike` then lower-case is ASCII only), whatever the server's
/// default.
pub async fn fresh_database_in_locale(locale: &str) -> Result<(String, Store)> {
    let url = new_database_url();
    let name = url.rsplit('/').next().unwrap_or_default().to_string();
    let admin = Store::connect(&format!("{}/postgres", server_base()), 1)?;
    let literal = format!("'{}'", locale.replace('\'', "''"));
    admin
        .client()
        .await?
        .batch_execute(&format!(
            "create database {} template template0 encoding 'UTF8' lc_collate {literal} lc_ctype {literal}",
            quoted(&name)
        ))
        .await?;
    migrate(&url).await?;
    let store = Store::connect(&url, 16)?;
    Ok((url, store))
}

/// The URL of a test database with a unique name that does not exist yet (for a test of what
/// creates it; the sweep of [`fresh_database`] drops it in time like the others).
pub fn new_database_url() -> String {
    format!("{}/{PREFIX}{}_{}", server_base(), now_secs(), uuid::Uuid::new_v4().simple())
}

/// [`server_url`] without a database name.
fn server_base() -> String {
    server_url().trim_end_matches('/').trim_end_matches("/postgres").to_string()
}

/// `name` as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Takes the database of `url` away from every client (`refuse`: no new connections, and
/// every open one ended), as an outage would, or gives it back; the server stays up for the
/// other tests.
pub async fn refuse_connections(url: &str, refuse: bool) -> Result<()> {
    let db = url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default();
    let admin = Store::connect(&format!("{}/postgres", server_base()), 1)?;
    let admin = admin.client().await?;
    admin.batch_execute(&format!("alter database {} allow_connections {}", quoted(db), !refuse)).await?;
    if refuse {
        admin
            .execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()",
                &[&db],
            )
            .await?;
    }
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// True for a test database created more than [`STALE_AFTER`] before `now` (seconds since the
/// epoch), or named before names carried their creation time.
fn stale(name: &str, now: u64) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else { return false };
    match rest.split_once('_').and_then(|(created, _)| created.parse::<u64>().ok()) {
        Some(created) => now.saturating_sub(created) > STALE_AFTER.as_secs(),
        None => true,
    }
}

/// Drops stale test databases, best effort: one still in use (a test process running longer
/// than [`STALE_AFTER`]) stays, as does everything when the server cannot be reached.
async fn drop_stale_databases() {
    let Ok((client, conn)) = tokio_postgres::connect(&format!("{}/postgres", server_base()), NoTls).await else {
        return;
    };
    let conn = tokio::spawn(conn);
    let like = format!("{}%", PREFIX.replace('_', "\\_"));
    let names: Vec<String> = match client.query("select datname from pg_database where datname like $1", &[&like]).await
    {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(_) => Vec::new(),
    };
    let now = now_secs();
    for name in names.iter().filter(|n| stale(n, now)) {
        if let Err(e) = client.batch_execute(&format!("drop database if exists {}", quoted(name))).await {
            tracing::debug!(database = %name, error = %e, "stale test database kept");
        }
    }
    drop(client);
    let _ = conn.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_test_databases_are_stale() {
        let now = 1_800_000_000;
        let hours_ago = |h: u64| format!("{PREFIX}{}_0123456789abcdef0123456789abcdef", now - h * 3600);
        assert!(!stale(&hours_ago(0), now));
        assert!(!stale(&hours_ago(5), now));
        assert!(stale(&hours_ago(7), now));
        assert!(stale("unseat_t_0123456789abcdef0123456789abcdef", now), "named before names carried a time");
        for other in ["unseat", "unseat_bench", "unseat_soak", "postgres", "unseat_t"] {
            assert!(!stale(other, now), "{other}");
        }
    }

    #[tokio::test]
    async fn a_stale_test_database_is_dropped_and_a_fresh_one_kept() {
        let (client, conn) = tokio_postgres::connect(&format!("{}/postgres", server_base()), NoTls).await.unwrap();
        tokio::spawn(conn);
        let old = format!("{PREFIX}{}_{}", now_secs() - STALE_AFTER.as_secs() - 60, uuid::Uuid::new_v4().simple());
        client.batch_execute(&format!("create database {old}")).await.unwrap();
        let (fresh, _store) = fresh_database().await.unwrap();
        let fresh = fresh.rsplit('/').next().unwrap().to_string();
        drop_stale_databases().await;
        let exists = |name: String| {
            let client = &client;
            async move {
                client.query_opt("select 1 from pg_database where datname = $1", &[&name]).await.unwrap().is_some()
            }
        };
        assert!(!exists(old).await, "the stale database is dropped");
        assert!(exists(fresh).await, "the fresh one is kept");
    }
}
