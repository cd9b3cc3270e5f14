//! Configuration: `toml` is the file format, `model` the validated internal form.
//!
//! Relative paths in a config file (certificates, `state_dir`) resolve against the parent
//! of the directory holding the file — the repository root for `configs/*.toml` — so the
//! edge behaves the same whatever directory it is started from.

pub mod model;
mod toml;

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use self::model::{
    AccessLog, AccessLogFormat, Admin, Algorithm, Config, Duration, HeaderRules, HealthCheck,
    HealthCheckKind, HostPattern, Listener, ListenerTls, Passive, Pool, Route, Server, StatusSet,
    Upstream, UpstreamProtocol,
};
use self::toml::{AccessLogFormatToml, AlgorithmToml, File, HealthCheckKindToml, ProtocolToml};
use crate::error::ConfigError;
use crate::tls::{load_certified_key, CertSet};

pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9901));
const DEFAULT_STATE_DIR: &str = ".stack/edge";
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(3);
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_KEEPALIVE_POOL: usize = 128;
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_FAILS: u32 = 1;
const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Upper bound for `rise`/`fall`: beyond it a server would take minutes to change state.
const MAX_RISE_FALL: usize = 100;
/// Headers a route may not set or remove: they frame the message or belong to one hop,
/// and Pingora manages them itself.
const RESERVED_HEADERS: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];
/// Pingora's own cap on `upstream_peer` retries per request.
const MAX_CONNECT_RETRIES: usize = 16;
/// Pingora's weighted selectors expand each server `weight` times into a u16-indexed
/// table (and assert on overflow), so both are bounded well below that.
const MAX_WEIGHT: usize = 1000;
const MAX_SERVERS: usize = 1000;
const DEFAULT_ACCESS_LOG_BUFFER: usize = 8192;
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_HEADER_SIZE: usize = 32 * 1024;
/// Pingora's own parser limit; above it Pingora answers 400 before our 431 could.
const MAX_HEADER_SIZE: usize = 1024 * 1024 - 1;

/// Reads, parses and validates `path`, loading the TLS material it names.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        key: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    let base = base_dir(path);
    parse(&src, path, &base)
}

/// The directory relative paths resolve against (see the module docs).
pub fn base_dir(config_path: &Path) -> PathBuf {
    let abs = std::fs::canonicalize(config_path).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|cwd| cwd.join(config_path))
            .unwrap_or_else(|_| config_path.to_path_buf())
    });
    let dir = abs.parent().unwrap_or(Path::new("/"));
    dir.parent().unwrap_or(dir).to_path_buf()
}

/// Parses config text; `path` is only used in diagnostics and kept in the model.
pub fn parse(src: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
    parse_with(src, path, base, &load_certified_key)
}

type CertLoader<'a> = &'a dyn Fn(&Path, &Path) -> crate::Result<Arc<CertifiedKey>>;

/// `parse` with the certificate loading swapped out, so sample configs naming production
/// paths can be checked in tests without those files.
fn parse_with(
    src: &str,
    path: &Path,
    base: &Path,
    load_cert: CertLoader<'_>,
) -> Result<Config, ConfigError> {
    let cx = Cx {
        src,
        path,
        base,
        load_cert,
    };
    let de = ::toml::Deserializer::parse(src).map_err(|e| cx.toml_error(String::new(), e))?;
    let file: File = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = clean_path(&e.path().to_string());
        cx.toml_error(key, e.into_inner())
    })?;
    cx.convert(file)
}

struct Cx<'a> {
    src: &'a str,
    path: &'a Path,
    base: &'a Path,
    load_cert: CertLoader<'a>,
}

