//! Turns a validated `Config` into a running Pingora server: one proxy service per
//! listener, the admin service and the SIGHUP reload watcher.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::ALPN;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::balance::health::HealthChecker;
use crate::config::model::Config;
use crate::error::{Error, Result};
use crate::proxy::downstream::{ConnMetrics, Guarded, Limits};
use crate::proxy::fast::FastPath;
use crate::proxy::EdgeProxy;
use crate::state::EdgeState;

/// Pingora's read buffer of each TLS connection, allocated for the connection's whole life
/// (Pingora's default is 64 KiB, most of an idle keep-alive connection's memory). 16 KiB
/// holds a full TLS record, like HAProxy's default `bufsize`, so rustls gets a record per
/// read; it limits nothing (heads and bodies of any size just take more reads).
const TLS_READ_BUFFER: usize = 16 * 1024;
/// Plain connections get no Pingora buffers at all: the edge reads each request head into
/// its own buffer (`downstream::Conn`), which an idle connection gives back, and the fast
/// path writes whole heads; Pingora's buffers would only copy bytes and hold memory
/// (its write buffer is 1,460 bytes per connection).
const PLAIN_BUFFERS: L4BufferSettings = L4BufferSettings {
    read: Some(0),
    write: Some(0),
};

/// Builds every service and runs until SIGTERM (graceful) or SIGINT (fast). Returns once
/// Pingora has stopped.
///
/// With `upgrade`, the listening sockets are taken over from a running edge instead of
/// bound: start the new process first, then send SIGQUIT to the old one, which hands its
/// sockets over through `state_dir` and drains (Pingora's zero-downtime upgrade; Linux).
pub fn run(config: Config, upgrade: bool) -> Result<()> {
    crate::tls::install_crypto_provider();
    let conf = server_conf(&config)?;
    let state = EdgeState::new(config.clone())?;

    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let server_conf = server.configuration.clone();

    for l in &config.listeners {
        let proxy = EdgeProxy {
            listener: Arc::from(l.name.as_str()),
            tls: l.tls.is_some(),
            state: state.clone(),
        };
        let mut app = pingora::proxy::http_proxy(&server_conf, proxy);
        if l.tls.is_none() && l.h2 {
            let mut opts = HttpServerOptions::default();
            opts.h2c = true;
            app.server_options = Some(opts);
        }
        let limits = Limits {
            header_timeout: l.header_timeout.0,
            idle_timeout: l.idle_timeout.0,
            max_header_size: l.max_header_size,
            max_connections: l.max_connections,
        };
        let conn_metrics = ConnMetrics {
            open: state.metrics.downstream_connections(&l.name),
            tls: l.tls.as_ref().map(|_| {
                (
                    state.metrics.tls_handshakes(&l.name, "h2"),
                    state.metrics.tls_handshakes(&l.name, "http/1.1"),
                )
            }),
        };
        let fast = FastPath {
            listener: Arc::from(l.name.as_str()),
            tls: l.tls.is_some(),
            state: state.clone(),
            keepalive_pool: config.server.upstream_keepalive_pool,
        };
        let guarded = Guarded::new(
            app,
            limits,
            state.metrics.rejections(&l.name),
            conn_metrics,
            l.fast_path.then_some(fast),
        );
        let mut service = Service::new(format!("listener {}", l.name), guarded);
        let addr = l.address.to_string();
        let buffers = if l.tls.is_some() {
            L4BufferSettings::default().read(TLS_READ_BUFFER)
        } else {
            PLAIN_BUFFERS
        };
        let endpoint = ListenerConfig::tcp(addr).l4_buffer(buffers);
        match state.resolver(&l.name) {
            None => service.add_listener(endpoint),
            Some(resolver) => {
                // Paths are ignored once a resolver is set; ours holds pre-parsed certs,
                // so Pingora's panicking file loader never runs.
                let mut tls = TlsSettings::intermediate("", "")
                    .map_err(|e| Error::Setup(format!("listener {}: {e}", l.name)))?;
                tls.set_cert_resolver(resolver);
                tls.set_alpn(if l.h2 { ALPN::H2H1 } else { ALPN::H1 });
                service.add_listener(endpoint.tls(tls));
            }
        }
        server.add_service(service);
    }

    let mut admin = Service::new(
        "admin".to_owned(),
        AdminApp {
            state: state.clone(),
        },
    );
    admin.add_tcp(&config.admin.listen.to_string());
    // Scrapes and reloads are rare; one thread keeps it off the proxy's cores.
    admin.threads = Some(1);
    server.add_service(admin);

    let mut health = background_service(
        "health checks",
        HealthChecker {
            state: state.clone(),
        },
    );
    health.threads = Some(1);
    server.add_service(health);

    let mut drain = background_service(
        "drain",
        ExitWhenDrained {
            state: state.clone(),
        },
    );
    drain.threads = Some(1);
    server.add_service(drain);

    let mut reload = background_service("sighup reload", ReloadOnSighup { state });
    reload.threads = Some(1);
    server.add_service(reload);

    tracing::info!(config = %config.path.display(), "edge starting");
    server.run(RunArgs::default());
    tracing::info!("edge stopped");
    Ok(())
}

fn server_conf(config: &Config) -> Result<ServerConf> {
    let s = &config.server;
    std::fs::create_dir_all(&s.state_dir).map_err(|e| {
        Error::io(
            format!("cannot create state_dir {}", s.state_dir.display()),
            e,
        )
    })?;
    let path = |name: &str| s.state_dir.join(name).to_string_lossy().into_owned();
    Ok(ServerConf {
        threads: s.threads,
        grace_period_seconds: Some(s.grace_period.ceil_secs()),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_timeout.ceil_secs()),
        pid_file: path("edge.pid"),
        upgrade_sock: path("edge-upgrade.sock"),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool,
        // With one thread there is nothing to steal from: Pingora then runs each service
        // on a current-thread runtime, without the multi-thread scheduler's cross-thread
        // queues and wakeups. With more threads stealing stays on, since Pingora keeps an
        // accepted connection on the accepting thread otherwise.
        work_stealing: s.threads > 1,
        ..ServerConf::default()
    })
}

/// SIGHUP reloads like nginx. Without this handler the default action of SIGHUP would
/// kill the process.
struct ReloadOnSighup {
    state: Arc<EdgeState>,
}

#[async_trait]
impl BackgroundService for ReloadOnSighup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGHUP; reload only via POST /reload");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading configuration");
                    let state = self.state.clone();
                    // Errors are logged (and counted) inside reload.
                    let _ = tokio::task::spawn_blocking(move || state.reload()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Ends the process as soon as the last in-flight request finishes after a graceful
/// shutdown (SIGTERM) or upgrade (SIGQUIT) began. Pingora itself sleeps the whole
/// `grace_period` unconditionally; that sleep remains the upper bound for requests that
/// never finish.
struct ExitWhenDrained {
    state: Arc<EdgeState>,
}

/// How often the drain watcher looks at the in-flight count.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(20);

#[async_trait]
impl BackgroundService for ExitWhenDrained {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        let started = std::time::Instant::now();
        loop {
            let in_flight = self
                .state
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed);
            if in_flight == 0 {
                tracing::info!(
                    waited_ms = started.elapsed().as_millis() as u64,
                    "drained; exiting"
                );
                if let Some(log) = &self.state.access_log {
                    let log_flush = std::time::Duration::from_millis(500);
                    log.flush(log_flush);
                }
                // Skips Pingora's remaining grace sleep; nothing is left to tear down
                // that the OS does not reclaim (listeners are already closed).
                std::process::exit(0);
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}
