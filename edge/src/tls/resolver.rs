use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::{DnsName, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificates one listener can present. The first one is the default, served when the
/// client sends no SNI or a name no certificate covers (what nginx does with its default
/// server), so plain `curl https://127.0.0.1/` keeps working.
#[derive(Debug, Clone)]
pub struct CertSet {
    certs: Vec<Arc<CertifiedKey>>,
}

impl CertSet {
    /// `None` when `certs` is empty: a TLS listener without a certificate cannot handshake.
    pub fn new(certs: Vec<Arc<CertifiedKey>>) -> Option<Self> {
        if certs.is_empty() {
            None
        } else {
            Some(CertSet { certs })
        }
    }

    fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let default = self.certs.first();
        // One certificate is the common case; skip parsing anything for it.
        if self.certs.len() == 1 {
            return default.cloned();
        }
        let name = sni
            .and_then(|s| DnsName::try_from(s.to_owned()).ok())
            .map(ServerName::DnsName);
        let Some(name) = name else {
            return default.cloned();
        };
        self.certs
            .iter()
            .find(|ck| {
                ck.end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
            })
            .or(default)
            .cloned()
    }
}

/// SNI certificate resolver installed on every TLS listener instead of Pingora's
/// file-based setup: rustls resolves synchronously during the handshake, so certificates are
/// pre-parsed, and swapping the set is how a reload rotates them without touching sockets.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertSet>,
}

impl CertResolver {
    pub fn new(set: CertSet) -> Self {
        CertResolver {
            current: ArcSwap::from_pointee(set),
        }
    }

    pub fn replace(&self, set: CertSet) {
        self.current.store(Arc::new(set));
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().select(client_hello.server_name())
    }
}
