//! `edge`: run the proxy, check a config, or make dev certificates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use onebook_edge::{config, server, tls};

#[derive(Parser)]
#[command(name = "edge", version, about = "Onebook edge proxy and load balancer")]
struct Cli {
    /// Config file; without a subcommand, run with it (same as `edge run -c FILE`).
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (SIGTERM: graceful stop, SIGINT: fast stop, SIGHUP: reload config,
    /// SIGQUIT: hand the sockets to a new `edge run --upgrade` and drain).
    Run {
        /// Take the listening sockets over from the running edge (then SIGQUIT it).
        #[arg(short = 'u', long)]
        upgrade: bool,
    },
    /// Validate a config file, like `nginx -t`.
    Check {
        /// Config file to check (or -c FILE).
        file: Option<PathBuf>,
    },
    /// Certificate helpers.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create (or reuse) a local CA and a leaf for localhost / *.onebook.test.
    Dev {
        #[arg(long, default_value = "certs/dev")]
        dir: PathBuf,
        /// Replace existing files, CA included.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // try_init also routes Pingora's `log` records into tracing.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();

    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Certs {
            command: CertsCommand::Dev { dir, force },
        }) => {
            let certs = tls::dev::ensure_dev_certs(&dir, force)?;
            let state = |created: bool| if created { "created" } else { "kept" };
            println!(
                "CA    {} ({})",
                certs.ca_cert.display(),
                state(certs.created_ca)
            );
            println!(
                "leaf  {} ({}) for {}",
                certs.leaf_cert.display(),
                state(certs.created_leaf),
                tls::dev::LEAF_NAMES.join(", ")
            );
            println!("key   {}", certs.leaf_key.display());
            println!();
            print!("{}", tls::dev::trust_instructions(&certs));
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Check { file }) => {
            let file = file.or(cli.config).context("usage: edge check FILE")?;
            match config::load(&file) {
                Ok(_) => {
                    println!("configuration file {} is ok", file.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("edge: {e}");
                    eprintln!("configuration file {} test failed", file.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        command @ (Some(Command::Run { .. }) | None) => {
            let upgrade = matches!(command, Some(Command::Run { upgrade: true }));
            let file = cli
                .config
                .context("no config file; use `edge run -c FILE`")?;
            // Validate everything (certificates included) before Pingora starts, which
            // would otherwise exit or panic on the first bad setting it meets.
            let cfg = config::load(&file)?;
            server::run(cfg, upgrade)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
