//! Per-tenant request rate limiting and a short-lived cache of authenticated tokens.
//!
//! A tenant's rate is the tenant's, whatever the number of ingest processes behind the
//! balancer: with [`RateLimiter::shared`] every process leases request tokens from the
//! tenant's bucket in PostgreSQL (`scim_rate_buckets`, unlogged), a twentieth of a second's
//! worth at a time, and spends them locally; leased tokens not spent within a second are
//! dropped. The bucket refills at the tenant's own rate and burst when an operator set them
//! (`tenants.scim_rate_limit`), else at the process's (`UNSEAT_SCIM_RATE_LIMIT`); a process
//! with no limit of its own (rate 0) leases only for tenants with a rate of their own, which it
//! reads from the tenants table at most once a second. One upsert on a connection of its own
//! leases for every tenant whose requests are waiting for tokens, as a group commit does: with
//! thousands of quiet tenants (each of whose requests finds its last lease lapsed) the process
//! sends one statement per round trip, not one per tenant.
//!
//! A quiet tenant's request does not wait for that round trip when the tenant's last lease was
//! granted in full and left at least as much again in the bucket: the process admits it at
//! once, owing the token, and leases in the background; the lease pays the debt. A process
//! owes at most one token per tenant at a time, and lends again only after a lease that leaves
//! the bucket that full, so the fleet admits at most the rate, the burst, and one request per
//! process. A process refused by the bucket answers 429 on its own for as long as the bucket
//! takes to refill one lease (a twentieth of a second), so a tenant far over its rate costs
//! the database twenty leases a second per process, not one per request. When a lease fails
//! or takes over 250 ms, the process limits with a bucket of its own for a second before
//! asking the database again, at the tenant's own rate and burst as its last lease gave them
//! (so a tenant held low stays held while the database is slow), else at the process's.
//!
//! A cached token is trusted for at most the cache's time to live after it was last read from
//! the store, and forgotten at once when it is revoked ([`forget_revoked_tokens`]). Every map
//! is bounded: idle buckets and expired entries are swept when it grows.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use unseat_store::tokens::TokenOwner;
use unseat_store::{Store, TOKENS_REVOKED};
use unseat_telemetry::Metrics;
use uuid::Uuid;

/// Entries above which a map is swept of idle or expired entries.
const SWEEP_AT: usize = 10_000;
/// A lease takes this much of the tenant's rate's time (at least one token, at most the burst).
const LEASE_SPAN: f64 = 0.05;
/// Leased tokens not spent within this long are dropped.
const LEASE_TTL: Duration = Duration::from_secs(1);
/// A lease slower than this counts as failed: requests then wait on the process's own bucket
/// rather than on the database, and the shared bucket is asked again after a pause.
const LEASE_TIMEOUT: Duration = Duration::from_millis(250);
const RETRY_SHARED_AFTER: Duration = Duration::from_secs(1);
/// With no limit of the process's own, how often it reads which tenants have one of their own.
const OWN_READ_EVERY: Duration = Duration::from_secs(1);

/// A token bucket per tenant: `rate` requests per second on average, bursts of up to `burst`.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    /// The process's own buckets: the whole limit without a shared store, else the fallback
    /// while the database cannot be reached.
    buckets: Mutex<HashMap<Uuid, Bucket>>,
    shared: Option<Arc<Shared>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The tenants' buckets in PostgreSQL and what this process leased from them.
