//! Linked accounts: the Google and Highrise accounts whose contacts the sync
//! bots keep in step with a user's address book (schema: migration 6).
//!
//! A link carries the secret the bot needs to act for the user: a Google
//! OAuth refresh token or a Highrise API token. Neither can be hashed (the
//! bot must present it), so it is sealed with ChaCha20-Poly1305 under the
//! key of `[links]` before it reaches PostgreSQL, with the user and link ids
//! as associated data so a sealed secret copied to another row does not
//! open. Secrets never leave this module except through
//! [`Domain::linked_account_secret`], which is for the bots; API responses
//! are built from [`LinkedAccount`], which has no secret in it.

use crate::accounts::{normalize_email, Viewer};
use crate::db::db;
use crate::error::DomainError;
use crate::settings::SettingsError;
use crate::Domain;
use chrono::{DateTime, Utc};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use uuid::Uuid;

/// Longest secret accepted (Google refresh tokens are ~100 bytes).
pub const MAX_SECRET_LEN: usize = 4096;

/// The online services a bot can sync with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// `account` is the Google account's email; the secret is an OAuth 2.0
    /// refresh token (offline access to the People API and CardDAV).
    Google,
    /// `account` is the Highrise subdomain (`acme` for
    /// `https://acme.highrisehq.com`); the secret is the user's API token.
    Highrise,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Google => "google",
            Service::Highrise => "highrise",
        }
    }

    pub fn parse(text: &str) -> Option<Service> {
        match text {
            "google" => Some(Service::Google),
            "highrise" => Some(Service::Highrise),
            _ => None,
        }
    }

    /// Checks and normalises the account identifier for this service.
    pub fn normalize_account(self, account: &str) -> Result<String, DomainError> {
        match self {
            Service::Google => normalize_email(account)
                .map_err(|_| DomainError::invalid("account", "must be the Google account's email")),
            Service::Highrise => {
                let account = account.trim().to_ascii_lowercase();
                let account = account
                    .strip_prefix("https://")
                    .unwrap_or(&account)
                    .trim_end_matches('/');
                let sub = account.strip_suffix(".highrisehq.com").unwrap_or(account);
                let valid = !sub.is_empty()
                    && sub.len() <= 63
                    && !sub.starts_with('-')
                    && !sub.ends_with('-')
                    && sub
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if valid {
                    Ok(sub.to_string())
                } else {
                    Err(DomainError::invalid(
                        "account",
                        "must be the Highrise subdomain (letters, digits and dashes)",
                    ))
                }
            }
        }
    }
}

/// The outcome of a bot's last sync of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// No sync has run yet.
    Never,
    Ok,
    /// The service refused the credentials (Google `invalid_grant`); the
    /// user must link the account again. Bots stop retrying.
    NeedsReauth,
    /// The last attempt failed for another reason; bots retry.
    Error,
}

impl SyncStatus {
    fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Never => "never",
            SyncStatus::Ok => "ok",
            SyncStatus::NeedsReauth => "needs_reauth",
            SyncStatus::Error => "error",
        }
    }

    fn parse(text: &str) -> SyncStatus {
        match text {
            "ok" => SyncStatus::Ok,
            "needs_reauth" => SyncStatus::NeedsReauth,
            "error" => SyncStatus::Error,
            _ => SyncStatus::Never,
        }
    }
}

/// The last sync of a link, as the web shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LastSync {
    pub status: SyncStatus,
    pub at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// A linked account as users see it. Deliberately without the secret.
#[derive(Debug, Clone, Serialize)]
pub struct LinkedAccount {
    pub id: Uuid,
    pub service: Service,
    pub account: String,
    pub created_at: DateTime<Utc>,
    pub last_sync: LastSync,
}

/// A link to create; `id` may be chosen by the client to make retries safe.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub id: Option<Uuid>,
    pub service: Service,
    pub account: String,
    pub secret: String,
}

