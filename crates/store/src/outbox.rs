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

/// The rows a relay may publish next: unsent, exchange under its prefix, oldest first, skipping
/// rows another relay holds (relays compete without publishing the same row twice).
const PENDING: &str = "select id from outbox
     where sent_at is null and exchange like $1 order by id limit $2 for update skip locked";

/// Keeps a claim proportional to the batch, not to the backlog. Locking rows (`for update`)
/// sits between the `limit` and the scan, so a plan that sorts sorts every pending row, and
/// PostgreSQL picks that plan whenever it misjudges how many rows match the prefix (always on a
/// table not yet analyzed): after a broker outage each claim of 200 rows sorted the whole
/// backlog (with payloads, spilling to disk). Without sorts the claim walks `outbox_pending`,
/// which is in id order, and stops after `limit` rows.
async fn forbid_sorts(tx: &crate::Transaction<'_>) -> Result<()> {
    tx.batch_execute("set local enable_sort = off").await?;
    Ok(())
}

fn like_prefix(exchange_prefix: &str) -> String {
    format!("{}.%", exchange_prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

fn outbox_row(r: &tokio_postgres::Row) -> OutboxRow {
    OutboxRow {
        id: r.get(0),
        message_id: r.get(1),
        exchange: r.get(2),
        routing_key: r.get(3),
        payload: r.get(4),
        created_at: r.get(5),
    }
}

/// Locks up to `limit` pending rows (see [`PENDING`]) and returns them oldest first. The caller
/// publishes them, then [`mark_sent`] in the same transaction.
pub async fn claim_pending(tx: &crate::Transaction<'_>, exchange_prefix: &str, limit: i64) -> Result<Vec<OutboxRow>> {
    forbid_sorts(tx).await?;
    let stmt = tx
        .prepare_cached(&format!(
            "select id, message_id, exchange, routing_key, payload, created_at from outbox
              where id = any(array({PENDING})) order by id"
        ))
        .await?;
    let rows = tx.query(&stmt, &[&like_prefix(exchange_prefix), &limit]).await?;
    Ok(rows.iter().map(outbox_row).collect())
}

/// Deletes up to `limit` pending rows (see [`PENDING`]) and returns them oldest first: a claim
/// that keeps nothing once the caller's transaction commits. The caller publishes them and
/// commits only after the broker confirmed every one; if it fails first, the transaction rolls
/// back and the rows are pending again.
pub async fn take_pending(tx: &crate::Transaction<'_>, exchange_prefix: &str, limit: i64) -> Result<Vec<OutboxRow>> {
    forbid_sorts(tx).await?;
    let stmt = tx
        .prepare_cached(&format!(
            "delete from outbox where id = any(array({PENDING}))
             returning id, message_id, exchange, routing_key, payload, created_at"
        ))
        .await?;
    let mut rows: Vec<OutboxRow> =
        tx.query(&stmt, &[&like_prefix(exchange_prefix), &limit]).await?.iter().map(outbox_row).collect();
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// Marks rows as confirmed by the broker.
pub async fn mark_sent(tx: &crate::Transaction<'_>, ids: &[i64]) -> Result<()> {
    let stmt = tx.prepare_cached("update outbox set sent_at = now() where id = any($1)").await?;
    tx.execute(&stmt, &[&ids]).await?;
    Ok(())
}

impl Store {
    /// Rows under `exchange_prefix` not yet published, and how many seconds the oldest of them
    /// has waited (0 when there is none).
    pub async fn pending_under(&self, exchange_prefix: &str) -> Result<(i64, f64)> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "select count(*), coalesce(extract(epoch from now() - min(created_at)), 0)::float8
                   from outbox where sent_at is null and exchange like $1",
            )
            .await?;
        let row = client.query_one(&stmt, &[&like_prefix(exchange_prefix)]).await?;
        Ok((row.get(0), row.get(1)))
    }

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
        let (_t, ids) = tenant_with_rows(&store, &["x.directory"; 3]).await;
        assert_eq!(store.outbox_backlog().await.unwrap(), 3);
        let c = store.client().await.unwrap();
        c.execute("update outbox set sent_at = now() - interval '25 hours' where message_id = $1", &[&ids[0]])
            .await
            .unwrap();
        c.execute("update outbox set sent_at = now() - interval '1 hour' where message_id = $1", &[&ids[1]])
            .await
            .unwrap();
        assert_eq!(store.purge_sent_outbox(Duration::from_secs(24 * 3600)).await.unwrap(), 1);
        assert_eq!(left(&store).await, ids[1..].to_vec(), "a recently sent row and an unsent one stay");
    }

    /// A tenant and one outbox row per exchange, written in one statement; their message ids.
    async fn tenant_with_rows(store: &Store, exchanges: &[&str]) -> (Uuid, Vec<Uuid>) {
        let mut c = store.client().await.unwrap();
        let t = Uuid::new_v4();
        c.execute("insert into tenants (id, name) values ($1, 'T')", &[&t]).await.unwrap();
        let payload = serde_json::json!({"n": 1});
        let rows: Vec<NewRow<'_>> = exchanges
            .iter()
            .map(|e| NewRow {
                tenant_id: t,
                message_id: Uuid::new_v4(),
                exchange: e,
                routing_key: "changed",
                payload: &payload,
            })
            .collect();
        let tx = c.transaction().await.unwrap();
        enqueue_many(&tx, &rows).await.unwrap();
        tx.commit().await.unwrap();
        (t, rows.iter().map(|r| r.message_id).collect())
    }

    async fn left(store: &Store) -> Vec<Uuid> {
        let c = store.client().await.unwrap();
        c.query("select message_id from outbox order by id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
    }

    /// The relay's default claim: rows under its prefix only (`_` in a prefix is no wildcard),
    /// oldest first; a concurrent claim skips them; they leave with the claiming transaction's
    /// commit and are pending again after a rollback.
    #[tokio::test]
    async fn taken_rows_go_with_the_commit_and_come_back_after_a_rollback() {
        let (_url, store) = fresh_database().await.unwrap();
        let (_t, ids) = tenant_with_rows(&store, &["a_x.d", "a_x.d", "aYx.d", "a_x.c", "b.d", "a_x.d", "a_x.d"]).await;
        let mut c1 = store.client().await.unwrap();
        let tx1 = c1.transaction().await.unwrap();
        let first: Vec<Uuid> = take_pending(&tx1, "a_x", 3).await.unwrap().iter().map(|r| r.message_id).collect();
        assert_eq!(first, vec![ids[0], ids[1], ids[3]], "oldest first, only the prefix's exchanges");

        let mut c2 = store.client().await.unwrap();
        let tx2 = c2.transaction().await.unwrap();
        let second: Vec<Uuid> = take_pending(&tx2, "a_x", 10).await.unwrap().iter().map(|r| r.message_id).collect();
        assert_eq!(second, vec![ids[5], ids[6]], "rows another claim holds are skipped");
        tx2.rollback().await.unwrap();
        tx1.commit().await.unwrap();

        assert_eq!(left(&store).await, vec![ids[2], ids[4], ids[5], ids[6]]);
        assert_eq!(store.outbox_backlog().await.unwrap(), 4, "the rolled-back claim's rows are pending again");
    }

    /// A claim walks the pending index in id order and stops after the batch, even on an outbox
    /// PostgreSQL has no statistics for yet: it never sorts the backlog.
    #[tokio::test]
    async fn a_claim_never_sorts_the_backlog() {
        let (_url, store) = fresh_database().await.unwrap();
        let (t, _) = tenant_with_rows(&store, &["p.d"]).await;
        let mut c = store.client().await.unwrap();
        c.execute(
            "insert into outbox (tenant_id, message_id, exchange, routing_key, payload)
             select $1, gen_random_uuid(), 'p.d', 'changed', jsonb_build_object('pad', repeat('x', 500))
               from generate_series(1, 20000)",
            &[&t],
        )
        .await
        .unwrap();
        for query in [
            format!("delete from outbox where id = any(array({PENDING})) returning id"),
            format!("select id from outbox where id = any(array({PENDING})) order by id"),
        ] {
            let tx = c.transaction().await.unwrap();
            forbid_sorts(&tx).await.unwrap();
            let plan: Vec<String> = tx
                .query(&format!("explain {query}"), &[&like_prefix("p"), &200i64])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let plan = plan.join("\n");
            assert!(plan.contains("Index Scan using outbox_pending"), "{plan}");
            assert!(!plan.lines().any(|l| l.trim_start().trim_start_matches("->  ").starts_with("Sort")), "{plan}");
            tx.rollback().await.unwrap();
        }
    }
}
