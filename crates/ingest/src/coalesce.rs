//! Group commit for writes that arrive together.
//!
//! An IdP deprovisioning a department sends many small changes at once. Each one written in its
//! own statement costs the database a commit and a round trip; written together they cost one.
//! A [`Coalescer`] queues what callers submit; when no write is in flight the first caller's
//! item starts one at once (a lone request waits for nothing), and whatever arrives while it
//! runs goes together in the next. Every caller still gets its own answer only after the write
//! holding its item returned, so a 2xx still means committed.
//!
//! One write at a time makes the largest batches, and so the fewest statements and commits per
//! change, which is what counts while the database is busy. A second write starts beside it
//! only when the queue has grown long (`spill` items) during a write: then the database would
//! otherwise sit waiting for the one commit's flush with a full batch ready. Items carry a key
//! (a user, a group); two writes in flight never hold items with the same key, so changes with
//! one key are written in the order they came.
//!
//! The writes run in tasks of their own, not in the request's future: a client that hangs up
//! cannot strand the callers whose items were in the same batch.

use crate::ApiError;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;
use unseat_scim::ScimError;
use unseat_telemetry::Histogram;
use uuid::Uuid;

/// Queues items of type `T` and writes them in batches of at most `max` with `write`, which
/// returns one answer per item, in order: one write at a time, or up to `writes` while at
/// least `spill` items wait.
pub struct Coalescer<T, R, W> {
    queue: Mutex<Queue<T, R>>,
    max: usize,
    writes: usize,
    spill: usize,
    write: W,
}

struct Queue<T, R> {
    items: VecDeque<Pending<T, R>>,
    /// Writes in flight (tasks draining the queue).
    writing: usize,
    /// The keys of the items in flight.
    busy: HashSet<Uuid>,
}

struct Pending<T, R> {
    key: Uuid,
    item: T,
    answer: oneshot::Sender<R>,
}

impl<T, R> Queue<T, R> {
    /// Up to `max` items, oldest first, none with a key in flight (those stay queued, in
    /// order); their keys are in flight from now on.
    fn take(&mut self, max: usize) -> Vec<Pending<T, R>> {
        let mut batch = Vec::new();
        if self.busy.is_empty() {
            batch.extend(self.items.drain(..self.items.len().min(max)));
        } else {
            let mut kept = VecDeque::with_capacity(self.items.len());
            for p in self.items.drain(..) {
                if batch.len() < max && !self.busy.contains(&p.key) {
                    batch.push(p);
                } else {
                    kept.push_back(p);
                }
            }
            self.items = kept;
        }
        self.busy.extend(batch.iter().map(|p| p.key));
        batch
    }
}

impl<T, R, W, Fut> Coalescer<T, R, W>
where
    T: Send + 'static,
    R: Send + 'static,
    W: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<R>> + Send + 'static,
{
    pub fn new(max: usize, writes: usize, spill: usize, write: W) -> Arc<Self> {
        let queue = Queue { items: VecDeque::new(), writing: 0, busy: HashSet::new() };
        Arc::new(Self { queue: Mutex::new(queue), max: max.max(1), writes: writes.max(1), spill: spill.max(1), write })
    }

    fn lock(&self) -> MutexGuard<'_, Queue<T, R>> {
        // The queue is only changed under the lock, never left half-changed.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `item` under `key` and waits for its answer; `None` if the write holding it
    /// never answered (it panicked), in which case nothing is known about the item.
    pub async fn submit(self: &Arc<Self>, key: Uuid, item: T) -> Option<R> {
        let (answer, rx) = oneshot::channel();
        let start = {
            let mut q = self.lock();
            q.items.push_back(Pending { key, item, answer });
            let start = q.writing == 0 || (q.writing < self.writes && q.items.len() >= self.spill);
            q.writing += usize::from(start);
            start
        };
        if start {
            tokio::spawn(self.clone().drain());
        }
        rx.await.ok()
    }

    /// Writes batches until the queue is empty, or, beside another write, until it is short.
    async fn drain(self: Arc<Self>) {
        let mut writing = Writing { coalescer: &self, keys: Vec::new() };
        loop {
            let batch = {
                let mut q = self.lock();
                let batch = if q.writing > 1 && q.items.len() < self.spill { Vec::new() } else { q.take(self.max) };
                if batch.is_empty() {
                    // Whatever is still queued waits for a key in flight: its write goes on.
                    q.writing -= 1;
                    return;
                }
                batch
            };
            let mut items = Vec::with_capacity(batch.len());
            let mut answers = Vec::with_capacity(batch.len());
            for p in batch {
                writing.keys.push(p.key);
                items.push(p.item);
                answers.push(p.answer);
            }
            let results = (self.write)(items).await;
            writing.done();
            for (answer, result) in answers.into_iter().zip(results) {
                // A caller that went away no longer needs its answer; the write stands.
                let _ = answer.send(result);
            }
        }
    }
}

