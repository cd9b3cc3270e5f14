//! The HTTP/1.1 fast path: plain keep-alive requests proxied without Pingora's
//! per-request session.
//!
//! Why: profiles of the edge under `wrk` (benches/results/2026-11-27T*-opt-*.md) put the
//! Pingora HTTP/1 proxy at ~23 µs of CPU per request against nginx's ~14, spread thinly
//! over building a `RequestHeader` (a header map plus a case map), a boxed future per
//! `ProxyHttp` hook, an `HttpPeer` clone, the shared connection pool (a lock, a hash of the
//! peer and an idle-watch task spawned per release) and de-chunking/re-chunking bodies.
//! Here the head is parsed in place with `httparse`, the head sent on is written straight
//! into a reused buffer, bodies pass through as raw bytes, and idle upstream connections
//! wait in a per-thread pool (`idle`).
//!
//! It takes only requests it handles exactly as the Pingora path would (same routing,
//! balancing, header policy, retries, timeouts, metrics and access log). Everything else
//! stays with Pingora, with the connection's buffered bytes untouched: HTTP/1.0, chunked
//! or `Expect` request bodies, upgrades, absolute-form targets, requests the edge answers
//! itself (404, 308, 413), pools with no usable server (503) and h2c pools.

mod chunked;
mod head;
mod idle;

use std::cell::RefCell;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use self::chunked::{ChunkedEnd, Scan};
use self::head::{Decoration, Forwarded, Framing};
use super::downstream::Conn;
use super::routing::RoutingTable;
use super::{count_request, headers, InFlight};
use crate::access_log::Entry;
use crate::balance::state::Lease;
use crate::balance::{cookie_value, hash_key, HashInput, PoolRuntime};
use crate::config::model::{Algorithm, UpstreamProtocol};
use crate::state::EdgeState;

pub struct FastPath {
    pub listener: Arc<str>,
    pub tls: bool,
    pub state: Arc<EdgeState>,
    /// Idle upstream connections kept per server and thread (`upstream_keepalive_pool`).
    pub keepalive_pool: usize,
}

pub enum Served {
    /// Answered (proxied, or a `502`/`504`); `keep_alive` says whether the connection may
    /// carry another request.
    Done { keep_alive: bool },
    /// Not taken: the buffered request is untouched, for Pingora.
    NotHandled,
}

/// Reads from upstreams go into this much spare room at a time.
const IO_BUF: usize = 16 * 1024;
/// A response head larger than this is refused (`502`), like Pingora's limit.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Buffers one request needs, lent from a per-thread free list for the request's
/// duration only, so an idle keep-alive connection holds none of them.
#[derive(Default)]
struct Scratch {
    /// Head (and any already-received body) sent upstream.
    upstream_head: Vec<u8>,
    /// Head (and the first body bytes) sent to the client.
    client_head: Vec<u8>,
    /// Upstream reads.
    io: Vec<u8>,
    request_id: Vec<u8>,
    hash_key: Vec<u8>,
    client_ip: String,
}

thread_local! {
    static SCRATCH: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
}

/// Spare scratch sets kept per thread: enough for the usual number of requests in flight
/// (each holds up to ~20 KiB); a burst beyond it allocates and frees its own.
const MAX_SPARE_SCRATCH: usize = 128;

struct Lent(Scratch);

impl Lent {
    fn take() -> Lent {
        Lent(SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default())
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let mut scratch = std::mem::take(&mut self.0);
        // A rare huge head or body chunk should not stay allocated forever.
        for buf in [
            &mut scratch.upstream_head,
            &mut scratch.client_head,
            &mut scratch.io,
        ] {
            if buf.capacity() > 4 * IO_BUF {
                *buf = Vec::new();
            }
        }
        SCRATCH.with(|s| {
            let mut free = s.borrow_mut();
            if free.len() < MAX_SPARE_SCRATCH {
                free.push(scratch);
            }
        });
    }
}

