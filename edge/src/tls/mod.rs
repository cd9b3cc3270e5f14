//! TLS material: loading PEM into rustls types, the SNI certificate resolver used by the
//! listeners, and the local development CA behind `edge certs dev`.

pub mod dev;
mod pem;
mod resolver;

pub use pem::{load_certified_key, read_cert_chain, read_private_key};
pub use resolver::{CertResolver, CertSet};
