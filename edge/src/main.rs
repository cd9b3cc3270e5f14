//! `edge`: run the proxy, check a config, or make dev certificates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use onebook_edge::{config, server, tls};

mod reload;

/// mimalloc instead of glibc malloc: Pingora allocates and frees per request (header maps,
/// buffers), and glibc's arena bookkeeping (`malloc_consolidate`, `unlink_chunk`) showed up
/// in profiles under load. Only the binary: the library and its tests keep the default.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Ask a running edge to reload its config file (POST /reload on the admin API).
    /// Exits non-zero when the edge refuses the new file or cannot be reached.
    Reload {
        /// Admin listener; default: `admin.listen` of -c FILE, else 127.0.0.1:9901.
        #[arg(long)]
        admin: Option<String>,
        /// Bearer token; default: `admin.token` of -c FILE.
        #[arg(long)]
        token: Option<String>,
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
    onebook_edge::logging::init();

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
        Some(Command::Reload { admin, token }) => {
            let from_file = match &cli.config {
                Some(path) => reload::admin_of(path)?,
                None => reload::AdminTarget::default(),
            };
            let addr = admin
                .or(from_file.listen)
                .unwrap_or_else(|| config::DEFAULT_ADMIN_LISTEN.to_string());
            let token = token.or(from_file.token);
            let reply = reload::post_reload(&addr, token.as_deref())?;
            Ok(reload::report(&reply))
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
