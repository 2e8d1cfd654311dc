//! `unseat bench pipeline`: end-to-end throughput and latency of deactivations (SCIM 2xx → removal
//! confirmed by the app emulator), printed next to the broker's raw publish-confirm-consume
//! rate measured in the same run at the same durability settings. It prints; it asserts nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::{AdminClient, EmulatorClient, ScimClient};
use crate::{Roles, Settings};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Users to deactivate.
    #[arg(long, default_value_t = 2000)]
    pub users: usize,
    /// Concurrent SCIM clients sending the deactivations.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Database the benchmark creates (and empties) for itself.
    #[arg(long, default_value = "unseat_bench")]
    pub database: String,
}

const BUSINESS: &str = "2001";

pub async fn run(mut settings: Settings, args: BenchArgs) -> anyhow::Result<()> {
    settings.database_url = super::fresh_database(&settings.database_url, &args.database).await?;
    settings.amqp_prefix = format!("unseat-bench-{}", Uuid::new_v4().simple());
    let operator = unseat_store::tokens::generate("op");
    settings.admin_token = Some(operator.clone());
    let shutdown = CancellationToken::new();
    let running = crate::start(settings.clone(), Roles::ALL, shutdown.clone()).await?;
    let base = format!("http://{}", running.addr);
    let store = running.store.clone();

    // Whatever happens from here, the fleet stops and its queues go (below).
    let outcome: anyhow::Result<_> = async {
        let (emu_addr, _) =
            crate::start_emulator(SocketAddr::from(([127, 0, 0, 1], 0)), &running.tasks, shutdown.clone()).await?;
        let emulator_url = format!("http://{emu_addr}");
        println!("seeding {} users, each EMPLOYEE through team Everyone ...", args.users);
        let admin = AdminClient::new(&base, &operator);
        let tenant = admin.create_tenant("Bench").await?;
        let admin = AdminClient::new(&base, &tenant.admin_token);
        let scim = ScimClient::new(format!("{base}/scim/v2"), &tenant.scim_token);
        let emulator = EmulatorClient::new(&emulator_url);
        emulator.seed(BUSINESS, "owner@bench.example", "ADMIN").await?;
        let names: Vec<String> = (0..args.users).map(|i| format!("user{i}@bench.example")).collect();
        let ids: Vec<Uuid> = futures_util::stream::iter(names.iter().cloned())
            .map(|name| {
                let scim = scim.clone();
                let emulator = emulator.clone();
                async move {
                    emulator.seed(BUSINESS, &name, "EMPLOYEE").await?;
                    scim.create_user(&name).await
                }
            })
            .buffered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let team = scim.create_group("Everyone", &ids).await?;
        // The emulator has no rate limit: lift the connector's per-integration default so the
        // benchmark measures unseat, not a limiter set for Meta's real API.
        let integration = admin
            .post(
                &format!("/api/v1/tenants/{}/integrations", tenant.id),
                &serde_json::json!({
                    "name": "Bench hub",
                    "app_kind": "business_hub",
                    "base_url": emulator_url,
                    "roles": ["ADMIN", "EMPLOYEE"],
                    "settings": { "business_id": BUSINESS, "rate_limit_per_second": 100000 },
                    "credential": "emulator-token",
                }),
            )
            .await?["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("integration id")?;
        admin.grant_team(tenant.id, integration, team, "EMPLOYEE").await?;
        wait_for(&store, tenant.id, "grant", args.users, Duration::from_secs(600)).await?;

        println!("sending {} deactivations with {} concurrent clients ...", args.users, args.concurrency);
        let accepted: Arc<std::sync::Mutex<HashMap<Uuid, DateTime<Utc>>>> = Arc::default();
        let mut latencies = Vec::with_capacity(args.users);
        let started = Instant::now();
        let results: Vec<anyhow::Result<Duration>> = futures_util::stream::iter(ids.iter().copied())
            .map(|id| {
                let scim = scim.clone();
                let accepted = accepted.clone();
                async move {
                    let t = Instant::now();
                    scim.deactivate(id).await?;
                    if let Ok(mut a) = accepted.lock() {
                        a.insert(id, Utc::now());
                    }
                    Ok(t.elapsed())
                }
            })
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
        let scim_elapsed = started.elapsed();
        for r in results {
            latencies.push(r?);
        }
        wait_for(&store, tenant.id, "remove", args.users, Duration::from_secs(900)).await?;
        let all_done = started.elapsed();
        let finished = finished_at(&store, tenant.id).await?;
        let accepted = accepted.lock().map(|a| a.clone()).unwrap_or_default();
        let e2e: Vec<Duration> = accepted
            .iter()
            .filter_map(|(id, at)| finished.get(id).map(|f| (*f - *at).to_std().unwrap_or_default()))
            .collect();
        let remaining = emulator.users(BUSINESS).await?.len();
        Ok((scim_elapsed, latencies, all_done, e2e, remaining))
    }
    .await;
    shutdown.cancel();
    running.wait().await;
    // Every queue is empty when the run went well: the bench's own topology goes, as the other
    // benches' do, and so it does when the run failed part-way.
    super::delete_topology(&settings.amqp_url, &settings.topology()).await;
    let (scim_elapsed, mut latencies, all_done, mut e2e, remaining) = outcome?;

    let broker = broker_ceiling(&settings.amqp_url, args.users).await?;
    let scim_rate = args.users as f64 / scim_elapsed.as_secs_f64();
    let e2e_rate = args.users as f64 / all_done.as_secs_f64();
    latencies.sort();
    e2e.sort();
    println!();
    println!(
        "machine: {} cores; PostgreSQL and RabbitMQ on localhost",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("deactivations:                      {}", args.users);
    println!(
        "SCIM accepted (durable):            {scim_rate:.0} req/s  (p50 {:?}, p99 {:?})",
        super::load::pct(&latencies, 50),
        super::load::pct(&latencies, 99)
    );
    println!("removed from the app (end to end):  {e2e_rate:.0} users/s");
    println!(
        "SCIM 2xx → app removal latency:     p50 {:?}, p99 {:?}",
        super::load::pct(&e2e, 50),
        super::load::pct(&e2e, 99)
    );
    println!("broker ceiling (quorum, persistent, confirms, manual acks): {broker:.0} msg/s");
    println!("ratio end-to-end / broker ceiling:  {:.2}", e2e_rate / broker);
    println!("app accounts left (owner only expected): {remaining}");
    Ok(())
}

/// Waits until `n` tasks with `outcome` have succeeded; fails on a failed one or after `limit`.
async fn wait_for(
    store: &unseat_store::Store,
    tenant: Uuid,
    outcome: &str,
    n: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let client = store.client().await?;
        let row = client
            .query_one(
                "select count(*) filter (where status = 'succeeded'), count(*) filter (where status = 'failed')
                   from tasks where tenant_id = $1 and outcome = $2",
                &[&tenant, &outcome],
            )
            .await?;
        let (done, failed): (i64, i64) = (row.get(0), row.get(1));
        if failed > 0 {
            anyhow::bail!("{failed} {outcome} tasks failed");
        }
        if done as usize >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {done} of {n} {outcome} tasks succeeded in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn finished_at(store: &unseat_store::Store, tenant: Uuid) -> anyhow::Result<HashMap<Uuid, DateTime<Utc>>> {
    let client = store.client().await?;
    let rows = client
        .query(
            "select user_id, finished_at from tasks where tenant_id = $1 and outcome = 'remove' and status = 'succeeded'",
            &[&tenant],
        )
        .await?;
    Ok(rows.into_iter().filter_map(|r| Some((r.get(0), r.get::<_, Option<DateTime<Utc>>>(1)?))).collect())
}

/// Publishes `n` messages of a connector task's size to a fresh quorum queue with persistence and
/// confirms (batches of 200 in flight, as the relay does) while a consumer acks them manually
/// (prefetch 64); returns messages per second through both ends.
async fn broker_ceiling(url: &str, n: usize) -> anyhow::Result<f64> {
    let topology =
        unseat_bus::Topology::new(format!("unseat-ceiling-{}", Uuid::new_v4().simple()), vec!["probe".into()]);
    let conn = unseat_bus::connect(url, "bench").await?;
    let ch = conn.create_channel().await?;
    topology.declare(&ch).await?;
    let outcome: anyhow::Result<_> = async {
        let queue = topology.connector_queue("probe");
        let consumer_ch = conn.create_channel().await?;
        consumer_ch.basic_qos(64, BasicQosOptions::default()).await?;
        let mut consumer = consumer_ch
            .basic_consume(queue.as_str().into(), "bench".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        let payload = vec![b'x'; 330];
        let publisher = unseat_bus::Publisher::new(&conn).await?;
        let started = Instant::now();
        let consume = tokio::spawn(async move {
            let mut seen = 0;
            while seen < n {
                match consumer.next().await {
                    Some(Ok(d)) => {
                        let _ = d.acker.ack(BasicAckOptions::default()).await;
                        seen += 1;
                    }
                    _ => break,
                }
            }
            seen
        });
        for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for i in chunk {
                confirms.push(
                    publisher.start(&topology.connector_exchange(), "probe", &i.to_string(), None, &payload).await?,
                );
            }
            for c in confirms {
                c.await?;
            }
        }
        let seen = consume.await?;
        let elapsed = started.elapsed();
        Ok((seen, elapsed))
    }
    .await;
    let _ = conn.close(200, "bye".into()).await;
    // The probe's queues go whether or not it went well.
    super::delete_topology(url, &topology).await;
    let (seen, elapsed) = outcome?;
    anyhow::ensure!(seen == n, "broker probe consumed {seen} of {n}");
    Ok(n as f64 / elapsed.as_secs_f64())
}
