//! Per-integration request rate limits, shared by every task of a connector process and, with
//! [`RateLimits::shared`], by every connector replica.
//!
//! Each integration gets a token bucket of capacity one (a GCRA schedule): request slots are
//! spaced `1 / rate` apart, so the app never sees a burst above its limit in any one-second
//! window. The rate starts at the integration's configured limit (or the app kind's default),
//! halves on every throttling answer (429, Graph codes 4/17/32/613/80000+), and climbs back by
//! a quarter every few quiet seconds.
//!
//! Replicas share the schedule through PostgreSQL (`rate_limit_schedules`, one row per
//! integration): a replica leases a few consecutive slots at a time with one upsert that moves
//! the row's `next_free` on, hands them to its own requests in order, and drops a slot that
//! nobody took in time (using it late could bunch requests together). The throttled rate lives
//! in the same row, so a 429 seen by one replica slows all of them. When the database cannot
//! be reached the process paces its own requests with the in-process schedule.
//!
//! Waiting for a slot holds a prefetch slot of the worker pool, so a task whose slot is far
//! away is *parked* instead (see [`RateLimits::admit`]): it goes to a delay queue and comes
//! back when its turn is near. A big removal for one tenant then holds only a few slots while
//! the rest of its tasks wait in the broker, and other tenants' tasks keep flowing.

use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use unseat_store::Store;
use uuid::Uuid;

/// Share of the configured limit actually scheduled: network jitter can bunch two requests
/// together on the way to the app, and the margin keeps any one-second window under the limit.
const SAFETY: f64 = 0.96;
/// Lowest rate a throttled integration drops to, in requests per second.
const MIN_RATE: f64 = 0.2;
/// A usage header at this percent or more lowers the rate ([`RateLimits::nearly_used`]).
pub const NEARLY_USED: f64 = 90.0;
/// Quiet time after which a lowered rate climbs back a step.
const RECOVERY_STEP: Duration = Duration::from_secs(5);
/// Requests per task assumed until an integration has history.
const DEFAULT_REQUESTS_PER_TASK: f64 = 1.5;
/// A lease covers about this much of the schedule (at least one slot, at most [`MAX_LEASE`]),
/// so a replica asks the database once per a few requests.
const LEASE_SPAN: Duration = Duration::from_millis(200);
const MAX_LEASE: usize = 10;
/// How late a request may still use its slot: half an interval, but at least a few
/// milliseconds (timers are not finer, and at high rates those few are a tiny share of a
/// second: any one-second window still stays under the limit above ~30 requests/s, and below
/// that half an interval is the larger).
fn lateness_allowed(interval: Duration) -> Duration {
    (interval / 2).max(Duration::from_millis(5))
}
/// Fresh slots a request takes at most after waking up late for one; then it goes anyway.
const LATE_WAKE_RETRIES: usize = 4;
/// The longest a request waits for its slot. A request waits inside its task's attempt, which
/// holds a database connection and the (integration, user) row lock; a slot further away
/// comes from a pause the app asked for, and the task is better parked until then.
pub const MAX_SLOT_WAIT: Duration = Duration::from_secs(30);

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
    /// When a usage report last lowered the rate.
    nearly_used_at: Option<Instant>,
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
            nearly_used_at: None,
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
#[derive(Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<Uuid, Bucket>>,
    shared: Option<Shared>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").field("shared", &self.shared.is_some()).finish_non_exhaustive()
    }
}

/// The schedule kept in PostgreSQL, and this process's leased slots per integration.
struct Shared {
    store: Store,
    /// A connection of the limiter's own: requests ask for slots while their attempt holds a
    /// pooled connection, so waiting on the pool here could starve every attempt.
    conn: tokio::sync::Mutex<Option<unseat_store::tokio_postgres::Client>>,
    leases: Mutex<HashMap<Uuid, Arc<LeasedSlots>>>,
}

/// One integration's leased slots not yet taken, earliest first (database time).
type LeasedSlots = tokio::sync::Mutex<VecDeque<DateTime<Utc>>>;

/// Slots leased from the shared schedule (database time), where the schedule now ends, and
/// the rate they were leased at.
struct Lease {
    slots: Vec<DateTime<Utc>>,
    end: DateTime<Utc>,
    rate: f64,
}

