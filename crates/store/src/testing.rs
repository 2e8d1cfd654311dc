//! Test support: a fresh, migrated database per test on the local PostgreSQL, so tests run in
//! parallel without seeing each other. Used by the crates' own tests and `tests/`.

use crate::{migrate::migrate, Result, Store};

/// The server tests use; `UNSEAT_TEST_DATABASE_URL` overrides it (a URL without a database
/// name, or with `postgres`).
pub fn server_url() -> String {
    std::env::var("UNSEAT_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

/// Creates and migrates a database with a unique name; returns its URL and a pool.
pub async fn fresh_database() -> Result<(String, Store)> {
    let name = format!("unseat_t_{}", uuid::Uuid::new_v4().simple());
    let base = server_url();
    let base = base.trim_end_matches('/').trim_end_matches("/postgres");
    let url = format!("{base}/{name}");
    migrate(&url).await?;
    let store = Store::connect(&url, 16)?;
    Ok((url, store))
}
