//! SyncML authentication: `syncml:auth-basic` and `syncml:auth-md5` against
//! Onebook accounts (the email is the user name).
//!
//! Passwords are stored as argon2id hashes, which auth-md5 cannot be checked
//! against: its digest is `b64(md5(b64(md5(user:pass)) ":" nonce))`, so the
//! server needs `b64(md5(user:pass))` itself. We keep that value as a
//! separate per-user "SyncML secret" ([`Domain::store_syncml_secret`]),
//! learned the first time the user authenticates with the cleartext password
//! (auth-basic, checked against argon2). A client that offers md5 before a
//! secret exists gets 401 with a *basic* challenge, logs in once with basic,
//! and is then challenged to md5 for good. The trade-off: the secret is an
//! unsalted md5 of the password, so it is password-equivalent for SyncML and
//! crackable offline if the database leaks; it is tied to the password hash
//! it was learned under, so a password change disables it until the next
//! basic login. Storing it at sign-up / password change (where the cleartext
//! is at hand) would remove the one basic round trip; that needs the account
//! code to call [`Domain::store_syncml_secret`].
//!
//! [`Domain::store_syncml_secret`]: onebook_domain::Domain::store_syncml_secret

use crate::message::{Chal, Cred, Meta};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use md5::{Digest, Md5};
use onebook_domain::accounts::Viewer;
use onebook_domain::{Domain, DomainError};

pub const AUTH_BASIC: &str = "syncml:auth-basic";
pub const AUTH_MD5: &str = "syncml:auth-md5";

/// What the client presented in its SyncHdr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Missing,
    Basic {
        user: String,
        password: String,
    },
    Md5 {
        user: String,
        digest: String,
    },
    /// Undecodable credentials or an auth type we do not know.
    Unusable,
}

impl Presented {
    /// `loc_name` is the SyncHdr's `Source/LocName`, the only place an md5
    /// client names its user.
    pub fn from_cred(cred: Option<&Cred>, loc_name: Option<&str>) -> Presented {
        let Some(cred) = cred else {
            return Presented::Missing;
        };
        let meta = cred.meta.as_ref();
        let kind = meta
            .and_then(|m| m.content_type.as_deref())
            .unwrap_or(AUTH_BASIC)
            .trim();
        let data = cred.data.trim();
        if kind.eq_ignore_ascii_case(AUTH_BASIC) {
            let Ok(raw) = B64.decode(data) else {
                return Presented::Unusable;
            };
            let Ok(text) = String::from_utf8(raw) else {
                return Presented::Unusable;
            };
            match text.split_once(':') {
                Some((user, password)) => Presented::Basic {
                    user: user.to_owned(),
                    password: password.to_owned(),
                },
                None => Presented::Unusable,
            }
        } else if kind.eq_ignore_ascii_case(AUTH_MD5) {
            match loc_name {
                Some(user) if !user.trim().is_empty() => Presented::Md5 {
                    user: user.trim().to_owned(),
                    digest: data.to_owned(),
                },
                _ => Presented::Unusable,
            }
        } else {
            Presented::Unusable
        }
    }

    pub fn user(&self) -> Option<&str> {
        match self {
            Presented::Basic { user, .. } | Presented::Md5 { user, .. } => Some(user),
            _ => None,
        }
    }
}

fn md5_b64(data: &[u8]) -> String {
    B64.encode(Md5::digest(data))
}

/// `b64(md5("user:password"))`, what the server keeps for auth-md5.
pub fn md5_secret(user: &str, password: &str) -> String {
    md5_b64(format!("{user}:{password}").as_bytes())
}

/// The SyncML 1.1+ digest for a secret and a nonce as sent in `NextNonce`.
/// Clients hash the base64-decoded nonce (libsynthesis does); a nonce that
/// is not valid base64 is used as text.
pub fn md5_digest(secret: &str, nonce_b64: &str) -> String {
    let nonce = B64
        .decode(nonce_b64.trim())
        .unwrap_or_else(|_| nonce_b64.as_bytes().to_vec());
    let mut input = format!("{secret}:").into_bytes();
    input.extend_from_slice(&nonce);
    md5_b64(&input)
}

/// Digests a client may legitimately send for this secret and nonce: the
/// spec's (decoded nonce) and the one some clients compute over the base64
/// text of the nonce.
fn acceptable_digests(secret: &str, nonce_b64: &str) -> [String; 2] {
    let mut text = format!("{secret}:").into_bytes();
    text.extend_from_slice(nonce_b64.as_bytes());
    [md5_digest(secret, nonce_b64), md5_b64(&text)]
}

