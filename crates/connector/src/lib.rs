//! unseat's connectors: workers that make an app agree with the desired access the resolver
//! recorded, one (integration, user) at a time.
//!
//! The resolver (`unseat-resolver`) stores the desired state with a version in `access_state`
//! and publishes a [`ConnectorTask`](unseat_bus::messages::ConnectorTask) routed by app kind.
//! [`run`] consumes that app kind's queue (`unseat-bus`) and, for each task, locks the
//! (integration, user) row in the store (`unseat-store`'s `apply` module), skips tasks that a
//! newer version superseded or that were already applied, converges the app through its
//! [`AppAdapter`], and records each attempt, wait and outcome in the log store and the
//! metrics (`unseat-telemetry`). Retries, error classification, dead-lettering and logging are
//! shared ([`runtime`]); an adapter only speaks its app's API ([`BusinessHub`] for Meta
//! Business Manager, served locally by `unseat-emulator`).

pub mod adapter;
pub mod business_hub;
pub mod error;
pub mod runtime;

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use unseat_store::Store;
use unseat_telemetry::Metrics;

pub use adapter::{converge, AppAccount, AppAdapter, Converged, Removal};
pub use business_hub::BusinessHub;
pub use error::{AppError, ErrorClass};

/// How one connector worker behaves.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// The app kind whose queue this worker consumes; picks the adapter.
    pub app_kind: String,
    /// Deliveries held and worked on at once (bounds work in flight).
    pub prefetch: u16,
    /// App attempts per delivery before the task fails and is dead-lettered.
    pub max_attempts: u32,
    /// First retry wait (before jitter).
    pub min_backoff: Duration,
    /// Longest retry wait (before jitter); a longer `Retry-After` still wins.
    pub max_backoff: Duration,
    /// Timeout of each HTTP request to the app.
    pub request_timeout: Duration,
    /// How long in-flight tasks may take to finish after the stop signal.
    pub grace: Duration,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            app_kind: business_hub::APP_KIND.to_string(),
            prefetch: 16,
            max_attempts: 6,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(30),
        }
    }
}

/// Consumes `topology.connector_queue(&config.app_kind)` until `shutdown` fires, with the
/// adapter for `config.app_kind`. Returns at once (after logging an error) when no adapter
/// speaks that app kind.
pub async fn run(
    store: Store,
    amqp_url: String,
    topology: unseat_bus::Topology,
    metrics: Arc<Metrics>,
    config: ConnectorConfig,
    shutdown: CancellationToken,
) {
    match config.app_kind.as_str() {
        business_hub::APP_KIND => match BusinessHub::new(config.request_timeout) {
            Ok(adapter) => runtime::run_with(store, amqp_url, topology, metrics, config, adapter, shutdown).await,
            Err(error) => {
                tracing::error!(error = %error, "could not build the HTTP client; connector not started")
            }
        },
        other => {
            tracing::error!(app = %other, "no adapter speaks this app kind; connector not started")
        }
    }
}
