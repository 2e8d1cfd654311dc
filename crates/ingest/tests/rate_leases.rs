//! The shared SCIM rate limit against a real PostgreSQL: tenants whose requests wait for tokens
//! at the same time are leased for in one statement, each charged as if alone.

use std::sync::Arc;

use futures_util::future::join_all;
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
