//! The `unseat` binary's logic: configuration, and starting any set of roles (ingest, console,
//! resolver, connector) in one process with one metrics registry and one stop signal. The
//! subcommands in `main.rs`, the demo, the benchmark and the end-to-end tests all start roles
//! through [`start`], so tests drive exactly what operators run.

pub mod bench;
pub mod client;
pub mod demo;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use unseat_bus::Topology;
use unseat_connector::ConnectorConfig;
use unseat_resolver::ResolverConfig;
use unseat_store::Store;
use unseat_telemetry::Metrics;

/// The app kinds this build has connectors for.
pub const APP_KINDS: &[&str] = unseat_connector::APP_KINDS;

/// Everything a process needs to start its roles.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub amqp_url: String,
    /// Prefix of every exchange and queue name (several deployments or tests on one broker).
    pub amqp_prefix: String,
    /// Address of the process's HTTP server (SCIM, admin API, /metrics, /healthz as the roles
    /// require). Port 0 picks a free port; [`Running::addr`] tells which.
    pub listen: SocketAddr,
    /// Where `/metrics` is served instead, when given: an address of its own, so that the
    /// port IdPs reach (SCIM) does not show the fleet's figures to the internet. Port 0 picks
    /// a free port; [`Running::metrics_addr`] tells which.
    pub metrics_listen: Option<SocketAddr>,
    /// The operator's admin token (may create tenants). None: only tenant admin tokens work.
    pub admin_token: Option<String>,
    /// Largest SCIM request body accepted.
    pub body_limit: usize,
    /// SCIM requests per second one tenant may make across every ingest process (0:
    /// unlimited), and the burst above that rate; over it the IdP gets 429 with `Retry-After`.
    pub scim_rate_limit: u32,
    pub scim_rate_burst: u32,
    pub pool_size: usize,
    /// How long the relay keeps a published outbox row, marked sent (zero: deleted once the
    /// broker confirmed it).
    pub outbox_keep_sent: Duration,
    /// Whether the roles that write the outbox run its relay in this process (the benchmark
    /// runs its own, to hold it while the ingest alone is measured).
    pub relay: bool,
    /// After the stop signal, HTTP goes on at least this long (with /readyz answering 503
    /// `draining`), however soon the workers are done: long enough for a load balancer to see
    /// it and stop sending requests to a process that would refuse connections.
    pub drain_delay: Duration,
    /// The key app credentials are sealed under: the console encrypts plain secrets with it
    /// and the connector decrypts them. [`Settings::new`] makes a random one for this process
    /// (roles started together, as in tests and the demo, agree on it); the binary sets
    /// `UNSEAT_CREDENTIAL_KEY`, or none.
    pub credential_key: Option<unseat_store::credentials::CredentialKey>,
    /// Without a key, store plain credentials as submitted instead of refusing them
    /// (development only).
    pub allow_plaintext_credentials: bool,
    pub resolver: ResolverConfig,
    pub connector: ConnectorConfig,
}

impl Settings {
    pub fn new(database_url: impl Into<String>, amqp_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            amqp_url: amqp_url.into(),
            amqp_prefix: "unseat".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: None,
            admin_token: None,
            body_limit: 1024 * 1024,
            scim_rate_limit: unseat_ingest::IngestConfig::default().rate_limit,
            scim_rate_burst: unseat_ingest::IngestConfig::default().rate_burst,
            pool_size: 32,
            outbox_keep_sent: Duration::ZERO,
            relay: true,
            drain_delay: Duration::ZERO,
            credential_key: Some(unseat_store::credentials::CredentialKey::generate()),
            allow_plaintext_credentials: false,
            resolver: ResolverConfig::default(),
            connector: ConnectorConfig::default(),
        }
    }

    pub fn topology(&self) -> Topology {
        Topology::new(self.amqp_prefix.clone(), APP_KINDS.iter().map(|s| s.to_string()).collect())
    }
}

/// Which roles a process runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Roles {
    pub ingest: bool,
    pub console: bool,
    pub resolver: bool,
    pub connector: bool,
}

impl Roles {
    pub const ALL: Roles = Roles { ingest: true, console: true, resolver: true, connector: true };

    /// Roles that write the outbox also run a relay for it.
    fn writes_outbox(&self) -> bool {
        self.ingest || self.console || self.resolver
    }
}

