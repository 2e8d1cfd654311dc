//! The resolver: consumes directory changes from RabbitMQ, recomputes the effective access of
//! every named user from the *current* state (invariant 1: messages are hints), and, per
//! (integration, user), records the new desired state with a version, opens the Automation Log
//! entries, and queues one connector task per change through the outbox.
//!
//! A message's users are worked through in batches of [`BATCH_USERS`], one PostgreSQL
//! transaction each (two in flight when the pool has a connection to spare, committing in
//! order), with the progress mark committed in the same transaction; the delivery is
//! acked only after the last batch commits (invariant 2). A redelivered message resumes after
//! the last committed batch, and a finished one changes nothing. The job id is the message id:
//! one job per trigger however many batches it takes. A batch costs a fixed number of
//! statements whatever its size (see [`resolve_in_batches`]); the progress rows of finished
//! messages are purged after [`ResolverConfig::progress_retention`].
//!
//! [`plan`] is the decision without the writes; the console's explain and preview endpoints use
//! it, so what an admin is shown is what the resolver does.

pub mod assignments;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use unseat_bus::messages::{
    ConnectorTask, DirectoryChanged, DirectoryChanges, DIRECTORY_CHANGES_TYPE, MESSAGE_VERSION,
};
use unseat_bus::{ConsumerSettings, Delivery, Topology};
use unseat_domain::{
    address_changed, decide, lost_grants, same_address, Access, AccessModel, AssetLadder, AssetMap, Decision, Grant,
    GrantSource, Held, Outcome, RoleLadder, UserStatus,
};
use unseat_store::access::{self, NewJob, NewTask, Progress};
use unseat_store::{outbox, Client, Store, StoreError, Transaction};
use unseat_telemetry::{Metrics, OutcomeLabels};
use uuid::Uuid;

/// Settings of a resolver worker.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    pub prefetch: u16,
    pub grace: Duration,
    /// How long the progress row of a finished message is kept (it is what recognises a
    /// redelivery of that message); older ones are purged.
    pub progress_retention: Duration,
    /// How often the purge runs.
    pub progress_sweep_every: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            prefetch: 8,
            grace: Duration::from_secs(30),
            progress_retention: Duration::from_secs(24 * 3600),
            progress_sweep_every: Duration::from_secs(3600),
        }
    }
}

/// Progress rows deleted per statement by [`sweep_progress`].
const SWEEP_CHUNK: i64 = 10_000;

/// Deletes the progress rows of messages finished more than `keep` ago, a chunk per statement,
/// and returns how many went. Unfinished rows stay.
pub async fn sweep_progress(store: &Store, keep: Duration) -> Result<u64, StoreError> {
    let mut purged = 0;
    loop {
        let n = access::purge_finished_progress(store, keep, SWEEP_CHUNK).await?;
        purged += n;
        if n < SWEEP_CHUNK as u64 {
            return Ok(purged);
        }
    }
}

