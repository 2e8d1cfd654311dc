//! `unseat bench scim`: how fast the SCIM ingest accepts changes durably (state and outbox
//! row committed before the 2xx), with only the ingest role and its outbox relay running:
//! deactivations/s and group member removals/s with latency p50/p99 at 1, 16 and 64
//! concurrent clients, next to this PostgreSQL's single-row commit rate measured in the same
//! run at the same concurrency. Each kind is measured twice per level: with the relay
//! publishing to RabbitMQ alongside (as one process runs it, all on the same cores), and with
//! the relay held until the measurement ended, as the ceiling is measured; the relay then
//! publishes the held backlog alone, and its rate is printed too, as is how many changes each
//! group-commit statement carried. It prints; it asserts nothing.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::load::{self, Answer, Figures, Prepared};
use crate::{Roles, Settings};
use unseat_telemetry::Metrics;

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

pub async fn run(mut settings: Settings, args: BenchArgs) -> anyhow::Result<()> {
    settings.database_url = super::fresh_database(&settings.database_url, &args.database).await?;
    settings.amqp_prefix = format!("unseat-bench-scim-{}", Uuid::new_v4().simple());
    // The ingest keeps its configured pool (UNSEAT_DB_POOL): more clients than connections
    // queue for one, as they would in production.
    // The bench runs the relay itself, to hold it during the second measurement of each kind.
    settings.relay = false;
    let shutdown = CancellationToken::new();
    let roles = Roles { ingest: true, ..Default::default() };
    let running = crate::start(settings.clone(), roles, shutdown.clone()).await?;
    let store = running.store.clone();
    let mut relay = Relay {
        store: store.clone(),
        metrics: running.metrics.clone(),
        config: crate::relay_config(&settings),
        now: None,
    };
    let per_level = args.requests;
    // Whatever happens from here, the relay and the ingest stop and the queues go (below).
    let outcome: anyhow::Result<Vec<Row>> = async {
        let token = unseat_store::tokens::generate("scim");
        let tenant = store.create_tenant("Bench", &token, &unseat_store::tokens::generate("adm")).await?.id;
        let requests = Requests { addr: running.addr, token };

        let sets = args.concurrency.len() * 2;
        println!("seeding {} users and {sets} groups of {per_level} members with SQL ...", per_level * sets);
        let (users, groups) = seed(&store, tenant, per_level, sets).await?;

        let mut rows = Vec::new();
        for (i, &c) in args.concurrency.iter().enumerate() {
            // Each measurement changes users and a group of its own.
            let set = |k: usize| (&users[k * per_level..(k + 1) * per_level], groups[k]);
            relay.start();
            let (users, group) = set(2 * i);
            let alongside = measure(&requests, &running.metrics, c, users, group).await?;
            // What the relay has not published by now would be counted as the held backlog's.
            let (left, waited) = drain(&store).await?;
            anyhow::ensure!(left == 0, "the relay left {left} changes unpublished after {waited:.0?}: is RabbitMQ up?");
            relay.stop().await;
            let (users, group) = set(2 * i + 1);
            let held = measure(&requests, &running.metrics, c, users, group).await?;
            let backlog = store.outbox_backlog().await?;
            relay.start();
            let (left, drained) = drain(&store).await?;
            let (ceiling, connections) = commit_ceiling(&settings.database_url, c, per_level).await?;
            rows.push(Row { clients: c, alongside, held, relay: (backlog - left, drained), ceiling, connections });
        }
        Ok(rows)
    }
    .await;
    relay.stop().await;
    let (published, packs) = (running.metrics.outbox_published.get(), running.metrics.outbox_packs.get());
    shutdown.cancel();
    running.wait().await;
    // The bench's queues hold the changes it announced (no resolver runs), whether or not the
    // run went well.
    super::delete_topology(&settings.amqp_url, &settings.topology()).await;
    let rows = outcome?;

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
    println!("the outbox relay publishing to RabbitMQ alongside, on the same cores (as one process runs it):");
    print_table(&rows, |r| &r.alongside);
    println!();
    println!("the relay held until the measurement ended (as the ceiling is measured: nothing else running):");
    print_table(&rows, |r| &r.held);
    for r in rows.iter().filter(|r| r.connections < r.clients) {
        println!(
            "PG ceiling at {} clients measured over {} connections (the server's max_connections)",
            r.clients, r.connections
        );
    }
    println!();
    for Row { clients, relay: (messages, took), .. } in &rows {
        println!(
            "relay alone, after the held measurements at {clients} clients: {messages} directory changes published \
             in {took:.1?} ({:.0}/s)",
            *messages as f64 / took.as_secs_f64()
        );
    }
    println!("directory changes published in all: {published} (packed messages among what went to RabbitMQ: {packs})");
    Ok(())
}

/// What one concurrency level measured.
struct Row {
    clients: usize,
    alongside: Measured,
    held: Measured,
    /// Messages the relay published after the held measurements, and how long it took.
    relay: (i64, Duration),
    ceiling: Figures,
    connections: usize,
}

struct Measured {
    deactivations: Figures,
    removals: Figures,
    /// Changes per group-commit write: deactivations, member removals.
    per_write: (f64, f64),
}