/// A started process: its HTTP address, its store and metrics, and the tasks to wait for.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` is served when [`Settings::metrics_listen`] moved it.
    pub metrics_addr: Option<SocketAddr>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub tasks: TaskTracker,
}

impl Running {
    /// Waits until every role has stopped (after the stop signal).
    pub async fn wait(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Migrates the database, declares the broker topology, binds the HTTP listener and starts the
/// chosen roles. They run until `shutdown` fires.
pub async fn start(settings: Settings, roles: Roles, shutdown: CancellationToken) -> anyhow::Result<Running> {
    migrate_when_reachable(&settings.database_url, &shutdown).await?;
    let store = Store::connect(&settings.database_url, settings.pool_size)?;
    let topology = settings.topology();
    let metrics = Arc::new(Metrics::new());
    for (role, runs) in [
        ("ingest", roles.ingest),
        ("console", roles.console),
        ("resolver", roles.resolver),
        ("connector", roles.connector),
    ] {
        if runs {
            metrics.role_running.get_or_create(&unseat_telemetry::RoleLabels { role: role.into() }).set(1);
        }
    }
    let tasks = TaskTracker::new();

    // Health checks use a connection of their own: a lock pile-up holding every pooled
    // connection makes requests slow, not PostgreSQL unreachable.
    let health = store.separate_pool(1)?;
    let ops = match settings.metrics_listen {
        // Said plainly: under the ingest's authentication a Prometheus pointed at the wrong port
        // would get the SCIM endpoint's 401.
        Some(_) => unseat_telemetry::liveness().route(
            "/metrics",
            axum::routing::get(|| async { (axum::http::StatusCode::NOT_FOUND, "not served on this port\n") }),
        ),
        None => unseat_telemetry::ops_router(metrics.clone()),
    };
    let mut router = ops.merge(readiness(health.clone(), shutdown.clone()));
    if roles.ingest {
        router = router.merge(unseat_ingest::router(unseat_ingest::IngestState::new(
            store.clone(),
            metrics.clone(),
            topology.directory_exchange(),
            unseat_ingest::IngestConfig {
                body_limit: settings.body_limit,
                rate_limit: settings.scim_rate_limit,
                rate_burst: settings.scim_rate_burst,
                ..Default::default()
            },
        )));
    }
    if roles.console {
        router = router.merge(unseat_console::router(unseat_console::ConsoleState {
            store: store.clone(),
            metrics: metrics.clone(),
            operator_token: settings.admin_token.clone(),
            directory_exchange: topology.directory_exchange(),
            credentials: unseat_store::credentials::Sealing {
                key: settings.credential_key.clone(),
                allow_plaintext: settings.allow_plaintext_credentials,
            },
        }));
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match settings.metrics_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at).await.with_context(|| format!("cannot listen for /metrics on {at}"))?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    tracing::info!(%addr, metrics = ?metrics_addr, ingest = roles.ingest, console = roles.console, resolver = roles.resolver, connector = roles.connector, "serving");
    // The workers (relay, resolvers, connectors) drain after the stop signal; HTTP goes on
    // until they have, so /readyz says "draining" (a load balancer routes around the process)
    // and /metrics is still scraped for what the drain did.
    let workers = TaskTracker::new();
    let http_stop = CancellationToken::new();
    {
        let http_stop = http_stop.clone();
        tasks.spawn(async move {
            if let Err(error) = unseat_telemetry::serve(listener, router, http_stop).await {
                tracing::error!(%error, "HTTP server failed");
            }
        });
    }
    if let Some(listener) = metrics_listener {
        let (router, http_stop) = (unseat_telemetry::ops_router(metrics.clone()), http_stop.clone());
        tasks.spawn(async move {
            if let Err(error) = unseat_telemetry::serve(listener, router, http_stop).await {
                tracing::error!(%error, "metrics HTTP server failed");
            }
        });
    }
    {
        let (shutdown, workers, drain_delay) = (shutdown.clone(), workers.clone(), settings.drain_delay);
        tasks.spawn(async move {
            shutdown.cancelled().await;
            workers.close();
            tokio::join!(workers.wait(), tokio::time::sleep(drain_delay));
            http_stop.cancel();
        });
    }
    {
        // The backlog is read whether or not the broker was ever reached: rows waiting in
        // PostgreSQL for a broker that is away or misconfigured are what the alert is for.
        let backlog = (roles.writes_outbox() && settings.relay).then(|| settings.amqp_prefix.clone());
        let watched = watch_database(store.clone(), health, metrics.clone(), backlog, shutdown.clone());
        workers.spawn(watched);
    }
    // What needs the broker starts once the exchanges and queues are declared. The HTTP side
    // does not wait: the ingest accepts changes into the outbox while RabbitMQ is away, and
    // /healthz and /metrics answer, so an outage is seen rather than a silent process.
    let start_broker_roles = {
        let (store, metrics, topology, settings, shutdown, tasks) =
            (store.clone(), metrics.clone(), topology.clone(), settings.clone(), shutdown.clone(), workers.clone());
        move || {
            if roles.writes_outbox() && settings.relay {
                tasks.spawn(unseat_relay::run(
                    store.clone(),
                    metrics.clone(),
                    relay_config(&settings),
                    shutdown.clone(),
                ));
            }
            if roles.resolver {
                tasks.spawn(unseat_resolver::run(
                    store.clone(),
                    settings.amqp_url.clone(),
                    topology.clone(),
                    metrics.clone(),
                    settings.resolver.clone(),
                    shutdown.clone(),
                ));
            }
            if roles.connector {
                let mut config = settings.connector.clone();
                config.credential_key = settings.credential_key.clone().or(config.credential_key);
                tasks.spawn(unseat_connector::run(
                    store,
                    settings.amqp_url.clone(),
                    topology,
                    metrics,
                    config,
                    shutdown,
                ));
            }
        }
    };
    // A reachable broker is declared on before `start` returns (what callers that publish or
    // consume at once expect); an unreachable one is waited for in the background.
    let first = tokio::time::timeout(Duration::from_secs(10), topology_declared(&settings.amqp_url, &topology)).await;
    match first {
        Ok(Ok(())) => start_broker_roles(),
        failed => {
            match failed {
                Ok(Err(error)) => {
                    tracing::warn!(%error, "RabbitMQ not reachable; serving HTTP, retrying in the background")
                }
                _ => tracing::warn!("RabbitMQ did not answer within 10 s; serving HTTP, retrying in the background"),
            }
            let (url, shutdown) = (settings.amqp_url.clone(), shutdown.clone());
            workers.spawn(async move {
                if declare_topology(&url, &topology, &shutdown).await {
                    start_broker_roles();
                }
            });
        }
    }
    Ok(Running { addr, metrics_addr, store, metrics, tasks })
}

/// Longest pause between two tries to reach PostgreSQL at start.
const DATABASE_WAIT_CAP: Duration = Duration::from_secs(10);

/// Migrates the database, waiting for PostgreSQL while it cannot be reached (not started yet,
/// restarting, out of connections), as a role waits for RabbitMQ: a fleet started before its
/// database, or during a failover, comes up by itself. Any other error (a refused password, a
/// migration that fails) ends the start at once, and so does the stop signal.
async fn migrate_when_reachable(database_url: &str, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let mut pause = Duration::from_secs(1);
    loop {
        let error = match unseat_store::migrate::migrate(database_url).await {
            Ok(_) => return Ok(()),
            Err(error) if error.is_unavailable() => error,
            Err(error) => {
                return Err(error)
                    .context("cannot migrate the database (is PostgreSQL running and UNSEAT_DATABASE_URL right?)")
            }
        };
        tracing::warn!(%error, retry_in_s = pause.as_secs(), "PostgreSQL not reachable; waiting for it before starting");
        tokio::select! {
            _ = shutdown.cancelled() => {
                return Err(anyhow::Error::new(error).context("stopped while waiting for PostgreSQL"));
            }
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(DATABASE_WAIT_CAP);
    }
}

/// How often a process checks PostgreSQL (and reads the outbox backlog) for its gauges.
const DATABASE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Keeps the database gauges current until `shutdown`: whether PostgreSQL answers on the
/// `health` connection within 2 s (`unseat_database_up`), the main pool's use, and, when
/// `backlog` names the process's AMQP prefix, the outbox rows waiting under it
/// (`unseat_outbox_pending`, `unseat_outbox_oldest_pending_seconds`: what an operator alerts on
/// when the relay falls behind or the broker is away, which the broker's own metrics cannot
/// show). Failed checks keep the last backlog figures.
pub async fn watch_database(
    store: Store,
    health: Store,
    metrics: Arc<Metrics>,
    backlog: Option<String>,
    shutdown: CancellationToken,
) {
    let mut was_up = true;
    loop {
        let check = async {
            match &backlog {
                Some(prefix) => {
                    let (rows, oldest) = health.pending_under(prefix).await?;
                    metrics.outbox_pending.set(rows);
                    metrics.outbox_oldest_pending_seconds.set(oldest);
                }
                None => {
                    health.client().await?.simple_query("select 1").await?;
                }
            }
            Ok::<_, unseat_store::StoreError>(())
        };
        let up = match tokio::time::timeout(Duration::from_secs(2), check).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                if was_up {
                    tracing::warn!(%error, "PostgreSQL check failed");
                }
                false
            }
            Err(_) => {
                if was_up {
                    tracing::warn!("PostgreSQL did not answer the check within 2 s");
                }
                false
            }
        };
        if up && !was_up {
            tracing::info!("PostgreSQL answers again");
        }
        was_up = up;
        metrics.database_up.set(i64::from(up));
        let pool = store.pool().status();
        let idle = pool.available as i64;
        let pooled = |state: &str| {
            metrics
                .database_pool_connections
                .get_or_create(&unseat_telemetry::StateLabels { state: state.into() })
                .clone()
        };
        pooled("busy").set(pool.size as i64 - idle);
        pooled("idle").set(idle);
        metrics.database_pool_waiting.set(pool.waiting as i64);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(DATABASE_CHECK_EVERY) => {}
        }
    }
}

