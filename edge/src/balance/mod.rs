//! Pools of upstream servers and how one is picked per request: primaries before backups,
//! then the pool's algorithm (`select`), with Pingora's health registry for readiness.
//!
//! A reload builds a new `PoolRuntime` and swaps the whole routing table, so requests in
//! flight keep the pool (and server indices) they started with. Within one, only the
//! admin API changes anything (weights, through `set_weight`); drain flags and in-flight
//! counts live in `state`, shared across tables.

pub mod health;
mod passive;
mod select;
pub mod state;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::FutureExt;
use pingora::lb::discovery::Static;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, HealthRegistry, LoadBalancer};
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;

use self::passive::PassiveState;
use self::select::Tables;
use self::state::{ServerState, ServerStates};
use crate::admin::metrics::{Metrics, ServerMetrics};
use crate::config::model::{self, Algorithm, HashKey, UpstreamProtocol};
use crate::error::{Error, Result};

pub struct PoolRuntime {
    pub config: model::Pool,
    pub servers: Vec<ServerRuntime>,
    /// Swapped when an operator changes a weight at runtime; requests only load it.
    tables: ArcSwap<Tables>,
    health: Option<Arc<HealthRegistry>>,
    /// Readiness (active health) of every server, when the pool is probed. Backends are
    /// registered with weight 1 so a weight change never resets their health.
    health_view: Option<LoadBalancer<RoundRobin>>,
}

pub struct ServerRuntime {
    pub address: SocketAddr,
    /// `address` as text, the metrics/status label.
    pub label: String,
    /// Cloned per request: building an `HttpPeer` each time would redo option setup.
    pub peer: HttpPeer,
    pub metrics: ServerMetrics,
    /// In-flight count and drain flag, shared with older and newer tables.
    pub state: Arc<ServerState>,
    pub backup: bool,
    /// Current weight: the configured one until changed through the admin API.
    weight: AtomicUsize,
    backend: Backend,
    passive: PassiveState,
}

impl PoolRuntime {
    /// `health` is the registry from [`health::HealthRegistries`] when the pool is probed.
    pub fn build(
        pool: &model::Pool,
        metrics: &Metrics,
        health: Option<Arc<HealthRegistry>>,
        states: &ServerStates,
    ) -> Result<Arc<Self>> {
        let mut backends = BTreeSet::new();
        let mut servers = Vec::with_capacity(pool.servers.len());
        for s in &pool.servers {
            let backend = Backend::new_with_weight(&s.address.to_string(), 1)
                .map_err(|e| Error::Setup(format!("pool {}: {e}", pool.name)))?;
            backends.insert(backend.clone());
            let label = s.address.to_string();
            servers.push(ServerRuntime {
                address: s.address,
                peer: peer_for(s.address, pool),
                metrics: metrics.server(&pool.name, &label),
                state: states.get(&pool.name, s.address),
                backup: s.backup,
                weight: AtomicUsize::new(s.weight),
                backend,
                passive: PassiveState::default(),
                label,
            });
        }
        let health_view = match &health {
            Some(registry) => Some(static_lb(backends, &pool.name, registry.clone())?),
            None => None,
        };
        let runtime = PoolRuntime {
            config: pool.clone(),
            tables: ArcSwap::from_pointee(Tables { tiers: Vec::new() }),
            servers,
            health,
            health_view,
        };
        runtime.rebuild_tables();
        Ok(Arc::new(runtime))
    }