impl Shared {
    fn queue(&self, key: Uuid) -> Arc<LeasedSlots> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(leases.entry(key).or_default())
    }

    /// Runs one statement on the limiter's connection (made on first use, and again after a
    /// failure).
    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn unseat_store::tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<unseat_store::tokio_postgres::Row>, String> {
        let mut conn = self.conn.lock().await;
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = Some(self.store.dedicated_client().await.map_err(|e| e.to_string())?);
        }
        let Some(client) = conn.as_ref() else {
            return Err("no connection".into());
        };
        match client.query_opt(sql, params).await {
            Ok(row) => Ok(row),
            Err(error) => {
                *conn = None;
                Err(match error.as_db_error() {
                    Some(db) => format!("{}: {}", db.code().code(), db.message()),
                    None => error.to_string(),
                })
            }
        }
    }

    /// Takes `count` consecutive slots of the integration's shared schedule (creating its row
    /// on first use), applying a recovery step of a lowered rate on the way.
    async fn lease(&self, tenant: Uuid, key: Uuid, configured: f64, count: usize) -> Result<Lease, String> {
        const SQL: &str = "
            insert into rate_limit_schedules as s (tenant_id, integration_id, configured, rate, next_free, lowered_at)
            values ($1, $2, $3::float8, $3::float8,
                    clock_timestamp() + make_interval(secs => $4::float8 / (greatest($3::float8, $5::float8) * $6::float8)), clock_timestamp())
            on conflict (tenant_id, integration_id) do update set
                configured = excluded.configured,
                rate = least(excluded.configured,
                             case when s.rate < s.configured and clock_timestamp() - s.lowered_at >= make_interval(secs => $7::float8)
                                  then s.rate * 1.25 else s.rate end),
                lowered_at = case when s.rate < s.configured and clock_timestamp() - s.lowered_at >= make_interval(secs => $7::float8)
                                  then clock_timestamp() else s.lowered_at end,
                next_free = greatest(s.next_free, clock_timestamp()) + make_interval(secs => $4::float8 / (greatest(
                             least(excluded.configured,
                                   case when s.rate < s.configured and clock_timestamp() - s.lowered_at >= make_interval(secs => $7::float8)
                                        then s.rate * 1.25 else s.rate end), $5::float8) * $6::float8))
            returning next_free, rate";
        let row = self
            .query_opt(
                SQL,
                &[&tenant, &key, &configured, &(count as f64), &MIN_RATE, &SAFETY, &RECOVERY_STEP.as_secs_f64()],
            )
            .await?
            .ok_or("the schedule upsert returned nothing")?;
        let (end, rate): (DateTime<Utc>, f64) = (row.get(0), row.get(1));
        let interval = chrono::Duration::from_std(Duration::from_secs_f64(1.0 / (rate.max(MIN_RATE) * SAFETY)))
            .unwrap_or_default();
        let slots = (0..count).map(|i| end - interval * (count - i) as i32).collect();
        Ok(Lease { slots, end, rate })
    }

    /// Halves the shared rate and pushes the schedule out by one new interval, and to at least
    /// `pause` from now; the new rate, or None when the integration has no shared schedule yet.
    async fn lower(&self, tenant: Uuid, key: Uuid, pause: Duration) -> Result<Option<f64>, String> {
        let row = self
            .query_opt(
                "update rate_limit_schedules set rate = greatest(rate / 2, $3::float8), lowered_at = clock_timestamp(),
                        next_free = greatest(greatest(next_free, clock_timestamp())
                                               + make_interval(secs => 1 / (greatest(rate / 2, $3::float8) * $4::float8)),
                                             clock_timestamp() + make_interval(secs => $5::float8))
                 where tenant_id = $1 and integration_id = $2 returning rate",
                &[&tenant, &key, &MIN_RATE, &SAFETY, &pause.as_secs_f64()],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }
}

