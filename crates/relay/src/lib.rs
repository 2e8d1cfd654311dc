//! The outbox relay: publishes rows that ingest, the console and the resolver wrote to the
//! outbox in their transactions (one message each, or a resolver batch's connector tasks, up
//! to a hundred per row, published one by one), waits for the broker's confirms, then deletes
//! the rows (or, when configured to keep published rows for a while, marks them sent and
//! purges them later).
//!
//! Rows are claimed with `for update skip locked`, so relays in several processes compete
//! without publishing the same row twice while both are healthy. If a relay dies between
//! the confirm and the commit, the row is published again: receivers treat messages as
//! hints and deduplicate (invariant 1), so at-least-once is safe. When the broker goes away
//! the relay reconnects with a growing pause; rows wait in PostgreSQL meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use unseat_bus::{BusError, Publisher};
use unseat_store::{outbox, Store, StoreError};
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
}

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

/// How often a relay reads its backlog into `unseat_outbox_pending` and
/// `unseat_outbox_oldest_pending_seconds`, whether or not the broker is reachable.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// Runs until `shutdown` fires.
pub async fn run(store: Store, metrics: Arc<Metrics>, config: RelayConfig, shutdown: CancellationToken) {
    let gauges =
        tokio::spawn(watch_backlog(store.clone(), metrics.clone(), config.exchange_prefix.clone(), shutdown.clone()));
    relay(&store, &metrics, &config, &shutdown).await;
    gauges.abort();
}

/// Keeps the backlog gauges current: what an operator alerts on when the relay falls behind or
/// the broker is away (rows wait in PostgreSQL, so the broker's own metrics cannot show them).
async fn watch_backlog(store: Store, metrics: Arc<Metrics>, prefix: String, shutdown: CancellationToken) {
    loop {
        match store.pending_under(&prefix).await {
            Ok((rows, oldest)) => {
                metrics.outbox_pending.set(rows);
                metrics.outbox_oldest_pending_seconds.set(oldest);
            }
            Err(error) => tracing::debug!(%error, "reading the outbox backlog failed; will retry"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(GAUGE_EVERY) => {}
        }
    }
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
        return Ok(Sent { rows: 0, messages: 0 });
    }
    let mut confirms = Vec::new();
    for row in &rows {
        for message in &row.messages {
            let id = message.id.to_string();
            confirms.push(publisher.start(&row.exchange, &row.routing_key, &id, message.body.as_bytes()).await?);
        }
    }
    let messages = confirms.len() as i64;
    for confirm in confirms {
        confirm.await?;
    }
    if keep {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        outbox::mark_sent(&tx, &ids).await?;
    }
    tx.commit().await?;
    Ok(Sent { rows: rows.len() as i64, messages })
}

#[cfg(test)]
mod tests {
    use super::Sent;

    fn next(rows: i64, messages: i64, batch: i64, last: i64) -> i64 {
        Sent { rows, messages }.next_claim(batch, last)
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
}
