//! End to end through the `edge` binary: TLS, HTTP/2, balancing, routing, headers,
//! failover, redirects.

mod common;

use std::collections::HashMap;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_round_robin_over_h2_with_forwarded_headers() {
    let (w1, w2) = (upstream("web-1").await, upstream("web-2").await);
    let (s1, s2) = (upstream("sync-1").await, upstream("sync-2").await);
    let mut setup = Setup::new("rr");
    setup
        .route("path_prefix = \"/sync\"\npool = \"sync\"")
        .route("pool = \"webapp\"")
        .pool("webapp", &[w1, w2])
        .pool("sync", &[s1, s2]);
    let edge = setup.start();
    let client = edge.client();

    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..6 {
        let echo = get_echo(&client, &edge.https_url("/contacts")).await;
        assert_eq!(
            echo.version,
            reqwest::Version::HTTP_2,
            "ALPN should pick h2"
        );
        *seen.entry(server_of(&echo.body).to_owned()).or_default() += 1;
    }
    assert_eq!(seen.get("web-1"), Some(&3), "{seen:?}");
    assert_eq!(seen.get("web-2"), Some(&3), "{seen:?}");

    let echo = get_echo(&client, &edge.https_url("/contacts")).await;
    let b = &echo.body;
    assert_eq!(header(b, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(b, "x-real-ip"), Some("127.0.0.1"));
    assert_eq!(header(b, "x-forwarded-proto"), Some("https"));
    assert_eq!(
        header(b, "x-forwarded-host"),
        Some(format!("127.0.0.1:{}", edge.https).as_str())
    );
    let id = header(b, "x-request-id").expect("generated request id");
    assert_eq!(id.len(), 36, "uuid v4: {id}");
    assert_eq!(
        echo.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some(id),
        "echoed to client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_request_id_and_forwarded_for_are_kept() {
    let w1 = upstream("web-1").await;
    let mut setup = Setup::new("reqid");
    setup.route("pool = \"webapp\"");
    setup.pool("webapp", &[w1]);
    let edge = setup.start();
    let req = edge
        .client()
        .get(edge.http_url("/x"))
        .header("x-request-id", "trace-abc-123")
        .header("x-forwarded-for", "203.0.113.7");
    let echo = send_echo(req).await;
    assert_eq!(echo.version, reqwest::Version::HTTP_11);
    assert_eq!(header(&echo.body, "x-request-id"), Some("trace-abc-123"));
    assert_eq!(
        header(&echo.body, "x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(header(&echo.body, "x-forwarded-proto"), Some("http"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_prefix_routes_to_the_sync_pool() {
    let w1 = upstream("web-1").await;
    let (s1, s2) = (upstream("sync-1").await, upstream("sync-2").await);
    let mut setup = Setup::new("sync");
    setup
        .route("pool = \"webapp\"")
        .route("path_prefix = \"/sync\"\npool = \"sync\"")
        .pool("webapp", &[w1])
        .pool("sync", &[s1, s2]);
    let edge = setup.start();
    let client = edge.client();

    let mut servers = Vec::new();
    for _ in 0..2 {
        let echo = get_echo(&client, &edge.https_url("/sync/devinf")).await;
        assert_eq!(echo.body["path"], "/sync/devinf");
        servers.push(server_of(&echo.body).to_owned());
    }
    servers.sort();
    assert_eq!(servers, ["sync-1", "sync-2"]);
    let echo = get_echo(&client, &edge.https_url("/syncfoo")).await;
    assert_eq!(
        server_of(&echo.body),
        "web-1",
        "prefix matches whole segments only"
    );
    let echo = get_echo(&client, &edge.https_url("/")).await;
    assert_eq!(server_of(&echo.body), "web-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_server_is_skipped_by_connect_retry() {
    let live = upstream("live").await;
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut setup = Setup::new("failover");
    setup.route("pool = \"webapp\"");
    setup.pool("webapp", &[dead, live]);
    let edge = setup.start();
    let client = edge.client();
    for _ in 0..6 {
        // POST too: a failed connect sent nothing, so even non-idempotent requests move on.
        let echo = send_echo(client.post(edge.https_url("/save")).body("x")).await;
        assert_eq!(server_of(&echo.body), "live");
    }
    let metrics = edge.metrics().await;
    let series =
        format!("edge_upstream_errors_total{{kind=\"connect\",pool=\"webapp\",server=\"{dead}\"}}");
    let count = metric_value(&metrics, &series);
    assert!(count >= 1.0, "`{series}` = {count} in:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_servers_down_is_a_502() {
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut setup = Setup::new("alldown");
    setup.route("pool = \"webapp\"");
    setup.pool("webapp", &[dead]);
    let edge = setup.start();
    let resp = edge
        .client()
        .get(edge.https_url("/"))
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_routes_redirects_and_unrouted() {
    let (app, sync) = (upstream("app").await, upstream("sync").await);
    let mut setup = Setup::new("hosts");
    setup.route("host = \"sync.onebook.test\"\npool = \"sync\"");
    setup.route("host = \"*.onebook.test\"\npool = \"app\"\nredirect_https = true");
    setup.pool("app", &[app]);
    setup.pool("sync", &[sync]);
    let edge = setup.start();
    let https: std::net::SocketAddr = format!("127.0.0.1:{}", edge.https).parse().expect("addr");
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", edge.http).parse().expect("addr");
    install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&edge.ca).expect("ca")).expect("pem");
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .resolve("sync.onebook.test", https)
        .resolve("www.onebook.test", https)
        .resolve("plain.onebook.test", http)
        .build()
        .expect("client");

    let echo = get_echo(
        &client,
        &format!("https://sync.onebook.test:{}/a", edge.https),
    )
    .await;
    assert_eq!(server_of(&echo.body), "sync");
    let echo = get_echo(
        &client,
        &format!("https://www.onebook.test:{}/a", edge.https),
    )
    .await;
    assert_eq!(server_of(&echo.body), "app");

    let resp = client
        .get(format!(
            "http://plain.onebook.test:{}/contacts?q=1",
            edge.http
        ))
        .send()
        .await
        .expect("redirect");
    assert_eq!(resp.status(), 308);
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(
        location,
        Some(format!(
            "https://plain.onebook.test:{}/contacts?q=1",
            edge.https
        ))
    );

    // No route for a bare IP: the edge answers 404 itself.
    let resp = client
        .get(edge.https_url("/"))
        .send()
        .await
        .expect("unrouted");
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ketama_keeps_a_session_cookie_on_one_server() {
    let (s1, s2) = (upstream("sync-1").await, upstream("sync-2").await);
    let mut setup = Setup::new("ketama");
    setup.route("pool = \"sync\"");
    setup.pool("sync", &[s1, s2]);
    setup.raw("algorithm = \"ketama\"\nhash_key = \"cookie:JSESSIONID\"");
    let edge = setup.start();
    let client = edge.client();

    let mut seen = std::collections::HashSet::new();
    for session in 0..16 {
        let cookie = format!("theme=dark; JSESSIONID=s{session}");
        let mut servers = std::collections::HashSet::new();
        for _ in 0..3 {
            let echo = send_echo(
                client
                    .get(edge.https_url("/sync"))
                    .header("cookie", &cookie),
            )
            .await;
            servers.insert(server_of(&echo.body).to_owned());
        }
        // Plain HTTP/1.1 takes the edge's fast path: it must hash the same key.
        let echo = send_echo(client.get(edge.http_url("/sync")).header("cookie", &cookie)).await;
        servers.insert(server_of(&echo.body).to_owned());
        assert_eq!(servers.len(), 1, "session {session} moved: {servers:?}");
        seen.extend(servers);
    }
    assert_eq!(seen.len(), 2, "16 sessions should spread over both servers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_on_a_plain_listener_when_enabled() {
    let w = upstream("web").await;
    let mut setup = Setup::new("h2c");
    setup.config = setup
        .config
        .replace("name = \"http\"\n", "name = \"http\"\nh2 = true\n");
    setup.route("pool = \"web\"").pool("web", &[w]);
    let edge = setup.start();
    install_crypto_provider();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let echo = get_echo(&client, &edge.http_url("/")).await;
    assert_eq!(echo.version, reqwest::Version::HTTP_2);
    assert_eq!(header(&echo.body, "x-forwarded-proto"), Some("http"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_shape_round_robin() {
    let (big, small) = (upstream("big").await, upstream("small").await);
    let mut setup = Setup::new("weights");
    setup.raw(&format!(
        "\n[[route]]\npool = \"web\"\n\n[pool.web]\nservers = [{{ address = \"{big}\", weight = 3 }}, {{ address = \"{small}\" }}]\n"
    ));
    let edge = setup.start();
    let client = edge.client();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..8 {
        let echo = get_echo(&client, &edge.https_url("/")).await;
        *seen.entry(server_of(&echo.body).to_owned()).or_default() += 1;
    }
    assert_eq!(
        (seen.get("big"), seen.get("small")),
        (Some(&6), Some(&2)),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_ejects_a_failing_server() {
    let live = upstream("live").await;
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut setup = Setup::new("passive");
    setup.route("pool = \"webapp\"");
    setup.pool("webapp", &[dead, live]);
    setup.raw("max_fails = 1\nfail_timeout = \"30s\"");
    let edge = setup.start();
    let client = edge.client();
    for _ in 0..8 {
        assert_eq!(
            server_of(&get_echo(&client, &edge.https_url("/")).await.body),
            "live"
        );
    }
    let metrics = edge.metrics().await;
    let errors =
        format!("edge_upstream_errors_total{{kind=\"connect\",pool=\"webapp\",server=\"{dead}\"}}");
    assert_eq!(
        metric_value(&metrics, &errors),
        1.0,
        "one failure, then skipped:\n{metrics}"
    );
    let ejections = format!("edge_upstream_ejections_total{{pool=\"webapp\",server=\"{dead}\"}}");
    assert_eq!(metric_value(&metrics, &ejections), 1.0, "{metrics}");
    let status = admin_status(&edge, None).await;
    assert_eq!(
        status["pools"][0]["servers"][0]["ejected"], true,
        "{status}"
    );
    assert_eq!(
        status["pools"][0]["servers"][1]["ejected"], false,
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_pool_speaks_http2_to_its_upstream() {
    let (h2, h1) = (upstream("h2c").await, upstream("h1").await);
    let mut setup = Setup::new("h2c-upstream");
    setup.route("path_prefix = \"/grpcish\"\npool = \"h2\"");
    setup.route("pool = \"h1\"");
    setup.pool("h2", &[h2]);
    setup.raw("protocol = \"h2c\"");
    setup.pool("h1", &[h1]);
    let edge = setup.start();
    let client = edge.client();

    // Both downstream protocols reach the h2c pool over HTTP/2, the other pool over 1.1.
    for url in [edge.https_url("/grpcish/a"), edge.http_url("/grpcish/a")] {
        let echo = get_echo(&client, &url).await;
        assert_eq!(server_of(&echo.body), "h2c");
        assert_eq!(echo.body["version"], "HTTP/2.0", "{url}: {}", echo.body);
        assert_eq!(header(&echo.body, "x-forwarded-for"), Some("127.0.0.1"));
    }
    let echo = get_echo(&client, &edge.https_url("/other")).await;
    assert_eq!(echo.body["version"], "HTTP/1.1", "{}", echo.body);

    // Concurrent requests share multiplexed connections instead of one each.
    let reqs = (0..8).map(|i| {
        let (client, url) = (client.clone(), edge.http_url(&format!("/grpcish/{i}")));
        async move { get_echo(&client, &url).await }
    });
    for echo in futures::future::join_all(reqs).await {
        assert_eq!(echo.body["version"], "HTTP/2.0");
    }
    let status = admin_status(&edge, None).await;
    let pools = status["pools"].as_array().expect("pools");
    let h2_pool = pools.iter().find(|p| p["name"] == "h2").expect("h2 pool");
    assert_eq!(h2_pool["protocol"], "h2c");
    let text = admin_metrics(&edge).await;
    let new = metric_value(
        &text,
        &format!("edge_upstream_connections_total{{pool=\"h2\",reused=\"false\",server=\"{h2}\"}}"),
    );
    assert!(new < 10.0, "{new} new connections for 10 requests:\n{text}");
}
