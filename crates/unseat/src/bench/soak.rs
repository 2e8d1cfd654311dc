//! `unseat bench soak`: generated access scenarios through the whole pipeline (SCIM and admin
//! API → PostgreSQL + outbox → RabbitMQ → two resolvers → connector → app emulator), with
//! directory messages duplicated and replayed out of order on the broker. After each case is
//! quiet, every (user, integration) desired state, every account in the emulator and every
//! account's tasks on each of the app's ad accounts and pages must equal the reference model's
//! answer ([`super::scenario::model`]) on the final directory. Prints how many cases ran and
//! how many disagreed.
//!
//! The end-to-end test `tests/tests/access_pipeline.rs` runs the same cases through
//! [`run_case`]; this command runs many more.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use unseat_store::Store;
use uuid::Uuid;

use super::scenario::{self, Assets, Options, Rng, Scenario, Step, Subject};
use crate::client::{AdminClient, EmulatorClient, ScimClient};
use crate::{Roles, Settings};

#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Cases to run.
    #[arg(long, default_value_t = 10_000)]
    pub cases: u64,
    /// Cases running at once (each in its own tenant).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// First seed; case k uses seed + k, so a disagreement is reproduced with --seed and --cases 1.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Database the soak creates (and empties) for itself.
    #[arg(long, default_value = "unseat_soak")]
    pub database: String,
}

/// A running unseat (every role plus a second resolver) and the emulator, as cases see it.
pub struct Target {
    pub base: String,
    pub operator: AdminClient,
    pub emulator_url: String,
    pub store: Store,
    pub amqp_url: String,
    pub directory_exchange: String,
}

/// Publishes copies of directory messages straight to the broker: the duplicates and late
/// replays a real broker and IdP produce.
pub struct Chaos {
    publisher: unseat_bus::Publisher,
    _conn: lapin::Connection,
}

impl Chaos {
    pub async fn connect(amqp_url: &str) -> anyhow::Result<Self> {
        let conn = unseat_bus::connect(amqp_url, "soak-chaos").await?;
        let publisher = unseat_bus::Publisher::new(&conn).await?;
        Ok(Self { publisher, _conn: conn })
    }
}

struct Case<'a> {
    target: &'a Target,
    admin: AdminClient,
    scim: ScimClient,
    tenant: Uuid,
    users: Vec<Uuid>,
    teams: Vec<Uuid>,
    integrations: Vec<Uuid>,
    businesses: Vec<String>,
    /// Per integration: the scenario's asset name → the asset's id in the app.
    assets: Vec<BTreeMap<String, String>>,
    /// Assets an admin removed after the steps: (integration, asset name).
    removed: Vec<(usize, String)>,
    grants: BTreeMap<(usize, Subject), Uuid>,
}

fn email(seed: u64, u: usize) -> String {
    format!("u{u}.s{seed}@soak.example")
}

