//! The outbox relay: publishes rows that ingest, the console and the resolver wrote to the
//! outbox in their transactions (one message each, or a resolver batch's connector tasks, up
//! to a hundred per row, published one by one), waits for the broker's confirms, then deletes
//! the rows (or, when configured to keep published rows for a while, marks them sent and
//! purges them later).
//!
//! Directory changes waiting together are packed: the changes a round claims for the directory
//! exchange go out, per tenant, as one message of up to [`PACK_CHANGES`] of them
//! ([`unseat_bus::messages::DirectoryChanges`]), which the resolver unpacks and handles one by
//! one, each under its own message id. The broker then stores one persistent message where it
//! stored a hundred: under a burst of deactivations that was a fifth of the machine. A change
//! that waited alone goes alone, as before.
//!
//! Rows are claimed with `for update skip locked`, so relays in several processes compete
//! without publishing the same row twice while both are healthy. If a relay dies between
//! the confirm and the commit, the row is published again: receivers treat messages as
//! hints and deduplicate (invariant 1), so at-least-once is safe. When the broker goes away
//! the relay reconnects with a growing pause; rows wait in PostgreSQL meanwhile.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use unseat_bus::messages::{new_message_id, pack_directory_changes, DIRECTORY_CHANGES_TYPE};
use unseat_bus::{BusError, Publisher};
use unseat_store::outbox::{self, Message, OutboxRow};
use unseat_store::{Store, StoreError};
use unseat_telemetry::Metrics;

/// Settings of one relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub amqp_url: String,
    /// Only rows for exchanges under this prefix (the deployment's topology prefix).
    pub exchange_prefix: String,
    /// About how many messages are published per round: this many rows of one message, or
    /// fewer rows of a resolver's batches (up to a hundred messages each).
    pub batch: i64,
    /// Pause when the outbox is empty.
    pub idle: Duration,
    /// How long a published row stays in the outbox, marked sent, to look a message up. Zero
    /// (the default) deletes it in the transaction that claimed it, once the broker confirmed
    /// it: one write less per message than marking it sent and purging it later.
    pub keep_sent: Duration,
    /// The directory exchange, whose changes are packed (see the crate docs); `None` publishes
    /// every change as a message of its own.
    pub directory_exchange: Option<String>,
}

/// Most directory changes in one packed message.
pub const PACK_CHANGES: usize = 100;

/// Most bytes of changes in one packed message; a change this large or larger goes alone (a
/// deleted group names every member it had).
pub const PACK_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] unseat_store::tokio_postgres::Error),
}

/// How often a relay that keeps published rows deletes those older than `keep_sent`; without
/// this the table would only grow.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Runs until `shutdown` fires. The backlog gauges are kept by the process, broker or not
/// (see `unseat::watch_database`).
pub async fn run(store: Store, metrics: Arc<Metrics>, config: RelayConfig, shutdown: CancellationToken) {
    relay(&store, &metrics, &config, &shutdown).await;
}

async fn relay(store: &Store, metrics: &Metrics, config: &RelayConfig, shutdown: &CancellationToken) {
    let mut pause = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match run_connected(store, metrics, config, shutdown).await {
            Ok(()) => break,
            Err(error) => {
                metrics.outbox_publish_errors.inc();
                tracing::warn!(error = %error, pause_ms = pause.as_millis() as u64, "relay interrupted; rows stay in the outbox and will be retried");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn run_connected(
    store: &Store,
    metrics: &Metrics,
    config: &RelayConfig,
    shutdown: &CancellationToken,
) -> Result<(), RelayError> {
    let conn = unseat_bus::connect(&config.amqp_url, "relay").await?;
    let publisher = Publisher::new(&conn).await?;
    tracing::info!(prefix = %config.exchange_prefix, "relay connected");
    let mut purged_at: Option<std::time::Instant> = None;
    // Rows to claim next: a resolver's rows carry up to a hundred messages each, so the claim
    // follows the messages per row last seen to publish about `batch` messages a round.
    let mut rows = config.batch;
    loop {
        if shutdown.is_cancelled() {
            let _ = conn.close(200, "bye".into()).await;
            return Ok(());
        }
        if !config.keep_sent.is_zero() && purged_at.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
            purged_at = Some(std::time::Instant::now());
            match store.purge_sent_outbox(config.keep_sent).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "purged sent outbox rows"),
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "purging sent outbox rows failed; will retry"),
            }
        }
        let sent = publish_batch(store, &publisher, config, rows).await?;
        metrics.outbox_published.inc_by(sent.messages as u64);
        metrics.outbox_packs.inc_by(sent.packs as u64);
        let caught_up = sent.rows < rows;
        rows = sent.next_claim(config.batch, rows);
        if caught_up {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(config.idle) => {}
            }
        }
    }
}

