//! The routing table: everything a request needs, built from one validated `Config` and
//! published as a whole through `ArcSwap`, so a reload is a single pointer swap and a
//! request sees either the old table or the new one, never a mix.

use std::sync::Arc;

use crate::admin::metrics::{Metrics, RouteMetrics};
use http::HeaderValue;

use crate::balance::health::HealthRegistries;
use crate::balance::state::ServerStates;
use crate::balance::PoolRuntime;
use crate::config::model::{Config, Route};
use crate::error::Result;

pub struct RoutingTable {
    pub generation: u64,
    /// Most specific first (the order `config` sorted them in); first match wins.
    pub routes: Vec<RouteRuntime>,
    pub pools: Vec<Arc<PoolRuntime>>,
    /// Port of the first TLS listener, for `redirect_https`; `None` when it is 443.
    pub https_port: Option<u16>,
    pub unrouted: RouteMetrics,
    /// Per-listener request policy that a reload may change (sockets it may not).
    pub listeners: Vec<ListenerPolicy>,
}

pub struct ListenerPolicy {
    pub name: String,
    pub hsts: Option<HeaderValue>,
    pub max_body_size: Option<u64>,
}

pub struct RouteRuntime {
    pub route: Route,
    /// `route.name`, shared with access log entries without copying.
    pub name: Arc<str>,
    pub pool: usize,
    pub metrics: RouteMetrics,
}

impl RoutingTable {
    pub fn build(
        config: &Config,
        generation: u64,
        metrics: &Metrics,
        health: &HealthRegistries,
        states: &ServerStates,
    ) -> Result<Self> {
        let pools = config
            .pools
            .iter()
            .map(|p| PoolRuntime::build(p, metrics, health.for_pool(p)?, states))
            .collect::<Result<Vec<_>>>()?;
        let routes = config
            .routes
            .iter()
            .filter_map(|r| {
                // `config` guarantees the pool exists; a miss would only drop the route.
                let pool = pools.iter().position(|p| p.name() == r.pool)?;
                let labels: Vec<String> = pools[pool]
                    .servers
                    .iter()
                    .map(|s| s.label.clone())
                    .collect();
                Some(RouteRuntime {
                    name: Arc::from(r.name.as_str()),
                    route: r.clone(),
                    pool,
                    metrics: metrics.route(&r.name, &r.pool, &labels),
                })
            })
            .collect();
        let https_port = config
            .listeners
            .iter()
            .find(|l| l.tls.is_some())
            .map(|l| l.address.port())
            .filter(|p| *p != 443);
        Ok(RoutingTable {
            generation,
            routes,
            pools,
            https_port,
            unrouted: metrics.unrouted(),
            listeners: config
                .listeners
                .iter()
                .map(|l| ListenerPolicy {
                    name: l.name.clone(),
                    hsts: l.hsts.clone(),
                    max_body_size: l.max_body_size,
                })
                .collect(),
        })
    }

    /// Index of the listener called `name` (a handful: a scan beats hashing).
    pub fn listener_index(&self, name: &str) -> Option<usize> {
        self.listeners.iter().position(|l| l.name == name)
    }

    /// The request body limit: the route's, else the listener's.
    pub fn max_body(&self, route: Option<usize>, listener: Option<usize>) -> Option<u64> {
        route
            .and_then(|r| self.routes.get(r)?.route.max_body_size)
            .or_else(|| self.listeners.get(listener?)?.max_body_size)
    }

    /// `Strict-Transport-Security` for a response (TLS listeners only, which the caller
    /// knows): the route's value, else the listener's.
    pub fn hsts(&self, route: Option<usize>, listener: Option<usize>) -> Option<&HeaderValue> {
        route
            .and_then(|r| self.routes.get(r)?.route.hsts.as_ref())
            .or_else(|| self.listeners.get(listener?)?.hsts.as_ref())
    }

    /// `host` must already be lower-case and without port.
    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| {
            r.route.host.as_ref().is_none_or(|h| h.matches(host))
                && prefix_matches(&r.route.path_prefix, path)
        })
    }
}

/// Path-segment-aware prefix match: `/sync` matches `/sync` and `/sync/x` but not
/// `/syncfoo`, so one route cannot silently capture a sibling path.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_matches;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/sync", "/sync"));
        assert!(prefix_matches("/sync", "/sync/devinf"));
        assert!(!prefix_matches("/sync", "/syncfoo"));
        assert!(prefix_matches("/sync/", "/sync/x"));
        assert!(!prefix_matches("/sync/", "/sync"));
    }
}
