//! `bots`: the sync workers.

use clap::Parser;
use onebook_bots::config::BotsConfig;
use onebook_bots::{health_router, Bots, BotsStatus};
use onebook_domain::events::OutboxRelay;
use onebook_domain::settings::CacheSettings;
use onebook_domain::Domain;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "bots", about = "Onebook sync bots")]
struct Cli {
    #[arg(long, short, default_value = "configs/bots.dev.toml")]
    config: PathBuf,
    /// Validate the config file and exit.
    #[arg(long)]
    check: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    onebook_domain::telemetry::init();
    let cli = Cli::parse();
    let config = BotsConfig::load(&cli.config)?;
    if cli.check {
        println!("configuration file {} is ok", cli.config.display());
        return Ok(());
    }
    let domain = Arc::new(Domain::new(&config.database, &CacheSettings::default())?);
    let status = Arc::new(BotsStatus::default());
    let listen = config.server.listen;
    let relay = OutboxRelay::new(domain.clone(), config.events.clone());
    let relay_status = relay.status.clone();
    let bots = Arc::new(Bots {
        config,
        domain: domain.clone(),
        status: status.clone(),
    });
    let consumer = tokio::spawn(async move { bots.run_consumer().await });
    let relayer = tokio::spawn(async move { relay.run().await });
    let served = onebook_service::serve(health_router(domain, status, relay_status), listen).await;
    consumer.abort();
    relayer.abort();
    served?;
    Ok(())
}
