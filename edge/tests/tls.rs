//! TLS: SNI certificate selection and certificate rotation by reload.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_matching_certificate() {
    let dir = scratch("sni");
    let certs = dev_certs(&dir.join("certs"));
    // A second, self-signed certificate for a name the dev leaf does not cover.
    let other =
        rcgen::generate_simple_self_signed(vec!["other.example".to_owned()]).expect("self-signed");
    let (other_cert, other_key) = (dir.join("other.pem"), dir.join("other-key.pem"));
    std::fs::write(&other_cert, other.cert.pem()).expect("write cert");
    std::fs::write(&other_key, other.signing_key.serialize_pem()).expect("write key");

    let w = upstream("web").await;
    let ports = Ports::new();
    let mut cfg = base_config(&dir, &certs, &ports);
    cfg = cfg.replace(
        "key = \"",
        &format!(
            "sni = [{{ cert = \"{}\", key = \"{}\" }}], key = \"",
            other_cert.display(),
            other_key.display()
        ),
    );
    cfg += &format!("\n[[route]]\npool = \"web\"\n{}", pool("web", &[w]));
    let edge = Edge::start(&dir, &certs, ports, &cfg);

    install_crypto_provider();
    let https: std::net::SocketAddr = format!("127.0.0.1:{}", edge.https).parse().expect("addr");
    let dev_ca =
        reqwest::Certificate::from_pem(&std::fs::read(&edge.ca).expect("ca")).expect("pem");
    let other_root = reqwest::Certificate::from_pem(other.cert.pem().as_bytes()).expect("pem");
    let client = reqwest::Client::builder()
        .tls_certs_only([dev_ca, other_root])
        .resolve("other.example", https)
        .resolve("localhost", https)
        .build()
        .expect("client");
    // Each name only verifies if the edge served the certificate made for it.
    let echo = get_echo(&client, &format!("https://other.example:{}/", edge.https)).await;
    assert_eq!(server_of(&echo.body), "web");
    let echo = get_echo(&client, &format!("https://localhost:{}/", edge.https)).await;
    assert_eq!(server_of(&echo.body), "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rotates_certificates_without_restart() {
    let dir = scratch("rotate");
    let certs = dev_certs(&dir.join("certs"));
    let w = upstream("web").await;
    let ports = Ports::new();
    let cfg = format!(
        "{}\n[[route]]\npool = \"web\"\n{}",
        base_config(&dir, &certs, &ports),
        pool("web", &[w])
    );
    let edge = Edge::start(&dir, &certs, ports, &cfg);
    let old_client = edge.client();
    get_echo(&old_client, &edge.https_url("/")).await;

    let old_ca = dir.join("old-ca.pem");
    std::fs::copy(&edge.ca, &old_ca).expect("keep old CA");
    // New CA and leaf in place, then reload: new handshakes present the new chain.
    let out = run_edge(&[
        "certs",
        "dev",
        "--dir",
        certs.to_str().expect("utf-8"),
        "--force",
    ]);
    assert!(out.status.success());
    let resp = old_client
        .post(edge.admin_url("/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(resp.status(), 200);
    let new_client = client_trusting(&edge.ca);
    let echo = get_echo(&new_client, &edge.https_url("/")).await;
    assert_eq!(server_of(&echo.body), "web");
    // A client that only trusts the old CA can no longer complete a handshake.
    let err = client_trusting(&old_ca)
        .get(edge.https_url("/"))
        .send()
        .await;
    assert!(err.is_err(), "old CA still accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reports_listener_changes_it_cannot_apply() {
    let dir = scratch("listener-change");
    let certs = dev_certs(&dir.join("certs"));
    let w = upstream("web").await;
    let ports = Ports::new();
    let cfg = format!(
        "{}\n[[route]]\npool = \"web\"\n{}",
        base_config(&dir, &certs, &ports),
        pool("web", &[w])
    );
    let edge = Edge::start(&dir, &certs, ports, &cfg);
    let moved = cfg.replace(
        &format!("127.0.0.1:{}", edge.http),
        &format!("127.0.0.1:{}", free_port()),
    );
    std::fs::write(&edge.config, moved).expect("write");
    let client = edge.client();
    let resp = client
        .post(edge.admin_url("/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    let warnings = body["warnings"].to_string();
    assert!(warnings.contains("listener `http` changed"), "{body}");
    // The old socket keeps serving.
    let echo = get_echo(&client, &edge.http_url("/")).await;
    assert_eq!(server_of(&echo.body), "web");
}