type BoxedWrite<T, R> = Box<dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = Vec<R>> + Send>> + Send + Sync>;

/// A [`Coalescer`] behind a type-erased write, shared by the requests of one kind of change.
pub(crate) struct Writers<T, R>(Arc<Coalescer<T, R, BoxedWrite<T, R>>>);

impl<T, R> Clone for Writers<T, R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Send + 'static, R: Send + 'static> Writers<T, R> {
    /// At most `writes` writes in flight, the second and later only while `spill` items wait;
    /// each write's number of items is observed in `sizes`.
    pub fn new<F, Fut>(writes: usize, spill: usize, max: usize, sizes: Histogram, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let boxed: BoxedWrite<T, R> = Box::new(move |batch| {
            sizes.observe(batch.len() as f64);
            Box::pin(write(batch))
        });
        Self(Coalescer::new(max, writes, spill, boxed))
    }
}

impl<T: Send + 'static, X: Send + 'static> Writers<T, Result<X, ScimError>> {
    /// Queues `item` under `key` and waits for its answer (see [`Coalescer::submit`]); a write
    /// that never answered is a 500.
    pub async fn submit(&self, key: Uuid, item: T) -> Result<X, ScimError> {
        self.0.submit(key, item).await.unwrap_or_else(|| Err(ScimError::internal("internal error")))
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

/// A write in flight: its keys are released when it returns. Should it panic, the keys are
/// released too, the callers still queued are answered `None` (their senders drop) and the
/// next submit starts a fresh write instead of waiting for a dead one.
struct Writing<'a, T, R, W> {
    coalescer: &'a Coalescer<T, R, W>,
    keys: Vec<Uuid>,
}

impl<T, R, W> Writing<'_, T, R, W> {
    fn done(&mut self) {
        let mut q = self.coalescer.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in self.keys.drain(..) {
            q.busy.remove(&key);
        }
    }
}

