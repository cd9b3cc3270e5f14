//! Active health checks.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

async fn status(client: &reqwest::Client, edge: &Edge) -> Value {
    client
        .get(edge.admin_url("/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

async fn wait_health(client: &reqwest::Client, edge: &Edge, server: usize, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(client, edge).await;
        if s["pools"][0]["servers"][server]["healthy"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server {server} never became healthy={want}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_check_takes_servers_out_and_back() {
    let dir = scratch("health");
    let certs = dev_certs(&dir.join("certs"));
    let (a, a_ok) = upstream_with_health("a").await;
    let (b, b_ok) = upstream_with_health("b").await;
    let ports = Ports::new();
    let mut cfg = base_config(&dir, &certs, &ports);
    cfg += "\n[[route]]\npool = \"web\"\n";
    cfg += &pool("web", &[a, b]);
    cfg += "health_check = { kind = \"http\", path = \"/healthz\", interval = \"200ms\", timeout = \"500ms\" }\n";
    let edge = Edge::start(&dir, &certs, ports, &cfg);
    let client = edge.client();
    // `/status` lists servers in config order.
    let a_index = 0;

    a_ok.store(false, std::sync::atomic::Ordering::Relaxed);
    wait_health(&client, &edge, a_index, false).await;
    for _ in 0..6 {
        assert_eq!(
            server_of(&get_echo(&client, &edge.https_url("/")).await.body),
            "b"
        );
    }

    // With every server failing its check the edge answers 503 without trying any.
    b_ok.store(false, std::sync::atomic::Ordering::Relaxed);
    wait_health(&client, &edge, 1 - a_index, false).await;
    let resp = client
        .get(edge.https_url("/"))
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 503);
    b_ok.store(true, std::sync::atomic::Ordering::Relaxed);

    a_ok.store(true, std::sync::atomic::Ordering::Relaxed);
    wait_health(&client, &edge, a_index, true).await;
    wait_health(&client, &edge, 1 - a_index, true).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(server_of(&get_echo(&client, &edge.https_url("/")).await.body).to_owned());
    }
    assert_eq!(seen.len(), 2, "both servers back in rotation: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_health_check_state_survives_a_reload() {
    let dir = scratch("health-tcp");
    let certs = dev_certs(&dir.join("certs"));
    let live = upstream("live").await;
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let ports = Ports::new();
    let mut cfg = base_config(&dir, &certs, &ports);
    cfg += "\n[[route]]\npool = \"web\"\n";
    cfg += &pool("web", &[live, dead]);
    cfg += "health_check = { interval = \"200ms\" }\n";
    let edge = Edge::start(&dir, &certs, ports, &cfg);
    let client = edge.client();
    // `/status` lists servers in config order.
    let dead_index = 1;
    wait_health(&client, &edge, dead_index, false).await;

    // Same pool and check: the dead server stays out right after the swap.
    std::fs::write(
        &edge.config,
        cfg.replace("\"web\"", "\"web\"\nname = \"renamed\""),
    )
    .expect("write");
    let resp = client
        .post(edge.admin_url("/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let s = status(&client, &edge).await;
    assert_eq!(s["generation"], 2);
    assert_eq!(
        s["pools"][0]["servers"][dead_index]["healthy"], false,
        "{s}"
    );
    let metrics = client
        .get(edge.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let before = metric_value(
        &metrics,
        &format!("edge_upstream_errors_total{{kind=\"connect\",pool=\"web\",server=\"{dead}\"}}"),
    );
    for _ in 0..6 {
        assert_eq!(
            server_of(&get_echo(&client, &edge.https_url("/")).await.body),
            "live"
        );
    }
    let metrics = client
        .get(edge.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let after = metric_value(
        &metrics,
        &format!("edge_upstream_errors_total{{kind=\"connect\",pool=\"web\",server=\"{dead}\"}}"),
    );
    assert_eq!(before, after, "no request tried the unhealthy server");
}

/// `/status` `healthy` of server `index` of the first pool.
async fn healthy(client: &reqwest::Client, edge: &Edge, index: usize) -> bool {
    status(client, edge).await["pools"][0]["servers"][index]["healthy"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_method_expected_status_rise_and_fall() {
    let dir = scratch("health-rise-fall");
    let certs = dev_certs(&dir.join("certs"));
    // 204 and 300-302 are "up"; a plain 200 is not, to prove the list is what counts.
    let a = Probed::start("a", 204).await;
    let b = Probed::start("b", 204).await;
    let ports = Ports::new();
    let mut cfg = base_config(&dir, &certs, &ports);
    cfg += "\n[[route]]\npool = \"web\"\n";
    cfg += &pool("web", &[a.addr, b.addr]);
    cfg += "max_fails = 0\n";
    cfg += "health_check = { kind = \"http\", method = \"HEAD\", path = \"/hc\", expect_status = [204, \"300-302\"], interval = \"100ms\", timeout = \"500ms\", rise = 3, fall = 2 }\n";
    let edge = Edge::start(&dir, &certs, ports, &cfg);
    let client = edge.client();
    wait_for("first probes", || async { a.count() >= 2 }).await;
    assert!(healthy(&client, &edge, 0).await);
    assert!(a.methods().iter().all(|m| m == "HEAD"), "{:?}", a.methods());

    // A single failed probe (fall = 2) does not take the server out: exactly one 200,
    // then an accepted status from the range.
    a.set(301);
    let from = a.count();
    a.script(&[200]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.count() < from + 5 {
        assert!(
            healthy(&client, &edge, 0).await,
            "one failure must not reach fall = 2"
        );
        assert!(Instant::now() < deadline, "probes stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.answered_since(from, 200), 1, "the blip was one probe");

    // Failing for good: down after (at least) `fall` consecutive failures.
    let from = a.count();
    a.set(200);
    wait_for("server down", || async {
        !healthy(&client, &edge, 0).await
    })
    .await;
    let failures = a.answered_since(from, 200);
    assert!(
        failures >= 2,
        "went down after {failures} failure(s); fall = 2"
    );
    for _ in 0..4 {
        let echo = get_echo(&client, &edge.https_url("/")).await;
        assert_eq!(server_of(&echo.body), "b");
    }

    // Back after (at least) `rise` consecutive successes.
    let from = a.count();
    a.set(204);
    wait_for("server up", || async { healthy(&client, &edge, 0).await }).await;
    let successes = a.answered_since(from, 204);
    assert!(
        successes >= 3,
        "came back after {successes} success(es); rise = 3"
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(server_of(&get_echo(&client, &edge.https_url("/")).await.body).to_owned());
    }
    assert_eq!(seen.len(), 2, "a is back in rotation: {seen:?}");
}
