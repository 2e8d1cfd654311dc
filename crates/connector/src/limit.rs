//! Per-integration request rate limits, shared by every task of a connector process.
//!
//! Each integration gets a token bucket of capacity one (a GCRA schedule): request slots are
//! spaced `1 / rate` apart, so the app never sees a burst above its limit in any one-second
//! window. The rate starts at the integration's configured limit (or the app kind's default),
//! halves on every throttling answer (429, Graph codes 4/17/32/613/80000+), and climbs back by
//! a quarter every few quiet seconds.
//!
//! Waiting for a slot holds a prefetch slot of the worker pool, so a task whose slot is far
//! away is *parked* instead (see [`RateLimits::admit`]): it goes to a delay queue and comes
//! back when its turn is near. A big removal for one tenant then holds only a few slots while
//! the rest of its tasks wait in the broker, and other tenants' tasks keep flowing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Share of the configured limit actually scheduled: network jitter can bunch two requests
/// together on the way to the app, and the margin keeps any one-second window under the limit.
const SAFETY: f64 = 0.96;
/// Lowest rate a throttled integration drops to, in requests per second.
const MIN_RATE: f64 = 0.2;
/// Quiet time after which a lowered rate climbs back a step.
const RECOVERY_STEP: Duration = Duration::from_secs(5);
/// Requests per task assumed until an integration has history.
const DEFAULT_REQUESTS_PER_TASK: f64 = 1.5;

#[derive(Debug)]
struct Bucket {
    configured: f64,
    rate: f64,
    /// The earliest time the next request may be sent.
    next_free: Instant,
    /// Where parked tasks are scheduled up to: each parked task takes the slots its requests
    /// will need, so they come back spaced at the rate.
    parked_until: Instant,
    last_change: Instant,
    requests: u64,
    tasks: u64,
}

impl Bucket {
    fn new(configured: f64, now: Instant) -> Self {
        Self {
            configured,
            rate: configured,
            next_free: now,
            parked_until: now,
            last_change: now,
            requests: 0,
            tasks: 0,
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / (self.rate * SAFETY).max(MIN_RATE * SAFETY))
    }

    fn refresh(&mut self, configured: f64, now: Instant) {
        if (configured - self.configured).abs() > f64::EPSILON {
            self.configured = configured;
            self.rate = self.rate.min(configured);
        }
        if self.rate < self.configured && now.duration_since(self.last_change) >= RECOVERY_STEP {
            self.rate = (self.rate * 1.25).min(self.configured);
            self.last_change = now;
        }
    }

    fn requests_per_task(&self) -> f64 {
        if self.tasks < 20 {
            DEFAULT_REQUESTS_PER_TASK
        } else {
            (self.requests as f64 / self.tasks as f64).clamp(1.0, 50.0)
        }
    }
}

/// What [`RateLimits::admit`] decided for a task about to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; request slots are near.
    Now,
    /// Park the task for this long; its turn comes then.
    Park(Duration),
}

/// The rate limits of every integration this process talks to.
#[derive(Debug, Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

impl RateLimits {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_bucket<T>(&self, key: Uuid, configured: f64, f: impl FnOnce(&mut Bucket, Instant) -> T) -> T {
        let now = Instant::now();
        let configured = configured.max(MIN_RATE);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(key).or_insert_with(|| Bucket::new(configured, now));
        bucket.refresh(configured, now);
        f(bucket, now)
    }

    /// Reserves the next request slot of `key` and returns how long to wait for it.
    pub fn reserve(&self, key: Uuid, configured: f64) -> Duration {
        self.with_bucket(key, configured, |b, now| {
            let slot = b.next_free.max(now);
            b.next_free = slot + b.interval();
            b.requests += 1;
            slot.duration_since(now)
        })
    }

    /// Waits for the next request slot of `key`.
    pub async fn acquire(&self, key: Uuid, configured: f64) {
        let wait = self.reserve(key, configured);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Decides whether a task may start now or should be parked: it starts when neither the
    /// request slots already reserved nor the tasks already parked reach further than
    /// `patience`; otherwise it takes its place behind the parked ones.
    pub fn admit(&self, key: Uuid, configured: f64, patience: Duration) -> Admission {
        self.with_bucket(key, configured, |b, now| {
            b.tasks += 1;
            let busy_until = b.next_free.max(b.parked_until);
            if busy_until <= now + patience {
                return Admission::Now;
            }
            let need = b.interval().mul_f64(b.requests_per_task());
            let start = b.parked_until.max(now + patience);
            b.parked_until = start + need;
            // The task is counted again when it comes back.
            b.tasks -= 1;
            Admission::Park(start.duration_since(now))
        })
    }

    /// The app said "slow down": halve the integration's rate and push the next slot out by
    /// one new interval.
    pub fn throttled(&self, key: Uuid, configured: f64) {
        self.with_bucket(key, configured, |b, now| {
            b.rate = (b.rate / 2.0).max(MIN_RATE);
            b.last_change = now;
            b.next_free = b.next_free.max(now) + b.interval();
            tracing::warn!(integration_id = %key, rate_per_s = b.rate, "app throttled us; lowering the integration's rate");
        })
    }

    /// The rate currently used for `key` (requests per second), if it has been used.
    pub fn current_rate(&self, key: Uuid) -> Option<f64> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).get(&key).map(|b| b.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_at_the_rate_with_no_burst() {
        let limits = RateLimits::new();
        let key = Uuid::new_v4();
        let waits: Vec<Duration> = (0..5).map(|_| limits.reserve(key, 10.0)).collect();
        assert_eq!(waits[0], Duration::ZERO);
        for pair in waits.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(100), "{gap:?}");
            assert!(gap <= Duration::from_millis(105), "{gap:?}");
        }
        // Another integration is not affected.
        assert_eq!(limits.reserve(Uuid::new_v4(), 10.0), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn any_one_second_window_holds_at_most_the_limit() {
        let limits = RateLimits::new();
        let key = Uuid::new_v4();
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..300 {
            limits.acquire(key, 50.0).await;
            sent.push(Instant::now().duration_since(start));
        }
        for (i, at) in sent.iter().enumerate() {
            let within = sent[i..].iter().take_while(|t| **t < *at + Duration::from_secs(1)).count();
            assert!(within <= 50, "{within} requests in the second after {at:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_and_quiet_time_restores_it() {
        let limits = RateLimits::new();
        let key = Uuid::new_v4();
        limits.reserve(key, 40.0);
        limits.throttled(key, 40.0);
        assert_eq!(limits.current_rate(key), Some(20.0));
        limits.throttled(key, 40.0);
        assert_eq!(limits.current_rate(key), Some(10.0));
        for _ in 0..10 {
            tokio::time::advance(RECOVERY_STEP).await;
            limits.reserve(key, 40.0);
        }
        assert_eq!(limits.current_rate(key), Some(40.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_queue_of_work_parks_tasks_in_turn() {
        let limits = RateLimits::new();
        let key = Uuid::new_v4();
        let patience = Duration::from_secs(1);
        // Fill two seconds of slots at 10/s.
        for _ in 0..20 {
            limits.reserve(key, 10.0);
        }
        let first = limits.admit(key, 10.0, patience);
        let second = limits.admit(key, 10.0, patience);
        match (first, second) {
            (Admission::Park(a), Admission::Park(b)) => assert!(b > a, "{a:?} then {b:?}"),
            other => panic!("expected both parked, got {other:?}"),
        }
        // An idle integration admits at once.
        assert_eq!(limits.admit(Uuid::new_v4(), 10.0, patience), Admission::Now);
    }
}
