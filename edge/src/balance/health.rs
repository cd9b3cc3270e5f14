//! Active health checks. Probing is Pingora's (`TcpHealthCheck`, `HttpHealthCheck`); what
//! is ours is keeping health state across reloads and scheduling the probes.
//!
//! A reload builds new `LoadBalancer`s, which would start every server healthy again. So
//! each pool's servers are attached to a `HealthRegistry` kept here, keyed by pool name
//! and check settings: an unchanged check keeps its state (a dead server stays out after
//! a reload); a changed one starts fresh, since Pingora fixes a registry's check once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::ResponseHeader;
use pingora::lb::health_check::{HealthCheck as PingoraCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::HealthRegistry;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::{Error, ErrorType};

use crate::config::model::{HealthCheck, HealthCheckKind, Pool, UpstreamProtocol};
use crate::error::{Error as EdgeError, Result};
use crate::state::EdgeState;

type Key = (String, HealthCheck, UpstreamProtocol);

#[derive(Default)]
pub struct HealthRegistries {
    map: Mutex<HashMap<Key, Arc<HealthRegistry>>>,
}

impl HealthRegistries {
    /// The registry for `pool`'s current check settings, made on first use.
    pub fn for_pool(&self, pool: &Pool) -> Result<Option<Arc<HealthRegistry>>> {
        let Some(check) = &pool.health_check else {
            return Ok(None);
        };
        let mut map = self
            .map
            .lock()
            .map_err(|_| EdgeError::Setup("health registry lock poisoned".into()))?;
        let key = (pool.name.clone(), check.clone(), pool.protocol);
        if let Some(r) = map.get(&key) {
            return Ok(Some(r.clone()));
        }
        let registry = Arc::new(HealthRegistry::new());
        registry.set_health_check(probe(check, pool.protocol)?);
        map.insert(key, registry.clone());
        Ok(Some(registry))
    }

    /// Forgets registries no pool of the active configuration uses.
    pub fn retain(&self, pools: &[Pool]) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|(name, check, protocol), _| {
                pools.iter().any(|p| {
                    &p.name == name
                        && p.health_check.as_ref() == Some(check)
                        && p.protocol == *protocol
                })
            });
        }
    }
}

fn probe(
    check: &HealthCheck,
    protocol: UpstreamProtocol,
) -> Result<Box<dyn PingoraCheck + Send + Sync>> {
    match &check.kind {
        HealthCheckKind::Tcp => {
            let mut hc = TcpHealthCheck::new();
            hc.peer_template.options.connection_timeout = Some(check.timeout.0);
            hc.consecutive_success = check.rise;
            hc.consecutive_failure = check.fall;
            Ok(hc)
        }
        HealthCheckKind::Http {
            method,
            path,
            host,
            expect,
        } => {
            let mut hc = HttpHealthCheck::new(host, false);
            let mut req =
                pingora::http::RequestHeader::build(method.clone(), path.as_bytes(), None)
                    .map_err(|e| EdgeError::Setup(format!("health check path {path}: {e}")))?;
            req.insert_header(http::header::HOST, host.as_str())
                .map_err(|e| EdgeError::Setup(format!("health check host {host}: {e}")))?;
            hc.req = req;
            let o = &mut hc.peer_template.options;
            o.connection_timeout = Some(check.timeout.0);
            o.read_timeout = Some(check.timeout.0);
            if protocol == UpstreamProtocol::H2c {
                // Probe the way requests travel: an h2c-only server may refuse HTTP/1.1.
                o.set_http_version(2, 2);
            }
            hc.consecutive_success = check.rise;
            hc.consecutive_failure = check.fall;
            let expect = expect.clone();
            hc.validator = Some(Box::new(move |resp: &ResponseHeader| {
                if expect.contains(resp.status.as_u16()) {
                    Ok(())
                } else {
                    Error::e_explain(
                        ErrorType::CustomCode(
                            "unexpected health check status",
                            resp.status.as_u16(),
                        ),
                        "health check",
                    )
                }
            }));
            Ok(Box::new(hc))
        }
    }
}

/// Runs every pool's probes at its own interval, always against the active routing table.
pub struct HealthChecker {
    pub state: Arc<EdgeState>,
}

/// How often the scheduler wakes to see which pools are due.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last_run: HashMap<String, Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
            let table = self.state.table.load_full();
            let now = Instant::now();
            let due: Vec<_> = table
                .pools
                .iter()
                .filter_map(|p| {
                    let (registry, interval) = (
                        p.health_registry()?,
                        p.config.health_check.as_ref()?.interval.0,
                    );
                    let due = last_run
                        .get(p.name())
                        .is_none_or(|t| now.duration_since(*t) >= interval);
                    due.then(|| (p.name().to_owned(), registry.clone()))
                })
                .collect();
            if due.is_empty() {
                continue;
            }
            for (name, _) in &due {
                last_run.insert(name.clone(), now);
            }
            futures::future::join_all(due.iter().map(|(_, r)| r.run_health_check(true))).await;
        }
    }
}
