//! The TOML front end: serde shapes that mirror the file one to one. Nothing outside
//! `config` sees these; `super::model` is what the rest of the edge runs on, so a second
//! front end (or a format change) only touches this file and the conversion in `mod.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::model::{Duration, HashKey, Size, StatusSet};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default)]
    pub server: ServerToml,
    #[serde(default)]
    pub admin: AdminToml,
    #[serde(default)]
    pub listener: Vec<ListenerToml>,
    #[serde(default)]
    pub route: Vec<RouteToml>,
    #[serde(default)]
    pub pool: BTreeMap<String, PoolToml>,
    pub access_log: Option<AccessLogToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessLogToml {
    pub path: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub format: Option<AccessLogFormatToml>,
    pub buffer: Option<Spanned<usize>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum AccessLogFormatToml {
    Json,
    Combined,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerToml {
    pub threads: Option<Spanned<usize>>,
    pub grace_period: Option<Duration>,
    pub shutdown_timeout: Option<Duration>,
    pub state_dir: Option<Spanned<PathBuf>>,
    pub upstream_keepalive_pool: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminToml {
    pub listen: Option<Spanned<SocketAddr>>,
    pub token: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerToml {
    pub name: Spanned<String>,
    pub address: Spanned<SocketAddr>,
    pub tls: Option<TlsToml>,
    #[serde(default)]
    pub h2: Option<Spanned<bool>>,
    pub hsts: Option<Spanned<String>>,
    pub max_body_size: Option<Size>,
    pub header_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub max_header_size: Option<Spanned<Size>>,
    pub max_connections: Option<Spanned<usize>>,
    pub fast_path: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsToml {
    pub cert: Spanned<PathBuf>,
    pub key: Spanned<PathBuf>,
    #[serde(default)]
    pub sni: Vec<CertPairToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CertPairToml {
    pub cert: Spanned<PathBuf>,
    pub key: Spanned<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteToml {
    pub name: Option<String>,
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub pool: Spanned<String>,
    #[serde(default)]
    pub redirect_https: Option<Spanned<bool>>,
    pub hsts: Option<Spanned<String>>,
    pub max_body_size: Option<Size>,
    pub request_headers: Option<HeaderRulesToml>,
    pub response_headers: Option<HeaderRulesToml>,
}

/// `{ add = { NAME = "value" }, remove = ["NAME"] }`; keys and items keep their spans so
/// a bad header is reported on its own line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HeaderRulesToml {
    #[serde(default)]
    pub add: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PoolToml {
    pub servers: Spanned<Vec<ServerEntryToml>>,
    #[serde(default)]
    pub algorithm: Option<Spanned<AlgorithmToml>>,
    pub hash_key: Option<Spanned<HashKey>>,
    pub keepalive: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub connect_retries: Option<usize>,
    pub retry_idempotent: Option<bool>,
    pub health_check: Option<Spanned<HealthCheckToml>>,
    #[serde(default)]
    pub protocol: Option<ProtocolToml>,
    pub max_fails: Option<u32>,
    pub fail_on_5xx: Option<bool>,
    pub fail_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthCheckToml {
    #[serde(default)]
    pub kind: Option<HealthCheckKindToml>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub expect_status: Option<StatusSet>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub rise: Option<usize>,
    pub fall: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum ProtocolToml {
    H1,
    H2c,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum HealthCheckKindToml {
    Tcp,
    Http,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerEntryToml {
    pub address: Spanned<SocketAddr>,
    pub weight: Option<Spanned<usize>>,
    pub backup: Option<bool>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum AlgorithmToml {
    RoundRobin,
    LeastConn,
    RandomTwo,
    Ketama,
}
