//! unseat's PostgreSQL store: migrations, the directory (SCIM users, groups, members), tenants
//! and tokens, integrations and grants, desired access state, the transactional outbox, and the
//! log store (jobs, tasks, task events) behind the Automation Log.
//!
//! Every query names its tenant (invariant 5). Functions that change state and announce it take
//! a transaction and write the outbox row in it (see [`outbox`]), so nothing is announced that
//! did not commit and nothing commits unannounced.

pub mod access;
pub mod admin;
pub mod apply;
pub mod credentials;
pub mod directory;
pub mod logs;
pub mod migrate;
pub mod outbox;
pub mod pages;
pub mod testing;
pub mod tokens;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::str::FromStr;
use tokio_postgres::NoTls;

pub use deadpool_postgres::{Object as Client, Transaction};
pub use tokio_postgres;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("bad database url: {0}")]
    Config(String),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

impl StoreError {
    /// True when the database could not be reached (as opposed to a query it rejected): the
    /// caller should answer 503 and let the client retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Db(e) => match e.as_db_error() {
                None => true,
                // 08: connection exception, 53: insufficient resources, 57: operator
                // intervention (a terminated backend, a server shutting down).
                Some(db) => e.is_closed() || ["08", "53", "57"].iter().any(|class| db.code().code().starts_with(class)),
            },
            _ => false,
        }
    }

    /// True for a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Db(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A pool of connections to unseat's database. Cloning it is cheap (every handler's state
/// holds one, and a web framework clones that state per request).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    config: std::sync::Arc<tokio_postgres::Config>,
}

impl Store {
    /// Opens a pool of at most `max_size` connections. Connections are made lazily.
    pub fn connect(url: &str, max_size: usize) -> Result<Self> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Config(e.to_string()))?;
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .wait_timeout(Some(std::time::Duration::from_secs(10)))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self { pool, config: std::sync::Arc::new(config) })
    }

    /// A connection of its own, outside the pool, for a long-lived user that must never wait
    /// behind the pool's other users (the connectors' shared rate-limit schedule, asked while
    /// each attempt holds a pooled connection).
    pub async fn dedicated_client(&self) -> Result<tokio_postgres::Client> {
        let mut config = (*self.config).clone();
        config.connect_timeout(std::time::Duration::from_secs(5));
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "dedicated database connection closed");
            }
        });
        Ok(client)
    }

    pub async fn client(&self) -> Result<Client> {
        Ok(self.pool.get().await?)
    }

    /// A connection if the pool can give one without waiting, for work that goes faster with a
    /// second connection but must not hold one while waiting for another (two such callers
    /// could each hold the pool's last connections and wait for each other).
    pub async fn spare_client(&self) -> Option<Client> {
        let timeouts = deadpool_postgres::Timeouts { wait: Some(std::time::Duration::ZERO), ..self.pool.timeouts() };
        self.pool.timeout_get(&timeouts).await.ok()
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}
