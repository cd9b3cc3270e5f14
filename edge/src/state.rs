//! State shared by every listener and the admin API, and the reload that replaces it.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::access_log::AccessLogger;
use crate::admin::metrics::Metrics;
use crate::balance::health::HealthRegistries;
use crate::balance::state::ServerStates;
use crate::config::{self, model::Config};
use crate::error::{Error, Result};
use crate::proxy::routing::RoutingTable;
use crate::tls::CertResolver;

pub struct EdgeState {
    pub config: ArcSwap<Config>,
    pub table: ArcSwap<RoutingTable>,
    pub metrics: Metrics,
    pub started: Instant,
    /// Requests between `new_ctx` and the end of `logging`, for draining on shutdown.
    pub in_flight: Arc<AtomicUsize>,
    /// Started once; its destination and format need a restart to change.
    pub access_log: Option<AccessLogger>,
    health: HealthRegistries,
    servers: ServerStates,
    /// One per TLS listener. Listener sockets are fixed once Pingora starts, so this map
    /// never changes; a reload only swaps the certificates inside.
    resolvers: HashMap<String, Arc<CertResolver>>,
    /// Serialises reloads (SIGHUP and POST /reload can race); requests never take it.
    reload_lock: Mutex<()>,
}

/// What a successful reload did.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    pub generation: u64,
    /// Changes that were *not* applied because they need a restart (listener set).
    pub warnings: Vec<String>,
}

impl EdgeState {
    pub fn new(config: Config) -> Result<Arc<Self>> {
        let metrics = Metrics::new()?;
        let health = HealthRegistries::default();
        let servers = ServerStates::default();
        let table = RoutingTable::build(&config, 1, &metrics, &health, &servers)?;
        let access_log = match &config.access_log {
            Some(a) => Some(AccessLogger::start(a, metrics.access_log_dropped.clone())?),
            None => None,
        };
        metrics.config_generation.set(1);
        let resolvers = config
            .listeners
            .iter()
            .filter_map(|l| {
                let tls = l.tls.as_ref()?;
                Some((
                    l.name.clone(),
                    Arc::new(CertResolver::new(tls.certs.clone())),
                ))
            })
            .collect();
        Ok(Arc::new(EdgeState {
            config: ArcSwap::from_pointee(config),
            table: ArcSwap::from_pointee(table),
            metrics,
            started: Instant::now(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            access_log,
            health,
            servers,
            resolvers,
            reload_lock: Mutex::new(()),
        }))
    }

    pub fn resolver(&self, listener: &str) -> Option<Arc<CertResolver>> {
        self.resolvers.get(listener).cloned()
    }

    /// Re-reads the config file and, if it is valid, swaps in new routes, pools and
    /// certificates. On any error the running configuration stays untouched.
    pub fn reload(&self) -> Result<ReloadOutcome> {
        let _guard = self
            .reload_lock
            .lock()
            .map_err(|_| Error::Setup("reload lock poisoned".into()))?;
        let result = self.reload_locked();
        match &result {
            Ok(o) => {
                self.metrics.config_reloads_ok.inc();
                tracing::info!(generation = o.generation, warnings = ?o.warnings, "configuration reloaded");
            }
            Err(e) => {
                self.metrics.config_reloads_failed.inc();
                tracing::error!(error = %e, "configuration reload failed; keeping the running configuration");
            }
        }
        result
    }

    fn reload_locked(&self) -> Result<ReloadOutcome> {
        let old = self.config.load_full();
        let new = config::load(&old.path)?;
        let generation = self.table.load().generation + 1;
        let table =
            RoutingTable::build(&new, generation, &self.metrics, &self.health, &self.servers)?;
        let mut warnings = listener_changes(&old, &new);
        if old.access_log != new.access_log {
            warnings.push("access_log changed; restart to apply".into());
        }
        if let Some(log) = &self.access_log {
            // Lets logrotate move the file away and have a new one opened by a reload.
            log.reopen();
        }
        for l in &new.listeners {
            if let (Some(tls), Some(resolver)) = (&l.tls, self.resolvers.get(&l.name)) {
                resolver.replace(tls.certs.clone());
            }
        }
        self.table.store(Arc::new(table));
        self.health.retain(&new.pools);
        self.servers.retain(&new.pools);
        self.config.store(Arc::new(new));
        self.metrics
            .config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        Ok(ReloadOutcome {
            generation,
            warnings,
        })
    }
}

/// Listener differences a reload cannot apply: Pingora binds sockets once (changing them
/// takes a restart or a `-u` upgrade).
fn listener_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for n in &new.listeners {
        match old.listener(&n.name) {
            None => out.push(format!("listener `{}` is new; restart to open it", n.name)),
            Some(o)
                if o.address != n.address || o.tls.is_some() != n.tls.is_some() || o.h2 != n.h2 =>
            {
                out.push(format!(
                    "listener `{}` changed address/tls/h2; restart to apply",
                    n.name
                ));
            }
            Some(o)
                if (
                    o.header_timeout,
                    o.idle_timeout,
                    o.max_header_size,
                    o.max_connections,
                    o.fast_path,
                ) != (
                    n.header_timeout,
                    n.idle_timeout,
                    n.max_header_size,
                    n.max_connections,
                    n.fast_path,
                ) =>
            {
                out.push(format!(
                    "listener `{}` changed header_timeout/idle_timeout/max_header_size/max_connections/fast_path; restart to apply",
                    n.name
                ));
            }
            Some(_) => {}
        }
    }
    for o in &old.listeners {
        if new.listener(&o.name).is_none() {
            out.push(format!(
                "listener `{}` was removed; it keeps serving until restart",
                o.name
            ));
        }
    }
    if old.admin.listen != new.admin.listen {
        out.push("admin.listen changed; restart to apply".into());
    }
    out
}
