//! `unseat bench …`: benchmarks that print figures next to a ceiling measured in the same run.
//! They assert nothing; README records what they printed on a named machine.

pub mod connector;
pub mod limit;
mod load;
pub mod pipeline;
pub mod resolver;
pub mod scenario;
pub mod scim;
pub mod soak;

use anyhow::Context;
use clap::Subcommand;
use unseat_bus::Topology;

use crate::Settings;

#[derive(Subcommand, Debug, Clone)]
pub enum BenchCommand {
    /// SCIM deactivations through the whole pipeline to the app emulator, next to the broker's
    /// raw publish-confirm-consume rate.
    Pipeline(pipeline::BenchArgs),
    /// The connector runtime alone: tasks/s against an emulator with latency, and the share
    /// of an integration's rate limit used under a large backlog.
    Connector(connector::BenchArgs),
    /// Generated access scenarios through the whole pipeline with duplicated and replayed
    /// messages and two resolvers; prints how many cases ran and how many disagreed with the
    /// reference model.
    Soak(soak::SoakArgs),
    /// Resolver decisions/s on one core, and the time to resolve the deletion of one group of
    /// 100,000 members across 20 integrations.
    Resolver(resolver::ResolverBenchArgs),
    /// SCIM changes accepted durably by the ingest role alone (deactivations and member
    /// removals at several concurrencies), next to PostgreSQL's one-row commit rate.
    Scim(scim::BenchArgs),
    /// What the fleet-wide SCIM rate limit costs the ingest with 1, 100 and 2,000 tenants
    /// active at once, next to the same requests with no limit.
    RateLimit(limit::BenchArgs),
}

pub async fn run(settings: Settings, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Pipeline(args) => pipeline::run(settings, args).await,
        BenchCommand::Connector(args) => connector::run(settings, args).await,
        BenchCommand::Soak(args) => soak::run(settings, args).await,
        BenchCommand::Resolver(args) => resolver::run(settings, args).await,
        BenchCommand::Scim(args) => scim::run(settings, args).await,
        BenchCommand::RateLimit(args) => limit::run(settings, args).await,
    }
}

/// Deletes every queue and exchange of `topology` (work, dead-letter and delay queues),
/// messages included. A bench's topology holds only what the bench itself sent, and it has
/// printed its figures by then: what cannot be deleted (the broker gone, say) is left behind,
/// with a warning, rather than failing the run.
pub(crate) async fn delete_topology(amqp_url: &str, topology: &Topology) {
    if let Err(error) = topology.delete_at(amqp_url, "bench").await {
        tracing::warn!(%error, "the bench's queues and exchanges were not all deleted");
    }
}

/// The URL of database `name` on the server `database_url` points at, after dropping that
/// database if it exists: a benchmark's own database, empty at each run (migrating it creates
/// it again).
pub(crate) async fn fresh_database(database_url: &str, name: &str) -> anyhow::Result<String> {
    let base = database_url.rsplit_once('/').map(|(b, _)| b).context("database url")?;
    let (client, conn) =
        unseat_store::tokio_postgres::connect(&format!("{base}/postgres"), unseat_store::tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(conn);
    client.batch_execute(&format!("drop database if exists \"{}\" with (force)", name.replace('"', ""))).await?;
    drop(client);
    let _ = conn.await;
    Ok(format!("{base}/{name}"))
}
