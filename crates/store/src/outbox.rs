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

/// One row for [`enqueue_many`].
pub struct NewRow<'a> {
    pub tenant_id: Uuid,
    pub message_id: Uuid,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub payload: &'a serde_json::Value,
}

/// Writes several outbox rows in one statement, in the caller's transaction, in the given
/// order (the relay publishes them in that order).
pub async fn enqueue_many(tx: &crate::Transaction<'_>, rows: &[NewRow<'_>]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let tenants: Vec<Uuid> = rows.iter().map(|r| r.tenant_id).collect();
    let messages: Vec<Uuid> = rows.iter().map(|r| r.message_id).collect();
    let exchanges: Vec<&str> = rows.iter().map(|r| r.exchange).collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.routing_key).collect();
    let payloads: Vec<&serde_json::Value> = rows.iter().map(|r| r.payload).collect();
    let stmt = tx
        .prepare_cached(
            "insert into outbox (tenant_id, message_id, exchange, routing_key, payload)
             select t, m, e, k, p from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[])
                    with ordinality as i(t, m, e, k, p, n)
              order by n",
        )
        .await?;
    tx.execute(&stmt, &[&tenants, &messages, &exchanges, &keys, &payloads]).await?;
    Ok(())
}

/// Locks up to `limit` unsent rows whose exchange starts with `exchange_prefix.`, oldest first,
/// skipping rows another relay holds: relays compete without publishing the same row twice.
/// The caller publishes them, then [`mark_sent`] in the same transaction.
pub async fn claim_pending(tx: &crate::Transaction<'_>, exchange_prefix: &str, limit: i64) -> Result<Vec<OutboxRow>> {
    let pattern = format!("{}.%", exchange_prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let stmt = tx
        .prepare_cached(
            "select id, message_id, exchange, routing_key, payload, created_at from outbox
             where sent_at is null and exchange like $1 order by id limit $2 for update skip locked",
        )
        .await?;
    let rows = tx.query(&stmt, &[&pattern, &limit]).await?;
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
pub async fn mark_sent(tx: &crate::Transaction<'_>, ids: &[i64]) -> Result<()> {
    let stmt = tx.prepare_cached("update outbox set sent_at = now() where id = any($1)").await?;
    tx.execute(&stmt, &[&ids]).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fresh_database;
    use std::time::Duration;

    /// Rows go in one statement; only rows sent longer ago than the retention are purged.
    #[tokio::test]
    async fn many_rows_in_one_statement_and_only_old_sent_rows_are_purged() {
        let (_url, store) = fresh_database().await.unwrap();
        let mut c = store.client().await.unwrap();
        let t = Uuid::new_v4();
        c.execute("insert into tenants (id, name) values ($1, 'T')", &[&t]).await.unwrap();
        let payload = serde_json::json!({"n": 1});
        let rows: Vec<NewRow<'_>> = (0..3)
            .map(|_| NewRow {
                tenant_id: t,
                message_id: Uuid::new_v4(),
                exchange: "x.directory",
                routing_key: "changed",
                payload: &payload,
            })
            .collect();
        let tx = c.transaction().await.unwrap();
        enqueue_many(&tx, &rows).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(store.outbox_backlog().await.unwrap(), 3);
        let ids: Vec<Uuid> = rows.iter().map(|r| r.message_id).collect();
        c.execute("update outbox set sent_at = now() - interval '25 hours' where message_id = $1", &[&ids[0]])
            .await
            .unwrap();
        c.execute("update outbox set sent_at = now() - interval '1 hour' where message_id = $1", &[&ids[1]])
            .await
            .unwrap();
        assert_eq!(store.purge_sent_outbox(Duration::from_secs(24 * 3600)).await.unwrap(), 1);
        let left: Vec<Uuid> =
            c.query("select message_id from outbox order by id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
        assert_eq!(left, ids[1..].to_vec(), "a recently sent row and an unsent one stay");
    }
}
