//! Test support for the integration tests that run against the real stack.
//!
//! `./dev test` starts the stack (or reuses the one `./dev up` started) and
//! exports its endpoints as `ONEBOOK_*` variables. Run by hand after
//! `./dev up`, the tests read `.stack/endpoints.env` instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the running stack is.
#[derive(Debug, Clone)]
pub struct Stack {
    pub repo: PathBuf,
    pub stack_dir: PathBuf,
    /// `https://localhost:8443`
    pub edge_https: String,
    /// `http://localhost:8080`
    pub edge_http: String,
    /// PEM of the dev CA that signed the edge's certificate.
    pub ca_file: PathBuf,
    /// pgpool URL of each shard, in shard order.
    pub shard_urls: Vec<String>,
    /// Direct URLs of each shard's PostgreSQL nodes (bypassing pgpool).
    pub shard_nodes: Vec<Vec<String>>,
    pub amqp_url: String,
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn split(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl Stack {
    /// The stack's endpoints. Panics with instructions when no stack runs:
    /// these tests are meant to fail loudly, never to skip.
    pub fn get() -> &'static Stack {
        static STACK: OnceLock<Stack> = OnceLock::new();
        STACK.get_or_init(|| {
            Stack::load().unwrap_or_else(|e| {
                panic!("{e}\nStart the stack with `./dev up`, or run everything with `./dev test`.")
            })
        })
    }

    fn load() -> Result<Stack, String> {
        let repo = std::env::var("ONEBOOK_REPO")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root());
        let mut vars: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("ONEBOOK_"))
            .collect();
        if !vars.contains_key("ONEBOOK_SHARD_URLS") {
            let stack_dir = vars
                .get("ONEBOOK_STACK_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo.join(".stack"));
            let file = stack_dir.join("endpoints.env");
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("no stack endpoints: {}: {e}", file.display()))?;
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    let v = v.trim().trim_matches('"').trim_matches('\'');
                    vars.entry(k.trim().to_string())
                        .or_insert_with(|| v.to_string());
                }
            }
        }
        let get = |key: &str| {
            vars.get(key)
                .cloned()
                .ok_or_else(|| format!("{key} is not set"))
        };
        let shard_urls = split(&get("ONEBOOK_SHARD_URLS")?);
        let mut shard_nodes = Vec::new();
        for i in 1..=shard_urls.len() {
            shard_nodes.push(split(&get(&format!("ONEBOOK_SHARD{i}_NODES"))?));
        }
        Ok(Stack {
            stack_dir: vars
                .get("ONEBOOK_STACK_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo.join(".stack")),
            edge_https: vars
                .get("ONEBOOK_EDGE_HTTPS")
                .cloned()
                .unwrap_or_else(|| "https://localhost:8443".into()),
            edge_http: vars
                .get("ONEBOOK_EDGE_HTTP")
                .cloned()
                .unwrap_or_else(|| "http://localhost:8080".into()),
            ca_file: vars
                .get("ONEBOOK_CA_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo.join("certs/dev/ca.pem")),
            shard_urls,
            shard_nodes,
            amqp_url: get("ONEBOOK_AMQP_URL")?,
            repo,
        })
    }

    /// An HTTPS client that trusts only the dev CA, with a cookie jar.
    pub fn client(&self) -> reqwest::Client {
        install_crypto_provider();
        let pem = std::fs::read(&self.ca_file)
            .unwrap_or_else(|e| panic!("{}: {e}", self.ca_file.display()));
        let ca = reqwest::Certificate::from_pem(&pem)
            .unwrap_or_else(|e| panic!("{}: {e}", self.ca_file.display()));
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .cookie_store(true)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("building the HTTPS client: {e}"))
    }

    /// `scripts/datatier.sh ARGS...`, for tests that stop and recover nodes.
    pub fn datatier(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(self.repo.join("scripts/datatier.sh"))
            .args(args)
            .env("STACK_DIR", &self.stack_dir)
            .output()
            .unwrap_or_else(|e| panic!("scripts/datatier.sh: {e}"))
    }
}

/// rustls needs one process-wide crypto provider; the project uses ring
/// (Pingora's choice) so only one TLS stack is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Connects straight to one PostgreSQL node or pgpool.
pub async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A unique email per test run, so tests never collide with each other or
/// with a previous run on the same stack.
pub fn unique_email(prefix: &str) -> String {
    format!("{prefix}-{}@tests.onebook.test", uuid_like())
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{nanos:x}{:x}{n}", std::process::id())
}

/// A signed-up, logged-in user talking to the stack through the edge.
pub struct TestUser {
    pub email: String,
    pub id: String,
    pub shard: String,
    pub client: reqwest::Client,
    pub token: String,
}

impl TestUser {
    pub async fn sign_up(stack: &Stack, prefix: &str) -> TestUser {
        let client = stack.client();
        let email = unique_email(prefix);
        let password = "test-password-1";
        let response = client
            .post(format!("{}/api/v1/accounts", stack.edge_https))
            .json(
                &serde_json::json!({"email": email, "password": password, "display_name": prefix}),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("sign-up request: {e}"));
        assert_eq!(
            response.status(),
            201,
            "sign-up: {:?}",
            response.text().await
        );
        let account: serde_json::Value = response.json().await.unwrap_or_default();
        let response = client
            .post(format!("{}/api/v1/session", stack.edge_https))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("log-in request: {e}"));
        assert_eq!(response.status(), 200, "log-in");
        let session: serde_json::Value = response.json().await.unwrap_or_default();
        TestUser {
            email,
            id: account["id"].as_str().unwrap_or_default().to_string(),
            shard: account["shard"].as_str().unwrap_or_default().to_string(),
            client,
            token: session["token"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// GET `path` through the edge as this user and decode the JSON body.
    pub async fn get_json(&self, stack: &Stack, path: &str) -> serde_json::Value {
        let url = format!("{}{path}", stack.edge_https);
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: body is not JSON: {e}"))
    }

    /// Creates a contact through the edge's REST API as this user, insisting
    /// on `201 Created`, and returns the created contact.
    pub async fn create_contact(
        &self,
        stack: &Stack,
        contact: &serde_json::Value,
    ) -> serde_json::Value {
        self.post(stack, "/api/v1/contacts", contact, Some(201))
            .await
    }

    /// POST `body` as JSON to `path` through the edge as this user and decode
    /// the JSON reply, whatever its status.
    pub async fn post_json(
        &self,
        stack: &Stack,
        path: &str,
        body: &serde_json::Value,
    ) -> serde_json::Value {
        self.post(stack, path, body, None).await
    }

    async fn post(
        &self,
        stack: &Stack,
        path: &str,
        body: &serde_json::Value,
        expect: Option<u16>,
    ) -> serde_json::Value {
        let url = format!("{}{path}", stack.edge_https);
        let response = self
            .client
            .post(&url)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        if let Some(status) = expect {
            assert_eq!(response.status(), status, "POST {url} with {body}");
        }
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: body is not JSON: {e}"))
    }

    /// Index of this user's shard (shard names are `shard1`, `shard2`, ...).
    pub fn shard_index(&self) -> usize {
        self.shard
            .trim_start_matches("shard")
            .parse::<usize>()
            .map(|n| n - 1)
            .unwrap_or_else(|_| panic!("unexpected shard name {:?}", self.shard))
    }
}
