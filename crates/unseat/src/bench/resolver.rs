//! `unseat bench resolver`: how fast the resolver decides, and how long deleting one very large
//! group takes to resolve. Seeds (with SQL, `generate_series`, in its own database) a tenant
//! whose `--members` users (100,000 by default) are all in one group G that grants ADMIN on
//! every one of `--integrations` (20) integrations, and each in 1 to `--max-teams` (50) of 60
//! other teams granting EMPLOYEE on about a third of them; every user already holds ADMIN
//! everywhere. Then it prints:
//!
//! - decisions/s of the decision rules alone (`unseat-domain`), on one core: the CPU ceiling;
//! - the time to resolve "G deleted" (one message naming every member) with the real resolver
//!   and store, on a single-threaded runtime with two PostgreSQL connections (two batches
//!   read, are decided and write at once, committing in order), the decisions/s that makes, and where the
//!   CPU went: the resolver's thread, the two PostgreSQL backends serving its connections,
//!   PostgreSQL's background processes and everything else on the machine
//!   (read from `/proc`, so PostgreSQL must run on the same host for those figures);
//! - the resolver process's resident memory before and at its peak during the resolve;
//! - the write ceiling measured in the same run: the rows 10,000 decisions write (desired
//!   states, tasks, outbox rows) written by PostgreSQL alone, with
//!   `insert … select` inside the server (no client, no reads, no decisions), rolled back.
//!
//! It prints; it asserts nothing.

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use unseat_bus::messages::{DirectoryChanged, Trigger, MESSAGE_VERSION};
use unseat_domain::{decide, lost_grants, AccessModel, Grant, GrantSource, Held, RoleLadder, UserStatus};
use unseat_store::Store;
use uuid::Uuid;

use crate::Settings;

#[derive(Args, Debug, Clone)]
pub struct ResolverBenchArgs {
    /// Members of the group that is deleted.
    #[arg(long, default_value_t = 100_000)]
    pub members: i64,
    /// Integrations every member has access to.
    #[arg(long, default_value_t = 20)]
    pub integrations: i64,
    /// Each member is in 1 to this many other teams.
    #[arg(long, default_value_t = 50)]
    pub max_teams: i64,
    /// Database the benchmark creates (and empties) for itself.
    #[arg(long, default_value = "unseat_bench_resolver")]
    pub database: String,
}

/// Other teams in the tenant (each member joins 1 to `max_teams` of them).
const TEAMS: i64 = 60;

pub async fn run(settings: Settings, args: ResolverBenchArgs) -> anyhow::Result<()> {
    let url = super::fresh_database(&settings.database_url, &args.database).await?;
    unseat_store::migrate::migrate(&url).await?;
    let store = Store::connect(&url, 4)?;

    println!(
        "seeding {} members, each in group G (ADMIN on {} integrations) and 1-{} of {TEAMS} teams ...",
        args.members, args.integrations, args.max_teams
    );
    let started = Instant::now();
    let (tenant, group) = seed(&store, &args).await?;
    println!("seeded in {:.0} s", started.elapsed().as_secs_f64());

    let rules = domain_rate(&store, tenant, group).await?;
    let job = resolve_group_deletion(&url, &store, tenant, group, args.members, rules).await?;
    write_ceiling(&store, tenant, job).await
}