/// What one round published.
struct Sent {
    rows: i64,
    messages: i64,
    /// Packed AMQP messages among them.
    packs: i64,
}

impl Sent {
    /// Rows to claim next round so that it publishes about `batch` messages: as many rows as
    /// carried `batch` messages this round (rows of one message: `batch` rows; a resolver's
    /// rows of a hundred: two), at least one and never more than `batch`. A round that found
    /// nothing keeps the `last` claim.
    fn next_claim(&self, batch: i64, last: i64) -> i64 {
        if self.rows == 0 {
            return last;
        }
        (batch * self.rows / self.messages.max(1)).clamp(1, batch.max(1))
    }
}

/// Claims up to `limit` rows (deleting them, or locking them when published rows are kept),
/// publishes every message of every row with confirms in flight together, and commits once all
/// are confirmed (marking the rows sent first when they are kept).
async fn publish_batch(
    store: &Store,
    publisher: &Publisher,
    config: &RelayConfig,
    limit: i64,
) -> Result<Sent, RelayError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let keep = !config.keep_sent.is_zero();
    let rows = if keep {
        outbox::claim_pending(&tx, &config.exchange_prefix, limit).await?
    } else {
        outbox::take_pending(&tx, &config.exchange_prefix, limit).await?
    };
    if rows.is_empty() {
        return Ok(Sent { rows: 0, messages: 0, packs: 0 });
    }
    let mut confirms = Vec::new();
    let (mut messages, mut packs) = (0, 0);
    for p in publications(&rows, config.directory_exchange.as_deref()) {
        messages += p.carries as i64;
        packs += i64::from(p.kind.is_some());
        confirms.push(publisher.start(p.exchange, p.routing_key, &p.id, p.kind, p.body.as_bytes()).await?);
    }
    for confirm in confirms {
        confirm.await?;
    }
    if keep {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        outbox::mark_sent(&tx, &ids).await?;
    }
    tx.commit().await?;
    Ok(Sent { rows: rows.len() as i64, messages, packs })
}

/// One AMQP message of a round.
#[derive(Debug)]
struct Publication<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    id: String,
    /// The AMQP `type`: set on packed directory changes.
    kind: Option<&'static str>,
    body: Cow<'a, str>,
    /// Outbox messages it carries.
    carries: usize,
}

impl<'a> Publication<'a> {
    fn single(row: &'a OutboxRow, message: &'a Message) -> Self {
        Publication {
            exchange: &row.exchange,
            routing_key: &row.routing_key,
            id: message.id.to_string(),
            kind: None,
            body: Cow::Borrowed(&message.body),
            carries: 1,
        }
    }
}

/// What a round publishes for the rows it claimed: every message as it is, except those for
/// the directory exchange, which go in packs of up to [`PACK_CHANGES`] changes and [`PACK_BYTES`]
/// per routing key and tenant (a pack of one is sent as the change itself; a pack never mixes
/// tenants, so a dead-lettered one holds one tenant's changes). Other messages keep their
/// order.
fn publications<'a>(rows: &'a [OutboxRow], directory_exchange: Option<&str>) -> Vec<Publication<'a>> {
    let mut out = Vec::new();
    let mut packs: Vec<(&'a OutboxRow, Vec<&'a Message>)> = Vec::new();
    for row in rows {
        for message in &row.messages {
            if Some(row.exchange.as_str()) != directory_exchange || message.body.len() >= PACK_BYTES {
                out.push(Publication::single(row, message));
                continue;
            }
            match packs
                .iter_mut()
                .find(|(first, _)| first.routing_key == row.routing_key && first.tenant_id == row.tenant_id)
            {
                Some((_, list)) => list.push(message),
                None => packs.push((row, vec![message])),
            }
        }
    }
    for (row, messages) in packs {
        let (mut pack, mut bytes) = (Vec::new(), 0);
        for message in messages {
            if pack.len() == PACK_CHANGES || (!pack.is_empty() && bytes + message.body.len() > PACK_BYTES) {
                out.push(packed(row, std::mem::take(&mut pack)));
                bytes = 0;
            }
            bytes += message.body.len() + 1;
            pack.push(message);
        }
        if !pack.is_empty() {
            out.push(packed(row, pack));
        }
    }
    out
}

