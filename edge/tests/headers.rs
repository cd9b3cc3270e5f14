//! Per-route header rules: request headers to the upstream, response headers to the
//! client, and their validation.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_add_and_remove_request_and_response_headers() {
    let (api, web) = (upstream("api").await, upstream("web").await);
    let mut setup = Setup::new("route-headers");
    setup
        .route(
            r#"name = "api"
path_prefix = "/api"
pool = "api"
request_headers.add = { "X-Env" = "test", "X-Forwarded-Proto" = "https", "Host" = "api.internal" }
request_headers.remove = ["X-Debug", "Cookie"]
response_headers = { add = { "Cache-Control" = "no-store", "X-Frame-Options" = "DENY" }, remove = ["X-Powered-By", "X-Upstream"] }"#,
        )
        .route("name = \"web\"\npool = \"web\"")
        .pool("api", &[api])
        .pool("web", &[web]);
    let edge = setup.start();
    let client = edge.client();

    // Plain HTTP listener: the route's X-Forwarded-Proto overrides the edge's `http`.
    let echo = send_echo(
        client
            .get(edge.http_url("/api/contacts"))
            .header("x-debug", "1")
            .header("cookie", "session=abc")
            .header("x-env", "from-client")
            .header("x-keep", "yes"),
    )
    .await;
    let b = &echo.body;
    assert_eq!(server_of(b), "api");
    assert_eq!(header(b, "x-env"), Some("test"), "add replaces: {b}");
    assert_eq!(header(b, "x-forwarded-proto"), Some("https"), "{b}");
    assert_eq!(header(b, "host"), Some("api.internal"), "{b}");
    assert_eq!(header(b, "x-debug"), None, "removed: {b}");
    assert_eq!(header(b, "cookie"), None, "removed: {b}");
    assert_eq!(header(b, "x-keep"), Some("yes"), "untouched: {b}");
    // The edge's own headers are still there.
    assert!(header(b, "x-request-id").is_some(), "{b}");
    let h = &echo.headers;
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    assert_eq!(get("cache-control"), Some("no-store"), "replaced: {h:?}");
    assert_eq!(get("x-frame-options"), Some("DENY"), "{h:?}");
    assert_eq!(get("x-powered-by"), None, "removed: {h:?}");
    assert_eq!(get("x-upstream"), None, "removed: {h:?}");

    // Over HTTP/2 (lower-case names on the wire) the same rules apply.
    let echo = send_echo(client.get(edge.https_url("/api/x")).header("x-debug", "1")).await;
    assert_eq!(echo.version, reqwest::Version::HTTP_2);
    assert_eq!(header(&echo.body, "x-env"), Some("test"));
    assert_eq!(header(&echo.body, "x-debug"), None);
    assert_eq!(
        echo.headers.get("x-frame-options").map(|v| v.as_bytes()),
        Some(&b"DENY"[..])
    );

    // Another route is unaffected.
    let echo = send_echo(
        client
            .get(edge.http_url("/other"))
            .header("x-debug", "1")
            .header("cookie", "session=abc"),
    )
    .await;
    let b = &echo.body;
    assert_eq!(server_of(b), "web");
    assert_eq!(header(b, "x-debug"), Some("1"));
    assert_eq!(header(b, "cookie"), Some("session=abc"));
    assert_eq!(header(b, "x-env"), None);
    assert_eq!(header(b, "x-forwarded-proto"), Some("http"));
    let h = &echo.headers;
    assert_eq!(
        h.get("x-powered-by").and_then(|v| v.to_str().ok()),
        Some("echo")
    );
    assert_eq!(
        h.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("max-age=60")
    );
    assert!(h.get("x-frame-options").is_none());
}

#[test]
fn bad_header_rules_are_refused_naming_key_and_line() {
    let dir = scratch("route-headers-check");
    let base = "[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:8080\"\n\n[pool.web]\nservers = [{ address = \"127.0.0.1:8101\" }]\n\n[[route]]\npool = \"web\"\n";
    let cases = [
        (
            "request_headers.add = { \"X Bad\" = \"1\" }\n",
            "route[0].request_headers.add.X Bad",
            "not a valid header name",
        ),
        (
            "response_headers.add = { \"X-Ok\" = \"line\\nbreak\" }\n",
            "route[0].response_headers.add.X-Ok",
            "not a valid header value",
        ),
        (
            "request_headers.remove = [\"Transfer-Encoding\"]\n",
            "route[0].request_headers.remove",
            "managed by the proxy",
        ),
        (
            "request_headers = { add = { \"x-a\" = \"1\" }, remove = [\"X-A\"] }\n",
            "route[0].request_headers.add.x-a",
            "both added and removed",
        ),
        (
            "request_headers.remove = [\"Host\"]\n",
            "route[0].request_headers.remove",
            "cannot be removed",
        ),
        (
            "request_headers.replace = { \"x-a\" = \"1\" }\n",
            "route[0].request_headers.replace",
            "unknown field",
        ),
    ];
    for (rule, key, problem) in cases {
        let path = dir.join("edge.toml");
        std::fs::write(&path, format!("{base}{rule}")).expect("write");
        let path = path.to_str().expect("utf-8");
        let out = run_edge(&["check", path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{rule} accepted");
        assert!(
            stderr.contains(&format!("{path}:10: {key}: ")) && stderr.contains(problem),
            "{rule} -> {stderr}"
        );
    }
}