impl Case<'_> {
    fn grants_path(&self, i: usize) -> String {
        format!("/api/v1/tenants/{}/integrations/{}/grants", self.tenant, self.integrations[i])
    }

    async fn admin_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self
            .admin
            .http
            .request(method.clone(), format!("{}{path}", self.admin.base))
            .bearer_auth(&self.admin.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("{method} {path}: HTTP {status}: {text}");
        }
        Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
    }

    async fn set_grant(&mut self, i: usize, subject: Subject, role: &str, assets: &Assets) -> anyhow::Result<()> {
        let assets: Assets = assets
            .iter()
            .map(|(name, asset_role)| {
                Ok((self.assets[i].get(name).context("unknown asset")?.clone(), asset_role.clone()))
            })
            .collect::<anyhow::Result<_>>()?;
        if let Some(grant) = self.grants.get(&(i, subject)) {
            let path = format!("{}/{grant}", self.grants_path(i));
            self.admin_call(reqwest::Method::PATCH, &path, Some(json!({ "role": role, "assets": assets }))).await?;
        } else {
            let mut body = json!({ "role": role, "assets": assets });
            match subject {
                Subject::Team(t) => body["team_id"] = json!(self.teams[t]),
                Subject::User(u) => body["user_id"] = json!(self.users[u]),
            }
            let v = self.admin_call(reqwest::Method::POST, &self.grants_path(i), Some(body)).await?;
            let id: Uuid = v["id"].as_str().and_then(|s| s.parse().ok()).context("grant id")?;
            self.grants.insert((i, subject), id);
        }
        Ok(())
    }

    async fn step(&mut self, step: &Step) -> anyhow::Result<()> {
        match step {
            Step::AddMember { team, user } => self.scim.add_member(self.teams[*team], self.users[*user]).await,
            Step::RemoveMember { team, user } => self.scim.remove_member(self.teams[*team], self.users[*user]).await,
            Step::Deactivate { user } => self.scim.deactivate(self.users[*user]).await,
            Step::Reactivate { user } => {
                let resp = self
                    .scim
                    .patch(
                        &format!("/Users/{}", self.users[*user]),
                        json!([{ "op": "replace", "path": "active", "value": true }]),
                    )
                    .await?;
                anyhow::ensure!(resp.status().is_success(), "reactivate: HTTP {}", resp.status());
                Ok(())
            }
            Step::DeleteUser { user } => self.scim.delete_user(self.users[*user]).await,
            Step::DeleteTeam { team } => self.scim.delete_group(self.teams[*team]).await,
            Step::SetGrant { integration, subject, role, assets } => {
                self.set_grant(*integration, *subject, role, assets).await
            }
            Step::Revoke { integration, subject } => {
                let grant = self.grants.remove(&(*integration, *subject)).context("revoking a grant never made")?;
                let path = format!("{}/{grant}", self.grants_path(*integration));
                self.admin_call(reqwest::Method::DELETE, &path, None).await.map(|_| ())
            }
        }
    }
}

