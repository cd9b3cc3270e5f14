//! `sync-server`: the SyncML endpoint for phones and desktop clients.

use clap::Parser;
use onebook_domain::Domain;
use onebook_service::HttpMetrics;
use onebook_syncml::config::{Overrides, SyncServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "sync-server", about = "Onebook SyncML server")]
struct Cli {
    #[arg(long, short, default_value = "configs/sync-server.dev.toml")]
    config: PathBuf,
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[arg(long)]
    instance: Option<String>,
    #[arg(long)]
    memcached: Option<String>,
    /// Validate the config file and exit.
    #[arg(long)]
    check: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    onebook_domain::telemetry::init();
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen,
        instance: cli.instance,
        memcached: cli.memcached,
    };
    let config = SyncServerConfig::load(&cli.config, &overrides)?;
    if cli.check {
        println!("configuration file {} is ok", cli.config.display());
        return Ok(());
    }
    let domain = Arc::new(Domain::new(&config.database, &config.cache)?);
    let metrics = HttpMetrics::new("sync-server", &config.server.instance)?;
    let app = onebook_syncml::router(
        domain,
        metrics,
        &config.server.instance,
        config.server.max_body_bytes,
    );
    onebook_service::serve(app, config.server.listen).await?;
    Ok(())
}
