//! Metrics, health and shutdown shared by every unseat role.
//!
//! One [`Metrics`] registry per process (all roles in `unseat all` share it), served as
//! Prometheus text at `/metrics` next to `/healthz` by [`ops_router`]. Metric names follow
//! `unseat_<thing>_<unit>[_total]`; label values are bounded (app kinds, outcomes, status
//! classes), never a user or tenant id.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
pub use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScimLabels {
    pub method: String,
    /// `Users`, `Groups` or `other`.
    pub resource: String,
    /// The status class: `2xx`, `3xx`, `4xx`, `5xx`, except `429` (the tenant's rate limit) on
    /// its own.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterLabels {
    /// `Users` or `Groups`.
    pub resource: String,
    /// How the filter's candidates were read: `lookup` or `scan`.
    pub read: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `activations` or `member_removals`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppResultLabels {
    pub app: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `busy` or `idle`.
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    /// `ingest`, `console`, `resolver` or `connector`.
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Role {
    Ingest,
    Resolver,
    Connector,
    Console,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// 1, 2, 4 … 256: a group-commit write holds at most 256 changes.
fn batch_sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 9))
}

/// 1, 2, 4 … 4,096: tenants whose SCIM rate buckets one lease statement took tokens from.
fn lease_sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// Every metric unseat exports. Cheap to clone through `Arc`.
pub struct Metrics {
    registry: Registry,
    pub scim_requests: Family<ScimLabels, Counter>,
    pub scim_request_duration: Family<ScimLabels, Histogram, fn() -> Histogram>,
    /// Changes per group-commit write of the ingest, by kind.
    pub scim_group_commit_changes: Family<KindLabels, Histogram, fn() -> Histogram>,
    /// Filtered lists and searches, by how their candidates were read.
    pub scim_filter_reads: Family<FilterLabels, Counter>,
    /// Tenants per lease statement of the shared SCIM rate limit (its count: the statements).
    pub scim_rate_lease_tenants: Histogram,
    /// Leases that failed or timed out (the process then limited on its own for a second).
    pub scim_rate_lease_failures: Counter,
    pub outbox_published: Counter,
    /// Packed messages among them (each carrying several directory changes).
    pub outbox_packs: Counter,
    pub outbox_publish_errors: Counter,
    pub outbox_pending: Gauge,
    pub outbox_oldest_pending_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub resolver_decisions: Family<OutcomeLabels, Counter>,
    pub resolver_messages: Family<OutcomeLabels, Counter>,
    pub connector_attempts: Family<AppResultLabels, Counter>,
    pub connector_tasks: Family<AppResultLabels, Counter>,
    pub connector_task_duration: Family<AppLabels, Histogram, fn() -> Histogram>,
    pub connector_retry_wait: Family<AppLabels, Counter<f64>>,
    /// Integrations whose tasks a connector pool holds back, their app having failed every
    /// recent attempt (one task at a time tries it).
    pub connector_integrations_held_back: Family<AppLabels, Gauge>,
    pub console_requests: Family<OutcomeLabels, Counter>,
    /// 1 when the process's last check (every 5 s) reached PostgreSQL, 0 when it did not.
    pub database_up: Gauge,
    /// The process's connections to PostgreSQL (its main pool), busy or idle, as last checked.
    pub database_pool_connections: Family<StateLabels, Gauge>,
    /// Callers waiting for a connection of the main pool, as last checked.
    pub database_pool_waiting: Gauge,
    /// 1 for each role the process runs: what an alert on a role gone altogether looks for,
    /// whatever the scrape configuration names the targets.
    pub role_running: Family<RoleLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("unseat");
        let m = Self {
            scim_requests: Family::default(),
            scim_request_duration: Family::new_with_constructor(latency),
            scim_group_commit_changes: Family::new_with_constructor(batch_sizes),
            scim_filter_reads: Family::default(),
            scim_rate_lease_tenants: lease_sizes(),
            scim_rate_lease_failures: Counter::default(),
            outbox_published: Counter::default(),
            outbox_packs: Counter::default(),
            outbox_publish_errors: Counter::default(),
            outbox_pending: Gauge::default(),
            outbox_oldest_pending_seconds: Gauge::default(),
            resolver_decisions: Family::default(),
            resolver_messages: Family::default(),
            connector_attempts: Family::default(),
            connector_tasks: Family::default(),
            connector_task_duration: Family::new_with_constructor(latency),
            connector_retry_wait: Family::default(),
            connector_integrations_held_back: Family::default(),
            console_requests: Family::default(),
            database_up: Gauge::default(),
            database_pool_connections: Family::default(),
            database_pool_waiting: Gauge::default(),
            role_running: Family::default(),
            registry: Registry::default(),
        };
        registry.register("scim_requests", "SCIM requests answered", m.scim_requests.clone());
        registry.register("scim_request_duration_seconds", "SCIM request latency", m.scim_request_duration.clone());
        registry.register(
            "scim_group_commit_changes",
            "Changes the ingest wrote per group-commit statement (concurrent requests written together), by kind",
            m.scim_group_commit_changes.clone(),
        );
        registry.register(
            "scim_filter_reads",
            "SCIM filters evaluated (filtered lists, /.search) by how their candidates were read: lookup (terms of \
             the filter looked up, only what they find) or scan (the directory in creation order, up to 20,000 rows, \
             else tooMany)",
            m.scim_filter_reads.clone(),
        );
        registry.register(
            "scim_rate_lease_tenants",
            "Tenants whose shared SCIM rate buckets one lease statement took request tokens from (its count is the \
             lease statements; requests that find leased tokens in the process send none)",
            m.scim_rate_lease_tenants.clone(),
        );
        registry.register(
            "scim_rate_lease_failures",
            "Leases from the shared SCIM rate buckets that failed or took over 250 ms; the process then limits \
             each tenant on its own for a second",
            m.scim_rate_lease_failures.clone(),
        );
        registry.register(
            "outbox_published",
            "Outbox messages confirmed by the broker (each directory change counts once, packed or not)",
            m.outbox_published.clone(),
        );
        registry.register(
            "outbox_packs",
            "Packed AMQP messages the relay published, each carrying several directory changes",
            m.outbox_packs.clone(),
        );
        registry.register(
            "outbox_publish_errors",
            "Outbox publishes that failed and will be retried",
            m.outbox_publish_errors.clone(),
        );
        registry.register(
            "outbox_pending",
            "Outbox messages not yet confirmed, as last seen by the relay",
            m.outbox_pending.clone(),
        );
        registry.register(
            "outbox_oldest_pending_seconds",
            "How long the oldest outbox message not yet confirmed has waited, as last seen by the relay",
            m.outbox_oldest_pending_seconds.clone(),
        );
        registry.register(
            "resolver_decisions",
            "Resolver decisions per (user, integration) by outcome",
            m.resolver_decisions.clone(),
        );
        registry.register(
            "resolver_messages",
            "Directory changes handled by the resolver by result, per delivery (each change of a packed message counts; a requeued message counts again when it comes back)",
            m.resolver_messages.clone(),
        );
        registry.register(
            "connector_attempts",
            "App API attempts by app kind and result",
            m.connector_attempts.clone(),
        );
        registry.register(
            "connector_tasks",
            "Connector tasks finished by app kind and final status",
            m.connector_tasks.clone(),
        );
        registry.register(
            "connector_task_duration_seconds",
            "Time from task start to its final status",
            m.connector_task_duration.clone(),
        );
        registry.register(
            "connector_retry_wait_seconds",
            "Time connector tasks spent waiting between attempts",
            m.connector_retry_wait.clone(),
        );
        registry.register(
            "connector_integrations_held_back",
            "Integrations whose tasks the pool holds back because their app failed every recent attempt (a \
             timeout, a refused connection, a server error): one task at a time tries the app until it answers",
            m.connector_integrations_held_back.clone(),
        );
        registry.register("console_requests", "Admin API requests by result", m.console_requests.clone());
        registry.register(
            "database_up",
            "1 when the process's last check (every 5 s, on a connection of its own) reached PostgreSQL within 2 s, else 0",
            m.database_up.clone(),
        );
        registry.register(
            "database_pool_connections",
            "The process's pooled connections to PostgreSQL by state (busy, idle), as last checked (every 5 s)",
            m.database_pool_connections.clone(),
        );
        registry.register(
            "database_pool_waiting",
            "Callers waiting for a pooled PostgreSQL connection (all busy), as last checked (every 5 s)",
            m.database_pool_waiting.clone(),
        );
        registry.register(
            "role_running",
            "1 for each role (ingest, console, resolver, connector) this process runs",
            m.role_running.clone(),
        );
        // Born at zero, so a dashboard shows them before the first check.
        for state in ["busy", "idle"] {
            drop(m.database_pool_connections.get_or_create(&StateLabels { state: state.into() }));
        }
        Self { registry, ..m }
    }

    /// The value of one series as `/metrics` shows it, named with its labels exactly as
    /// exposed (`unseat_x_count{kind="y"}`); `None` when it has not been exposed yet.
    pub fn sample(&self, series: &str) -> Option<f64> {
        self.encode().lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// `/metrics` and `/healthz`, merged into every role's HTTP server.
pub fn ops_router(metrics: Arc<Metrics>) -> Router {
    metrics_router(metrics).merge(liveness())
}

/// `/metrics` alone, for a server of its own.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new().route("/metrics", get(serve_metrics)).with_state(metrics)
}

