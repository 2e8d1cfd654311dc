//! `unseat bench connector`: the connector runtime alone, against the in-process emulator.
//!
//! 1. Throughput: N removals for one integration without a rate limit, the app answering each
//!    request after `--latency-ms`; prints tasks/s of one connector pool (one process).
//! 2. Rate-limit use: a backlog of `--backlog` removals for one integration limited to
//!    `--rate` requests/s; after a warm-up, counts for `--seconds` the requests the app really
//!    saw and prints them as a share of the limit, with the process's resident memory at the
//!    start and end of that window (flat: the backlog waits in the broker, not in memory).
//!    The limit is kept through the shared schedule in PostgreSQL (leases of a few slots), as
//!    with several connector replicas, so the share includes what leasing costs.
//!
//! Tasks are seeded straight into PostgreSQL and RabbitMQ (the resolver is not involved), with
//! the app's account id remembered, so each removal is one `DELETE /{business-user-id}`.
//! It prints; it asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use unseat_bus::messages::{ConnectorTask, MESSAGE_VERSION};
use unseat_bus::{Publisher, Topology};
use unseat_connector::ConnectorConfig;
use unseat_emulator::{Emulator, FaultRule};
use unseat_store::Store;
use uuid::Uuid;

use crate::Settings;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Removals in the throughput run.
    #[arg(long, default_value_t = 2000)]
    pub tasks: usize,
    /// Latency of every emulated app request, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
    /// Concurrency (and prefetch) of the connector pool.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Removals queued for the rate-limit run.
    #[arg(long, default_value_t = 100_000)]
    pub backlog: usize,
    /// The rate limit (requests/s) of the rate-limit run's integration.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds the rate-limit run is measured for (after a 5 s warm-up).
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Database the benchmark creates (and empties) for itself.
    #[arg(long, default_value = "unseat_bench_connector")]
    pub database: String,
}

const BUSINESS: &str = "3001";
const TOKEN: &str = "bench-token";

struct Bench {
    store: Store,
    emu: Emulator,
    emulator_url: String,
    topology: Topology,
    publisher: Publisher,
    _conn: lapin::Connection,
    tenant: Uuid,
    job: Uuid,
}

pub async fn run(settings: Settings, args: BenchArgs) -> anyhow::Result<()> {
    let database_url = super::fresh_database(&settings.database_url, &args.database).await?;
    unseat_store::migrate::migrate(&database_url).await?;
    let store = Store::connect(&database_url, 16)?;
    let emu = Emulator::new();
    let emulator_url = unseat_emulator::serve_local(emu.clone()).await?;
    emu.require_token(BUSINESS, TOKEN)?;
    emu.add_fault(FaultRule { latency_ms: Some(args.latency_ms), ..Default::default() })?;
    let topology = Topology::new(format!("unseat-bench-{}", Uuid::new_v4().simple()), vec!["business_hub".into()]);
    let conn = unseat_bus::connect(&settings.amqp_url, "bench-connector").await?;
    let channel = conn.create_channel().await?;
    topology.declare(&channel).await?;
    // Whatever happens from here, the pools stop and the bench's queues go (below).
    let stop = CancellationToken::new();
    let outcome: anyhow::Result<_> = async {
        let publisher = Publisher::new(&conn).await?;
        let (tenant, job) = (Uuid::new_v4(), Uuid::new_v4());
        {
            let client = store.client().await?;
            client.execute("insert into tenants (id, name) values ($1, 'Bench')", &[&tenant]).await?;
            client
                .execute(
                    "insert into jobs (tenant_id, id, trigger_method, trigger_path, received_at)
                     values ($1, $2, 'BENCH', '/bench', now())",
                    &[&tenant, &job],
                )
                .await?;
        }
        let bench = Bench { store, emu, emulator_url, topology: topology.clone(), publisher, _conn: conn, tenant, job };
        let config = ConnectorConfig {
            prefetch: u16::try_from(args.concurrency).unwrap_or(u16::MAX).max(1),
            concurrency: args.concurrency.max(1),
            grace: Duration::from_secs(2),
            ..settings.connector.clone()
        };

        // 1. Throughput without a limit.
        let fast = bench.integration("unlimited", 1_000_000.0).await?;
        println!("throughput: seeding {} removals ...", args.tasks);
        bench.seed(fast, "fast", args.tasks).await?;
        let shutdown = stop.child_token();
        let started = Instant::now();
        let pool = bench.start(&settings.amqp_url, config.clone(), shutdown.clone());
        bench.wait_done(fast, args.tasks, Duration::from_secs(1800)).await?;
        let elapsed = started.elapsed();
        shutdown.cancel();
        let _ = pool.await;
        let rate = args.tasks as f64 / elapsed.as_secs_f64();

        // 2. Share of a rate limit used under a backlog.
        let limited = bench.integration("limited", args.rate).await?;
        println!("rate limit: seeding a backlog of {} removals ...", args.backlog);
        bench.seed(limited, "slow", args.backlog).await?;
        bench.emu.clear_requests();
        let shutdown = stop.child_token();
        let pool = bench.start(&settings.amqp_url, config, shutdown.clone());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (seen_before, rss_start) = (bench.emu.requests().len(), rss_kib());
        let window = Instant::now();
        let mut rss_max = rss_start;
        while window.elapsed() < Duration::from_secs(args.seconds) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rss_max = rss_max.max(rss_kib());
        }
        let (seen_after, rss_end, measured) = (bench.emu.requests().len(), rss_kib(), window.elapsed());
        shutdown.cancel();
        let _ = pool.await;
        let used = (seen_after - seen_before) as f64 / measured.as_secs_f64();
        Ok((rate, used, measured, rss_start, rss_end, rss_max))
    }
    .await;
    stop.cancel();
    // The rest of the backlog is the bench's own: its queues go, as the other benches' do, and
    // so they do when the run failed part-way.
    super::delete_topology(&settings.amqp_url, &topology).await;
    let (rate, used, measured, rss_start, rss_end, rss_max) = outcome?;

    println!();
    println!(
        "connector throughput: {rate:.0} tasks/s for one connector pool (concurrency {}), app latency {} ms, no rate limit",
        args.concurrency, args.latency_ms
    );
    println!(
        "  ({:.1} tasks/s per concurrent slot; ceiling 1000/latency = {:.1})",
        rate / args.concurrency as f64,
        1000.0 / args.latency_ms.max(1) as f64
    );
    println!(
        "rate limit use: {used:.1} requests/s of a {:.1}/s limit = {:.1}% over {:.0} s, backlog {}",
        args.rate,
        100.0 * used / args.rate,
        measured.as_secs_f64(),
        args.backlog
    );
    println!("  resident memory: {rss_start} KiB at the start of the window, {rss_end} KiB at the end, {rss_max} KiB at most");
    Ok(())
}

