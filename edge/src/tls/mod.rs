//! TLS material: loading PEM into rustls types, the SNI certificate resolver used by the
//! listeners, and the local development CA behind `edge certs dev`.

pub mod dev;
mod pem;
mod resolver;

pub use pem::{load_certified_key, read_cert_chain, read_private_key};
pub use resolver::{CertResolver, CertSet};

/// The crypto behind every TLS listener: aws-lc-rs, for its RSA signing (AVX-512 IFMA on
/// CPUs that have it): with ring, RSA-2048 signing was ~75 % of the edge's CPU per full
/// handshake and the edge reached 0.66x nginx's new-connection rate
/// (benches/results/2026-11-27T1610Z-vm-fastpath-full.md).
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Makes [`crypto_provider`] the process default, which Pingora's TLS listener and
/// connector build their configs from. Must run before the server is built; later calls
/// keep the first provider.
pub fn install_crypto_provider() {
    let _ = crypto_provider().install_default();
}
