//! Generated access scenarios through the whole real pipeline: SCIM and admin API →
//! PostgreSQL + outbox → RabbitMQ → two resolvers → connector → the business-hub emulator,
//! with directory messages duplicated and replayed out of order on the broker. After each case
//! is quiet, every (user, integration) desired state, every account in the app and its tasks
//! on each of the app's ad accounts and pages (integrations have asset ladders, grants carry
//! asset roles) must equal the reference model's answer on the final directory. `unseat bench
//! soak` runs the same cases by the thousand.

use unseat::bench::soak::{self, Target};
use unseat::Roles;
use unseat_tests::spawn_app;

/// Cases in the normal test run; `UNSEAT_PIPELINE_CASES` overrides it.
const CASES: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_ends_as_the_model_says_under_duplicates_replays_and_two_resolvers() {
    let app = spawn_app().await;
    let second_resolver =
        unseat::start(app.settings.clone(), Roles { resolver: true, ..Default::default() }, app.shutdown.clone())
            .await
            .expect("second resolver");
    let target = Target {
        base: app.base.clone(),
        operator: app.operator.clone(),
        emulator_url: app.emulator_url.clone(),
        store: app.store.clone(),
        amqp_url: app.settings.amqp_url.clone(),
        directory_exchange: app.settings.topology().directory_exchange(),
    };
    let seed = std::env::var("UNSEAT_PROPTEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x50AC);
    let cases = std::env::var("UNSEAT_PIPELINE_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(CASES);
    let tally = soak::run_cases(&target, seed, cases, 5).await.expect("cases run");
    assert_eq!(tally.ran as u64, cases);
    assert_eq!(
        tally.disagreed,
        0,
        "{} of {} cases disagree with the model; first:\n{}",
        tally.disagreed,
        tally.ran,
        tally.first.join("\n---\n")
    );
    app.stop().await;
    second_resolver.wait().await;
}