/// The directory messages the tenant's changes wrote to the outbox so far.
async fn directory_messages(store: &Store, tenant: Uuid, exchange: &str) -> anyhow::Result<Vec<(Uuid, Value)>> {
    let client = store.client().await?;
    let rows = client
        .query(
            "select message_id, payload from outbox where tenant_id = $1 and exchange = $2 order by id",
            &[&tenant, &exchange],
        )
        .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Republishes some of the tenant's directory messages: duplicates (same id, so resolvers must
/// recognise them) and replays (a new id: a late hint that must change nothing the current
/// state does not give). Returns the ids of the replays, which the case then waits for.
async fn stir(target: &Target, chaos: &Chaos, tenant: Uuid, rng: &mut Rng) -> anyhow::Result<Vec<Uuid>> {
    let mut messages = directory_messages(&target.store, tenant, &target.directory_exchange).await?;
    rng.shuffle(&mut messages);
    let mut replays = Vec::new();
    for (id, mut payload) in messages.into_iter().take(3) {
        let replay = rng.chance(50);
        let id = if replay {
            let new = Uuid::new_v4();
            payload["message_id"] = json!(new);
            replays.push(new);
            new
        } else {
            id
        };
        let bytes = serde_json::to_vec(&payload)?;
        chaos
            .publisher
            .publish(&target.directory_exchange, unseat_bus::DIRECTORY_ROUTING_KEY, &id.to_string(), &bytes)
            .await?;
    }
    Ok(replays)
}

/// Waits until the tenant is quiet: every outbox row sent, every directory message (and every
/// replay) resolved to the end, and no task queued, running or retrying — twice in a row.
async fn quiet(target: &Target, tenant: Uuid, replays: &[Uuid], limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut calm = 0;
    loop {
        let client = target.store.client().await?;
        let busy: i64 = client
            .query_one(
                "select (select count(*) from outbox where tenant_id = $1 and sent_at is null)
                      + (select count(*) from tasks where tenant_id = $1 and status in ('queued', 'running', 'retrying'))
                      + (select count(*) from outbox o where o.tenant_id = $1 and o.exchange = $3 and not exists
                          (select 1 from resolver_progress p where p.tenant_id = o.tenant_id
                              and p.message_id = o.message_id and p.finished_at is not null))
                      + (select count(*) from unnest($2::uuid[]) r(id) where not exists
                          (select 1 from resolver_progress p where p.tenant_id = $1
                              and p.message_id = r.id and p.finished_at is not null))",
                &[&tenant, &replays, &target.directory_exchange],
            )
            .await?
            .get(0);
        drop(client);
        calm = if busy == 0 { calm + 1 } else { 0 };
        if calm >= 2 {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("not quiet after {limit:?} ({busy} things pending)");
        }
        tokio::time::sleep(Duration::from_millis(if busy == 0 { 250 } else { 50 })).await;
    }
}

/// Runs the case of `seed` in a fresh tenant; Err says how the system disagreed with the
/// model (or what failed).
pub async fn run_case(target: &Target, chaos: &Chaos, seed: u64) -> anyhow::Result<()> {
    let s: Scenario = scenario::generate(seed, &Options::pipeline());
    let mut rng = Rng::new(seed ^ 0xC4A05);
    let tenant = target.operator.create_tenant(&format!("soak {seed}")).await?;
    let admin = AdminClient::new(&target.base, &tenant.admin_token);
    let scim = ScimClient::new(format!("{}/scim/v2", target.base), &tenant.scim_token);
    let emulator = EmulatorClient::new(&target.emulator_url);
    let mut case = Case {
        target,
        admin,
        scim,
        tenant: tenant.id,
        users: Vec::new(),
        teams: Vec::new(),
        integrations: Vec::new(),
        businesses: Vec::new(),
        assets: Vec::new(),
        removed: Vec::new(),
        grants: BTreeMap::new(),
    };
    for (k, spec) in s.integrations.iter().enumerate() {
        // A numeric business id of its own per case and integration.
        let business = format!("{}", 700_000_000u64 + seed * 10 + k as u64);
        emulator.seed(&business, "owner@soak.example", "ADMIN").await?;
        // Real ad accounts and pages in the app; the integration lists the first half when it
        // is created and gets the rest through the assets endpoint.
        let mut assets = BTreeMap::new();
        let mut listed = Vec::new();
        for (n, name) in spec.assets.iter().enumerate() {
            let kind = if n % 2 == 0 { "ad_account" } else { "page" };
            let id = emulator.seed_asset(&business, kind, name).await?;
            listed.push(json!({ "asset_id": id, "kind": kind, "name": name }));
            assets.insert(name.clone(), id);
        }
        let later = listed.split_off(listed.len() / 2);
        let v = case
            .admin
            .post(
                &format!("/api/v1/tenants/{}/integrations", tenant.id),
                &json!({
                    "name": format!("Hub {k}"),
                    "app_kind": "business_hub",
                    "base_url": target.emulator_url,
                    "roles": spec.roles,
                    "asset_roles": spec.asset_roles,
                    "assets": listed,
                    "settings": { "business_id": business },
                    "credential": "emulator-token",
                }),
            )
            .await?;
        let id: Uuid = v["id"].as_str().and_then(|s| s.parse().ok()).context("integration id")?;
        for asset in later {
            case.admin.post(&format!("/api/v1/tenants/{}/integrations/{id}/assets", tenant.id), &asset).await?;
        }
        case.integrations.push(id);
        case.businesses.push(business);
        case.assets.push(assets);
    }
    for u in 0..s.users {
        case.users.push(case.scim.create_user(&email(seed, u)).await?);
    }
    for u in 0..s.users {
        if !s.initial.active[u] {
            case.scim.deactivate(case.users[u]).await?;
        }
    }
    for t in 0..s.teams {
        let members: Vec<Uuid> =
            s.initial.members.iter().filter(|(team, _)| *team == t).map(|(_, u)| case.users[*u]).collect();
        case.teams.push(case.scim.create_group(&format!("Team {t}"), &members).await?);
    }
    for ((i, subject), (role, assets)) in &s.initial.grants {
        case.set_grant(*i, *subject, role, assets).await?;
    }
    let mut replays = Vec::new();
    for (n, step) in s.steps.iter().enumerate() {
        case.step(step).await.with_context(|| format!("step {n}: {step:?}"))?;
        if rng.chance(25) {
            replays.extend(stir(target, chaos, tenant.id, &mut rng).await?);
        }
    }
    // Now and then an admin removes an asset at the end (later steps could no longer name it):
    // whoever held it must lose it in the app, whatever else the grants give.
    let with_assets: Vec<usize> = (0..s.integrations.len()).filter(|i| !s.integrations[*i].assets.is_empty()).collect();
    if !with_assets.is_empty() && rng.chance(50) {
        let i = *rng.pick(&with_assets);
        let name = rng.pick(&s.integrations[i].assets).clone();
        let path = format!(
            "/api/v1/tenants/{}/integrations/{}/assets/{}",
            tenant.id, case.integrations[i], case.assets[i][&name]
        );
        case.admin_call(reqwest::Method::DELETE, &path, None).await.context("removing an asset")?;
        case.removed.push((i, name));
    }
    replays.extend(stir(target, chaos, tenant.id, &mut rng).await?);
    quiet(target, tenant.id, &replays, Duration::from_secs(120)).await?;
    compare(&case, &s, seed, &emulator).await
}

async fn compare(case: &Case<'_>, s: &Scenario, seed: u64, emulator: &EmulatorClient) -> anyhow::Result<()> {
    // A removed asset is one the integration no longer has: the model gives it to nobody.
    let mut integrations = s.integrations.clone();
    for (i, name) in &case.removed {
        integrations[*i].assets.retain(|a| a != name);
    }
    let want = scenario::model(&integrations, &s.final_directory());
    let client = case.target.store.client().await?;
    let rows = client
        .query(
            "select user_id, integration_id, desired_role, desired_assets from access_state where tenant_id = $1",
            &[&case.tenant],
        )
        .await?;
    let mut got: BTreeMap<(usize, usize), scenario::Expected> = BTreeMap::new();
    for r in rows {
        let (user, integration): (Uuid, Uuid) = (r.get(0), r.get(1));
        let u = case.users.iter().position(|x| *x == user).context("unknown user in access_state")?;
        let i = case.integrations.iter().position(|x| *x == integration).context("unknown integration")?;
        let role: Option<String> = r.get(2);
        let in_app: Assets = serde_json::from_value(r.get(3))?;
        // Back to the scenario's asset names.
        let mut assets = Assets::new();
        for (id, asset_role) in in_app {
            let name = case.assets[i].iter().find(|(_, app_id)| **app_id == id).map(|(name, _)| name.clone());
            assets.insert(name.unwrap_or(id), asset_role);
        }
        got.insert((u, i), role.map(|role| (role, assets)));
    }
    let mut problems = Vec::new();
    for (key, expected) in &want {
        let actual = got.get(key).cloned().flatten();
        if &actual != expected {
            problems.push(format!("user {} on integration {}: desired {actual:?}, model {expected:?}", key.0, key.1));
        }
    }
    for (i, business) in case.businesses.iter().enumerate() {
        let accounts: BTreeSet<(String, String)> =
            emulator.users(business).await?.into_iter().filter(|(e, _)| e != "owner@soak.example").collect();
        let expected: BTreeSet<(String, String)> = (0..s.users)
            .filter_map(|u| want[&(u, i)].as_ref().map(|(role, _)| (email(seed, u), role.clone())))
            .collect();
        if accounts != expected {
            problems.push(format!("integration {i}: the app holds {accounts:?}, model {expected:?}"));
        }
        // Per asset, who holds which Graph tasks, against the tasks the model's asset role
        // stands for (MANAGE = MANAGE+ADVERTISE+ANALYZE, ADVERTISE = ADVERTISE+ANALYZE,
        // ANALYZE = ANALYZE).
        let held = emulator.asset_tasks(business).await?;
        for (name, id) in &case.assets[i] {
            let holders: BTreeMap<String, BTreeSet<String>> = held.get(id).cloned().unwrap_or_default();
            let expected: BTreeMap<String, BTreeSet<String>> = (0..s.users)
                .filter_map(|u| {
                    let (_, assets) = want[&(u, i)].as_ref()?;
                    assets.get(name).map(|asset_role| (email(seed, u), graph_tasks(asset_role)))
                })
                .collect();
            if holders != expected {
                problems.push(format!("integration {i}, asset {name}: the app holds {holders:?}, model {expected:?}"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "seed {seed}: {}\nassets removed at the end: {:?}\nscenario: {s:#?}",
            problems.join("; "),
            case.removed
        )
    }
}

/// The Graph tasks an asset role stands for, as Meta maps the old asset roles to tasks.
fn graph_tasks(asset_role: &str) -> BTreeSet<String> {
    let tasks: &[&str] = match asset_role {
        "MANAGE" => &["MANAGE", "ADVERTISE", "ANALYZE"],
        "ADVERTISE" => &["ADVERTISE", "ANALYZE"],
        "ANALYZE" => &["ANALYZE"],
        other => return [format!("unexpected asset role {other}")].into(),
    };
    tasks.iter().map(|t| t.to_string()).collect()
}

/// What a batch of cases came to.
#[derive(Debug, Default)]
pub struct Tally {
    pub ran: usize,
    pub disagreed: usize,
    /// The first few disagreements, in full.
    pub first: Vec<String>,
}

/// Runs `cases` cases from `seed`, `concurrency` at a time.
pub async fn run_cases(target: &Target, seed: u64, cases: u64, concurrency: usize) -> anyhow::Result<Tally> {
    let chaos = Chaos::connect(&target.amqp_url).await?;
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<Option<String>> = futures_util::stream::iter(0..cases)
        .map(|k| {
            let chaos = &chaos;
            let done = &done;
            let failed = &failed;
            async move {
                let r = run_case(target, chaos, seed + k).await.err().map(|e| format!("{e:#}"));
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(e) = &r {
                    failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(seed = seed + k, error = %e.lines().next().unwrap_or_default(), "case disagreed");
                }
                if n.is_multiple_of(100) {
                    // A running total, so an interrupted soak still says how far it got.
                    let disagreed = failed.load(Ordering::Relaxed);
                    tracing::info!(cases = n, disagreed, seconds = started.elapsed().as_secs(), "soak progress");
                }
                r
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut tally = Tally { ran: results.len(), ..Default::default() };
    for e in results.into_iter().flatten() {
        tally.disagreed += 1;
        if tally.first.len() < 3 {
            tally.first.push(e);
        }
    }
    Ok(tally)
}

/// Starts every role, a second resolver and the emulator against `settings`.
pub async fn start_target(
    settings: &Settings,
    operator_token: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Target, Vec<crate::Running>)> {
    // The soak replays directory messages it reads back from the outbox: keep published rows.
    let settings = &Settings { outbox_keep_sent: std::time::Duration::from_secs(3600), ..settings.clone() };
    let running = crate::start(settings.clone(), Roles::ALL, shutdown.clone()).await?;
    let second =
        crate::start(settings.clone(), Roles { resolver: true, ..Default::default() }, shutdown.clone()).await?;
    let (emu_addr, _) =
        crate::start_emulator(SocketAddr::from(([127, 0, 0, 1], 0)), &running.tasks, shutdown.clone()).await?;
    let target = Target {
        base: format!("http://{}", running.addr),
        operator: AdminClient::new(format!("http://{}", running.addr), operator_token),
        emulator_url: format!("http://{emu_addr}"),
        store: running.store.clone(),
        amqp_url: settings.amqp_url.clone(),
        directory_exchange: settings.topology().directory_exchange(),
    };
    Ok((target, vec![running, second]))
}

pub async fn run(mut settings: Settings, args: SoakArgs) -> anyhow::Result<()> {
    settings.database_url = super::fresh_database(&settings.database_url, &args.database).await?;
    settings.amqp_prefix = format!("unseat-soak-{}", Uuid::new_v4().simple());
    let operator = unseat_store::tokens::generate("op");
    settings.admin_token = Some(operator.clone());
    let shutdown = CancellationToken::new();
    let (target, running) = start_target(&settings, &operator, &shutdown).await?;
    println!("running {} cases from seed {}, {} at a time ...", args.cases, args.seed, args.concurrency);
    let started = Instant::now();
    let tally = run_cases(&target, args.seed, args.cases, args.concurrency).await;
    let secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    for r in running {
        r.wait().await;
    }
    // The fleet's queues go, whether or not the run went well.
    super::delete_topology(&settings.amqp_url, &settings.topology()).await;
    let tally = tally?;
    println!("cases run:       {}", tally.ran);
    println!("disagreements:   {}", tally.disagreed);
    println!("time:            {secs:.0} s ({:.1} cases/s)", tally.ran as f64 / secs.max(0.001));
    for e in &tally.first {
        println!("---\n{e}");
    }
    if tally.disagreed > 0 {
        anyhow::bail!("{} of {} cases disagreed with the model", tally.disagreed, tally.ran);
    }
    Ok(())
}
