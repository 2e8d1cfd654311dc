//! The transactional outbox. Writers call [`enqueue`] inside the transaction that changes the
//! state; the relay claims pending rows with [`claim_pending`] and marks them sent once the
//! broker confirmed them.

use crate::{Result, Store};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One message waiting to be published.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub message_id: Uuid,
    pub exchange: String,
    pub routing_key: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Adds a message to the outbox in the caller's transaction. The relay polls for it (no
/// NOTIFY: it would serialise every committing transaction on PostgreSQL's notify lock).
pub async fn enqueue(
    tx: &crate::Transaction<'_>,
    tenant_id: Uuid,
    message_id: Uuid,
    exchange: &str,
    routing_key: &str,
    payload: &serde_json::Value,
) -> Result<()> {
    let stmt = tx
        .prepare_cached(
            "insert into outbox (tenant_id, message_id, exchange, routing_key, payload) values ($1, $2, $3, $4, $5)",
        )
        .await?;
    tx.execute(&stmt, &[&tenant_id, &message_id, &exchange, &routing_key, payload]).await?;
    Ok(())
}

/// Locks up to `limit` unsent rows whose exchange starts with `exchange_prefix.`, oldest first,
/// skipping rows another relay holds: relays compete without publishing the same row twice.
/// The caller publishes them, then [`mark_sent`] in the same transaction.
pub async fn claim_pending(
    tx: &tokio_postgres::Transaction<'_>,
    exchange_prefix: &str,
    limit: i64,
) -> Result<Vec<OutboxRow>> {
    let pattern = format!("{}.%", exchange_prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let rows = tx
        .query(
            "select id, message_id, exchange, routing_key, payload, created_at from outbox
             where sent_at is null and exchange like $1 order by id limit $2 for update skip locked",
            &[&pattern, &limit],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| OutboxRow {
            id: r.get(0),
            message_id: r.get(1),
            exchange: r.get(2),
            routing_key: r.get(3),
            payload: r.get(4),
            created_at: r.get(5),
        })
        .collect())
}

/// Marks rows as confirmed by the broker.
pub async fn mark_sent(tx: &tokio_postgres::Transaction<'_>, ids: &[i64]) -> Result<()> {
    tx.execute("update outbox set sent_at = now() where id = any($1)", &[&ids]).await?;
    Ok(())
}

impl Store {
    /// Number of rows not yet sent.
    pub async fn outbox_backlog(&self) -> Result<i64> {
        let client = self.client().await?;
        Ok(client.query_one("select count(*) from outbox where sent_at is null", &[]).await?.get(0))
    }

    /// Deletes sent rows older than `keep`.
    pub async fn purge_sent_outbox(&self, keep: std::time::Duration) -> Result<u64> {
        let client = self.client().await?;
        let secs = keep.as_secs_f64();
        Ok(client.execute("delete from outbox where sent_at < now() - make_interval(secs => $1)", &[&secs]).await?)
    }
}
