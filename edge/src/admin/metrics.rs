//! Prometheus metrics. Label values are resolved once per routing-table build into plain
//! counter handles, so the request path only does atomic increments: no label hashing,
//! no formatting, no allocation.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::error::{Error, Result};
use crate::proxy::downstream::Rejections;

/// `1xx`..`5xx`, then `error` for requests that ended without a response status
/// (client went away, upstream failed after headers).
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// Index into [`CLASSES`] for a response status, `None` meaning no response was sent.
pub fn class_index(status: Option<u16>) -> usize {
    match status {
        Some(s @ 100..=599) => usize::from(s / 100) - 1,
        _ => CLASSES.len() - 1,
    }
}

/// Label used where a request never reached a server (redirects, unrouted, no server).
pub const NONE: &str = "none";

/// Owns its registry (rather than Prometheus' process-global one) so several edges can
/// live in one test process and `/metrics` shows exactly the edge's series.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    upstream_connections: IntCounterVec,
    ejections: IntCounterVec,
    pub config_generation: IntGauge,
    pub config_reloads_ok: IntCounter,
    pub config_reloads_failed: IntCounter,
    pub access_log_dropped: IntCounter,
    rejected: IntCounterVec,
    /// Filled from the active routing table at each scrape (so removed servers vanish).
    upstream_healthy: IntGaugeVec,
    upstream_in_flight: IntGaugeVec,
    downstream_connections: IntGaugeVec,
    tls_handshakes: IntCounterVec,
    /// Mirrors `crate::logging::tls_handshake_failures()`, which Pingora only reports in
    /// a log line (without the listener).
    tls_handshake_failures: IntCounter,
}

/// Pre-resolved counters for one route: `[server index][class]`, plus the row for
/// requests answered without a server.
pub struct RouteMetrics {
    pub duration: Histogram,
    pub by_server: Vec<[IntCounter; 6]>,
    pub no_server: [IntCounter; 6],
}

