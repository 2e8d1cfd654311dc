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

/// The notification channel a token revocation is announced on (see
/// [`Store::revoke_token`] and [`Store::listen`]).
pub const TOKENS_REVOKED: &str = "unseat_tokens_revoked";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {}", with_causes(.0))]
    Db(tokio_postgres::Error),
    #[error("database pool: {}", with_causes(.0))]
    Pool(deadpool_postgres::PoolError),
    #[error("bad database url: {0}")]
    Config(String),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

/// An error and its causes, `: `-separated: tokio-postgres says only "db error" or "error
/// connecting to server" and keeps what PostgreSQL or the socket said as the error's source,
/// which a log line or an exit message would otherwise drop.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// How tokio-postgres words the errors of a statement the caller got wrong (its error kinds
/// are not public; these are their texts).
const MISTAKES: [&str; 5] = [
    "error serializing parameter",
    "error deserializing column",
    "invalid column",
    "expected ",
    "query returned an unexpected number of rows",
];

impl StoreError {
    /// True when the database could not be reached (as opposed to a query it rejected): the
    /// caller should answer 503 and let the client retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Db(e) => match e.as_db_error() {
                // A statement this code got wrong (a parameter or column of the wrong type, a
                // row count it did not expect) fails on a live connection: not the database's
                // absence, and no retry would help.
                None => !MISTAKES.iter().any(|m| e.to_string().starts_with(m)),
                // 08: connection exception, 53: insufficient resources, 57: operator
                // intervention (a terminated backend, a server shutting down).
                Some(db) => e.is_closed() || ["08", "53", "57"].iter().any(|class| db.code().code().starts_with(class)),
            },
            _ => false,
        }
    }

    /// True when a connection was lost or could not be made (not for a query that failed on a
    /// live connection, such as a statement timeout or a conversion error).
    fn is_connection_lost(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Db(e) => {
                let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
                let code = e.as_db_error().map(|db| db.code().code());
                // 08: connection exception; 57P01-03: terminated by the administrator, a crash,
                // or a server that cannot take connections yet.
                e.is_closed()
                    || io
                    || code.is_some_and(|c| c.starts_with("08") || ["57P01", "57P02", "57P03"].contains(&c))
            }
            _ => false,
        }
    }

    /// True for a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Db(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }

    /// A row named something deleted meanwhile (an integration deleted while a change to its
    /// users was being resolved): resolving again finds it gone.
    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(self, StoreError::Db(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Db(e).noted()
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(e).noted()
    }
}

impl StoreError {
    /// Remembers when the database was last found unreachable, so that connections opened
    /// before then are not handed out again (see [`Store::client`]).
    fn noted(self) -> Self {
        if self.is_connection_lost() {
            connection_failures::note();
        }
        self
    }
}

/// When a connection to the database last failed. A terminated backend or a restarted server
/// takes every connection of its time with it, but a pooled connection only learns that its
/// server is gone when its socket is next read, which may be after the pool hands it out
/// again: the first request after an outage would fail on a connection that died during it.
/// So a connection opened before the last failure is closed and replaced instead of being
/// reused. One failure costs every pool in the process one reconnect per connection.
mod connection_failures {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::LazyLock;
    use std::time::Instant;

    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    /// Nanoseconds from START to the last failure, plus one; 0 for none yet.
    static LAST: AtomicU64 = AtomicU64::new(0);

    pub(crate) fn note() {
        LAST.fetch_max(since_start(Instant::now()), Ordering::Relaxed);
    }

    /// True when a connection opened at `created` may have died in a failure since.
    pub(crate) fn predates_last(created: Instant) -> bool {
        match LAST.load(Ordering::Relaxed) {
            0 => false,
            last => since_start(created) <= last,
        }
    }

    /// Nanoseconds from START plus one (an instant before START counts as START).
    fn since_start(at: Instant) -> u64 {
        at.saturating_duration_since(*START).as_nanos() as u64 + 1
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The `application_name` of the sessions of a [`Store::generic_plans`] pool.
pub const GENERIC_PLANS_APP: &str = "unseat-generic-plans";

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
        Self::with_config(config, max_size)
    }

