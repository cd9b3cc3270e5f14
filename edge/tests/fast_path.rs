//! The HTTP/1.1 fast path (`proxy::fast`) end to end: it must behave exactly like the
//! Pingora path it bypasses, frame bodies correctly in both directions, survive upstreams
//! that close pooled connections, and hand what it does not take to Pingora on the same
//! connection.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request as a raw upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body_len: usize,
    body_sum: u64,
}

/// What a raw upstream sends back: pieces written with a short pause between them, then
/// whether to close the connection.
type Reply = (Vec<Vec<u8>>, bool);

/// An HTTP/1.1 upstream written by hand, so a test controls every byte of the response.
struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl RawUpstream {
    async fn start(reply: fn(&str) -> Reply) -> RawUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen2, conns2) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                conns2.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_raw(stream, reply, seen2.clone()));
            }
        });
        RawUpstream {
            addr,
            seen,
            connections,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn serve_raw(mut stream: TcpStream, reply: fn(&str) -> Reply, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_until_head(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let len = content_length(&head);
        while buf.len() < len {
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        seen.lock().expect("lock").push(Seen {
            head: head.clone(),
            body_len: body.len(),
            body_sum: body.iter().map(|b| u64::from(*b)).sum(),
        });
        let (pieces, close) = reply(&head);
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if stream.write_all(piece).await.is_err() {
                return;
            }
        }
        if close {
            return;
        }
    }
}

async fn read_until_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(p + 4);
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// A response as a raw client read it.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A raw HTTP/1.1 client connection, reading responses exactly as framed.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to edge");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).await.expect("write request");
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("response within 10 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn response(&mut self, head_request: bool) -> Response {
        let (status, headers, head_len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut slots);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&self.buf) {
                let headers = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect::<BTreeMap<_, _>>();
                break (r.code.unwrap_or(0), headers, n);
            }
            assert!(
                self.fill().await,
                "connection closed before a response head"
            );
        };
        self.buf.drain(..head_len);
        let body = if head_request || status == 204 || status == 304 {
            Vec::new()
        } else if let Some(len) = headers.get("content-length") {
            let len: usize = len.parse().expect("content-length");
            while self.buf.len() < len {
                assert!(self.fill().await, "connection closed mid-body");
            }
            self.buf.drain(..len).collect()
        } else if headers
            .get("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            self.dechunk().await
        } else {
            while self.fill().await {}
            std::mem::take(&mut self.buf)
        };
        Response {
            status,
            headers,
            body,
        }
    }

    async fn dechunk(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                assert!(self.fill().await, "closed in a chunk size");
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .expect("chunk size");
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers (none expected) end with an empty line.
                while !self.buf.starts_with(b"\r\n") {
                    assert!(self.fill().await, "closed before the last CRLF");
                }
                self.buf.drain(..2);
                return body;
            }
            while self.buf.len() < size + 2 {
                assert!(self.fill().await, "closed mid-chunk");
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    /// Whether the edge closed the connection (EOF with nothing more to read).
    async fn is_closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").into_bytes()
}

