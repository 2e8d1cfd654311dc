//! `unseat bench scim`: how fast the SCIM ingest accepts changes durably (state and outbox
//! row committed before the 2xx), with only the ingest role and its outbox relay running:
//! deactivations/s and group member removals/s with latency p50/p99 at 1, 16 and 64
//! concurrent clients, next to this PostgreSQL's single-row commit rate measured in the same
//! run at the same concurrency. It prints; it asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::ScimClient;
use crate::{Roles, Settings};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Requests per measurement (each concurrency level, each kind).
    #[arg(long, default_value_t = 4000)]
    pub requests: usize,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    pub concurrency: Vec<usize>,
    /// Database the benchmark creates (and empties) for itself.
    #[arg(long, default_value = "unseat_bench_scim")]
    pub database: String,
}

/// One measurement: rate and latency percentiles.
struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

pub async fn run(mut settings: Settings, args: BenchArgs) -> anyhow::Result<()> {
    let base_url = settings.database_url.rsplit_once('/').map(|(b, _)| b.to_string()).context("database url")?;
    settings.database_url = format!("{base_url}/{}", args.database);
    drop_database(&base_url, &args.database).await?;
    settings.amqp_prefix = format!("unseat-bench-scim-{}", Uuid::new_v4().simple());
    // The ingest keeps its configured pool (UNSEAT_DB_POOL): more clients than connections
    // queue for one, as they would in production.
    let shutdown = CancellationToken::new();
    let roles = Roles { ingest: true, ..Default::default() };
    let running = crate::start(settings.clone(), roles, shutdown.clone()).await?;
    let store = running.store.clone();
    let token = unseat_store::tokens::generate("scim");
    let tenant = store.create_tenant("Bench", &token, &unseat_store::tokens::generate("adm")).await?.id;
    let scim = ScimClient::new(format!("http://{}/scim/v2", running.addr), &token);

    let per_level = args.requests;
    let levels = args.concurrency.len();
    println!("seeding {} users and {levels} groups of {per_level} members with SQL ...", per_level * levels);
    let (users, groups) = seed(&store, tenant, per_level, levels).await?;

    let mut rows = Vec::new();
    for (i, &c) in args.concurrency.iter().enumerate() {
        let chunk = &users[i * per_level..(i + 1) * per_level];
        let deactivations = measure(c, chunk.to_vec(), {
            let scim = scim.clone();
            move |u| {
                let scim = scim.clone();
                async move { scim.deactivate(u).await }
            }
        })
        .await?;
        let group = groups[i];
        let removals = measure(c, chunk.to_vec(), {
            let scim = scim.clone();
            move |u| {
                let scim = scim.clone();
                async move { scim.remove_member(group, u).await }
            }
        })
        .await?;
        let (commits, connections) = commit_ceiling(&settings.database_url, c, per_level).await?;
        rows.push((c, deactivations, removals, commits, connections));
    }
    // The relay publishes (and deletes) what the clients' changes wrote; how far behind it is.
    let done = Instant::now();
    let mut backlog = store.outbox_backlog().await?;
    while backlog > 0 && done.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        backlog = store.outbox_backlog().await?;
    }
    let drained = done.elapsed();
    let published = running.metrics.outbox_published.get();
    shutdown.cancel();
    running.wait().await;
    // The bench's queues hold the changes it announced (no resolver runs).
    super::delete_topology(&settings.amqp_url, &settings.topology()).await;

    println!();
    println!(
        "machine: {} cores; PostgreSQL and RabbitMQ on localhost; ingest role + outbox relay only",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "{per_level} requests per measurement; every 2xx after the state and its outbox row committed; \
         ingest pool {} connections",
        settings.pool_size
    );
    println!();
    println!(
        "{:>7} | {:>22} | {:>22} | {:>24} | {:>8}",
        "clients", "deactivations/s p50/p99", "member removals/s p50/p99", "PG 1-row commits/s p50/p99", "deact/PG"
    );
    for (c, d, r, p, _) in &rows {
        println!(
            "{c:>7} | {:>7.0} {:>6.1?} {:>6.1?} | {:>7.0} {:>6.1?} {:>6.1?} | {:>9.0} {:>6.1?} {:>6.1?} | {:>8.2}",
            d.rate,
            d.p50,
            d.p99,
            r.rate,
            r.p50,
            r.p99,
            p.rate,
            p.p50,
            p.p99,
            d.rate / p.rate
        );
    }
    for (c, _, _, _, connections) in rows.iter().filter(|(c, _, _, _, n)| n < c) {
        println!("PG ceiling at {c} clients measured over {connections} connections (the server's max_connections)");
    }
    println!();
    println!(
        "directory changes published by the relay: {published}; its backlog after the last measurement \
         drained in {drained:.1?} (left: {backlog})"
    );
    Ok(())
}

