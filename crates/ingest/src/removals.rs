//! Group member removals written by group commit. An IdP removing many people from one large
//! group sends one PATCH per member, and each must lock the group row: one transaction each
//! would queue them all on that lock. Instead, removals that arrive together share one
//! transaction: it locks their groups once (in id order), deletes every named membership,
//! bumps each changed group's version once, and writes one outbox row per request that removed
//! someone, each naming only the users that request removed (a user two requests name is
//! removed by the first). Each request's answer is its group's version after the commit.

use crate::coalesce::{failed_batch, Writers};
use crate::{ApiError, Ctx};
use std::collections::{HashMap, HashSet};
use unseat_scim::ScimError;
use unseat_store::directory::{self as dir, Dir, Member};
use unseat_store::outbox::{self, NewRow};
use unseat_store::Store;
use unseat_telemetry::{KindLabels, Metrics};
use uuid::Uuid;

/// Most requests one transaction takes.
const MAX_BATCH: usize = 256;
/// Most writes in flight at once; a second starts only while [`SPILL`] requests wait, and
/// never with a group the first holds (see `coalesce`).
pub(crate) const WRITES: usize = 2;
/// Waiting requests that start a second write beside the one in flight.
const SPILL: usize = 16;

/// One PATCH that only removes members, from a group of the caller's directory.
pub(crate) struct Removal {
    pub ctx: Ctx,
    pub group_id: Uuid,
    pub users: Vec<Uuid>,
}

/// The group's version after the commit, or why not: 404 when there is no such group.
pub(crate) type Removed = Result<i64, ScimError>;

#[derive(Clone)]
pub(crate) struct Removals(Writers<Removal, Removed>);

impl Removals {
    pub fn new(store: Store, exchange: String, metrics: &Metrics) -> Self {
        let sizes =
            metrics.scim_group_commit_changes.get_or_create(&KindLabels { kind: "member_removals".into() }).clone();
        Self(Writers::new(WRITES, SPILL, MAX_BATCH, sizes, move |batch: Vec<Removal>| {
            let (store, exchange) = (store.clone(), exchange.clone());
            async move {
                match write(&store, &exchange, &batch).await {
                    Ok(answers) => answers,
                    Err(err) => failed_batch(err, batch.len(), "member removals"),
                }
            }
        }))
    }

    pub async fn submit(&self, r: Removal) -> Removed {
        self.0.submit(r.group_id, r).await
    }
}

fn name(m: &Member) -> &str {
    m.email.as_deref().unwrap_or(&m.user_name)
}

