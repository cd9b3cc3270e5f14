//! Request and response heads for the fast path: parsed in place with `httparse`, and the
//! heads sent on written straight into reused buffers (no header map, no per-header
//! allocation), with the same header policy as the Pingora path (`proxy::headers` and
//! the route's header rules).

use crate::config::model::HeaderRules;

/// Header slots per parse. A request or response with more headers is left to Pingora
/// (request) or refused as `502` (response), never truncated.
pub const MAX_HEADERS: usize = 96;

/// A request the fast path may take: HTTP/1.1, origin-form target, one `Host`, a body
/// only by `Content-Length`, and nothing that changes the connection (upgrade, expect).
pub struct Request<'h, 'b> {
    pub method: &'b str,
    pub target: &'b str,
    pub headers: &'h [httparse::Header<'b>],
    /// Bytes of the head, `\r\n\r\n` included.
    pub head_len: usize,
    pub host: &'b [u8],
    pub content_length: u64,
    /// The client asked to close after this response.
    pub close: bool,
}

impl Request<'_, '_> {
    /// Path without the query, for route matching.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target, |(path, _)| path)
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// RFC 9110 idempotent methods: safe to send again after a failed attempt.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
    }
}

/// Parses `buf` (which holds a complete head) and says whether the fast path may take it.
/// `None` leaves the request to Pingora, which gives malformed ones their `400`.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut [httparse::Header<'b>],
) -> Option<Request<'h, 'b>> {
    let mut req = httparse::Request::new(slots);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    if req.version != Some(1) {
        return None;
    }
    let method = req.method?;
    let target = req.path?;
    if method == "CONNECT" || !target.starts_with('/') {
        return None;
    }
    let headers: &'h [httparse::Header<'b>] = req.headers;
    let mut host = None;
    let mut content_length = None;
    let mut close = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if host.replace(h.value).is_some() {
                return None;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let len = parse_decimal(h.value)?;
            if content_length.replace(len).is_some() {
                return None;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return None;
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return None;
        }
    }
    Some(Request {
        method,
        target,
        headers,
        head_len,
        host: host?,
        content_length: content_length.unwrap_or(0),
        close,
    })
}

/// What the edge adds to every request it forwards (see `proxy::headers::add_forwarded`).
pub struct Forwarded<'a> {
    pub client_ip: Option<&'a str>,
    pub https: bool,
    pub request_id: &'a [u8],
}

/// Hop-by-hop headers: they describe the client's connection, not the upstream's.
fn is_hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

const EDGE_REQUEST_HEADERS: [&str; 5] = [
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

fn named_in(name: &str, rules: &HeaderRules) -> bool {
    rules
        .remove
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_str()))
        || rules
            .add
            .iter()
            .any(|(n, _)| name.eq_ignore_ascii_case(n.as_str()))
}

