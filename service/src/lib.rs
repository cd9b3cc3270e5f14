//! HTTP plumbing shared by the web app and the SyncML server: the
//! `[server]` settings section, `/healthz`, Prometheus `/metrics` with
//! per-route request counters and latency histograms, and a serve loop
//! that drains in-flight requests on SIGTERM/SIGINT.

use axum::body::{Body, HttpBody};
use axum::extract::{MatchedPath, State};
use axum::http::{header, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use onebook_domain::Domain;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// `[server]`: where this instance listens and what it calls itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Shown in /healthz and logs, so a response can be traced to its
    /// instance behind the edge.
    pub instance: String,
    /// Largest request body accepted, in bytes (413 beyond).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

/// Per-instance values given on the command line, which win over the
/// config file: how `./dev up` runs two instances from one file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub instance: Option<String>,
    pub memcached: Option<String>,
}

impl Overrides {
    pub fn apply(
        &self,
        server: &mut ServerSettings,
        cache: &mut onebook_domain::settings::CacheSettings,
    ) {
        if let Some(listen) = self.listen {
            server.listen = listen;
        }
        if let Some(instance) = &self.instance {
            server.instance.clone_from(instance);
        }
        if let Some(memcached) = &self.memcached {
            cache.memcached = Some(memcached.clone());
        }
    }
}

fn default_max_body() -> usize {
    4 * 1024 * 1024
}

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Request metrics of one process, labelled by the matched route pattern
/// (never the raw path, so ids don't explode the label set).
#[derive(Clone)]
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGauge,
}

impl HttpMetrics {
    pub fn new(service: &str, instance: &str) -> Result<Self, prometheus::Error> {
        let labels = [
            ("service".to_string(), service.to_string()),
            ("instance".to_string(), instance.to_string()),
        ]
        .into_iter()
        .collect();
        let registry = Registry::new_custom(Some("onebook".to_string()), Some(labels))?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )?;
        let in_flight = IntGauge::new("http_requests_in_flight", "HTTP requests being served")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(HttpMetrics {
            registry,
            requests,
            latency,
            in_flight,
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// axum middleware recording [`HttpMetrics`].
pub async fn track_metrics(
    State(metrics): State<HttpMetrics>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    metrics.in_flight.inc();
    let response = next.run(request).await;
    metrics.in_flight.dec();
    metrics
        .latency
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), response.status().as_str()])
        .inc();
    response
}

/// State of the routes this crate adds.
#[derive(Clone)]
pub struct Plumbing {
    pub domain: Arc<Domain>,
    pub metrics: HttpMetrics,
    pub instance: String,
}

/// `/healthz` and `/metrics`, to merge into a component's router.
pub fn plumbing_routes(plumbing: Plumbing) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(plumbing)
}