/// A fresh nonce: 12 random bytes, base64 (what goes into `NextNonce`).
pub fn new_nonce() -> String {
    let bytes = uuid::Uuid::new_v4();
    B64.encode(&bytes.as_bytes()[..12])
}

pub fn chal(kind: &str, next_nonce: Option<String>) -> Chal {
    Chal {
        meta: Meta {
            format: Some("b64".to_owned()),
            content_type: Some(kind.to_owned()),
            next_nonce,
            ..Meta::default()
        },
    }
}

/// The result of checking a SyncHdr's credentials.
pub enum Outcome {
    Authenticated(Viewer),
    /// 401 (bad) or 407 (missing), and which auth type to challenge with.
    Rejected {
        code: u16,
        challenge: &'static str,
    },
}

/// Checks the credentials; `nonce` is the one the device was last given
/// (empty on first contact). Failed attempts count towards the web login
/// throttle of the same account.
pub async fn check(
    domain: &Domain,
    presented: &Presented,
    nonce: &str,
) -> Result<Outcome, DomainError> {
    let reject = |code, challenge| Ok(Outcome::Rejected { code, challenge });
    let user = match presented {
        Presented::Missing => return reject(407, AUTH_MD5),
        Presented::Unusable => return reject(401, AUTH_MD5),
        Presented::Basic { user, .. } | Presented::Md5 { user, .. } => user,
    };
    if domain.login_throttled(user).await?.is_some() {
        return reject(401, AUTH_MD5);
    }
    let Some(viewer) = domain.viewer_by_email(user).await? else {
        domain.record_login_failure(user).await?;
        return reject(401, AUTH_MD5);
    };
    match presented {
        Presented::Basic { user, password } => {
            if !domain.check_password(&viewer, password).await? {
                domain.record_login_failure(user).await?;
                return reject(401, AUTH_BASIC);
            }
            let secret = md5_secret(user, password);
            let known = domain.syncml_secret(&viewer).await?;
            if known.is_none_or(|k| k.secret != secret || k.user_name != *user) {
                domain.store_syncml_secret(&viewer, user, &secret).await?;
            }
            Ok(Outcome::Authenticated(viewer))
        }
        Presented::Md5 { user, digest } => {
            let Some(secret) = domain.syncml_secret(&viewer).await? else {
                // Nothing to check md5 against yet: ask for the password once.
                return reject(401, AUTH_BASIC);
            };
            if acceptable_digests(&secret.secret, nonce).contains(digest) {
                Ok(Outcome::Authenticated(viewer))
            } else {
                domain.record_login_failure(user).await?;
                reject(401, AUTH_MD5)
            }
        }
        Presented::Missing | Presented::Unusable => reject(401, AUTH_MD5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_digest_matches_the_captured_first_contact() {
        // syncml.md §3.4: alice/secret with an empty nonce.
        let secret = md5_secret("alice", "secret");
        assert_eq!(md5_digest(&secret, ""), "lOnT4YjHnGPOubN9TXInoQ==");
    }

    #[test]
    fn basic_and_md5_credentials_are_read() {
        let basic = Cred {
            meta: Some(Meta {
                content_type: Some(AUTH_BASIC.into()),
                ..Meta::default()
            }),
            data: B64.encode("a@b.test:pw:with:colons"),
        };
        assert_eq!(
            Presented::from_cred(Some(&basic), None),
            Presented::Basic {
                user: "a@b.test".into(),
                password: "pw:with:colons".into()
            }
        );
        let md5 = Cred {
            meta: Some(Meta {
                content_type: Some(AUTH_MD5.into()),
                format: Some("b64".into()),
                ..Meta::default()
            }),
            data: "xyz".into(),
        };
        assert_eq!(Presented::from_cred(Some(&md5), None), Presented::Unusable);
        assert!(matches!(
            Presented::from_cred(Some(&md5), Some("a@b.test")),
            Presented::Md5 { .. }
        ));
        assert_eq!(Presented::from_cred(None, None), Presented::Missing);
        let junk = Cred {
            meta: None,
            data: "%%%".into(),
        };
        assert_eq!(Presented::from_cred(Some(&junk), None), Presented::Unusable);
    }

    #[test]
    fn nonces_are_fresh_base64() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_ne!(a, b);
        assert_eq!(B64.decode(&a).unwrap().len(), 12);
    }
}
