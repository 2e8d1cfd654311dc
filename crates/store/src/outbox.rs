//! The transactional outbox. Writers call [`enqueue`] inside the transaction that changes the
//! state; the relay claims pending rows with [`claim_pending`] and marks them sent once the
//! broker confirmed them.

use crate::{Result, Store};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A row waiting to be published: one message, or up to [`MESSAGES_PER_ROW`] of a batch.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    /// Whose change it announces (every message of a row is one tenant's).
    pub tenant_id: Uuid,
    pub exchange: String,
    pub routing_key: String,
    /// In publishing order.
    pub messages: Vec<Message>,
    pub created_at: DateTime<Utc>,
}

/// One message: its id (the AMQP message id) and its JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: Uuid,
    pub body: String,
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

/// Most messages one row of [`enqueue_batch`] carries. A relay sizes its claims by the
/// messages per row it last saw, so a claim publishes about its batch of messages either way.
pub const MESSAGES_PER_ROW: usize = 100;

/// One message for [`enqueue_batch`].
#[derive(Debug, Clone)]
pub struct BatchMessage<'a> {
    pub id: Uuid,
    pub routing_key: &'a str,
    /// The message's JSON text, published as it is.
    pub body: String,
}

/// Writes many messages to one exchange, in the caller's transaction, in one statement and as
/// few rows as their routing keys and [`MESSAGES_PER_ROW`] allow (see the 0012 migration).
/// Messages with the same routing key are published in the order given.
pub async fn enqueue_batch(
    tx: &crate::Transaction<'_>,
    tenant_id: Uuid,
    exchange: &str,
    messages: &[BatchMessage<'_>],
) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut by_key: Vec<(&str, Vec<&BatchMessage<'_>>)> = Vec::new();
    for m in messages {
        match by_key.iter_mut().find(|(key, _)| *key == m.routing_key) {
            Some((_, list)) => list.push(m),
            None => by_key.push((m.routing_key, vec![m])),
        }
    }
    let (mut rows, mut keys, mut ids, mut bodies) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let chunks = by_key.iter().flat_map(|(key, list)| list.chunks(MESSAGES_PER_ROW).map(move |c| (*key, c)));
    for (row, (key, chunk)) in (0i32..).zip(chunks) {
        for m in chunk {
            rows.push(row);
            keys.push(key);
            ids.push(m.id);
            bodies.push(m.body.as_str());
        }
    }
    let stmt = tx
        .prepare_cached(
            "insert into outbox (tenant_id, exchange, routing_key, message_ids, payloads)
             select $1, $2, min(k), array_agg(m order by n), array_agg(p order by n)
               from unnest($3::int4[], $4::text[], $5::uuid[], $6::text[]) with ordinality as t(r, k, m, p, n)
              group by r
              order by r",
        )
        .await?;
    tx.execute(&stmt, &[&tenant_id, &exchange, &rows, &keys, &ids, &bodies]).await?;
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

/// The columns [`outbox_row`] reads: a single message as a one-element batch.
const ROW_COLUMNS: &str = "id, exchange, routing_key, created_at,
    coalesce(message_ids, array[message_id]), coalesce(payloads, array[payload::text]), tenant_id";

fn outbox_row(r: &tokio_postgres::Row) -> OutboxRow {
    let ids: Vec<Uuid> = r.get(4);
    let bodies: Vec<String> = r.get(5);
    OutboxRow {
        id: r.get(0),
        tenant_id: r.get(6),
        exchange: r.get(1),
        routing_key: r.get(2),
        created_at: r.get(3),
        messages: ids.into_iter().zip(bodies).map(|(id, body)| Message { id, body }).collect(),
    }
}

/// Locks up to `limit` pending rows (see [`PENDING`]) and returns them oldest first. The caller
/// publishes them, then [`mark_sent`] in the same transaction.
pub async fn claim_pending(tx: &crate::Transaction<'_>, exchange_prefix: &str, limit: i64) -> Result<Vec<OutboxRow>> {
    forbid_sorts(tx).await?;
    let stmt = tx
        .prepare_cached(&format!("select {ROW_COLUMNS} from outbox where id = any(array({PENDING})) order by id"))
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
        .prepare_cached(&format!("delete from outbox where id = any(array({PENDING})) returning {ROW_COLUMNS}"))
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
    /// Messages under `exchange_prefix` not yet published, and how many seconds the oldest of
    /// them has waited (0 when there is none).
    pub async fn pending_under(&self, exchange_prefix: &str) -> Result<(i64, f64)> {
        self.pending_like(&like_prefix(exchange_prefix)).await
    }

    /// Messages not yet sent, under every prefix.
    pub async fn outbox_backlog(&self) -> Result<i64> {
        Ok(self.pending_like("%").await?.0)
    }

    async fn pending_like(&self, exchange_pattern: &str) -> Result<(i64, f64)> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "select coalesce(sum(coalesce(cardinality(message_ids), 1)), 0)::int8,
                        coalesce(extract(epoch from now() - min(created_at)), 0)::float8
                   from outbox where sent_at is null and exchange like $1",
            )
            .await?;
        let row = client.query_one(&stmt, &[&exchange_pattern]).await?;
        Ok((row.get(0), row.get(1)))
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

    fn ids_of(rows: Vec<OutboxRow>) -> Vec<Uuid> {
        rows.into_iter().flat_map(|r| r.messages).map(|m| m.id).collect()
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
        let first: Vec<Uuid> = ids_of(take_pending(&tx1, "a_x", 3).await.unwrap());
        assert_eq!(first, vec![ids[0], ids[1], ids[3]], "oldest first, only the prefix's exchanges");

        let mut c2 = store.client().await.unwrap();
        let tx2 = c2.transaction().await.unwrap();
        let second: Vec<Uuid> = ids_of(take_pending(&tx2, "a_x", 10).await.unwrap());
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

    /// A batch goes in as one row per routing key and MESSAGES_PER_ROW messages, comes out
    /// (after the single row written before it) with every message in the order given, and
    /// counts as its messages in the backlog. A row is one message or a batch, never both.
    #[tokio::test]
    async fn a_batch_is_a_few_rows_and_comes_out_message_by_message_in_order() {
        let (_url, store) = fresh_database().await.unwrap();
        let (t, single) = tenant_with_rows(&store, &["q.connector"]).await;
        let keys = ["hub", "seat"];
        let messages: Vec<BatchMessage<'_>> = (0..MESSAGES_PER_ROW + 30)
            .map(|n| BatchMessage {
                id: Uuid::now_v7(),
                routing_key: keys[usize::from(n % 5 == 0)],
                body: format!("{{\"n\":{n}}}"),
            })
            .collect();
        let mut c = store.client().await.unwrap();
        let tx = c.transaction().await.unwrap();
        enqueue_batch(&tx, t, "q.connector", &messages).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(store.pending_under("q").await.unwrap().0, 1 + messages.len() as i64);
        assert_eq!(store.outbox_backlog().await.unwrap(), 1 + messages.len() as i64);

        let tx = c.transaction().await.unwrap();
        let rows = take_pending(&tx, "q", 10).await.unwrap();
        tx.commit().await.unwrap();
        let shape: Vec<(&str, usize)> = rows.iter().map(|r| (r.routing_key.as_str(), r.messages.len())).collect();
        // Keys in the order they first appear (message 0 is for "seat").
        assert_eq!(shape, vec![("changed", 1), ("seat", 26), ("hub", MESSAGES_PER_ROW), ("hub", 4)]);
        assert_eq!(rows[0].messages[0].id, single[0]);
        assert_eq!(rows[0].messages[0].body, r#"{"n": 1}"#, "a single message's jsonb as text");
        for key in keys {
            let published: Vec<Message> =
                rows.iter().filter(|r| r.routing_key == key).flat_map(|r| r.messages.clone()).collect();
            let given: Vec<Message> = messages
                .iter()
                .filter(|m| m.routing_key == key)
                .map(|m| Message { id: m.id, body: m.body.clone() })
                .collect();
            assert_eq!(published, given, "{key}: every message, in order");
        }
        assert_eq!(store.outbox_backlog().await.unwrap(), 0);

        let mixed = c
            .execute(
                "insert into outbox (tenant_id, message_id, exchange, routing_key, payload, message_ids, payloads)
                 values ($1, $2, 'q.connector', 'hub', '{}', array[$2], array['{}'])",
                &[&t, &Uuid::now_v7()],
            )
            .await;
        assert!(mixed.is_err(), "one message or a batch, not both");
    }
}