/// Writes the head sent upstream: the client's request line and headers, minus hop-by-hop
/// ones, then the edge's `X-Forwarded-*` family, then the route's rules (`remove` also
/// drops the edge's own headers and `add` replaces them, as on the Pingora path).
pub fn write_upstream_head(
    out: &mut Vec<u8>,
    req: &Request<'_, '_>,
    fwd: &Forwarded<'_>,
    rules: &HeaderRules,
) {
    out.clear();
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers {
        if is_hop_by_hop(h.name)
            || EDGE_REQUEST_HEADERS
                .iter()
                .any(|e| h.name.eq_ignore_ascii_case(e))
            || named_in(h.name, rules)
        {
            continue;
        }
        put_header(out, h.name.as_bytes(), h.value);
    }
    let edge = |out: &mut Vec<u8>, name: &str, value: &[&[u8]]| {
        if !named_in(name, rules) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            for part in value {
                out.extend_from_slice(part);
            }
            out.extend_from_slice(b"\r\n");
        }
    };
    if let Some(ip) = fwd.client_ip {
        // Appended to what the client claimed, like nginx's `$proxy_add_x_forwarded_for`.
        let mut claimed = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            .map(|h| h.value.trim_ascii())
            .filter(|v| !v.is_empty() && std::str::from_utf8(v).is_ok())
            .peekable();
        if claimed.peek().is_none() {
            edge(out, "x-forwarded-for", &[ip.as_bytes()]);
        } else if !named_in("x-forwarded-for", rules) {
            out.extend_from_slice(b"x-forwarded-for: ");
            for v in claimed {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(ip.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        edge(out, "x-real-ip", &[ip.as_bytes()]);
    }
    edge(
        out,
        "x-forwarded-proto",
        &[if fwd.https { b"https" } else { b"http" }],
    );
    edge(out, "x-forwarded-host", &[req.host]);
    edge(out, "x-request-id", &[fwd.request_id]);
    for (name, value) in &rules.add {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes; the client connection then closes too.
    UntilClose,
}

/// What the proxy needs from a parsed upstream response head.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head_len: usize,
    pub framing: Framing,
    /// The upstream keeps the connection open after this response.
    pub keep_alive: bool,
    /// 1xx other than 101: skipped, the real response follows.
    pub interim: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadResponse {
    #[error("upstream response head is malformed: {0}")]
    Malformed(httparse::Error),
    #[error("upstream response has conflicting Content-Length headers")]
    ContentLength,
    #[error("upstream switched protocols without being asked to")]
    Upgrade,
}

/// Parses an upstream response head; `Ok(None)` means more bytes are needed.
pub fn parse_response(buf: &[u8], head_request: bool) -> Result<Option<Response>, BadResponse> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(BadResponse::Malformed(e)),
    };
    let status = resp.code.unwrap_or(0);
    let http11 = resp.version == Some(1);
    let mut keep_alive = http11;
    let mut chunked = false;
    let mut other_coding = false;
    let mut length = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a final `chunked` delimits the body; anything else runs to close.
            chunked = tokens(h.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            other_coding |= !chunked;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let len = parse_decimal(h.value).ok_or(BadResponse::ContentLength)?;
            if length.replace(len).is_some_and(|prev| prev != len) {
                return Err(BadResponse::ContentLength);
            }
        }
    }
    if status == 101 {
        return Err(BadResponse::Upgrade);
    }
    let interim = (100..200).contains(&status);
    let framing = if interim || head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked && !other_coding {
        Framing::Chunked
    } else if other_coding {
        Framing::UntilClose
    } else if let Some(len) = length {
        Framing::Length(len)
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    Ok(Some(Response {
        status,
        head_len,
        framing,
        keep_alive,
        interim,
    }))
}

/// What the edge sets on every response it passes on (see `EdgeProxy::response_filter`).
pub struct Decoration<'a> {
    pub request_id: &'a [u8],
    pub hsts: Option<&'a [u8]>,
    pub rules: &'a HeaderRules,
    /// The client connection closes after this response.
    pub close: bool,
}

/// Writes the head sent to the client: the upstream's status line and headers minus
/// hop-by-hop ones, then `X-Request-Id`, HSTS and the route's response rules.
pub fn write_downstream_head(out: &mut Vec<u8>, upstream_head: &[u8], deco: &Decoration<'_>) {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    // Parsed successfully once already by `parse_response`.
    if !matches!(resp.parse(upstream_head), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let status = resp.code.unwrap_or(502);
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, status);
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        if is_hop_by_hop(h.name)
            || h.name.eq_ignore_ascii_case("x-request-id")
            || (deco.hsts.is_some() && h.name.eq_ignore_ascii_case("strict-transport-security"))
            || named_in(h.name, deco.rules)
        {
            continue;
        }
        put_header(out, h.name.as_bytes(), h.value);
    }
    let edge = |out: &mut Vec<u8>, name: &str, value: &[u8]| {
        if !named_in(name, deco.rules) {
            put_header(out, name.as_bytes(), value);
        }
    };
    edge(out, "x-request-id", deco.request_id);
    if let Some(hsts) = deco.hsts {
        edge(out, "strict-transport-security", hsts);
    }
    for (name, value) in &deco.rules.add {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    // Stated either way, as Pingora does.
    out.extend_from_slice(if deco.close {
        b"connection: close\r\n"
    } else {
        b"connection: keep-alive\r\n"
    });
    out.extend_from_slice(b"\r\n");
}

/// A response the edge makes itself when the upstream failed it (`502`, `504`); the
/// connection closes after it, as on the Pingora path.
pub fn write_error_response(out: &mut Vec<u8>, status: u16, request_id: &[u8]) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, status);
    out.push(b' ');
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: 0\r\ncache-control: private, no-store\r\n");
    put_header(out, b"x-request-id", request_id);
    out.extend_from_slice(b"connection: close\r\n\r\n");
}

fn push_status(out: &mut Vec<u8>, status: u16) {
    let status = status.min(999);
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
}

/// Comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// A non-negative decimal such as a `Content-Length`; `None` for anything else.
fn parse_decimal(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Option<(String, String, u64, bool, usize)> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let r = parse_request(raw, &mut slots)?;
        Some((
            r.method.to_owned(),
            r.path().to_owned(),
            r.content_length,
            r.close,
            r.head_len,
        ))
    }

    #[test]
    fn plain_requests_are_taken() {
        let raw = b"POST /a/b?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(
            parse(raw),
            Some(("POST".into(), "/a/b".into(), 3, false, raw.len() - 3))
        );
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n";
        assert_eq!(parse(raw).map(|p| p.3), Some(true));
    }

    #[test]
    fn anything_unusual_is_left_to_pingora() {
        for raw in [
            &b"GET / HTTP/1.0\r\nHost: h\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(
                parse(raw).is_none(),
                "{:?} must go to Pingora",
                String::from_utf8_lossy(raw)
            );
        }
    }

    fn upstream_head(raw: &[u8], ip: Option<&str>, rules: &HeaderRules) -> String {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let req = parse_request(raw, &mut slots).expect("fast path request");
        let mut out = Vec::new();
        let fwd = Forwarded {
            client_ip: ip,
            https: true,
            request_id: b"rid",
        };
        write_upstream_head(&mut out, &req, &fwd, rules);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn upstream_head_carries_the_forwarded_family() {
        let raw = b"GET /p?q HTTP/1.1\r\nHost: App.Test:8443\r\nConnection: keep-alive\r\nX-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 6.6.6.6\r\nAccept: */*\r\n\r\n";
        let head = upstream_head(raw, Some("10.0.0.1"), &HeaderRules::default());
        assert_eq!(
            head,
            "GET /p?q HTTP/1.1\r\nHost: App.Test:8443\r\nAccept: */*\r\n\
             x-forwarded-for: 1.2.3.4, 10.0.0.1\r\nx-real-ip: 10.0.0.1\r\n\
             x-forwarded-proto: https\r\nx-forwarded-host: App.Test:8443\r\n\
             x-request-id: rid\r\n\r\n"
        );
    }

    #[test]
    fn route_rules_apply_after_the_edge_headers() {
        let rules = HeaderRules {
            add: vec![(
                http::HeaderName::from_static("x-real-ip"),
                http::HeaderValue::from_static("fixed"),
            )],
            remove: vec![
                http::HeaderName::from_static("accept"),
                http::HeaderName::from_static("x-forwarded-host"),
            ],
        };
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n";
        let head = upstream_head(raw, Some("10.0.0.1"), &rules);
        assert_eq!(
            head,
            "GET / HTTP/1.1\r\nHost: h\r\nx-forwarded-for: 10.0.0.1\r\n\
             x-forwarded-proto: https\r\nx-request-id: rid\r\nx-real-ip: fixed\r\n\r\n"
        );
    }

    #[test]
    fn response_framing() {
        let framing = |raw: &[u8], head: bool| {
            parse_response(raw, head)
                .expect("valid")
                .map(|r| (r.framing, r.keep_alive))
        };
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            Some((Framing::Length(5), true))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Some((Framing::Empty, true))
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                false
            ),
            Some((Framing::Chunked, false))
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\n\r\n", false),
            Some((Framing::UntilClose, false))
        );
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            Some((Framing::Empty, true))
        );
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\nContent-Le", false), None);
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .err(),
            Some(BadResponse::ContentLength)
        );
    }

    #[test]
    fn downstream_head_is_decorated() {
        let rules = HeaderRules {
            add: vec![(
                http::HeaderName::from_static("x-frame-options"),
                http::HeaderValue::from_static("DENY"),
            )],
            remove: vec![http::HeaderName::from_static("server")],
        };
        let deco = Decoration {
            request_id: b"rid",
            hsts: Some(b"max-age=60"),
            rules: &rules,
            close: true,
        };
        let mut out = Vec::new();
        write_downstream_head(
            &mut out,
            b"HTTP/1.1 201 Created\r\nServer: x\r\nConnection: keep-alive\r\nX-Request-Id: up\r\nContent-Length: 2\r\n\r\n",
            &deco,
        );
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nx-request-id: rid\r\n\
             strict-transport-security: max-age=60\r\nx-frame-options: DENY\r\n\
             connection: close\r\n\r\n"
        );
    }
}
