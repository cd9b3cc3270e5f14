use std::path::{Path, PathBuf};

use super::model::{self, Algorithm, HashKey, HostPattern, Passive};
use super::*;
use std::sync::OnceLock;

use crate::tls::dev::{ensure_dev_certs, DevCerts};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("onebook-edge-config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Any cert path resolves to freshly made dev certs: the samples name production paths.
fn with_dev_certs(src: &str, path: &Path) -> Result<Config, ConfigError> {
    static DEV: OnceLock<DevCerts> = OnceLock::new();
    let dev = DEV.get_or_init(|| ensure_dev_certs(&scratch("certs"), true).expect("dev certs"));
    let loader = move |_: &Path, _: &Path| load_certified_key(&dev.leaf_cert, &dev.leaf_key);
    parse_with(src, path, Path::new("/srv/onebook"), &loader)
}

const MINIMAL: &str = r#"
[[listener]]
name = "http"
address = "127.0.0.1:8080"

[[route]]
pool = "web"

[pool.web]
servers = [{ address = "127.0.0.1:8101" }]
"#;

fn parse_ok(src: &str) -> Config {
    with_dev_certs(src, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(src: &str) -> ConfigError {
    match with_dev_certs(src, Path::new("test.toml")) {
        Ok(_) => panic!("config unexpectedly valid:\n{src}"),
        Err(e) => e,
    }
}

#[test]
fn every_sample_config_parses() {
    let dir = repo_root().join("configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("configs dir") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !(name.starts_with("edge") && name.ends_with(".toml")) {
            continue;
        }
        let src = std::fs::read_to_string(&path).expect("read sample");
        if let Err(e) = with_dev_certs(&src, &path) {
            panic!("{e}");
        }
        seen += 1;
    }
    assert!(
        seen >= 2,
        "expected configs/edge.dev.toml and configs/edge.toml"
    );
}

#[test]
fn dev_config_matches_the_stack_layout() {
    let path = repo_root().join("configs/edge.dev.toml");
    let src = std::fs::read_to_string(&path).expect("read dev config");
    let cfg = with_dev_certs(&src, &path).unwrap_or_else(|e| panic!("{e}"));
    let https = cfg.listener("https").expect("https listener");
    assert_eq!(https.address.port(), 8443);
    assert!(https.tls.is_some() && https.h2);
    assert_eq!(cfg.listener("http").map(|l| l.address.port()), Some(8080));
    assert_eq!(cfg.admin.listen.to_string(), "127.0.0.1:9901");
    assert_eq!(cfg.routes[0].path_prefix, "/sync");
    assert_eq!(cfg.routes[0].pool, "sync");
    let sync: Vec<u16> = cfg
        .pool("sync")
        .expect("sync")
        .servers
        .iter()
        .map(|s| s.address.port())
        .collect();
    assert_eq!(sync, [8201, 8202]);
    let web = cfg.pool("webapp").expect("webapp");
    // Session affinity: each user's memcached data lives on one instance.
    assert_eq!(
        web.algorithm,
        Algorithm::Ketama {
            key: HashKey::Cookie("onebook_session".into())
        }
    );
    assert_eq!(web.servers.len(), 2);
    // Active probes would mark servers down before the stack has started them.
    assert!(cfg.pools.iter().all(|p| p.health_check.is_none()));
}

#[test]
fn new_pool_listener_route_and_log_options() {
    let cfg = parse_ok(
        r#"
[admin]
token = "t0ken"

[access_log]
path = "stdout"
format = "combined"
buffer = 16

[[listener]]
name = "http"
address = "127.0.0.1:8080"
max_body_size = "10m"
header_timeout = "5s"
max_header_size = "16k"
max_connections = 100
fast_path = false

[[route]]
pool = "web"
max_body_size = 1024

[pool.web]
algorithm = "least_conn"
servers = [{ address = "127.0.0.1:8101" }, { address = "127.0.0.1:8102", backup = true }]
write_timeout = "5s"
retry_idempotent = false
"#,
    );
    assert_eq!(cfg.admin.token.as_deref(), Some("t0ken"));
    let log = cfg.access_log.as_ref().expect("access log");
    assert_eq!(
        (log.path.clone(), log.format, log.buffer),
        (None, model::AccessLogFormat::Combined, 16)
    );
    let l = &cfg.listeners[0];
    assert_eq!(l.max_body_size, Some(10 << 20));
    assert_eq!(l.max_header_size, 16 << 10);
    assert_eq!(l.max_connections, Some(100));
    assert!(!l.fast_path);
    assert_eq!(cfg.routes[0].max_body_size, Some(1024));
    let web = &cfg.pools[0];
    assert_eq!(web.algorithm, Algorithm::LeastConn);
    assert!(web.servers[1].backup && !web.servers[0].backup);
    assert!(!web.retry_idempotent);
}

#[test]
fn new_options_are_validated() {
    let only_backups = MINIMAL.replace(
        "servers = [{ address = \"127.0.0.1:8101\" }]",
        "servers = [{ address = \"127.0.0.1:8101\", backup = true }]",
    );
    let e = parse_err(&only_backups);
    assert_eq!(e.key, "pool.web.servers");
    assert!(e.message.contains("backup"), "{e}");
    let plain_hsts = MINIMAL.replace(
        "address = \"127.0.0.1:8080\"",
        "address = \"127.0.0.1:8080\"\nhsts = \"max-age=60\"",
    );
    let e = parse_err(&plain_hsts);
    assert_eq!(e.key, "listener[0].hsts");
    let no_max_age = MINIMAL.replace(
        "pool = \"web\"",
        "pool = \"web\"\nhsts = \"includeSubDomains\"",
    );
    let e = parse_err(&no_max_age);
    assert_eq!((e.key.as_str(), e.line), ("route[0].hsts", Some(8)), "{e}");
    let bad_size = MINIMAL.replace(
        "address = \"127.0.0.1:8080\"",
        "address = \"127.0.0.1:8080\"\nmax_header_size = \"2m\"",
    );
    assert_eq!(parse_err(&bad_size).key, "listener[0].max_header_size");
}

#[test]
fn a_large_pool_gets_capped_connect_retries_by_default() {
    let servers: Vec<String> = (0..40)
        .map(|i| format!("{{ address = \"127.0.0.1:{}\" }}", 9000 + i))
        .collect();
    let big = MINIMAL.replace(
        "servers = [{ address = \"127.0.0.1:8101\" }]",
        &format!("servers = [{}]", servers.join(", ")),
    );
    assert_eq!(parse_ok(&big).pools[0].connect_retries, MAX_CONNECT_RETRIES);
    let explicit = big.replace("[pool.web]", "[pool.web]\nconnect_retries = 17");
    assert_eq!(parse_err(&explicit).key, "pool.web.connect_retries");
}

#[test]
fn defaults_are_filled_in() {
    let cfg = parse_ok(MINIMAL);
    assert_eq!(cfg.admin.listen, DEFAULT_ADMIN_LISTEN);
    assert_eq!(cfg.server.state_dir, Path::new("/srv/onebook/.stack/edge"));
    let l = &cfg.listeners[0];
    assert!(l.tls.is_none() && !l.h2 && l.fast_path);
    let p = &cfg.pools[0];
    assert_eq!((p.servers[0].weight, p.connect_retries), (1, 0));
    assert_eq!(cfg.routes[0].path_prefix, "/");
    assert_eq!(
        p.passive,
        Some(Passive {
            max_fails: 1,
            fail_timeout: model::Duration::from_secs(10),
            fail_on_5xx: false,
        })
    );
    let off = parse_ok(&MINIMAL.replace("[pool.web]", "[pool.web]\nmax_fails = 0"));
    assert_eq!(off.pools[0].passive, None);
    let e = parse_err(&MINIMAL.replace(
        "[pool.web]",
        "[pool.web]\nmax_fails = 0\nfail_on_5xx = true",
    ));
    assert_eq!(e.key, "pool.web.fail_on_5xx", "{e}");
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let src = MINIMAL.replace("name = \"http\"", "name = \"http\"\nport = 80");
    let e = parse_err(&src);
    assert_eq!(e.line, Some(4), "{e}");
    assert_eq!(e.key, "listener[0].port", "{e}");
    assert!(e.message.contains("unknown field `port`"), "{e}");
}

#[test]
fn bad_value_names_key_and_line() {
    let src = MINIMAL.replace("127.0.0.1:8101", "not-an-address");
    let e = parse_err(&src);
    assert_eq!(e.key, "pool.web.servers[0].address", "{e}");
    assert_eq!(e.line, Some(10), "{e}");
}

#[test]
fn syntax_error_has_a_line() {
    let e = parse_err("[server\nthreads = 2\n");
    assert_eq!(e.line, Some(1), "{e}");
}

#[test]
fn unknown_pool_is_rejected() {
    let e = parse_err(&MINIMAL.replace("pool = \"web\"", "pool = \"nope\""));
    assert_eq!((e.key.as_str(), e.line), ("route[0].pool", Some(7)), "{e}");
    assert!(e.message.contains("unknown pool `nope`"), "{e}");
}

#[test]
fn ketama_needs_a_hash_key() {
    let e = parse_err(&MINIMAL.replace("[pool.web]", "[pool.web]\nalgorithm = \"ketama\""));
    assert_eq!(e.key, "pool.web.hash_key", "{e}");
    let cfg = parse_ok(&MINIMAL.replace(
        "[pool.web]",
        "[pool.web]\nalgorithm = \"ketama\"\nhash_key = \"cookie:sid\"",
    ));
    assert_eq!(
        cfg.pools[0].algorithm,
        Algorithm::Ketama {
            key: HashKey::Cookie("sid".into())
        }
    );
}

#[test]
fn durations_need_units() {
    let e = parse_err(&MINIMAL.replace("[pool.web]", "[pool.web]\nkeepalive = \"30\""));
    assert_eq!(e.key, "pool.web.keepalive", "{e}");
    assert!(e.message.contains("no unit"), "{e}");
}

#[test]
fn routes_are_ordered_most_specific_first() {
    let src = format!(
        "{MINIMAL}\n[[route]]\npath_prefix = \"/sync\"\npool = \"web\"\n\n[[route]]\nhost = \"*.onebook.test\"\npool = \"web\"\n\n[[route]]\nhost = \"app.onebook.test\"\npool = \"web\"\n"
    );
    let cfg = parse_ok(&src);
    let order: Vec<_> = cfg.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        order,
        ["app.onebook.test/", "*.onebook.test/", "/sync", "/"]
    );
    assert!(HostPattern::parse("*.onebook.test")
        .expect("pattern")
        .matches("a.onebook.test"));
    assert!(!HostPattern::parse("*.onebook.test")
        .expect("pattern")
        .matches("onebook.test"));
}

#[test]
fn missing_certificate_names_the_file_key() {
    let src = MINIMAL.replace(
        "address = \"127.0.0.1:8080\"",
        "address = \"127.0.0.1:8443\"\ntls = { cert = \"/nonexistent/cert.pem\", key = \"/nonexistent/key.pem\" }",
    );
    let e = parse(&src, Path::new("test.toml"), Path::new("/")).expect_err("missing cert");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("listener[0].tls.cert", Some(5)),
        "{e}"
    );
    assert!(e.message.contains("/nonexistent/cert.pem"), "{e}");
}