    fn with_config(config: tokio_postgres::Config, max_size: usize) -> Result<Self> {
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

    /// A pool of its own, of at most `max_size` connections to the same database: for checks
    /// that must say whether PostgreSQL answers, not wait behind this pool's busy connections
    /// (a lock pile-up can hold every one of them).
    pub fn separate_pool(&self, max_size: usize) -> Result<Self> {
        Self::with_config((*self.config).clone(), max_size)
    }

    /// A second pool of at most `max_size` connections to the same database whose sessions
    /// always use a prepared statement's generic plan, for statements over parameter arrays
    /// (the ingest's group-commit writes). PostgreSQL estimates an array of any length at ten
    /// rows, so the generic plan looks dearer than a plan made for the one or few elements
    /// actually sent and the server plans such a statement anew on every call (measured: a
    /// tenth of a millisecond or more of a one-user deactivation). Any `options` the URL
    /// gives are kept. Its sessions show in `pg_stat_activity` as [`GENERIC_PLANS_APP`] (after
    /// the URL's own `application_name`, when it gives one).
    pub fn generic_plans(&self, max_size: usize) -> Result<Self> {
        let mut config = (*self.config).clone();
        let name = match config.get_application_name() {
            Some(given) if !given.is_empty() => format!("{given} {GENERIC_PLANS_APP}"),
            _ => GENERIC_PLANS_APP.to_string(),
        };
        config.application_name(&name);
        let options = match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} -c plan_cache_mode=force_generic_plan"),
            _ => "-c plan_cache_mode=force_generic_plan".to_string(),
        };
        config.options(&options);
        Self::with_config(config, max_size)
    }

    /// A connection of its own, outside the pool, for a long-lived user that must never wait
    /// behind the pool's other users (the connectors' shared rate-limit schedule, asked while
    /// each attempt holds a pooled connection; the ingest's SCIM rate leases).
    pub async fn dedicated_client(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) = self.connect_own().await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "dedicated database connection closed");
            }
        });
        Ok(client)
    }

    /// A new connection outside the pool (the caller drives it), given 5 s to connect.
    async fn connect_own(
        &self,
    ) -> Result<(
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    )> {
        let mut config = (*self.config).clone();
        config.connect_timeout(std::time::Duration::from_secs(5));
        Ok(config.connect(NoTls).await?)
    }

    /// A connection of its own that listens on `channel`: the receiver gets one `()` per
    /// notification and ends when the connection does.
    pub async fn listen(
        &self,
        channel: &str,
    ) -> Result<(tokio_postgres::Client, tokio::sync::mpsc::UnboundedReceiver<()>)> {
        let (client, mut connection) = self.connect_own().await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                        if tx.send(()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, "listening database connection closed");
                        break;
                    }
                }
            }
        });
        client.batch_execute(&format!("listen \"{}\"", channel.replace('"', "\"\""))).await?;
        Ok((client, rx))
    }

    /// A pooled connection, never one opened before the database last failed (see
    /// [`connection_failures`]).
    pub async fn client(&self) -> Result<Client> {
        loop {
            if let Some(client) = Self::fresh(self.pool.get().await?) {
                return Ok(client);
            }
        }
    }

    /// The connection, unless it was opened before the last failure: then it is taken out of
    /// the pool and closed.
    fn fresh(client: Client) -> Option<Client> {
        if connection_failures::predates_last(deadpool_postgres::Object::metrics(&client).created) {
            drop(deadpool_postgres::Object::take(client));
            return None;
        }
        Some(client)
    }

    /// A connection if the pool can give one without waiting, for work that goes faster with a
    /// second connection but must not hold one while waiting for another (two such callers
    /// could each hold the pool's last connections and wait for each other).
    pub async fn spare_client(&self) -> Option<Client> {
        let timeouts = deadpool_postgres::Timeouts { wait: Some(std::time::Duration::ZERO), ..self.pool.timeouts() };
        loop {
            if let Some(client) = Self::fresh(self.pool.timeout_get(&timeouts).await.ok()?) {
                return Some(client);
            }
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn backend(client: &Client) -> i32 {
        client.query_one("select pg_backend_pid()", &[]).await.unwrap().get(0)
    }

    /// A log line or exit message names what PostgreSQL or the socket said, not only
    /// tokio-postgres's "db error".
    #[tokio::test]
    async fn database_errors_say_what_the_database_said() {
        let (_, store) = testing::fresh_database().await.unwrap();
        let client = store.client().await.unwrap();
        let failed = client.query_one("select 1 / 0", &[]).await.unwrap_err();
        let text = StoreError::from(failed).to_string();
        assert!(text.starts_with("database: db error: ") && text.contains("division by zero"), "{text}");
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(1).user("postgres");
        let refused = config.connect(NoTls).await.err().expect("nothing listens on port 1");
        let text = StoreError::from(refused).to_string();
        assert!(text.starts_with("database: error connecting to server: ") && text.len() > 40, "{text}");
    }

    /// A statement the code got wrong is a fault to fix (500), not an outage to wait out (503).
    #[tokio::test]
    async fn a_mistaken_statement_is_not_the_database_being_unavailable() {
        let (_, store) = testing::fresh_database().await.unwrap();
        let client = store.client().await.unwrap();
        let wrong_parameter = client.query_one("select $1::text", &[&uuid::Uuid::new_v4()]).await.unwrap_err();
        let wrong_column = client.query_one("select 1::int4", &[]).await.unwrap().try_get::<_, String>(0).unwrap_err();
        let no_row = client.query_one("select 1 where false", &[]).await.unwrap_err();
        for error in [wrong_parameter, wrong_column, no_row] {
            let error = StoreError::from(error);
            assert!(!error.is_unavailable(), "{error}");
        }
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(1).user("postgres");
        let refused = StoreError::from(config.connect(NoTls).await.err().expect("nothing listens on port 1"));
        assert!(refused.is_unavailable(), "{refused}");
    }

    #[tokio::test]
    async fn after_a_connection_fails_no_connection_opened_before_it_is_handed_out() {
        let (_, store) = testing::fresh_database().await.unwrap();
        let (failing, idle) = (store.client().await.unwrap(), store.client().await.unwrap());
        let idle_backend = backend(&idle).await;
        drop(idle);
        let error = failing
            .batch_execute("select pg_terminate_backend(pg_backend_pid())")
            .await
            .map_err(StoreError::from)
            .unwrap_err();
        assert!(error.is_unavailable(), "{error}");
        drop(failing);

        // The idle connection's backend is alive, but it dates from before the failure.
        let (a, b) = (store.client().await.unwrap(), store.client().await.unwrap());
        let now = [backend(&a).await, backend(&b).await];
        assert!(!now.contains(&idle_backend), "{now:?} reuses {idle_backend}");
        let spare = store.spare_client().await.expect("a third connection is free");
        assert!(!now.contains(&backend(&spare).await));
    }

    async fn setting(client: &Client, name: &str) -> String {
        client.query_one("select current_setting($1)", &[&name]).await.unwrap().get(0)
    }

    #[tokio::test]
    async fn the_generic_plan_pool_plans_once_and_keeps_the_urls_options() {
        let (url, _) = testing::fresh_database().await.unwrap();
        let store = Store::connect(&format!("{url}?options=-c%20statement_timeout%3D4321"), 2).unwrap();
        let generic = store.generic_plans(1).unwrap();
        let (plain, forced) = (store.client().await.unwrap(), generic.client().await.unwrap());
        assert_eq!(setting(&plain, "plan_cache_mode").await, "auto");
        assert_eq!(setting(&forced, "plan_cache_mode").await, "force_generic_plan");
        assert_eq!(setting(&forced, "statement_timeout").await, "4321ms");
        assert_eq!(setting(&forced, "application_name").await, GENERIC_PLANS_APP);
        assert_eq!(setting(&plain, "application_name").await, "");

        // What it is for: a statement over a parameter array is planned once, not per call.
        let stmt = forced.prepare("select count(*) from unnest($1::uuid[]) as i(id)").await.unwrap();
        for _ in 0..6 {
            forced.query_one(&stmt, &[&vec![uuid::Uuid::new_v4()]]).await.unwrap();
        }
        let (generic_plans, custom_plans): (i64, i64) = {
            let row = forced
                .query_one(
                    "select generic_plans, custom_plans from pg_prepared_statements
                      where statement like 'select count(*) from unnest%'",
                    &[],
                )
                .await
                .unwrap();
            (row.get(0), row.get(1))
        };
        assert_eq!((generic_plans, custom_plans), (6, 0));
    }
}