async fn healthz(State(p): State<Plumbing>) -> Response {
    let report = p.domain.health().await;
    let status = if report.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": report.status,
        "instance": p.instance,
        "shards": report.shards,
        "memcached": report.memcached,
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(p): State<Plumbing>) -> Response {
    let mut families = p.metrics.registry.gather();
    families.extend(cache_metrics(&p));
    let mut out = Vec::new();
    match TextEncoder::new().encode(&families, &mut out) {
        Ok(()) => ([("content-type", "text/plain; version=0.0.4")], out).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The cache keeps plain atomics on its hot path; they become Prometheus
/// counters only when scraped.
fn cache_metrics(p: &Plumbing) -> Vec<prometheus::proto::MetricFamily> {
    let cache = &p.domain.cache;
    let counters = IntCounterVec::new(
        Opts::new(
            "onebook_cache_operations_total",
            "memcached lookups by outcome",
        )
        .const_label("instance", p.instance.clone()),
        &["outcome"],
    );
    let Ok(counters) = counters else {
        return Vec::new();
    };
    for (outcome, value) in [
        ("hit", cache.hits.load(Ordering::Relaxed)),
        ("miss", cache.misses.load(Ordering::Relaxed)),
        ("error", cache.errors.load(Ordering::Relaxed)),
    ] {
        counters.with_label_values(&[outcome]).inc_by(value);
    }
    use prometheus::core::Collector;
    counters.collect()
}

/// Binds and serves until SIGTERM or SIGINT, then lets in-flight requests
/// finish.
pub async fn serve(router: Router, listen: SocketAddr) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    tracing::info!(%listen, "listening");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(ServeError::Serve)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// How much of an oversized body is read (and thrown away) before the 413,
/// as a multiple of the limit; beyond that the connection is cut.
const DRAIN_FACTOR: usize = 8;

/// Why [`read_bounded_body`] gave no body.
#[derive(Debug, Error)]
pub enum BodyError {
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("reading the request body failed: {0}")]
    Read(axum::Error),
}

/// The request body, at most `limit` bytes, declared (`Content-Length`) or
/// not (chunked). A larger one is still read to its end, up to
/// `DRAIN_FACTOR` times the limit, before the caller answers 413: answering
/// while the peer is still sending closes the connection with unread data,
/// and behind the edge over HTTP/2 the client then saw a stream reset
/// instead of the 413 (2 of 40 uploads of 5 MiB to the web app, about one
/// in six SyncML clients). Beyond `DRAIN_FACTOR` times the limit it stops
/// reading and the connection is cut.
pub async fn read_bounded_body(
    headers: &axum::http::HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, BodyError> {
    let give_up = limit.saturating_mul(DRAIN_FACTOR);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > give_up) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let Ok(chunk) = frame.map_err(BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(chunk.len());
        if seen > give_up {
            return Err(BodyError::TooLarge { limit });
        }
        if seen <= limit {
            kept.extend_from_slice(&chunk);
        }
    }
    if seen > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(kept.into())
}

/// Middleware: a request that declares a body larger than `limit` bytes gets
/// 413 with a JSON error, after [`read_bounded_body`] has drained it. Bodies
/// without a Content-Length are left to the handler's own limit.
pub async fn refuse_oversized_bodies(
    State(limit): State<usize>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    match declared {
        Some(length) if length > limit => {
            let (parts, body) = request.into_parts();
            let error = match read_bounded_body(&parts.headers, body, limit).await {
                Err(e) => e.to_string(),
                // A body shorter than it declared: still over the limit as sent.
                Ok(_) => BodyError::TooLarge { limit }.to_string(),
            };
            let body = serde_json::json!({ "error": error });
            (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response()
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn declaring(length: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, length.into());
        headers
    }

    /// `chunks` pieces of `size` bytes, without a declared length (chunked).
    fn streamed(chunks: usize, size: usize) -> Body {
        let pieces = (0..chunks).map(move |_| Ok::<_, std::io::Error>(vec![b'x'; size]));
        Body::from_stream(futures::stream::iter(pieces))
    }

    #[tokio::test]
    async fn bodies_within_the_limit_are_returned_whole() {
        let body = read_bounded_body(&HeaderMap::new(), streamed(4, 25), 100).await;
        assert_eq!(body.map(|b| b.len()).ok(), Some(100));
        let body = read_bounded_body(&declaring(3), Body::from("abc"), 3).await;
        assert_eq!(body.ok().as_deref(), Some(&b"abc"[..]));
    }

    #[tokio::test]
    async fn larger_bodies_are_refused_declared_or_not() {
        let over = read_bounded_body(&HeaderMap::new(), streamed(5, 25), 100).await;
        assert!(matches!(over, Err(BodyError::TooLarge { limit: 100 })));
        // Far over the limit: refused without reading.
        let far = read_bounded_body(&declaring(10_000), Body::from("x"), 100).await;
        assert!(matches!(far, Err(BodyError::TooLarge { limit: 100 })));
        let streamed_far = read_bounded_body(&HeaderMap::new(), streamed(100, 100), 100).await;
        assert!(matches!(streamed_far, Err(BodyError::TooLarge { .. })));
        assert_eq!(
            BodyError::TooLarge { limit: 100 }.to_string(),
            "request body larger than 100 bytes"
        );
    }
}