fn packed<'a>(row: &'a OutboxRow, pack: Vec<&'a Message>) -> Publication<'a> {
    if let [message] = pack[..] {
        return Publication::single(row, message);
    }
    Publication {
        exchange: &row.exchange,
        routing_key: &row.routing_key,
        id: new_message_id().to_string(),
        kind: Some(DIRECTORY_CHANGES_TYPE),
        body: Cow::Owned(pack_directory_changes(pack.iter().map(|m| m.body.as_str()))),
        carries: pack.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(rows: i64, messages: i64, batch: i64, last: i64) -> i64 {
        Sent { rows, messages, packs: 0 }.next_claim(batch, last)
    }

    #[test]
    fn the_claim_follows_the_messages_per_row_to_publish_about_a_batch() {
        // Rows of one message each (the ingest's, the console's): a batch of rows.
        assert_eq!(next(200, 200, 200, 200), 200);
        // A resolver's rows of a hundred messages: two rows make the batch.
        assert_eq!(next(200, 20_000, 200, 200), 2);
        // Mixed: 10 rows carried 505 messages, about 50 a row: 3.96 rows, rounded down.
        assert_eq!(next(10, 505, 200, 2), 3);
        // Back to rows of one message: the claim grows again, up to the batch.
        assert_eq!(next(2, 2, 200, 2), 200);
    }

    #[test]
    fn the_claim_stays_between_one_row_and_the_batch() {
        // Rows larger than the batch: still one row a round, never none.
        assert_eq!(next(1, 1_000, 200, 200), 1);
        // Rows that carried no message (cannot come from the outbox, but never a zero claim or a
        // division by zero): at most the batch.
        assert_eq!(next(3, 0, 200, 200), 200);
        // A batch configured at zero still claims a row.
        assert_eq!(next(5, 5, 0, 5), 1);
    }

    #[test]
    fn an_empty_round_keeps_the_last_claim() {
        assert_eq!(next(0, 0, 200, 2), 2);
    }

    const DIRECTORY: &str = "p.directory";

    const TENANT: uuid::Uuid = uuid::Uuid::from_u128(1);

    fn row(id: i64, exchange: &str, key: &str, bodies: &[String]) -> OutboxRow {
        OutboxRow {
            id,
            tenant_id: TENANT,
            exchange: exchange.into(),
            routing_key: key.into(),
            messages: bodies.iter().map(|b| Message { id: uuid::Uuid::now_v7(), body: b.clone() }).collect(),
            created_at: chrono::Utc::now(),
        }
    }

    fn change(n: usize) -> String {
        format!("{{\"n\":{n}}}")
    }

    /// The changes a packed publication carries, in order.
    fn unpack(p: &Publication<'_>) -> Vec<String> {
        assert_eq!(p.kind, Some(DIRECTORY_CHANGES_TYPE));
        let packed: unseat_bus::messages::DirectoryChanges = serde_json::from_str(&p.body).unwrap();
        assert_eq!(packed.v, unseat_bus::messages::MESSAGE_VERSION);
        packed.changes.iter().map(|c| c.get().to_string()).collect()
    }

    #[test]
    fn directory_changes_go_in_packs_and_everything_else_as_it_is() {
        let tasks: Vec<String> = (0..3).map(|n| format!("{{\"task\":{n}}}")).collect();
        let mut rows = vec![row(1, "p.connector", "business_hub", &tasks)];
        rows.extend((0..5).map(|n| row(2 + n as i64, DIRECTORY, "directory", &[change(n)])));
        let out = publications(&rows, Some(DIRECTORY));
        assert_eq!(out.len(), 4);
        for (p, (task, message)) in out.iter().zip(tasks.iter().zip(&rows[0].messages)) {
            assert_eq!((p.exchange, p.routing_key, p.kind, p.carries), ("p.connector", "business_hub", None, 1));
            assert_eq!((p.body.as_ref(), p.id.as_str()), (task.as_str(), message.id.to_string().as_str()));
        }
        let pack = &out[3];
        assert_eq!((pack.exchange, pack.routing_key, pack.carries), (DIRECTORY, "directory", 5));
        assert_eq!(unpack(pack), (0..5).map(change).collect::<Vec<_>>());
        assert!(
            rows.iter().flat_map(|r| &r.messages).all(|m| m.id.to_string() != pack.id),
            "a pack has an id of its own"
        );
    }

    #[test]
    fn a_pack_holds_at_most_its_count_and_a_change_alone_goes_as_itself() {
        let rows: Vec<OutboxRow> = (0..250).map(|n| row(n as i64, DIRECTORY, "directory", &[change(n)])).collect();
        let out = publications(&rows, Some(DIRECTORY));
        assert_eq!(out.iter().map(|p| p.carries).collect::<Vec<_>>(), vec![PACK_CHANGES, PACK_CHANGES, 50]);
        let all: Vec<String> = out.iter().flat_map(unpack).collect();
        assert_eq!(all, (0..250).map(change).collect::<Vec<_>>(), "every change once, in order");

        let alone = publications(&rows[..1], Some(DIRECTORY));
        assert_eq!(alone.len(), 1);
        assert_eq!((alone[0].kind, alone[0].body.as_ref()), (None, change(0).as_str()));
        assert_eq!(alone[0].id, rows[0].messages[0].id.to_string(), "its own message id");
    }

    #[test]
    fn packs_stay_under_their_size_and_per_routing_key() {
        let third = format!("\"{}\"", "x".repeat(PACK_BYTES / 3));
        let big = format!("\"{}\"", "y".repeat(PACK_BYTES));
        let rows = vec![
            row(1, DIRECTORY, "directory", std::slice::from_ref(&third)),
            row(2, DIRECTORY, "directory", std::slice::from_ref(&big)),
            row(3, DIRECTORY, "directory", std::slice::from_ref(&third)),
            row(4, DIRECTORY, "other", &[change(1)]),
            row(5, DIRECTORY, "directory", std::slice::from_ref(&third)),
            row(6, DIRECTORY, "other", &[change(2)]),
        ];
        let out = publications(&rows, Some(DIRECTORY));
        // The large change alone and unpacked; three thirds (plus separators) overflow a pack.
        assert_eq!((out[0].kind, out[0].body.as_ref()), (None, big.as_str()));
        assert_eq!(out[1].carries, 2);
        assert_eq!(unpack(&out[1]), vec![third.clone(), third.clone()]);
        assert_eq!((out[2].kind, out[2].body.as_ref()), (None, third.as_str()));
        assert_eq!((out[3].routing_key, unpack(&out[3])), ("other", vec![change(1), change(2)]));
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|p| p.body.len() <= PACK_BYTES + 32 || p.kind.is_none()));
    }

    #[test]
    fn a_pack_holds_one_tenants_changes() {
        let other = uuid::Uuid::from_u128(2);
        let mut rows: Vec<OutboxRow> = (0..4).map(|n| row(n as i64, DIRECTORY, "directory", &[change(n)])).collect();
        rows[1].tenant_id = other;
        rows[3].tenant_id = other;
        let out = publications(&rows, Some(DIRECTORY));
        assert_eq!(out.len(), 2);
        assert_eq!(unpack(&out[0]), vec![change(0), change(2)]);
        assert_eq!(unpack(&out[1]), vec![change(1), change(3)]);
    }

    #[test]
    fn without_a_directory_exchange_nothing_is_packed() {
        let rows: Vec<OutboxRow> = (0..3).map(|n| row(n as i64, DIRECTORY, "directory", &[change(n)])).collect();
        let out = publications(&rows, None);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|p| p.kind.is_none() && p.carries == 1));
    }
}