async fn sweep_loop(store: Store, keep: Duration, every: Duration, shutdown: CancellationToken) {
    loop {
        match sweep_progress(&store, keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "purged the progress of finished directory messages"),
            Err(error) => tracing::warn!(%error, "purging finished resolver progress failed; trying again later"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// What handling one message did (counts only: a large change must not be held in memory).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// False when this delivery committed nothing: the message had been handled before, or
    /// another delivery of it handled it meanwhile.
    pub fresh: bool,
    /// Decisions logged, by outcome: remove, keep, update, grant.
    pub outcomes: [usize; 4],
    pub tasks_queued: usize,
}

impl Resolved {
    const OUTCOMES: [Outcome; 4] = [Outcome::Remove, Outcome::Keep, Outcome::Update, Outcome::Grant];

    fn count(&mut self, outcome: Outcome) {
        if let Some(i) = Self::OUTCOMES.iter().position(|o| *o == outcome) {
            self.outcomes[i] += 1;
        }
    }

    /// Adds a batch's counts.
    fn add(&mut self, batch: &Resolved) {
        for (total, n) in self.outcomes.iter_mut().zip(batch.outcomes) {
            *total += n;
        }
        self.tasks_queued += batch.tasks_queued;
    }

    /// Every decision logged.
    pub fn decisions(&self) -> usize {
        self.outcomes.iter().sum()
    }

    /// (outcome, how many) for each outcome that occurred.
    pub fn by_outcome(&self) -> impl Iterator<Item = (Outcome, usize)> + '_ {
        Self::OUTCOMES.into_iter().zip(self.outcomes).filter(|(_, n)| *n > 0)
    }
}

/// Consumes the resolver queue until `shutdown` fires.
pub async fn run(
    store: Store,
    amqp_url: String,
    topology: Topology,
    metrics: Arc<Metrics>,
    config: ResolverConfig,
    shutdown: CancellationToken,
) {
    let settings = ConsumerSettings {
        url: amqp_url,
        queue: topology.resolver_queue(),
        topology: topology.clone(),
        prefetch: config.prefetch,
        grace: config.grace,
        name: "resolver".into(),
    };
    let worker = Arc::new(Worker {
        store: store.clone(),
        connector_exchange: topology.connector_exchange(),
        metrics,
        slots: tokio::sync::Semaphore::new(usize::from(config.prefetch.max(1))),
    });
    let sweep = tokio::spawn(sweep_loop(
        store.clone(),
        config.progress_retention,
        config.progress_sweep_every,
        shutdown.clone(),
    ));
    unseat_bus::consume(settings, shutdown, move |delivery: Delivery| {
        let worker = worker.clone();
        async move { worker.handle_delivery(delivery).await }
    })
    .await;
    sweep.abort();
}

/// What became of a delivery's change(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Handled {
    /// Committed (or found handled before): ack.
    Done,
    /// Can never be handled (unreadable, another version): dead-letter, kept for a person.
    Rejected,
    /// Failed and rolled back: requeue, to try again.
    Retry,
}

/// Changes of one packed delivery resolved at the same time.
const PACKED_CONCURRENCY: usize = 4;

/// What every delivery of one resolver needs.
struct Worker {
    store: Store,
    connector_exchange: String,
    metrics: Arc<Metrics>,
    /// Changes resolved at once, packed or not: the prefetch, as when every change came alone,
    /// so packed deliveries do not take more of the pool than single ones did.
    slots: tokio::sync::Semaphore,
}

impl Worker {
    async fn handle_delivery(&self, delivery: Delivery) {
        let packed = delivery.properties.kind().as_ref().is_some_and(|k| k.as_str() == DIRECTORY_CHANGES_TYPE);
        let handled = if packed {
            self.handle_packed(&delivery.data).await
        } else {
            self.handle_change(serde_json::from_slice(&delivery.data)).await
        };
        match handled {
            Handled::Done => {
                if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
                    tracing::warn!(%error, "ack failed after commit; the redelivery will be recognised as a duplicate");
                }
            }
            // The queue's delivery limit dead-letters a message that keeps failing.
            Handled::Retry => {
                let _ = delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
            }
            Handled::Rejected => {
                let _ = delivery.acker.nack(BasicNackOptions { requeue: false, ..Default::default() }).await;
            }
        }
    }

    /// A delivery of several changes ([`unseat_bus::messages::DirectoryChanges`], packed by the
    /// relay): each is handled as if it had come alone, a few at a time. If any failed, the
    /// delivery is requeued (the changes already committed are recognised as handled when it
    /// comes back); if none failed but one could not be read, it is dead-lettered after the others
    /// were handled, so the unreadable one is kept.
    async fn handle_packed(&self, data: &[u8]) -> Handled {
        let packed: DirectoryChanges =
            match self
                .accept("packed directory message", serde_json::from_slice(data), |p: &DirectoryChanges| (p.v, None))
            {
                Ok(p) => p,
                Err(handled) => return handled,
            };
        futures_util::stream::iter(packed.changes)
            .map(|change| self.handle_change(serde_json::from_str(change.get())))
            .buffer_unordered(PACKED_CONCURRENCY)
            .fold(Handled::Done, |worst, handled| async move { worst.max(handled) })
            .await
    }

    /// `parsed` when it is a message this build handles; otherwise it is logged and counted as
    /// rejected (to be dead-lettered, kept for a person). `version` reads the message's version
    /// and, where it has one, its message id, which the log then names.
    fn accept<T>(
        &self,
        what: &str,
        parsed: serde_json::Result<T>,
        version: impl Fn(&T) -> (u32, Option<Uuid>),
    ) -> Result<T, Handled> {
        let rejected = |error: &dyn std::fmt::Display, message_id: Option<Uuid>| {
            let message_id = message_id.map(tracing::field::display);
            tracing::error!(%error, message_id, "{what} not handled; dead-lettering it");
            count(&self.metrics, "rejected");
            Handled::Rejected
        };
        let message = parsed.map_err(|error| rejected(&format_args!("unreadable: {error}"), None))?;
        match version(&message) {
            (MESSAGE_VERSION, _) => Ok(message),
            (v, message_id) => Err(rejected(&format_args!("unsupported version {v}"), message_id)),
        }
    }

    /// Resolves one change, counting and logging what happened.
    async fn handle_change(&self, message: serde_json::Result<DirectoryChanged>) -> Handled {
        let metrics = &self.metrics;
        let message = match self.accept("directory message", message, |m| (m.v, Some(m.message_id))) {
            Ok(m) => m,
            Err(handled) => return handled,
        };
        // Never closed, so the permit always comes.
        let _slot = self.slots.acquire().await;
        match resolve(&self.store, &self.connector_exchange, &message).await {
            Ok(resolved) => {
                for (outcome, n) in resolved.by_outcome() {
                    metrics
                        .resolver_decisions
                        .get_or_create(&OutcomeLabels { outcome: outcome.as_str().into() })
                        .inc_by(n as u64);
                }
                count(metrics, if resolved.fresh { "resolved" } else { "duplicate" });
                tracing::debug!(
                    message_id = %message.message_id,
                    users = message.users.len(),
                    decisions = resolved.decisions(),
                    queued = resolved.tasks_queued,
                    fresh = resolved.fresh,
                    "directory change resolved"
                );
                Handled::Done
            }
            Err(error) if error.is_foreign_key_violation() => {
                // An integration (or user) deleted while this change was resolved: expected
                // when an admin deletes one mid-stream; the next try no longer sees it.
                tracing::info!(message_id = %message.message_id, "something the change named was deleted meanwhile; resolving again");
                count(metrics, "retried");
                Handled::Retry
            }
            Err(error) => {
                // The transaction rolled back; the delivery is requeued so it is tried again.
                tracing::warn!(error = %error, message_id = %message.message_id, "resolving failed; requeueing");
                count(metrics, "retried");
                Handled::Retry
            }
        }
    }
}