impl Cx<'_> {
    fn err(
        &self,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        msg: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            line: span.map(|s| line_of(self.src, s.start)),
            key: key.into(),
            message: msg.into(),
        }
    }

    fn toml_error(&self, key: String, e: ::toml::de::Error) -> ConfigError {
        self.err(key, e.span(), e.message().trim_end().to_owned())
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn convert(&self, file: File) -> Result<Config, ConfigError> {
        let server = self.server(file.server)?;
        let token = match file.admin.token {
            None => None,
            Some(t) => {
                let v = t.get_ref().trim();
                if v.is_empty() || http::HeaderValue::from_str(v).is_err() {
                    return Err(self.err(
                        "admin.token",
                        Some(t.span()),
                        "must be non-empty visible ASCII (it is compared with a Bearer header)",
                    ));
                }
                Some(v.to_owned())
            }
        };
        let admin = Admin {
            listen: file
                .admin
                .listen
                .map_or(DEFAULT_ADMIN_LISTEN, |l| *l.get_ref()),
            token,
        };
        let listeners = self.listeners(file.listener, &admin)?;
        let pools = self.pools(file.pool)?;
        let routes = self.routes(file.route, &pools, &listeners)?;
        let access_log = match file.access_log {
            None => None,
            Some(a) => Some(self.access_log(a)?),
        };
        Ok(Config {
            path: self.path.to_path_buf(),
            server,
            admin,
            listeners,
            routes,
            pools,
            access_log,
        })
    }

    fn access_log(&self, a: toml::AccessLogToml) -> Result<AccessLog, ConfigError> {
        let path = match a.path {
            None => None,
            Some(p) if p.get_ref().as_os_str() == "stdout" => None,
            Some(p) if p.get_ref().as_os_str().is_empty() => {
                return Err(self.err("access_log.path", Some(p.span()), "must not be empty"))
            }
            Some(p) => Some(self.resolve(p.get_ref())),
        };
        let buffer = match a.buffer {
            None => DEFAULT_ACCESS_LOG_BUFFER,
            Some(b) if *b.get_ref() == 0 => {
                return Err(self.err("access_log.buffer", Some(b.span()), "must be at least 1"))
            }
            Some(b) => *b.get_ref(),
        };
        Ok(AccessLog {
            path,
            format: match a.format.unwrap_or(AccessLogFormatToml::Json) {
                AccessLogFormatToml::Json => AccessLogFormat::Json,
                AccessLogFormatToml::Combined => AccessLogFormat::Combined,
            },
            buffer,
        })
    }

    /// `Strict-Transport-Security` as written, checked to at least carry a `max-age`.
    fn hsts(
        &self,
        key: String,
        raw: Option<::toml::Spanned<String>>,
    ) -> Result<Option<http::HeaderValue>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let v = raw.get_ref().trim();
        let has_max_age = v
            .split(';')
            .any(|d| d.trim().to_ascii_lowercase().starts_with("max-age="));
        match http::HeaderValue::from_str(v) {
            Ok(h) if has_max_age => Ok(Some(h)),
            _ => Err(self.err(
                key,
                Some(raw.span()),
                "must be a Strict-Transport-Security value with max-age, e.g. \"max-age=31536000; includeSubDomains\"",
            )),
        }
    }

    fn server(&self, s: toml::ServerToml) -> Result<Server, ConfigError> {
        let threads = match s.threads {
            Some(n) if *n.get_ref() == 0 => {
                return Err(self.err("server.threads", Some(n.span()), "must be at least 1"))
            }
            Some(n) => *n.get_ref(),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let state_dir = s
            .state_dir
            .map(|d| self.resolve(d.get_ref()))
            .unwrap_or_else(|| self.base.join(DEFAULT_STATE_DIR));
        Ok(Server {
            threads,
            grace_period: s.grace_period.unwrap_or(DEFAULT_GRACE_PERIOD),
            shutdown_timeout: s.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            state_dir,
            upstream_keepalive_pool: s.upstream_keepalive_pool.unwrap_or(DEFAULT_KEEPALIVE_POOL),
        })
    }

    fn listeners(
        &self,
        raw: Vec<toml::ListenerToml>,
        admin: &Admin,
    ) -> Result<Vec<Listener>, ConfigError> {
        if raw.is_empty() {
            return Err(self.err("listener", None, "at least one [[listener]] is required"));
        }
        let mut names = HashSet::new();
        let mut addrs = HashSet::from([admin.listen]);
        let mut out = Vec::with_capacity(raw.len());
        for (i, l) in raw.into_iter().enumerate() {
            let key = |k: &str| format!("listener[{i}].{k}");
            let name = l.name.get_ref().trim().to_owned();
            if name.is_empty() {
                return Err(self.err(key("name"), Some(l.name.span()), "must not be empty"));
            }
            if !names.insert(name.clone()) {
                return Err(self.err(
                    key("name"),
                    Some(l.name.span()),
                    format!("duplicate listener name `{name}`"),
                ));
            }
            let address = *l.address.get_ref();
            if !addrs.insert(address) {
                return Err(self.err(
                    key("address"),
                    Some(l.address.span()),
                    format!("{address} is already used by another listener or the admin API"),
                ));
            }
            let tls = match l.tls {
                None => None,
                Some(t) => {
                    let cert = self.resolve(t.cert.get_ref());
                    let keyp = self.resolve(t.key.get_ref());
                    let mut loaded = vec![self.load_pair(&t.cert, &t.key, &key("tls"))?];
                    for (j, pair) in t.sni.iter().enumerate() {
                        let prefix = key(&format!("tls.sni[{j}]"));
                        loaded.push(self.load_pair(&pair.cert, &pair.key, &prefix)?);
                    }
                    let certs = CertSet::new(loaded).ok_or_else(|| {
                        self.err(key("tls.cert"), Some(t.cert.span()), "no certificate")
                    })?;
                    Some(ListenerTls {
                        cert,
                        key: keyp,
                        certs,
                    })
                }
            };
            let h2 = l.h2.map(|h| *h.get_ref()).unwrap_or(tls.is_some());
            let hsts_span = l.hsts.as_ref().map(|h| h.span());
            let hsts = self.hsts(key("hsts"), l.hsts)?;
            if hsts.is_some() && tls.is_none() {
                return Err(self.err(
                    key("hsts"),
                    hsts_span,
                    "HSTS is only sent over TLS; set it on a listener with `tls`",
                ));
            }
            let header_timeout = l.header_timeout.unwrap_or(DEFAULT_HEADER_TIMEOUT);
            let idle_timeout = l.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
            if header_timeout.0.is_zero() || idle_timeout.0.is_zero() {
                return Err(self.err(
                    key(if header_timeout.0.is_zero() {
                        "header_timeout"
                    } else {
                        "idle_timeout"
                    }),
                    Some(l.name.span()),
                    "must be greater than 0",
                ));
            }
            let max_header_size = match l.max_header_size {
                None => DEFAULT_MAX_HEADER_SIZE,
                Some(s) => match usize::try_from(s.get_ref().0) {
                    Ok(n) if (1024..=MAX_HEADER_SIZE).contains(&n) => n,
                    _ => {
                        return Err(self.err(
                            key("max_header_size"),
                            Some(s.span()),
                            format!("must be between 1k and {MAX_HEADER_SIZE} bytes"),
                        ))
                    }
                },
            };
            let max_connections = match l.max_connections {
                Some(n) if *n.get_ref() == 0 => {
                    return Err(self.err(
                        key("max_connections"),
                        Some(n.span()),
                        "must be at least 1",
                    ))
                }
                other => other.map(|n| *n.get_ref()),
            };
            out.push(Listener {
                name,
                address,
                tls,
                h2,
                hsts,
                max_body_size: l.max_body_size.map(|s| s.0),
                header_timeout,
                idle_timeout,
                max_header_size,
                max_connections,
                fast_path: l.fast_path.unwrap_or(true),
            });
        }
        Ok(out)
    }

    /// Loads one certificate/key pair, blaming `PREFIX.cert` or `PREFIX.key` on failure.
    fn load_pair(
        &self,
        cert: &::toml::Spanned<PathBuf>,
        key: &::toml::Spanned<PathBuf>,
        prefix: &str,
    ) -> Result<Arc<CertifiedKey>, ConfigError> {
        let (cert_path, key_path) = (self.resolve(cert.get_ref()), self.resolve(key.get_ref()));
        (self.load_cert)(&cert_path, &key_path).map_err(|e| {
            // Errors name the file at fault; blame the key only when it is the key.
            let (k, span) = if e.to_string().starts_with(&key_path.display().to_string()) {
                (format!("{prefix}.key"), key.span())
            } else {
                (format!("{prefix}.cert"), cert.span())
            };
            self.err(k, Some(span), e.to_string())
        })
    }

    fn pools(&self, raw: BTreeMap<String, toml::PoolToml>) -> Result<Vec<Pool>, ConfigError> {
        if raw.is_empty() {
            return Err(self.err("pool", None, "at least one [pool.NAME] is required"));
        }
        let mut out = Vec::with_capacity(raw.len());
        for (name, p) in raw {
            let key = |k: &str| format!("pool.{name}.{k}");
            let servers_span = p.servers.span();
            let entries = p.servers.into_inner();
            if entries.is_empty() {
                return Err(self.err(
                    key("servers"),
                    Some(servers_span),
                    "must list at least one server",
                ));
            }
            if entries.len() > MAX_SERVERS {
                return Err(self.err(
                    key("servers"),
                    Some(servers_span),
                    format!("at most {MAX_SERVERS} servers"),
                ));
            }
            let mut seen = HashSet::new();
            let mut servers = Vec::with_capacity(entries.len());
            for (j, s) in entries.into_iter().enumerate() {
                let address = *s.address.get_ref();
                if !seen.insert(address) {
                    return Err(self.err(
                        format!("pool.{name}.servers[{j}].address"),
                        Some(s.address.span()),
                        format!("{address} is listed twice"),
                    ));
                }
                let weight = match s.weight {
                    None => 1,
                    Some(w) if *w.get_ref() == 0 => {
                        return Err(self.err(
                            format!("pool.{name}.servers[{j}].weight"),
                            Some(w.span()),
                            "must be at least 1 (remove the server to take it out)",
                        ))
                    }
                    Some(w) if *w.get_ref() > MAX_WEIGHT => {
                        return Err(self.err(
                            format!("pool.{name}.servers[{j}].weight"),
                            Some(w.span()),
                            format!("must be at most {MAX_WEIGHT}"),
                        ))
                    }
                    Some(w) => *w.get_ref(),
                };
                servers.push(Upstream {
                    address,
                    weight,
                    backup: s.backup.unwrap_or(false),
                });
            }
            if servers.iter().all(|s| s.backup) {
                return Err(self.err(
                    key("servers"),
                    Some(servers_span),
                    "every server is a backup; at least one must be a primary",
                ));
            }
            let algo = p
                .algorithm
                .as_ref()
                .map_or(AlgorithmToml::RoundRobin, |a| *a.get_ref());
            let algorithm = match (algo, p.hash_key) {
                (AlgorithmToml::RoundRobin, None) => Algorithm::RoundRobin,
                (AlgorithmToml::LeastConn, None) => Algorithm::LeastConn,
                (AlgorithmToml::RandomTwo, None) => Algorithm::RandomTwo,
                (
                    AlgorithmToml::RoundRobin | AlgorithmToml::LeastConn | AlgorithmToml::RandomTwo,
                    Some(k),
                ) => {
                    return Err(self.err(key("hash_key"), Some(k.span()), "only used with algorithm = \"ketama\""))
                }
                (AlgorithmToml::Ketama, Some(k)) => Algorithm::Ketama { key: k.into_inner() },
                (AlgorithmToml::Ketama, None) => {
                    return Err(self.err(
                        key("hash_key"),
                        p.algorithm.as_ref().map(|a| a.span()),
                        "algorithm = \"ketama\" needs a hash_key (cookie:NAME, header:NAME, client_ip or path)",
                    ))
                }
            };
            // By default every other server gets one try, up to the cap: a pool of
            // 40 servers is valid without spelling out connect_retries.
            let connect_retries = p
                .connect_retries
                .unwrap_or((servers.len() - 1).min(MAX_CONNECT_RETRIES));
            if connect_retries > MAX_CONNECT_RETRIES {
                return Err(self.err(
                    key("connect_retries"),
                    None,
                    format!("must be at most {MAX_CONNECT_RETRIES}"),
                ));
            }
            let connect_timeout = p.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
            if connect_timeout.0.is_zero() {
                return Err(self.err(key("connect_timeout"), None, "must be greater than 0"));
            }
            out.push(Pool {
                name: name.clone(),
                servers,
                algorithm,
                keepalive: p.keepalive.unwrap_or(DEFAULT_KEEPALIVE),
                connect_timeout,
                read_timeout: match p.read_timeout {
                    Some(d) if d.0.is_zero() => None,
                    Some(d) => Some(d),
                    None => Some(DEFAULT_READ_TIMEOUT),
                },
                write_timeout: p.write_timeout.filter(|d| !d.0.is_zero()),
                request_timeout: p.request_timeout.filter(|d| !d.0.is_zero()),
                connect_retries,
                retry_idempotent: p.retry_idempotent.unwrap_or(true),
                health_check: match p.health_check {
                    None => None,
                    Some(h) => Some(self.health_check(&name, h)?),
                },
                protocol: match p.protocol {
                    None | Some(ProtocolToml::H1) => UpstreamProtocol::H1,
                    Some(ProtocolToml::H2c) => UpstreamProtocol::H2c,
                },
                passive: match p.max_fails.unwrap_or(DEFAULT_MAX_FAILS) {
                    0 if p.fail_on_5xx == Some(true) => {
                        return Err(self.err(
                            key("fail_on_5xx"),
                            None,
                            "counts failures for max_fails, which is 0 (passive health off)",
                        ))
                    }
                    0 => None,
                    max_fails => {
                        let fail_timeout = p.fail_timeout.unwrap_or(DEFAULT_FAIL_TIMEOUT);
                        if fail_timeout.0.is_zero() {
                            return Err(self.err(
                                key("fail_timeout"),
                                None,
                                "must be greater than 0 (use max_fails = 0 to disable)",
                            ));
                        }
                        Some(Passive {
                            max_fails,
                            fail_timeout,
                            fail_on_5xx: p.fail_on_5xx.unwrap_or(false),
                        })
                    }
                },
            });
        }
        Ok(out)
    }

    fn health_check(
        &self,
        pool: &str,
        raw: ::toml::Spanned<toml::HealthCheckToml>,
    ) -> Result<HealthCheck, ConfigError> {
        let span = raw.span();
        let h = raw.into_inner();
        let key = |k: &str| format!("pool.{pool}.health_check.{k}");
        let kind = match h.kind.unwrap_or(HealthCheckKindToml::Tcp) {
            HealthCheckKindToml::Tcp => {
                if h.path.is_some()
                    || h.host.is_some()
                    || h.method.is_some()
                    || h.expect_status.is_some()
                {
                    return Err(self.err(
                        key("kind"),
                        Some(span),
                        "`method`, `path`, `host` and `expect_status` need kind = \"http\"",
                    ));
                }
                HealthCheckKind::Tcp
            }
            HealthCheckKindToml::Http => {
                let method = match h.method {
                    None => http::Method::GET,
                    Some(m) => match m.trim().to_ascii_uppercase().as_str() {
                        "GET" => http::Method::GET,
                        "HEAD" => http::Method::HEAD,
                        "OPTIONS" => http::Method::OPTIONS,
                        _ => {
                            return Err(self.err(
                                key("method"),
                                Some(span),
                                format!("`{m}`: use \"GET\", \"HEAD\" or \"OPTIONS\""),
                            ))
                        }
                    },
                };
                let path = h.path.unwrap_or_else(|| "/".to_owned());
                if !path.starts_with('/') || path.parse::<http::Uri>().is_err() {
                    return Err(self.err(
                        key("path"),
                        Some(span),
                        "must be a path starting with `/`",
                    ));
                }
                let host = h.host.unwrap_or_else(|| "localhost".to_owned());
                if http::HeaderValue::from_str(&host).is_err() || host.is_empty() {
                    return Err(self.err(key("host"), Some(span), "not a valid Host header value"));
                }
                HealthCheckKind::Http {
                    method,
                    path,
                    host,
                    expect: h.expect_status.unwrap_or_else(StatusSet::success),
                }
            }
        };
        let interval = h.interval.unwrap_or(DEFAULT_HEALTH_INTERVAL);
        let timeout = h.timeout.unwrap_or(DEFAULT_HEALTH_TIMEOUT);
        if interval.0 < std::time::Duration::from_millis(100) {
            return Err(self.err(key("interval"), Some(span), "must be at least 100ms"));
        }
        if timeout.0.is_zero() {
            return Err(self.err(key("timeout"), Some(span), "must be greater than 0"));
        }
        let count = |k: &str, v: Option<usize>| match v {
            None => Ok(1),
            Some(n) if (1..=MAX_RISE_FALL).contains(&n) => Ok(n),
            Some(_) => Err(self.err(
                key(k),
                Some(span.clone()),
                format!("must be between 1 and {MAX_RISE_FALL}"),
            )),
        };
        Ok(HealthCheck {
            kind,
            interval,
            timeout,
            rise: count("rise", h.rise)?,
            fall: count("fall", h.fall)?,
        })
    }

    /// `route[i].request_headers` / `response_headers`, each header checked and located.
    fn header_rules(
        &self,
        prefix: &str,
        raw: Option<toml::HeaderRulesToml>,
        request: bool,
    ) -> Result<HeaderRules, ConfigError> {
        let Some(raw) = raw else {
            return Ok(HeaderRules::default());
        };
        let name_of = |k: String, raw: &::toml::Spanned<String>| {
            let name =
                http::HeaderName::from_bytes(raw.get_ref().trim().as_bytes()).map_err(|_| {
                    self.err(
                        k.clone(),
                        Some(raw.span()),
                        format!("`{}` is not a valid header name", raw.get_ref()),
                    )
                })?;
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return Err(self.err(
                    k,
                    Some(raw.span()),
                    format!("`{name}` is managed by the proxy and cannot be changed per route"),
                ));
            }
            Ok(name)
        };
        let mut rules = HeaderRules::default();
        for r in &raw.remove {
            let k = format!("{prefix}.remove");
            let name = name_of(k.clone(), r)?;
            if request && name == http::header::HOST {
                // HTTP/1.1 requests need one; setting it through `add` is allowed.
                return Err(self.err(
                    k,
                    Some(r.span()),
                    "`host` cannot be removed (set it with `add` instead)",
                ));
            }
            if rules.remove.contains(&name) {
                return Err(self.err(k, Some(r.span()), format!("`{name}` is listed twice")));
            }
            rules.remove.push(name);
        }
        for (n, v) in &raw.add {
            let k = format!("{prefix}.add.{}", n.get_ref());
            let name = name_of(k.clone(), n)?;
            if rules.remove.contains(&name) {
                return Err(self.err(
                    k,
                    Some(n.span()),
                    format!("`{name}` is both added and removed (`add` already replaces it)"),
                ));
            }
            if rules.add.iter().any(|(a, _)| *a == name) {
                return Err(self.err(
                    k,
                    Some(n.span()),
                    format!("`{name}` is set twice (header names are case-insensitive)"),
                ));
            }
            let value = http::HeaderValue::from_str(v.get_ref()).map_err(|_| {
                self.err(
                    k.clone(),
                    Some(v.span()),
                    "not a valid header value (visible ASCII, spaces and tabs; no line breaks)",
                )
            })?;
            rules.add.push((name, value));
        }
        Ok(rules)
    }

    fn routes(
        &self,
        raw: Vec<toml::RouteToml>,
        pools: &[Pool],
        listeners: &[Listener],
    ) -> Result<Vec<Route>, ConfigError> {
        if raw.is_empty() {
            return Err(self.err("route", None, "at least one [[route]] is required"));
        }
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let key = |k: &str| format!("route[{i}].{k}");
            let host = match &r.host {
                None => None,
                Some(h) => Some(
                    HostPattern::parse(h.get_ref())
                        .map_err(|m| self.err(key("host"), Some(h.span()), m))?,
                ),
            };
            let path_prefix = match &r.path_prefix {
                None => "/".to_owned(),
                Some(p) if !p.get_ref().starts_with('/') => {
                    return Err(self.err(key("path_prefix"), Some(p.span()), "must start with `/`"))
                }
                Some(p) => p.get_ref().clone(),
            };
            let pool = r.pool.get_ref().clone();
            if !pools.iter().any(|p| p.name == pool) {
                let known: Vec<_> = pools.iter().map(|p| p.name.as_str()).collect();
                return Err(self.err(
                    key("pool"),
                    Some(r.pool.span()),
                    format!("unknown pool `{pool}` (defined: {})", known.join(", ")),
                ));
            }
            let redirect_https = r.redirect_https.as_ref().is_some_and(|b| *b.get_ref());
            if redirect_https && !listeners.iter().any(|l| l.tls.is_some()) {
                return Err(self.err(
                    key("redirect_https"),
                    r.redirect_https.as_ref().map(|b| b.span()),
                    "no TLS listener to redirect to",
                ));
            }
            if !seen.insert((host.clone(), path_prefix.clone())) {
                return Err(self.err(
                    key("path_prefix"),
                    r.path_prefix
                        .as_ref()
                        .map(|p| p.span())
                        .or(Some(r.pool.span())),
                    "another route already matches the same host and path_prefix",
                ));
            }
            let hsts = self.hsts(key("hsts"), r.hsts.clone())?;
            let request_headers =
                self.header_rules(&key("request_headers"), r.request_headers, true)?;
            let response_headers =
                self.header_rules(&key("response_headers"), r.response_headers, false)?;
            let name = r.name.clone().unwrap_or_else(|| match &host {
                Some(h) => format!("{h}{path_prefix}"),
                None => path_prefix.clone(),
            });
            out.push((
                i,
                Route {
                    name,
                    host,
                    path_prefix,
                    pool,
                    redirect_https,
                    hsts,
                    max_body_size: r.max_body_size.map(|s| s.0),
                    request_headers,
                    response_headers,
                },
            ));
        }
        // Most specific first; the table then takes the first match.
        out.sort_by_key(|(i, r)| {
            let host_rank = match &r.host {
                Some(HostPattern::Exact(_)) => (0, 0),
                Some(HostPattern::Suffix(s)) => (1, usize::MAX - s.len()),
                None => (2, 0),
            };
            (host_rank, usize::MAX - r.path_prefix.len(), *i)
        });
        Ok(out.into_iter().map(|(_, r)| r).collect())
    }
}

fn line_of(src: &str, offset: usize) -> usize {
    src.get(..offset).map_or(0, |s| s.matches('\n').count()) + 1
}

/// `serde_path_to_error` shows `Spanned` internals and a trailing `?` for unknown paths.
fn clean_path(p: &str) -> String {
    let p = p.replace(".$__serde_spanned_private_value", "");
    let p = p.trim_end_matches('?').trim_end_matches('.');
    if p == "." {
        String::new()
    } else {
        p.to_owned()
    }
}

#[cfg(test)]
mod tests;
