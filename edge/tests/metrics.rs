//! Prometheus gauges and TLS counters move with what happens on real sockets.

mod common;

use std::net::TcpStream;

use common::*;

fn series(text: &str, name: &str, labels: &str) -> f64 {
    metric_value(text, &format!("{name}{{{labels}}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_health_in_flight_connections_and_tls_gauges_move() {
    let probed = Probed::start("probed", 200).await;
    let ctl = Ctl::start("ctl").await;
    let mut setup = Setup::new("gauges");
    setup.route("path_prefix = \"/hold\"\npool = \"held\"");
    setup.route("pool = \"web\"");
    setup.pool("web", &[probed.addr]);
    setup.raw("health_check = { kind = \"http\", path = \"/hc\", interval = \"100ms\" }");
    setup.pool("held", &[ctl.addr]);
    let edge = setup.start();
    let client = edge.client();
    let web = format!("pool=\"web\",server=\"{}\"", probed.addr);
    let held = format!("pool=\"held\",server=\"{}\"", ctl.addr);

    // Upstream health: 1, then 0 while the check fails, then 1 again.
    let text = admin_metrics(&edge).await;
    assert_eq!(series(&text, "edge_upstream_healthy", &web), 1.0, "{text}");
    probed.set(503);
    wait_for("edge_upstream_healthy 0", || async {
        series(&admin_metrics(&edge).await, "edge_upstream_healthy", &web) == 0.0
    })
    .await;
    probed.set(200);
    wait_for("edge_upstream_healthy 1", || async {
        series(&admin_metrics(&edge).await, "edge_upstream_healthy", &web) == 1.0
    })
    .await;

    // In flight per server: one held request shows, and goes once released.
    assert_eq!(
        series(
            &admin_metrics(&edge).await,
            "edge_upstream_in_flight",
            &held
        ),
        0.0
    );
    let held_req = tokio::spawn({
        let (client, url) = (client.clone(), edge.http_url("/hold"));
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    wait_for("edge_upstream_in_flight 1", || async {
        series(
            &admin_metrics(&edge).await,
            "edge_upstream_in_flight",
            &held,
        ) == 1.0
    })
    .await;
    ctl.release();
    assert_eq!(held_req.await.expect("task").expect("response"), 200);
    wait_for("edge_upstream_in_flight 0", || async {
        series(
            &admin_metrics(&edge).await,
            "edge_upstream_in_flight",
            &held,
        ) == 0.0
    })
    .await;

    // Open downstream connections on the plain listener follow the sockets.
    let open = |text: &str| series(text, "edge_downstream_connections", "listener=\"http\"");
    let before = open(&admin_metrics(&edge).await);
    let socks: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", edge.http)).expect("connect"))
        .collect();
    wait_for("3 more open connections", || async {
        open(&admin_metrics(&edge).await) == before + 3.0
    })
    .await;
    drop(socks);
    wait_for("connections closed", || async {
        open(&admin_metrics(&edge).await) == before
    })
    .await;

    // TLS handshakes by negotiated protocol, and failures.
    let hs = |text: &str, alpn: &str| {
        series(
            text,
            "edge_tls_handshakes_total",
            &format!("alpn=\"{alpn}\",listener=\"https\""),
        )
    };
    let text = admin_metrics(&edge).await;
    let (h2_before, h1_before) = (hs(&text, "h2"), hs(&text, "http/1.1"));
    let failures_before = metric_value(&text, "edge_tls_handshake_failures_total");
    let fresh_h2 = client_trusting(&edge.ca);
    get_echo(&fresh_h2, &edge.https_url("/")).await;
    let h1 = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(&std::fs::read(&edge.ca).expect("ca")).expect("pem"),
        ])
        .http1_only()
        .build()
        .expect("client");
    get_echo(&h1, &edge.https_url("/")).await;
    let text = admin_metrics(&edge).await;
    assert_eq!(hs(&text, "h2"), h2_before + 1.0, "{text}");
    assert_eq!(hs(&text, "http/1.1"), h1_before + 1.0, "{text}");
    assert!(
        !text.contains("edge_tls_handshakes_total{alpn=\"h2\",listener=\"http\"}"),
        "no TLS series for the plain listener:\n{text}"
    );

    // A client that does not trust the certificate, and plain HTTP sent to the TLS port.
    let other_ca = dev_certs(&setup.dir.join("other-ca"));
    let untrusting = client_trusting(&other_ca.join("ca.pem"));
    assert!(untrusting.get(edge.https_url("/")).send().await.is_err());
    let plain = reqwest::Client::new();
    let _ = plain
        .get(format!("http://127.0.0.1:{}/", edge.https))
        .send()
        .await;
    wait_for("2 handshake failures counted", || async {
        metric_value(
            &admin_metrics(&edge).await,
            "edge_tls_handshake_failures_total",
        ) >= failures_before + 2.0
    })
    .await;
    // Counted, not logged: these are the clients' problems (RUST_LOG here is
    // `info,edge::access=debug`, whose default level is info).
    let log = edge.log();
    assert!(!log.contains("Downstream handshake error"), "{log}");
    assert!(!log.contains("Sending fatal alert"), "{log}");
}
