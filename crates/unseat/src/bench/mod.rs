//! `unseat bench …`: benchmarks that print figures next to a ceiling measured in the same run.
//! They assert nothing; README records what they printed on a named machine.

pub mod pipeline;

use clap::Subcommand;

use crate::Settings;

#[derive(Subcommand, Debug, Clone)]
pub enum BenchCommand {
    /// SCIM deactivations through the whole pipeline to the app emulator, next to the broker's
    /// raw publish-confirm-consume rate.
    Pipeline(pipeline::BenchArgs),
}

pub async fn run(settings: Settings, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Pipeline(args) => pipeline::run(settings, args).await,
    }
}