#[test]
fn header_rules_health_checks_and_protocol() {
    let cfg = parse_ok(&MINIMAL.replace(
        "pool = \"web\"\n",
        "pool = \"web\"\nrequest_headers = { add = { \"X-Env\" = \"prod\", Host = \"app\" }, remove = [\"Proxy\"] }\nresponse_headers.remove = [\"Server\"]\n",
    ).replace(
        "[pool.web]",
        "[pool.web]\nprotocol = \"h2c\"\nhealth_check = { kind = \"http\", method = \"head\", expect_status = [204, \"3xx\", \"400-404\"], rise = 2, fall = 3 }",
    ));
    let r = &cfg.routes[0];
    let added: Vec<_> = r
        .request_headers
        .add
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or_default()))
        .collect();
    assert_eq!(added, [("host", "app"), ("x-env", "prod")]);
    assert_eq!(
        r.request_headers.remove,
        [http::header::HeaderName::from_static("proxy")]
    );
    assert_eq!(r.response_headers.remove, [http::header::SERVER]);
    assert!(r.response_headers.add.is_empty());
    let p = &cfg.pools[0];
    assert_eq!(p.protocol, model::UpstreamProtocol::H2c);
    let hc = p.health_check.as_ref().expect("health check");
    assert_eq!((hc.rise, hc.fall), (2, 3));
    let model::HealthCheckKind::Http { method, expect, .. } = &hc.kind else {
        panic!("http check expected");
    };
    assert_eq!(method, http::Method::HEAD);
    assert_eq!(expect.to_string(), "204,300-399,400-404");
    assert!(expect.contains(302) && expect.contains(404) && !expect.contains(200));

    let defaults = parse_ok(&MINIMAL.replace(
        "[pool.web]",
        "[pool.web]\nhealth_check = { kind = \"http\" }",
    ));
    let hc = defaults.pools[0]
        .health_check
        .as_ref()
        .expect("health check");
    assert_eq!((hc.rise, hc.fall), (1, 1));
    assert_eq!(defaults.pools[0].protocol, model::UpstreamProtocol::H1);

    for (bad, key) in [
        ("health_check = { rise = 0 }", "pool.web.health_check.rise"),
        (
            "health_check = { kind = \"tcp\", expect_status = 200 }",
            "pool.web.health_check.kind",
        ),
        (
            "health_check = { kind = \"http\", expect_status = \"6xx\" }",
            "pool.web.health_check.expect_status",
        ),
        (
            "health_check = { kind = \"http\", expect_status = \"300-200\" }",
            "pool.web.health_check.expect_status",
        ),
        (
            "health_check = { kind = \"http\", method = \"POST\" }",
            "pool.web.health_check.method",
        ),
        ("protocol = \"h3\"", "pool.web.protocol"),
    ] {
        let e = parse_err(&MINIMAL.replace("[pool.web]", &format!("[pool.web]\n{bad}")));
        assert_eq!(e.key, key, "{bad}: {e}");
        assert_eq!(e.line, Some(10), "{bad}: {e}");
    }
}
