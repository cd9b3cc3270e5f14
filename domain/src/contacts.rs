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
///
/// Stored as jsonb in `contacts.card` and exposed as is by the JSON API, so
/// field names are stable and every field added after the first release is
/// optional: old rows and old clients keep working.
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
    /// `label` is "home", "work", "mobile", "fax", "pager" or combinations
    /// like "work fax" (what Google and Highrise call a phone type), or
    /// any custom text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<Labeled>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Middle names (vCard N "additional names").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_names: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nicknames: Vec<String>,
    /// Units of `organization`, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departments: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub titles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Address>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<Labeled>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ims: Vec<ImHandle>,
    /// `label` is the service ("twitter", "linkedin", ...), `value` the
    /// profile URL or handle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub social_profiles: Vec<Labeled>,
    /// `YYYY-MM-DD`, `--MM-DD` without a year, or the source text when it
    /// is neither (a date-time, "circa 1800").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birthday: Option<String>,
    /// Same format as `birthday`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anniversary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo: Option<Photo>,
    /// Groups / tags (vCard CATEGORIES).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Plain `X-...` properties, editable as key/value pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_fields: Vec<CustomField>,
    /// What the vCard sources said that is not modelled above, per source,
    /// so exporting back to a source loses nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vcard_extras: Vec<VcardExtras>,
}

/// A postal address (vCard ADR components).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub po_box: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub extended: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub street: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locality: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub postal_code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub country: String,
}

impl Address {
    pub fn is_empty(&self) -> bool {
        self.parts().iter().all(|p| p.trim().is_empty())
    }

    /// The ADR component order.
    pub fn parts(&self) -> [&str; 7] {
        [
            &self.po_box,
            &self.extended,
            &self.street,
            &self.locality,
            &self.region,
            &self.postal_code,
            &self.country,
        ]
    }
}

/// An instant-messaging handle: `protocol` is the URI scheme of vCard 4.0
/// IMPP ("xmpp", "sip", "skype", "aim", ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImHandle {
    pub protocol: String,
    pub handle: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The contact's picture: inline bytes (base64) or a link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Photo {
    /// e.g. "image/jpeg"; absent when the source did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Standard base64 of the image bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

impl Photo {
    /// The image bytes, when inline and well-formed.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        self.data.as_deref().and_then(crate::vcard::decode_base64)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomField {
    /// The property name, e.g. "X-SPOUSE".
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// The unmodelled rest of one vCard source (a SyncML device, a CardDAV
/// address book, a file import).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcardExtras {
    pub source: String,
    pub version: crate::vcard::Version,
    /// Properties not modelled at all, in source order (UID, REV, GEO, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<crate::vcard::Property>,
    /// Parameters and groups of modelled properties that the model has no
    /// place for (`TYPE=INTERNET`, `PREF`, `item1.`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<ParamAttachment>,
}

/// Leftover parameters of one modelled property. They follow the value: an
/// export re-attaches them to the property whose model value has the same
/// `key` (e.g. the email address), so editing a value drops stale ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamAttachment {
    /// The source property name (X-JABBER, not IMPP, when that is what the
    /// source used).
    pub property: String,
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<crate::vcard::Param>,
}