    fn rebuild_tables(&self) {
        let members: Vec<_> = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.address, s.weight.load(Relaxed), s.backup))
            .collect();
        let ketama = matches!(self.config.algorithm, Algorithm::Ketama { .. });
        self.tables.store(Arc::new(Tables::build(&members, ketama)));
    }

    pub fn health_registry(&self) -> Option<&Arc<HealthRegistry>> {
        self.health.as_ref()
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn protocol_name(&self) -> &'static str {
        match self.config.protocol {
            UpstreamProtocol::H1 => "h1",
            UpstreamProtocol::H2c => "h2c",
        }
    }

    pub fn algorithm_name(&self) -> &'static str {
        match self.config.algorithm {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastConn => "least_conn",
            Algorithm::RandomTwo => "random_two",
            Algorithm::Ketama { .. } => "ketama",
        }
    }

    /// Picks a server for this request, skipping the ones in `tried` (already failed for
    /// it), drained ones, and, while any other is left, the ones passive health ejected.
    pub fn select(&self, request: &impl HashInput, tried: &[usize]) -> Option<usize> {
        let mut buf = Vec::new();
        let key: &[u8] = match &self.config.algorithm {
            Algorithm::Ketama { key } => hash_key(request, key, &mut buf),
            _ => b"",
        };
        self.select_key(key, tried)
    }

    /// [`Self::select`] once the hash key is known. Primaries first; backups only when no
    /// primary is usable.
    pub fn select_key(&self, key: &[u8], tried: &[usize]) -> Option<usize> {
        let tables = self.tables.load();
        let usable = |i: usize| {
            !tried.contains(&i)
                && self
                    .servers
                    .get(i)
                    .is_some_and(|s| !s.state.is_drained() && self.ready(s))
        };
        if self.config.passive.is_some() {
            let now = passive::now_ms();
            let strict = |i: usize| {
                usable(i)
                    && self
                        .servers
                        .get(i)
                        .is_some_and(|s| !s.passive.is_ejected(now))
            };
            for tier in &tables.tiers {
                if let Some(i) = self.pick(tier, key, &strict) {
                    return Some(i);
                }
            }
            // Everything left is ejected: trying one beats refusing outright (nginx does
            // the same when all its servers are marked failed).
        }
        tables
            .tiers
            .iter()
            .find_map(|tier| self.pick(tier, key, &usable))
    }

    fn pick(
        &self,
        tier: &select::Tier,
        key: &[u8],
        usable: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let load = |i: usize| {
            self.servers
                .get(i)
                .map_or(usize::MAX, |s| s.state.in_flight())
        };
        match self.config.algorithm {
            Algorithm::RoundRobin => tier.round_robin(usable),
            Algorithm::LeastConn => tier.least_conn(usable, &load),
            Algorithm::RandomTwo => tier.random_two(usable, &load),
            Algorithm::Ketama { .. } => tier.ketama(key, usable),
        }
    }

    fn ready(&self, server: &ServerRuntime) -> bool {
        self.health_view
            .as_ref()
            .is_none_or(|lb| lb.backends().ready(&server.backend))
    }

    /// Feeds a failed attempt on server `index` to passive health.
    pub fn record_failure(&self, index: usize) {
        let (Some(policy), Some(server)) = (&self.config.passive, self.servers.get(index)) else {
            return;
        };
        if server.passive.record_failure(policy, passive::now_ms()) {
            server.metrics.ejections.inc();
            tracing::warn!(
                pool = %self.config.name,
                server = %server.label,
                for_ms = policy.fail_timeout.0.as_millis() as u64,
                "server ejected after failed requests"
            );
        }
    }

    /// Feeds an upstream response status to passive health when the pool counts 5xx.
    pub fn record_status(&self, index: usize, status: u16) {
        if status >= 500 && self.config.passive.as_ref().is_some_and(|p| p.fail_on_5xx) {
            self.record_failure(index);
        }
    }

    /// Whether passive health currently skips server `index`.
    pub fn is_ejected(&self, index: usize) -> bool {
        self.servers
            .get(index)
            .is_some_and(|s| s.passive.is_ejected(passive::now_ms()))
    }

    /// Whether active health checks consider the server usable.
    pub fn is_ready(&self, index: usize) -> bool {
        self.servers.get(index).is_some_and(|s| self.ready(s))
    }

    pub fn weight(&self, index: usize) -> usize {
        self.servers
            .get(index)
            .map_or(0, |s| s.weight.load(Relaxed))
    }

    /// Changes a server's weight until the next reload (the file stays the source of
    /// truth). Rebuilds the selection tables; requests pick them up on their next load.
    pub fn set_weight(&self, index: usize, weight: usize) -> bool {
        let Some(server) = self.servers.get(index) else {
            return false;
        };
        server.weight.store(weight, Relaxed);
        self.rebuild_tables();
        true
    }

    pub fn server_index(&self, address: SocketAddr) -> Option<usize> {
        self.servers.iter().position(|s| s.address == address)
    }
}

