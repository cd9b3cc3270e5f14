//! The request path: one `EdgeProxy` per listener, all sharing `EdgeState`.

mod headers;
pub mod routing;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::Digest;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use self::routing::RoutingTable;
use crate::admin::metrics::class_index;
use crate::state::EdgeState;

pub struct EdgeProxy {
    pub listener: String,
    /// Whether this listener terminates TLS: drives X-Forwarded-Proto and redirects.
    pub tls: bool,
    pub state: Arc<EdgeState>,
}

/// Per-request state.
pub struct Ctx {
    /// Pinned at the start so a reload mid-request cannot shift route/pool/server indices.
    table: Option<Arc<RoutingTable>>,
    route: Option<usize>,
    server: Option<usize>,
    /// Servers that failed to connect for this request; skipped on retry.
    tried: Vec<usize>,
    request_id: Option<HeaderValue>,
    started: Instant,
    _in_flight: InFlight,
}

/// Counts a request as in flight for as long as its context lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EdgeProxy {
    fn pool<'t>(
        &self,
        table: &'t RoutingTable,
        ctx: &Ctx,
    ) -> Option<&'t Arc<crate::balance::PoolRuntime>> {
        let route = table.routes.get(ctx.route?)?;
        table.pools.get(route.pool)
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            table: None,
            route: None,
            server: None,
            tried: Vec::new(),
            request_id: None,
            started: Instant::now(),
            _in_flight: InFlight::new(&self.state.in_flight),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let table = self.state.table.load_full();
        ctx.request_id = Some(headers::request_id(session.req_header()));
        let host = headers::request_host(session.req_header());
        ctx.route = table.find(&host, session.req_header().uri.path());
        // Requests the edge answers itself: no route (404), or HTTPS-only on plain HTTP.
        let answer = match ctx.route.and_then(|i| table.routes.get(i)) {
            None => Some((404, None)),
            Some(r) if r.route.redirect_https && !self.tls => {
                let location =
                    headers::https_location(session.req_header(), &host, table.https_port);
                Some((308, Some(location)))
            }
            Some(_) => None,
        };
        ctx.table = Some(table);
        match answer {
            None => Ok(false),
            Some((status, location)) => {
                respond(session, ctx, status, location).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let table = ctx.table.clone().ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "no routing table for request")
        })?;
        let pool = self
            .pool(&table, ctx)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no route"))?;
        let Some(index) = pool.select(session, &ctx.tried) else {
            ctx.server = None;
            let context = format!("no usable server left in pool `{}`", pool.name());
            // Nothing tried yet means health checks rule every server out: that is
            // "unavailable" (503, like HAProxy). After failed attempts it is a bad gateway.
            let error = if ctx.tried.is_empty() {
                Error::explain(ErrorType::HTTPStatus(503), context)
            } else {
                Error::new_up(ErrorType::ConnectNoRoute).more_context(context)
            };
            return Err(error);
        };
        ctx.server = Some(index);
        let server = pool.servers.get(index).ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "selected server out of range")
        })?;
        Ok(Box::new(server.peer.clone()))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let (Some(table), Some(index)) = (ctx.table.clone(), ctx.server) else {
            return e;
        };
        let Some(pool) = self.pool(&table, ctx) else {
            return e;
        };
        if let Some(server) = pool.servers.get(index) {
            server.metrics.connect_errors.inc();
        }
        pool.record_failure(index);
        ctx.tried.push(index);
        // Nothing reached the upstream yet, so another server is safe for any method.
        let retry =
            ctx.tried.len() <= pool.config.connect_retries && ctx.tried.len() < pool.servers.len();
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        if let (Some(table), Some(index)) = (ctx.table.clone(), ctx.server) {
            if let Some(pool) = self.pool(&table, ctx) {
                if let Some(server) = pool.servers.get(index) {
                    server.metrics.proxy_errors.inc();
                }
                // Only the upstream's fault counts against it (not a client hanging up).
                if e.esource() == &pingora::ErrorSource::Upstream {
                    pool.record_failure(index);
                }
            }
        }
        // Pingora's default policy: retry only idempotent requests on a stale reused connection.
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(table), Some(index)) = (&ctx.table, ctx.server) {
            if let Some(server) = self.pool(table, ctx).and_then(|p| p.servers.get(index)) {
                let counter = if reused {
                    &server.metrics.connections_reused
                } else {
                    &server.metrics.connections_new
                };
                counter.inc();
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        headers::add_forwarded(session, upstream, self.tls, ctx.request_id.as_ref())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            resp.insert_header(headers::X_REQUEST_ID, id.clone())?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map(|r| r.status.as_u16());
        let class = class_index(status);
        let elapsed = ctx.started.elapsed();
        if let Some(table) = &ctx.table {
            let row = match ctx.route.and_then(|r| table.routes.get(r)) {
                None => &table.unrouted,
                Some(route) => {
                    route.metrics.duration.observe(elapsed.as_secs_f64());
                    &route.metrics
                }
            };
            let counters = ctx
                .server
                .and_then(|s| row.by_server.get(s))
                .unwrap_or(&row.no_server);
            if let Some(c) = counters.get(class) {
                c.inc();
            }
        }
        tracing::debug!(
            target: "edge::access",
            listener = %self.listener,
            method = %session.req_header().method,
            path = %session.req_header().uri.path(),
            status = status.unwrap_or(0),
            server = ?ctx.server,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            request_id = ?ctx.request_id,
            error = e.map(|e| e.to_string()),
        );
    }
}

/// Sends a small response generated by the edge itself (404, redirects).
async fn respond(
    session: &mut Session,
    ctx: &Ctx,
    status: u16,
    location: Option<HeaderValue>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
    if let Some(loc) = location {
        resp.insert_header(http::header::LOCATION, loc)?;
    }
    if let Some(id) = &ctx.request_id {
        resp.insert_header(headers::X_REQUEST_ID, id.clone())?;
    }
    session.write_response_header(Box::new(resp), true).await
}