/// `[links]`: where the key that seals linked-account secrets comes from.
/// Exactly one of `key_file` and `key`; without either, accounts cannot be
/// linked (listing and removing still work).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    /// A file holding the 32-byte key as 64 hex digits (`openssl rand -hex 32`).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The key inline, as 64 hex digits. For development configs only.
    #[serde(default)]
    pub key: Option<String>,
}

impl LinkSettings {
    /// Checks the section without reading the key file (that happens when
    /// the server starts, on the host that has it).
    pub fn validate(&self, file: &str) -> Result<(), SettingsError> {
        let invalid = |reason: &str| SettingsError::Invalid {
            file: file.to_string(),
            key: "links.key".into(),
            reason: reason.into(),
        };
        match (&self.key, &self.key_file) {
            (Some(_), Some(_)) => Err(invalid("set either links.key or links.key_file, not both")),
            (Some(key), None) => LinkKey::from_hex(key).map(|_| ()).map_err(|e| invalid(&e)),
            _ => Ok(()),
        }
    }

    /// The configured key, or `None` when linking is not configured.
    pub fn load(&self, file: &str) -> Result<Option<LinkKey>, SettingsError> {
        self.validate(file)?;
        let hex = match (&self.key, &self.key_file) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => {
                std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                    file: path.display().to_string(),
                    source,
                })?
            }
            (None, None) => return Ok(None),
        };
        LinkKey::from_hex(&hex)
            .map(Some)
            .map_err(|reason| SettingsError::Invalid {
                file: file.to_string(),
                key: "links.key_file".into(),
                reason,
            })
    }
}

/// The key that seals linked-account secrets.
pub struct LinkKey {
    key: LessSafeKey,
    /// A fingerprint stored beside each sealed secret, so a secret sealed
    /// under another key is reported as such rather than as tampering.
    id: String,
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkKey").field("id", &self.id).finish()
    }
}

impl LinkKey {
    /// A key from 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<LinkKey, String> {
        let text = text.trim();
        if text.len() != 64 {
            return Err("must be 64 hex digits (32 bytes)".into());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
                .map_err(|_| "must be 64 hex digits (32 bytes)".to_string())?;
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| "not a ChaCha20-Poly1305 key".to_string())?;
        let digest = Sha256::new()
            .chain_update(b"onebook-links-key:")
            .chain_update(bytes)
            .finalize();
        let id = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Ok(LinkKey {
            key: LessSafeKey::new(key),
            id,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn aad(user_id: Uuid, link_id: Uuid) -> [u8; 32] {
        let mut aad = [0u8; 32];
        aad[..16].copy_from_slice(user_id.as_bytes());
        aad[16..].copy_from_slice(link_id.as_bytes());
        aad
    }

    /// `nonce || ciphertext || tag`, bound to the user and the link.
    pub fn seal(&self, user_id: Uuid, link_id: Uuid, secret: &str) -> Result<Vec<u8>, DomainError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| {
            DomainError::Hashing("sealing a linked-account secret: no randomness".into())
        })?;
        let mut sealed = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(user_id, link_id)),
                &mut sealed,
            )
            .map_err(|_| DomainError::Hashing("sealing a linked-account secret failed".into()))?;
        let mut out = nonce.to_vec();
        out.append(&mut sealed);
        Ok(out)
    }

    pub fn open(&self, user_id: Uuid, link_id: Uuid, sealed: &[u8]) -> Result<String, DomainError> {
        let corrupt =
            || DomainError::Corrupt(format!("sealed secret of link {link_id} does not open"));
        if sealed.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt())?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(Self::aad(user_id, link_id)), &mut body)
            .map_err(|_| corrupt())?;
        String::from_utf8(plain.to_vec()).map_err(|_| corrupt())
    }
}

const LINK_COLUMNS: &str =
    "id, service, account, created_at, last_sync_status, last_sync_at, last_sync_error";

fn link_from_row(row: &tokio_postgres::Row) -> Result<LinkedAccount, DomainError> {
    let service: String = row.get(1);
    let status: Option<String> = row.get(4);
    Ok(LinkedAccount {
        id: row.get(0),
        service: Service::parse(&service)
            .ok_or_else(|| DomainError::Corrupt(format!("unknown linked service {service:?}")))?,
        account: row.get(2),
        created_at: row.get(3),
        last_sync: LastSync {
            status: status
                .as_deref()
                .map_or(SyncStatus::Never, SyncStatus::parse),
            at: row.get(5),
            error: row.get(6),
        },
    })
}

