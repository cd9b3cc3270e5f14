use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};

/// Reads every certificate of a PEM chain file (leaf first, as servers send it).
pub fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let file = File::open(path).map_err(|e| Error::tls(path, format!("cannot open: {e}")))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::tls(path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::tls(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, SEC1 or PKCS#1) of a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let file = File::open(path).map_err(|e| Error::tls(path, format!("cannot open: {e}")))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| Error::tls(path, format!("invalid PEM: {e}")))?
        .ok_or_else(|| Error::tls(path, "no PRIVATE KEY block found"))
}

/// Loads a cert/key pair into the form rustls serves from, checking that the key really
/// belongs to the leaf. Doing it here (not in Pingora's `TlsSettings::build`, which panics)
/// lets `edge check` and a reload reject bad files with their name.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>> {
    let chain = read_cert_chain(cert)?;
    let key_der = read_private_key(key)?;
    let provider = super::crypto_provider();
    let certified = CertifiedKey::from_der(chain, key_der, &provider).map_err(|e| {
        Error::tls(
            key,
            format!("unusable with certificate {}: {e}", cert.display()),
        )
    })?;
    Ok(Arc::new(certified))
}