struct Shared {
    store: Store,
    rate: f64,
    burst: f64,
    /// The leases' own connection (made on first use, and again after a failure); holding it
    /// also makes one lease at a time, so requests that find no token wait for the lease in
    /// flight rather than each asking the database.
    conn: tokio::sync::Mutex<Option<unseat_store::tokio_postgres::Client>>,
    /// Tenants with a request waiting for a lease, or a token owed: whoever holds the
    /// connection next leases for all of them in one statement.
    wanted: Mutex<HashSet<Uuid>>,
    leases: Leases,
    metrics: Arc<Metrics>,
    /// After a failed lease, the process limits on its own until then.
    retry_at: Mutex<Option<Instant>>,
    /// (rate, burst) of each tenant whose last lease applied a rate of its own (an operator's
    /// `tenants.scim_rate_limit`) rather than this process's: what the process limits the
    /// tenant at on its own while leases fail. Only tenants given a rate of their own, so it
    /// holds at most as many entries as an operator set.
    own: Mutex<HashMap<Uuid, (f64, f64)>>,
    /// With no limit of the process's own (rate 0): when `own` was last read whole from the
    /// tenants table, for the tenants that still have a limit (see [`RateLimiter::check`]).
    own_read_at: Mutex<Option<Instant>>,
}

/// What this process leased from each tenant's bucket and has not spent yet.
#[derive(Debug, Default)]
struct Leases(Mutex<HashMap<Uuid, Leased>>);

#[derive(Debug, Clone, Copy)]
struct Leased {
    /// Below zero: a token lent ahead of a lease and not yet paid.
    tokens: f64,
    /// When the tokens were leased (they are dropped [`LEASE_TTL`] later; a debt is not).
    at: Instant,
    /// The bucket refused until then: requests before it are refused without asking.
    refused_until: Option<Instant>,
    /// The last lease was granted in full and left at least as much in the bucket: the next
    /// request may be admitted before its lease comes back.
    may_lend: bool,
}

impl Leased {
    /// The tokens still usable at `now`: unspent ones are dropped [`LEASE_TTL`] after their
    /// lease, a debt never is.
    fn held(&self, now: Instant) -> f64 {
        if self.tokens > 0.0 && now.duration_since(self.at) >= LEASE_TTL {
            0.0
        } else {
            self.tokens
        }
    }

    /// Whether the bucket's last refusal still holds at `now`.
    fn refused(&self, now: Instant) -> bool {
        self.refused_until.is_some_and(|until| until > now)
    }
}

/// What a request gets from the tokens this process holds.
#[derive(Debug, PartialEq)]
enum Take {
    Admit,
    Refuse(Duration),
    /// Admitted on a token owed to the bucket: a lease must follow.
    Lent,
    /// A lease is needed before answering.
    Lease,
}

impl RateLimiter {
    /// Limits kept in this process only. `rate` 0 disables limiting. A `burst` below 1 is
    /// taken as 1.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    /// Limits shared by every process on the same database (see the module's documentation).
    pub fn shared(rate: u32, burst: u32, store: Store, metrics: Arc<Metrics>) -> Self {
        let local = Self::new(rate, burst);
        let shared = Shared {
            store,
            rate: local.rate,
            burst: local.burst,
            conn: tokio::sync::Mutex::new(None),
            wanted: Mutex::new(HashSet::new()),
            leases: Leases::default(),
            metrics,
            retry_at: Mutex::new(None),
            own: Mutex::new(HashMap::new()),
            own_read_at: Mutex::new(None),
        };
        Self { shared: Some(Arc::new(shared)), ..local }
    }