impl<T, R, W> Drop for Writing<'_, T, R, W> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.done();
            let mut q = self.coalescer.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            q.items.clear();
            q.writing -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::Notify;

    fn key(i: u32) -> Uuid {
        Uuid::from_u128(i.into())
    }

    type Gated = Arc<Coalescer<u32, u32, BoxedWrite<u32, u32>>>;
    type Batches = Arc<Mutex<Vec<Vec<u32>>>>;

    /// A coalescer whose first write waits for `release` (after saying so on the returned
    /// receiver), recording each batch when its write ends; it answers each item times ten.
    fn gated(writes: usize, spill: usize) -> (Gated, Batches, oneshot::Receiver<()>, Arc<Notify>) {
        let batches = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let started_tx = Arc::new(Mutex::new(Some(started_tx)));
        let release = Arc::new(Notify::new());
        let (seen, gate) = (batches.clone(), release.clone());
        let write: BoxedWrite<u32, u32> = Box::new(move |items: Vec<u32>| {
            let (seen, gate, started) = (seen.clone(), gate.clone(), started_tx.lock().unwrap().take());
            Box::pin(async move {
                if let Some(started) = started {
                    let _ = started.send(());
                    gate.notified().await;
                }
                seen.lock().unwrap().push(items.clone());
                items.into_iter().map(|i| i * 10).collect()
            })
        });
        (Coalescer::new(100, writes, spill, write), batches, started_rx, release)
    }

    /// Submits item `i` under key `k` from a task of its own.
    fn submit(c: &Gated, k: u32, i: u32) -> tokio::task::JoinHandle<Option<u32>> {
        let c = c.clone();
        tokio::spawn(async move { c.submit(key(k), i).await })
    }

    async fn queued(c: &Gated, n: usize) {
        while c.lock().items.len() < n {
            tokio::task::yield_now().await;
        }
    }

    /// The answer of a write that must finish while the first is held (a bound, so a missing
    /// second write fails the test instead of hanging it).
    async fn beside(h: tokio::task::JoinHandle<Option<u32>>) -> Option<u32> {
        tokio::time::timeout(Duration::from_secs(10), h).await.expect("no second write beside the held one").unwrap()
    }

    #[tokio::test]
    async fn a_second_write_starts_only_once_the_queue_is_long() {
        let (c, batches, started, release) = gated(2, 3);
        let first = submit(&c, 1, 1);
        started.await.unwrap();
        let (two, three) = (submit(&c, 2, 2), submit(&c, 3, 3));
        queued(&c, 2).await;
        assert_eq!(c.lock().writing, 1, "two waiting items start no second write");
        let four = submit(&c, 4, 4);
        // The fourth makes three waiting: a second write takes them while the first is held.
        for (i, h) in [(2, two), (3, three), (4, four)] {
            assert_eq!(beside(h).await, Some(i * 10));
        }
        assert_eq!(*batches.lock().unwrap(), vec![vec![2, 3, 4]]);
        release.notify_one();
        assert_eq!(first.await.unwrap(), Some(10));
        assert_eq!(*batches.lock().unwrap(), vec![vec![2, 3, 4], vec![1]]);
    }

    #[tokio::test]
    async fn two_writes_never_hold_items_with_one_key() {
        let (c, batches, started, release) = gated(2, 2);
        let first = submit(&c, 7, 1);
        started.await.unwrap();
        // Item 2 has the held write's key: the second write, started by item 3, leaves it.
        let two = submit(&c, 7, 2);
        queued(&c, 1).await;
        let three = submit(&c, 8, 3);
        assert_eq!(beside(three).await, Some(30));
        assert_eq!(*batches.lock().unwrap(), vec![vec![3]]);
        assert_eq!(c.lock().items.len(), 1, "the item with the held key waits");
        release.notify_one();
        assert_eq!(first.await.unwrap(), Some(10));
        assert_eq!(two.await.unwrap(), Some(20));
        assert_eq!(*batches.lock().unwrap(), vec![vec![3], vec![1], vec![2]], "one key's items in the order they came");
        assert_eq!(c.lock().writing, 0);
    }

    #[tokio::test]
    async fn items_that_arrive_during_a_write_go_together_in_the_next() {
        // The first write waits until the test lets it go, so the others surely arrive while it
        // is in flight.
        let (c, batches, started, release) = gated(1, 1);
        let first = submit(&c, 1, 1);
        started.await.unwrap();
        let rest: Vec<_> = (2..=5).map(|i| submit(&c, i, i)).collect();
        // Let the four queue up behind the first write, then let it finish.
        queued(&c, 4).await;
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
        let c = Coalescer::new(3, 1, 1, move |items: Vec<u32>| {
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
                tokio::spawn(async move { c.submit(key(i), i).await })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), Some(i as u32));
        }
        assert_eq!(largest.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_caller_that_hangs_up_does_not_strand_the_others() {
        let c = Coalescer::new(10, 1, 1, |items: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            items
        });
        let leader = tokio::spawn({
            let c = c.clone();
            async move { c.submit(key(1), 1).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let follower = tokio::spawn({
            let c = c.clone();
            async move { c.submit(key(2), 2).await }
        });
        leader.abort();
        assert_eq!(follower.await.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn a_panicking_write_answers_none_and_the_next_submit_writes_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let n = calls.clone();
        let c = Coalescer::new(10, 1, 1, move |items: Vec<u32>| {
            let first = n.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                assert!(!first, "the first write fails");
                items
            }
        });
        assert_eq!(c.submit(key(1), 1).await, None);
        assert_eq!(c.submit(key(2), 2).await, Some(2));
    }
}
