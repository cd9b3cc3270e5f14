//! `edge certs dev`: a local CA plus a leaf for the dev hostnames, the mkcert workflow
//! without installing mkcert. The CA is long-lived so developers trust it once; the leaf
//! stays within the 825-day limit browsers enforce on server certificates.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::RootCertStore;

use super::pem::read_cert_chain;
use crate::error::{Error, Result};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const LEAF_CERT: &str = "localhost.pem";
pub const LEAF_KEY: &str = "localhost-key.pem";

/// Names the dev leaf covers: loopback by name and address, plus a wildcard zone so
/// host-based routes (`app.onebook.test`, `sync.onebook.test`) can be tried locally.
pub const LEAF_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1", "*.onebook.test"];

const CA_COMMON_NAME: &str = "Onebook Dev CA";
const ORGANIZATION: &str = "Onebook development";
const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 825;
/// A leaf this close to expiry is replaced rather than reused.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct DevCerts {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub leaf_cert: PathBuf,
    pub leaf_key: PathBuf,
    pub created_ca: bool,
    pub created_leaf: bool,
}

/// Creates (or reuses) the dev CA and leaf under `dir`. Existing files are kept unless
/// `force` is set or the leaf no longer verifies against the CA for every dev name
/// (expired, expiring within 30 days, or signed by another CA).
pub fn ensure_dev_certs(dir: &Path, force: bool) -> Result<DevCerts> {
    fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let mut out = DevCerts {
        dir: dir.to_path_buf(),
        ca_cert: dir.join(CA_CERT),
        ca_key: dir.join(CA_KEY),
        leaf_cert: dir.join(LEAF_CERT),
        leaf_key: dir.join(LEAF_KEY),
        created_ca: false,
        created_leaf: false,
    };

    let now = time::OffsetDateTime::now_utc();
    let reuse_ca = !force && out.ca_cert.exists() && out.ca_key.exists();
    let (ca_key, ca_pem) = if reuse_ca {
        let key_pem = read_to_string(&out.ca_key)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| Error::tls(&out.ca_key, format!("not a usable CA key: {e}")))?;
        read_cert_chain(&out.ca_cert)?;
        (key, read_to_string(&out.ca_cert)?)
    } else {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params();
        params.serial_number = Some(random_serial());
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(CA_DAYS);
        let cert = params.self_signed(&key)?;
        write_file(&out.ca_key, key.serialize_pem().as_bytes(), true)?;
        write_file(&out.ca_cert, cert.pem().as_bytes(), false)?;
        out.created_ca = true;
        (key, cert.pem())
    };

    let leaf_ok = !force
        && !out.created_ca
        && out.leaf_key.exists()
        && verify_dev_leaf(
            &out.ca_cert,
            &out.leaf_cert,
            SystemTime::now() + RENEW_BEFORE,
        )
        .is_ok();
    if !leaf_ok {
        // The issuer is rebuilt from the same parameters the CA was made with: its subject
        // and key identifier are all a signature needs, and rcgen cannot parse PEM back
        // without the x509-parser feature. The verification below catches a CA that was
        // not made by us.
        let issuer = Issuer::new(ca_params(), &ca_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(
            LEAF_NAMES
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )?;
        params.distinguished_name = dn("localhost");
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(LEAF_DAYS);
        let cert = params.signed_by(&key, &issuer)?;
        // Servers send the chain; including the CA costs a few hundred bytes and helps
        // clients that only have the CA in a separate store.
        let chain = format!("{}{}", cert.pem(), ca_pem);
        write_file(&out.leaf_key, key.serialize_pem().as_bytes(), true)?;
        write_file(&out.leaf_cert, chain.as_bytes(), false)?;
        out.created_leaf = true;
        verify_dev_leaf(&out.ca_cert, &out.leaf_cert, SystemTime::now()).map_err(|e| {
            Error::Setup(format!(
                "{e} (the CA in {} was not made by `edge certs dev`; rerun with --force)",
                out.dir.display()
            ))
        })?;
    }
    Ok(out)
}

/// Verifies the leaf chain in `leaf_pem` against the single CA in `ca_pem`, for every dev
/// name, as a TLS client would at time `at`.
pub fn verify_dev_leaf(ca_pem: &Path, leaf_pem: &Path, at: SystemTime) -> Result<()> {
    let mut roots = RootCertStore::empty();
    for ca in read_cert_chain(ca_pem)? {
        roots
            .add(ca)
            .map_err(|e| Error::tls(ca_pem, format!("not a CA certificate: {e}")))?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(super::crypto_provider()),
    )
    .build()
    .map_err(|e| Error::tls(ca_pem, e))?;
    let chain = read_cert_chain(leaf_pem)?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| Error::tls(leaf_pem, "empty chain"))?;
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| Error::Setup(format!("clock before 1970: {e}")))?;
    for name in LEAF_NAMES {
        // A wildcard is checked through a concrete name it must cover.
        let probe = name.replace('*', "app");
        let server_name = ServerName::try_from(probe.clone())
            .map_err(|e| Error::Setup(format!("bad dev name {probe}: {e}")))?;
        verifier
            .verify_server_cert(
                leaf,
                intermediates,
                &server_name,
                &[],
                UnixTime::since_unix_epoch(since_epoch),
            )
            .map_err(|e| Error::tls(leaf_pem, format!("not valid for {probe}: {e}")))?;
    }
    Ok(())
}

/// What to run so browsers and tools trust the dev CA, in the spirit of `mkcert -install`.
pub fn trust_instructions(certs: &DevCerts) -> String {
    let ca = certs.ca_cert.display();
    format!(
        "To trust the Onebook dev CA ({ca}):\n\
         \n  Debian/Ubuntu system store (curl, wget, most CLI tools):\n\
         \x20   sudo cp {ca} /usr/local/share/ca-certificates/onebook-dev-ca.crt && sudo update-ca-certificates\n\
         \n  Chromium / Firefox (NSS database; needs libnss3-tools):\n\
         \x20   certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n onebook-dev -i {ca}\n\
         \n  Just curl, without installing anything:\n\
         \x20   curl --cacert {ca} https://localhost:8443/\n\
         \nKeys ({key}, {leaf_key}) are mode 0600 and must never be committed.\n",
        key = certs.ca_key.display(),
        leaf_key = certs.leaf_key.display(),
    )
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn
}

/// Browsers reject two different certificates with the same issuer and serial, which a
/// regenerated leaf would otherwise risk.
fn random_serial() -> SerialNumber {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    // Keep the DER integer positive.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn read_to_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
}

/// Writes via a temporary file and a rename, so a concurrent reader (another `edge certs
/// dev`, an edge starting up) never sees a half-written PEM.
fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<()> {
    let mode = if secret { 0o600 } else { 0o644 };
    let ctx = || format!("cannot write {}", path.display());
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io(ctx(), e))?;
    // `mode` only applies on creation; tighten a leftover temporary file too.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(ctx(), e))?;
    file.write_all(contents).map_err(|e| Error::io(ctx(), e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| Error::io(ctx(), e))
}
