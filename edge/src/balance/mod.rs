//! Pools of upstream servers and how one is picked per request, on top of
//! `pingora-load-balancing` selectors.
//!
//! A `PoolRuntime` is immutable: a reload builds a new one and swaps the whole routing
//! table, so requests in flight keep the pool (and server indices) they started with.

pub mod health;
mod passive;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt;
use pingora::lb::discovery::Static;
use pingora::lb::selection::{Consistent, RoundRobin};
use pingora::lb::{Backend, Backends, HealthRegistry, LoadBalancer};
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;

use self::passive::PassiveState;
use crate::admin::metrics::{Metrics, ServerMetrics};
use crate::config::model::{self, Algorithm, HashKey};
use crate::error::{Error, Result};

/// Bound on how many candidates a selection looks at before giving up (Pingora's
/// `max_iterations`); far above any pool size we accept.
const MAX_SELECT_ITERATIONS: usize = 256;

pub struct PoolRuntime {
    pub config: model::Pool,
    pub servers: Vec<ServerRuntime>,
    selector: Selector,
    health: Option<Arc<HealthRegistry>>,
    /// Maps a selected `Backend` back to its position in `servers`. (Not `Backend::ext`:
    /// Pingora clones the selected backend per request and a non-empty `ext` would make
    /// that clone allocate.)
    index: HashMap<SocketAddr, usize>,
}

pub struct ServerRuntime {
    pub address: SocketAddr,
    /// `address` as text, the metrics/status label.
    pub label: String,
    /// Cloned per request: building an `HttpPeer` each time would redo option setup.
    pub peer: HttpPeer,
    pub metrics: ServerMetrics,
    passive: PassiveState,
}

enum Selector {
    RoundRobin(LoadBalancer<RoundRobin>),
    Ketama(LoadBalancer<Consistent>, HashKey),
}

impl PoolRuntime {
    /// `health` is the registry from [`health::HealthRegistries`] when the pool is probed.
    pub fn build(
        pool: &model::Pool,
        metrics: &Metrics,
        health: Option<Arc<HealthRegistry>>,
    ) -> Result<Arc<Self>> {
        let mut backends = BTreeSet::new();
        let mut servers = Vec::with_capacity(pool.servers.len());
        let mut index = HashMap::with_capacity(pool.servers.len());
        for (i, s) in pool.servers.iter().enumerate() {
            let backend = Backend::new_with_weight(&s.address.to_string(), s.weight)
                .map_err(|e| Error::Setup(format!("pool {}: {e}", pool.name)))?;
            backends.insert(backend);
            index.insert(s.address, i);
            let label = s.address.to_string();
            servers.push(ServerRuntime {
                address: s.address,
                peer: peer_for(s.address, pool),
                metrics: metrics.server(&pool.name, &label),
                passive: PassiveState::default(),
                label,
            });
        }
        let selector = match &pool.algorithm {
            Algorithm::RoundRobin => {
                Selector::RoundRobin(static_lb(backends, &pool.name, health.clone())?)
            }
            Algorithm::Ketama { key } => Selector::Ketama(
                static_lb(backends, &pool.name, health.clone())?,
                key.clone(),
            ),
        };
        Ok(Arc::new(PoolRuntime {
            config: pool.clone(),
            servers,
            selector,
            health,
            index,
        }))
    }

    pub fn health_registry(&self) -> Option<&Arc<HealthRegistry>> {
        self.health.as_ref()
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn algorithm_name(&self) -> &'static str {
        match self.selector {
            Selector::RoundRobin(_) => "round_robin",
            Selector::Ketama(..) => "ketama",
        }
    }

    /// Picks a server for this request, skipping the ones in `tried` (already failed for
    /// it) and, while any other is left, the ones passive health has ejected.
    pub fn select(&self, session: &Session, tried: &[usize]) -> Option<usize> {
        let mut buf = Vec::new();
        let key: &[u8] = match &self.selector {
            Selector::RoundRobin(_) => b"",
            Selector::Ketama(_, key) => hash_key(session, key, &mut buf),
        };
        if self.config.passive.is_some() {
            let now = passive::now_ms();
            let picked = self.pick(key, |i| {
                !tried.contains(&i)
                    && self
                        .servers
                        .get(i)
                        .is_some_and(|s| !s.passive.is_ejected(now))
            });
            if picked.is_some() {
                return picked;
            }
            // Everything left is ejected: trying one beats refusing outright (nginx does
            // the same when all its servers are marked failed).
        }
        self.pick(key, |i| !tried.contains(&i))
    }

    fn pick(&self, key: &[u8], usable: impl Fn(usize) -> bool) -> Option<usize> {
        let accept = |b: &Backend, healthy: bool| healthy && self.index_of(b).is_some_and(&usable);
        let picked = match &self.selector {
            Selector::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Selector::Ketama(lb, _) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
        };
        picked.as_ref().and_then(|b| self.index_of(b))
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

    /// Whether passive health currently skips server `index`.
    pub fn is_ejected(&self, index: usize) -> bool {
        self.servers
            .get(index)
            .is_some_and(|s| s.passive.is_ejected(passive::now_ms()))
    }

    /// Whether the selector currently considers the server usable (health checks).
    pub fn is_ready(&self, index: usize) -> bool {
        let backends = match &self.selector {
            Selector::RoundRobin(lb) => lb.backends(),
            Selector::Ketama(lb, _) => lb.backends(),
        };
        backends
            .get_backend()
            .iter()
            .find(|b| self.index_of(b) == Some(index))
            .is_some_and(|b| backends.ready(b))
    }

    fn index_of(&self, b: &Backend) -> Option<usize> {
        self.index.get(b.addr.as_inet()?).copied()
    }
}

fn static_lb<S>(
    backends: BTreeSet<Backend>,
    pool: &str,
    health: Option<Arc<HealthRegistry>>,
) -> Result<LoadBalancer<S>>
where
    S: pingora::lb::selection::BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    let discovery = Static::new(backends);
    let backends = match health {
        Some(registry) => Backends::new_with_health_registry(discovery, registry),
        None => Backends::new(discovery),
    };
    let lb = LoadBalancer::<S>::from_backends(backends);
    // Static discovery resolves immediately; this just builds the selector without
    // needing a runtime (config is loaded before Pingora starts its own).
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
    o.idle_timeout = Some(pool.keepalive.0);
    peer
}

/// The bytes a ketama pool hashes on. A request without the key (no session cookie yet)
/// falls back to the client address, so new sessions still spread across servers.
fn hash_key<'a>(session: &'a Session, key: &HashKey, buf: &'a mut Vec<u8>) -> &'a [u8] {
    let req = session.req_header();
    let found: Option<&[u8]> = match key {
        HashKey::Path => Some(req.uri.path().as_bytes()),
        HashKey::Header(name) => req.headers.get(name.as_str()).map(|v| v.as_bytes()),
        HashKey::Cookie(name) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .find_map(|v| cookie_value(v.as_bytes(), name.as_bytes())),
        HashKey::ClientIp => None,
    };
    if let Some(found) = found {
        return found;
    }
    if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
        // Written straight into the buffer: no intermediate String per request.
        let _ = write!(buf, "{}", addr.ip());
    }
    buf
}

/// Finds `name=value` in one `Cookie` header value.
fn cookie_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
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
