//! The one internal configuration model. Built only by `super::load` (which validates),
//! never deserialized directly: defaults, path resolution and cross-references are settled
//! here so the proxy never re-checks them per request.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer};

use crate::tls::CertSet;

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from, kept so a reload re-reads the same file.
    pub path: PathBuf,
    pub server: Server,
    pub admin: Admin,
    pub listeners: Vec<Listener>,
    /// In match order (see `proxy::routing`), not file order.
    pub routes: Vec<Route>,
    /// Sorted by name.
    pub pools: Vec<Pool>,
    pub access_log: Option<AccessLog>,
}

/// One structured line per request, written by a background thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    /// `None` is stdout.
    pub path: Option<PathBuf>,
    pub format: AccessLogFormat,
    /// Lines queued for the writer; beyond this, lines are dropped (and counted) rather
    /// than slowing requests down.
    pub buffer: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    /// Apache/nginx "combined", plus request time, upstream and request id.
    Combined,
}

impl Config {
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct Server {
    /// Worker threads per service (Pingora's default of 1 would cap the proxy at one core).
    pub threads: usize,
    /// How long Pingora waits after SIGTERM before stopping the runtimes; in-flight
    /// requests keep running meanwhile.
    pub grace_period: Duration,
    /// Upper bound for the runtimes to finish once stopped.
    pub shutdown_timeout: Duration,
    /// Holds the pid file and the upgrade socket; per instance so several edges (tests,
    /// blue/green) never collide on Pingora's `/tmp` defaults.
    pub state_dir: PathBuf,
    pub upstream_keepalive_pool: usize,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    /// When set, every endpoint but `/healthz` needs `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub tls: Option<ListenerTls>,
    pub h2: bool,
    /// `Strict-Transport-Security` value for responses on this (TLS) listener.
    pub hsts: Option<http::HeaderValue>,
    /// Largest request body accepted, in bytes; routes may override it.
    pub max_body_size: Option<u64>,
    /// Whole request header (HTTP/1) must arrive within this, else `408`.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Larger request headers get `431`.
    pub max_header_size: usize,
    /// Connections beyond this many open ones are closed at once.
    pub max_connections: Option<usize>,
    /// Plain HTTP/1.1 requests bypass Pingora's per-request session (`proxy::fast`).
    pub fast_path: bool,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Loaded and checked at config load, so a config that passes `edge check` cannot fail
    /// (or panic inside Pingora) on its certificates at startup.
    pub certs: CertSet,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Label in metrics and logs.
    pub name: String,
    pub host: Option<HostPattern>,
    pub path_prefix: String,
    pub pool: String,
    pub redirect_https: bool,
    /// Overrides the listener's `hsts` for this route (still only sent over TLS).
    pub hsts: Option<http::HeaderValue>,
    /// Overrides the listener's `max_body_size`.
    pub max_body_size: Option<u64>,
    /// Applied to the request sent upstream, after the edge's own `X-Forwarded-*` headers.
    pub request_headers: HeaderRules,
    /// Applied to the upstream's response before it reaches the client.
    pub response_headers: HeaderRules,
}

/// Per-route header edits: `remove` first, then `add` (which replaces any value already
/// present), so one rule can both drop a client's header and set the edge's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub add: Vec<(http::HeaderName, http::HeaderValue)>,
    pub remove: Vec<http::HeaderName>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Lower-case host without port.
    Exact(String),
    /// `*.example.com` stored as `.example.com`; matches exactly one more label or more
    /// (`a.example.com`, `a.b.example.com`), never `example.com` itself.
    Suffix(String),
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let host = raw.trim().to_ascii_lowercase();
        if host.is_empty() {
            return Err("must not be empty".into());
        }
        if host.contains(':') || host.contains('/') {
            return Err("must be a bare host name (no port, scheme or path)".into());
        }
        match host.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') && rest.len() > 1 && !rest[1..].contains('*') => {
                Ok(HostPattern::Suffix(rest.to_owned()))
            }
            Some(_) => Err("wildcards are only allowed as a leading `*.`".into()),
            None if host.contains('*') => {
                Err("wildcards are only allowed as a leading `*.`".into())
            }
            None => Ok(HostPattern::Exact(host)),
        }
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub servers: Vec<Upstream>,
    pub algorithm: Algorithm,
    /// Idle lifetime of a pooled upstream connection; zero disables reuse.
    pub keepalive: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    /// Whole request, retries included, from header received to upstream response;
    /// past it the client gets `504`.
    pub request_timeout: Option<Duration>,
    /// Extra attempts on other servers after a failed connect (never after a request was
    /// sent, so non-idempotent requests are never replayed).
    pub connect_retries: usize,
    /// Also retry GET/HEAD/OPTIONS/PUT/DELETE without a body on another server when the
    /// upstream fails after the request was sent (reset, early close) and nothing has
    /// reached the client yet. Bounded by `connect_retries`.
    pub retry_idempotent: bool,
    pub health_check: Option<HealthCheck>,
    pub protocol: UpstreamProtocol,
    /// Passive health (nginx's `max_fails`/`fail_timeout`); `None` when disabled.
    pub passive: Option<Passive>,
}

/// After `max_fails` failed attempts within `fail_timeout`, a server is skipped for
/// `fail_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passive {
    pub max_fails: u32,
    pub fail_timeout: Duration,
    /// Also count 5xx responses as failed attempts (off by default, like nginx).
    pub fail_on_5xx: bool,
}

