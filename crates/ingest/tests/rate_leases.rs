//! The shared SCIM rate limit against a real PostgreSQL: tenants whose requests wait for tokens
//! at the same time are leased for in one statement, each charged as if alone.

use std::sync::Arc;

use futures_util::future::join_all;
use futures_util::FutureExt;
use unseat_ingest::RateLimiter;
use unseat_store::Store;
use unseat_telemetry::Metrics;
use uuid::Uuid;

async fn tenants(store: &Store, n: usize) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    store
        .client()
        .await
        .unwrap()
        .execute("insert into tenants (id, name) select id, 'T ' || id from unnest($1::uuid[]) id", &[&ids])
        .await
        .unwrap();
    ids
}

/// (lease statements, tenants' leases they carried) so far.
fn leases(metrics: &Metrics) -> (f64, f64) {
    let series = |part: &str| metrics.sample(&format!("unseat_scim_rate_lease_tenants_{part}")).unwrap_or(0.0);
    (series("count"), series("sum"))
}

#[tokio::test]
async fn tenants_waiting_together_are_leased_for_in_one_statement() {
    let (_url, store) = unseat_store::testing::fresh_database().await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let (rate, burst) = (100, 1000);
    let limiter = RateLimiter::shared(rate, burst, store.clone(), metrics.clone());
    let ids = tenants(&store, 200).await;

    // Every check is polled before any lease answers: the first leads a lease for itself, the
    // other 199 wait for the connection and are leased for together.
    let answers = join_all(ids.iter().map(|&t| limiter.check(t))).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let (statements, carried) = leases(&metrics);
    assert_eq!(carried, 200.0, "each tenant leased once");
    assert_eq!(statements, 2.0, "one statement for the first tenant, one for the 199 that waited");

    // Each bucket was charged one lease (a twentieth of a second at the rate: 5 tokens), no more.
    let c = store.client().await.unwrap();
    let rows = c
        .query("select tenant_id, tokens, granted from scim_rate_buckets where tenant_id = any($1)", &[&ids])
        .await
        .unwrap();
    assert_eq!(rows.len(), 200);
    for r in &rows {
        let (tokens, granted): (f64, f64) = (r.get(1), r.get(2));
        assert_eq!(granted, 5.0, "{:?}", r.get::<_, Uuid>(0));
        assert!((995.0..=1000.0).contains(&tokens), "{tokens}");
    }

    // The tokens leased are spent here without asking again: four more requests per tenant.
    for _ in 0..4 {
        let answers = join_all(ids.iter().map(|&t| limiter.check(t))).await;
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    }
    assert_eq!(leases(&metrics), (2.0, 200.0));
}

#[tokio::test]
async fn a_tenant_leased_for_in_another_requests_statement_is_refused_when_its_bucket_is_empty() {
    let (_url, store) = unseat_store::testing::fresh_database().await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let limiter = RateLimiter::shared(1, 1, store.clone(), metrics.clone());
    let ids = tenants(&store, 3).await;
    let (first, empty, full) = (ids[0], ids[1], ids[2]);
    store
        .client()
        .await
        .unwrap()
        .execute(
            "insert into scim_rate_buckets (tenant_id, tokens, refilled_at, granted) values ($1, 0, now(), 0)",
            &[&empty],
        )
        .await
        .unwrap();

    // `full` leads the second statement; `empty` is leased for in it.
    let answers = join_all([first, full, empty].map(|t| limiter.check(t))).await;
    assert!(answers[0].is_ok(), "{answers:?}");
    assert!(answers[1].is_ok(), "{answers:?}");
    let wait = answers[2].expect_err("the empty bucket refuses");
    assert!(wait > std::time::Duration::ZERO && wait <= std::time::Duration::from_secs(1), "{wait:?}");
    assert_eq!(leases(&metrics), (2.0, 3.0), "the second statement carried both waiting tenants");

    // The refusal holds for the rest of the lease's span without asking the database again.
    assert!(limiter.check(empty).await.is_err());
    assert_eq!(leases(&metrics), (2.0, 3.0));
}