    /// Takes one request from the tenant's bucket: `Ok` when allowed, else `Err(wait)` with
    /// how long until a request would be allowed again.
    ///
    /// With no limit of the process's own (rate 0), only a tenant an operator gave a rate of
    /// its own is limited, at that rate: the process reads which tenants have one when it is
    /// first asked, and again in the background at most every [`OWN_READ_EVERY`].
    pub async fn check(&self, tenant: Uuid) -> Result<(), Duration> {
        let Some(shared) = &self.shared else {
            return self.check_at(tenant, Instant::now());
        };
        if self.rate <= 0.0 && !shared.limited_on_its_own(tenant).await {
            return Ok(());
        }
        loop {
            let may_lend = !shared.unavailable(Instant::now());
            match shared.leases.take(tenant, Instant::now(), may_lend) {
                Take::Admit => return Ok(()),
                Take::Refuse(wait) => return Err(wait),
                Take::Lent => {
                    shared.want(tenant);
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let mut conn = shared.conn.lock().await;
                        shared.lead(&mut conn, None).await;
                    });
                    return Ok(());
                }
                Take::Lease => {}
            }
            if shared.unavailable(Instant::now()) {
                return self.check_at(tenant, Instant::now());
            }
            shared.want(tenant);
            let mut conn = shared.conn.lock().await;
            // The lease that held the connection meanwhile may have served this tenant, or failed.
            match shared.leases.take(tenant, Instant::now(), false) {
                Take::Admit => return Ok(()),
                Take::Refuse(wait) => return Err(wait),
                Take::Lent | Take::Lease => {}
            }
            if shared.unavailable(Instant::now()) || !shared.lead(&mut conn, Some(tenant)).await {
                return self.check_at(tenant, Instant::now());
            }
            if self.rate <= 0.0 && !shared.has_own_limits(tenant) {
                // The lease found the tenant's own rate lifted.
                return Ok(());
            }
            // Leased for: spend it (or, when others spent it first or a debt took it, lease again).
        }
    }

    /// Takes one request from the process's own bucket for the tenant, at the tenant's own
    /// rate and burst when its last lease gave them, else at the process's.
    fn check_at(&self, tenant: Uuid, now: Instant) -> Result<(), Duration> {
        let own = self.shared.as_ref().map(|s| s.own.lock().unwrap_or_else(|p| p.into_inner()));
        let limits = |t: &Uuid| own.as_ref().and_then(|own| own.get(t).copied()).unwrap_or((self.rate, self.burst));
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock means a panic elsewhere; failing open keeps the IdP served.
            return Ok(());
        };
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|t, b| {
                let (rate, burst) = limits(t);
                b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let (rate, burst) = limits(&tenant);
        if rate <= 0.0 {
            return Ok(());
        }
        let b = buckets.entry(tenant).or_insert(Bucket { tokens: burst, at: now });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * rate;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

impl Leases {
    /// Spends a leased token, repeats a refusal still in force, or (when `may_lend` and the
    /// tenant's last lease allows it) lends one ahead of the lease; else a lease is needed.
    fn take(&self, tenant: Uuid, now: Instant, may_lend: bool) -> Take {
        let mut leased = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(l) = leased.get_mut(&tenant) else {
            return Take::Lease;
        };
        l.tokens = l.held(now);
        if l.tokens >= 1.0 {
            l.tokens -= 1.0;
            return Take::Admit;
        }
        if let Some(until) = l.refused_until.filter(|&until| until > now) {
            return Take::Refuse(until - now);
        }
        if may_lend && l.may_lend && l.tokens >= 0.0 {
            l.tokens -= 1.0;
            l.may_lend = false;
            return Take::Lent;
        }
        Take::Lease
    }

    /// Whether the tenant has a leased token to spend, or a refusal still in force.
    fn served(&self, tenant: Uuid, now: Instant) -> bool {
        let leased = self.0.lock().unwrap_or_else(|p| p.into_inner());
        leased.get(&tenant).is_some_and(|l| l.held(now) >= 1.0 || l.refused(now))
    }

    /// Adds a lease's `granted` tokens to what the tenant holds (unspent tokens older than
    /// [`LEASE_TTL`] dropped, a debt paid). When the bucket gave less than a token and the
    /// tenant still holds less than one, its requests are refused here for `span` (the time the
    /// bucket takes to refill a whole lease), so a tenant far over its rate costs one lease per
    /// span, not one per request. `left` is what the bucket kept: with a full grant of `want`
    /// and at least as much left, the tenant's next request may be admitted ahead of its lease.
    fn grant(&self, tenant: Uuid, granted: f64, left: f64, want: f64, span: f64, now: Instant) {
        let mut leased = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if leased.len() >= SWEEP_AT {
            leased.retain(|_, l| l.tokens < 0.0 || now.duration_since(l.at) < LEASE_TTL || l.refused(now));
        }
        let l = leased.entry(tenant).or_insert(Leased { tokens: 0.0, at: now, refused_until: None, may_lend: false });
        let kept = l.held(now);
        let granted = granted.max(0.0);
        l.tokens = kept + granted;
        l.at = now;
        l.may_lend = granted >= want && left >= want;
        l.refused_until = (l.tokens < 1.0 && granted < 1.0).then(|| now + Duration::from_secs_f64(span.max(0.0)));
    }
}

impl Shared {
    fn unavailable(&self, now: Instant) -> bool {
        self.retry_at.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|at| at > now)
    }

    fn set_unavailable(&self, until: Instant) {
        *self.retry_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    /// Keeps the rate and burst of each leased tenant whose lease applied limits of its own, and
    /// forgets those back at the process's.
    fn remember_own_limits(&self, leased: &[Lease]) {
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        for l in leased {
            if (l.rate, l.burst) == (self.rate, self.burst) {
                own.remove(&l.tenant);
            } else {
                own.insert(l.tenant, (l.rate, l.burst));
            }
        }
    }

    fn has_own_limits(&self, tenant: Uuid) -> bool {
        self.own.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&tenant)
    }

    /// With no limit of the process's own: whether the tenant has a rate of its own, as last
    /// read from the tenants table. The first call reads it before answering; later calls
    /// answer from what was read and read again in the background when that is older than
    /// [`OWN_READ_EVERY`].
    async fn limited_on_its_own(self: &Arc<Self>, tenant: Uuid) -> bool {
        let first = {
            let mut read_at = self.own_read_at.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            match *read_at {
                Some(at) if now.duration_since(at) < OWN_READ_EVERY => None,
                at => {
                    *read_at = Some(now);
                    Some(at.is_none())
                }
            }
        };
        match first {
            Some(true) => self.read_own_limits().await,
            Some(false) => {
                let shared = self.clone();
                tokio::spawn(async move { shared.read_own_limits().await });
            }
            None => {}
        }
        self.has_own_limits(tenant)
    }

    /// Reads every tenant's own rate and burst into `own` (only tenants that have one); on
    /// failure keeps what was read before.
    async fn read_own_limits(&self) {
        let read = async {
            let client = self.store.client().await.map_err(|e| e.to_string())?;
            let rows = client
                .query(
                    "select id, scim_rate_limit::float8, scim_rate_burst::float8 from tenants
                      where scim_rate_limit is not null and scim_rate_burst is not null",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?))))
                .collect::<Result<HashMap<Uuid, (f64, f64)>, unseat_store::tokio_postgres::Error>>()
                .map_err(|e| e.to_string())
        };
        match read.await {
            Ok(own) => *self.own.lock().unwrap_or_else(|p| p.into_inner()) = own,
            Err(error) => tracing::debug!(%error, "cannot read the tenants' own SCIM rates; keeping the last read"),
        }
    }

    fn want(&self, tenant: Uuid) {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner()).insert(tenant);
    }

    /// Leases for every tenant still waiting (and `own`, the caller's), on the connection the
    /// caller holds; false when the lease failed (the process then limits on its own for a
    /// while).
    async fn lead(&self, conn: &mut Option<unseat_store::tokio_postgres::Client>, own: Option<Uuid>) -> bool {
        // Every tenant still waiting, in one order for every process (rows are locked in it).
        let mut batch: Vec<Uuid> = {
            let mut wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            wanted.drain().filter(|&t| Some(t) == own || !self.leases.served(t, now)).collect()
        };
        if let Some(own) = own.filter(|own| !batch.contains(own)) {
            batch.push(own);
        }
        if batch.is_empty() {
            return true;
        }
        batch.sort_unstable();
        match tokio::time::timeout(LEASE_TIMEOUT, self.lease(conn, &batch)).await {
            Ok(Ok(leased)) => {
                self.metrics.scim_rate_lease_tenants.observe(batch.len() as f64);
                let now = Instant::now();
                for l in &leased {
                    let span = if l.rate > 0.0 { l.want / l.rate } else { 1.0 };
                    self.leases.grant(l.tenant, l.granted, l.left, l.want, span, now);
                }
                self.remember_own_limits(&leased);
                // A tenant the database does not know (none is ever deleted) gets nothing: its
                // request is refused rather than leased for again and again.
                if leased.len() < batch.len() {
                    let known: HashSet<Uuid> = leased.iter().map(|l| l.tenant).collect();
                    for &tenant in batch.iter().filter(|t| !known.contains(t)) {
                        self.leases.grant(tenant, 0.0, 0.0, 1.0, 1.0, now);
                    }
                }
                true
            }
            failed => {
                let error = match failed {
                    Ok(Err(error)) => error,
                    _ => "the lease timed out".to_string(),
                };
                *conn = None;
                self.metrics.scim_rate_lease_failures.inc();
                self.set_unavailable(Instant::now() + RETRY_SHARED_AFTER);
                tracing::debug!(%error, tenants = batch.len(), "shared SCIM rate buckets unavailable; limiting in this process");
                false
            }
        }
    }

    /// Takes a lease's worth of tokens (a twentieth of a second at the tenant's rate: at least
    /// one, at most its burst) from each tenant's bucket, created full on first use, at the
    /// tenant's own rate and burst when an operator set them, else this process's. `tenants`
    /// holds each tenant once, sorted: every process locks the rows in the same order.
    async fn lease(
        &self,
        conn: &mut Option<unseat_store::tokio_postgres::Client>,
        tenants: &[Uuid],
    ) -> Result<Vec<Lease>, String> {
        // `excluded.granted` is the lease asked for (a new bucket grants it whole). Every SET
        // expression reads the row as it was; now() is one instant per statement.
        const SQL: &str = "
            insert into scim_rate_buckets as b (tenant_id, tokens, refilled_at, granted, rate, burst)
            select x.t, r.burst - r.want, now(), r.want, r.rate, r.burst
              from unnest($1::uuid[]) with ordinality as x(t, n)
              join tenants tn on tn.id = x.t
             cross join lateral (
                   select coalesce(tn.scim_rate_limit::float8, $2::float8) as rate,
                          coalesce(tn.scim_rate_burst::float8, $3::float8) as burst) c
             cross join lateral (
                   select c.rate, c.burst, least(c.burst, greatest(1.0, c.rate * $4::float8)) as want) r
             order by x.n
            on conflict (tenant_id) do update set
                granted = least(excluded.granted, least(excluded.burst,
                    b.tokens + greatest(0, extract(epoch from now() - b.refilled_at)::float8) * excluded.rate)),
                tokens = least(excluded.burst,
                    b.tokens + greatest(0, extract(epoch from now() - b.refilled_at)::float8) * excluded.rate)
                    - least(excluded.granted, least(excluded.burst,
                    b.tokens + greatest(0, extract(epoch from now() - b.refilled_at)::float8) * excluded.rate)),
                refilled_at = greatest(b.refilled_at, now()),
                rate = excluded.rate,
                burst = excluded.burst
            returning tenant_id, granted, tokens, rate, least(burst, greatest(1.0, rate * $4::float8)), burst";
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = Some(self.store.dedicated_client().await.map_err(|e| e.to_string())?);
        }
        let client = conn.as_ref().ok_or("no connection")?;
        let rows =
            client.query(SQL, &[&tenants, &self.rate, &self.burst, &LEASE_SPAN]).await.map_err(|e| e.to_string())?;
        rows.iter()
            .map(|r| {
                Ok(Lease {
                    tenant: r.try_get(0)?,
                    granted: r.try_get(1)?,
                    left: r.try_get(2)?,
                    rate: r.try_get(3)?,
                    want: r.try_get(4)?,
                    burst: r.try_get(5)?,
                })
            })
            .collect::<Result<_, unseat_store::tokio_postgres::Error>>()
            .map_err(|e| e.to_string())
    }
}