fn static_lb(
    backends: BTreeSet<Backend>,
    pool: &str,
    registry: Arc<HealthRegistry>,
) -> Result<LoadBalancer<RoundRobin>> {
    let discovery = Static::new(backends);
    let backends = Backends::new_with_health_registry(discovery, registry);
    let lb = LoadBalancer::<RoundRobin>::from_backends(backends);
    // Static discovery resolves immediately; this just builds the view without needing a
    // runtime (config is loaded before Pingora starts its own).
    match lb.update().now_or_never() {
        Some(Ok(())) => Ok(lb),
        Some(Err(e)) => Err(Error::Setup(format!("pool {pool}: {e}"))),
        None => Err(Error::Setup(format!(
            "pool {pool}: static discovery did not complete"
        ))),
    }
}

fn peer_for(address: SocketAddr, pool: &model::Pool) -> HttpPeer {
    let mut peer = HttpPeer::new(address, false, String::new());
    let o = &mut peer.options;
    o.connection_timeout = Some(pool.connect_timeout.0);
    o.read_timeout = pool.read_timeout.map(|d| d.0);
    o.write_timeout = pool.write_timeout.map(|d| d.0);
    o.idle_timeout = Some(pool.keepalive.0);
    if pool.protocol == UpstreamProtocol::H2c {
        // Plaintext with minimum version 2 is prior-knowledge h2c in Pingora's connector.
        o.set_http_version(2, 2);
        // Pingora's default of 1 stream per connection would open a connection per request.
        o.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
    peer
}

/// Concurrent requests multiplexed on one upstream HTTP/2 connection before another is
/// opened (a common server default for `SETTINGS_MAX_CONCURRENT_STREAMS` is 100+).
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// What a ketama pool may hash on, from whichever parser read the request (Pingora's
/// session or the edge's HTTP/1 fast path), so both pick the same server.
pub trait HashInput {
    fn path(&self) -> &str;
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// `name`'s value in the request's `Cookie` headers.
    fn cookie(&self, name: &str) -> Option<&[u8]>;
    fn client_ip(&self) -> Option<IpAddr>;
}

impl HashInput for Session {
    fn path(&self) -> &str {
        self.req_header().uri.path()
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.req_header().headers.get(name).map(|v| v.as_bytes())
    }

    fn cookie(&self, name: &str) -> Option<&[u8]> {
        self.req_header()
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .find_map(|v| cookie_value(v.as_bytes(), name.as_bytes()))
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
    }
}

/// The bytes a ketama pool hashes on. A request without the key (no session cookie yet)
/// falls back to the client address, so new sessions still spread across servers.
pub fn hash_key<'a>(req: &'a impl HashInput, key: &HashKey, buf: &'a mut Vec<u8>) -> &'a [u8] {
    let found = match key {
        HashKey::Path => Some(req.path().as_bytes()),
        HashKey::Header(name) => req.header(name),
        HashKey::Cookie(name) => req.cookie(name),
        HashKey::ClientIp => None,
    };
    if let Some(found) = found {
        return found;
    }
    if let Some(ip) = req.client_ip() {
        // Written straight into the buffer: no intermediate String per request.
        let _ = write!(buf, "{ip}");
    }
    buf
}

/// Finds `name=value` in one `Cookie` header value.
pub fn cookie_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        (pair[..eq].trim_ascii() == name).then(|| pair[eq + 1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::cookie_value;

    #[test]
    fn cookie_lookup() {
        let h = b"a=1; JSESSIONID=abc ; b=2";
        assert_eq!(cookie_value(h, b"JSESSIONID"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(h, b"b"), Some(&b"2"[..]));
        assert_eq!(cookie_value(h, b"c"), None);
        assert_eq!(cookie_value(b"JSESSIONIDX=1", b"JSESSIONID"), None);
    }
}
