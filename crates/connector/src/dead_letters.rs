//! Keeping the dead-letter queue the list of what still needs a look. A task that fails is
//! recorded in the log store (failed, dead-lettered, with its last error) and its message goes
//! to `<queue>.dlq`. Once an admin re-drives the task, the store is its record again and the
//! copy in the dead-letter queue is stale: when a connector picks a re-driven task up it asks
//! for a sweep, which goes once through the queue and removes every copy dead-lettered before
//! its task's last re-drive, and every copy of a task since superseded (a later task applied
//! the user's access, or the integration was deleted: nothing is left for anyone to do). A
//! sweep also runs every `dead_letter_sweep` (10 minutes), since superseding asks for none.
//! Everything else stays: messages that are not connector tasks,
//! tasks the store does not know, and copies of failures newer than the last re-drive (the
//! broker's own dead-lettering after the delivery limit included). Sweeps run one at a time
//! per worker pool; requests made meanwhile fold into the next sweep. A kept message goes back
//! with a requeueing nack: the dead-letter queues are declared without a delivery limit (on
//! RabbitMQ 4, whose quorum queues default to a limit of 20, a policy should lift it).

use crate::runtime::parse_task;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use unseat_bus::Held;
use unseat_store::Store;
use uuid::Uuid;

/// Messages looked at per sweep at most (bounded memory).
const MAX_SWEEP: usize = 10_000;

/// Whether a dead-lettered copy can go: its task was re-driven after the broker
/// dead-lettered it. `status` and `redriven_at` (whole seconds) come from the store. The
/// broker's time has whole seconds too: in the re-drive's own second a copy goes only if
/// the task is no longer failed (a newer failure is recorded before its copy is made).
pub fn superseded(dead_lettered_at: Option<u64>, status: &str, redriven_at: Option<i64>) -> bool {
    // Final: never re-driven, never attempted again.
    if status == "superseded" {
        return true;
    }
    let (Some(died), Some(redriven)) = (dead_lettered_at.map(|d| d as i64), redriven_at) else {
        return false;
    };
    died < redriven || (died == redriven && status != "failed")
}

/// The sweeper of one worker pool's dead-letter queue.
pub(crate) struct Sweeper {
    pub store: Store,
    pub amqp_url: String,
    pub queue: String,
    pub app: String,
    pub wanted: Arc<Notify>,
    /// Sweeps unasked this often.
    pub every: std::time::Duration,
}

impl Sweeper {
    /// Sweeps whenever asked, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.every.max(std::time::Duration::from_secs(1)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wanted.notified() => {}
                _ = every.tick() => {}
            }
            match self.sweep().await {
                Ok((seen, removed)) if removed > 0 => {
                    tracing::info!(app = %self.app, queue = %self.queue, seen, removed, "swept copies that need no look any more out of the dead-letter queue")
                }
                Ok((seen, _)) => {
                    tracing::debug!(app = %self.app, queue = %self.queue, seen, "swept the dead-letter queue; nothing to remove")
                }
                Err(error) => {
                    tracing::warn!(app = %self.app, queue = %self.queue, error = %error, "could not sweep the dead-letter queue; its copies stay until the next re-drive")
                }
            }
        }
    }

    async fn sweep(&self) -> Result<(usize, usize), String> {
        let conn = unseat_bus::connect(&self.amqp_url, &format!("connector-{}-dlq-sweep", self.app))
            .await
            .map_err(|e| e.to_string())?;
        let store = self.store.clone();
        let result = unseat_bus::sweep_queue(&conn, &self.queue, MAX_SWEEP, |held| async move {
            match verdicts(&store, &held).await {
                Ok(v) => v,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot read the dead-lettered tasks; keeping every copy");
                    vec![false; held.len()]
                }
            }
        })
        .await
        .map_err(|e| e.to_string());
        let _ = conn.close(200, "bye".into()).await;
        result
    }
}

/// For each held message: remove it?
async fn verdicts(store: &Store, held: &[Held]) -> Result<Vec<bool>, unseat_store::StoreError> {
    let tasks: Vec<Option<(Uuid, Uuid)>> =
        held.iter().map(|h| parse_task(&h.data).ok().map(|t| (t.tenant_id, t.task_id))).collect();
    let (tenants, ids): (Vec<Uuid>, Vec<Uuid>) = tasks.iter().flatten().copied().unzip();
    let mut known: HashMap<(Uuid, Uuid), (String, Option<i64>)> = HashMap::new();
    if !ids.is_empty() {
        let client = store.client().await?;
        let rows = client
            .query(
                "select tenant_id, id, status, floor(extract(epoch from redriven_at))::bigint from tasks
                 where (tenant_id, id) in (select * from unnest($1::uuid[], $2::uuid[]))",
                &[&tenants, &ids],
            )
            .await?;
        for r in rows {
            known.insert((r.get(0), r.get(1)), (r.get(2), r.get(3)));
        }
    }
    Ok(held
        .iter()
        .zip(&tasks)
        .map(|(h, task)| match task.and_then(|t| known.get(&t)) {
            Some((status, redriven_at)) => superseded(h.dead_lettered_at, status, *redriven_at),
            None => false,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_copies_older_than_the_last_redrive_go() {
        // Dead-lettered at 100, re-driven at 105: stale, whatever the task is now.
        assert!(superseded(Some(100), "succeeded", Some(105)));
        assert!(superseded(Some(100), "failed", Some(105)));
        // Failed again after the re-drive: that newer copy stays.
        assert!(!superseded(Some(110), "failed", Some(105)));
        // Dead-lettered by the broker after the re-drive (database down): stays.
        assert!(!superseded(Some(110), "queued", Some(105)));
        // The same second: gone unless the task failed again.
        assert!(superseded(Some(105), "running", Some(105)));
        assert!(!superseded(Some(105), "failed", Some(105)));
        // Never re-driven, or no death record: stays.
        assert!(!superseded(Some(100), "failed", None));
        assert!(!superseded(None, "succeeded", Some(105)));
        // Superseded since (a later task applied the access, the integration was deleted): goes.
        assert!(superseded(Some(100), "superseded", None));
        assert!(superseded(None, "superseded", Some(105)));
    }
}