/// What was decided from the request head, before anything is sent.
struct Plan {
    route: usize,
    listener: Option<usize>,
    pool: Arc<PoolRuntime>,
    server: usize,
    content_length: u64,
    head_request: bool,
    idempotent: bool,
    client_close: bool,
    log: Option<LogFields>,
}

/// Owned copies for the access log, made only when it is on.
struct LogFields {
    method: http::Method,
    uri: http::Uri,
    referer: Option<http::HeaderValue>,
    user_agent: Option<http::HeaderValue>,
}

/// How one request ended, for metrics and the access log.
struct Outcome {
    server: Option<usize>,
    status: Option<u16>,
    bytes_sent: usize,
    keep_alive: bool,
    error: Option<String>,
}

/// Why an exchange with an upstream failed.
enum Fault {
    /// The upstream (connect, write, read, or a malformed response).
    Upstream { timeout: bool, detail: String },
    /// The client went away or failed while sending its body or reading ours.
    Client(io::Error),
}

impl Fault {
    fn upstream(e: io::Error) -> Fault {
        Fault::Upstream {
            timeout: e.kind() == io::ErrorKind::TimedOut,
            detail: e.to_string(),
        }
    }
}

impl FastPath {
    /// Serves the request whose complete head is at the start of `conn`'s buffer, or
    /// leaves it there untouched (`NotHandled`).
    pub async fn serve(&self, conn: &mut Conn, shutting_down: bool) -> Served {
        let started = Instant::now();
        let table = self.state.table.load_full();
        let mut scratch = Lent::take();
        let client = conn.client_ip();
        let Some((plan, head_len)) = self.plan(&table, conn, client, &mut scratch.0) else {
            return Served::NotHandled;
        };
        let _in_flight = InFlight::new(&self.state.in_flight);
        conn.buf.advance(head_len);
        let close = plan.client_close || shutting_down;
        let outcome = self
            .proxy(&table, &plan, conn, &mut scratch.0, started, close)
            .await;
        let elapsed = started.elapsed();
        count_request(
            &table,
            Some(plan.route),
            outcome.server,
            outcome.status,
            elapsed,
        );
        self.log(&table, &plan, &outcome, client, &scratch.0, elapsed);
        Served::Done {
            keep_alive: outcome.keep_alive,
        }
    }

    /// Parses and routes the head, picks the first server and writes the upstream head;
    /// `None` when the request is Pingora's (see the module doc).
    fn plan(
        &self,
        table: &RoutingTable,
        conn: &Conn,
        client: Option<IpAddr>,
        s: &mut Scratch,
    ) -> Option<(Plan, usize)> {
        let mut slots = [httparse::EMPTY_HEADER; head::MAX_HEADERS];
        let req = head::parse_request(&conn.buf, &mut slots)?;
        let host = headers::normalize_host(std::str::from_utf8(req.host).ok()?);
        let route_index = table.find(&host, req.path())?;
        let route = table.routes.get(route_index)?;
        if route.route.redirect_https && !self.tls {
            return None;
        }
        let listener = table.listener_index(&self.listener);
        let max_body = table.max_body(Some(route_index), listener);
        if max_body.is_some_and(|max| req.content_length > max) {
            return None;
        }
        let pool = table.pools.get(route.pool)?;
        if pool.config.protocol != UpstreamProtocol::H1 {
            return None;
        }

        s.client_ip.clear();
        if let Some(ip) = client {
            use std::fmt::Write;
            let _ = write!(s.client_ip, "{ip}");
        }
        s.hash_key.clear();
        if let Algorithm::Ketama { key } = &pool.config.algorithm {
            let mut ip_text = Vec::new();
            let input = Hashed { req: &req, client };
            let found = hash_key(&input, key, &mut ip_text);
            s.hash_key.extend_from_slice(found);
        }
        // No usable server: Pingora answers (503, with its own accounting).
        let server = pool.select_key(&s.hash_key, &[])?;

        s.request_id.clear();
        match req.header(headers::X_REQUEST_ID) {
            Some(id) if headers::acceptable_request_id(id) => s.request_id.extend_from_slice(id),
            _ => headers::push_new_request_id(&mut s.request_id),
        }
        let forwarded = Forwarded {
            client_ip: client.map(|_| s.client_ip.as_str()),
            https: self.tls,
            request_id: &s.request_id,
        };
        head::write_upstream_head(
            &mut s.upstream_head,
            &req,
            &forwarded,
            &route.route.request_headers,
        );
        let log = self.state.access_log.as_ref().map(|_| LogFields {
            method: http::Method::from_bytes(req.method.as_bytes()).unwrap_or_default(),
            uri: req.target.parse().unwrap_or_default(),
            referer: req
                .header("referer")
                .and_then(|v| http::HeaderValue::from_bytes(v).ok()),
            user_agent: req
                .header("user-agent")
                .and_then(|v| http::HeaderValue::from_bytes(v).ok()),
        });
        let plan = Plan {
            route: route_index,
            listener,
            pool: pool.clone(),
            server,
            content_length: req.content_length,
            head_request: req.is_head(),
            idempotent: req.is_idempotent(),
            client_close: req.close,
            log,
        };
        Some((plan, req.head_len))
    }