async fn seed(store: &Store, args: &ResolverBenchArgs) -> anyhow::Result<(Uuid, Uuid)> {
    let tenant = Uuid::new_v4();
    let group = Uuid::new_v4();
    let client = store.client().await?;
    client.execute("insert into tenants (id, name) values ($1, 'Resolver bench')", &[&tenant]).await?;
    client
        .execute(
            "insert into integrations (tenant_id, id, name, app_kind, base_url, roles)
             select $1, gen_random_uuid(), 'App ' || n, 'business_hub', 'http://127.0.0.1:9', '{ADMIN,EMPLOYEE}'
               from generate_series(1, $2::bigint) n",
            &[&tenant, &args.integrations],
        )
        .await?;
    client
        .execute(
            "insert into scim_users (tenant_id, id, user_name, user_name_key, email, resource)
             select $1, gen_random_uuid(), 'user' || n || '@bench.example', 'user' || n || '@bench.example',
                    'user' || n || '@bench.example', '{}'
               from generate_series(1, $2::bigint) n",
            &[&tenant, &args.members],
        )
        .await?;
    client
        .execute(
            "insert into scim_groups (tenant_id, id, display_name, display_name_key, resource) values ($1, $2, 'G', 'g', '{}')",
            &[&tenant, &group],
        )
        .await?;
    client
        .execute(
            "insert into scim_groups (tenant_id, id, display_name, display_name_key, resource)
             select $1, gen_random_uuid(), 'Team ' || n, 'team ' || n, '{}' from generate_series(1, $2::bigint) n",
            &[&tenant, &TEAMS],
        )
        .await?;
    client
        .execute(
            "insert into group_members (tenant_id, group_id, user_id) select $1, $2, id from scim_users where tenant_id = $1",
            &[&tenant, &group],
        )
        .await?;
    // Each user joins 1..max_teams of the other teams, picked by a hash of (user, team).
    client
        .execute(
            "insert into group_members (tenant_id, group_id, user_id)
             select u.tenant_id, g.id, u.id
               from scim_users u
               join lateral (select 1 + abs(hashtext(u.id::text)) % $3::bigint as k) kk on true
               join lateral (select id from scim_groups
                              where tenant_id = $1 and id <> $2
                              order by md5(u.id::text || id::text) limit kk.k) g on true
              where u.tenant_id = $1",
            &[&tenant, &group, &args.max_teams],
        )
        .await?;
    // G gives ADMIN everywhere; each other team gives EMPLOYEE on about a third of the apps.
    client
        .execute(
            "insert into grants (tenant_id, id, integration_id, subject_kind, subject_id, role)
             select $1, gen_random_uuid(), i.id, 'team', $2, 'ADMIN' from integrations i where i.tenant_id = $1",
            &[&tenant, &group],
        )
        .await?;
    client
        .execute(
            "insert into grants (tenant_id, id, integration_id, subject_kind, subject_id, role)
             select $1, gen_random_uuid(), i.id, 'team', g.id, 'EMPLOYEE'
               from integrations i cross join scim_groups g
              where i.tenant_id = $1 and g.tenant_id = $1 and g.id <> $2 and abs(hashtext(i.id::text || g.id::text)) % 3 = 0",
            &[&tenant, &group],
        )
        .await?;
    client
        .execute(
            "insert into access_state (tenant_id, integration_id, user_id, email, desired_role, desired_version,
                                       applied_version, applied_role, desired_sources)
             select $1, i.id, u.id, u.email, 'ADMIN', 1, 1, 'ADMIN', '[{\"t\":\"G\",\"r\":\"ADMIN\"}]'
               from scim_users u cross join integrations i where u.tenant_id = $1 and i.tenant_id = $1",
            &[&tenant],
        )
        .await?;
    client.batch_execute("analyze").await?;
    Ok((tenant, group))
}