impl RateLimits {
    /// Limits kept in this process only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits shared with every replica through the store's `rate_limit_schedules`.
    pub fn shared(store: Store) -> Self {
        Self {
            buckets: Mutex::default(),
            shared: Some(Shared { store, conn: tokio::sync::Mutex::new(None), leases: Mutex::default() }),
        }
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

    /// Waits for the next request slot of integration `key` of `tenant`: from the shared
    /// schedule when there is one (falling back to this process's own when the database cannot
    /// be reached), else from this process's. A wait that ends later than `lateness_allowed`
    /// (a busy machine did not wake the task in time) takes a fresh slot instead, a few times at
    /// most: sending late would bunch this request with the ones on time after it.
    ///
    /// A slot further away than [`MAX_SLOT_WAIT`] (the app throttled the integration and named
    /// a long wait) is not waited for: the request is not sent, and the wait is returned.
    pub async fn acquire(&self, tenant: Uuid, key: Uuid, configured: f64) -> Result<(), Duration> {
        for _ in 0..LATE_WAKE_RETRIES {
            let interval = self.with_bucket(key, configured, |b, _| b.interval());
            let late = lateness_allowed(interval);
            let grace = chrono::Duration::from_std(late).unwrap_or_default();
            if let Some(shared) = &self.shared {
                match self.shared_slot(shared, tenant, key, configured).await {
                    Ok(slot) => {
                        let wait = (slot - Utc::now()).to_std().unwrap_or_default();
                        if wait > MAX_SLOT_WAIT {
                            return Err(wait);
                        }
                        tokio::time::sleep(wait).await;
                        if Utc::now() <= slot + grace {
                            return Ok(());
                        }
                        tracing::debug!(integration_id = %key, "woke up late for a request slot; taking another");
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(integration_id = %key, error = %error, "cannot reach the shared rate-limit schedule; pacing this process alone");
                    }
                }
            }
            let wait = self.reserve(key, configured);
            if wait > MAX_SLOT_WAIT {
                return Err(wait);
            }
            let slot = Instant::now() + wait;
            tokio::time::sleep_until(slot).await;
            if Instant::now() <= slot + late {
                return Ok(());
            }
            tracing::debug!(integration_id = %key, "woke up late for a request slot; taking another");
        }
        Ok(())
    }

    /// The next slot leased from the shared schedule: the oldest one still usable, else a new
    /// lease. The per-integration queue lock makes requests take slots in arrival order.
    /// Slots are times on the database's clock, which every replica's clock follows (NTP), so
    /// a slow answer to the lease does not shift them.
    async fn shared_slot(
        &self,
        shared: &Shared,
        tenant: Uuid,
        key: Uuid,
        configured: f64,
    ) -> Result<DateTime<Utc>, String> {
        let queue = shared.queue(key);
        let mut slots = queue.lock().await;
        let (interval, rate) = self.with_bucket(key, configured, |b, _| (b.interval(), b.rate));
        let grace = chrono::Duration::from_std(lateness_allowed(interval)).unwrap_or_default();
        let now = Utc::now();
        // A slot gone by more than that is dropped: sending late would bunch requests.
        while slots.front().is_some_and(|s| *s + grace < now) {
            slots.pop_front();
        }
        if let Some(slot) = slots.pop_front() {
            self.with_bucket(key, configured, |b, _| b.requests += 1);
            return Ok(slot);
        }
        let count = ((rate * LEASE_SPAN.as_secs_f64()).round() as usize).clamp(1, MAX_LEASE);
        let lease = shared.lease(tenant, key, configured, count).await?;
        let busy_until = Instant::now() + (lease.end - Utc::now()).to_std().unwrap_or_default();
        self.with_bucket(key, configured, |b, _| {
            b.rate = lease.rate;
            b.next_free = b.next_free.max(busy_until);
            b.requests += 1;
        });
        let mut leased = lease.slots.into_iter();
        let first = leased.next().ok_or("an empty lease")?;
        slots.extend(leased);
        Ok(first)
    }

    /// Decides whether a task may start now or should be parked: it starts when neither the
    /// request slots already reserved nor the tasks already parked reach further than
    /// `patience`; otherwise it takes its place behind the parked ones, and no sooner than its
    /// request slot could come (a pause the app asked for can put that far off).
    ///
    /// A task `returning` from the delay queue already holds its place among the parked ones:
    /// it starts once the request slots are near, whatever was parked behind it. (Judged like a
    /// newcomer, it would find its own place and everyone's behind it still reserved and go to
    /// the back again, and while the parked tasks outlast `patience` none would ever start.)
    pub fn admit(&self, key: Uuid, configured: f64, patience: Duration, returning: bool) -> Admission {
        self.with_bucket(key, configured, |b, now| {
            b.tasks += 1;
            let slot_near = b.next_free.checked_sub(patience).unwrap_or(now);
            if returning {
                if b.next_free <= now + patience {
                    return Admission::Now;
                }
                b.tasks -= 1;
                return Admission::Park(slot_near.max(now + patience).duration_since(now));
            }
            let busy_until = b.next_free.max(b.parked_until);
            if busy_until <= now + patience {
                return Admission::Now;
            }
            let need = b.interval().mul_f64(b.requests_per_task());
            let start = b.parked_until.max(slot_near).max(now + patience);
            b.parked_until = start + need;
            // The task is counted again when it comes back.
            b.tasks -= 1;
            Admission::Park(start.duration_since(now))
        })
    }

    /// The app said "slow down": halve the integration's rate and push the next slot out by
    /// one new interval, and at least `pause` (the wait the app named) from now, here and (with
    /// a shared schedule) for every replica; slots leased before are given up. A pause makes
    /// [`RateLimits::admit`] park the integration's tasks until it ends, and a request already
    /// waiting for a slot gives up ([`RateLimits::acquire`]): every call counts against the app's
    /// limit, the throttled ones too.
    pub async fn throttled(&self, tenant: Uuid, key: Uuid, configured: f64, pause: Option<Duration>) {
        self.lower_rate(tenant, key, configured, pause).await;
        let rate = self.current_rate(key).unwrap_or(MIN_RATE);
        tracing::warn!(integration_id = %key, rate_per_s = rate, "app throttled us; lowering the integration's rate");
    }

    /// The app reports its budget nearly used (a usage header at [`NEARLY_USED`] percent or
    /// more): the rate is lowered as a throttle would lower it, before the app has to throttle
    /// (every call counts, the throttled ones too), at most once per [`RECOVERY_STEP`], so it
    /// keeps falling while the usage stays high and climbs back once it drops.
    pub async fn nearly_used(&self, tenant: Uuid, key: Uuid, configured: f64, percent: f64) {
        let due = self.with_bucket(key, configured, |b, now| {
            let due = b.nearly_used_at.is_none_or(|at| now.duration_since(at) >= RECOVERY_STEP);
            if due {
                b.nearly_used_at = Some(now);
            }
            due
        });
        if due {
            self.lower_rate(tenant, key, configured, None).await;
            let rate = self.current_rate(key).unwrap_or(MIN_RATE);
            tracing::info!(integration_id = %key, usage_percent = percent, rate_per_s = rate, "the app reports its budget nearly used; lowering the integration's rate");
        }
    }

    /// Halves the integration's rate and pushes its next slot out (by at least `pause`), here
    /// and in the shared schedule.
    async fn lower_rate(&self, tenant: Uuid, key: Uuid, configured: f64, pause: Option<Duration>) {
        let pause = pause.unwrap_or_default();
        self.with_bucket(key, configured, |b, now| {
            b.rate = (b.rate / 2.0).max(MIN_RATE);
            b.last_change = now;
            b.next_free = (b.next_free.max(now) + b.interval()).max(now + pause);
        });
        if let Some(shared) = &self.shared {
            shared.queue(key).lock().await.clear();
            match shared.lower(tenant, key, pause).await {
                Ok(Some(shared_rate)) => self.with_bucket(key, configured, |b, _| b.rate = shared_rate),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(integration_id = %key, error = %error, "cannot lower the shared rate; lowered here only")
                }
            }
        }
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
            limits.acquire(Uuid::nil(), key, 50.0).await.expect("a near slot");
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
        limits.throttled(Uuid::nil(), key, 40.0, None).await;
        assert_eq!(limits.current_rate(key), Some(20.0));
        limits.throttled(Uuid::nil(), key, 40.0, None).await;
        assert_eq!(limits.current_rate(key), Some(10.0));
        for _ in 0..10 {
            tokio::time::advance(RECOVERY_STEP).await;
            limits.reserve(key, 40.0);
        }
        assert_eq!(limits.current_rate(key), Some(40.0));
    }

