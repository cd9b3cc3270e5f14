//! Contacts: the model, the per-user change log and the cached reads.
//!
//! Every write happens in one transaction on the user's shard that also
//! bumps `users.change_seq`, appends to `change_log` and queues an `outbox`
//! event, so the web app, the SyncML server and the bots all see one ordered
//! history per user.

use crate::accounts::Viewer;
use crate::db::db;
use crate::error::DomainError;
use crate::Domain;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Transaction;
use uuid::Uuid;

/// A value with an optional label ("work", "home", "mobile", ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labeled {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The editable content of a contact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactCard {
    #[serde(default)]
    pub formatted_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<Labeled>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<Labeled>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub id: Uuid,
    #[serde(flatten)]
    pub card: ContactCard,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactPage {
    pub contacts: Vec<Contact>,
    pub total: i64,
    pub offset: i64,
    pub limit: i64,
}

pub const MAX_PAGE: i64 = 500;

impl ContactCard {
    /// Fills the display name from the parts when absent and checks sizes.
    pub fn validated(mut self) -> Result<Self, DomainError> {
        if self.formatted_name.trim().is_empty() {
            let parts: Vec<&str> = [self.given_name.as_deref(), self.family_name.as_deref()]
                .into_iter()
                .flatten()
                .filter(|s| !s.trim().is_empty())
                .collect();
            self.formatted_name = if parts.is_empty() {
                self.organization
                    .clone()
                    .or_else(|| self.emails.first().map(|e| e.value.clone()))
                    .unwrap_or_default()
            } else {
                parts.join(" ")
            };
        }
        self.formatted_name = self.formatted_name.trim().to_string();
        if self.formatted_name.is_empty() {
            return Err(DomainError::invalid(
                "formatted_name",
                "a contact needs a name, an organisation or an email",
            ));
        }
        if self.formatted_name.chars().count() > 500 {
            return Err(DomainError::invalid("formatted_name", "longer than 500 characters"));
        }
        if self.note.as_ref().is_some_and(|n| n.len() > 64 * 1024) {
            return Err(DomainError::invalid("note", "longer than 64 KiB"));
        }
        for (i, email) in self.emails.iter().enumerate() {
            if !email.value.contains('@') {
                return Err(DomainError::invalid(format!("emails[{i}].value"), "not an email address"));
            }
        }
        Ok(self)
    }

    fn sort_key(&self) -> String {
        let key = self
            .family_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|family| format!("{family} {}", self.given_name.as_deref().unwrap_or("")))
            .unwrap_or_else(|| self.formatted_name.clone());
        key.trim().to_lowercase()
    }

    /// Lower-cased text the search matches against.
    fn search_text(&self) -> String {
        let mut parts = vec![self.formatted_name.clone()];
        parts.extend(self.given_name.clone());
        parts.extend(self.family_name.clone());
        parts.extend(self.organization.clone());
        parts.extend(self.emails.iter().map(|e| e.value.clone()));
        parts.extend(self.phones.iter().map(|p| p.value.clone()));
        parts.join(" ").to_lowercase()
    }
}

/// Appends one change to the user's history: bumps the data version, logs
/// the change and queues the event, all in the caller's transaction.
async fn record_change(
    tx: &Transaction<'_>,
    user_id: Uuid,
    contact_id: Uuid,
    op: &str,
    now: DateTime<Utc>,
    payload: serde_json::Value,
) -> Result<i64, DomainError> {
    // A single-row update keyed by primary key: consistent on both pgpool
    // nodes, and a concurrent writer of the same user gets 40001 and retries.
    let seq: i64 = tx
        .query_one(
            "UPDATE users SET change_seq = change_seq + 1 WHERE id = $1 RETURNING change_seq",
            &[&user_id],
        )
        .await
        .map_err(db)?
        .get(0);
    tx.execute(
        "INSERT INTO change_log (user_id, seq, contact_id, op, at) VALUES ($1, $2, $3, $4, $5)",
        &[&user_id, &seq, &contact_id, &op, &now],
    )
    .await
    .map_err(db)?;
    let event_id = Uuid::new_v4();
    let routing_key = format!("contact.{op}");
    tx.execute(
        "INSERT INTO outbox (id, user_id, seq, routing_key, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&event_id, &user_id, &seq, &routing_key, &payload, &now],
    )
    .await
    .map_err(db)?;
    Ok(seq)
}