    async fn proxy(
        &self,
        table: &RoutingTable,
        plan: &Plan,
        conn: &mut Conn,
        s: &mut Scratch,
        started: Instant,
        close: bool,
    ) -> Outcome {
        let pool = &plan.pool;
        let cfg = &pool.config;
        let deadline = cfg.request_timeout.map(|t| started + t.0);
        // The part of the body already received travels with the head, so a retry can
        // send both again; a body still to come is streamed once and rules retries out.
        let buffered = usize::try_from(plan.content_length)
            .map_or(conn.buf.len(), |len| len.min(conn.buf.len()));
        s.upstream_head.extend_from_slice(&conn.buf[..buffered]);
        conn.buf.advance(buffered);
        let mut body_left = plan.content_length - buffered as u64;

        let mut tried: Vec<usize> = Vec::new();
        let mut index = plan.server;
        let mut fresh_only = false;
        loop {
            let Some(server) = pool.servers.get(index) else {
                let detail = "selected server out of range".to_owned();
                return self.fail(conn, s, None, 500, detail).await;
            };
            // Counts this request on the server (least-conn, drain) until it is over.
            let _lease: Lease = server.state.lease();
            let pooled = if fresh_only {
                None
            } else {
                idle::take(server.state.slot(), cfg.keepalive.0)
            };
            let (mut up, reused) = match pooled {
                Some(up) => (up, true),
                None => match connect(server.address, cfg.connect_timeout.0, deadline).await {
                    Ok(up) => (up, false),
                    Err(e) => {
                        server.metrics.connect_errors.inc();
                        pool.record_failure(index);
                        tried.push(index);
                        // Nothing reached the upstream: another server is safe for any method.
                        if let Some(next) = retry_target(pool, &tried, &s.hash_key) {
                            index = next;
                            continue;
                        }
                        let status = if e.kind() == io::ErrorKind::TimedOut {
                            504
                        } else {
                            502
                        };
                        let detail = format!("connect to {} failed: {e}", server.address);
                        return self.fail(conn, s, Some(index), status, detail).await;
                    }
                },
            };
            if reused {
                server.metrics.connections_reused.inc();
            } else {
                server.metrics.connections_new.inc();
            }

            let mut streamed = false;
            let response = send_and_read_head(
                &mut up,
                conn,
                s,
                plan.head_request,
                &mut body_left,
                &mut streamed,
                cfg.write_timeout.map(|d| d.0),
                cfg.read_timeout.map(|d| d.0),
                deadline,
            )
            .await;
            let response = match response {
                Ok(r) => r,
                Err(Fault::Client(e)) => {
                    return Outcome {
                        server: Some(index),
                        status: None,
                        bytes_sent: 0,
                        keep_alive: false,
                        error: Some(format!("client: {e}")),
                    };
                }
                Err(Fault::Upstream { timeout, detail }) => {
                    server.metrics.proxy_errors.inc();
                    // A pooled connection the upstream had already closed: the request
                    // never reached it, so a fresh connection to the same server may
                    // carry it (when it can be sent again).
                    if reused && !timeout && plan.idempotent && !streamed {
                        fresh_only = true;
                        continue;
                    }
                    pool.record_failure(index);
                    tried.push(index);
                    if cfg.retry_idempotent && plan.idempotent && plan.content_length == 0 {
                        if let Some(next) = retry_target(pool, &tried, &s.hash_key) {
                            index = next;
                            fresh_only = false;
                            continue;
                        }
                    }
                    let status = if timeout { 504 } else { 502 };
                    let detail = format!("upstream {}: {detail}", server.address);
                    return self.fail(conn, s, Some(index), status, detail).await;
                }
            };

            pool.record_status(index, response.status);
            let client_close = close || response.framing == Framing::UntilClose;
            let deco = Decoration {
                request_id: &s.request_id,
                hsts: self.hsts(table, plan),
                rules: &table.routes[plan.route].route.response_headers,
                close: client_close,
            };
            s.client_head.clear();
            head::write_downstream_head(&mut s.client_head, &s.io[..response.head_len], &deco);
            let forwarded = forward_body(
                &mut up,
                conn,
                s,
                &response,
                cfg.read_timeout.map(|d| d.0),
                deadline,
            )
            .await;
            return match forwarded {
                Ok((bytes_sent, reusable)) => {
                    if reusable && response.keep_alive {
                        idle::put(
                            server.state.slot(),
                            up,
                            self.keepalive_pool,
                            cfg.keepalive.0,
                        );
                    }
                    Outcome {
                        server: Some(index),
                        status: Some(response.status),
                        bytes_sent,
                        keep_alive: !client_close,
                        error: None,
                    }
                }
                Err((bytes_sent, fault)) => {
                    let error = match fault {
                        Fault::Client(e) => format!("client: {e}"),
                        Fault::Upstream { detail, .. } => {
                            server.metrics.proxy_errors.inc();
                            pool.record_failure(index);
                            tracing::error!(
                                listener = %self.listener,
                                server = %server.address,
                                error = %detail,
                                "upstream failed mid-response; closing the client connection"
                            );
                            format!("upstream {}: {detail}", server.address)
                        }
                    };
                    Outcome {
                        server: Some(index),
                        status: Some(response.status),
                        bytes_sent,
                        keep_alive: false,
                        error: Some(error),
                    }
                }
            };
        }
    }