impl Domain {
    pub async fn linked_accounts(
        &self,
        viewer: &Viewer,
    ) -> Result<Vec<LinkedAccount>, DomainError> {
        let user_id = viewer.id;
        let rows = self
            .pools
            .read(viewer.shard, move |client| {
                Box::pin(async move {
                    client
                        .query(
                            &format!(
                                "SELECT {LINK_COLUMNS} FROM linked_accounts WHERE user_id = $1 \
                                 ORDER BY created_at, id"
                            ),
                            &[&user_id],
                        )
                        .await
                        .map_err(db)
                })
            })
            .await?;
        rows.iter().map(link_from_row).collect()
    }

    pub async fn linked_account(
        &self,
        viewer: &Viewer,
        id: Uuid,
    ) -> Result<LinkedAccount, DomainError> {
        let user_id = viewer.id;
        let row = self
            .pools
            .read(viewer.shard, move |client| {
                Box::pin(async move {
                    client
                        .query_opt(
                            &format!(
                                "SELECT {LINK_COLUMNS} FROM linked_accounts WHERE id = $1 AND user_id = $2"
                            ),
                            &[&id, &user_id],
                        )
                        .await
                        .map_err(db)
                })
            })
            .await?
            .ok_or(DomainError::NotFound)?;
        link_from_row(&row)
    }