fn count(metrics: &Metrics, outcome: &str) {
    metrics.resolver_messages.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
}

/// Users resolved per transaction. A change naming more (a deleted group of 100,000 members)
/// is worked through in batches of this size, each committed on its own, so neither memory nor
/// a transaction grows with the group.
pub const BATCH_USERS: usize = 500;

/// Handles one directory change: see the crate docs. The users are sorted and deduplicated and
/// worked through in batches of [`BATCH_USERS`]; each batch commits its decisions, its tasks,
/// its outbox rows and the progress mark together, so a crash or a redelivery resumes after
/// the last committed batch and never decides a batch twice.
pub async fn resolve(
    store: &Store,
    connector_exchange: &str,
    message: &DirectoryChanged,
) -> Result<Resolved, StoreError> {
    resolve_in_batches(store, connector_exchange, message, BATCH_USERS).await
}

/// [`resolve`] with a chosen batch size (tests use small batches to cross batch boundaries).
///
/// Per batch, in one transaction: the job and the per-user locks (together), the reads of
/// [`plan`] (four statements together, then the integrations), the decisions, then the
/// progress row (one upsert that locks it and says whether this batch is the next one), the
/// writes of the plan (at most four statements together: desired states, grants behind
/// unchanged states, tasks with their first events, outbox rows), the progress mark, the
/// commit. Statements are prepared once per connection.
///
/// With a second connection free in the pool, two batches are in flight on two PostgreSQL
/// backends: both read, are decided and write at the same time (their users differ, and
/// each holds its users' locks). Batches still commit in order: each takes the progress row
/// only after it wrote, and the one before holds it until it commits; a batch that then
/// finds the progress somewhere else (its predecessor failed, or another resolver moved on)
/// rolls back, and the message continues from the progress as it is.
pub async fn resolve_in_batches(
    store: &Store,
    connector_exchange: &str,
    message: &DirectoryChanged,
    batch: usize,
) -> Result<Resolved, StoreError> {
    let users: Vec<Uuid> = message.users.iter().copied().collect::<BTreeSet<Uuid>>().into_iter().collect();
    let run = Batches { connector_exchange, message, users: &users, size: batch.max(1) };
    let mut resolved = Resolved::default();
    let mut clients = vec![store.client().await?];
    loop {
        let progress = access::read_progress(&clients[0], message.tenant_id, message.message_id).await?;
        if progress.finished {
            return Ok(resolved);
        }
        let done = usize::try_from(progress.users_done).unwrap_or(usize::MAX).min(users.len());
        if clients.len() < 2 && users.len() - done > run.size {
            clients.extend(store.spare_client().await);
        }
        if run.from(done, &mut clients, &mut resolved).await? {
            return Ok(resolved);
        }
    }
}