/// E.164 form of a phone number when it is valid. `default_region` (ISO
/// 3166 alpha-2, the user's country) is needed for national numbers; numbers
/// written with `+` are read without it.
pub fn phone_e164(raw: &str, default_region: Option<&str>) -> Option<String> {
    let region = default_region.and_then(|r| r.to_ascii_uppercase().parse().ok());
    let number = phonenumber::parse(region, raw).ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    Some(number.format().mode(phonenumber::Mode::E164).to_string())
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

/// 512 KiB of image as base64.
const MAX_PHOTO_BASE64: usize = 512 * 1024 * 4 / 3 + 4;

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
            return Err(DomainError::invalid(
                "formatted_name",
                "longer than 500 characters",
            ));
        }
        if self.note.as_ref().is_some_and(|n| n.len() > 64 * 1024) {
            return Err(DomainError::invalid("note", "longer than 64 KiB"));
        }
        // The card is one jsonb value read on every list page: keep photos
        // to thumbnails.
        if let Some(photo) = &self.photo {
            if photo
                .data
                .as_ref()
                .is_some_and(|d| d.len() > MAX_PHOTO_BASE64)
            {
                return Err(DomainError::invalid("photo.data", "larger than 512 KiB"));
            }
            if photo.data.is_some() && photo.bytes().is_none() {
                return Err(DomainError::invalid("photo.data", "not base64"));
            }
        }
        for (i, email) in self.emails.iter().enumerate() {
            if !email.value.contains('@') {
                return Err(DomainError::invalid(
                    format!("emails[{i}].value"),
                    "not an email address",
                ));
            }
        }
        Ok(self)
    }

    pub(crate) fn sort_key(&self) -> String {
        let key = self
            .family_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|family| format!("{family} {}", self.given_name.as_deref().unwrap_or("")))
            .unwrap_or_else(|| self.formatted_name.clone());
        key.trim().to_lowercase()
    }

    /// Lower-cased text the search matches against.
    pub(crate) fn search_text(&self) -> String {
        let mut parts = vec![self.formatted_name.clone()];
        parts.extend(self.given_name.clone());
        parts.extend(self.family_name.clone());
        parts.extend(self.organization.clone());
        parts.extend(self.departments.iter().cloned());
        parts.extend(self.nicknames.iter().cloned());
        parts.extend(self.titles.iter().cloned());
        parts.extend(self.emails.iter().map(|e| e.value.clone()));
        parts.extend(self.phones.iter().map(|p| p.value.clone()));
        // "+49 30 111222" is found by "+4930111222" too; national numbers
        // need the user's region, which the card does not know.
        parts.extend(
            self.phones
                .iter()
                .filter_map(|p| phone_e164(&p.value, None)),
        );
        parts.join(" ").to_lowercase()
    }

    /// E.164 of each phone, in `phones` order, where the number is valid.
    pub fn phones_e164(&self, default_region: Option<&str>) -> Vec<Option<String>> {
        self.phones
            .iter()
            .map(|p| phone_e164(&p.value, default_region))
            .collect()
    }
}