/// Deactivations of `users`, then their removals from `group`, from `clients` clients.
async fn measure(
    requests: &Requests,
    metrics: &Metrics,
    clients: usize,
    users: &[Uuid],
    group: Uuid,
) -> anyhow::Result<Measured> {
    // The ingest's own changes and group-commit statements so far, per kind.
    let written = |kind: &str| {
        let series =
            |part: &str| metrics.sample(&format!("unseat_scim_group_commit_changes_{part}{{kind=\"{kind}\"}}"));
        (series("sum").unwrap_or(0.0), series("count").unwrap_or(0.0))
    };
    let per_write = |(changes, writes): (f64, f64), (changes_then, writes_then): (f64, f64)| {
        (changes - changes_then) / (writes - writes_then).max(1.0)
    };
    let before = written("activations");
    let deactivations =
        load::run(requests.addr, clients, requests.deactivations(users)).await.context("deactivations")?;
    let deactivations_per_write = per_write(written("activations"), before);
    let before = written("member_removals");
    let removals =
        load::run(requests.addr, clients, requests.removals(group, users)).await.context("member removals")?;
    let removals_per_write = per_write(written("member_removals"), before);
    Ok(Measured { deactivations, removals, per_write: (deactivations_per_write, removals_per_write) })
}

fn print_table(rows: &[Row], pick: impl Fn(&Row) -> &Measured) {
    println!(
        "{:>7} | {:>22} | {:>22} | {:>24} | {:>8} | {:>15}",
        "clients",
        "deactivations/s p50/p99",
        "member removals/s p50/p99",
        "PG 1-row commits/s p50/p99",
        "deact/PG",
        "per write d / r"
    );
    for row in rows {
        let (m, p) = (pick(row), &row.ceiling);
        let (d, r) = (&m.deactivations, &m.removals);
        println!(
            "{:>7} | {:>7.0} {:>6.1?} {:>6.1?} | {:>7.0} {:>6.1?} {:>6.1?} | {:>9.0} {:>6.1?} {:>6.1?} | {:>8.2} | {:>6.1} / {:>6.1}",
            row.clients,
            d.rate,
            d.p50,
            d.p99,
            r.rate,
            r.p50,
            r.p99,
            p.rate,
            p.p50,
            p.p99,
            d.rate / p.rate,
            m.per_write.0,
            m.per_write.1
        );
    }
}

/// The SCIM requests the clients send.
struct Requests {
    addr: std::net::SocketAddr,
    token: String,
}

impl Requests {
    /// Okta's deactivation of each of `users`.
    fn deactivations(&self, users: &[Uuid]) -> Vec<Prepared> {
        let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}"#;
        users
            .iter()
            .map(|u| {
                Prepared::new("PATCH", self.addr, &format!("/scim/v2/Users/{u}"), &self.token, Some(body), deactivated)
            })
            .collect()
    }

    /// The removal of each of `users` from `group`, one request each.
    fn removals(&self, group: Uuid, users: &[Uuid]) -> Vec<Prepared> {
        let path = format!("/scim/v2/Groups/{group}");
        users
            .iter()
            .map(|u| {
                let body = format!(
                    r#"{{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{{"op":"remove","path":"members[value eq \"{u}\"]"}}]}}"#
                );
                Prepared::new("PATCH", self.addr, &path, &self.token, Some(&body), removed)
            })
            .collect()
    }
}

/// The bench's outbox relay, started and stopped between measurements.
struct Relay {
    store: unseat_store::Store,
    metrics: std::sync::Arc<unseat_telemetry::Metrics>,
    config: unseat_relay::RelayConfig,
    now: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Relay {
    fn start(&mut self) {
        if self.now.is_none() {
            let stop = CancellationToken::new();
            let run = unseat_relay::run(self.store.clone(), self.metrics.clone(), self.config.clone(), stop.clone());
            self.now = Some((stop, tokio::spawn(run)));
        }
    }

    async fn stop(&mut self) {
        if let Some((stop, task)) = self.now.take() {
            stop.cancel();
            let _ = task.await;
        }
    }
}

/// Waits (up to two minutes) until the relay has published every outbox row; returns what is
/// left and how long it took.
async fn drain(store: &unseat_store::Store) -> anyhow::Result<(i64, Duration)> {
    let started = Instant::now();
    let mut backlog = store.outbox_backlog().await?;
    while backlog > 0 && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        backlog = store.outbox_backlog().await?;
    }
    Ok((backlog, started.elapsed()))
}

/// A deactivation's answer: 200 with the user, now inactive.
pub(super) fn deactivated(a: &Answer) -> anyhow::Result<()> {
    let inactive = br#""active":false"#;
    if a.status != 200 || !a.body.windows(inactive.len()).any(|w| w == inactive) {
        anyhow::bail!("deactivation answered {}: {}", a.status, String::from_utf8_lossy(&a.body));
    }
    Ok(())
}

/// A member removal's answer: 204, as Okta and Entra expect for groups.
fn removed(a: &Answer) -> anyhow::Result<()> {
    if a.status != 204 {
        anyhow::bail!("member removal answered {}: {}", a.status, String::from_utf8_lossy(&a.body));
    }
    Ok(())
}

/// The server's ceiling for what a SCIM change must do at least once: commit one row. `n`
/// one-row `insert` transactions (autocommit) from `concurrency` clients, each on a connection
/// of its own (prepared before the clock starts), over as many connections as the server has
/// left (the ingest's pool holds some); returns the figures and the clients used.
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
    let mut clients = Vec::new();
    for _ in 0..connections {
        let client = store.client().await?;
        let insert = client.prepare_cached("insert into bench_commit (body) values ($1)").await?;
        clients.push((client, insert));
    }
    let figures = load::drive(clients, n, |(client, insert), _| async move {
        client.execute(&insert, &[&Uuid::new_v4().to_string()]).await?;
        Ok((client, insert))
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
            "insert into scim_users (tenant_id, id, user_name, user_name_key, email, resource)
             select $1, gen_random_uuid(), 'u' || i || '@bench.example', 'u' || i || '@bench.example',
                    'u' || i || '@bench.example',
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
            "insert into scim_groups (tenant_id, id, display_name, display_name_key, resource) values ($1, $2, $3, $4, '{}')",
            &[&tenant, &g, &format!("Group {i}"), &format!("group {i}")],
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
