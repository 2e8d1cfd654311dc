//! The resolver against its real store, on generated cases: random directories, integrations
//! with and without role and asset ladders, grants (some naming roles the ladder no longer
//! has), and random sequences of IdP and console changes. Directory messages are delivered
//! late, shuffled and duplicated (same id) or replayed (new id), two at a time so that two
//! resolvers work concurrently, while later changes commit. After everything is delivered,
//! every (user, integration) desired state must equal the reference model's answer on the
//! final directory, and resolving everyone once more must change nothing.
//!
//! One database for all cases, a fresh tenant per case.

use std::collections::BTreeMap;

use chrono::Utc;
use futures_util::StreamExt;
use unseat::bench::scenario::{self, Assets, Directory, Options, Rng, Scenario, Step, Subject};
use unseat_bus::messages::{DirectoryChanged, Trigger, MESSAGE_VERSION};
use unseat_store::Store;
use uuid::Uuid;

/// Cases in the normal test run; `UNSEAT_PROPTEST_CASES` overrides it.
const CASES: u64 = 1000;
const CONCURRENT_CASES: usize = 12;
const CONNECTOR_EXCHANGE: &str = "prop.connector";

struct Ids {
    tenant: Uuid,
    users: Vec<Uuid>,
    teams: Vec<Uuid>,
    integrations: Vec<Uuid>,
}

impl Ids {
    fn subject(&self, s: Subject) -> (&'static str, Uuid) {
        match s {
            Subject::Team(t) => ("team", self.teams[t]),
            Subject::User(u) => ("user", self.users[u]),
        }
    }
}

async fn seed_store(store: &Store, s: &Scenario) -> anyhow::Result<Ids> {
    let ids = Ids {
        tenant: Uuid::new_v4(),
        users: (0..s.users).map(|_| Uuid::new_v4()).collect(),
        teams: (0..s.teams).map(|_| Uuid::new_v4()).collect(),
        integrations: s.integrations.iter().map(|_| Uuid::new_v4()).collect(),
    };
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    tx.execute("insert into tenants (id, name) values ($1, $2)", &[&ids.tenant, &format!("case {}", s.seed)]).await?;
    for (k, spec) in s.integrations.iter().enumerate() {
        tx.execute(
            "insert into integrations (tenant_id, id, name, app_kind, base_url, roles, asset_roles)
             values ($1, $2, $3, 'business_hub', 'http://127.0.0.1:9', $4, $5)",
            &[&ids.tenant, &ids.integrations[k], &format!("App {k}"), &spec.roles, &spec.asset_roles],
        )
        .await?;
        for a in &spec.assets {
            tx.execute(
                "insert into integration_assets (tenant_id, integration_id, asset_id, kind) values ($1, $2, $3, 'page')",
                &[&ids.tenant, &ids.integrations[k], a],
            )
            .await?;
        }
    }
    for (u, id) in ids.users.iter().enumerate() {
        tx.execute(
            "insert into scim_users (tenant_id, id, user_name, user_name_key, active, email, resource)
             values ($1, $2, $3, $3, $4, $3, '{}')",
            &[&ids.tenant, id, &format!("u{u}@example.com"), &s.initial.active[u]],
        )
        .await?;
    }
    for (t, id) in ids.teams.iter().enumerate() {
        tx.execute(
            "insert into scim_groups (tenant_id, id, display_name, display_name_key, resource) values ($1, $2, $3, $4, '{}')",
            &[&ids.tenant, id, &format!("Team {t}"), &format!("team {t}")],
        )
        .await?;
    }
    for (t, u) in &s.initial.members {
        tx.execute(
            "insert into group_members (tenant_id, group_id, user_id) values ($1, $2, $3)",
            &[&ids.tenant, &ids.teams[*t], &ids.users[*u]],
        )
        .await?;
    }
    for ((i, subject), (role, assets)) in &s.initial.grants {
        set_grant(&tx, &ids, *i, *subject, role, assets).await?;
    }
    tx.commit().await?;
    Ok(ids)
}