impl Bench {
    async fn integration(&self, name: &str, rate: f64) -> anyhow::Result<Uuid> {
        let id = Uuid::new_v4();
        let settings = json!({ "business_id": BUSINESS, "rate_limit_per_second": rate });
        let roles = vec!["ADMIN".to_string(), "EMPLOYEE".to_string()];
        let client = self.store.client().await?;
        client
            .execute(
                "insert into integrations (tenant_id, id, name, app_kind, base_url, settings, credential, roles)
                 values ($1, $2, $3, 'business_hub', $4, $5, $6, $7)",
                &[&self.tenant, &id, &name, &self.emulator_url, &settings, &TOKEN, &roles],
            )
            .await?;
        Ok(id)
    }

    /// n users in the hub, their removal desired (with the hub id remembered), a queued task
    /// each, and the task messages published with many confirms in flight.
    async fn seed(&self, integration: Uuid, prefix: &str, n: usize) -> anyhow::Result<()> {
        for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
            let mut users = Vec::with_capacity(chunk.len());
            let mut emails = Vec::with_capacity(chunk.len());
            let mut hub_ids = Vec::with_capacity(chunk.len());
            let mut tasks = Vec::with_capacity(chunk.len());
            for i in chunk {
                let email = format!("{prefix}{i}@bench.example");
                hub_ids.push(self.emu.seed_user(BUSINESS, &email, "EMPLOYEE", None)?.id);
                emails.push(email);
                users.push(Uuid::new_v4());
                tasks.push(Uuid::new_v4());
            }
            let client = self.store.client().await?;
            client
                .execute(
                    "insert into access_state (tenant_id, integration_id, user_id, email, desired_role, desired_version,
                                               applied_version, applied_role, app_account_id)
                     select $1, $2, u, e, null, 2, 1, 'EMPLOYEE', h from unnest($3::uuid[], $4::text[], $5::text[]) as x(u, e, h)",
                    &[&self.tenant, &integration, &users, &emails, &hub_ids],
                )
                .await?;
            client
                .execute(
                    "insert into tasks (tenant_id, id, job_id, integration_id, user_id, user_email, user_email_key,
                                        outcome, from_role, reason, desired_version, status)
                     select $1, t, $2, $3, u, e, e, 'remove', 'EMPLOYEE', 'bench', 2, 'queued'
                     from unnest($4::uuid[], $5::uuid[], $6::text[]) as x(t, u, e)",
                    &[&self.tenant, &self.job, &integration, &tasks, &users, &emails],
                )
                .await?;
            let exchange = self.topology.connector_exchange();
            let confirms: Vec<anyhow::Result<()>> = futures_util::stream::iter(tasks.iter().zip(users.iter()))
                .map(|(task, user)| {
                    let message = ConnectorTask {
                        v: MESSAGE_VERSION,
                        message_id: Uuid::new_v4(),
                        tenant_id: self.tenant,
                        job_id: self.job,
                        task_id: *task,
                        integration_id: integration,
                        user_id: *user,
                        app_kind: "business_hub".into(),
                        desired_version: 2,
                    };
                    let exchange = exchange.clone();
                    async move {
                        let payload = serde_json::to_vec(&message)?;
                        let id = message.message_id.to_string();
                        self.publisher.start(&exchange, "business_hub", &id, None, &payload).await?.await?;
                        Ok(())
                    }
                })
                .buffer_unordered(500)
                .collect()
                .await;
            confirms.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        }
        Ok(())
    }

    fn start(
        &self,
        amqp_url: &str,
        config: ConnectorConfig,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(unseat_connector::run(
            self.store.clone(),
            amqp_url.to_string(),
            self.topology.clone(),
            Arc::new(unseat_telemetry::Metrics::new()),
            config,
            shutdown,
        ))
    }

    async fn wait_done(&self, integration: Uuid, n: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let client = self.store.client().await?;
            let row = client
                .query_one(
                    "select count(*) filter (where status in ('succeeded', 'failed')), count(*) filter (where status = 'failed')
                     from tasks where tenant_id = $1 and integration_id = $2",
                    &[&self.tenant, &integration],
                )
                .await?;
            let (done, failed): (i64, i64) = (row.get(0), row.get(1));
            anyhow::ensure!(failed == 0, "{failed} task(s) failed");
            if done as usize >= n {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "only {done} of {n} tasks finished within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The process's resident set size in KiB (0 where /proc is not available).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