/// What one tenant's bucket gave a lease.
struct Lease {
    tenant: Uuid,
    granted: f64,
    /// What the bucket kept.
    left: f64,
    /// The tenant's rate and burst (its own or the fleet's), and the lease it asked for.
    rate: f64,
    want: f64,
    burst: f64,
}

/// Token owners by token hash, each trusted until its expiry.
#[derive(Debug)]
pub struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<Vec<u8>, (TokenOwner, Instant)>>,
}

impl TokenCache {
    /// A `ttl` of zero disables the cache.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// Forgets every token (the next request of each reads the store again).
    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn get(&self, hash: &[u8]) -> Option<TokenOwner> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        entries.get(hash).filter(|(_, until)| *until > Instant::now()).map(|(owner, _)| owner.clone())
    }

    pub fn put(&self, hash: Vec<u8>, owner: TokenOwner) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= SWEEP_AT {
                entries.retain(|_, (_, until)| *until > now);
                if entries.len() >= SWEEP_AT {
                    entries.clear();
                }
            }
            entries.insert(hash, (owner, now + self.ttl));
        }
    }
}

/// Keeps `cache` free of revoked tokens: listens for revocations ([`TOKENS_REVOKED`], sent by
/// the store when one commits, from any process) and clears the cache on each, and on every
/// (re)connection, since revocations may have been missed while the listener was away. Without
/// the listener a revoked token still expires from the cache within its time to live. Ends when
/// the cache is dropped; does nothing outside a Tokio runtime.
pub fn forget_revoked_tokens(store: Store, cache: std::sync::Weak<TokenCache>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        loop {
            match store.listen(TOKENS_REVOKED).await {
                Ok((_client, mut revoked)) => {
                    // Revocations may have been missed while nothing listened.
                    match cache.upgrade() {
                        Some(c) => c.clear(),
                        None => return,
                    }
                    loop {
                        // Wakes now and then to end with the cache.
                        match tokio::time::timeout(Duration::from_secs(5), revoked.recv()).await {
                            Ok(Some(())) => match cache.upgrade() {
                                Some(c) => c.clear(),
                                None => return,
                            },
                            Ok(None) => break,
                            Err(_) if cache.strong_count() == 0 => return,
                            Err(_) => {}
                        }
                    }
                }
                Err(error) => tracing::debug!(%error, "cannot listen for token revocations; retrying"),
            }
            if cache.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let l = RateLimiter::new(10, 3);
        let (t, other) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at(t, now).is_ok());
        }
        let wait = l.check_at(t, now).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        // Another tenant has its own bucket.
        assert!(l.check_at(other, now).is_ok());
        // After 100 ms one more request is allowed, and only one.
        let later = now + Duration::from_millis(100);
        assert!(l.check_at(t, later).is_ok());
        assert!(l.check_at(t, later).is_err());
    }

    #[test]
    fn leased_tokens_are_spent_then_a_refusal_holds_for_a_lease_span() {
        let leases = Leases::default();
        let (t, other) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Instant::now();
        assert_eq!(leases.take(t, now, true), Take::Lease, "nothing leased yet");
        leases.grant(t, 2.5, 0.0, 2.5, 0.05, now);
        assert_eq!(leases.take(t, now, true), Take::Admit);
        assert_eq!(leases.take(t, now, true), Take::Admit);
        assert_eq!(leases.take(t, now, true), Take::Lease, "half a token is not a request");
        // The bucket gave less than the missing half: refused, and refused again without a
        // lease for the span, then a lease is needed again.
        leases.grant(t, 0.25, 0.0, 2.5, 0.05, now);
        assert_eq!(leases.take(t, now, true), Take::Refuse(Duration::from_millis(50)));
        assert!(matches!(leases.take(t, now + Duration::from_millis(49), true), Take::Refuse(_)));
        assert_eq!(leases.take(t, now + Duration::from_millis(50), true), Take::Lease);
        assert_eq!(leases.take(other, now, true), Take::Lease, "another tenant has its own");
        // Kept tokens count towards the next lease, until they go stale.
        leases.grant(t, 0.25, 0.0, 2.5, 0.05, now + Duration::from_millis(60));
        assert_eq!(leases.take(t, now + Duration::from_millis(60), true), Take::Admit, "0.75 + 0.25");
        leases.grant(other, 1.5, 0.0, 2.5, 0.05, now);
        assert_eq!(leases.take(other, now + LEASE_TTL, true), Take::Lease, "unspent tokens are dropped");
    }

    #[test]
    fn one_token_is_lent_at_a_time_and_only_after_a_full_lease_that_left_as_much() {
        let leases = Leases::default();
        let t = Uuid::new_v4();
        let now = Instant::now();
        // Granted in full, but the bucket kept less than a lease: nothing is lent.
        leases.grant(t, 2.0, 1.5, 2.0, 0.05, now);
        assert_eq!(leases.take(t, now, true), Take::Admit);
        assert_eq!(leases.take(t, now, true), Take::Admit);
        assert_eq!(leases.take(t, now, true), Take::Lease);
        // Granted in full with as much left: one token is lent, then the lease is awaited.
        leases.grant(t, 2.0, 2.0, 2.0, 0.05, now);
        assert_eq!(leases.take(t, now, true), Take::Admit);
        assert_eq!(leases.take(t, now, true), Take::Admit);
        assert_eq!(leases.take(t, now, false), Take::Lease, "not while the shared buckets are failing");
        assert_eq!(leases.take(t, now, true), Take::Lent);
        assert_eq!(leases.take(t, now, true), Take::Lease, "one debt at a time");
        // The lease pays the debt first, and a debt is not dropped with stale tokens.
        let later = now + 2 * LEASE_TTL;
        leases.grant(t, 2.0, 2.0, 2.0, 0.05, later);
        assert_eq!(leases.take(t, later, true), Take::Admit, "2 granted, 1 owed");
        assert_eq!(leases.take(t, later, true), Take::Lent);
        // A lease that cannot pay: refused for the span, and no more lending after it.
        leases.grant(t, 0.5, 0.0, 2.0, 0.05, later);
        assert!(matches!(leases.take(t, later, true), Take::Refuse(_)));
        assert_eq!(leases.take(t, later + Duration::from_millis(50), true), Take::Lease);
        leases.grant(t, 2.0, 0.0, 2.0, 0.05, later + Duration::from_millis(50));
        assert_eq!(leases.take(t, later + Duration::from_millis(50), true), Take::Admit, "-0.5 + 2");
        assert_eq!(leases.take(t, later + Duration::from_millis(50), true), Take::Lease);
    }

    #[tokio::test]
    async fn zero_rate_never_limits() {
        let l = RateLimiter::new(0, 0);
        let t = Uuid::new_v4();
        for _ in 0..1000 {
            assert!(l.check(t).await.is_ok());
        }
    }

    #[test]
    fn cache_forgets_after_ttl_and_is_off_at_zero() {
        let owner = TokenOwner::Admin {
            tenant_id: Uuid::new_v4(),
            role: "viewer".into(),
            integration: None,
            token_id: Uuid::new_v4(),
            label: String::new(),
        };
        let c = TokenCache::new(Duration::from_millis(30));
        c.put(vec![1], owner.clone());
        assert_eq!(c.get(&[1]), Some(owner.clone()));
        assert_eq!(c.get(&[2]), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(&[1]), None);
        let off = TokenCache::new(Duration::ZERO);
        off.put(vec![1], owner);
        assert_eq!(off.get(&[1]), None);
    }
}
