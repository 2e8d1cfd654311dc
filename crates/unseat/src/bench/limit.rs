//! `unseat bench rate-limit`: what the fleet-wide SCIM rate limit costs when many tenants are
//! active at once. Two ingest processes run on one database: one without a limit, one with the
//! shared limit at its defaults (far above what any tenant here sends, so nothing is refused).
//! Both are given the same deactivations, spread round-robin over 1, 100 and 2,000 tenants (each
//! with its own token), at several concurrencies. Before each measurement every tenant's token
//! is read once (the token cache is warm, as it is for a tenant that keeps sending) and the
//! process's leases are left to lapse, so each tenant's first request in the measurement asks
//! the shared bucket again, as a quiet tenant's request does. It prints; it asserts nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::load::{self, Answer, Figures, Prepared};
use super::scim::deactivated;
use crate::Settings;
use unseat_telemetry::Metrics;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Requests per measurement.
    #[arg(long, default_value_t = 4000)]
    pub requests: usize,
    /// How many tenants the requests of a measurement are spread over.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 100, 2000])]
    pub tenants: Vec<usize>,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    pub concurrency: Vec<usize>,
    /// Database the benchmark creates (and empties) for itself.
    #[arg(long, default_value = "unseat_bench_rate_limit")]
    pub database: String,
}

/// One ingest process under measurement.
struct Ingest {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
}

pub async fn run(settings: Settings, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.tenants.iter().all(|&t| t > 0), "--tenants: each level needs at least one tenant");
    let database_url = super::fresh_database(&settings.database_url, &args.database).await?;
    unseat_store::migrate::migrate(&database_url).await.context("migrating the bench's database")?;
    let store = unseat_store::Store::connect(&database_url, settings.pool_size)?;
    let shutdown = CancellationToken::new();
    let defaults = unseat_ingest::IngestConfig::default();
    let start = |rate_limit: u32| {
        let config = unseat_ingest::IngestConfig {
            rate_limit,
            // Tokens stay cached through the run: the bench measures the limit, not token reads.
            token_cache: Duration::from_secs(3600),
            ..defaults.clone()
        };
        serve(store.clone(), config, shutdown.clone())
    };
    let unlimited = start(0).await?;
    let limited = start(defaults.rate_limit).await?;

    let most = args.tenants.iter().copied().max().unwrap_or(1);
    let measurements = args.tenants.len() * args.concurrency.len() * 2;
    println!("seeding {most} tenants and {} users with SQL ...", measurements * args.requests);
    let tokens = seed_tenants(&store, most).await?;

    let mut rows = Vec::new();
    for &tenants in &args.tenants {
        for &clients in &args.concurrency {
            let mut pair = Vec::new();
            for ingest in [&unlimited, &limited] {
                let users = seed_users(&store, &tokens[..tenants], args.requests).await?;
                warm(ingest, clients, &tokens[..tenants], &users).await?;
                let before = leases(&ingest.metrics);
                let figures = load::run(ingest.addr, clients, deactivations(ingest.addr, &tokens[..tenants], &users))
                    .await
                    .with_context(|| format!("deactivations over {tenants} tenants from {clients} clients"))?;
                let (statements, tenants) = leases(&ingest.metrics);
                pair.push((figures, (statements - before.0, tenants - before.1)));
            }
            let (limited, leased) = pair.pop().context("a measurement")?;
            let (unlimited, _) = pair.pop().context("a measurement")?;
            rows.push(Row { tenants, clients, unlimited, limited, leased });
        }
    }
    shutdown.cancel();

    println!();
    println!(
        "machine: {} cores; PostgreSQL on localhost; two ingest processes' HTTP servers in this process, \
         no relay (the outbox keeps what was accepted)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "{} deactivations per measurement, round-robin over the tenants; shared limit {} requests/s per tenant, \
         burst {} (nothing here is refused); every tenant's leases lapsed before each measurement",
        args.requests, defaults.rate_limit, defaults.rate_burst
    );
    println!();
    println!(
        "{:>7} | {:>7} | {:>25} | {:>25} | {:>8} | {:>19}",
        "tenants",
        "clients",
        "no limit: deact/s p50/p99",
        "shared limit: /s p50/p99",
        "limit/no",
        "lease stmts/tenants"
    );
    for r in &rows {
        let (u, l) = (&r.unlimited, &r.limited);
        println!(
            "{:>7} | {:>7} | {:>7.0} {:>8.1?} {:>8.1?} | {:>7.0} {:>8.1?} {:>8.1?} | {:>8.2} | {:>9.0} / {:>7.0}",
            r.tenants,
            r.clients,
            u.rate,
            u.p50,
            u.p99,
            l.rate,
            l.p50,
            l.p99,
            l.rate / u.rate,
            r.leased.0,
            r.leased.1
        );
    }
    Ok(())
}

