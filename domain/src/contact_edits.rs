//! Changing and deleting contacts.
//!
//! Updates are optimistic: the caller names the version it read (HTTP
//! If-Match, or the version just read inside the transaction), and the
//! UPDATE only applies to that version. Deletes leave a tombstone
//! (`deleted_at`) so that SyncML devices and bots learn about them through
//! the change log. A retry whose first attempt committed finds its own
//! result already in place and reports success, never a conflict.

use crate::accounts::Viewer;
use crate::contacts::{record_change, row_to_contact, Contact, ContactCard};
use crate::db::db;
use crate::error::DomainError;
use crate::Domain;
use chrono::Utc;
use serde::Serialize;
use tokio_postgres::Transaction;
use uuid::Uuid;

/// The outcome of a bulk delete.
#[derive(Debug, Clone, Serialize)]
pub struct BulkDeleted {
    pub deleted: Vec<Uuid>,
    pub not_found: Vec<Uuid>,
}

const SELECT_ONE: &str = "SELECT id, user_id, card, version, created_at, updated_at, deleted_at \
                          FROM contacts WHERE id = $1 AND user_id = $2";

async fn load(
    tx: &Transaction<'_>,
    id: Uuid,
    user_id: Uuid,
) -> Result<Option<tokio_postgres::Row>, DomainError> {
    tx.query_opt(SELECT_ONE, &[&id, &user_id]).await.map_err(db)
}

/// Tombstones one contact inside the caller's transaction. Returns false if
/// it never existed (for this user); true if it is deleted now, including
/// when a retried earlier attempt already deleted it.
async fn delete_in(tx: &Transaction<'_>, user_id: Uuid, id: Uuid) -> Result<bool, DomainError> {
    let now = Utc::now();
    let changed = tx
        .execute(
            "UPDATE contacts SET deleted_at = $1, updated_at = $1, version = version + 1 \
             WHERE id = $2 AND user_id = $3 AND deleted_at IS NULL",
            &[&now, &id, &user_id],
        )
        .await
        .map_err(db)?;
    if changed == 1 {
        let payload = serde_json::json!({"user_id": user_id, "contact_id": id, "op": "delete"});
        record_change(tx, user_id, id, "delete", now, payload).await?;
        return Ok(true);
    }
    Ok(load(tx, id, user_id).await?.is_some())
}

impl Domain {
    /// Replaces a contact's card. With `if_version`, only that version is
    /// replaced (else `Conflict`, for HTTP 412).
    pub async fn update_contact(
        &self,
        viewer: &Viewer,
        id: Uuid,
        if_version: Option<i64>,
        card: ContactCard,
    ) -> Result<Contact, DomainError> {
        let card = card.validated()?;
        let keep_extras = card.vcard_extras.is_empty();
        let card_json =
            serde_json::to_value(&card).map_err(|e| DomainError::Corrupt(e.to_string()))?;
        let (sort_key, search_text) = (card.sort_key(), card.search_text());
        let name = card.formatted_name.clone();
        let user_id = viewer.id;
        self.pools
            .write(viewer.shard, move |tx| {
                let (card_json, sort_key, search_text, name) =
                    (card_json.clone(), sort_key.clone(), search_text.clone(), name.clone());
                Box::pin(async move {
                    let row = load(tx, id, user_id).await?.ok_or(DomainError::NotFound)?;
                    let deleted: Option<chrono::DateTime<Utc>> = row.get("deleted_at");
                    if deleted.is_some() {
                        return Err(DomainError::NotFound);
                    }
                    let current = row_to_contact(&row)?;
                    // vcard_extras are round-tripped, not edited: a client that
                    // does not send them keeps what the sources said.
                    let mut card_json = card_json;
                    if keep_extras && !current.card.vcard_extras.is_empty() {
                        if let Some(object) = card_json.as_object_mut() {
                            let extras = serde_json::to_value(&current.card.vcard_extras)
                                .map_err(|e| DomainError::Corrupt(e.to_string()))?;
                            object.insert("vcard_extras".to_string(), extras);
                        }
                    }
                    let expected = if_version.unwrap_or(current.version);
                    if current.version != expected {
                        // Our own earlier attempt may have committed already.
                        let stored: serde_json::Value = row.get("card");
                        if current.version == expected + 1 && stored == card_json {
                            return Ok(current);
                        }
                        return Err(DomainError::Conflict(format!(
                            "contact is at version {}, not {expected}",
                            current.version
                        )));
                    }
                    if row.get::<_, serde_json::Value>("card") == card_json {
                        return Ok(current);
                    }
                    let now = Utc::now();
                    let updated = tx
                        .query_one(
                            "UPDATE contacts SET card = $1, display_name = $2, sort_key = $3, search_text = $4, \
                             version = version + 1, updated_at = $5 \
                             WHERE id = $6 AND user_id = $7 AND version = $8 \
                             RETURNING id, card, version, created_at, updated_at",
                            &[&card_json, &name, &sort_key, &search_text, &now, &id, &user_id, &expected],
                        )
                        .await
                        .map_err(db)?;
                    let payload = serde_json::json!({"user_id": user_id, "contact_id": id, "op": "update"});
                    record_change(tx, user_id, id, "update", now, payload).await?;
                    row_to_contact(&updated)
                })
            })
            .await
    }

    /// Deletes one contact (a tombstone). `NotFound` if it never existed
    /// for this user; deleting twice is not an error.
    pub async fn delete_contact(&self, viewer: &Viewer, id: Uuid) -> Result<(), DomainError> {
        let user_id = viewer.id;
        let found = self
            .pools
            .write(viewer.shard, move |tx| {
                Box::pin(async move { delete_in(tx, user_id, id).await })
            })
            .await?;
        if found {
            Ok(())
        } else {
            Err(DomainError::NotFound)
        }
    }

    /// Deletes many contacts in one transaction.
    pub async fn delete_contacts(
        &self,
        viewer: &Viewer,
        ids: Vec<Uuid>,
    ) -> Result<BulkDeleted, DomainError> {
        if ids.len() > 1000 {
            return Err(DomainError::invalid("ids", "at most 1000 per request"));
        }
        let user_id = viewer.id;
        self.pools
            .write(viewer.shard, move |tx| {
                let ids = ids.clone();
                Box::pin(async move {
                    let mut outcome = BulkDeleted {
                        deleted: Vec::new(),
                        not_found: Vec::new(),
                    };
                    for id in ids {
                        if delete_in(tx, user_id, id).await? {
                            outcome.deleted.push(id);
                        } else {
                            outcome.not_found.push(id);
                        }
                    }
                    Ok(outcome)
                })
            })
            .await
    }
}