/// Decisions/s of the rules alone: the grants of 1,000 members as loaded from the store, after
/// G is gone, decided over and over on this thread.
async fn domain_rate(store: &Store, tenant: Uuid, group: Uuid) -> anyhow::Result<f64> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    tx.execute("delete from scim_groups where tenant_id = $1 and id = $2", &[&tenant, &group]).await?;
    let users: Vec<Uuid> = tx
        .query("select id from scim_users where tenant_id = $1 order by id limit 1000", &[&tenant])
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let plan = unseat_resolver::plan(&tx, tenant, &users).await?;
    tx.rollback().await?;
    let model = AccessModel::roles_only(RoleLadder::parse(vec!["ADMIN".into(), "EMPLOYEE".into()])?);
    let held = Held { role: "ADMIN".into(), assets: Default::default() };
    let before = vec![Grant {
        source: GrantSource::Team { name: "G".into() },
        role: "ADMIN".into(),
        assets: Default::default(),
    }];
    let teams = Default::default();
    let rounds = 20;
    let started = Instant::now();
    let mut decisions = 0usize;
    for _ in 0..rounds {
        for item in &plan.items {
            let now = model.effective(true, &item.grants);
            let lost = lost_grants(&before, &item.grants, &teams);
            if decide(Some(&held), now.as_ref(), UserStatus::Active, &lost, &Default::default()).is_some() {
                decisions += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = decisions as f64 / secs.max(1e-9);
    println!("decision rules alone: {decisions} decisions in {secs:.2} s = {rate:.0} decisions/s on one core");
    Ok(rate)
}

/// CPU time (user + system) of a process or thread from its `/proc/.../stat`, in seconds.
fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Busy CPU seconds of the whole machine (every core) from `/proc/stat`.
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...: busy is everything but idle and iowait.
    let busy: f64 = fields.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    Some(busy / 100.0)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn pids_cpu(pids: &[i32]) -> f64 {
    pids.iter().filter_map(|p| cpu_seconds(&format!("/proc/{p}/stat"))).sum()
}

/// What the resolve measured on its own thread.
struct Run {
    resolved: unseat_resolver::Resolved,
    took: Duration,
    thread_cpu: f64,
    backend_cpu: Option<f64>,
}

/// Deletes G as ingest would and resolves the one message naming every member, on a
/// single-threaded runtime of its own with one PostgreSQL connection (created on that runtime,
/// so the connection's I/O runs on the resolver's thread too).
async fn resolve_group_deletion(
    url: &str,
    store: &Store,
    tenant: Uuid,
    group: Uuid,
    members: i64,
    rules: f64,
) -> anyhow::Result<Uuid> {
    let client = store.client().await?;
    let users: Vec<Uuid> = client
        .query("select user_id from group_members where tenant_id = $1 and group_id = $2", &[&tenant, &group])
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    client.execute("delete from scim_groups where tenant_id = $1 and id = $2", &[&tenant, &group]).await?;
    let background: Vec<i32> = client
        .query("select pid from pg_stat_activity where backend_type <> 'client backend'", &[])
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    drop(client);
    let message = DirectoryChanged {
        v: MESSAGE_VERSION,
        message_id: unseat_bus::messages::new_message_id(),
        tenant_id: tenant,
        scope: "workspace".into(),
        trigger: Trigger {
            method: "DELETE".into(),
            path: format!("/scim/v2/Groups/{group}"),
            user_agent: "bench".into(),
            received_at: Utc::now(),
            summary: format!("group G deleted ({members} members)"),
            may_revoke: true,
        },
        users,
    };
    let job = message.message_id;
    println!("resolving the deletion of G ({members} members) ...");
    // Peak resident memory from here on: clear the high-water mark (Linux: "5" resets it).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = status_kib("VmRSS:");
    let bg_before = pids_cpu(&background);
    let machine_before = machine_busy_seconds();
    let url = url.to_string();
    let run = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let store = Store::connect(&url, 2)?;
            // Open both connections now, to know their backends.
            let (first, second) = (store.client().await?, store.client().await?);
            let mut backends = Vec::new();
            for client in [&first, &second] {
                let pid: i32 = client.query_one("select pg_backend_pid()", &[]).await?.get(0);
                backends.push(format!("/proc/{pid}/stat"));
            }
            drop((first, second));
            let backends_cpu = || backends.iter().map(|b| cpu_seconds(b)).sum::<Option<f64>>();
            let thread_before = cpu_seconds("/proc/thread-self/stat").unwrap_or(0.0);
            let backend_before = backends_cpu();
            let started = Instant::now();
            let resolved = unseat_resolver::resolve(&store, "bench.connector", &message).await?;
            let took = started.elapsed();
            let thread_cpu = cpu_seconds("/proc/thread-self/stat").unwrap_or(0.0) - thread_before;
            let backend_cpu = backends_cpu().zip(backend_before).map(|(a, b)| a - b);
            anyhow::Ok(Run { resolved, took, thread_cpu, backend_cpu })
        })
    })
    .await??;
    let peak = status_kib("VmHWM:");
    let bg_cpu = pids_cpu(&background) - bg_before;
    let machine = machine_busy_seconds().zip(machine_before).map(|(a, b)| a - b);
    let secs = run.took.as_secs_f64();
    let n = run.resolved.decisions();
    let rate = n as f64 / secs.max(1e-9);
    println!(
        "resolved the group in {secs:.1} s: {n} decisions = {rate:.0} decisions/s ({:.0}% of the rules' rate), {} connector tasks queued",
        100.0 * rate / rules.max(1e-9),
        run.resolved.tasks_queued
    );
    for (outcome, k) in run.resolved.by_outcome() {
        println!("  {:<7} {k}", outcome.as_str());
    }
    let per = |cpu: f64| if cpu > 0.0 { format!("{:.0} decisions per CPU-second", n as f64 / cpu) } else { "-".into() };
    println!("CPU during the resolve (wall {secs:.1} s):");
    println!("  resolver thread (one core)          {:>7.1} s  {}", run.thread_cpu, per(run.thread_cpu));
    match run.backend_cpu {
        Some(b) => {
            println!("  its PostgreSQL backends (two)       {b:>7.1} s  {}", per(b));
            println!(
                "  resolver + backends                 {:>7.1} s  {}",
                run.thread_cpu + b,
                per(run.thread_cpu + b)
            );
        }
        None => println!("  its PostgreSQL backends             not readable (PostgreSQL on another host?)"),
    }
    println!("  PostgreSQL background processes     {bg_cpu:>7.1} s  (WAL writer, checkpointer, ...; autovacuum workers not counted)");
    if let Some(m) = machine {
        let other = m - run.thread_cpu - run.backend_cpu.unwrap_or(0.0) - bg_cpu;
        println!(
            "  everything else on the machine      {:>7.1} s  (other processes sharing the cores)",
            other.max(0.0)
        );
    }
    println!(
        "resident memory of the resolver process: {:.1} MiB before, {:.1} MiB at its peak during the resolve",
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    Ok(job)
}

