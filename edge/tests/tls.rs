//! TLS: SNI certificate selection and certificate rotation by reload.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_matching_certificate() {
    let w = upstream("web").await;
    let mut setup = Setup::new("sni");
    // A second, self-signed certificate for a name the dev leaf does not cover.
    let other =
        rcgen::generate_simple_self_signed(vec!["other.example".to_owned()]).expect("self-signed");
    let (other_cert, other_key) = (setup.dir.join("other.pem"), setup.dir.join("other-key.pem"));
    std::fs::write(&other_cert, other.cert.pem()).expect("write cert");
    std::fs::write(&other_key, other.signing_key.serialize_pem()).expect("write key");
    setup.config = setup.config.replace(
        "key = \"",
        &format!(
            "sni = [{{ cert = \"{}\", key = \"{}\" }}], key = \"",
            other_cert.display(),
            other_key.display()
        ),
    );
    setup.route("pool = \"web\"").pool("web", &[w]);
    let edge = setup.start();

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
    let w = upstream("web").await;
    let mut setup = Setup::new("rotate");
    setup.route("pool = \"web\"").pool("web", &[w]);
    let edge = setup.start();
    let old_client = edge.client();
    get_echo(&old_client, &edge.https_url("/")).await;

    let old_ca = setup.dir.join("old-ca.pem");
    std::fs::copy(&edge.ca, &old_ca).expect("keep old CA");
    // New CA and leaf in place, then reload: new handshakes present the new chain.
    let out = run_edge(&[
        "certs",
        "dev",
        "--dir",
        setup.certs.to_str().expect("utf-8"),
        "--force",
    ]);
    assert!(out.status.success());
    let (code, body) = edge.reload().await;
    assert_eq!(code, 200, "{body}");
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
    let w = upstream("web").await;
    let mut setup = Setup::new("listener-change");
    setup.route("pool = \"web\"").pool("web", &[w]);
    let edge = setup.start();
    let moved = setup.config.replace(
        &format!("127.0.0.1:{}", edge.http),
        &format!("127.0.0.1:{}", free_port()),
    );
    let (code, body) = edge.reload_with(&moved).await;
    assert_eq!(code, 200, "{body}");
    let client = edge.client();
    let warnings = body["warnings"].to_string();
    assert!(warnings.contains("listener `http` changed"), "{body}");
    // The old socket keeps serving.
    let echo = get_echo(&client, &edge.http_url("/")).await;
    assert_eq!(server_of(&echo.body), "web");
}
