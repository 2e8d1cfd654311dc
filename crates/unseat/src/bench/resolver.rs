//! `unseat bench resolver`: how fast the resolver decides, and how long deleting one very large
//! group takes to resolve. Seeds (with SQL, in its own database) a tenant whose `--members`
//! users are all in one group G that grants ADMIN on every one of `--integrations`
//! integrations, and each in 1 to `--max-teams` other teams granting EMPLOYEE on some of
//! them; every user already holds ADMIN everywhere. Then it prints:
//!
//! - decisions/s of the decision rules alone (`unseat-domain`), on one core;
//! - the time to resolve "G deleted" (one message naming every member) with the real resolver
//!   and store on a single-threaded runtime, and the decisions/s that makes.
//!
//! It prints; it asserts nothing.

use std::time::Instant;

use anyhow::Context;
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
    let base_url = settings.database_url.rsplit_once('/').map(|(b, _)| b.to_string()).context("database url")?;
    let (client, conn) =
        unseat_store::tokio_postgres::connect(&format!("{base_url}/postgres"), unseat_store::tokio_postgres::NoTls)
            .await?;
    let conn = tokio::spawn(conn);
    client
        .batch_execute(&format!("drop database if exists \"{}\" with (force)", args.database.replace('"', "")))
        .await?;
    drop(client);
    let _ = conn.await;
    let url = format!("{base_url}/{}", args.database);
    unseat_store::migrate::migrate(&url).await?;
    let store = Store::connect(&url, 4)?;

    println!(
        "seeding {} members, each in group G (ADMIN on {} integrations) and 1-{} of {TEAMS} teams ...",
        args.members, args.integrations, args.max_teams
    );
    let started = Instant::now();
    let (tenant, group) = seed(&store, &args).await?;
    println!("seeded in {:.0} s", started.elapsed().as_secs_f64());

    domain_rate(&store, tenant, group).await?;
    resolve_group_deletion(&store, tenant, group, args.members).await
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
            "insert into scim_users (tenant_id, id, user_name, email, resource)
             select $1, gen_random_uuid(), 'user' || n || '@bench.example', 'user' || n || '@bench.example', '{}'
               from generate_series(1, $2::bigint) n",
            &[&tenant, &args.members],
        )
        .await?;
    client
        .execute(
            "insert into scim_groups (tenant_id, id, display_name, resource) values ($1, $2, 'G', '{}')",
            &[&tenant, &group],
        )
        .await?;
    client
        .execute(
            "insert into scim_groups (tenant_id, id, display_name, resource)
             select $1, gen_random_uuid(), 'Team ' || n, '{}' from generate_series(1, $2::bigint) n",
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
             select $1, i.id, u.id, u.email, 'ADMIN', 1, 1, 'ADMIN', '[{\"source\":{\"kind\":\"team\",\"name\":\"G\"},\"role\":\"ADMIN\"}]'
               from scim_users u cross join integrations i where u.tenant_id = $1 and i.tenant_id = $1",
            &[&tenant],
        )
        .await?;
    client.batch_execute("analyze").await?;
    Ok((tenant, group))
}

/// Decisions/s of the rules alone: the grants of 1,000 members as loaded from the store, after
/// G is gone, decided over and over on this thread.
async fn domain_rate(store: &Store, tenant: Uuid, group: Uuid) -> anyhow::Result<()> {
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
            if decide(Some(&held), now.as_ref(), UserStatus::Active, &lost).is_some() {
                decisions += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "decision rules alone: {decisions} decisions in {secs:.2} s = {:.0} decisions/s on one core",
        decisions as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Deletes G as ingest would and resolves the one message naming every member, on a
/// single-threaded runtime (one core for the resolver; PostgreSQL has the others).
async fn resolve_group_deletion(store: &Store, tenant: Uuid, group: Uuid, members: i64) -> anyhow::Result<()> {
    let client = store.client().await?;
    let users: Vec<Uuid> = client
        .query("select user_id from group_members where tenant_id = $1 and group_id = $2", &[&tenant, &group])
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    client.execute("delete from scim_groups where tenant_id = $1 and id = $2", &[&tenant, &group]).await?;
    drop(client);
    let message = DirectoryChanged {
        v: MESSAGE_VERSION,
        message_id: Uuid::new_v4(),
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
    println!("resolving the deletion of G ({members} members) ...");
    let store = store.clone();
    let resolved = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let started = Instant::now();
        let r = rt.block_on(unseat_resolver::resolve(&store, "bench.connector", &message))?;
        anyhow::Ok((r, started.elapsed()))
    })
    .await??;
    let (r, took) = resolved;
    let secs = took.as_secs_f64();
    let n = r.decisions();
    println!(
        "resolved in {secs:.1} s: {n} decisions ({:.0} decisions/s), {} connector tasks queued",
        n as f64 / secs.max(1e-9),
        r.tasks_queued
    );
    for (outcome, k) in r.by_outcome() {
        println!("  {:<7} {k}", outcome.as_str());
    }
    Ok(())
}