/// Pre-resolved counters for one pool member.
pub struct ServerMetrics {
    pub connect_errors: IntCounter,
    pub proxy_errors: IntCounter,
    /// Requests sent on a fresh upstream connection vs. a pooled keep-alive one.
    pub connections_new: IntCounter,
    pub connections_reused: IntCounter,
    pub ejections: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "edge_requests_total",
                "Requests handled, by route, pool, server and status class",
            ),
            &["route", "pool", "server", "class"],
        )
        .map_err(prom)?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "edge_request_duration_seconds",
                "Time from request header to the end of the response, by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route"],
        )
        .map_err(prom)?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "edge_upstream_errors_total",
                "Failed upstream attempts, by pool, server and kind (connect | proxy)",
            ),
            &["pool", "server", "kind"],
        )
        .map_err(prom)?;
        let upstream_connections = IntCounterVec::new(
            Opts::new(
                "edge_upstream_connections_total",
                "Upstream connections used by requests, by pool, server and whether reused from the keep-alive pool",
            ),
            &["pool", "server", "reused"],
        )
        .map_err(prom)?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "edge_upstream_ejections_total",
                "Times passive health took a server out of rotation (max_fails reached)",
            ),
            &["pool", "server"],
        )
        .map_err(prom)?;
        let config_generation = IntGauge::new(
            "edge_config_generation",
            "Generation of the active configuration; increases on every successful reload",
        )
        .map_err(prom)?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "edge_config_reloads_total",
                "Configuration reload attempts, by result",
            ),
            &["result"],
        )
        .map_err(prom)?;
        let access_log_dropped = IntCounter::new(
            "edge_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind",
        )
        .map_err(prom)?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "edge_downstream_rejected_total",
                "Connections or requests turned away before routing, by listener and reason",
            ),
            &["listener", "reason"],
        )
        .map_err(prom)?;
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "edge_upstream_healthy",
                "1 while a server is healthy (passing its active check, not ejected by passive health), else 0",
            ),
            &["pool", "server"],
        )
        .map_err(prom)?;
        let upstream_in_flight = IntGaugeVec::new(
            Opts::new(
                "edge_upstream_in_flight",
                "Requests currently on each server",
            ),
            &["pool", "server"],
        )
        .map_err(prom)?;
        let downstream_connections = IntGaugeVec::new(
            Opts::new(
                "edge_downstream_connections",
                "Open client connections, by listener (TLS: once the handshake is done)",
            ),
            &["listener"],
        )
        .map_err(prom)?;
        let tls_handshakes = IntCounterVec::new(
            Opts::new(
                "edge_tls_handshakes_total",
                "Completed TLS handshakes, by listener and negotiated protocol (h2, http/1.1)",
            ),
            &["listener", "alpn"],
        )
        .map_err(prom)?;
        let tls_handshake_failures = IntCounter::new(
            "edge_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out, all listeners",
        )
        .map_err(prom)?;
        for c in [
            Box::new(upstream_healthy.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_in_flight.clone()),
            Box::new(downstream_connections.clone()),
            Box::new(tls_handshakes.clone()),
            Box::new(tls_handshake_failures.clone()),
            Box::new(access_log_dropped.clone()),
            Box::new(rejected.clone()),
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(upstream_connections.clone()),
            Box::new(ejections.clone()),
            Box::new(config_generation.clone()),
            Box::new(reloads.clone()),
        ] {
            registry.register(c).map_err(prom)?;
        }
        Ok(Metrics {
            config_reloads_ok: reloads.with_label_values(&["ok"]),
            config_reloads_failed: reloads.with_label_values(&["error"]),
            registry,
            requests,
            duration,
            upstream_errors,
            upstream_connections,
            ejections,
            config_generation,
            access_log_dropped,
            rejected,
            upstream_healthy,
            upstream_in_flight,
            downstream_connections,
            tls_handshakes,
            tls_handshake_failures,
        })
    }

    /// Gauge of open connections on `listener`.
    pub fn downstream_connections(&self, listener: &str) -> IntGauge {
        self.downstream_connections.with_label_values(&[listener])
    }

    /// Counter of completed handshakes on `listener` that negotiated `alpn`.
    pub fn tls_handshakes(&self, listener: &str, alpn: &str) -> IntCounter {
        self.tls_handshakes.with_label_values(&[listener, alpn])
    }

    /// Sets the per-server gauges from the active table, dropping servers it no longer has.
    pub fn refresh_upstreams(&self, pools: &[std::sync::Arc<crate::balance::PoolRuntime>]) {
        self.upstream_healthy.reset();
        self.upstream_in_flight.reset();
        for pool in pools {
            for (i, s) in pool.servers.iter().enumerate() {
                let labels = [pool.name(), s.label.as_str()];
                let usable = pool.is_ready(i) && !pool.is_ejected(i);
                self.upstream_healthy
                    .with_label_values(&labels)
                    .set(i64::from(usable));
                self.upstream_in_flight
                    .with_label_values(&labels)
                    .set(i64::try_from(s.state.in_flight()).unwrap_or(i64::MAX));
            }
        }
        let failures = crate::logging::tls_handshake_failures();
        let seen = self.tls_handshake_failures.get();
        if failures > seen {
            self.tls_handshake_failures.inc_by(failures - seen);
        }
    }

    pub fn route(&self, route: &str, pool: &str, servers: &[String]) -> RouteMetrics {
        let row = |server: &str| -> [IntCounter; 6] {
            CLASSES.map(|class| {
                self.requests
                    .with_label_values(&[route, pool, server, class])
            })
        };
        RouteMetrics {
            duration: self.duration.with_label_values(&[route]),
            by_server: servers.iter().map(|s| row(s)).collect(),
            no_server: row(NONE),
        }
    }

    pub fn server(&self, pool: &str, server: &str) -> ServerMetrics {
        ServerMetrics {
            connect_errors: self
                .upstream_errors
                .with_label_values(&[pool, server, "connect"]),
            proxy_errors: self
                .upstream_errors
                .with_label_values(&[pool, server, "proxy"]),
            connections_new: self
                .upstream_connections
                .with_label_values(&[pool, server, "false"]),
            connections_reused: self
                .upstream_connections
                .with_label_values(&[pool, server, "true"]),
            ejections: self.ejections.with_label_values(&[pool, server]),
        }
    }

    pub fn rejections(&self, listener: &str) -> Rejections {
        let c = |reason: &str| self.rejected.with_label_values(&[listener, reason]);
        Rejections {
            max_connections: c("max_connections"),
            header_timeout: c("header_timeout"),
            header_too_large: c("header_too_large"),
        }
    }

    /// Counter row for requests that matched no route.
    pub fn unrouted(&self) -> RouteMetrics {
        self.route(NONE, NONE, &[])
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(prom)?;
        Ok(buf)
    }
}

fn prom(e: prometheus::Error) -> Error {
    Error::Setup(format!("metrics: {e}"))
}
