//! Request policy end to end: body size limits, HSTS, and the access log.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that reads the whole request body before answering with its length, so a
/// limit can only be enforced by the edge, never raced by an early upstream response.
async fn body_reader() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let body = axum::body::to_bytes(req.into_body(), usize::MAX)
            .await
            .map(|b| b.len())
            .unwrap_or(0);
        axum::Json(serde_json::json!({ "server": "reader", "received": body }))
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Sends raw bytes on a fresh connection and returns the status line's code (0 if the
/// edge closed without answering).
async fn raw_status(port: u16, request: &[u8]) -> u16 {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_over_the_limit_get_413() {
    let reader = body_reader().await;
    let mut setup = Setup::new("bodylimit");
    let http = setup.ports.http;
    setup.config = setup.config.replace(
        &format!("address = \"127.0.0.1:{http}\"\n"),
        &format!("address = \"127.0.0.1:{http}\"\nmax_body_size = \"1k\"\n"),
    );
    setup
        .route("pool = \"web\"")
        .route("path_prefix = \"/upload\"\npool = \"web\"\nmax_body_size = \"1m\"")
        .pool("web", &[reader]);
    let edge = setup.start();
    let client = edge.client();

    let post = |path: &str, n: usize| client.post(edge.http_url(path)).body(vec![b'x'; n]).send();
    let small = post("/", 1000).await.expect("small");
    assert_eq!(small.status(), 200);
    let big = post("/", 1025).await.expect("big");
    assert_eq!(
        big.status(),
        413,
        "declared Content-Length over the listener limit"
    );
    let routed = post("/upload", 100_000).await.expect("upload");
    assert_eq!(routed.status(), 200, "the route's own limit applies");
    let body: serde_json::Value = routed.json().await.expect("json");
    assert_eq!(body["received"], 100_000);

    // No Content-Length: the streamed body is counted.
    let chunk = "x".repeat(800);
    let chunked = format!(
        "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    assert_eq!(
        raw_status(http, chunked.as_bytes()).await,
        413,
        "chunked over the limit"
    );
    let one = format!(
        "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    assert_eq!(
        raw_status(http, one.as_bytes()).await,
        200,
        "chunked under the limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_on_https_responses_only() {
    let web = upstream("web").await;
    let mut setup = Setup::new("hsts");
    setup.config = setup
        .config
        .replace("h2 = true\n", "h2 = true\nhsts = \"max-age=600\"\n");
    setup.route("host = \"localhost\"\npath_prefix = \"/app\"\npool = \"web\"");
    setup.route("host = \"127.0.0.1\"\npath_prefix = \"/strict\"\npool = \"web\"\nhsts = \"max-age=31536000; includeSubDomains\"");
    setup.route("host = \"127.0.0.1\"\npool = \"web\"");
    setup.pool("web", &[web]);
    let edge = setup.start();
    let client = edge.client();
    let hsts = |r: &reqwest::Response| {
        r.headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };

    let r = client.get(edge.https_url("/")).send().await.expect("https");
    assert_eq!(r.status(), 200);
    assert_eq!(hsts(&r).as_deref(), Some("max-age=600"), "listener value");
    let r = client
        .get(edge.https_url("/strict/x"))
        .send()
        .await
        .expect("https");
    assert_eq!(
        hsts(&r).as_deref(),
        Some("max-age=31536000; includeSubDomains"),
        "route override"
    );
    let r = client.get(edge.http_url("/")).send().await.expect("http");
    assert_eq!(r.status(), 200);
    assert_eq!(hsts(&r), None, "never over plain HTTP");
    // Answers the edge makes itself carry it too.
    let r = client
        .get(format!("https://localhost:{}/", edge.https))
        .send()
        .await
        .expect("https 404");
    assert_eq!(r.status(), 404);
    assert_eq!(hsts(&r).as_deref(), Some("max-age=600"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request() {
    let web = upstream("web").await;
    let mut setup = Setup::new("accesslog");
    let log = setup.dir.join("access.log");
    setup
        .raw(&format!(
            "\n[access_log]\npath = \"{}\"\nformat = \"json\"",
            log.display()
        ))
        .route("name = \"webapp\"\npool = \"web\"")
        .pool("web", &[web]);
    let edge = setup.start();
    let client = edge.client();
    for i in 0..3 {
        let r = client
            .get(edge.https_url(&format!("/contacts/{i}?q=1")))
            .header("x-request-id", format!("req-{i}"))
            .header("user-agent", "edge-test")
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
    }
    // The same over plain HTTP/1.1, which the edge's fast path serves.
    let r = client
        .get(edge.http_url("/contacts/3?q=1"))
        .header("x-request-id", "req-3")
        .header("user-agent", "edge-test")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines: Vec<serde_json::Value> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<_> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        if lines.len() >= 4 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 4, "{lines:?}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["method"], "GET", "{l}");
        assert_eq!(l["path"], format!("/contacts/{i}?q=1"), "{l}");
        assert_eq!(l["status"], 200, "{l}");
        assert_eq!(l["upstream"], web.to_string(), "{l}");
        assert_eq!(l["request_id"], format!("req-{i}"), "{l}");
        assert_eq!(l["route"], "webapp", "{l}");
        assert_eq!(l["listener"], if i < 3 { "https" } else { "http" }, "{l}");
        assert_eq!(l["client"], "127.0.0.1", "{l}");
        assert_eq!(l["user_agent"], "edge-test", "{l}");
        assert!(l["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{l}");
        assert!(l["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_huge_headers_get_408_and_431_and_connections_are_capped() {
    let web = upstream("web").await;
    let mut setup = Setup::new("headers");
    let http = setup.ports.http;
    setup.config = setup.config.replace(
        &format!("address = \"127.0.0.1:{http}\"\n"),
        &format!(
            "address = \"127.0.0.1:{http}\"\nheader_timeout = \"500ms\"\nmax_header_size = \"4k\"\nmax_connections = 3\n"
        ),
    );
    setup.route("pool = \"web\"").pool("web", &[web]);
    let edge = setup.start();

    // Slowloris: a header trickling in, one line at a time, never finished.
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http))
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n")
        .await
        .expect("write");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if s.write_all(b"x-slow: 1\r\n").await.is_err() {
            break;
        }
    }
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 408"), "got {text:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Keep-alive: the second request on a connection is held to the same deadline.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http))
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n")
        .await
        .expect("write");
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(text.contains("HTTP/1.1 408"), "got {text:?}");

    // Oversized header.
    let big = format!(
        "GET / HTTP/1.1\r\nhost: a\r\ncookie: {}\r\n\r\n",
        "c".repeat(5000)
    );
    assert_eq!(raw_status(http, big.as_bytes()).await, 431);
    let fits = format!(
        "GET / HTTP/1.1\r\nhost: a\r\ncookie: {}\r\n\r\n",
        "c".repeat(3000)
    );
    assert_eq!(raw_status(http, fits.as_bytes()).await, 200);

    // Three idle connections fill the listener; a fourth is closed unanswered.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", http))
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        raw_status(http, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await,
        0,
        "over max_connections"
    );
    drop(idle);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        raw_status(http, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await,
        200,
        "slots freed"
    );

    let metrics = edge.metrics().await;
    for reason in ["header_timeout", "header_too_large", "max_connections"] {
        let series =
            format!("edge_downstream_rejected_total{{listener=\"http\",reason=\"{reason}\"}}");
        assert!(
            metric_value(&metrics, &series) >= 1.0,
            "{series} in:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_its_pool_budget_gets_504() {
    let stuck = Ctl::start("stuck").await;
    let mut setup = Setup::new("reqtimeout");
    setup.route("pool = \"web\"");
    setup.pool("web", &[stuck.addr]);
    setup.raw("request_timeout = \"400ms\"");
    let edge = setup.start();
    let client = edge.client();
    let ok = client.get(edge.http_url("/")).send().await.expect("get");
    assert_eq!(ok.status(), 200);
    let started = Instant::now();
    let r = client
        .get(edge.http_url("/hold"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "{took:?}"
    );
}
