//! The request path: one `EdgeProxy` per listener, all sharing `EdgeState`.

pub mod downstream;
pub mod fast;
mod headers;
pub mod routing;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use self::routing::RoutingTable;
use crate::access_log::Entry;
use crate::admin::metrics::class_index;
use crate::balance::state::Lease;
use crate::state::EdgeState;

pub struct EdgeProxy {
    pub listener: Arc<str>,
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
    /// Servers that failed for this request; skipped on retry.
    tried: Vec<usize>,
    /// The chosen server's in-flight count, held until the request ends or moves on.
    lease: Option<Lease>,
    listener: Option<usize>,
    /// Effective body limit (route over listener) and the bytes seen so far.
    max_body: Option<u64>,
    body_bytes: u64,
    request_id: Option<HeaderValue>,
    started: Instant,
    _in_flight: InFlight,
}

/// Counts a request as in flight for as long as its context lives.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn new(counter: &Arc<AtomicUsize>) -> Self {
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

    /// HSTS for this response: the route's value, else the listener's; TLS only.
    fn hsts<'c>(&self, ctx: &'c Ctx) -> Option<&'c HeaderValue> {
        if !self.tls {
            return None;
        }
        ctx.table.as_ref()?.hsts(ctx.route, ctx.listener)
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
            lease: None,
            listener: None,
            max_body: None,
            body_bytes: 0,
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
        ctx.listener = table.listener_index(&self.listener);
        let route = ctx.route.and_then(|i| table.routes.get(i));
        ctx.max_body = table.max_body(ctx.route, ctx.listener);
        // Requests the edge answers itself: no route (404), HTTPS-only on plain HTTP
        // (308), or a declared body over the limit (413, before anything is proxied).
        let answer = match route {
            None => Some((404, None)),
            Some(r) if r.route.redirect_https && !self.tls => {
                let location =
                    headers::https_location(session.req_header(), &host, table.https_port);
                Some((308, Some(location)))
            }
            Some(_)
                if ctx
                    .max_body
                    .zip(headers::content_length(session.req_header()))
                    .is_some_and(|(max, len)| len > max) =>
            {
                Some((413, None))
            }
            Some(_) => None,
        };
        ctx.table = Some(table);
        match answer {
            None => Ok(false),
            Some((status, location)) => {
                let hsts = self.hsts(ctx).cloned();
                respond(session, ctx, status, location, hsts).await?;
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
            ctx.lease = None;
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
        let mut peer = Box::new(server.peer.clone());
        if let Some(total) = pool.config.request_timeout {
            // Each attempt gets what is left of the budget (Pingora's timeouts are per
            // connect / per read, never per request).
            let left = total.0.saturating_sub(ctx.started.elapsed());
            if left.is_zero() {
                return Error::e_explain(ErrorType::HTTPStatus(504), "request_timeout reached");
            }
            let o = &mut peer.options;
            let cap = |t: Option<std::time::Duration>| Some(t.map_or(left, |t| t.min(left)));
            o.connection_timeout = cap(o.connection_timeout);
            o.read_timeout = cap(o.read_timeout);
            o.write_timeout = cap(o.write_timeout);
        }
        // Replacing a previous attempt's lease releases that server's count.
        ctx.lease = Some(server.state.lease());
        Ok(peer)
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        // A body dripping in under the per-read timeout would otherwise outlive the budget.
        let total = ctx
            .table
            .as_ref()
            .and_then(|t| self.pool(t, ctx))
            .and_then(|p| p.config.request_timeout);
        if total.is_some_and(|t| ctx.started.elapsed() > t.0) {
            return Error::e_explain(ErrorType::ReadTimedout, "request_timeout reached")
                .map_err(|e| e.into_up());
        }
        Ok(None)
    }

    /// Keeps Pingora's "Fail to proxy" ERROR lines for faults worth an operator's time:
    /// not for clients that hang up, nor for answers the edge chose to give (413, 503 with
    /// every server down, 504 over budget), which the access log and metrics record.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        use pingora::ErrorSource;
        matches!(
            (e.etype(), e.esource()),
            (ErrorType::HTTPStatus(_), _)
                | (
                    ErrorType::ReadError
                        | ErrorType::WriteError
                        | ErrorType::ConnectionClosed
                        | ErrorType::ReadTimedout
                        | ErrorType::WriteTimedout,
                    ErrorSource::Downstream,
                )
        )
    }

    /// Pingora's default mapping, except that upstream timeouts are `504` (as in nginx)
    /// rather than `502`.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        use pingora::ErrorSource;
        let code = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => *code,
            (
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
                ErrorSource::Upstream,
            ) => 504,
            (_, ErrorSource::Upstream) => 502,
            (
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
                ErrorSource::Downstream,
            ) => 0, // the client is gone
            (_, ErrorSource::Downstream) => 400,
            (_, ErrorSource::Internal | ErrorSource::Unset) => 500,
        };
        if code > 0 {
            if let Err(err) = session.respond_error(code).await {
                tracing::debug!(error = %err, "failed to send error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Chunked or under-declared bodies are counted as they stream.
        if let (Some(limit), Some(chunk)) = (ctx.max_body, body.as_ref()) {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > limit {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    format!("request body over {limit} bytes"),
                );
            }
        }
        Ok(())
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
        let upstream_fault = e.esource() == &pingora::ErrorSource::Upstream;
        let mut retry_elsewhere = false;
        if let (Some(table), Some(index)) = (ctx.table.clone(), ctx.server) {
            if let Some(pool) = self.pool(&table, ctx) {
                if let Some(server) = pool.servers.get(index) {
                    server.metrics.proxy_errors.inc();
                }
                // Only the upstream's fault counts against it (not a client hanging up).
                if upstream_fault {
                    pool.record_failure(index);
                    ctx.tried.push(index);
                    // Replaying is safe only for idempotent methods whose (empty) body
                    // can be sent again, and only while the client has seen nothing.
                    retry_elsewhere = pool.config.retry_idempotent
                        && session.req_header().method.is_idempotent()
                        && session.as_mut().is_body_empty()
                        && session.response_written().is_none()
                        && ctx.tried.len() <= pool.config.connect_retries
                        && ctx.tried.len() < pool.servers.len();
                }
            }
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        if retry_elsewhere {
            e.set_retry(true);
        } else if !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            // Pingora's default: a stale reused connection may be retried.
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
        headers::add_forwarded(session, upstream, self.tls, ctx.request_id.as_ref())?;
        if let Some(route) = route_of(ctx) {
            let rules = &route.route.request_headers;
            for name in &rules.remove {
                upstream.remove_header(name);
            }
            for (name, value) in &rules.add {
                upstream.insert_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(table), Some(index)) = (&ctx.table, ctx.server) {
            if let Some(pool) = self.pool(table, ctx) {
                pool.record_status(index, resp.status.as_u16());
            }
        }
        if let Some(id) = &ctx.request_id {
            resp.insert_header(headers::X_REQUEST_ID, id.clone())?;
        }
        if let Some(hsts) = self.hsts(ctx) {
            resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
        }
        if let Some(route) = route_of(ctx) {
            let rules = &route.route.response_headers;
            for name in &rules.remove {
                resp.remove_header(name);
            }
            for (name, value) in &rules.add {
                resp.insert_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map(|r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        if let Some(table) = &ctx.table {
            count_request(table, ctx.route, ctx.server, status, elapsed);
        }
        // The request is over for balancing purposes before the log line is queued.
        ctx.lease = None;
        if let Some(log) = &self.state.access_log {
            let req = session.req_header();
            let upstream = ctx.table.as_ref().zip(ctx.server).and_then(|(t, s)| {
                let pool = self.pool(t, ctx)?;
                pool.servers.get(s).map(|s| s.address)
            });
            log.log(Entry {
                time: SystemTime::now(),
                client: session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip()),
                listener: self.listener.clone(),
                method: req.method.clone(),
                uri: req.uri.clone(),
                version: req.version,
                status: status.unwrap_or(0),
                bytes_sent: session.body_bytes_sent(),
                route: ctx
                    .table
                    .as_ref()
                    .zip(ctx.route)
                    .and_then(|(t, r)| t.routes.get(r))
                    .map(|r| r.name.clone()),
                upstream,
                duration: elapsed,
                request_id: ctx.request_id.clone(),
                referer: req.headers.get(http::header::REFERER).cloned(),
                user_agent: req.headers.get(http::header::USER_AGENT).cloned(),
                error: e.map(|e| e.to_string()),
            });
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

/// Request metrics of one finished request: the route's duration histogram and the
/// requests counter by route, server and status class (`None`: no response was sent).
pub(crate) fn count_request(
    table: &RoutingTable,
    route: Option<usize>,
    server: Option<usize>,
    status: Option<u16>,
    elapsed: std::time::Duration,
) {
    let row = match route.and_then(|r| table.routes.get(r)) {
        None => &table.unrouted,
        Some(route) => {
            route.metrics.duration.observe(elapsed.as_secs_f64());
            &route.metrics
        }
    };
    let counters = server
        .and_then(|s| row.by_server.get(s))
        .unwrap_or(&row.no_server);
    if let Some(c) = counters.get(class_index(status)) {
        c.inc();
    }
}

/// The route this request matched, on the table it started with.
fn route_of(ctx: &Ctx) -> Option<&routing::RouteRuntime> {
    ctx.table.as_ref()?.routes.get(ctx.route?)
}

/// Sends a small response generated by the edge itself (404, redirects, 413).
async fn respond(
    session: &mut Session,
    ctx: &Ctx,
    status: u16,
    location: Option<HeaderValue>,
    hsts: Option<HeaderValue>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(5))?;
    if let Some(hsts) = hsts {
        resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts)?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
    if let Some(loc) = location {
        resp.insert_header(http::header::LOCATION, loc)?;
    }
    if let Some(id) = &ctx.request_id {
        resp.insert_header(headers::X_REQUEST_ID, id.clone())?;
    }
    session.write_response_header(Box::new(resp), true).await
}
