//! Connection-level guards in front of Pingora's HTTP/1 parser: a deadline for the whole
//! request header (slowloris → `408`), a header size cap (`431`), and a cap on open
//! connections per listener.
//!
//! Pingora only has a per-read timeout (a client sending one byte every few seconds never
//! trips it) and answers an oversized header with `400`. So `Guarded` reads each request
//! header itself, under one deadline, into a buffer that `Conn` then replays to Pingora
//! ahead of the socket, and runs the HTTP/1 keep-alive loop itself (as Pingora's
//! `ServerApp` impl does) so every request on a connection gets the same treatment.
//! HTTP/2 connections are only counted: their framing has its own limits.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::fast::{FastPath, Served};

/// What one listener enforces before a request reaches the proxy.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_size: usize,
    pub max_connections: Option<usize>,
}

/// Pre-resolved counters of what the guard turned away.
pub struct Rejections {
    pub max_connections: IntCounter,
    pub header_timeout: IntCounter,
    pub header_too_large: IntCounter,
}

/// Pre-resolved connection gauges and TLS counters of one listener.
pub struct ConnMetrics {
    pub open: IntGauge,
    /// Handshakes that negotiated `h2`, and all others (`http/1.1` or no ALPN); `None` on
    /// plain listeners, so they export no TLS series.
    pub tls: Option<(IntCounter, IntCounter)>,
}

pub struct Guarded<A> {
    inner: Arc<A>,
    limits: Limits,
    open: Arc<AtomicUsize>,
    rejected: Rejections,
    metrics: ConnMetrics,
    /// Takes the plain HTTP/1.1 requests it can before they reach Pingora (`None`: off).
    fast: Option<FastPath>,
}

impl<A> Guarded<A> {
    pub fn new(
        inner: A,
        limits: Limits,
        rejected: Rejections,
        metrics: ConnMetrics,
        fast: Option<FastPath>,
    ) -> Self {
        Guarded {
            inner: Arc::new(inner),
            limits,
            open: Arc::default(),
            rejected,
            metrics,
            fast,
        }
    }
}

enum Header {
    Ready,
    /// Closed, or idle past `idle_timeout` between requests: nothing to answer.
    Gone,
    TimedOut,
    TooLarge,
}