/// `GET /readyz` of a process: ready while it reaches PostgreSQL (every role needs it to do any
/// work) within 2 s on its `health` connection, and not once it was told to stop (it is
/// draining its work).
fn readiness(store: Store, shutdown: CancellationToken) -> axum::Router {
    unseat_telemetry::readiness(move || {
        let (store, stopping) = (store.clone(), shutdown.is_cancelled());
        async move {
            if stopping {
                return Err("draining: stopping after SIGTERM, finishing the work in flight".to_string());
            }
            let check = async {
                let client = store.client().await?;
                client.simple_query("select 1").await?;
                Ok::<_, unseat_store::StoreError>(())
            };
            match tokio::time::timeout(Duration::from_secs(2), check).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(format!("PostgreSQL unreachable: {error}")),
                Err(_) => Err("PostgreSQL did not answer within 2 s".to_string()),
            }
        }
    })
}

/// The outbox relay of a process with these settings.
pub fn relay_config(settings: &Settings) -> unseat_relay::RelayConfig {
    unseat_relay::RelayConfig {
        amqp_url: settings.amqp_url.clone(),
        exchange_prefix: settings.amqp_prefix.clone(),
        batch: 200,
        idle: Duration::from_millis(20),
        keep_sent: settings.outbox_keep_sent,
        directory_exchange: Some(settings.topology().directory_exchange()),
    }
}