/// Adds a third listener, plain HTTP with the fast path off, and returns its port.
fn add_pingora_only_listener(setup: &mut Setup) -> u16 {
    let port = free_port();
    setup.raw(&format!(
        "\n[[listener]]\nname = \"pingora-only\"\naddress = \"127.0.0.1:{port}\"\nfast_path = false\n"
    ));
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_and_pingora_send_and_return_the_same_headers() {
    let web = upstream("web-1").await;
    let mut setup = Setup::new("fast-parity");
    setup
        .route(
            "pool = \"web\"\n\
             request_headers = { add = { \"x-env\" = \"test\" }, remove = [\"x-secret\"] }\n\
             response_headers = { add = { \"x-frame-options\" = \"DENY\" }, remove = [\"x-powered-by\"] }",
        )
        .pool("web", &[web]);
    let pingora_port = add_pingora_only_listener(&mut setup);
    let edge = setup.start();

    let request = b"GET /contacts?page=2 HTTP/1.1\r\nHost: App.Test\r\n\
        X-Forwarded-For: 203.0.113.9\r\nX-Request-Id: trace-42\r\nX-Secret: s\r\n\
        Accept: application/json\r\nUser-Agent: parity/1\r\n\r\n";
    let mut answers = Vec::new();
    for port in [edge.http, pingora_port] {
        let mut client = Client::connect(port).await;
        client.send(request).await;
        let resp = client.response(false).await;
        assert_eq!(resp.status, 200, "port {port}");
        let body: Value = serde_json::from_slice(&resp.body).expect("echo json");
        answers.push((resp.headers, body));
    }
    let (fast, pingora) = (&answers[0], &answers[1]);
    let upstream_saw = |a: &(BTreeMap<String, String>, Value)| a.1["headers"].clone();
    assert_eq!(
        upstream_saw(fast),
        upstream_saw(pingora),
        "the upstream must see the same request"
    );
    let b = &fast.1;
    assert_eq!(header(b, "x-forwarded-for"), Some("203.0.113.9, 127.0.0.1"));
    assert_eq!(header(b, "x-request-id"), Some("trace-42"));
    assert_eq!(header(b, "x-env"), Some("test"));
    assert_eq!(header(b, "x-secret"), None);
    assert_eq!(header(b, "x-forwarded-host"), Some("App.Test"));
    assert_eq!(fast.1["path"], "/contacts");
    let client_saw = |a: &(BTreeMap<String, String>, Value)| {
        let mut h = a.0.clone();
        h.remove("date");
        h
    };
    assert_eq!(
        client_saw(fast),
        client_saw(pingora),
        "the client must get the same headers"
    );
    assert_eq!(
        fast.0.get("x-request-id").map(String::as_str),
        Some("trace-42")
    );
    assert_eq!(
        fast.0.get("x-frame-options").map(String::as_str),
        Some("DENY")
    );
    assert!(!fast.0.contains_key("x-powered-by"));
}

fn framing_reply(head: &str) -> Reply {
    let path = head.split(' ').nth(1).unwrap_or("/");
    let ok = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    match path {
        "/upload" => {
            let len = content_length(head);
            (vec![ok(&len.to_string())], false)
        }
        "/chunked" => (
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
                b"6\r\n world\r\n".to_vec(),
                b"0\r\n\r\n".to_vec(),
            ],
            false,
        ),
        "/head" => (
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".to_vec()],
            false,
        ),
        "/empty" => (vec![b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()], false),
        "/early-hints" => (
            vec![
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n".to_vec(),
                ok("after hints"),
            ],
            false,
        ),
        "/until-close" => (
            vec![
                b"HTTP/1.1 200 OK\r\n\r\nfirst ".to_vec(),
                b"and last".to_vec(),
            ],
            true,
        ),
        _ => (vec![ok(path)], false),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_keep_their_framing_both_ways_on_one_connection() {
    let up = RawUpstream::start(framing_reply).await;
    let mut setup = Setup::new("fast-framing");
    setup.route("pool = \"web\"").pool("web", &[up.addr]);
    let edge = setup.start();
    let mut client = Client::connect(edge.http).await;

    // A 3 MiB upload: most of it streams after the head was forwarded.
    let body: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    let mut req = format!(
        "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    client.send(&req).await;
    let resp = client.response(false).await;
    assert_eq!((resp.status, resp.body), (200, b"3145728".to_vec()));
    let upload = up.seen().pop().expect("upload seen");
    assert!(
        upload.head.starts_with("POST /upload HTTP/1.1\r\n"),
        "{}",
        upload.head
    );
    assert!(
        upload.head.contains("\r\nx-forwarded-proto: http\r\n"),
        "{}",
        upload.head
    );
    assert_eq!(upload.body_len, body.len());
    assert_eq!(
        upload.body_sum,
        body.iter().map(|b| u64::from(*b)).sum::<u64>(),
        "the bytes arrive unchanged"
    );

    client.send(&get("/chunked")).await;
    let resp = client.response(false).await;
    assert_eq!(resp.body, b"hello world");
    assert_eq!(
        resp.headers.get("transfer-encoding").map(String::as_str),
        Some("chunked")
    );

    client.send(b"HEAD /head HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let resp = client.response(true).await;
    assert_eq!(
        (
            resp.status,
            resp.headers.get("content-length").map(String::as_str)
        ),
        (200, Some("10"))
    );

    client.send(&get("/empty")).await;
    assert_eq!(client.response(false).await.status, 204);

    client.send(&get("/early-hints")).await;
    let resp = client.response(false).await;
    assert_eq!((resp.status, resp.body), (200, b"after hints".to_vec()));

    // Everything above used one client connection and one upstream connection.
    assert_eq!(up.connections.load(Ordering::Relaxed), 1);

    client.send(&get("/until-close")).await;
    let resp = client.response(false).await;
    assert_eq!(resp.body, b"first and last");
    assert_eq!(
        resp.headers.get("connection").map(String::as_str),
        Some("close")
    );
    assert!(
        client.is_closed().await,
        "a body delimited by close ends the connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let web = upstream("web-1").await;
    let mut setup = Setup::new("fast-pipeline");
    setup.route("pool = \"web\"").pool("web", &[web]);
    let edge = setup.start();
    let mut client = Client::connect(edge.http).await;
    let mut burst = Vec::new();
    for i in 0..5 {
        burst.extend_from_slice(&get(&format!("/p{i}")));
    }
    client.send(&burst).await;
    for i in 0..5 {
        let resp = client.response(false).await;
        let body: Value = serde_json::from_slice(&resp.body).expect("json");
        assert_eq!(body["path"], format!("/p{i}"));
    }
}

fn close_after_each(_head: &str) -> Reply {
    // Keep-alive is implied (HTTP/1.1, no `Connection: close`), yet the socket closes.
    (
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()],
        true,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_the_upstream_closed_are_replaced() {
    let up = RawUpstream::start(close_after_each).await;
    let mut setup = Setup::new("fast-stale");
    setup.route("pool = \"web\"").pool("web", &[up.addr]);
    let edge = setup.start();
    install_crypto_provider();
    let client = reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("client");
    for i in 0..40 {
        let resp = client
            .get(edge.http_url(&format!("/n{i}")))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.text().await.expect("body"), "ok");
        if i % 2 == 0 {
            // Sometimes the edge sees the FIN before the next request, sometimes not.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(
        up.seen().len(),
        40,
        "every request reached the upstream once"
    );
}

fn garbage(_head: &str) -> Reply {
    (vec![b"NOT HTTP AT ALL\r\n\r\n".to_vec()], true)
}

fn silent(_head: &str) -> Reply {
    (vec![], false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_answered_and_retried_like_pingora() {
    let live = upstream("live").await;
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let bad = RawUpstream::start(garbage).await;
    let mute = RawUpstream::start(silent).await;
    let mut setup = Setup::new("fast-failures");
    setup
        .route("path_prefix = \"/dead\"\npool = \"dead\"")
        .route("path_prefix = \"/failover\"\npool = \"failover\"")
        .route("path_prefix = \"/bad\"\npool = \"bad\"")
        .route("path_prefix = \"/mute\"\npool = \"mute\"")
        .pool("dead", &[dead])
        .raw("max_fails = 0")
        .pool("failover", &[dead, live])
        .pool("bad", &[bad.addr])
        .pool("mute", &[mute.addr])
        .raw("read_timeout = \"300ms\"");
    let edge = setup.start();

    let mut client = Client::connect(edge.http).await;
    client.send(&get("/dead")).await;
    let resp = client.response(false).await;
    assert_eq!(resp.status, 502);
    assert!(resp.headers.contains_key("x-request-id"));
    assert!(
        client.is_closed().await,
        "the connection closes after a 502"
    );

    for _ in 0..4 {
        let mut client = Client::connect(edge.http).await;
        client.send(&get("/failover")).await;
        let resp = client.response(false).await;
        assert_eq!(
            resp.status, 200,
            "a refused connect moves on to the live server"
        );
        let body: Value = serde_json::from_slice(&resp.body).expect("json");
        assert_eq!(body["server"], "live");
    }

    let mut client = Client::connect(edge.http).await;
    client.send(&get("/bad")).await;
    assert_eq!(client.response(false).await.status, 502);

    let mut client = Client::connect(edge.http).await;
    client.send(&get("/mute")).await;
    assert_eq!(client.response(false).await.status, 504);

    let metrics = edge.metrics().await;
    let connect_errors = metric_value(
        &metrics,
        &format!("edge_upstream_errors_total{{kind=\"connect\",pool=\"dead\",server=\"{dead}\"}}"),
    );
    assert!(connect_errors >= 1.0, "{metrics}");
    assert_eq!(
        metric_value(
            &metrics,
            &format!(
                "edge_requests_total{{class=\"5xx\",pool=\"bad\",route=\"/bad\",server=\"{}\"}}",
                bad.addr
            )
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_left_to_pingora_share_the_connection_with_fast_ones() {
    let web = upstream("web-1").await;
    let mut setup = Setup::new("fast-handoff");
    setup.route("pool = \"web\"").pool("web", &[web]);
    let edge = setup.start();
    let mut client = Client::connect(edge.http).await;
    let path_of = |r: &Response| -> String {
        let body: Value = serde_json::from_slice(&r.body).expect("json");
        body["path"].as_str().unwrap_or_default().to_owned()
    };

    client.send(&get("/fast-1")).await;
    assert_eq!(path_of(&client.response(false).await), "/fast-1");
    // A chunked request body is Pingora's.
    client
        .send(b"POST /chunked-body HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await;
    assert_eq!(path_of(&client.response(false).await), "/chunked-body");
    client.send(&get("/fast-2")).await;
    assert_eq!(path_of(&client.response(false).await), "/fast-2");
    client.send(&get("/fast-3")).await;
    assert_eq!(path_of(&client.response(false).await), "/fast-3");
    // And HTTP/1.0.
    client
        .send(b"GET /old HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n")
        .await;
    assert_eq!(path_of(&client.response(false).await), "/old");

    let metrics = edge.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            &format!(
                "edge_requests_total{{class=\"2xx\",pool=\"web\",route=\"/\",server=\"{web}\"}}"
            )
        ),
        5.0,
        "{metrics}"
    );
    let reused = metric_value(
        &metrics,
        &format!(
            "edge_upstream_connections_total{{pool=\"web\",reused=\"true\",server=\"{web}\"}}"
        ),
    );
    assert!(
        reused >= 2.0,
        "fast requests reuse pooled connections: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_parked_while_idle_serves_its_next_requests() {
    let web = upstream("web-1").await;
    let mut setup = Setup::new("fast-parked");
    setup.route("pool = \"web\"").pool("web", &[web]);
    let edge = setup.start();
    let mut client = Client::connect(edge.http).await;
    for round in 0..3 {
        client.send(&get(&format!("/r{round}"))).await;
        let resp = client.response(false).await;
        let body: Value = serde_json::from_slice(&resp.body).expect("json");
        assert_eq!(body["path"], format!("/r{round}"));
        // Longer than the edge keeps an idle connection's buffer (250 ms).
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // A request arriving in pieces after parking, and a pipelined pair, still parse.
    client.send(b"GET /sl").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut rest = b"ow HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
    rest.extend_from_slice(&get("/after"));
    client.send(&rest).await;
    for path in ["/slow", "/after"] {
        let resp = client.response(false).await;
        let body: Value = serde_json::from_slice(&resp.body).expect("json");
        assert_eq!(body["path"], path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_larger_than_the_first_buffer_arrives_whole() {
    let web = upstream("web-1").await;
    let mut setup = Setup::new("fast-big-head");
    setup.route("pool = \"web\"").pool("web", &[web]);
    let edge = setup.start();
    let mut client = Client::connect(edge.http).await;
    // 6 KB of cookie: several times the edge's initial 1 KiB header buffer.
    let cookie: String = (0..6000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for _ in 0..2 {
        client
            .send(format!("GET /big HTTP/1.1\r\nHost: h\r\nCookie: c={cookie}\r\n\r\n").as_bytes())
            .await;
        let resp = client.response(false).await;
        assert_eq!(resp.status, 200);
        let body: Value = serde_json::from_slice(&resp.body).expect("json");
        assert_eq!(
            header(&body, "cookie"),
            Some(format!("c={cookie}").as_str())
        );
    }
}