/// The HTTP/2 connection preface: on an h2c listener it is passed to Pingora as is.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let slot = match self.limits.max_connections {
            None => None,
            Some(max) => {
                if self.open.fetch_add(1, Relaxed) >= max {
                    self.open.fetch_sub(1, Relaxed);
                    self.rejected.max_connections.inc();
                    // Dropping the stream closes it: refusing is cheaper than queueing.
                    return None;
                }
                Some(Slot(self.open.clone()))
            }
        };
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        // Pingora hands the stream over only once the TLS handshake succeeded.
        if let (Some((tls_h2, tls_h1)), Some(_)) = (&self.metrics.tls, stream.get_ssl_digest()) {
            if h2 {
                tls_h2.inc();
            } else {
                tls_h1.inc();
            }
        }
        self.metrics.open.inc();
        let plain = stream.get_ssl_digest().is_none();
        let mut conn = Box::new(Conn {
            inner: stream,
            buf: BytesMut::new(),
            client_ip: None,
            plain,
            _slot: slot,
            _open: OpenGauge(self.metrics.open.clone()),
        });
        if h2 {
            return ServerApp::process_new(&self.inner, conn, shutdown).await;
        }
        let h2c = self.inner.server_options().is_some_and(|o| o.h2c);
        // Pingora's own HTTP/1 keep-alive loop (`ServerApp for HttpServerApp`), with each
        // request header read under our limits first.
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut reused = false;
        loop {
            match conn.read_header(&self.limits, reused, shutdown).await {
                Header::Ready => {}
                Header::Gone => return None,
                Header::TimedOut => {
                    self.rejected.header_timeout.inc();
                    conn.refuse(b"408 Request Timeout").await;
                    return None;
                }
                Header::TooLarge => {
                    self.rejected.header_too_large.inc();
                    conn.refuse(b"431 Request Header Fields Too Large").await;
                    return None;
                }
            }
            if !reused && h2c && conn.buf.starts_with(H2_PREFACE) {
                return ServerApp::process_new(&self.inner, conn, shutdown).await;
            }
            if let Some(fast) = &self.fast {
                let shutting_down = *shutdown.borrow();
                // Boxed: held inline, its ~1.3 KB would stay allocated with every idle
                // connection; boxed, only requests in progress hold it.
                match Box::pin(fast.serve(&mut conn, shutting_down)).await {
                    Served::Done { keep_alive: true } => {
                        reused = true;
                        continue;
                    }
                    Served::Done { keep_alive: false } => return None,
                    Served::NotHandled => {}
                }
            }
            let mut session = ServerSession::new_http1(conn);
            if *shutdown.borrow() {
                session.set_keepalive(None);
            } else {
                session.set_keepalive(Some(self.keepalive_secs()));
            }
            session.set_keepalive_reuses_remaining(
                self.inner
                    .server_options()
                    .and_then(|o| o.keepalive_request_limit),
            );
            if let Some(s) = settings.take() {
                s.apply_to_session(&mut session);
            }
            let (stream, next) = self
                .inner
                .process_new_http(session, shutdown)
                .await?
                .consume();
            settings = next;
            // The session hands back the stream it was given: always our `Conn`.
            conn = stream.into_any().downcast::<Conn>().ok()?;
            reused = true;
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

impl<A> Guarded<A> {
    fn keepalive_secs(&self) -> u64 {
        self.limits.idle_timeout.as_secs().max(1)
    }
}

/// One open connection counted against `max_connections` until dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// One open connection in the listener's gauge until dropped.
struct OpenGauge(IntGauge);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A downstream connection whose already-read bytes are served before the socket's.
pub struct Conn {
    inner: Stream,
    /// Read ahead of the parser: at least the current request's complete head.
    pub(crate) buf: BytesMut,
    /// The peer's address, looked up once (`None` until the first lookup).
    client_ip: Option<Option<IpAddr>>,
    /// No TLS: an idle connection can wait for its next request without a buffer.
    plain: bool,
    _slot: Option<Slot>,
    _open: OpenGauge,
}

/// Initial header buffer; grows up to `max_header_size` for the rare large header. 1 KiB
/// like nginx's `client_header_buffer_size`: it holds a typical request head, and what
/// thousands of briefly active connections leave behind in the allocator stays small.
const HEADER_BUF: usize = 1024;

/// How long a keep-alive connection keeps its header buffer while waiting for the next
/// request. Past it the buffer is freed, so thousands of idle connections cost a few
/// hundred bytes each rather than kilobytes (nginx frees its buffers the same way).
const HOT_IDLE: Duration = Duration::from_millis(250);

impl Conn {
    pub(crate) fn client_ip(&mut self) -> Option<IpAddr> {
        *self.client_ip.get_or_insert_with(|| {
            let digest = self.inner.get_socket_digest()?;
            Some(digest.peer_addr()?.as_inet()?.ip())
        })
    }

    async fn read_header(
        &mut self,
        limits: &Limits,
        reused: bool,
        shutdown: &ShutdownWatch,
    ) -> Header {
        if self.buf.capacity() == 0 {
            self.buf.reserve(HEADER_BUF);
        }
        // Between keep-alive requests the wait for the next one is idle time, not a
        // slow header: it gets `idle_timeout` and ends silently, or at once on shutdown
        // (Pingora also drops parked keep-alive connections then).
        if reused && self.buf.is_empty() {
            let mut shutdown = shutdown.clone();
            tokio::select! {
                arrived = self.wait_for_next_request(limits.idle_timeout) => {
                    if !arrived {
                        return Header::Gone;
                    }
                }
                _ = shutdown.changed() => return Header::Gone,
            }
        }
        let deadline = tokio::time::Instant::now() + limits.header_timeout;
        let mut scanned = 0;
        loop {
            if let Some(end) = find_header_end(&self.buf, scanned) {
                return if end > limits.max_header_size {
                    Header::TooLarge
                } else {
                    Header::Ready
                };
            }
            if self.buf.len() > limits.max_header_size {
                return Header::TooLarge;
            }
            // Re-scan the last 3 bytes: the terminator may straddle two reads.
            scanned = self.buf.len().saturating_sub(3);
            // Grow by doubling: a full BytesMut would otherwise add 64 bytes per read.
            if self.buf.capacity() - self.buf.len() < HEADER_BUF / 2 {
                self.buf.reserve(self.buf.len().max(HEADER_BUF));
            }
            match tokio::time::timeout_at(deadline, self.inner.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Header::Gone,
                // Nothing at all sent: a client that never spoke gets no answer (nginx).
                Err(_) if self.buf.is_empty() => return Header::Gone,
                Err(_) => return Header::TimedOut,
            }
        }
    }

    /// Waits up to `idle` for the first bytes of the next request; false when the
    /// connection closed or stayed silent. A busy keep-alive connection sends its next
    /// request within moments, so it waits with its buffer; one still idle after
    /// `HOT_IDLE` is parked without it (plain connections only: Pingora can wait for a
    /// first byte on those without a buffer of ours; TLS ones hold rustls' buffers anyway).
    async fn wait_for_next_request(&mut self, idle: Duration) -> bool {
        let hot = if self.plain { HOT_IDLE.min(idle) } else { idle };
        match tokio::time::timeout(hot, self.inner.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) => return n > 0,
            Ok(Err(_)) => return false,
            Err(_) if hot == idle => return false,
            Err(_) => {}
        }
        self.buf = BytesMut::new();
        let mut first = [0u8; 1];
        let parked = tokio::time::timeout(idle - hot, self.inner.try_peek(&mut first)).await;
        // The byte stays in the stream (`try_peek` puts it back).
        let arrived = matches!(parked, Ok(Ok(true)));
        if arrived {
            self.buf.reserve(HEADER_BUF);
        }
        arrived
    }

    async fn refuse(&mut self, status: &[u8]) {
        let mut resp = Vec::with_capacity(96);
        resp.extend_from_slice(b"HTTP/1.1 ");
        resp.extend_from_slice(status);
        resp.extend_from_slice(b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        if self.inner.write_all(&resp).await.is_ok() {
            let _ = self.inner.flush().await;
        }
        Shutdown::shutdown(self.inner.as_mut()).await;
    }
}

/// Offset just past the `\r\n\r\n` ending the header, searching from `from`.
fn find_header_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| from + p + 4)
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("inner", &self.inner)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buf.is_empty() {
            let n = out.remaining().min(this.buf.len());
            out.put_slice(&this.buf[..n]);
            this.buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Conn {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(self.inner.as_mut()).await
    }
}

impl UniqueID for Conn {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Conn {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Conn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Conn {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Conn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Conn {
    /// Pingora peeks for the h2c preface; serve it from the buffer, reading more if needed.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        while self.buf.len() < buf.len() {
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                break;
            }
        }
        let n = buf.len().min(self.buf.len());
        buf[..n].copy_from_slice(&self.buf[..n]);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::find_header_end;

    #[test]
    fn header_end_across_reads() {
        let b = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        assert_eq!(find_header_end(b, 0), Some(27));
        assert_eq!(find_header_end(b, 23), Some(27));
        assert_eq!(find_header_end(b, 24), None);
        assert_eq!(find_header_end(b"GET / HTTP/1.1\r\n", 0), None);
        assert_eq!(find_header_end(b"ab", 5), None);
    }
}