/// The write ceiling: the rows of 10,000 of the resolve's decisions written again by PostgreSQL
/// alone (`insert … select` and `update … from` inside the server), three times, each rolled
/// back; prints the best.
async fn write_ceiling(store: &Store, tenant: Uuid, job: Uuid) -> anyhow::Result<()> {
    let mut client = store.client().await?;
    let mut best: Option<(Duration, i64)> = None;
    for _ in 0..3 {
        let tx = client.transaction().await?;
        tx.execute(
            "create temp table ceiling_tasks on commit drop as
             select * from tasks where tenant_id = $1 and job_id = $2 limit 10000",
            &[&tenant, &job],
        )
        .await?;
        tx.execute(
            "create temp table ceiling_outbox on commit drop as
             select * from (select o.*, sum(cardinality(o.message_ids)) over (order by o.id) as upto from outbox o
                             where o.tenant_id = $1 and o.exchange = 'bench.connector') r
              where upto <= 10000",
            &[&tenant],
        )
        .await?;
        let n: i64 = tx.query_one("select count(*) from ceiling_tasks", &[]).await?.get(0);
        let started = Instant::now();
        tx.batch_execute(
            "update access_state a set desired_version = a.desired_version + 1, desired_role = t.to_role,
                    desired_assets = coalesce(t.to_assets, '{}'), desired_sources = a.desired_sources, updated_at = now()
               from ceiling_tasks t
              where a.tenant_id = t.tenant_id and a.integration_id = t.integration_id and a.user_id = t.user_id;
             insert into tasks (tenant_id, id, job_id, integration_id, user_id, user_email, user_email_key, outcome,
                                from_role, to_role, from_assets, to_assets, reason, desired_version, status)
             select tenant_id, gen_random_uuid(), job_id, integration_id, user_id, user_email, user_email_key, outcome,
                    from_role, to_role, from_assets, to_assets, reason, desired_version + 1, status from ceiling_tasks;
             insert into outbox (tenant_id, exchange, routing_key, message_ids, payloads)
             select tenant_id, exchange, routing_key, message_ids, payloads from ceiling_outbox;",
        )
        .await?;
        let took = started.elapsed();
        tx.rollback().await?;
        if best.is_none_or(|(b, _)| took < b) {
            best = Some((took, n));
        }
    }
    if let Some((took, n)) = best {
        println!(
            "write ceiling, same run: PostgreSQL alone writes the rows of {n} decisions in {:.0} ms = {:.0} decisions/s",
            took.as_secs_f64() * 1e3,
            n as f64 / took.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}