async fn wait_for_statements(metrics: &Metrics, statements: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while leases(metrics).0 < statements {
        assert!(std::time::Instant::now() < deadline, "the lease never came: {:?}", leases(metrics));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_quiet_tenants_request_is_admitted_before_its_lease_and_the_lease_pays_for_it() {
    let (_url, store) = unseat_store::testing::fresh_database().await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let limiter = RateLimiter::shared(100, 1000, store.clone(), metrics.clone());
    let t = tenants(&store, 1).await[0];

    // A tenant this process never leased for waits for its first lease (5 tokens).
    assert_eq!(limiter.check(t).now_or_never(), None, "the first request waits for a lease");
    for _ in 0..5 {
        assert_eq!(limiter.check(t).await, Ok(()));
    }
    assert_eq!(leases(&metrics), (1.0, 1.0));
    // Its lease was granted in full and left plenty: the next request is admitted at once,
    // owing its token, and the lease follows in the background.
    assert_eq!(limiter.check(t).now_or_never(), Some(Ok(())), "admitted without waiting");
    wait_for_statements(&metrics, 2.0).await;
    // That lease's 5 tokens paid the one owed: 4 more requests, then a token is lent again.
    for _ in 0..4 {
        assert_eq!(limiter.check(t).now_or_never(), Some(Ok(())));
    }
    assert_eq!(leases(&metrics), (2.0, 2.0));
    assert_eq!(limiter.check(t).now_or_never(), Some(Ok(())));
    wait_for_statements(&metrics, 3.0).await;
    let c = store.client().await.unwrap();
    let granted: f64 =
        c.query_one("select granted from scim_rate_buckets where tenant_id = $1", &[&t]).await.unwrap().get(0);
    assert_eq!(granted, 5.0);
}

#[tokio::test]
async fn a_token_lent_and_not_paid_refuses_the_tenant_and_stops_the_lending() {
    let (_url, store) = unseat_store::testing::fresh_database().await.unwrap();
    let metrics = Arc::new(Metrics::new());
    // One token per lease, a refusal holds for a second.
    let limiter = RateLimiter::shared(1, 2, store.clone(), metrics.clone());
    let t = tenants(&store, 1).await[0];
    assert_eq!(limiter.check(t).await, Ok(()), "1 of the burst of 2 leased, 1 left: as much as a lease");
    // Another process takes the rest meanwhile (and the bucket will not refill for an hour).
    store
        .client()
        .await
        .unwrap()
        .execute(
            "update scim_rate_buckets set tokens = 0, refilled_at = now() + interval '1 hour' where tenant_id = $1",
            &[&t],
        )
        .await
        .unwrap();
    assert_eq!(limiter.check(t).now_or_never(), Some(Ok(())), "lent: the process did not know");
    wait_for_statements(&metrics, 2.0).await;
    let wait = limiter.check(t).await.expect_err("the lease could not pay: refused");
    assert!(wait <= std::time::Duration::from_secs(1), "{wait:?}");
    // After the refusal the tenant's requests wait for their lease again: nothing more is lent.
    tokio::time::sleep(wait).await;
    assert_eq!(limiter.check(t).now_or_never(), None, "no token lent after an unpaid one");
    assert!(limiter.check(t).await.is_err());
}

#[tokio::test]
async fn a_tenant_with_a_rate_of_its_own_is_limited_at_it_and_the_others_at_the_fleets() {
    let (_url, store) = unseat_store::testing::fresh_database().await.unwrap();
    let metrics = Arc::new(Metrics::new());
    // The fleet's rate: one request a second, a burst of two.
    let limiter = RateLimiter::shared(1, 2, store.clone(), metrics.clone());
    let ids = tenants(&store, 3).await;
    let (fleet, lower, higher) = (ids[0], ids[1], ids[2]);
    let own = |per_second, burst| Some(unseat_store::admin::ScimRateLimit { per_second, burst });
    assert!(store.set_scim_rate_limit(lower, own(1, 1)).await.unwrap());
    assert!(store.set_scim_rate_limit(higher, own(100, 50)).await.unwrap());
    assert!(!store.set_scim_rate_limit(Uuid::new_v4(), own(1, 1)).await.unwrap(), "no such tenant");

    let admitted = |t: Uuid| {
        let limiter = &limiter;
        async move {
            let n = admitted(limiter, t, 1000).await;
            assert!(n < 1000, "never refused");
            n
        }
    };
    // Asked as fast as answered, each gets its burst and what refills meanwhile (well under a
    // token at one a second; at 100 a second, a token per 10 ms of leasing).
    assert_eq!(admitted(fleet).await, 2, "the fleet's burst");
    assert_eq!(admitted(lower).await, 1, "its own burst");
    let n = admitted(higher).await;
    assert!((50..100).contains(&n), "its own burst of 50 and the rate of 100/s: {n}");

    // Back to the fleet's rate from the next lease on (the bucket keeps what it holds).
    assert!(store.set_scim_rate_limit(higher, None).await.unwrap());
    let c = store.client().await.unwrap();
    c.execute("update scim_rate_buckets set tokens = 2, refilled_at = now() where tenant_id = $1", &[&higher])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (rate, burst): (f64, f64) = {
        let n = admitted(higher).await;
        assert!((1..=2).contains(&n), "the fleet's burst of 2: {n}");
        let r =
            c.query_one("select rate, burst from scim_rate_buckets where tenant_id = $1", &[&higher]).await.unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((rate, burst), (1.0, 2.0));
}

#[tokio::test]
async fn a_tenant_the_database_does_not_know_is_refused_and_its_batch_is_served() {
    let (_url, store) = unseat_store::testing::fresh_database().await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let limiter = RateLimiter::shared(100, 1000, store.clone(), metrics.clone());
    let known = tenants(&store, 2).await;
    let unknown = Uuid::new_v4();
    // The first leads alone; the unknown tenant and the second known one wait together.
    let answers = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        join_all([known[0], unknown, known[1]].map(|t| limiter.check(t))),
    )
    .await
    .expect("every check answers (none leases again and again)");
    assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
    assert!(answers[1].is_err(), "{answers:?}");
    assert_eq!(leases(&metrics), (2.0, 3.0));
    assert_eq!(metrics.sample("unseat_scim_rate_lease_failures_total"), Some(0.0), "not a failed lease");
}

/// While leases fail, a process limits each tenant with a bucket of its own, at the tenant's own
/// rate when its last lease applied one: a tenant held low stays held while the database is slow.
#[tokio::test]
async fn while_leases_fail_a_tenant_is_limited_at_its_own_rate() {
    let (_url, store) = unseat_store::testing::fresh_database().await.unwrap();
    let metrics = Arc::new(Metrics::new());
    // The fleet's rate is generous; the tenant's own is one request a second, a burst of one.
    let limiter = RateLimiter::shared(1000, 1000, store.clone(), metrics.clone());
    let held = tenants(&store, 1).await[0];
    let own = Some(unseat_store::admin::ScimRateLimit { per_second: 1, burst: 1 });
    assert!(store.set_scim_rate_limit(held, own).await.unwrap());
    assert!(limiter.check(held).await.is_ok(), "its burst, leased");

    // Another transaction holds the tenant's bucket: the next lease waits past its timeout.
    let mut client = store.dedicated_client().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("select 1 from scim_rate_buckets where tenant_id = $1 for update", &[&held]).await.unwrap();
    let started = std::time::Instant::now();
    let mut admitted = 0;
    for _ in 0..20 {
        if limiter.check(held).await.is_ok() {
            admitted += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    tx.rollback().await.unwrap();
    assert!(metrics.sample("unseat_scim_rate_lease_failures_total").unwrap_or(0.0) >= 1.0, "a lease failed");
    // Its own burst of one and one a second since: not the fleet's thousand.
    let most = 1.0 + elapsed;
    assert!(f64::from(admitted) <= most, "admitted {admitted} of 20 in {elapsed:.2} s, at most {most:.1}");
}

/// With the fleet's limit off (rate 0), a tenant an operator gave a rate of its own is still
/// held at it, and the others are not limited; lifting or setting a tenant's rate takes effect
/// once the process reads the tenants' rates again (at most a second later).
#[tokio::test]
async fn with_the_fleets_limit_off_a_tenant_with_a_rate_of_its_own_is_held_at_it() {
    let (_url, store) = unseat_store::testing::fresh_database().await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let limiter = RateLimiter::shared(0, 0, store.clone(), metrics.clone());
    let ids = tenants(&store, 2).await;
    let (held, free) = (ids[0], ids[1]);
    let own = |per_second, burst| Some(unseat_store::admin::ScimRateLimit { per_second, burst });
    assert!(store.set_scim_rate_limit(held, own(1, 2)).await.unwrap());

    let admitted = |t: Uuid, most: usize| admitted(&limiter, t, most);
    // Asked as fast as answered: its burst of two (well under a token refills meanwhile).
    assert_eq!(admitted(held, 1000).await, 2, "its own burst");
    assert_eq!(admitted(free, 1000).await, 1000, "no limit for the others");

    // Its rate lifted, and another's set: each is seen once the rates are read again.
    assert!(store.set_scim_rate_limit(held, None).await.unwrap());
    assert!(store.set_scim_rate_limit(free, own(1, 1)).await.unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (h, f) = (admitted(held, 100).await, admitted(free, 100).await);
        // The other: its burst of one, and at most one more refilled meanwhile.
        if h == 100 && f <= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still held {h} / free admitted {f} of 100 after 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// How many of `most` requests of tenant `t`, asked one after another as fast as answered, are
/// admitted before the first refusal.
async fn admitted(limiter: &RateLimiter, t: Uuid, most: usize) -> usize {
    let mut n = 0;
    while n < most && limiter.check(t).await.is_ok() {
        n += 1;
    }
    n
}