/// One message's users, worked through in batches of `size`.
struct Batches<'a> {
    connector_exchange: &'a str,
    message: &'a DirectoryChanged,
    users: &'a [Uuid],
    size: usize,
}

/// Where a batch stands among those in flight: it may take the progress row once `after`
/// resolves (the batch before took it, or ended), and tells the batch after through
/// `took_progress` (dropping it, on any early return, tells it too).
struct Order {
    after: Option<oneshot::Receiver<()>>,
    took_progress: oneshot::Sender<()>,
}

/// How one batch ended.
enum Batch {
    /// Committed; `finished` when it was the message's last.
    Committed { finished: bool, counts: Resolved },
    /// Not the next batch after all: rolled back, nothing written.
    Stale,
}

impl Batches<'_> {
    /// Works through the batches from user `start`, one in flight per client. True when the
    /// message is finished; false when a batch found the progress elsewhere (read it again).
    async fn from(&self, start: usize, clients: &mut Vec<Client>, resolved: &mut Resolved) -> Result<bool, StoreError> {
        let mut in_flight = futures_util::stream::FuturesOrdered::new();
        let (mut next, mut stop, mut finished, mut failed) = (start, false, false, None);
        // Each batch takes the progress row only after the batch before it has (see `run`).
        let mut turn: Option<oneshot::Receiver<()>> = None;
        // The first batch runs alone: it may create the job row, and a batch beside it would
        // wait for that row's commit while the first waits for it to take its turn.
        let mut alone = true;
        loop {
            while !stop && (!alone || in_flight.is_empty()) {
                let Some(client) = clients.pop() else { break };
                let end = (next + self.size).min(self.users.len());
                let (took_progress, successor_turn) = oneshot::channel();
                let order = Order { after: turn.replace(successor_turn), took_progress };
                in_flight.push_back(self.one(client, next, end, order));
                stop = end == self.users.len();
                next = end;
            }
            let Some((client, result)) = in_flight.next().await else { break };
            alone = false;
            clients.push(client);
            match result {
                Ok(Batch::Committed { finished: last, counts }) => {
                    // This delivery did some of the work; one that only found batches
                    // committed by another (a redelivery racing it) stays a duplicate.
                    resolved.fresh = true;
                    resolved.add(&counts);
                    finished |= last;
                }
                // Whatever is still in flight finds the same (or rolls back after the error).
                Ok(Batch::Stale) => stop = true,
                Err(error) => {
                    stop = true;
                    failed.get_or_insert(error);
                }
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(finished),
        }
    }

    async fn one(
        &self,
        mut client: Client,
        start: usize,
        end: usize,
        order: Order,
    ) -> (Client, Result<Batch, StoreError>) {
        let result = self.run(&mut client, start, end, order).await;
        (client, result)
    }

    async fn run(&self, client: &mut Client, start: usize, end: usize, order: Order) -> Result<Batch, StoreError> {
        let message = self.message;
        let tenant = message.tenant_id;
        let tx = client.transaction().await?;
        // Every batch makes sure the job exists (the first one creates it), so a batch's tasks
        // always have their job.
        let job = NewJob {
            tenant_id: tenant,
            id: message.message_id,
            scope: &message.scope,
            method: &message.trigger.method,
            path: &message.trigger.path,
            user_agent: &message.trigger.user_agent,
            summary: &message.trigger.summary,
            received_at: message.trigger.received_at,
        };
        let chunk = &self.users[start..end];
        // Users first, then the job: a second delivery of the message (another resolver) may
        // have inserted the job and not committed yet, and waiting for it while holding users
        // it waits for is a deadlock (the soak saw PostgreSQL break a few, each a requeue).
        access::lock_users(&tx, tenant, chunk).await?;
        access::insert_job(&tx, &job).await?;
        let plan = if message.scope == unseat_store::directory::WORKSPACE {
            plan(&tx, tenant, chunk).await?
        } else {
            assignments::plan(&tx, tenant, &message.scope, chunk).await?
        };
        let writes = Writes::of(message, &plan)?;
        writes.write(&tx, tenant, self.connector_exchange).await?;
        // The batch before holds the progress row until it commits. Were this batch to take
        // the row first (its writes may finish sooner), it would find the progress short of it
        // and throw its work away; so it waits until the batch before has the row (or ended).
        if let Some(after) = order.after {
            let _ = after.await;
        }
        let progress = access::lock_progress(&tx, tenant, message.message_id).await?;
        let _ = order.took_progress.send(());
        let done = usize::try_from(progress.users_done).unwrap_or(usize::MAX).min(self.users.len());
        if progress.finished || done != start {
            tx.rollback().await?;
            return Ok(Batch::Stale);
        }
        let finished = end == self.users.len();
        if finished {
            // Nothing to show when the change touched nobody's access.
            access::delete_job_if_empty(&tx, tenant, message.message_id).await?;
        }
        access::save_progress(&tx, tenant, message.message_id, Progress { users_done: end as i64, finished }).await?;
        tx.commit().await?;
        Ok(Batch::Committed { finished, counts: writes.counts })
    }
}