/// `GET /healthz`: 200 whenever the process runs.
pub fn liveness() -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" }))
}

/// `GET /readyz`: 200 `ready` while `check` passes, else 503 with its reason, for a load
/// balancer or orchestrator to route around a process that cannot work. `/healthz` stays the
/// liveness check: it answers whenever the process runs.
pub fn readiness<F, Fut>(check: F) -> Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    Router::new().route(
        "/readyz",
        get(move || {
            let check = check.clone();
            async move {
                match check().await {
                    Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                }
            }
        }),
    )
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        metrics.encode(),
    )
}

/// Cancels `token` on SIGINT or SIGTERM: every role stops taking work when it fires.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received; shutting down"),
            _ = term => tracing::info!("SIGTERM received; shutting down"),
        }
        token.cancel();
    });
}

/// Serves `router` on `listener` until `shutdown` fires, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Answers go out as soon as they are written, not held back to coalesce with more.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
        }
    });
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_read_by_its_whole_series_name() {
        let m = Metrics::new();
        m.outbox_published.inc_by(3);
        let kind = KindLabels { kind: "activations".into() };
        m.scim_group_commit_changes.get_or_create(&kind).observe(5.0);
        m.scim_group_commit_changes.get_or_create(&kind).observe(2.0);
        assert_eq!(m.sample("unseat_outbox_published_total"), Some(3.0));
        assert_eq!(m.sample(r#"unseat_scim_group_commit_changes_sum{kind="activations"}"#), Some(7.0));
        assert_eq!(m.sample(r#"unseat_scim_group_commit_changes_count{kind="activations"}"#), Some(2.0));
        assert_eq!(m.sample("unseat_outbox_published"), None, "a prefix of a series is not the series");
        assert_eq!(m.sample(r#"unseat_scim_group_commit_changes_sum{kind="member_removals"}"#), None);
    }
}