/// Runs `op` over `items` with `concurrency` clients; rate over the whole run and latencies.
async fn measure<F, Fut>(concurrency: usize, items: Vec<Uuid>, op: F) -> anyhow::Result<Figures>
where
    F: Fn(Uuid) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let n = items.len();
    let op = Arc::new(op);
    let started = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = futures_util::stream::iter(items)
        .map(|u| {
            let op = op.clone();
            async move {
                let t = Instant::now();
                op(u).await?;
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut latencies = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    latencies.sort();
    Ok(Figures { rate: n as f64 / elapsed.as_secs_f64(), p50: pct(&latencies, 50), p99: pct(&latencies, 99) })
}

/// The server's ceiling for what a SCIM change must do at least once: commit one row. `n`
/// one-row `insert` transactions (autocommit) from `concurrency` clients over as many
/// connections as the server has left (the ingest's pool holds some); returns the figures and
/// the connections used.
async fn commit_ceiling(database_url: &str, concurrency: usize, n: usize) -> anyhow::Result<(Figures, usize)> {
    let probe = unseat_store::Store::connect(database_url, 1)?;
    let free: i64 = probe
        .client()
        .await?
        .query_one(
            "select current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
                    - (select count(*) from pg_stat_activity)",
            &[],
        )
        .await?
        .get(0);
    drop(probe);
    let connections = concurrency.clamp(1, (free - 4).max(1) as usize);
    let store = unseat_store::Store::connect(database_url, connections)?;
    store
        .client()
        .await?
        .batch_execute("create table if not exists bench_commit (id bigserial primary key, at timestamptz not null default now(), body text)")
        .await?;
    let store = Arc::new(store);
    let figures = measure(concurrency, (0..n).map(|_| Uuid::new_v4()).collect(), move |u| {
        let store = store.clone();
        async move {
            let client = store.client().await?;
            let stmt = client.prepare_cached("insert into bench_commit (body) values ($1)").await?;
            client.execute(&stmt, &[&u.to_string()]).await?;
            Ok(())
        }
    })
    .await?;
    Ok((figures, connections))
}

/// `users_per_level * levels` active users and `levels` groups, group `i` holding the users of
/// level `i`; returns the users in order and the groups.
async fn seed(
    store: &unseat_store::Store,
    tenant: Uuid,
    per_level: usize,
    levels: usize,
) -> anyhow::Result<(Vec<Uuid>, Vec<Uuid>)> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let total = (per_level * levels) as i64;
    let users: Vec<Uuid> = tx
        .query(
            "insert into scim_users (tenant_id, id, user_name, email, resource)
             select $1, gen_random_uuid(), 'u' || i || '@bench.example', 'u' || i || '@bench.example',
                    jsonb_build_object('userName', 'u' || i || '@bench.example', 'active', true)
               from generate_series(1, $2::bigint) i
             returning id",
            &[&tenant, &total],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut groups = Vec::new();
    for (i, chunk) in users.chunks(per_level).enumerate() {
        let g = Uuid::new_v4();
        tx.execute(
            "insert into scim_groups (tenant_id, id, display_name, resource) values ($1, $2, $3, '{}')",
            &[&tenant, &g, &format!("Group {i}")],
        )
        .await?;
        tx.execute(
            "insert into group_members (tenant_id, group_id, user_id) select $1, $2, unnest($3::uuid[])",
            &[&tenant, &g, &chunk],
        )
        .await?;
        groups.push(g);
    }
    tx.commit().await?;
    // What autovacuum would do soon after a bulk load: without statistics the planner may read
    // a user by its creation-order index instead of its key.
    client.batch_execute("analyze scim_users; analyze scim_groups; analyze group_members").await?;
    Ok((users, groups))
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) * p) / 100]
}

async fn drop_database(base_url: &str, name: &str) -> anyhow::Result<()> {
    let (client, conn) =
        unseat_store::tokio_postgres::connect(&format!("{base_url}/postgres"), unseat_store::tokio_postgres::NoTls)
            .await?;
    tokio::spawn(conn);
    client.batch_execute(&format!("drop database if exists \"{}\" with (force)", name.replace('"', ""))).await?;
    Ok(())
}