/// Declares the exchanges and queues once.
async fn topology_declared(url: &str, topology: &Topology) -> Result<(), unseat_bus::BusError> {
    let conn = unseat_bus::connect(url, "setup").await?;
    let ch = conn.create_channel().await.map_err(unseat_bus::BusError::from)?;
    topology.declare(&ch).await?;
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}

/// Declares exchanges and queues before any role publishes or consumes, retrying (waits
/// growing to 30 s) until the broker answers; false when `shutdown` came first.
async fn declare_topology(url: &str, topology: &Topology, shutdown: &CancellationToken) -> bool {
    let mut wait = Duration::from_secs(1);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(10), topology_declared(url, topology));
        match attempt.await {
            Ok(Ok(())) => {
                tracing::info!("RabbitMQ topology declared");
                return true;
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, retry_s = wait.as_secs(), "RabbitMQ not reachable (is UNSEAT_AMQP_URL right?); retrying")
            }
            Err(_) => tracing::warn!(retry_s = wait.as_secs(), "RabbitMQ did not answer within 10 s; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// Serves the app emulator on `listen` until `shutdown` fires; returns its address.
pub async fn start_emulator(
    listen: SocketAddr,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, unseat_emulator::Emulator)> {
    let emulator = unseat_emulator::Emulator::new();
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let router = unseat_emulator::router(emulator.clone());
    tasks.spawn(async move {
        if let Err(error) = unseat_telemetry::serve(listener, router, shutdown).await {
            tracing::error!(%error, "emulator server failed");
        }
    });
    Ok((addr, emulator))
}
