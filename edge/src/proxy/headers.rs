//! Request/response header policy: the `X-Forwarded-*` family, `X-Real-IP` and
//! `X-Request-Id`, which Pingora leaves entirely to the application.

use std::borrow::Cow;

use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::Result;

pub const X_REQUEST_ID: &str = "x-request-id";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_REAL_IP: &str = "x-real-ip";

/// Longest client-supplied request id we pass on; longer ones are replaced, as are ids
/// with characters that would not survive a log line.
const MAX_REQUEST_ID: usize = 128;

/// Keeps the client's `X-Request-Id` (so a trace spans client → edge → app) when it is
/// sane, else makes a UUID v4.
pub fn request_id(req: &RequestHeader) -> HeaderValue {
    if let Some(v) = req.headers.get(X_REQUEST_ID) {
        if acceptable_request_id(v.as_bytes()) {
            return v.clone();
        }
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = new_request_uuid().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Whether a client's `X-Request-Id` is passed on rather than replaced.
pub fn acceptable_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(|c| c.is_ascii_graphic())
}

/// Appends a fresh request id (a UUID v4, as [`request_id`] makes) to `out`.
pub fn push_new_request_id(out: &mut Vec<u8>) {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = new_request_uuid().hyphenated().encode_lower(&mut buf);
    out.extend_from_slice(s.as_bytes());
}

/// A UUID v4 from a per-thread generator seeded once from the OS. `Uuid::new_v4` makes a
/// `getrandom` syscall for every id, i.e. on every request; an id only has to be unique,
/// not secret (clients may send their own anyway).
fn new_request_uuid() -> uuid::Uuid {
    use std::cell::Cell;
    thread_local! {
        // Two SplitMix64 counters; random seeds keep threads (and restarts) apart.
        static STATE: Cell<(u64, u64)> = Cell::new(uuid::Uuid::new_v4().as_u64_pair());
    }
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    let (a, b) = STATE.with(|s| {
        let (a, b) = s.get();
        let next = (a.wrapping_add(GAMMA), b.wrapping_add(GAMMA));
        s.set(next);
        next
    });
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&splitmix64(a).to_le_bytes());
    bytes[8..].copy_from_slice(&splitmix64(b).to_le_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// SplitMix64's output function: a bijection, so distinct counter values give distinct
/// outputs.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The declared `Content-Length`, `None` when absent or unreadable (the streamed body
/// is then counted instead).
pub fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The host the client asked for, lower-case and without port: `Host` for HTTP/1,
/// the `:authority` (in the URI) for HTTP/2.
pub fn request_host(req: &RequestHeader) -> Cow<'_, str> {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or("");
    normalize_host(raw)
}

/// A `Host` value as routes match it: lower-case, without port or IPv6 brackets.
pub fn normalize_host(raw: &str) -> Cow<'_, str> {
    let host = strip_port(raw);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets off, they never appear in route hosts.
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// `Location` for a plain-HTTP request redirected to HTTPS, same host and path.
pub fn https_location(req: &RequestHeader, host: &str, https_port: Option<u16>) -> HeaderValue {
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let location = match https_port {
        Some(port) => format!("https://{host}:{port}{path}"),
        None => format!("https://{host}{path}"),
    };
    HeaderValue::from_str(&location).unwrap_or_else(|_| HeaderValue::from_static("/"))
}

/// Adds what upstreams need to know about the original request. `X-Forwarded-For` is
/// appended to (like nginx's `$proxy_add_x_forwarded_for`), so it carries whatever the
/// client claimed; `X-Real-IP` is always the address the edge saw and is what apps should
/// trust.
pub fn add_forwarded(
    session: &Session,
    upstream: &mut RequestHeader,
    tls: bool,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    if let Some(ip) = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
    {
        // Formatted once and shared (not copied) by both headers when the client sent no
        // X-Forwarded-For, the usual case.
        let ip = ip.to_string();
        let mut xff = String::new();
        for v in upstream.headers.get_all(X_FORWARDED_FOR) {
            if let Ok(s) = v.to_str() {
                let s = s.trim();
                if !s.is_empty() {
                    xff.push_str(s);
                    xff.push_str(", ");
                }
            }
        }
        let real_ip = HeaderValue::from_maybe_shared(bytes::Bytes::from(ip))
            .map_err(|_| pingora::Error::explain(pingora::ErrorType::InternalError, "client ip"))?;
        if xff.is_empty() {
            upstream.insert_header(X_FORWARDED_FOR, real_ip.clone())?;
        } else {
            xff.push_str(real_ip.to_str().unwrap_or_default());
            upstream.insert_header(X_FORWARDED_FOR, xff)?;
        }
        upstream.insert_header(X_REAL_IP, real_ip)?;
    }
    upstream.insert_header(X_FORWARDED_PROTO, if tls { "https" } else { "http" })?;
    let host = session
        .req_header()
        .headers
        .get(http::header::HOST)
        .cloned()
        .or_else(|| {
            session
                .req_header()
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
    if let Some(host) = host {
        upstream.insert_header(X_FORWARDED_HOST, host)?;
    }
    if let Some(id) = request_id {
        upstream.insert_header(X_REQUEST_ID, id.clone())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/a?b=1", None).expect("request");
        r.insert_header("host", host).expect("host");
        r
    }

    #[test]
    fn host_is_normalised() {
        assert_eq!(
            request_host(&req("App.Onebook.Test:8443")),
            "app.onebook.test"
        );
        assert_eq!(request_host(&req("[::1]:8443")), "::1");
        assert_eq!(request_host(&req("localhost")), "localhost");
    }

    #[test]
    fn request_id_kept_or_generated() {
        let mut r = req("x");
        r.insert_header(X_REQUEST_ID, "abc-123").expect("id");
        assert_eq!(request_id(&r), "abc-123");
        r.insert_header(X_REQUEST_ID, "has space").expect("id");
        assert_eq!(request_id(&r).len(), 36);
    }

    #[test]
    fn generated_request_ids_are_distinct_v4_uuids() {
        let r = req("x");
        let ids: std::collections::HashSet<_> = (0..10_000)
            .map(|_| {
                let id = request_id(&r);
                let uuid = uuid::Uuid::parse_str(id.to_str().expect("ascii")).expect("uuid");
                assert_eq!(uuid.get_version(), Some(uuid::Version::Random));
                assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
                id
            })
            .collect();
        assert_eq!(ids.len(), 10_000);
        let other = std::thread::spawn(move || request_id(&req("x")))
            .join()
            .expect("thread");
        assert!(!ids.contains(&other));
    }

    #[test]
    fn redirect_location() {
        assert_eq!(
            https_location(&req("h"), "h", Some(8443)),
            "https://h:8443/a?b=1"
        );
        assert_eq!(https_location(&req("h"), "h", None), "https://h/a?b=1");
    }
}
