//! Active health checks.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// `/status` `healthy` of server `index` of the first pool (servers in config order).
async fn healthy(edge: &Edge, index: usize) -> bool {
    admin_status(edge, None).await["pools"][0]["servers"][index]["healthy"] == true
}

async fn wait_health(edge: &Edge, server: usize, want: bool) {
    wait_for(&format!("server {server} healthy={want}"), || async {
        healthy(edge, server).await == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_check_takes_servers_out_and_back() {
    let (a, a_ok) = upstream_with_health("a").await;
    let (b, b_ok) = upstream_with_health("b").await;
    let mut setup = Setup::new("health");
    setup.route("pool = \"web\"").pool("web", &[a, b]).raw(
        "health_check = { kind = \"http\", path = \"/healthz\", interval = \"200ms\", timeout = \"500ms\" }",
    );
    let edge = setup.start();
    let client = edge.client();
    // `/status` lists servers in config order.
    let a_index = 0;

    a_ok.store(false, std::sync::atomic::Ordering::Relaxed);
    wait_health(&edge, a_index, false).await;
    for _ in 0..6 {
        assert_eq!(
            server_of(&get_echo(&client, &edge.https_url("/")).await.body),
            "b"
        );
    }

    // With every server failing its check the edge answers 503 without trying any.
    b_ok.store(false, std::sync::atomic::Ordering::Relaxed);
    wait_health(&edge, 1 - a_index, false).await;
    let resp = client
        .get(edge.https_url("/"))
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 503);
    b_ok.store(true, std::sync::atomic::Ordering::Relaxed);

    a_ok.store(true, std::sync::atomic::Ordering::Relaxed);
    wait_health(&edge, a_index, true).await;
    wait_health(&edge, 1 - a_index, true).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(server_of(&get_echo(&client, &edge.https_url("/")).await.body).to_owned());
    }
    assert_eq!(seen.len(), 2, "both servers back in rotation: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_health_check_state_survives_a_reload() {
    let live = upstream("live").await;
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut setup = Setup::new("health-tcp");
    setup
        .route("pool = \"web\"")
        .pool("web", &[live, dead])
        .raw("health_check = { interval = \"200ms\" }");
    let edge = setup.start();
    let client = edge.client();
    // `/status` lists servers in config order.
    let dead_index = 1;
    wait_health(&edge, dead_index, false).await;

    // Same pool and check: the dead server stays out right after the swap.
    let (code, body) = edge
        .reload_with(
            &setup
                .config
                .replace("\"web\"", "\"web\"\nname = \"renamed\""),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let s = admin_status(&edge, None).await;
    assert_eq!(s["generation"], 2);
    assert_eq!(
        s["pools"][0]["servers"][dead_index]["healthy"], false,
        "{s}"
    );
    let series =
        format!("edge_upstream_errors_total{{kind=\"connect\",pool=\"web\",server=\"{dead}\"}}");
    let before = metric_value(&edge.metrics().await, &series);
    for _ in 0..6 {
        assert_eq!(
            server_of(&get_echo(&client, &edge.https_url("/")).await.body),
            "live"
        );
    }
    let after = metric_value(&edge.metrics().await, &series);
    assert_eq!(before, after, "no request tried the unhealthy server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_method_expected_status_rise_and_fall() {
    // 204 and 300-302 are "up"; a plain 200 is not, to prove the list is what counts.
    let a = Probed::start("a", 204).await;
    let b = Probed::start("b", 204).await;
    let mut setup = Setup::new("health-rise-fall");
    setup.route("pool = \"web\"").pool("web", &[a.addr, b.addr]).raw(
        "max_fails = 0\nhealth_check = { kind = \"http\", method = \"HEAD\", path = \"/hc\", expect_status = [204, \"300-302\"], interval = \"100ms\", timeout = \"500ms\", rise = 3, fall = 2 }",
    );
    let edge = setup.start();
    let client = edge.client();
    wait_for("first probes", || async { a.count() >= 2 }).await;
    assert!(healthy(&edge, 0).await);
    assert!(a.methods().iter().all(|m| m == "HEAD"), "{:?}", a.methods());

    // A single failed probe (fall = 2) does not take the server out: exactly one 200,
    // then an accepted status from the range.
    a.set(301);
    let from = a.count();
    a.script(&[200]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.count() < from + 5 {
        assert!(
            healthy(&edge, 0).await,
            "one failure must not reach fall = 2"
        );
        assert!(Instant::now() < deadline, "probes stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.answered_since(from, 200), 1, "the blip was one probe");

    // Failing for good: down after (at least) `fall` consecutive failures.
    let from = a.count();
    a.set(200);
    wait_for("server down", || async { !healthy(&edge, 0).await }).await;
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
    wait_for("server up", || async { healthy(&edge, 0).await }).await;
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