    /// Links an account. A retry with the same client id returns the link
    /// made by the first attempt; linking the same service account twice is
    /// a conflict.
    pub async fn link_account(
        &self,
        viewer: &Viewer,
        key: &LinkKey,
        link: NewLink,
    ) -> Result<LinkedAccount, DomainError> {
        let account = link.service.normalize_account(&link.account)?;
        let secret = link.secret.trim();
        if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
            return Err(DomainError::invalid(
                "secret",
                format!("must be 1 to {MAX_SECRET_LEN} bytes"),
            ));
        }
        if secret.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                "secret",
                "must not contain control characters",
            ));
        }
        let id = link.id.unwrap_or_else(Uuid::now_v7);
        let user_id = viewer.id;
        let sealed = key.seal(user_id, id, secret)?;
        let (service, key_id, now) = (link.service.as_str(), key.id().to_string(), Utc::now());
        let wanted = account.clone();
        let inserted = self
            .pools
            .write(viewer.shard, move |tx| {
                let (account, sealed, key_id) = (account.clone(), sealed.clone(), key_id.clone());
                Box::pin(async move {
                    Ok(tx
                        .execute(
                            "INSERT INTO linked_accounts (id, user_id, service, account, secret_sealed, key_id, \
                             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING",
                            &[&id, &user_id, &service, &account, &sealed, &key_id, &now],
                        )
                        .await
                        .map_err(db)?
                        == 1)
                })
            })
            .await?;
        match self.linked_account(viewer, id).await {
            // Not inserted, but this id holds the same link: a retry whose
            // first attempt committed.
            Ok(existing)
                if inserted || (existing.service == link.service && existing.account == wanted) =>
            {
                Ok(existing)
            }
            Ok(_) | Err(DomainError::NotFound) => Err(DomainError::Conflict(
                "this account is already linked (or the id is taken)".into(),
            )),
            Err(e) => Err(e),
        }
    }

    /// Removes a link and its sealed secret; `NotFound` when the user has no
    /// such link.
    pub async fn unlink_account(&self, viewer: &Viewer, id: Uuid) -> Result<(), DomainError> {
        let removed = self.delete_own_row(viewer, "linked_accounts", id).await?;
        if removed == 0 {
            return Err(DomainError::NotFound);
        }
        Ok(())
    }

    /// The secret of a link, for the bot that syncs it.
    pub async fn linked_account_secret(
        &self,
        viewer: &Viewer,
        key: &LinkKey,
        id: Uuid,
    ) -> Result<String, DomainError> {
        let user_id = viewer.id;
        let row = self
            .pools
            .read(viewer.shard, move |client| {
                Box::pin(async move {
                    client
                        .query_opt(
                            "SELECT secret_sealed, key_id FROM linked_accounts WHERE id = $1 AND user_id = $2",
                            &[&id, &user_id],
                        )
                        .await
                        .map_err(db)
                })
            })
            .await?
            .ok_or(DomainError::NotFound)?;
        let (sealed, key_id): (Vec<u8>, String) = (row.get(0), row.get(1));
        if key_id != key.id() {
            return Err(DomainError::Corrupt(format!(
                "link {id} was sealed under key {key_id}, not the configured key {}",
                key.id()
            )));
        }
        key.open(user_id, id, &sealed)
    }

    /// Records the outcome of a bot's sync of a link (`error` for
    /// `Error`/`NeedsReauth`).
    pub async fn record_link_sync(
        &self,
        viewer: &Viewer,
        id: Uuid,
        status: SyncStatus,
        error: Option<&str>,
    ) -> Result<(), DomainError> {
        let (user_id, now) = (viewer.id, Utc::now());
        let (status, error) = (status.as_str(), error.map(str::to_string));
        let updated = self
            .pools
            .write(viewer.shard, move |tx| {
                let error = error.clone();
                Box::pin(async move {
                    tx.execute(
                        "UPDATE linked_accounts SET last_sync_status = $1, last_sync_at = $2, \
                         last_sync_error = $3, updated_at = $2 WHERE id = $4 AND user_id = $5",
                        &[&status, &now, &error, &id, &user_id],
                    )
                    .await
                    .map_err(db)
                })
            })
            .await?;
        if updated == 0 {
            return Err(DomainError::NotFound);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn secrets_open_only_for_their_user_and_link() {
        let key = LinkKey::from_hex(KEY).unwrap();
        let (user, link) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = key.seal(user, link, "1//refresh-token").unwrap();
        assert!(!sealed
            .windows(b"refresh-token".len())
            .any(|w| w == b"refresh-token"));
        assert_eq!(key.open(user, link, &sealed).unwrap(), "1//refresh-token");
        assert!(key.open(Uuid::new_v4(), link, &sealed).is_err());
        assert!(key.open(user, Uuid::new_v4(), &sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(key.open(user, link, &tampered).is_err());
        assert!(key.open(user, link, &sealed[..5]).is_err());
        // Each sealing uses a fresh nonce.
        assert_ne!(key.seal(user, link, "1//refresh-token").unwrap(), sealed);
        let other = LinkKey::from_hex(&KEY.replace("00", "ff")).unwrap();
        assert_ne!(other.id(), key.id());
        assert!(other.open(user, link, &sealed).is_err());
    }

    #[test]
    fn keys_must_be_32_hex_bytes() {
        assert!(LinkKey::from_hex(&format!(" {KEY}\n")).is_ok());
        for bad in ["", "00", &KEY[..63], &format!("{}zz", &KEY[..62])] {
            assert!(LinkKey::from_hex(bad).is_err(), "{bad:?}");
        }
        let both = LinkSettings {
            key: Some(KEY.into()),
            key_file: Some("/nonexistent".into()),
        };
        assert!(both.validate("t.toml").is_err());
        assert!(LinkSettings::default().load("t.toml").unwrap().is_none());
    }

    #[test]
    fn accounts_are_normalised_per_service() {
        let g = Service::Google;
        assert_eq!(
            g.normalize_account(" Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        assert!(g.normalize_account("not-an-email").is_err());
        let h = Service::Highrise;
        assert_eq!(h.normalize_account("Acme").unwrap(), "acme");
        assert_eq!(
            h.normalize_account("https://acme-co.highrisehq.com/")
                .unwrap(),
            "acme-co"
        );
        for bad in ["", "-acme", "acme corp", "acme.example.com", "a/b"] {
            match h.normalize_account(bad) {
                Err(DomainError::Invalid { field, .. }) => assert_eq!(field, "account"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