async fn set_grant(
    tx: &tokio_postgres::Transaction<'_>,
    ids: &Ids,
    i: usize,
    subject: Subject,
    role: &str,
    assets: &Assets,
) -> anyhow::Result<()> {
    let (kind, id) = ids.subject(subject);
    tx.execute(
        "insert into grants (tenant_id, id, integration_id, subject_kind, subject_id, role, assets)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (tenant_id, integration_id, subject_kind, subject_id) do update set role = $6, assets = $7",
        &[&ids.tenant, &Uuid::new_v4(), &ids.integrations[i], &kind, &id, &role, &serde_json::to_value(assets)?],
    )
    .await?;
    Ok(())
}

/// Makes one change in the store, as ingest or the console would (one transaction).
async fn apply(store: &Store, ids: &Ids, step: &Step) -> anyhow::Result<()> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let t = ids.tenant;
    match step {
        Step::AddMember { team, user } => {
            tx.execute(
                "insert into group_members (tenant_id, group_id, user_id) values ($1, $2, $3) on conflict do nothing",
                &[&t, &ids.teams[*team], &ids.users[*user]],
            )
            .await?;
        }
        Step::RemoveMember { team, user } => {
            tx.execute(
                "delete from group_members where tenant_id = $1 and group_id = $2 and user_id = $3",
                &[&t, &ids.teams[*team], &ids.users[*user]],
            )
            .await?;
        }
        Step::Deactivate { user } | Step::Reactivate { user } => {
            let active = matches!(step, Step::Reactivate { .. });
            tx.execute(
                "update scim_users set active = $3 where tenant_id = $1 and id = $2",
                &[&t, &ids.users[*user], &active],
            )
            .await?;
        }
        Step::DeleteUser { user } => {
            tx.execute("delete from scim_users where tenant_id = $1 and id = $2", &[&t, &ids.users[*user]]).await?;
        }
        Step::DeleteTeam { team } => {
            tx.execute("delete from scim_groups where tenant_id = $1 and id = $2", &[&t, &ids.teams[*team]]).await?;
        }
        Step::SetGrant { integration, subject, role, assets } => {
            set_grant(&tx, ids, *integration, *subject, role, assets).await?;
        }
        Step::Revoke { integration, subject } => {
            let (kind, id) = ids.subject(*subject);
            tx.execute(
                "delete from grants where tenant_id = $1 and integration_id = $2 and subject_kind = $3 and subject_id = $4",
                &[&t, &ids.integrations[*integration], &kind, &id],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

fn message(ids: &Ids, users: Vec<Uuid>, may_revoke: bool, summary: &str) -> DirectoryChanged {
    DirectoryChanged {
        v: MESSAGE_VERSION,
        message_id: Uuid::new_v4(),
        tenant_id: ids.tenant,
        scope: "workspace".into(),
        trigger: Trigger {
            method: "PATCH".into(),
            path: "/scim/v2/test".into(),
            user_agent: "property test".into(),
            received_at: Utc::now(),
            summary: summary.into(),
            may_revoke,
        },
        users,
    }
}

async fn deliver(store: &Store, m: Option<DirectoryChanged>, batch: usize) -> anyhow::Result<()> {
    if let Some(m) = m {
        unseat_resolver::resolve_in_batches(store, CONNECTOR_EXCHANGE, &m, batch).await?;
    }
    Ok(())
}

fn take(rng: &mut Rng, pending: &mut Vec<DirectoryChanged>) -> Option<DirectoryChanged> {
    if pending.is_empty() || !rng.chance(60) {
        None
    } else {
        let k = rng.below(pending.len());
        Some(pending.swap_remove(k))
    }
}

/// The desired state of every (user, integration) of the tenant, as (role, assets).
async fn desired(store: &Store, ids: &Ids) -> anyhow::Result<BTreeMap<(usize, usize), scenario::Expected>> {
    let client = store.client().await?;
    let rows = client
        .query(
            "select user_id, integration_id, desired_role, desired_assets from access_state where tenant_id = $1",
            &[&ids.tenant],
        )
        .await?;
    let mut out = BTreeMap::new();
    for r in rows {
        let (user, integration): (Uuid, Uuid) = (r.get(0), r.get(1));
        let u = ids.users.iter().position(|x| *x == user).expect("known user");
        let i = ids.integrations.iter().position(|x| *x == integration).expect("known integration");
        let role: Option<String> = r.get(2);
        let assets: Assets = serde_json::from_value(r.get(3))?;
        out.insert((u, i), role.map(|role| (role, assets)));
    }
    Ok(out)
}

/// Runs one case; Err describes the disagreement.
async fn run_case(store: &Store, seed: u64) -> anyhow::Result<()> {
    let s = scenario::generate(seed, &Options::store());
    let mut rng = Rng::new(seed ^ 0x5eed);
    // Small batches cross batch boundaries inside one message.
    let batch = 1 + rng.below(3);
    let ids = seed_store(store, &s).await?;
    let mut d: Directory = s.initial.clone();
    let mut pending = vec![message(&ids, ids.users.clone(), true, "initial")];
    let mut delivered: Vec<DirectoryChanged> = Vec::new();
    for step in &s.steps {
        let users: Vec<Uuid> = d.concerned(step).into_iter().map(|u| ids.users[u]).collect();
        let a = take(&mut rng, &mut pending);
        let b = take(&mut rng, &mut pending);
        delivered.extend(a.iter().chain(b.iter()).cloned());
        // Two resolvers at work while the next change commits.
        let (x, y, z) = tokio::join!(apply(store, &ids, step), deliver(store, a, batch), deliver(store, b, batch));
        x?;
        y?;
        z?;
        d.apply(step);
        if !users.is_empty() {
            pending.push(message(&ids, users, step.may_revoke(), &format!("{step:?}")));
        }
        if !delivered.is_empty() && rng.chance(15) {
            // A duplicate: the broker delivers the same message again.
            pending.push(rng.pick(&delivered).clone());
        }
        if !delivered.is_empty() && rng.chance(10) {
            // A late replay of an old hint under a new id.
            let mut replay = rng.pick(&delivered).clone();
            replay.message_id = Uuid::new_v4();
            pending.push(replay);
        }
    }
    rng.shuffle(&mut pending);
    while !pending.is_empty() {
        let a = pending.pop();
        let b = pending.pop();
        let (y, z) = tokio::join!(deliver(store, a, batch), deliver(store, b, batch));
        y?;
        z?;
    }
    let want = scenario::model(&s.integrations, &d);
    let got = desired(store, &ids).await?;
    for (key, expected) in &want {
        let actual = got.get(key).cloned().flatten();
        if &actual != expected {
            anyhow::bail!(
                "seed {seed}: user {} on integration {}: desired {actual:?}, model {expected:?}\nscenario: {s:#?}",
                key.0,
                key.1
            );
        }
    }
    // Quiet means quiet: resolving everyone again decides no change.
    let again = message(&ids, ids.users.clone(), false, "again");
    let r = unseat_resolver::resolve_in_batches(store, CONNECTOR_EXCHANGE, &again, batch).await?;
    if r.tasks_queued != 0 {
        anyhow::bail!("seed {seed}: resolving a quiet directory again queued {} tasks", r.tasks_queued);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_state_equals_the_model_under_duplicates_reordering_and_concurrency() {
    let (url, _) = unseat_store::testing::fresh_database().await.expect("database");
    // Durability is not under test here: commits need not wait for the disk.
    let store = Store::connect(&format!("{url}?options=-c%20synchronous_commit%3Doff"), 16).expect("pool");
    let base: u64 = std::env::var("UNSEAT_PROPTEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x0ACC_E550);
    let cases: u64 = std::env::var("UNSEAT_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(CASES);
    let failures: Vec<String> = futures_util::stream::iter(0..cases)
        .map(|k| {
            let store = store.clone();
            async move { run_case(&store, base + k).await.err().map(|e| format!("{e:#}")) }
        })
        .buffer_unordered(CONCURRENT_CASES)
        .filter_map(|e| async move { e })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of {cases} cases disagree with the model; first:\n{}",
        failures.len(),
        failures[0]
    );
}

/// A message resolved in batches resumes after the last committed batch when it is delivered
/// again (the first delivery died mid-way), and is a duplicate once finished.
#[tokio::test]
async fn a_redelivered_large_change_resumes_after_the_last_committed_batch() {
    let (_url, store) = unseat_store::testing::fresh_database().await.expect("database");
    let (ids, users, deleted) = admins_whose_team_is_deleted(&store, 3).await;
    // The first delivery committed its first batch (one user) and died.
    {
        let client = store.client().await.unwrap();
        client
            .execute(
                "insert into resolver_progress (tenant_id, message_id, users_done) values ($1, $2, 1)",
                &[&ids.tenant, &deleted.message_id],
            )
            .await
            .unwrap();
    }
    let r = unseat_resolver::resolve_in_batches(&store, CONNECTOR_EXCHANGE, &deleted, 1).await.expect("resume");
    assert!(r.fresh);
    assert_eq!(r.decisions(), 2, "only the users after the committed batch are decided again");
    assert_eq!(removed(&store, &ids, &deleted).await, users[1..].to_vec());
    let again = unseat_resolver::resolve_in_batches(&store, CONNECTOR_EXCHANGE, &deleted, 1).await.expect("again");
    assert!(!again.fresh);
    assert_eq!(again.decisions(), 0);
}

/// Batches may be worked on two at a time, but commit in order: when one fails, the batch after
/// it (already locked and decided) writes nothing, the progress stops before the failed one,
/// and the redelivery finishes the message with exactly one task per user.
#[tokio::test]
async fn a_failed_batch_stops_the_message_there_and_the_redelivery_finishes_it_once() {
    let (_url, store) = unseat_store::testing::fresh_database().await.expect("database");
    let (ids, users, deleted) = admins_whose_team_is_deleted(&store, 6).await;
    let client = store.client().await.unwrap();
    client
        .batch_execute(&format!(
            "create function fail_for_user() returns trigger language plpgsql as $$
             begin if new.user_id = '{}' then raise exception 'injected failure'; end if; return new; end $$;
             create trigger fail_task before insert on tasks for each row execute function fail_for_user();",
            users[3]
        ))
        .await
        .unwrap();
    let failed = unseat_resolver::resolve_in_batches(&store, CONNECTOR_EXCHANGE, &deleted, 1).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(
        removed(&store, &ids, &deleted).await,
        users[..3].to_vec(),
        "the batches before the failed one, and none after it"
    );
    let done: i64 = client
        .query_one(
            "select users_done from resolver_progress where tenant_id = $1 and message_id = $2",
            &[&ids.tenant, &deleted.message_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(done, 3);

    client.batch_execute("drop trigger fail_task on tasks").await.unwrap();
    let r = unseat_resolver::resolve_in_batches(&store, CONNECTOR_EXCHANGE, &deleted, 1).await.expect("redelivery");
    assert_eq!(r.decisions(), 3);
    assert_eq!(removed(&store, &ids, &deleted).await, users, "one removal per user");
}

/// Two deliveries of one message at once (a redelivery reaching a second resolver while the
/// first still works on it) must not deadlock: a resolver locks the message's users before it
/// inserts the job, so one that waits for a user holds nothing another resolver needs. The
/// test holds a user's lock itself, so what a waiting resolver holds can be looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_waiting_for_a_user_has_written_nothing_and_both_deliveries_finish() {
    let (_url, store) = unseat_store::testing::fresh_database().await.expect("database");
    let (ids, users, deleted) = admins_whose_team_is_deleted(&store, 2).await;
    let holder = store.client().await.unwrap();
    let user_lock = [ids.tenant.to_string(), users[0].to_string()];
    holder
        .execute("select pg_advisory_lock(hashtext($1::text), hashtext($2::text))", &[&user_lock[0], &user_lock[1]])
        .await
        .unwrap();
    let deliver = || {
        let (store, message) = (store.clone(), deleted.clone());
        tokio::spawn(async move { unseat_resolver::resolve(&store, CONNECTOR_EXCHANGE, &message).await })
    };
    // The backends of this database waiting for an advisory lock.
    let waiting = || async {
        let rows = holder
            .query(
                "select pid from pg_locks where locktype = 'advisory' and not granted
                  and database = (select oid from pg_database where datname = current_database())",
                &[],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>()
    };
    let until_waiting = |n: usize| async move {
        for _ in 0..1000 {
            let pids = waiting().await;
            if pids.len() >= n {
                return pids;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{n} resolvers never waited for the user's lock");
    };

    let first = deliver();
    let pid = until_waiting(1).await[0];
    let written: i64 = holder
        .query_one(
            "select count(*) from pg_locks l join pg_class c on c.oid = l.relation
              where l.pid = $1 and l.mode = 'RowExclusiveLock' and c.relname in ('jobs', 'tasks', 'resolver_progress')",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, 0, "the resolver waiting for a user has already written (the job) in its transaction");

    let second = deliver();
    until_waiting(2).await;
    holder
        .execute("select pg_advisory_unlock(hashtext($1::text), hashtext($2::text))", &[&user_lock[0], &user_lock[1]])
        .await
        .unwrap();
    let (a, b) = (first.await.unwrap(), second.await.unwrap());
    let (a, b) = (a.expect("first delivery"), b.expect("second delivery"));
    let mut decided = [(a.fresh, a.decisions()), (b.fresh, b.decisions())];
    decided.sort();
    assert_eq!(decided, [(false, 0), (true, 2)], "one delivery decides both users, the other is a duplicate");
    assert_eq!(removed(&store, &ids, &deleted).await, users, "one removal per user");
}

/// `n` users in one team granting ADMIN on one integration, resolved so each holds it; then the
/// team is deleted. Returns the ids, the users in the order the resolver works through them,
/// and the (not yet resolved) message announcing the deletion.
async fn admins_whose_team_is_deleted(store: &Store, n: usize) -> (Ids, Vec<Uuid>, DirectoryChanged) {
    let s = Scenario {
        seed: 0,
        integrations: vec![scenario::IntegrationSpec {
            roles: vec!["ADMIN".into()],
            asset_roles: vec![],
            assets: vec![],
        }],
        users: n,
        teams: 1,
        initial: Directory {
            active: vec![true; n],
            deleted: vec![false; n],
            team_deleted: vec![false],
            members: (0..n).map(|u| (0, u)).collect(),
            grants: [((0, Subject::Team(0)), ("ADMIN".to_string(), Assets::new()))].into_iter().collect(),
        },
        steps: vec![],
    };
    let ids = seed_store(store, &s).await.expect("seed");
    let grant_all = message(&ids, ids.users.clone(), false, "granted");
    unseat_resolver::resolve(store, CONNECTOR_EXCHANGE, &grant_all).await.expect("grant");
    apply(store, &ids, &Step::DeleteTeam { team: 0 }).await.expect("delete team");
    let mut users = ids.users.clone();
    users.sort();
    let deleted = message(&ids, users.clone(), true, "team deleted");
    (ids, users, deleted)
}

/// The users `message`'s job removes, in id order.
async fn removed(store: &Store, ids: &Ids, message: &DirectoryChanged) -> Vec<Uuid> {
    let client = store.client().await.unwrap();
    client
        .query(
            "select user_id from tasks where tenant_id = $1 and job_id = $2 and outcome = 'remove' order by user_id",
            &[&ids.tenant, &message.message_id],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}