struct Row {
    tenants: usize,
    clients: usize,
    unlimited: Figures,
    limited: Figures,
    /// Lease statements the limited process sent during its measurement, and the tenants'
    /// leases they carried.
    leased: (f64, f64),
}

/// Starts an ingest's HTTP server on a free port of localhost.
async fn serve(
    store: unseat_store::Store,
    config: unseat_ingest::IngestConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<Ingest> {
    let metrics = Arc::new(Metrics::new());
    // Nothing consumes the exchange here: the outbox keeps the changes.
    let state = unseat_ingest::IngestState::new(store, metrics.clone(), "unseat-bench.directory".into(), config);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let router = unseat_ingest::router(state);
    tokio::spawn(async move {
        if let Err(error) = unseat_telemetry::serve(listener, router, shutdown).await {
            tracing::error!(%error, "bench ingest's HTTP server failed");
        }
    });
    Ok(Ingest { addr, metrics })
}

/// Lease statements the process sent so far, and the tenants' leases they carried.
fn leases(metrics: &Metrics) -> (f64, f64) {
    let series = |part: &str| metrics.sample(&format!("unseat_scim_rate_lease_tenants_{part}")).unwrap_or(0.0);
    (series("count"), series("sum"))
}

/// One GET per tenant (its first user): its token is then cached. The leases those requests
/// took lapse before the measurement starts.
async fn warm(ingest: &Ingest, clients: usize, tokens: &[(Uuid, String)], users: &[Uuid]) -> anyhow::Result<()> {
    let gets = tokens
        .iter()
        .zip(users)
        .map(|((_, token), user)| {
            Prepared::new("GET", ingest.addr, &format!("/scim/v2/Users/{user}"), token, None, found)
        })
        .collect();
    load::run(ingest.addr, clients, gets).await.context("reading each tenant's first user")?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Ok(())
}

/// Okta's deactivation of each user, with the token of the tenant that holds it (user `i`
/// belongs to tenant `i % tenants`).
fn deactivations(addr: SocketAddr, tokens: &[(Uuid, String)], users: &[Uuid]) -> Vec<Prepared> {
    let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}"#;
    users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let token = &tokens[i % tokens.len()].1;
            Prepared::new("PATCH", addr, &format!("/scim/v2/Users/{u}"), token, Some(body), deactivated)
        })
        .collect()
}

fn found(a: &Answer) -> anyhow::Result<()> {
    anyhow::ensure!(a.status == 200, "a user's GET answered {}: {}", a.status, String::from_utf8_lossy(&a.body));
    Ok(())
}

/// `n` tenants, each with a workspace SCIM token; returns their ids and tokens.
async fn seed_tenants(store: &unseat_store::Store, n: usize) -> anyhow::Result<Vec<(Uuid, String)>> {
    let tenants: Vec<(Uuid, String)> =
        (0..n).map(|_| (Uuid::new_v4(), unseat_store::tokens::generate("scim"))).collect();
    let ids: Vec<Uuid> = tenants.iter().map(|(id, _)| *id).collect();
    let hashes: Vec<Vec<u8>> = tenants.iter().map(|(_, token)| unseat_store::tokens::hash(token)).collect();
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    tx.execute("insert into tenants (id, name) select id, 'Bench ' || id from unnest($1::uuid[]) id", &[&ids]).await?;
    tx.execute(
        "insert into tokens (hash, tenant_id, kind, label)
         select h, t, 'scim', 'workspace directory' from unnest($1::bytea[], $2::uuid[]) as x(h, t)",
        &[&hashes, &ids],
    )
    .await?;
    tx.commit().await?;
    Ok(tenants)
}

/// `n` active users, user `i` in tenant `i % tenants.len()`; returns them in that order.
async fn seed_users(store: &unseat_store::Store, tenants: &[(Uuid, String)], n: usize) -> anyhow::Result<Vec<Uuid>> {
    let owners: Vec<Uuid> = (0..n).map(|i| tenants[i % tenants.len()].0).collect();
    let users: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let client = store.client().await?;
    client
        .execute(
            "insert into scim_users (tenant_id, id, user_name, user_name_key, email, resource)
             select t, u, u::text || '@bench.example', u::text || '@bench.example', u::text || '@bench.example',
                    jsonb_build_object('userName', u::text || '@bench.example', 'active', true)
               from unnest($1::uuid[], $2::uuid[]) as x(t, u)",
            &[&owners, &users],
        )
        .await?;
    client.batch_execute("analyze scim_users").await?;
    Ok(users)
}