    /// Answers a request the upstream side failed (nothing was sent to the client yet);
    /// the connection closes after it, as on the Pingora path.
    async fn fail(
        &self,
        conn: &mut Conn,
        s: &mut Scratch,
        server: Option<usize>,
        status: u16,
        detail: String,
    ) -> Outcome {
        tracing::error!(listener = %self.listener, status, error = %detail, "fail to proxy");
        head::write_error_response(&mut s.client_head, status, &s.request_id);
        if conn.write_all(&s.client_head).await.is_ok() {
            let _ = conn.flush().await;
        }
        Outcome {
            server,
            status: Some(status),
            bytes_sent: 0,
            keep_alive: false,
            error: Some(detail),
        }
    }

    /// HSTS for a response on this listener (TLS only).
    fn hsts<'t>(&self, table: &'t RoutingTable, plan: &Plan) -> Option<&'t [u8]> {
        self.tls
            .then(|| table.hsts(Some(plan.route), plan.listener))
            .flatten()
            .map(|v| v.as_bytes())
    }

    fn log(
        &self,
        table: &RoutingTable,
        plan: &Plan,
        outcome: &Outcome,
        client: Option<IpAddr>,
        s: &Scratch,
        elapsed: Duration,
    ) {
        let route = table.routes.get(plan.route);
        if let (Some(log), Some(fields)) = (&self.state.access_log, &plan.log) {
            log.log(Entry {
                time: SystemTime::now(),
                client,
                listener: self.listener.clone(),
                method: fields.method.clone(),
                uri: fields.uri.clone(),
                version: http::Version::HTTP_11,
                status: outcome.status.unwrap_or(0),
                bytes_sent: outcome.bytes_sent,
                route: route.map(|r| r.name.clone()),
                upstream: outcome
                    .server
                    .and_then(|i| plan.pool.servers.get(i))
                    .map(|s| s.address),
                duration: elapsed,
                request_id: http::HeaderValue::from_bytes(&s.request_id).ok(),
                referer: fields.referer.clone(),
                user_agent: fields.user_agent.clone(),
                error: outcome.error.clone(),
            });
        }
        tracing::debug!(
            target: "edge::access",
            listener = %self.listener,
            route = route.map(|r| &*r.name),
            status = outcome.status.unwrap_or(0),
            server = ?outcome.server,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            error = outcome.error.as_deref(),
            "fast path"
        );
    }
}

