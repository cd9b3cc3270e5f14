//! Storage for the SyncML server: sessions, md5 nonces and secrets, client
//! devices, sync anchors and LUID maps (schema: migration 4), short GUIDs
//! (migration 7).
//!
//! Sessions and nonces live on the directory shard because they are looked
//! up before the user is known, and any sync-server instance must be able to
//! continue any session. Everything per user lives on the user's shard.
//! Every write is an idempotent upsert keyed by natural keys, so the retry
//! loop of [`ShardPools::write`](crate::db::ShardPools::write) may replay it.

use crate::accounts::{normalize_email, verify_password, Viewer};
use crate::db::db;
use crate::error::DomainError;
use crate::shard::ShardId;
use crate::Domain;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use uuid::Uuid;

/// Expired sessions deleted along with each saved session message.
pub const EXPIRED_SESSIONS_BATCH: i64 = 50;

async fn purge_expired(
    tx: &tokio_postgres::Transaction<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<u64, DomainError> {
    // The rows are chosen here and deleted by primary key. A DELETE whose own
    // subquery picks them would be evaluated by each node at a different
    // moment: a concurrent purge left node 0 choosing 0 rows and node 1 the
    // next 50, and pgpool detached a node (docs/datatier.md).
    let expired: Vec<String> = tx
        .query(
            "SELECT id FROM syncml_sessions WHERE expires_at < $1 ORDER BY expires_at, id LIMIT $2",
            &[&now, &limit],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if expired.is_empty() {
        return Ok(0);
    }
    // Re-checked under the row lock: a session extended meanwhile stays.
    tx.execute(
        "DELETE FROM syncml_sessions WHERE id = ANY($1) AND expires_at < $2",
        &[&expired, &now],
    )
    .await
    .map_err(db)
}

fn base36(mut n: i64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// A stored SyncML session: the engine's state is opaque JSON to this layer.
#[derive(Debug, Clone)]
pub struct StoredSyncSession {
    pub id: String,
    pub dev_id: String,
    pub client_session_id: String,
    pub state: serde_json::Value,
    pub last_request_sha256: Option<String>,
    pub last_response: Option<Vec<u8>>,
}

/// Anchors of one (user, device, datastore) after its last completed sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncAnchors {
    pub client_next: String,
    pub server_next: String,
    /// The user's change sequence number the device has seen.
    pub last_seq: i64,
}

/// The md5 secret of a user, as stored for SyncML.
#[derive(Debug, Clone)]
pub struct SyncSecret {
    pub user_name: String,
    pub secret: String,
}

fn fingerprint(password_hash: &str) -> String {
    Sha256::digest(password_hash.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Domain {
    /// The user behind an email, with the current data version, without
    /// opening a web session (SyncML authenticates every session itself).
    pub async fn viewer_by_email(&self, email: &str) -> Result<Option<Viewer>, DomainError> {
        let Ok(email) = normalize_email(email) else {
            return Ok(None);
        };
        let Some(placed) = self.router.find_by_email(&self.pools, &email).await? else {
            return Ok(None);
        };
        let user_id = placed.user_id;
        let row = self
            .pools
            .read(placed.shard, move |client| {
                Box::pin(async move {
                    client
                        .query_opt(
                            "SELECT email, change_seq FROM users WHERE id = $1",
                            &[&user_id],
                        )
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(row.map(|row| Viewer {
            id: user_id,
            email: row.get(0),
            shard: placed.shard,
            change_seq: row.get(1),
        }))
    }

    /// The viewer again, with a fresh `change_seq`.
    pub async fn refresh_viewer(&self, viewer: &Viewer) -> Result<Viewer, DomainError> {
        let user_id = viewer.id;
        let seq: i64 = self
            .pools
            .read(viewer.shard, move |client| {
                Box::pin(async move {
                    Ok(client
                        .query_opt("SELECT change_seq FROM users WHERE id = $1", &[&user_id])
                        .await
                        .map_err(db)?
                        .ok_or(DomainError::NotFound)?
                        .get(0))
                })
            })
            .await?;
        Ok(Viewer {
            change_seq: seq,
            ..viewer.clone()
        })
    }

    /// Checks a cleartext password (SyncML basic auth) against the argon2
    /// hash.
    pub async fn check_password(
        &self,
        viewer: &Viewer,
        password: &str,
    ) -> Result<bool, DomainError> {
        let hash = self.password_hash(viewer.shard, viewer.id).await?;
        verify_password(password, &hash).await
    }

    async fn password_hash(&self, shard: ShardId, user_id: Uuid) -> Result<String, DomainError> {
        self.pools
            .read(shard, move |client| {
                Box::pin(async move {
                    Ok(client
                        .query_opt("SELECT password_hash FROM users WHERE id = $1", &[&user_id])
                        .await
                        .map_err(db)?
                        .ok_or(DomainError::NotFound)?
                        .get(0))
                })
            })
            .await
    }

    /// Stores the SyncML md5 secret `b64(md5(user_name:password))`, tied to
    /// the current password hash: after a password change the fingerprint no
    /// longer matches and [`Domain::syncml_secret`] ignores the secret. Call
    /// only with a password that was just verified.
    pub async fn store_syncml_secret(
        &self,
        viewer: &Viewer,
        user_name: &str,
        secret: &str,
    ) -> Result<(), DomainError> {
        let print = fingerprint(&self.password_hash(viewer.shard, viewer.id).await?);
        let (user_id, now) = (viewer.id, Utc::now());
        let (user_name, secret) = (user_name.to_string(), secret.to_string());
        self.pools
            .write(viewer.shard, move |tx| {
                let (user_name, secret, print) = (user_name.clone(), secret.clone(), print.clone());
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO syncml_secrets (user_id, user_name, secret, password_fingerprint, updated_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET \
                         user_name = EXCLUDED.user_name, secret = EXCLUDED.secret, \
                         password_fingerprint = EXCLUDED.password_fingerprint, updated_at = EXCLUDED.updated_at",
                        &[&user_id, &user_name, &secret, &print, &now],
                    )
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await
    }

    /// The user's md5 secret, unless missing or made with an old password.
    pub async fn syncml_secret(&self, viewer: &Viewer) -> Result<Option<SyncSecret>, DomainError> {
        let user_id = viewer.id;
        let row = self
            .pools
            .read(viewer.shard, move |client| {
                Box::pin(async move {
                    client
                        .query_opt(
                            "SELECT s.user_name, s.secret, s.password_fingerprint, u.password_hash \
                             FROM syncml_secrets s JOIN users u ON u.id = s.user_id WHERE s.user_id = $1",
                            &[&user_id],
                        )
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(row.and_then(|row| {
            let stored: String = row.get(2);
            let hash: String = row.get(3);
            (stored == fingerprint(&hash)).then(|| SyncSecret {
                user_name: row.get(0),
                secret: row.get(1),
            })
        }))
    }

    pub async fn syncml_nonce(&self, dev_id: &str) -> Result<Option<String>, DomainError> {
        let dev_id = dev_id.to_string();
        self.pools
            .read(self.pools.directory_shard(), move |client| {
                let dev_id = dev_id.clone();
                Box::pin(async move {
                    Ok(client
                        .query_opt(
                            "SELECT nonce FROM syncml_nonces WHERE dev_id = $1",
                            &[&dev_id],
                        )
                        .await
                        .map_err(db)?
                        .map(|r| r.get(0)))
                })
            })
            .await
    }

    pub async fn set_syncml_nonce(&self, dev_id: &str, nonce: &str) -> Result<(), DomainError> {
        let (dev_id, nonce, now) = (dev_id.to_string(), nonce.to_string(), Utc::now());
        self.pools
            .write(self.pools.directory_shard(), move |tx| {
                let (dev_id, nonce) = (dev_id.clone(), nonce.clone());
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO syncml_nonces (dev_id, nonce, updated_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (dev_id) DO UPDATE SET nonce = EXCLUDED.nonce, updated_at = EXCLUDED.updated_at",
                        &[&dev_id, &nonce, &now],
                    )
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await
    }

    pub async fn syncml_session(&self, id: &str) -> Result<Option<StoredSyncSession>, DomainError> {
        let (id, now) = (id.to_string(), Utc::now());
        self.find_syncml_session(
            "SELECT id, dev_id, client_session_id, state, last_request_sha256, last_response \
             FROM syncml_sessions WHERE id = $1 AND expires_at > $2",
            vec![id],
            now,
        )
        .await
    }

    /// The latest live session of a device with the client's SessionID, for
    /// clients that do not use our RespURI.
    pub async fn syncml_session_by_device(
        &self,
        dev_id: &str,
        client_session_id: &str,
    ) -> Result<Option<StoredSyncSession>, DomainError> {
        self.find_syncml_session(
            "SELECT id, dev_id, client_session_id, state, last_request_sha256, last_response \
             FROM syncml_sessions WHERE dev_id = $1 AND client_session_id = $3 AND expires_at > $2 \
             ORDER BY updated_at DESC LIMIT 1",
            vec![dev_id.to_string(), client_session_id.to_string()],
            Utc::now(),
        )
        .await
    }

    async fn find_syncml_session(
        &self,
        sql: &'static str,
        keys: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<Option<StoredSyncSession>, DomainError> {
        let row = self
            .pools
            .read(self.pools.directory_shard(), move |client| {
                let keys = keys.clone();
                Box::pin(async move {
                    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        vec![&keys[0], &now];
                    for k in &keys[1..] {
                        params.push(k);
                    }
                    client.query_opt(sql, &params).await.map_err(db)
                })
            })
            .await?;
        Ok(row.map(|row| StoredSyncSession {
            id: row.get(0),
            dev_id: row.get(1),
            client_session_id: row.get(2),
            state: row.get(3),
            last_request_sha256: row.get(4),
            last_response: row.get(5),
        }))
    }

    /// Creates or replaces a session; `ttl` counts from now.
    pub async fn save_syncml_session(
        &self,
        session: &StoredSyncSession,
        ttl: Duration,
    ) -> Result<(), DomainError> {
        let s = session.clone();
        let now = Utc::now();
        let expires = now + ttl;
        self.pools
            .write(self.pools.directory_shard(), move |tx| {
                let s = s.clone();
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO syncml_sessions (id, dev_id, client_session_id, state, last_request_sha256, \
                         last_response, created_at, updated_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) \
                         ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, \
                         last_request_sha256 = EXCLUDED.last_request_sha256, last_response = EXCLUDED.last_response, \
                         updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at",
                        &[
                            &s.id,
                            &s.dev_id,
                            &s.client_session_id,
                            &s.state,
                            &s.last_request_sha256,
                            &s.last_response,
                            &now,
                            &expires,
                        ],
                    )
                    .await
                    .map_err(db)?;
                    // Housekeeping rides along with every saved message,
                    // bounded so no request pays for a large backlog; steady
                    // traffic keeps the table to live sessions plus at most a
                    // few batches.
                    purge_expired(tx, now, EXPIRED_SESSIONS_BATCH).await?;
                    Ok(())
                })
            })
            .await
    }

    /// Deletes up to `limit` expired sessions (oldest first); returns how
    /// many went.
    pub async fn purge_expired_syncml_sessions(&self, limit: i64) -> Result<u64, DomainError> {
        let now = Utc::now();
        self.pools
            .write(self.pools.directory_shard(), move |tx| {
                Box::pin(async move { purge_expired(tx, now, limit).await })
            })
            .await
    }

    /// Whether a session row exists at all, expired or not (for tests and
    /// diagnostics; [`Domain::syncml_session`] ignores expired ones).
    pub async fn syncml_session_row_exists(&self, id: &str) -> Result<bool, DomainError> {
        let id = id.to_string();
        self.pools
            .read(self.pools.directory_shard(), move |client| {
                let id = id.clone();
                Box::pin(async move {
                    Ok(client
                        .query_opt("SELECT 1 FROM syncml_sessions WHERE id = $1", &[&id])
                        .await
                        .map_err(db)?
                        .is_some())
                })
            })
            .await
    }

    /// Short GUIDs (base 36 of a per-datastore counter) for contacts sent
    /// to a device whose MaxGUIDSize cannot hold our UUIDs; allocated on
    /// first use and kept, so the device's Map and later Replace/Delete
    /// refer to the same contact.
    pub async fn syncml_short_guids(
        &self,
        viewer: &Viewer,
        dev_id: &str,
        datastore: &str,
        contacts: &[Uuid],
    ) -> Result<HashMap<Uuid, String>, DomainError> {
        if contacts.is_empty() {
            return Ok(HashMap::new());
        }
        let (user_id, dev_id, datastore, contacts, now) = (
            viewer.id,
            dev_id.to_string(),
            datastore.to_string(),
            contacts.to_vec(),
            Utc::now(),
        );
        self.pools
            .write(viewer.shard, move |tx| {
                let (dev_id, datastore, contacts) =
                    (dev_id.clone(), datastore.clone(), contacts.clone());
                Box::pin(async move {
                    let rows = tx
                        .query(
                            "SELECT contact_id, guid FROM syncml_guids WHERE user_id = $1 AND dev_id = $2 \
                             AND datastore = $3 AND contact_id = ANY($4)",
                            &[&user_id, &dev_id, &datastore, &contacts],
                        )
                        .await
                        .map_err(db)?;
                    let mut out: HashMap<Uuid, String> =
                        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                    let mut next: i64 = tx
                        .query_one(
                            "SELECT COALESCE(MAX(n), 0) FROM syncml_guids WHERE user_id = $1 AND dev_id = $2 \
                             AND datastore = $3",
                            &[&user_id, &dev_id, &datastore],
                        )
                        .await
                        .map_err(db)?
                        .get(0);
                    for contact in &contacts {
                        if out.contains_key(contact) {
                            continue;
                        }
                        next += 1;
                        let guid = base36(next);
                        tx.execute(
                            "INSERT INTO syncml_guids (user_id, dev_id, datastore, guid, n, contact_id, created_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7)",
                            &[&user_id, &dev_id, &datastore, &guid, &next, contact, &now],
                        )
                        .await
                        .map_err(db)?;
                        out.insert(*contact, guid);
                    }
                    Ok(out)
                })
            })
            .await
    }

    /// Short GUID → contact, for one device datastore.
    pub async fn syncml_guid_contacts(
        &self,
        viewer: &Viewer,
        dev_id: &str,
        datastore: &str,
    ) -> Result<HashMap<String, Uuid>, DomainError> {
        self.device_pairs(
            viewer,
            "SELECT guid, contact_id FROM syncml_guids WHERE user_id = $1 AND dev_id = $2 \
             AND datastore = $3",
            dev_id,
            datastore,
        )
        .await
    }

    /// The device's DevInf document as the client last sent it.
    pub async fn syncml_devinf(
        &self,
        viewer: &Viewer,
        dev_id: &str,
    ) -> Result<Option<Vec<u8>>, DomainError> {
        let (user_id, dev_id) = (viewer.id, dev_id.to_string());
        self.pools
            .read(viewer.shard, move |client| {
                let dev_id = dev_id.clone();
                Box::pin(async move {
                    Ok(client
                        .query_opt(
                            "SELECT devinf FROM syncml_devices WHERE user_id = $1 AND dev_id = $2",
                            &[&user_id, &dev_id],
                        )
                        .await
                        .map_err(db)?
                        .and_then(|r| r.get(0)))
                })
            })
            .await
    }

    pub async fn set_syncml_devinf(
        &self,
        viewer: &Viewer,
        dev_id: &str,
        devinf: &[u8],
    ) -> Result<(), DomainError> {
        let (user_id, dev_id, devinf, now) =
            (viewer.id, dev_id.to_string(), devinf.to_vec(), Utc::now());
        self.pools
            .write(viewer.shard, move |tx| {
                let (dev_id, devinf) = (dev_id.clone(), devinf.clone());
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO syncml_devices (user_id, dev_id, devinf, updated_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (user_id, dev_id) DO UPDATE SET devinf = EXCLUDED.devinf, updated_at = EXCLUDED.updated_at",
                        &[&user_id, &dev_id, &devinf, &now],
                    )
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await
    }

    pub async fn syncml_anchors(
        &self,
        viewer: &Viewer,
        dev_id: &str,
        datastore: &str,
    ) -> Result<Option<SyncAnchors>, DomainError> {
        let (user_id, dev_id, datastore) = (viewer.id, dev_id.to_string(), datastore.to_string());
        self.pools
            .read(viewer.shard, move |client| {
                let (dev_id, datastore) = (dev_id.clone(), datastore.clone());
                Box::pin(async move {
                    Ok(client
                        .query_opt(
                            "SELECT client_next, server_next, last_seq FROM syncml_anchors \
                             WHERE user_id = $1 AND dev_id = $2 AND datastore = $3",
                            &[&user_id, &dev_id, &datastore],
                        )
                        .await
                        .map_err(db)?
                        .map(|r| SyncAnchors {
                            client_next: r.get(0),
                            server_next: r.get(1),
                            last_seq: r.get(2),
                        }))
                })
            })
            .await
    }

    /// Commits a completed sync: the anchors both sides will present next time.
    pub async fn set_syncml_anchors(
        &self,
        viewer: &Viewer,
        dev_id: &str,
        datastore: &str,
        anchors: &SyncAnchors,
    ) -> Result<(), DomainError> {
        let (user_id, dev_id, datastore, a, now) = (
            viewer.id,
            dev_id.to_string(),
            datastore.to_string(),
            anchors.clone(),
            Utc::now(),
        );
        self.pools
            .write(viewer.shard, move |tx| {
                let (dev_id, datastore, a) = (dev_id.clone(), datastore.clone(), a.clone());
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO syncml_anchors (user_id, dev_id, datastore, client_next, server_next, last_seq, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, dev_id, datastore) DO UPDATE SET \
                         client_next = EXCLUDED.client_next, server_next = EXCLUDED.server_next, \
                         last_seq = EXCLUDED.last_seq, updated_at = EXCLUDED.updated_at",
                        &[&user_id, &dev_id, &datastore, &a.client_next, &a.server_next, &a.last_seq, &now],
                    )
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await
    }

    /// LUID → contact id for one device datastore.
    pub async fn syncml_maps(
        &self,
        viewer: &Viewer,
        dev_id: &str,
        datastore: &str,
    ) -> Result<Vec<(String, Uuid)>, DomainError> {
        self.device_pairs(
            viewer,
            "SELECT luid, contact_id FROM syncml_maps WHERE user_id = $1 AND dev_id = $2 AND datastore = $3",
            dev_id,
            datastore,
        )
        .await
    }

    /// Runs `sql` (selecting a text id and a contact id, with parameters user,
    /// device, datastore) and collects the pairs.
    async fn device_pairs<C>(
        &self,
        viewer: &Viewer,
        sql: &'static str,
        dev_id: &str,
        datastore: &str,
    ) -> Result<C, DomainError>
    where
        C: FromIterator<(String, Uuid)> + Send,
    {
        let (user_id, dev_id, datastore) = (viewer.id, dev_id.to_string(), datastore.to_string());
        self.pools
            .read(viewer.shard, move |client| {
                let (dev_id, datastore) = (dev_id.clone(), datastore.clone());
                Box::pin(async move {
                    Ok(client
                        .query(sql, &[&user_id, &dev_id, &datastore])
                        .await
                        .map_err(db)?
                        .iter()
                        .map(|r| (r.get(0), r.get(1)))
                        .collect())
                })
            })
            .await
    }

    /// Sets (`Some`) or removes (`None`) the mapping of each LUID, in one
    /// transaction.
    pub async fn set_syncml_maps(
        &self,
        viewer: &Viewer,
        dev_id: &str,
        datastore: &str,
        entries: &[(String, Option<Uuid>)],
    ) -> Result<(), DomainError> {
        if entries.is_empty() {
            return Ok(());
        }
        let (user_id, dev_id, datastore, entries, now) = (
            viewer.id,
            dev_id.to_string(),
            datastore.to_string(),
            entries.to_vec(),
            Utc::now(),
        );
        self.pools
            .write(viewer.shard, move |tx| {
                let (dev_id, datastore, entries) = (dev_id.clone(), datastore.clone(), entries.clone());
                Box::pin(async move {
                    for (luid, contact) in &entries {
                        match contact {
                            Some(contact_id) => tx
                                .execute(
                                    "INSERT INTO syncml_maps (user_id, dev_id, datastore, luid, contact_id, updated_at) \
                                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, dev_id, datastore, luid) \
                                     DO UPDATE SET contact_id = EXCLUDED.contact_id, updated_at = EXCLUDED.updated_at",
                                    &[&user_id, &dev_id, &datastore, luid, contact_id, &now],
                                )
                                .await
                                .map_err(db)?,
                            None => tx
                                .execute(
                                    "DELETE FROM syncml_maps WHERE user_id = $1 AND dev_id = $2 AND datastore = $3 AND luid = $4",
                                    &[&user_id, &dev_id, &datastore, luid],
                                )
                                .await
                                .map_err(db)?,
                        };
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Forgets every mapping of a device datastore (slow sync starts over).
    pub async fn clear_syncml_maps(
        &self,
        viewer: &Viewer,
        dev_id: &str,
        datastore: &str,
    ) -> Result<(), DomainError> {
        let (user_id, dev_id, datastore) = (viewer.id, dev_id.to_string(), datastore.to_string());
        self.pools
            .write(viewer.shard, move |tx| {
                let (dev_id, datastore) = (dev_id.clone(), datastore.clone());
                Box::pin(async move {
                    tx.execute(
                        "DELETE FROM syncml_maps WHERE user_id = $1 AND dev_id = $2 AND datastore = $3",
                        &[&user_id, &dev_id, &datastore],
                    )
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::base36;

    #[test]
    fn short_guids_are_base36() {
        assert_eq!(base36(1), "1");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(36 * 36 * 36 - 1), "zzz");
    }
}
