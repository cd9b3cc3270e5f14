//! The `edge check` and `edge certs dev` commands, through the binary.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use common::*;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

fn certs_of(path: &std::path::Path) -> Vec<CertificateDer<'static>> {
    let pem = std::fs::read(path).expect("read pem");
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .expect("parse pem")
}

#[test]
fn certs_dev_makes_a_chain_that_verifies_and_is_reused() {
    let dir = scratch("certs").join("dev");
    let out = run_edge(&["certs", "dev", "--dir", dir.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("update-ca-certificates"), "{stdout}");
    assert!(
        stdout.contains("certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n onebook-dev"),
        "{stdout}"
    );
    assert!(stdout.contains("curl --cacert"), "{stdout}");

    for key in ["ca-key.pem", "localhost-key.pem"] {
        let mode = std::fs::metadata(dir.join(key))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    // Verify like a TLS client: leaf (+ chain) against the CA as the only root.
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs_of(&dir.join("ca.pem")) {
        roots.add(ca).expect("CA accepted as root");
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    let chain = certs_of(&dir.join("localhost.pem"));
    let (leaf, rest) = chain.split_first().expect("leaf");
    for name in ["localhost", "127.0.0.1", "::1", "contacts.onebook.test"] {
        let server_name = ServerName::try_from(name).expect("name");
        verifier
            .verify_server_cert(leaf, rest, &server_name, &[], UnixTime::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let other = ServerName::try_from("example.com").expect("name");
    assert!(verifier
        .verify_server_cert(leaf, rest, &other, &[], UnixTime::now())
        .is_err());

    // Idempotent: a second run keeps every file as it is.
    let before = std::fs::read(dir.join("localhost.pem")).expect("leaf");
    let out = run_edge(&["certs", "dev", "--dir", dir.to_str().expect("utf-8")]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("(kept)"));
    assert_eq!(
        before,
        std::fs::read(dir.join("localhost.pem")).expect("leaf")
    );

    // --force replaces them.
    let out = run_edge(&[
        "certs",
        "dev",
        "--dir",
        dir.to_str().expect("utf-8"),
        "--force",
    ]);
    assert!(out.status.success());
    assert_ne!(
        before,
        std::fs::read(dir.join("localhost.pem")).expect("leaf")
    );
}

#[test]
fn certs_dev_renews_a_missing_leaf_with_the_same_ca() {
    let dir = scratch("renew");
    let d = dir.to_str().expect("utf-8");
    assert!(run_edge(&["certs", "dev", "--dir", d]).status.success());
    let ca = std::fs::read(dir.join("ca.pem")).expect("ca");
    std::fs::remove_file(dir.join("localhost-key.pem")).expect("rm key");
    let out = run_edge(&["certs", "dev", "--dir", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ca.pem (kept)") && stdout.contains("localhost.pem (created)"),
        "{stdout}"
    );
    assert_eq!(ca, std::fs::read(dir.join("ca.pem")).expect("ca"));
}

fn write_config(dir: &std::path::Path, body: &str) -> String {
    let path = dir.join("edge.toml");
    std::fs::write(&path, body).expect("write");
    path.to_str().expect("utf-8").to_owned()
}

#[test]
fn check_accepts_a_valid_config() {
    let mut setup = Setup::new("check-ok");
    setup
        .route("pool = \"web\"")
        .pool("web", &["127.0.0.1:8101".parse().expect("addr")]);
    let path = write_config(&setup.dir, &setup.config);
    let out = run_edge(&["check", &path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("configuration file {path} is ok")
    );
}

#[test]
fn check_rejects_a_bad_config_naming_file_key_and_line() {
    let dir = scratch("check-bad");
    let cfg = "[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:8080\"\n\n[[route]]\npool = \"web\"\n\n[pool.web]\nservers = [{ address = \"127.0.0.1:8101\", weight = 0 }]\n";
    let path = write_config(&dir, cfg);
    let out = run_edge(&["check", &path]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{path}:9: pool.web.servers[0].weight: must be at least 1"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("test failed"), "{stderr}");

    // A type error from the TOML layer is located the same way.
    let path = write_config(
        &dir,
        &cfg.replace("name = \"http\"", "name = \"http\"\nh2 = \"yes\""),
    );
    let out = run_edge(&["check", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{path}:3: listener[0].h2:")),
        "{stderr}"
    );
}

#[test]
fn check_rejects_a_corrupt_certificate_naming_the_file() {
    let mut setup = Setup::new("check-cert");
    std::fs::write(
        setup.certs.join("localhost.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("corrupt");
    setup
        .route("pool = \"web\"")
        .pool("web", &["127.0.0.1:8101".parse().expect("addr")]);
    let path = write_config(&setup.dir, &setup.config);
    let out = run_edge(&["check", &path]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("listener[0].tls.cert") && stderr.contains("localhost.pem"),
        "{stderr}"
    );
    // `run` refuses the same file before starting Pingora (no panic, clean exit code).
    let out = run_edge(&["run", "-c", &path]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