/// The next server after failed attempts on `tried`, within `connect_retries`.
fn retry_target(pool: &PoolRuntime, tried: &[usize], key: &[u8]) -> Option<usize> {
    if tried.len() > pool.config.connect_retries || tried.len() >= pool.servers.len() {
        return None;
    }
    pool.select_key(key, tried)
}

/// A fast-path request as the balancer's hash input.
struct Hashed<'r, 'h, 'b> {
    req: &'r head::Request<'h, 'b>,
    client: Option<IpAddr>,
}

impl HashInput for Hashed<'_, '_, '_> {
    fn path(&self) -> &str {
        self.req.path()
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.req.header(name)
    }

    fn cookie(&self, name: &str) -> Option<&[u8]> {
        self.req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .find_map(|h| cookie_value(h.value, name.as_bytes()))
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client
    }
}

/// Sends the request (head, buffered body, then the rest of the body from the client)
/// and reads the response head into `s.io`, skipping interim `1xx` responses.
#[allow(clippy::too_many_arguments)]
async fn send_and_read_head(
    up: &mut TcpStream,
    conn: &mut Conn,
    s: &mut Scratch,
    head_request: bool,
    body_left: &mut u64,
    streamed: &mut bool,
    write_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    deadline: Option<Instant>,
) -> Result<head::Response, Fault> {
    timed(
        limit(write_timeout, deadline),
        up.write_all(&s.upstream_head),
    )
    .await
    .map_err(Fault::upstream)?;
    while *body_left > 0 {
        s.io.clear();
        s.io.reserve(IO_BUF);
        let n = (&mut *conn)
            .take(*body_left)
            .read_buf(&mut s.io)
            .await
            .map_err(Fault::Client)?;
        if n == 0 {
            return Err(Fault::Client(io::ErrorKind::UnexpectedEof.into()));
        }
        *streamed = true;
        *body_left -= n as u64;
        timed(limit(write_timeout, deadline), up.write_all(&s.io))
            .await
            .map_err(Fault::upstream)?;
    }
    s.io.clear();
    loop {
        if !s.io.is_empty() {
            match head::parse_response(&s.io, head_request) {
                Ok(Some(r)) if r.interim => {
                    s.io.drain(..r.head_len);
                    continue;
                }
                Ok(Some(r)) => return Ok(r),
                Ok(None) if s.io.len() > MAX_RESPONSE_HEAD => {
                    return Err(Fault::Upstream {
                        timeout: false,
                        detail: "response head too large".into(),
                    })
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Fault::Upstream {
                        timeout: false,
                        detail: e.to_string(),
                    })
                }
            }
        }
        s.io.reserve(IO_BUF);
        let n = timed(limit(read_timeout, deadline), up.read_buf(&mut s.io))
            .await
            .map_err(Fault::upstream)?;
        if n == 0 {
            return Err(Fault::Upstream {
                timeout: false,
                detail: "closed before responding".into(),
            });
        }
    }
}