/// Active probing of every server of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passed probes that bring a down server back.
    pub rise: usize,
    /// Consecutive failed probes that take an up server out.
    pub fall: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HealthCheckKind {
    Tcp,
    Http {
        method: http::Method,
        path: String,
        host: String,
        expect: StatusSet,
    },
}

/// Response statuses a health check accepts: inclusive ranges, e.g. `[(200, 299)]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatusSet(pub Vec<(u16, u16)>);

impl StatusSet {
    pub fn success() -> Self {
        StatusSet(vec![(200, 299)])
    }

    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }

    /// One item: `204`, `"2xx"` or `"200-399"`.
    fn parse_item(s: &str) -> Result<(u16, u16), String> {
        let s = s.trim();
        let bad = || format!("`{s}` is not a status like 200, \"2xx\" or \"200-399\"");
        let code = |t: &str| -> Result<u16, String> {
            match t.trim().parse::<u16>() {
                Ok(c) if (100..=599).contains(&c) => Ok(c),
                _ => Err(bad()),
            }
        };
        let lower = s.to_ascii_lowercase();
        if let Some(d) = lower.strip_suffix("xx") {
            let d: u16 = d.parse().map_err(|_| bad())?;
            if !(1..=5).contains(&d) {
                return Err(bad());
            }
            return Ok((d * 100, d * 100 + 99));
        }
        match s.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (code(lo)?, code(hi)?);
                if lo > hi {
                    return Err(format!("`{s}`: the range is empty"));
                }
                Ok((lo, hi))
            }
            None => code(s).map(|c| (c, c)),
        }
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for StatusSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Item {
            Code(i64),
            Text(String),
        }
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(Item),
            Many(Vec<Item>),
        }
        let items = match Raw::deserialize(d)? {
            Raw::One(i) => vec![i],
            Raw::Many(v) => v,
        };
        if items.is_empty() {
            return Err(de::Error::custom("must list at least one status"));
        }
        items
            .into_iter()
            .map(|i| match i {
                Item::Code(c) => StatusSet::parse_item(&c.to_string()),
                Item::Text(t) => StatusSet::parse_item(&t),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(StatusSet)
            .map_err(de::Error::custom)
    }
}

/// How the edge speaks to a pool's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    H1,
    /// HTTP/2 over cleartext with prior knowledge: many requests multiplexed on one
    /// connection per server.
    H2c,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub address: SocketAddr,
    pub weight: usize,
    /// Only used while no primary server is usable.
    pub backup: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Fewest in-flight requests relative to weight.
    LeastConn,
    /// Power of two choices: two weighted random picks, the one with fewer in-flight
    /// requests (relative to weight) wins.
    RandomTwo,
    /// Consistent hashing (ketama ring) on a request key, for session affinity that
    /// survives adding or removing a server.
    Ketama { key: HashKey },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Cookie(String),
    /// Lower-case header name.
    Header(String),
    ClientIp,
    Path,
}

impl FromStr for HashKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let named = |kind: &str, name: &str| {
            if name.is_empty() {
                Err(format!("`{kind}:` needs a name, e.g. `{kind}:session`"))
            } else {
                Ok(name.to_owned())
            }
        };
        match s.split_once(':') {
            Some(("cookie", name)) => Ok(HashKey::Cookie(named("cookie", name)?)),
            Some(("header", name)) => {
                let name = named("header", name)?.to_ascii_lowercase();
                http::HeaderName::from_str(&name)
                    .map_err(|_| format!("`{name}` is not a valid header name"))?;
                Ok(HashKey::Header(name))
            }
            None if s == "client_ip" => Ok(HashKey::ClientIp),
            None if s == "path" => Ok(HashKey::Path),
            _ => Err(format!(
                "unknown hash key `{s}`; expected `cookie:NAME`, `header:NAME`, `client_ip` or `path`"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for HashKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A duration written with a unit (`"500ms"`, `"5s"`, `"2m"`, `"1h"`), so a config never
/// leaves the reader guessing whether `30` meant seconds or milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// Whole seconds, rounded up, for Pingora settings that only take seconds.
    pub fn ceil_secs(self) -> u64 {
        let d = self.0;
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{s}` has no unit; write e.g. \"{s}s\" or \"{s}ms\""))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration like \"500ms\" or \"5s\""))?;
        let ms = match unit {
            "ms" => Some(n),
            "s" => n.checked_mul(1000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            _ => return Err(format!("unknown unit `{unit}` in `{s}`; use ms, s, m or h")),
        };
        ms.map(Duration::from_millis)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// A byte count: an integer, or a string with a binary unit (`"512k"`, `"10m"`, `"1g"`),
/// like nginx's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let (num, mult) = match t.as_bytes().last() {
            Some(b'k') => (&t[..t.len() - 1], 1u64 << 10),
            Some(b'm') => (&t[..t.len() - 1], 1 << 20),
            Some(b'g') => (&t[..t.len() - 1], 1 << 30),
            _ => (t.as_str(), 1),
        };
        num.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .map(Size)
            .ok_or_else(|| format!("`{s}` is not a size like 1048576, \"512k\", \"10m\" or \"1g\""))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(Size(n)),
            Raw::Text(s) => s.parse().map_err(de::Error::custom),
        }
    }
}
