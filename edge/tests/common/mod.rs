//! Test harness: real upstream HTTP servers (axum), the `edge` binary on ephemeral ports,
//! and HTTPS clients trusting a freshly made dev CA.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

pub const EDGE: &str = env!("CARGO_BIN_EXE_edge");

/// A fresh directory under cargo's per-target scratch space.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "edge-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A port that was free a moment ago (the OS hands out ephemeral ports round-robin, so
/// reuse before the edge binds is unlikely).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("ephemeral port")
}

pub fn run_edge(args: &[&str]) -> Output {
    Command::new(EDGE).args(args).output().expect("run edge")
}

/// `edge certs dev --dir DIR`, returning DIR.
pub fn dev_certs(dir: &Path) -> PathBuf {
    let out = run_edge(&["certs", "dev", "--dir", dir.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "certs dev failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

/// Starts an upstream that answers every request with JSON describing what it received.
pub async fn upstream(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let app = axum::Router::new().fallback(echo).with_state(name);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Like [`upstream`], plus `GET /healthz` answering 200 or 503 as the returned flag says.
pub async fn upstream_with_health(name: &'static str) -> (SocketAddr, Arc<AtomicBool>) {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let app = axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(move || {
                let ok = flag.load(Ordering::Relaxed);
                async move {
                    if ok {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }),
        )
        .fallback(echo)
        .with_state(name);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, healthy)
}

async fn echo(State(name): State<&'static str>, req: Request) -> impl IntoResponse {
    // A request in flight for a while, for shutdown tests.
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or("<binary>").to_owned(),
            )
        })
        .collect();
    Json(json!({ "server": name, "path": req.uri().path(), "headers": headers }))
}

/// A running `edge` process; killed on drop.
pub struct Edge {
    pub child: Child,
    pub dir: PathBuf,
    pub log_file: PathBuf,
    pub config: PathBuf,
    pub https: u16,
    pub http: u16,
    pub admin: u16,
    pub ca: PathBuf,
}

pub struct Ports {
    pub https: u16,
    pub http: u16,
    pub admin: u16,
}

impl Ports {
    pub fn new() -> Self {
        Ports {
            https: free_port(),
            http: free_port(),
            admin: free_port(),
        }
    }
}

/// Config with an HTTPS (h2) and an HTTP listener, admin, and whatever routes/pools the
/// test appends.
pub fn base_config(dir: &Path, certs: &Path, ports: &Ports) -> String {
    format!(
        r#"
[server]
threads = 1
grace_period = "0s"
shutdown_timeout = "1s"
state_dir = "{state}"

[admin]
listen = "127.0.0.1:{admin}"

[[listener]]
name = "https"
address = "127.0.0.1:{https}"
tls = {{ cert = "{certs}/localhost.pem", key = "{certs}/localhost-key.pem" }}
h2 = true

[[listener]]
name = "http"
address = "127.0.0.1:{http}"
"#,
        state = dir.join("state").display(),
        admin = ports.admin,
        https = ports.https,
        http = ports.http,
        certs = certs.display(),
    )
}

pub fn pool(name: &str, servers: &[SocketAddr]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ address = \"{s}\" }}"))
        .collect();
    format!(
        "\n[pool.{name}]\nservers = [{}]\nconnect_timeout = \"500ms\"\n",
        list.join(", ")
    )
}

impl Edge {
    pub fn start(dir: &Path, certs: &Path, ports: Ports, config: &str) -> Edge {
        let path = dir.join("edge.toml");
        std::fs::write(&path, config).expect("write config");
        let log_file = dir.join("edge.log");
        let child = spawn(&path, &log_file, &[]);
        let edge = Edge {
            child,
            dir: dir.to_path_buf(),
            log_file,
            config: path,
            https: ports.https,
            http: ports.http,
            admin: ports.admin,
            ca: certs.join("ca.pem"),
        };
        edge.wait_listening();
        edge
    }

    /// Starts a second edge on the same config with `--upgrade`: it waits to be handed
    /// this one's sockets (send SIGQUIT here to do so).
    pub fn spawn_upgrade(&self) -> Edge {
        let log_file = self.dir.join("edge-upgrade.log");
        Edge {
            child: spawn(&self.config, &log_file, &["--upgrade"]),
            dir: self.dir.clone(),
            log_file,
            config: self.config.clone(),
            https: self.https,
            http: self.http,
            admin: self.admin,
            ca: self.ca.clone(),
        }
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        for port in [self.admin, self.https, self.http] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "edge did not listen on {port}; log:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    pub fn client(&self) -> reqwest::Client {
        client_trusting(&self.ca)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

fn spawn(config: &Path, log: &Path, extra: &[&str]) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(EDGE)
        .args(["run", "-c", config.to_str().expect("utf-8 path")])
        .args(extra)
        .env("RUST_LOG", "info,edge::access=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn edge")
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client_trusting(ca: &Path) -> reqwest::Client {
    // reqwest is built without a crypto provider; tests pick ring, like the edge.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(ca).expect("read CA");
    let cert = reqwest::Certificate::from_pem(&pem).expect("CA pem");
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

pub struct Echo {
    pub version: reqwest::Version,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// GET through the edge and parse the upstream echo.
pub async fn get_echo(client: &reqwest::Client, url: &str) -> Echo {
    send_echo(client.get(url)).await
}

pub async fn send_echo(req: reqwest::RequestBuilder) -> Echo {
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e:?}"));
    let status = resp.status();
    let url = resp.url().clone();
    assert!(status.is_success(), "{url}: {status}");
    Echo {
        version: resp.version(),
        headers: resp.headers().clone(),
        body: resp.json().await.expect("json body"),
    }
}

pub fn server_of(body: &Value) -> &str {
    body["server"].as_str().unwrap_or_default()
}

pub fn header<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body["headers"][name].as_str()
}

/// Value of one exact series (`name{labels}`) in a Prometheus text dump; 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