/// Sends the client head (already in `s.client_head`) and the body as the upstream
/// frames it. Returns the body bytes sent and whether the upstream connection ended
/// cleanly (reusable), or how far it got before a fault.
async fn forward_body(
    up: &mut TcpStream,
    conn: &mut Conn,
    s: &mut Scratch,
    response: &head::Response,
    read_timeout: Option<Duration>,
    deadline: Option<Instant>,
) -> Result<(usize, bool), (usize, Fault)> {
    let mut framing = BodyEnd::new(response.framing);
    let (take, mut done, mut extra) = framing
        .feed(&s.io[response.head_len..])
        .map_err(|f| (0, f))?;
    let start = response.head_len;
    s.client_head.extend_from_slice(&s.io[start..start + take]);
    let mut sent = take;
    conn.write_all(&s.client_head)
        .await
        .map_err(|e| (0, Fault::Client(e)))?;
    while !done {
        s.io.clear();
        s.io.reserve(IO_BUF);
        let n = timed(limit(read_timeout, deadline), up.read_buf(&mut s.io))
            .await
            .map_err(|e| (sent, Fault::upstream(e)))?;
        if n == 0 {
            if response.framing == Framing::UntilClose {
                break;
            }
            return Err((
                sent,
                Fault::Upstream {
                    timeout: false,
                    detail: "closed mid-body".into(),
                },
            ));
        }
        let (take, end, more) = framing.feed(&s.io).map_err(|f| (sent, f))?;
        done = end;
        extra = more;
        conn.write_all(&s.io[..take])
            .await
            .map_err(|e| (sent, Fault::Client(e)))?;
        sent += take;
    }
    conn.flush().await.map_err(|e| (sent, Fault::Client(e)))?;
    Ok((sent, !extra && response.framing != Framing::UntilClose))
}

/// Tracks where the response body ends across reads.
enum BodyEnd {
    Empty,
    Length(u64),
    Chunked(ChunkedEnd),
    UntilClose,
}

impl BodyEnd {
    fn new(framing: Framing) -> BodyEnd {
        match framing {
            Framing::Empty => BodyEnd::Empty,
            Framing::Length(n) => BodyEnd::Length(n),
            Framing::Chunked => BodyEnd::Chunked(ChunkedEnd::default()),
            Framing::UntilClose => BodyEnd::UntilClose,
        }
    }

    /// Of `input`: how many bytes belong to the body, whether the body is complete, and
    /// whether bytes past its end arrived (the connection is then not reusable).
    fn feed(&mut self, input: &[u8]) -> Result<(usize, bool, bool), Fault> {
        Ok(match self {
            BodyEnd::Empty => (0, true, !input.is_empty()),
            BodyEnd::Length(left) => {
                let take = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                *left -= take as u64;
                (take, *left == 0, input.len() > take)
            }
            BodyEnd::Chunked(scan) => match scan.feed(input) {
                Ok(Scan::End(n)) => (n, true, input.len() > n),
                Ok(Scan::More) => (input.len(), false, false),
                Err(e) => {
                    return Err(Fault::Upstream {
                        timeout: false,
                        detail: e.to_string(),
                    })
                }
            },
            BodyEnd::UntilClose => (input.len(), false, false),
        })
    }
}

async fn connect(
    address: std::net::SocketAddr,
    timeout: Duration,
    deadline: Option<Instant>,
) -> io::Result<TcpStream> {
    let stream = timed(limit(Some(timeout), deadline), TcpStream::connect(address)).await?;
    // Heads and bodies are written whole; Nagle would only delay a second write.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The tighter of a per-operation timeout and what is left until `deadline`.
fn limit(per_op: Option<Duration>, deadline: Option<Instant>) -> Option<Duration> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    match (per_op, left) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn timed<T>(
    limit: Option<Duration>,
    op: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match limit {
        None => op.await,
        Some(d) => tokio::time::timeout(d, op)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
    }
}