    /// Two replicas (two limiters on one database): their leases never overlap, and a 429
    /// seen by one lowers the rate the other leases at.
    #[tokio::test]
    async fn replicas_share_one_schedule_and_the_throttled_rate() {
        let (_url, store) = unseat_store::testing::fresh_database().await.expect("fresh database");
        let (tenant, key) = (Uuid::new_v4(), Uuid::new_v4());
        let client = store.client().await.expect("client");
        client.execute("insert into tenants (id, name) values ($1, 't')", &[&tenant]).await.expect("tenant");
        client
            .execute(
                "insert into integrations (tenant_id, id, name, app_kind, base_url, roles)
                 values ($1, $2, 'i', 'business_hub', 'http://x', '{ADMIN}')",
                &[&tenant, &key],
            )
            .await
            .expect("integration");
        let (one, two) = (RateLimits::shared(store.clone()), RateLimits::shared(store.clone()));
        let (Some(s1), Some(s2)) = (&one.shared, &two.shared) else {
            panic!("shared limiters have a shared schedule");
        };
        let a = s1.lease(tenant, key, 10.0, 5).await.expect("lease one");
        let b = s2.lease(tenant, key, 10.0, 5).await.expect("lease two");
        // The second lease starts where the first ends: ten slots 1/9.6 s apart in all.
        let gap = b.slots[0] - *a.slots.last().expect("slots");
        assert!(gap >= chrono::Duration::milliseconds(95), "{gap:?}");
        assert!(b.end - a.end >= chrono::Duration::milliseconds(500));

        one.throttled(tenant, key, 10.0, None).await;
        assert_eq!(one.current_rate(key), Some(5.0));
        two.acquire(tenant, key, 10.0).await.expect("a near slot");
        assert_eq!(two.current_rate(key), Some(5.0), "the other replica leases at the lowered rate");
        // A pause the app named reaches the other replica: once the slots it leased before
        // are used (at most one lease's worth), its next request is not sent.
        one.throttled(tenant, key, 10.0, Some(Duration::from_secs(600))).await;
        let mut paused = None;
        for _ in 0..MAX_LEASE + 1 {
            if let Err(wait) = two.acquire(tenant, key, 10.0).await {
                paused = Some(wait);
                break;
            }
        }
        let wait = paused.expect("paused");
        assert!(wait > Duration::from_secs(590) && wait <= Duration::from_secs(601), "{wait:?}");
        assert!(
            matches!(two.admit(key, 10.0, Duration::from_secs(3), false), Admission::Park(p) if p > Duration::from_secs(590))
        );
        // Without the database both still pace themselves.
        let offline = RateLimits::shared(Store::connect("postgres://postgres@127.0.0.1:1/x", 1).expect("pool"));
        offline.acquire(tenant, key, 10.0).await.expect("a near slot");
        assert_eq!(offline.current_rate(key), Some(10.0));
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
        let first = limits.admit(key, 10.0, patience, false);
        let second = limits.admit(key, 10.0, patience, false);
        match (first, second) {
            (Admission::Park(a), Admission::Park(b)) => assert!(b > a, "{a:?} then {b:?}"),
            other => panic!("expected both parked, got {other:?}"),
        }
        // An idle integration admits at once.
        assert_eq!(limits.admit(Uuid::new_v4(), 10.0, patience, false), Admission::Now);
    }