/// Everything decided about one (user, integration), from the current state.
#[derive(Debug, Clone)]
pub struct Planned {
    pub user_id: Uuid,
    pub integration_id: Uuid,
    /// The address the app knows the user by (from the directory, or the stored state for a
    /// deleted user); None when neither knows it.
    pub email: Option<String>,
    pub status: UserStatus,
    /// Every grant that reaches the user on this integration (valid or not).
    pub grants: Vec<Grant>,
    /// What the grants give now.
    pub now: Option<Access>,
    /// The stored desired state.
    pub row: Option<access::AccessRow>,
    /// None when there is nothing to say (no access before, none now).
    pub decision: Option<Decision>,
}

/// The decisions for a batch of users, with the integrations they concern.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub integrations: BTreeMap<Uuid, access::IntegrationFacts>,
    pub items: Vec<Planned>,
}

/// Loads the current state of `users` (a fixed number of queries for the whole batch) and
/// decides, per (user, integration) that has a grant or a stored desired state, with the
/// domain rules. Writes nothing: the resolver writes the plan, the console's explain and
/// preview endpoints show it.
pub async fn plan(tx: &Transaction<'_>, tenant: Uuid, users: &[Uuid]) -> Result<Plan, StoreError> {
    if users.is_empty() {
        return Ok(Plan::default());
    }
    // Issued together: the connection pipelines them.
    let (facts, memberships, subject_grants, stored) = futures_util::future::try_join4(
        access::users_facts_many(tx, tenant, users),
        access::memberships_many(tx, tenant, users),
        access::subject_grants_many(tx, tenant, users),
        access::access_rows_many(tx, tenant, users),
    )
    .await?;
    // Team grants arrive once per team; each member gets them under the team's name.
    let mut by_team: HashMap<Uuid, Vec<&access::SubjectGrant>> = HashMap::new();
    let mut grants: HashMap<(Uuid, Uuid), Vec<Grant>> = HashMap::new();
    for g in &subject_grants {
        match g.subject {
            access::Subject::Team(team) => by_team.entry(team).or_default().push(g),
            access::Subject::User(user) => grants.entry((user, g.integration_id)).or_default().push(Grant {
                source: GrantSource::Individual,
                role: g.role.clone(),
                assets: g.assets.clone(),
            }),
        }
    }
    let mut teams: HashMap<Uuid, BTreeSet<String>> = HashMap::new();
    for m in memberships {
        for g in by_team.get(&m.team_id).into_iter().flatten() {
            grants.entry((m.user_id, g.integration_id)).or_default().push(Grant {
                source: GrantSource::Team { name: m.team_name.clone() },
                role: g.role.clone(),
                assets: g.assets.clone(),
            });
        }
        teams.entry(m.user_id).or_default().insert(m.team_name);
    }
    // A fixed order, so unchanged grants compare equal to the stored ones and reasons read the
    // same however the database returned the rows.
    for list in grants.values_mut() {
        list.sort_by(|a, b| (&a.source, &a.role, &a.assets).cmp(&(&b.source, &b.role, &b.assets)));
    }
    let mut rows: HashMap<(Uuid, Uuid), access::AccessRow> = HashMap::new();
    for r in stored {
        rows.insert((r.user_id, r.integration_id), r);
    }
    let ids: Vec<Uuid> =
        grants.keys().chain(rows.keys()).map(|(_, i)| *i).collect::<BTreeSet<Uuid>>().into_iter().collect();
    if ids.is_empty() {
        return Ok(Plan::default());
    }
    let mut integrations = BTreeMap::new();
    let mut models = BTreeMap::new();
    for i in access::integrations(tx, tenant, &ids).await? {
        match access_model(&i) {
            Ok(model) => {
                models.insert(i.id, model);
                integrations.insert(i.id, i);
            }
            Err(error) => {
                tracing::error!(integration = %i.id, %error, "integration has an invalid ladder; skipping it");
            }
        }
    }
    let no_teams = BTreeSet::new();
    let mut items = Vec::new();
    for &user_id in users {
        let f = facts.get(&user_id);
        let status = match f {
            None => UserStatus::Deleted,
            Some(f) if !f.active => UserStatus::Inactive,
            Some(_) => UserStatus::Active,
        };
        for (&integration_id, model) in &models {
            let key = (user_id, integration_id);
            let row = rows.remove(&key);
            let its_grants = grants.remove(&key).unwrap_or_default();
            if row.is_none() && its_grants.is_empty() {
                continue;
            }
            let now = model.effective(status == UserStatus::Active, &its_grants);
            let held = row.as_ref().and_then(|r| {
                r.desired_role.as_ref().map(|role| Held { role: role.clone(), assets: r.desired_assets.clone() })
            });
            let lost = match (&row, &held) {
                (Some(r), Some(_)) if status == UserStatus::Active => {
                    lost_grants(&r.desired_sources, &its_grants, teams.get(&user_id).unwrap_or(&no_teams))
                }
                _ => Vec::new(),
            };
            let names = &integrations[&integration_id].asset_names;
            let decision = decide(held.as_ref(), now.as_ref(), status, &lost, names);
            let email = f.map(|f| f.email.clone()).or_else(|| row.as_ref().map(|r| r.email.clone()));
            // Access unchanged at a new address: the app is converged there (an invitation to
            // the old address withdrawn), so it is an update, not a keep.
            let decision = match (decision, &row, &email) {
                (Some(d), Some(r), Some(new)) if !same_address(&r.email, new) => {
                    Some(address_changed(d, now.as_ref(), names, &r.email, new))
                }
                (d, ..) => d,
            };
            items.push(Planned { user_id, integration_id, email, status, grants: its_grants, now, row, decision });
        }
    }
    Ok(Plan { integrations, items })
}

