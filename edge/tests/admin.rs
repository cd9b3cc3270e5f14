//! Admin API, reload (POST /reload and SIGHUP) and graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_metrics_and_status() {
    let (w1, w2) = (upstream("web-1").await, upstream("web-2").await);
    let mut setup = Setup::new("admin");
    setup
        .route("name = \"web\"\npool = \"webapp\"")
        .pool("webapp", &[w1, w2]);
    let edge = setup.start();
    let client = edge.client();

    let resp = client
        .get(edge.admin_url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "ok\n");

    for _ in 0..4 {
        get_echo(&client, &edge.https_url("/")).await;
    }
    let text = edge.metrics().await;
    for server in [w1, w2] {
        let series = format!("edge_requests_total{{class=\"2xx\",pool=\"webapp\",route=\"web\",server=\"{server}\"}}");
        assert_eq!(metric_value(&text, &series), 2.0, "{series} in:\n{text}");
    }
    assert_eq!(
        metric_value(&text, "edge_request_duration_seconds_count{route=\"web\"}"),
        4.0,
        "{text}"
    );
    assert_eq!(metric_value(&text, "edge_config_generation"), 1.0, "{text}");
    // Upstream keep-alive: each server got one connection, reused for its second request.
    for server in [w1, w2] {
        let labels = format!("pool=\"webapp\",reused=\"{{}}\",server=\"{server}\"");
        let new = metric_value(
            &text,
            &format!(
                "edge_upstream_connections_total{{{}}}",
                labels.replace("{}", "false")
            ),
        );
        let reused = metric_value(
            &text,
            &format!(
                "edge_upstream_connections_total{{{}}}",
                labels.replace("{}", "true")
            ),
        );
        assert_eq!((new, reused), (1.0, 1.0), "{server}:\n{text}");
    }

    let status = admin_status(&edge, None).await;
    assert_eq!(status["generation"], 1);
    assert_eq!(status["pools"][0]["name"], "webapp");
    assert_eq!(status["pools"][0]["servers"][0]["healthy"], true);
    assert_eq!(status["listeners"].as_array().map(Vec::len), Some(2));

    let resp = client
        .get(edge.admin_url("/nope"))
        .send()
        .await
        .expect("404");
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_good_configs_and_keeps_the_old_one_on_error() {
    let (old, new) = (upstream("old").await, upstream("new").await);
    let mut setup = Setup::new("reload");
    let base = setup.config.clone();
    let with_pool = |route_pool: &str, server| {
        format!(
            "{base}\n[[route]]\npool = \"{route_pool}\"\n{}",
            pool("web", &[server])
        )
    };
    setup.config = with_pool("web", old);
    let edge = setup.start();
    let client = edge.client();
    assert_eq!(
        server_of(&get_echo(&client, &edge.https_url("/")).await.body),
        "old"
    );

    // A broken file is rejected with its location and changes nothing.
    let (code, body) = edge.reload_with(&with_pool("missing", new)).await;
    assert_eq!(code, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("route[0].pool"),
        "{body}"
    );
    assert_eq!(
        server_of(&get_echo(&client, &edge.https_url("/")).await.body),
        "old"
    );

    // A valid one is swapped in.
    let (code, body) = edge.reload_with(&with_pool("web", new)).await;
    assert_eq!(code, 200);
    assert_eq!(body["generation"], 2);
    assert_eq!(
        server_of(&get_echo(&client, &edge.https_url("/")).await.body),
        "new"
    );

    // SIGHUP does the same.
    std::fs::write(&edge.config, with_pool("web", old)).expect("write");
    edge.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if server_of(&get_echo(&client, &edge.https_url("/")).await.body) == "old" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP reload not applied; log:\n{}",
            edge.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = edge.metrics().await;
    assert_eq!(metric_value(&text, "edge_config_generation"), 3.0, "{text}");
    assert_eq!(
        metric_value(&text, "edge_config_reloads_total{result=\"error\"}"),
        1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_promptly() {
    let w = upstream("web").await;
    let mut setup = Setup::new("term");
    setup.route("pool = \"web\"").pool("web", &[w]);
    let mut edge = setup.start();
    get_echo(&edge.client(), &edge.https_url("/")).await;
    edge.signal("TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = edge.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "edge still running after SIGTERM; log:\n{}",
            edge.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit {status:?}; log:\n{}", edge.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let w = upstream("web").await;
    let mut setup = Setup::new("drain");
    setup.config = setup
        .config
        .replace("grace_period = \"0s\"", "grace_period = \"10s\"");
    setup.route("pool = \"web\"").pool("web", &[w]);
    let mut edge = setup.start();
    let client = edge.client();
    let url = edge.https_url("/slow");
    let slow = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    edge.signal("TERM");
    let started = Instant::now();
    let status = slow
        .await
        .expect("join")
        .expect("in-flight request survives SIGTERM");
    assert_eq!(status, 200);
    let exit = loop {
        if let Some(status) = edge.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "not exited long before the 10s grace period; log:\n{}",
            edge.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "exited {:?} after SIGTERM",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_hands_the_sockets_to_an_upgraded_edge() {
    let w = upstream("web").await;
    let mut setup = Setup::new("upgrade");
    setup.route("pool = \"web\"").pool("web", &[w]);
    let mut old = setup.start();
    let client = old.client();
    get_echo(&client, &old.https_url("/")).await;

    let mut new = old.spawn_upgrade();
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal("QUIT");
    // Requests keep succeeding while the old process hands over and drains.
    let started = Instant::now();
    let mut served = 0;
    while old.child.try_wait().expect("wait").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "old edge never exited; log:\n{}",
            old.log()
        );
        let fresh = client_trusting(&old.ca);
        get_echo(&fresh, &old.https_url("/")).await;
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served > 0);
    // Only the new process holds the sockets now.
    assert!(
        new.child.try_wait().expect("wait").is_none(),
        "new edge died; log:\n{}",
        new.log()
    );
    let echo = get_echo(&client_trusting(&old.ca), &old.https_url("/")).await;
    assert_eq!(server_of(&echo.body), "web");
    let health = client
        .get(old.admin_url("/healthz"))
        .send()
        .await
        .expect("healthz on the new edge");
    assert_eq!(health.status(), 200);
}