async fn write(store: &Store, exchange: &str, batch: &[Removal]) -> Result<Vec<Removed>, ApiError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let mut keys: Vec<(Dir, Uuid)> = batch.iter().map(|r| (r.ctx.dir, r.group_id)).collect();
    keys.sort_by_key(|(d, g)| (*g, d.tenant_id, d.integration));
    keys.dedup();
    let groups = dir::lock_groups(&tx, &keys).await?;
    let pairs: Vec<(Uuid, Uuid, Uuid)> = batch
        .iter()
        .filter(|r| groups.contains_key(&(r.ctx.dir, r.group_id)))
        .flat_map(|r| r.users.iter().map(move |u| (r.ctx.dir.tenant_id, r.group_id, *u)))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // (tenant, group, user) → the removed member, until a request claims it.
    let mut gone: HashMap<(Uuid, Uuid, Uuid), Member> = HashMap::new();
    for (tenant, group, member) in dir::remove_memberships(&tx, &pairs).await? {
        gone.insert((tenant, group, member.user_id), member);
    }
    // In request order, as if one after another: each request that removed someone bumps its
    // group's version by one and is answered the version it made; one that removed nobody is
    // answered the version it found.
    let mut versions: HashMap<(Dir, Uuid), i64> = groups.iter().map(|(k, g)| (*k, g.version)).collect();
    let mut bumps: HashMap<(Dir, Uuid), i64> = HashMap::new();
    let mut messages = Vec::new();
    let mut answers = Vec::with_capacity(batch.len());
    for r in batch {
        let key = (r.ctx.dir, r.group_id);
        let (Some(group), Some(version)) = (groups.get(&key), versions.get_mut(&key)) else {
            answers.push(Err(ScimError::not_found(format!("no group {}", r.group_id))));
            continue;
        };
        let mut removed: Vec<Member> = Vec::new();
        for u in &r.users {
            if let Some(m) = gone.remove(&(r.ctx.dir.tenant_id, r.group_id, *u)) {
                removed.push(m);
            }
        }
        if !removed.is_empty() {
            *version += 1;
            *bumps.entry(key).or_default() += 1;
            let summary = match removed.as_slice() {
                [one] => format!("{} removed from group {}", name(one), group.display_name),
                many => format!("{} removed from group {}", crate::members(many.len()), group.display_name),
            };
            let users = removed.iter().map(|m| m.user_id).collect();
            let (message_id, payload) = crate::directory_message(&r.ctx, summary.clone(), users, true)?;
            tracing::info!(tenant = %r.ctx.tenant_id, %message_id, summary = %summary, "directory change recorded");
            messages.push((r.ctx.tenant_id, message_id, payload));
        }
        answers.push(Ok(*version));
    }
    if !bumps.is_empty() {
        dir::touch_groups(&tx, &bumps.into_iter().collect::<Vec<_>>()).await?;
    }
    let rows: Vec<NewRow<'_>> = messages
        .iter()
        .map(|(t, m, p)| NewRow {
            tenant_id: *t,
            message_id: *m,
            exchange,
            routing_key: unseat_bus::DIRECTORY_ROUTING_KEY,
            payload: p,
        })
        .collect();
    outbox::enqueue_many(&tx, &rows).await?;
    tx.commit().await?;
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use unseat_store::directory::{GroupFields, UserFields};
    use unseat_store::testing::fresh_database;

    fn ctx(dir: Dir) -> Ctx {
        Ctx {
            tenant_id: dir.tenant_id,
            dir,
            method: "PATCH".into(),
            path: "/scim/v2/Groups/x".into(),
            user_agent: "test".into(),
            received_at: chrono::Utc::now(),
            base: "http://x/scim/v2".into(),
        }
    }

    /// One batch as if its requests had come one after another: each request names only the
    /// members it removed, versions count the requests that changed a group, a missing group
    /// fails only its own request, another directory's group is not reachable.
    #[tokio::test]
    async fn a_batch_answers_each_request_as_if_they_came_in_turn() {
        let (_url, store) = fresh_database().await.unwrap();
        let mut c = store.client().await.unwrap();
        let t = Uuid::new_v4();
        c.execute("insert into tenants (id, name) values ($1, 'T')", &[&t]).await.unwrap();
        let ws = Dir::workspace(t);
        let tx = c.transaction().await.unwrap();
        let mut users = Vec::new();
        for i in 0..4 {
            let name = format!("u{i}@x.io");
            let res = json!({"userName": name});
            let f =
                UserFields { user_name: &name, external_id: None, active: true, email: Some(&name), resource: &res };
            users.push(dir::insert_user(&tx, ws, Uuid::new_v4(), f).await.unwrap().id);
        }
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for (g, name) in [(a, "Alpha"), (b, "Beta")] {
            let f = GroupFields { display_name: name, external_id: None, resource: &json!({}) };
            dir::insert_group(&tx, ws, g, f).await.unwrap();
            dir::add_members(&tx, ws, g, &users).await.unwrap();
        }
        tx.commit().await.unwrap();

        let removal = |dir, group_id, users: &[Uuid]| Removal { ctx: ctx(dir), group_id, users: users.to_vec() };
        let other_scope = Dir::integration(t, Uuid::new_v4());
        let batch = vec![
            removal(ws, a, &[users[0], users[1]]),
            removal(ws, a, &[users[1]]),
            removal(ws, b, &[users[2]]),
            removal(ws, Uuid::new_v4(), &[users[0]]),
            removal(other_scope, b, &[users[3]]),
            removal(ws, a, &[users[2]]),
        ];
        let answers = write(&store, "t.directory", &batch).await.unwrap();
        let versions: Vec<Option<i64>> = answers.iter().map(|a| a.as_ref().ok().copied()).collect();
        assert_eq!(versions, vec![Some(2), Some(2), Some(2), None, None, Some(3)]);
        assert_eq!(answers[3].as_ref().unwrap_err().status, 404);
        assert_eq!(answers[4].as_ref().unwrap_err().status, 404, "the group is in another directory");

        let tx = c.transaction().await.unwrap();
        let left = |g| {
            let tx = &tx;
            async move {
                let mut m: Vec<Uuid> = dir::group_members(tx, ws, g).await.unwrap().iter().map(|m| m.user_id).collect();
                m.sort();
                m
            }
        };
        let mut want_a = vec![users[3]];
        want_a.sort();
        let mut want_b = vec![users[0], users[1], users[3]];
        want_b.sort();
        assert_eq!(left(a).await, want_a);
        assert_eq!(left(b).await, want_b);
        assert_eq!(dir::get_group(&tx, ws, a).await.unwrap().unwrap().version, 3);
        assert_eq!(dir::get_group(&tx, ws, b).await.unwrap().unwrap().version, 2);
        tx.commit().await.unwrap();

        let announced: Vec<(String, Vec<String>)> = c
            .query(
                "select payload->'trigger'->>'summary', array(select jsonb_array_elements_text(payload->'users'))
                   from outbox where tenant_id = $1 order by id",
                &[&t],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let ids = |us: &[Uuid]| us.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        assert_eq!(
            announced,
            vec![
                ("2 members removed from group Alpha".to_string(), ids(&[users[0], users[1]])),
                ("u2@x.io removed from group Beta".to_string(), ids(&[users[2]])),
                ("u2@x.io removed from group Alpha".to_string(), ids(&[users[2]])),
            ],
            "one row per request that removed someone, naming only what it removed"
        );
    }
}
