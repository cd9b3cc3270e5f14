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
    let version = format!("{:?}", req.version());
    let method = req.method().to_string();
    // Headers a route's `response_headers` can remove or replace.
    let extra = [
        ("x-upstream", name),
        ("x-powered-by", "echo"),
        ("cache-control", "max-age=60"),
    ];
    (
        extra,
        Json(json!({
            "server": name,
            "path": req.uri().path(),
            "method": method,
            "version": version,
            "headers": headers,
        })),
    )
}

/// An upstream whose `/hc` answers with a status the test sets, counting the probes it
/// answers per status (so a test can tell how many consecutive results the edge saw).
pub struct Probed {
    pub addr: SocketAddr,
    pub status: Arc<std::sync::atomic::AtomicU16>,
    /// Answered (in order) before `status`, one per probe.
    script: Arc<std::sync::Mutex<std::collections::VecDeque<u16>>>,
    /// Every probe in arrival order: (method, status answered).
    pub probes: Arc<std::sync::Mutex<Vec<(String, u16)>>>,
}

impl Probed {
    pub async fn start(name: &'static str, status: u16) -> Probed {
        let code = Arc::new(std::sync::atomic::AtomicU16::new(status));
        let probes: Arc<std::sync::Mutex<Vec<(String, u16)>>> = Arc::default();
        let script: Arc<std::sync::Mutex<std::collections::VecDeque<u16>>> = Arc::default();
        let (c, p, sc) = (code.clone(), probes.clone(), script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let hc = move |req: Request| {
            let scripted = sc.lock().expect("script").pop_front();
            let status = scripted.unwrap_or_else(|| c.load(Ordering::SeqCst));
            p.lock()
                .expect("probe log")
                .push((req.method().to_string(), status));
            async move { axum::http::StatusCode::from_u16(status).expect("status") }
        };
        let app = axum::Router::new()
            .route("/hc", axum::routing::any(hc))
            .fallback(echo)
            .with_state(name);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Probed {
            addr,
            status: code,
            script,
            probes,
        }
    }

    /// Answers the next probes with `statuses`, then `status` again.
    pub fn script(&self, statuses: &[u16]) {
        self.script
            .lock()
            .expect("script")
            .extend(statuses.iter().copied());
    }

    pub fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Probes answered so far.
    pub fn count(&self) -> usize {
        self.probes.lock().expect("probe log").len()
    }

    /// Probes answered with `status` since the `from`-th probe.
    pub fn answered_since(&self, from: usize, status: u16) -> usize {
        let p = self.probes.lock().expect("probe log");
        p.iter().skip(from).filter(|(_, s)| *s == status).count()
    }

    pub fn methods(&self) -> Vec<String> {
        let p = self.probes.lock().expect("probe log");
        p.iter().map(|(m, _)| m.clone()).collect()
    }
}

/// `/metrics` text of the edge.
pub async fn admin_metrics(edge: &Edge) -> String {
    let resp = edge
        .client()
        .get(edge.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert!(resp.status().is_success(), "metrics: {}", resp.status());
    resp.text().await.expect("metrics text")
}

/// Polls `check` every 20 ms for up to 10 s; panics with `what` if it never holds.
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub https: u16,
    pub http: u16,
    pub admin: u16,
}

impl Ports {
    pub fn new() -> Self {
        // Bound together so the OS cannot hand out the same port twice.
        let bind = || StdListener::bind("127.0.0.1:0").expect("ephemeral port");
        let held = [bind(), bind(), bind()];
        let [https, http, admin] = held.map(|l| l.local_addr().map(|a| a.port()).expect("port"));
        Ports { https, http, admin }
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

/// One test's edge being put together: a scratch dir, fresh dev certs, free ports and
/// [`base_config`] (HTTPS h2 + plain HTTP listeners, admin), plus the routes, pools and
/// raw TOML the test appends. `config` stays readable after `start` for reload tests.
pub struct Setup {
    pub dir: PathBuf,
    pub certs: PathBuf,
    pub ports: Ports,
    pub config: String,
}

impl Setup {
    pub fn new(name: &str) -> Setup {
        let dir = scratch(name);
        let certs = dev_certs(&dir.join("certs"));
        let ports = Ports::new();
        let config = base_config(&dir, &certs, &ports);
        Setup {
            dir,
            certs,
            ports,
            config,
        }
    }

    /// Appends a `[[route]]` with `keys` (TOML lines, e.g. `pool = "web"`).
    pub fn route(&mut self, keys: &str) -> &mut Self {
        self.config += &format!("\n[[route]]\n{keys}\n");
        self
    }

    /// Appends `[pool.NAME]` with [`pool`]'s defaults; `raw` lines right after it add keys
    /// to that pool.
    pub fn pool(&mut self, name: &str, servers: &[SocketAddr]) -> &mut Self {
        self.config += &pool(name, servers);
        self
    }

    /// Appends TOML as is (a line break is added).
    pub fn raw(&mut self, text: &str) -> &mut Self {
        self.config += text;
        self.config += "\n";
        self
    }

    /// Writes the config and starts the edge, waiting until it listens.
    pub fn start(&self) -> Edge {
        Edge::start(&self.dir, &self.certs, self.ports, &self.config)
    }
}

impl Edge {
    /// `GET /metrics` as text (no token).
    pub async fn metrics(&self) -> String {
        admin_metrics(self).await
    }

    /// `POST /reload` (no token): status and JSON body.
    pub async fn reload(&self) -> (u16, Value) {
        let resp = self
            .client()
            .post(self.admin_url("/reload"))
            .send()
            .await
            .expect("reload");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("reload json"))
    }

    /// Writes `config` over the running edge's file and `POST /reload`s it.
    pub async fn reload_with(&self, config: &str) -> (u16, Value) {
        std::fs::write(&self.config, config).expect("write config");
        self.reload().await
    }

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

/// reqwest is built without a crypto provider; tests pick ring, like the
/// edge. Every test builds its clients after this (nextest runs each test
/// in a process of its own).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn client_trusting(ca: &Path) -> reqwest::Client {
    install_crypto_provider();
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

/// A hand-rolled HTTP/1.1 upstream the test controls: `kill` drops the listener and every
/// open connection at once (what a crashed process looks like to the edge), `/hold` waits
/// until `release`, `/delay` answers after 30 ms, a path containing `close` gets
/// `Connection: close`. Answers like [`upstream`]'s echo.
pub struct Ctl {
    pub addr: SocketAddr,
    pub name: &'static str,
    kill: tokio::sync::watch::Sender<bool>,
    release: tokio::sync::watch::Sender<bool>,
}

impl Ctl {
    pub async fn start(name: &'static str) -> Ctl {
        Self::start_at(name, "127.0.0.1:0".parse().expect("addr")).await
    }

    /// Binds `addr` (a killed server's, to bring it back).
    pub async fn start_at(name: &'static str, addr: SocketAddr) -> Ctl {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind ctl upstream");
        let addr = listener.local_addr().expect("addr");
        let (kill, kill_rx) = tokio::sync::watch::channel(false);
        let (release, release_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut k = kill_rx.clone();
            loop {
                tokio::select! {
                    _ = k.wait_for(|v| *v) => return,
                    conn = listener.accept() => {
                        let Ok((stream, _)) = conn else { return };
                        let (mut k, r) = (kill_rx.clone(), release_rx.clone());
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = k.wait_for(|v| *v) => {}
                                _ = serve_conn(stream, name, r) => {}
                            }
                        });
                    }
                }
            }
        });
        Ctl {
            addr,
            name,
            kill,
            release,
        }
    }

    pub fn kill(&self) {
        let _ = self.kill.send(true);
    }

    pub fn release(&self) {
        let _ = self.release.send(true);
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve_conn(
    stream: tokio::net::TcpStream,
    name: &'static str,
    mut release: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut s = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if s.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        if s.read_exact(&mut body).await.is_err() {
            return;
        }
        if path.starts_with("/hold") {
            let _ = release.wait_for(|v| *v).await;
        } else if path.starts_with("/delay") {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let close = path.contains("close");
        let body = json!({ "server": name, "path": path }).to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        );
        if s.get_mut().write_all(resp.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Admin `/status` as JSON, with an optional bearer token.
pub async fn admin_status(edge: &Edge, token: Option<&str>) -> Value {
    let mut req = edge.client().get(edge.admin_url("/status"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("status");
    assert!(resp.status().is_success(), "status: {}", resp.status());
    resp.json().await.expect("status json")
}

/// The `/status` entry of server `addr` in pool `pool`.
pub fn status_server<'a>(status: &'a Value, pool: &str, addr: SocketAddr) -> &'a Value {
    status["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == pool))
        .and_then(|p| p["servers"].as_array())
        .and_then(|ss| ss.iter().find(|s| s["address"] == addr.to_string()))
        .unwrap_or_else(|| panic!("no server {addr} in pool {pool}: {status}"))
}

/// Waits (5 s at most) until one of `servers` of `pool` shows one request in flight, and
/// returns it.
pub async fn wait_busy<'a>(
    edge: &Edge,
    token: Option<&str>,
    pool: &str,
    servers: &[&'a Ctl],
) -> &'a Ctl {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = admin_status(edge, token).await;
        let in_flight: Vec<_> = servers
            .iter()
            .map(|c| status_server(&status, pool, c.addr)["in_flight"].clone())
            .collect();
        // Exactly one busy server and the others at 0: a request that has just
        // been answered may still be counted for a moment, and must not be
        // mistaken for the held one.
        let busy: Vec<_> = in_flight.iter().filter(|n| **n == 1).collect();
        if busy.len() == 1 && in_flight.iter().all(|n| *n == 0 || *n == 1) {
            if let Some(i) = in_flight.iter().position(|n| *n == 1) {
                return servers[i];
            }
        }
        assert!(Instant::now() < deadline, "no request in flight: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
