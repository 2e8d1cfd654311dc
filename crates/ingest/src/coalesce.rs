//! Group commit for writes that arrive together.
//!
//! An IdP deprovisioning a department sends many small changes at once. Each one written in its
//! own statement costs the database a commit and a round trip; written together they cost one.
//! A [`Coalescer`] queues what callers submit; when no write is in flight the first caller's
//! item starts one at once (a lone request waits for nothing), and whatever arrives while it
//! runs goes together in the next. Every caller still gets its own answer only after the write
//! holding its item returned, so a 2xx still means committed.
//!
//! The writes run in a task of their own, not in the request's future: a client that hangs up
//! cannot strand the callers whose items were in the same batch.

use crate::ApiError;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;
use unseat_scim::ScimError;
use uuid::Uuid;

/// Queues items of type `T` and writes them in batches of at most `max`, one batch at a time,
/// with `write`, which returns one answer per item, in order.
pub struct Coalescer<T, R, W> {
    queue: Mutex<Queue<T, R>>,
    max: usize,
    write: W,
}

struct Queue<T, R> {
    items: VecDeque<(T, oneshot::Sender<R>)>,
    writing: bool,
}

impl<T, R, W, Fut> Coalescer<T, R, W>
where
    T: Send + 'static,
    R: Send + 'static,
    W: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<R>> + Send + 'static,
{
    pub fn new(max: usize, write: W) -> Arc<Self> {
        Arc::new(Self { queue: Mutex::new(Queue { items: VecDeque::new(), writing: false }), max: max.max(1), write })
    }

    fn lock(&self) -> MutexGuard<'_, Queue<T, R>> {
        // The queue is only pushed to and drained under the lock, never left half-changed.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `item` and waits for its answer; `None` if the write holding it never answered
    /// (it panicked), in which case nothing is known about the item.
    pub async fn submit(self: &Arc<Self>, item: T) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.lock();
            q.items.push_back((item, tx));
            !std::mem::replace(&mut q.writing, true)
        };
        if start {
            tokio::spawn(self.clone().drain());
        }
        rx.await.ok()
    }

    /// Writes batches until the queue is empty.
    async fn drain(self: Arc<Self>) {
        let _writing = Writing(&self);
        loop {
            let batch: Vec<(T, oneshot::Sender<R>)> = {
                let mut q = self.lock();
                if q.items.is_empty() {
                    q.writing = false;
                    return;
                }
                let n = q.items.len().min(self.max);
                q.items.drain(..n).collect()
            };
            let (items, answers): (Vec<T>, Vec<oneshot::Sender<R>>) = batch.into_iter().unzip();
            let results = (self.write)(items).await;
            for (answer, result) in answers.into_iter().zip(results) {
                // A caller that went away no longer needs its answer; the write stands.
                let _ = answer.send(result);
            }
        }
    }
}

type BoxedWrite<T, R> = Box<dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = Vec<R>> + Send>> + Send + Sync>;

/// Several coalescers writing at once, each item going to the one its key picks: items with
/// one key are written in the order they came, never by two writers at a time, while the
/// database commits one batch the next is being built.
pub(crate) struct Writers<T, R>(Arc<[Shard<T, R>]>);

type Shard<T, R> = Arc<Coalescer<T, R, BoxedWrite<T, R>>>;

impl<T, R> Clone for Writers<T, R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Send + 'static, R: Send + 'static> Writers<T, R> {
    pub fn new<F, Fut>(writers: usize, max: usize, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let write = Arc::new(write);
        let shards = (0..writers.max(1))
            .map(|_| {
                let write = write.clone();
                let boxed: BoxedWrite<T, R> = Box::new(move |batch| Box::pin(write(batch)));
                Coalescer::new(max, boxed)
            })
            .collect();
        Self(shards)
    }
}

impl<T: Send + 'static, X: Send + 'static> Writers<T, Result<X, ScimError>> {
    /// Queues `item` with the writer `key` picks and waits for its answer (see
    /// [`Coalescer::submit`]); a write that never answered is a 500.
    pub async fn submit(&self, key: Uuid, item: T) -> Result<X, ScimError> {
        let shard = &self.0[(key.as_u128() % self.0.len() as u128) as usize];
        shard.submit(item).await.unwrap_or_else(|| Err(ScimError::internal("internal error")))
    }
}

/// The answer for every item of a batch whose write failed: the same error for each, logged
/// once when it is the server's fault.
pub(crate) fn failed_batch<T>(err: ApiError, items: usize, what: &str) -> Vec<Result<T, ScimError>> {
    let scim = err.to_scim();
    if scim.status >= 500 {
        tracing::error!(error = %err, items, "writing {what} failed");
    }
    (0..items).map(|_| Err(scim.clone())).collect()
}

/// Should a write panic, the callers still queued are answered `None` (their senders drop)
/// and the next submit starts a fresh writer instead of waiting for a dead one.
struct Writing<'a, T, R, W>(&'a Coalescer<T, R, W>);

impl<T, R, W> Drop for Writing<'_, T, R, W> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut q = self.0.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            q.items.clear();
            q.writing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn items_that_arrive_during_a_write_go_together_in_the_next() {
        // The first write waits until the test lets it go, so the others surely arrive while it
        // is in flight.
        let batches = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let started_tx = Arc::new(Mutex::new(Some(started_tx)));
        let release = Arc::new(tokio::sync::Notify::new());
        let (seen, gate) = (batches.clone(), release.clone());
        let c = Coalescer::new(100, move |items: Vec<u32>| {
            let (seen, gate, started) = (seen.clone(), gate.clone(), started_tx.lock().unwrap().take());
            async move {
                if let Some(started) = started {
                    let _ = started.send(());
                    gate.notified().await;
                }
                seen.lock().unwrap().push(items.clone());
                items.into_iter().map(|i| i * 10).collect()
            }
        });
        let first = tokio::spawn({
            let c = c.clone();
            async move { c.submit(1).await }
        });
        started_rx.await.unwrap();
        let rest: Vec<_> = (2..=5)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move { c.submit(i).await })
            })
            .collect();
        // Let the four queue up behind the first write, then let it finish.
        while c.lock().items.len() < 4 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        assert_eq!(first.await.unwrap(), Some(10), "a lone item is written at once");
        for (i, h) in (2..=5).zip(rest) {
            assert_eq!(h.await.unwrap(), Some(i * 10), "each caller gets its own answer");
        }
        assert_eq!(*batches.lock().unwrap(), vec![vec![1], vec![2, 3, 4, 5]]);
    }

    #[tokio::test]
    async fn batches_are_bounded() {
        let largest = Arc::new(AtomicUsize::new(0));
        let l = largest.clone();
        let c = Coalescer::new(3, move |items: Vec<u32>| {
            let l = l.clone();
            async move {
                l.fetch_max(items.len(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                items
            }
        });
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move { c.submit(i).await })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), Some(i as u32));
        }
        assert_eq!(largest.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_caller_that_hangs_up_does_not_strand_the_others() {
        let c = Coalescer::new(10, |items: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            items
        });
        let leader = tokio::spawn({
            let c = c.clone();
            async move { c.submit(1).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let follower = tokio::spawn({
            let c = c.clone();
            async move { c.submit(2).await }
        });
        leader.abort();
        assert_eq!(follower.await.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn a_panicking_write_answers_none_and_the_next_submit_writes_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let n = calls.clone();
        let c = Coalescer::new(10, move |items: Vec<u32>| {
            let first = n.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                assert!(!first, "the first write fails");
                items
            }
        });
        assert_eq!(c.submit(1).await, None);
        assert_eq!(c.submit(2).await, Some(2));
    }
}