/// The access model of an integration as stored.
pub fn access_model(i: &access::IntegrationFacts) -> Result<AccessModel, unseat_domain::LadderError> {
    Ok(AccessModel {
        roles: RoleLadder::for_integration(i.roles.clone())?,
        asset_roles: AssetLadder::parse(i.asset_roles.clone())?,
        assets: i.assets.clone(),
    })
}

/// A batch's decisions as rows: new desired states (with versions), tasks and their first
/// events, connector tasks for the outbox, and the grants behind unchanged states. Nothing is
/// written for a (user, integration) whose state and grants did not change (unless the change
/// could revoke, when a keep is logged).
struct Writes<'a> {
    desired: Vec<access::NewDesired<'a>>,
    sources: Vec<(Uuid, Uuid, &'a [Grant])>,
    tasks: Vec<NewTask<'a>>,
    /// Connector tasks for the outbox.
    outbox: Vec<outbox::BatchMessage<'a>>,
    /// The version each new desired state gets: one more than the stored one. The per-user
    /// locks make this resolver the only writer of these rows until it commits; the statement
    /// returns the versions it wrote and they are checked.
    expected: HashMap<(Uuid, Uuid), i64>,
    /// The decisions by outcome and the connector tasks these rows queue.
    counts: Resolved,
}