    /// A backlog parked for longer than `patience` drains: tasks coming back from the delay
    /// queue start in turn, at the integration's rate, and newcomers queue behind them.
    #[tokio::test(start_paused = true)]
    async fn a_parked_backlog_drains_at_the_rate() {
        let limits = RateLimits::new();
        let key = Uuid::new_v4();
        let (rate, patience) = (3.0, Duration::from_secs(3));
        let begin = Instant::now();
        // (when the task is handled, whether it comes back from the delay queue)
        let mut due: Vec<(Instant, bool)> = vec![(begin, false); 24];
        let mut started = Vec::new();
        while !due.is_empty() && begin.elapsed() < Duration::from_secs(600) {
            let now = Instant::now();
            let (ready, later): (Vec<_>, Vec<_>) = due.into_iter().partition(|(at, _)| *at <= now);
            due = later;
            for (_, returning) in ready {
                match limits.admit(key, rate, patience, returning) {
                    Admission::Now => {
                        // The task's one request takes the next slot.
                        limits.reserve(key, rate);
                        started.push(now.duration_since(begin));
                    }
                    Admission::Park(wait) => due.push((now + wait, true)),
                }
            }
            tokio::time::advance(Duration::from_millis(50)).await;
        }
        assert_eq!(started.len(), 24, "every task started");
        // 24 requests at 3/s (less the safety margin) need about 8 s; a few more for patience.
        let last = started.last().copied().unwrap_or_default();
        assert!(last < Duration::from_secs(15), "the last task started after {last:?}");
    }
}
