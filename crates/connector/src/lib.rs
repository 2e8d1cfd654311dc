//! unseat's connectors: workers that make an app agree with the desired access the resolver
//! recorded, one (integration, user) at a time.
//!
//! The resolver (`unseat-resolver`) stores the desired state with a version in `access_state`
//! and publishes a [`ConnectorTask`](unseat_bus::messages::ConnectorTask) routed by app kind.
//! [`run`] starts a worker pool per app kind that consumes that kind's queue (`unseat-bus`)
//! and, for each task, locks the (integration, user) row in the store (`unseat-store`'s
//! `apply` module), skips tasks that a newer version superseded or that were already applied,
//! converges the app through its [`AppAdapter`], and records each attempt, wait and outcome in
//! the log store and the metrics (`unseat-telemetry`). Rate limits ([`limit`]), retries
//! ([`retry`]), error classification ([`error`]), delay queues and dead-lettering
//! ([`runtime`]) are shared; an adapter only speaks its app's API: [`BusinessHub`] for Meta
//! Business Manager and [`ScimApp`] for SaaS apps with a SCIM 2.0 API, both served locally by
//! `unseat-emulator`.

pub mod adapter;
pub mod breaker;
pub mod business_hub;
pub mod credentials;
pub mod dead_letters;
pub mod error;
pub mod http;
pub mod limit;
pub mod public;
pub mod retry;
pub mod runtime;
pub mod scim;

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use unseat_store::Store;
use unseat_telemetry::Metrics;

pub use adapter::{converge, AppAccount, AppAdapter, Assets, Converged, Invitation, Outcome, Removal};
pub use business_hub::BusinessHub;
pub use error::{AppError, ErrorClass};
pub use http::AppHttp;
pub use limit::RateLimits;
pub use scim::ScimApp;

/// The app kinds this build has adapters for.
pub const APP_KINDS: &[&str] = &[business_hub::APP_KIND, scim::APP_KIND];

/// How one app kind's worker pool behaves.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// Deliveries held at once (the broker's prefetch): bounds work in flight and memory.
    pub prefetch: u16,
    /// Tasks calling the app at once; the other prefetched deliveries wait for a slot.
    pub concurrency: usize,
    /// App attempts per task (across deliveries, counted from the last re-drive) before it
    /// fails and is dead-lettered.
    pub max_attempts: u32,
    /// A task older than this (from creation or its last re-drive) fails instead of trying
    /// again.
    pub max_task_age: Duration,
    /// Cap of the first retry wait (full jitter draws below it).
    pub min_backoff: Duration,
    /// Longest backoff draw; a longer wait the app asks for still wins.
    pub max_backoff: Duration,
    /// The shortest wait after the app throttled an attempt (HTTP 429, Graph throttling
    /// codes); it doubles with each throttle in a row, up to 16 times ([`retry::throttle_wait`]).
    /// Throttled attempts do not spend `max_attempts`; `max_task_age` bounds them.
    pub throttle_wait: Duration,
    /// Waits up to this long are slept in place; longer ones park the task in a delay queue.
    pub park_after: Duration,
    /// Timeout of each HTTP request to the app.
    pub request_timeout: Duration,
    /// How long in-flight tasks may take to finish after the stop signal.
    pub grace: Duration,
    /// Requests per second per integration for business hubs, unless the integration sets
    /// `rate_limit_per_second`.
    pub business_hub_rate: f64,
    /// The same for SCIM apps.
    pub scim_rate: f64,
    /// The key `enc:v1:` credentials are decrypted with; None reads `UNSEAT_CREDENTIAL_KEY`.
    pub credential_key: Option<credentials::CredentialKey>,
    /// Call apps only at public addresses ([`public`]): for tenants not trusted with the
    /// network unseat runs in.
    pub public_only: bool,
    /// How often the dead-letter queue is swept of copies whose task needs no look any more
    /// (besides the sweep each re-drive asks for): see [`dead_letters`].
    pub dead_letter_sweep: Duration,
    /// How often a task of a paused integration looks again whether it was resumed (it waits
    /// in a delay queue meanwhile).
    pub paused_recheck: Duration,
    /// How often the pool looks for parked tasks that did not come back from their delay queue
    /// in time (a broker restart can drop one as it expires) and sends them again.
    pub lost_park_check: Duration,
    /// How long past its delay tier's ceiling a parked task may be late before it is taken as
    /// lost.
    pub lost_park_slack: Duration,
    /// Attempts of one integration failing in a row (the app did not answer, or answered with
    /// a server error) after which the pool lets one of its tasks at a time call the app and
    /// holds the others back ([`breaker`]); 0 never holds tasks back.
    pub hold_back_after: u32,
    /// How often a held-back task looks again whether the app answers (it waits in a delay
    /// queue meanwhile).
    pub held_back_recheck: Duration,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            prefetch: 16,
            concurrency: 16,
            max_attempts: 14,
            max_task_age: Duration::from_secs(24 * 3600),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(300),
            throttle_wait: Duration::from_secs(60),
            park_after: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(30),
            business_hub_rate: business_hub::DEFAULT_RATE,
            scim_rate: scim::DEFAULT_RATE,
            credential_key: None,
            public_only: false,
            dead_letter_sweep: Duration::from_secs(600),
            paused_recheck: Duration::from_secs(30),
            lost_park_check: Duration::from_secs(60),
            lost_park_slack: Duration::from_secs(60),
            hold_back_after: 5,
            held_back_recheck: Duration::from_secs(20),
        }
    }
}

/// Runs a worker pool for every app kind of `topology` that an adapter speaks (logging the
/// others), each consuming `topology.connector_queue(kind)`, until `shutdown` fires.
pub async fn run(
    store: Store,
    amqp_url: String,
    topology: unseat_bus::Topology,
    metrics: Arc<Metrics>,
    config: ConnectorConfig,
    shutdown: CancellationToken,
) {
    // One schedule per integration across every replica, kept in the store.
    let limits = Arc::new(RateLimits::shared(store.clone()));
    let mut pools = tokio::task::JoinSet::new();
    for kind in topology.app_kinds.clone() {
        let (rate, build): (f64, fn(AppHttp) -> Pool) = match kind.as_str() {
            business_hub::APP_KIND => (config.business_hub_rate, |http| Pool::BusinessHub(BusinessHub::new(http))),
            scim::APP_KIND => (config.scim_rate, |http| Pool::Scim(ScimApp::new(http))),
            other => {
                tracing::error!(app = %other, "no adapter speaks this app kind; its connector is not started");
                continue;
            }
        };
        let http = match AppHttp::with_reach(config.request_timeout, Arc::clone(&limits), rate, config.public_only) {
            Ok(http) => http,
            Err(error) => {
                tracing::error!(app = %kind, error = %error, "could not build the HTTP client; connector not started");
                continue;
            }
        };
        let (store, url, topology, metrics, config, shutdown) =
            (store.clone(), amqp_url.clone(), topology.clone(), Arc::clone(&metrics), config.clone(), shutdown.clone());
        match build(http) {
            Pool::BusinessHub(a) => {
                pools.spawn(runtime::run_with(store, url, topology, metrics, config, a, shutdown));
            }
            Pool::Scim(a) => {
                pools.spawn(runtime::run_with(store, url, topology, metrics, config, a, shutdown));
            }
        }
    }
    while pools.join_next().await.is_some() {}
}

enum Pool {
    BusinessHub(BusinessHub),
    Scim(ScimApp),
}
