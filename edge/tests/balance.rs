//! Pool behaviour end to end: backup servers, least-conn, retries of idempotent requests
//! on another server, and draining a server through the admin API.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_takes_traffic_only_while_every_primary_is_down() {
    let primary = Ctl::start("primary").await;
    let backup = upstream("backup").await;
    let mut setup = Setup::new("backup");
    setup.route("pool = \"web\"").raw(&format!(
        "\n[pool.web]\nservers = [{{ address = \"{}\" }}, {{ address = \"{backup}\", backup = true }}]\nconnect_timeout = \"500ms\"\nmax_fails = 1\nfail_timeout = \"1s\"\n",
        primary.addr
    ));
    let edge = setup.start();
    let client = edge.client();
    for _ in 0..6 {
        let echo = get_echo(&client, &edge.http_url("/")).await;
        assert_eq!(server_of(&echo.body), "primary");
    }
    let status = admin_status(&edge, None).await;
    assert_eq!(status_server(&status, "web", backup)["backup"], true);

    primary.kill();
    for _ in 0..6 {
        let echo = get_echo(&client, &edge.http_url("/")).await;
        assert_eq!(server_of(&echo.body), "backup", "primary is down");
    }

    // Back up: once its passive ejection (fail_timeout) ends, the primary has it all again.
    let _revived = Ctl::start_at("primary", primary.addr).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..6 {
        let echo = get_echo(&client, &edge.http_url("/")).await;
        assert_eq!(server_of(&echo.body), "primary", "primary is back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_sends_new_requests_to_the_idle_server() {
    let (a, b) = (Ctl::start("a").await, Ctl::start("b").await);
    let mut setup = Setup::new("leastconn");
    setup.route("pool = \"web\"");
    setup.pool("web", &[a.addr, b.addr]);
    setup.raw("algorithm = \"least_conn\"");
    let edge = setup.start();
    let client = edge.client();

    // Idle pool: ties rotate, so both servers get requests.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..6 {
        let echo = get_echo(&client, &edge.http_url("/")).await;
        *seen.entry(server_of(&echo.body).to_owned()).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    let held = tokio::spawn({
        let (client, url) = (client.clone(), edge.http_url("/hold"));
        async move { get_echo(&client, &url).await }
    });
    let busy = wait_busy(&edge, None, "web", &[&a, &b]).await.name;
    for _ in 0..8 {
        // The previous request may still be counted on the idle server for a
        // moment after its answer; least-conn compares the counts as they are.
        assert_eq!(wait_busy(&edge, None, "web", &[&a, &b]).await.name, busy);
        let echo = get_echo(&client, &edge.http_url("/")).await;
        assert_ne!(
            server_of(&echo.body),
            busy,
            "the busy server got a new request"
        );
    }
    a.release();
    b.release();
    let held = held.await.expect("held request");
    assert_eq!(server_of(&held.body), busy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_survive_a_killed_upstream() {
    let (a, b) = (Ctl::start("a").await, Ctl::start("b").await);
    let mut setup = Setup::new("retry");
    setup.route("pool = \"web\"");
    setup.pool("web", &[a.addr, b.addr]);
    setup.raw("max_fails = 1\nfail_timeout = \"30s\"");
    let edge = setup.start();
    let client = edge.client();

    let failures = Arc::new(AtomicUsize::new(0));
    let served: Arc<std::sync::Mutex<HashMap<String, usize>>> = Arc::default();
    let until = Instant::now() + Duration::from_millis(1500);
    let loops: Vec<_> = (0..4)
        .map(|_| {
            // `close`: every request on a fresh upstream connection. Pingora's own policy
            // only retries on reused ones, so this isolates the edge's retry.
            let (client, url) = (client.clone(), edge.http_url("/delay/close"));
            let (failures, served) = (failures.clone(), served.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => {
                            let body: serde_json::Value = r.json().await.expect("json");
                            let mut s = served.lock().expect("lock");
                            *s.entry(server_of(&body).to_owned()).or_default() += 1;
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.kill();
    for l in loops {
        l.await.expect("loop");
    }
    let served = served.lock().expect("lock").clone();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "served: {served:?}");
    assert!(served.get("a").copied().unwrap_or(0) > 0, "{served:?}");
    assert!(served.get("b").copied().unwrap_or(0) > 10, "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_stops_new_requests_while_in_flight_ones_complete() {
    let (a, b) = (Ctl::start("a").await, Ctl::start("b").await);
    let mut setup = Setup::new("drain");
    setup.config = setup
        .config
        .replace("[admin]\n", "[admin]\ntoken = \"s3cret\"\n");
    setup.route("pool = \"web\"");
    setup.pool("web", &[a.addr, b.addr]);
    let edge = setup.start();
    let client = edge.client();
    let token = Some("s3cret");

    // The token guards everything but the liveness probe.
    let resp = client
        .get(edge.admin_url("/status"))
        .send()
        .await
        .expect("status");
    assert_eq!(resp.status(), 401);
    let resp = client
        .get(edge.admin_url("/status"))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("status");
    assert_eq!(resp.status(), 401);
    let resp = client
        .get(edge.admin_url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.status(), 200);

    let held = tokio::spawn({
        let (client, url) = (client.clone(), edge.http_url("/hold"));
        async move { get_echo(&client, &url).await }
    });
    let busy = wait_busy(&edge, token, "web", &[&a, &b]).await;
    let (busy_addr, busy_name) = (busy.addr, busy.name);
    let action = |what: &str| edge.admin_url(&format!("/pools/web/servers/{busy_addr}/{what}"));

    let resp = client.post(action("drain")).send().await.expect("drain");
    assert_eq!(resp.status(), 401, "drain needs the token");
    let resp = client
        .post(action("drain"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("drain");
    assert_eq!(resp.status(), 200);
    let server: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(server["drained"], true, "{server}");
    assert_eq!(server["in_flight"], 1, "{server}");

    for _ in 0..6 {
        let echo = get_echo(&client, &edge.http_url("/")).await;
        assert_ne!(
            server_of(&echo.body),
            busy_name,
            "a drained server got a new request"
        );
    }
    a.release();
    b.release();
    let held = held.await.expect("held request");
    assert_eq!(
        server_of(&held.body),
        busy_name,
        "the in-flight request completed"
    );
    // The lease ends in the logging phase, just after the client has its response.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = admin_status(&edge, token).await;
        let s = status_server(&status, "web", busy_addr);
        assert_eq!(s["drained"], true, "{s}");
        if s["in_flight"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "in-flight count never dropped: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Weight of the other server, then enable the drained one again.
    let other = if busy_addr == a.addr { b.addr } else { a.addr };
    let resp = client
        .put(edge.admin_url(&format!("/pools/web/servers/{other}/weight")))
        .bearer_auth("s3cret")
        .body("3")
        .send()
        .await
        .expect("weight");
    assert_eq!(resp.status(), 200);
    let resp = client
        .post(action("enable"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("enable");
    assert_eq!(resp.status(), 200);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..8 {
        let echo = get_echo(&client, &edge.http_url("/")).await;
        *seen.entry(server_of(&echo.body).to_owned()).or_default() += 1;
    }
    assert_eq!(
        seen.get(busy_name),
        Some(&2),
        "weights 1:3 after enable: {seen:?}"
    );
    let status = admin_status(&edge, token).await;
    assert_eq!(status_server(&status, "web", other)["weight"], 3);
    assert_eq!(status_server(&status, "web", other)["configured_weight"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_on_5xx_ejects_a_server_that_keeps_answering_errors() {
    // The same two servers in two pools: one counts 5xx as failures, one (default) not.
    let (bad, good) = (
        Probed::start("bad", 500).await,
        Probed::start("good", 200).await,
    );
    let mut setup = Setup::new("fail-5xx");
    setup
        .route("host = \"strict.test\"\npool = \"strict\"")
        .route("pool = \"lenient\"")
        .pool("strict", &[bad.addr, good.addr])
        .raw("max_fails = 2\nfail_timeout = \"30s\"\nfail_on_5xx = true")
        .pool("lenient", &[bad.addr, good.addr])
        .raw("max_fails = 2\nfail_timeout = \"30s\"");
    let edge = setup.start();
    let client = edge.client();
    let statuses = |host: &'static str| {
        let (client, url) = (client.clone(), edge.http_url("/hc"));
        async move {
            let mut out = Vec::new();
            for _ in 0..8 {
                let r = client
                    .get(&url)
                    .header("host", host)
                    .send()
                    .await
                    .expect("response");
                out.push(r.status().as_u16());
            }
            out
        }
    };

    // Round robin: the bad server's second 500 within fail_timeout ejects it, after which
    // only the good one answers. The 500s themselves still reach the client (no replay).
    let strict = statuses("strict.test").await;
    assert_eq!(
        strict,
        [500, 200, 500, 200, 200, 200, 200, 200],
        "{strict:?}"
    );
    let status = admin_status(&edge, None).await;
    assert_eq!(status_server(&status, "strict", bad.addr)["ejected"], true);
    let text = edge.metrics().await;
    let series = format!(
        "edge_upstream_ejections_total{{pool=\"strict\",server=\"{}\"}}",
        bad.addr
    );
    assert_eq!(metric_value(&text, &series), 1.0, "{text}");

    // Without fail_on_5xx a 500 is an answer like any other.
    let lenient = statuses("other.test").await;
    assert_eq!(
        lenient.iter().filter(|s| **s == 500).count(),
        4,
        "{lenient:?}"
    );
    let status = admin_status(&edge, None).await;
    assert_eq!(
        status_server(&status, "lenient", bad.addr)["ejected"],
        false
    );
}