/// Appends one change to the user's history: bumps the data version, logs
/// the change and queues the event, all in the caller's transaction.
pub(crate) async fn record_change(
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

/// A validated card with everything its row needs, computed once, outside
/// the retry loop.
#[derive(Debug, Clone)]
pub(crate) struct PreparedCard {
    pub id: Uuid,
    pub name: String,
    pub sort_key: String,
    pub search_text: String,
    pub json: serde_json::Value,
}

impl PreparedCard {
    pub(crate) fn new(id: Uuid, card: ContactCard) -> Result<Self, DomainError> {
        Ok(PreparedCard {
            id,
            name: card.formatted_name.clone(),
            sort_key: card.sort_key(),
            search_text: card.search_text(),
            json: serde_json::to_value(&card).map_err(|e| DomainError::Corrupt(e.to_string()))?,
        })
    }
}

/// Inserts one contact in the caller's transaction. Idempotent: replaying
/// the same id returns the stored contact and records nothing twice; an id
/// owned by another user is a conflict that reveals nothing about it.
pub(crate) async fn insert_contact(
    tx: &Transaction<'_>,
    user_id: Uuid,
    card: &PreparedCard,
    now: DateTime<Utc>,
) -> Result<Contact, DomainError> {
    let inserted = tx
        .execute(
            "INSERT INTO contacts (id, user_id, display_name, sort_key, search_text, card, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) ON CONFLICT (id) DO NOTHING",
            &[&card.id, &user_id, &card.name, &card.sort_key, &card.search_text, &card.json, &now],
        )
        .await
        .map_err(db)?;
    if inserted == 1 {
        let payload =
            serde_json::json!({"user_id": user_id, "contact_id": card.id, "op": "create"});
        record_change(tx, user_id, card.id, "create", now, payload).await?;
    }
    let row = tx
        .query_one(
            "SELECT id, user_id, card, version, created_at, updated_at FROM contacts WHERE id = $1",
            &[&card.id],
        )
        .await
        .map_err(db)?;
    let owner: Uuid = row.get("user_id");
    if owner != user_id {
        return Err(DomainError::Conflict("contact id already in use".into()));
    }
    row_to_contact(&row)
}

pub(crate) fn row_to_contact(row: &tokio_postgres::Row) -> Result<Contact, DomainError> {
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
        let prepared = PreparedCard::new(id.unwrap_or_else(Uuid::now_v7), card.validated()?)?;
        let user_id = viewer.id;
        self.pools
            .write(viewer.shard, move |tx| {
                let prepared = prepared.clone();
                Box::pin(async move { insert_contact(tx, user_id, &prepared, Utc::now()).await })
            })
            .await
    }

    pub async fn get_contact(&self, viewer: &Viewer, id: Uuid) -> Result<Contact, DomainError> {
        let key = format!(
            "c:{}:{}:{}",
            viewer.id.simple(),
            viewer.change_seq,
            id.simple()
        );
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
    pub async fn list_contacts(
        &self,
        viewer: &Viewer,
        offset: i64,
        limit: i64,
    ) -> Result<ContactPage, DomainError> {
        if offset < 0 {
            return Err(DomainError::invalid("offset", "must not be negative"));
        }
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(DomainError::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        let key = format!(
            "l:{}:{}:{offset}:{limit}",
            viewer.id.simple(),
            viewer.change_seq
        );
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
        assert_eq!(
            card.validated().unwrap().formatted_name,
            "Analytical Engines Ltd"
        );
        assert!(ContactCard::default().validated().is_err());
    }

    #[test]
    fn bad_email_is_reported_by_index() {
        let card = ContactCard {
            formatted_name: "X".into(),
            emails: vec![
                Labeled {
                    value: "x@y.test".into(),
                    label: None,
                },
                Labeled {
                    value: "nope".into(),
                    label: None,
                },
            ],
            ..Default::default()
        };
        match card.validated() {
            Err(DomainError::Invalid { field, .. }) => assert_eq!(field, "emails[1].value"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn search_covers_nicknames_titles_departments_and_e164() {
        let card = ContactCard {
            formatted_name: "Anna Müller".into(),
            organization: Some("Social GmbH".into()),
            departments: vec!["Entwicklung".into()],
            nicknames: vec!["Anni".into()],
            titles: vec!["Leiterin".into()],
            phones: vec![Labeled {
                value: "+49 30 111222".into(),
                label: None,
            }],
            ..Default::default()
        };
        let text = card.search_text();
        for needle in [
            "anni",
            "leiterin",
            "entwicklung",
            "social gmbh",
            "+4930111222",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
    }

    #[test]
    fn e164_only_for_valid_numbers() {
        assert_eq!(
            phone_e164("020 7946 0001", Some("gb")).as_deref(),
            Some("+442079460001")
        );
        assert_eq!(
            phone_e164("+49 (0)170 1234567", None).as_deref(),
            Some("+491701234567")
        );
        assert_eq!(phone_e164("555-555-5555", Some("US")), None);
        assert_eq!(phone_e164("12345", None), None);
        assert_eq!(phone_e164("not a number", Some("zz")), None);
    }

    #[test]
    fn photo_must_be_base64_and_small() {
        let mut card = ContactCard {
            formatted_name: "X".into(),
            photo: Some(Photo {
                media_type: Some("image/png".into()),
                data: Some("not base64!".into()),
                uri: None,
            }),
            ..Default::default()
        };
        assert!(card.clone().validated().is_err());
        card.photo = Some(Photo {
            data: Some("A".repeat(MAX_PHOTO_BASE64 + 4)),
            ..Default::default()
        });
        assert!(card.validated().is_err());
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