impl<'a> Writes<'a> {
    fn of(message: &'a DirectoryChanged, plan: &'a Plan) -> Result<Self, StoreError> {
        let mut counts = Resolved::default();
        let tenant = message.tenant_id;
        static EMPTY: AssetMap = AssetMap::new();
        let empty: &AssetMap = &EMPTY;
        let mut desired = Vec::new();
        let mut sources = Vec::new();
        let mut tasks = Vec::new();
        let mut outbox = Vec::new();
        let mut expected: HashMap<(Uuid, Uuid), i64> = HashMap::new();
        for item in &plan.items {
            let Some(decision) = &item.decision else { continue };
            let Some(email) = item.email.as_deref() else { continue };
            let Some(integration) = plan.integrations.get(&item.integration_id) else { continue };
            let keep = decision.outcome == Outcome::Keep;
            let version = if keep {
                if item.row.as_ref().is_some_and(|r| r.desired_sources != item.grants) {
                    sources.push((item.integration_id, item.user_id, item.grants.as_slice()));
                }
                // A change that only adds cannot take access away: an unchanged user is not news.
                if !message.trigger.may_revoke {
                    continue;
                }
                item.row.as_ref().map(|r| r.desired_version).unwrap_or(0)
            } else {
                let to = decision.to.as_ref();
                desired.push(access::NewDesired {
                    integration_id: item.integration_id,
                    user_id: item.user_id,
                    email,
                    role: to.map(|h| h.role.as_str()),
                    assets: to.map(|h| &h.assets).unwrap_or(empty),
                    sources: if to.is_some() { item.grants.as_slice() } else { &[] },
                });
                let version = item.row.as_ref().map(|r| r.desired_version).unwrap_or(0) + 1;
                expected.insert((item.integration_id, item.user_id), version);
                version
            };
            let task_id = unseat_bus::messages::task_id(message.message_id, item.integration_id, item.user_id);
            tasks.push(NewTask {
                tenant_id: tenant,
                id: task_id,
                job_id: message.message_id,
                integration_id: item.integration_id,
                user_id: item.user_id,
                user_email: email,
                outcome: decision.outcome.as_str(),
                from_role: decision.from_role(),
                to_role: decision.to_role(),
                from_assets: decision.from.as_ref().map(|h| &h.assets),
                to_assets: decision.to.as_ref().map(|h| &h.assets),
                reason: &decision.reason,
                desired_version: version,
                status: if keep { "kept" } else { "queued" },
            });
            if !keep {
                let connector_task = ConnectorTask {
                    v: MESSAGE_VERSION,
                    message_id: unseat_bus::messages::new_message_id(),
                    tenant_id: tenant,
                    job_id: message.message_id,
                    task_id,
                    integration_id: item.integration_id,
                    user_id: item.user_id,
                    app_kind: integration.app_kind.clone(),
                    desired_version: version,
                };
                let body = serde_json::to_string(&connector_task).map_err(|e| StoreError::Invalid(e.to_string()))?;
                outbox.push(outbox::BatchMessage {
                    id: connector_task.message_id,
                    routing_key: integration.app_kind.as_str(),
                    body,
                });
            }
            // Every decision is in the Automation Log (the task and its event); this is for
            // debugging only, so a large change does not flood the process log.
            tracing::debug!(
                tenant = %tenant,
                integration = %item.integration_id,
                outcome = decision.outcome.as_str(),
                reason = %decision.reason,
                "access decided"
            );
            counts.count(decision.outcome);
        }
        counts.tasks_queued = outbox.len();
        Ok(Self { desired, sources, tasks, outbox, expected, counts })
    }

    /// Four statements at most, issued together; connector tasks go to `connector_exchange`.
    async fn write(&self, tx: &Transaction<'_>, tenant: Uuid, connector_exchange: &str) -> Result<(), StoreError> {
        let (versions, (), _, ()) = futures_util::future::try_join4(
            access::set_desired_many(tx, tenant, &self.desired),
            access::set_sources(tx, tenant, &self.sources),
            access::insert_tasks(tx, &self.tasks),
            outbox::enqueue_batch(tx, tenant, connector_exchange, &self.outbox),
        )
        .await?;
        if versions != self.expected {
            // Only possible if something wrote desired states without the per-user lock; the
            // transaction rolls back and the message is tried again.
            return Err(StoreError::Conflict("desired versions moved while the batch was being decided".into()));
        }
        Ok(())
    }
}
