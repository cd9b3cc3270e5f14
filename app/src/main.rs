//! `webapp`: serve the web app, apply migrations, or create the demo account.

use anyhow::Context;
use clap::{Parser, Subcommand};
use onebook_app::config::{Overrides, WebappConfig};
use onebook_app::{router, AppState};
use onebook_domain::contacts::{ContactCard, Labeled};
use onebook_domain::Domain;
use onebook_service::HttpMetrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "webapp", about = "Onebook web app and REST API")]
struct Cli {
    /// The webapp config file (TOML).
    #[arg(long, short, global = true, default_value = "configs/webapp.dev.toml")]
    config: PathBuf,
    /// Override `server.listen`.
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Override `server.instance`.
    #[arg(long, global = true)]
    instance: Option<String>,
    /// Override `cache.memcached`.
    #[arg(long, global = true)]
    memcached: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Apply schema migrations to every shard, through pgpool.
    Migrate,
    /// Create the dev-only demo account with a few contacts (idempotent).
    DemoAccount,
    /// Validate the config file and exit.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    onebook_domain::telemetry::init();
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen,
        instance: cli.instance.clone(),
        memcached: cli.memcached.clone(),
    };
    let config = WebappConfig::load(&cli.config, &overrides)?;
    let domain = Arc::new(Domain::new(&config.database, &config.cache)?);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Check => {
            println!("configuration file {} is ok", cli.config.display());
        }
        Command::Migrate => {
            let applied = onebook_domain::migrations::migrate(&domain.pools).await?;
            println!("migrations: {applied} applied");
        }
        Command::DemoAccount => demo_account(&domain).await?,
        Command::Serve => {
            let metrics = HttpMetrics::new("webapp", &config.server.instance)?;
            let link_key = config
                .links
                .load(&cli.config.display().to_string())?
                .map(Arc::new);
            match &link_key {
                Some(key) => tracing::info!(key_id = key.id(), "linked-account key loaded"),
                None => tracing::warn!("no [links] key configured: accounts cannot be linked"),
            }
            let state = AppState {
                domain,
                secure_cookies: config.web.secure_cookies,
                link_key,
            };
            let app = router(
                state,
                metrics,
                &config.server.instance,
                config.server.max_body_bytes,
            );
            onebook_service::serve(app, config.server.listen).await?;
        }
    }
    Ok(())
}

const DEMO_EMAIL: &str = "demo@onebook.test";
const DEMO_PASSWORD: &str = "onebook-demo";

async fn demo_account(domain: &Domain) -> anyhow::Result<()> {
    domain
        .sign_up(DEMO_EMAIL, DEMO_PASSWORD, "Demo User")
        .await
        .context("creating the demo account")?;
    let (_, token) = domain.log_in(DEMO_EMAIL, DEMO_PASSWORD).await?;
    let viewer = domain.viewer_for_session(&token).await?;
    let people = [
        (
            "Ada",
            "Lovelace",
            "ada@analytical.test",
            "+44 20 7946 0018",
            "Analytical Engines",
        ),
        (
            "Grace",
            "Hopper",
            "grace@cobol.test",
            "+1 202 555 0143",
            "US Navy",
        ),
        (
            "Alan",
            "Turing",
            "alan@bletchley.test",
            "+44 1908 640404",
            "Bletchley Park",
        ),
        (
            "Katherine",
            "Johnson",
            "katherine@nasa.test",
            "+1 757 555 0199",
            "NASA Langley",
        ),
    ];
    for (i, (given, family, email, phone, org)) in people.into_iter().enumerate() {
        // Fixed ids make re-running this command a no-op.
        let id = uuid::Uuid::from_u128(0x0000_0b00_c000_4000_8000_0000_0000_0000u128 + i as u128);
        let card = ContactCard {
            formatted_name: format!("{given} {family}"),
            given_name: Some(given.to_string()),
            family_name: Some(family.to_string()),
            emails: vec![Labeled {
                value: email.to_string(),
                label: Some("work".into()),
            }],
            phones: vec![Labeled {
                value: phone.to_string(),
                label: Some("work".into()),
            }],
            organization: Some(org.to_string()),
            ..ContactCard::default()
        };
        domain.create_contact(&viewer, Some(id), card).await?;
    }
    domain.log_out(&token).await?;
    println!("demo account: {DEMO_EMAIL} / {DEMO_PASSWORD}");
    Ok(())
}