fn row_to_contact(row: &tokio_postgres::Row) -> Result<Contact, DomainError> {
    let card: serde_json::Value = row.get("card");
    Ok(Contact {
        id: row.get("id"),
        card: serde_json::from_value(card).map_err(|e| DomainError::Corrupt(e.to_string()))?,
        version: row.get("version"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

impl Domain {
    /// Creates a contact. `id` may come from the client (idempotent retries
    /// and SyncML/bot imports); replaying the same create returns the same
    /// contact and records nothing twice.
    pub async fn create_contact(
        &self,
        viewer: &Viewer,
        id: Option<Uuid>,
        card: ContactCard,
    ) -> Result<Contact, DomainError> {
        let card = card.validated()?;
        let id = id.unwrap_or_else(Uuid::now_v7);
        let now = Utc::now();
        let card_json = serde_json::to_value(&card).map_err(|e| DomainError::Corrupt(e.to_string()))?;
        let (sort_key, search_text) = (card.sort_key(), card.search_text());
        let user_id = viewer.id;
        let stored = self
            .pools
            .write(viewer.shard, move |tx| {
                let (card_json, sort_key, search_text) =
                    (card_json.clone(), sort_key.clone(), search_text.clone());
                Box::pin(async move {
                    let name = card_json
                        .get("formatted_name")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_string();
                    let inserted = tx
                        .execute(
                            "INSERT INTO contacts (id, user_id, display_name, sort_key, search_text, card, version, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) ON CONFLICT (id) DO NOTHING",
                            &[&id, &user_id, &name, &sort_key, &search_text, &card_json, &now],
                        )
                        .await
                        .map_err(db)?;
                    if inserted == 1 {
                        let payload = serde_json::json!({"user_id": user_id, "contact_id": id, "op": "create"});
                        record_change(tx, user_id, id, "create", now, payload).await?;
                    }
                    let row = tx
                        .query_one(
                            "SELECT id, user_id, card, version, created_at, updated_at FROM contacts WHERE id = $1",
                            &[&id],
                        )
                        .await
                        .map_err(db)?;
                    let owner: Uuid = row.get("user_id");
                    if owner != user_id {
                        // Someone else's id: say nothing about it.
                        return Err(DomainError::Conflict("contact id already in use".into()));
                    }
                    row_to_contact(&row)
                })
            })
            .await?;
        Ok(stored)
    }

    pub async fn get_contact(&self, viewer: &Viewer, id: Uuid) -> Result<Contact, DomainError> {
        let key = format!("c:{}:{}:{}", viewer.id.simple(), viewer.change_seq, id.simple());
        if let Some(bytes) = self.cache.get(&key).await {
            if let Ok(contact) = serde_json::from_slice::<Contact>(&bytes) {
                return Ok(contact);
            }
        }
        let user_id = viewer.id;
        let contact = self
            .pools
            .read(viewer.shard, move |client| {
                Box::pin(async move {
                    let row = client
                        .query_opt(
                            "SELECT id, card, version, created_at, updated_at FROM contacts \
                             WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
                            &[&id, &user_id],
                        )
                        .await
                        .map_err(db)?
                        .ok_or(DomainError::NotFound)?;
                    row_to_contact(&row)
                })
            })
            .await?;
        if let Ok(bytes) = serde_json::to_vec(&contact) {
            self.cache.set(&key, &bytes).await;
        }
        Ok(contact)
    }

    /// One page of the user's contacts in name order.
    pub async fn list_contacts(&self, viewer: &Viewer, offset: i64, limit: i64) -> Result<ContactPage, DomainError> {
        if offset < 0 {
            return Err(DomainError::invalid("offset", "must not be negative"));
        }
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(DomainError::invalid("limit", format!("must be between 1 and {MAX_PAGE}")));
        }
        let key = format!("l:{}:{}:{offset}:{limit}", viewer.id.simple(), viewer.change_seq);
        if let Some(bytes) = self.cache.get(&key).await {
            if let Ok(page) = serde_json::from_slice::<ContactPage>(&bytes) {
                return Ok(page);
            }
        }
        let user_id = viewer.id;
        let page = self
            .pools
            .read(viewer.shard, move |client| {
                Box::pin(async move {
                    let rows = client
                        .query(
                            "SELECT id, card, version, created_at, updated_at, count(*) OVER () AS total FROM contacts \
                             WHERE user_id = $1 AND deleted_at IS NULL ORDER BY sort_key, id OFFSET $2 LIMIT $3",
                            &[&user_id, &offset, &limit],
                        )
                        .await
                        .map_err(db)?;
                    let total = rows.first().map(|r| r.get::<_, i64>("total")).unwrap_or(0);
                    let contacts = rows.iter().map(row_to_contact).collect::<Result<Vec<_>, _>>()?;
                    Ok(ContactPage { contacts, total, offset, limit })
                })
            })
            .await?;
        if let Ok(bytes) = serde_json::to_vec(&page) {
            self.cache.set(&key, &bytes).await;
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_derived_from_parts_organisation_or_email() {
        let card = ContactCard {
            given_name: Some("Ada".into()),
            family_name: Some("Lovelace".into()),
            ..Default::default()
        };
        assert_eq!(card.validated().unwrap().formatted_name, "Ada Lovelace");
        let card = ContactCard {
            organization: Some("Analytical Engines Ltd".into()),
            ..Default::default()
        };
        assert_eq!(card.validated().unwrap().formatted_name, "Analytical Engines Ltd");
        assert!(ContactCard::default().validated().is_err());
    }

    #[test]
    fn bad_email_is_reported_by_index() {
        let card = ContactCard {
            formatted_name: "X".into(),
            emails: vec![
                Labeled { value: "x@y.test".into(), label: None },
                Labeled { value: "nope".into(), label: None },
            ],
            ..Default::default()
        };
        match card.validated() {
            Err(DomainError::Invalid { field, .. }) => assert_eq!(field, "emails[1].value"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn sort_key_prefers_family_name() {
        let card = ContactCard {
            formatted_name: "Ada Lovelace".into(),
            given_name: Some("Ada".into()),
            family_name: Some("Lovelace".into()),
            ..Default::default()
        };
        assert_eq!(card.sort_key(), "lovelace ada");
        assert!(card.search_text().contains("ada lovelace"));
    }
}
