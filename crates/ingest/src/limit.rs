//! Per-tenant request rate limiting and a short-lived cache of authenticated tokens.
//!
//! Both live in the process: each ingest process enforces the limit on the requests it serves
//! (with N processes behind a balancer a tenant gets up to N times the rate), and a cached
//! token is trusted for at most the cache's time to live after it was last read from the
//! store. Both maps are bounded: idle buckets and expired entries are swept when a map grows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use unseat_store::tokens::TokenOwner;
use uuid::Uuid;

/// Entries above which a map is swept of idle or expired entries.
const SWEEP_AT: usize = 10_000;

/// A token bucket per tenant: `rate` requests per second on average, bursts of up to `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `rate` 0 disables limiting. A `burst` below 1 is taken as 1.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self { rate: f64::from(rate), burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request from the tenant's bucket: `Ok` when allowed, else `Err(wait)` with
    /// how long until a request would be allowed again.
    pub fn check(&self, tenant: Uuid) -> Result<(), Duration> {
        self.check_at(tenant, Instant::now())
    }

    fn check_at(&self, tenant: Uuid, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock means a panic elsewhere; failing open keeps the IdP served.
            return Ok(());
        };
        if buckets.len() >= SWEEP_AT {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(tenant).or_insert(Bucket { tokens: self.burst, at: now });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
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
    fn zero_rate_never_limits() {
        let l = RateLimiter::new(0, 0);
        let t = Uuid::new_v4();
        assert!((0..1000).all(|_| l.check(t).is_ok()));
    }

    #[test]
    fn cache_forgets_after_ttl_and_is_off_at_zero() {
        let owner = TokenOwner::Admin { tenant_id: Uuid::new_v4(), role: "viewer".into(), integration: None };
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
