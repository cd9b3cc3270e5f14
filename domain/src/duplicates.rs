//! Duplicate detection and merging, with undo.
//!
//! Candidates are pairs of contacts that share an email address, a phone
//! number (compared by its last nine digits) or
//! a name (equal after normalisation, or close by Jaro-Winkler). A merge
//! folds the others into the kept contact in one transaction and records
//! the kept contact's previous card, so the merge can be undone.

use crate::accounts::Viewer;
use crate::contacts::{record_change, row_to_contact, Contact, ContactCard, PreparedCard};
use crate::db::db;
use crate::error::DomainError;
use crate::Domain;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio_postgres::Transaction;
use uuid::Uuid;

/// Jaro-Winkler similarity from which two names count as "similar".
const SIMILAR_NAME: f64 = 0.92;
/// How many neighbours in name order each name is compared with.
const NAME_WINDOW: usize = 6;
pub const MAX_MERGE: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub struct DuplicatePair {
    pub a: Contact,
    pub b: Contact,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MergeOutcome {
    pub merge_id: Uuid,
    pub contact: Contact,
    pub merged: Vec<Uuid>,
}

fn normalize_name(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last nine digits: the subscriber part, the same whether a number is
/// written internationally (+44 20 ...) or nationally (020 ...), which
/// E.164 alone cannot tell without knowing the user's country.
fn phone_key(raw: &str) -> Option<String> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    (digits.len() >= 7).then(|| digits[digits.len().saturating_sub(9)..].to_string())
}

/// All candidate pairs among `contacts`, with every reason found.
pub fn find_pairs(contacts: &[Contact]) -> Vec<DuplicatePair> {
    let mut reasons: BTreeMap<(usize, usize), BTreeSet<String>> = BTreeMap::new();
    let mut add = |i: usize, j: usize, reason: String| {
        if i != j {
            reasons
                .entry((i.min(j), i.max(j)))
                .or_default()
                .insert(reason);
        }
    };
    let mut by_key: HashMap<(u8, String), Vec<usize>> = HashMap::new();
    for (i, c) in contacts.iter().enumerate() {
        for email in &c.card.emails {
            by_key
                .entry((0, email.value.trim().to_lowercase()))
                .or_default()
                .push(i);
        }
        for phone in &c.card.phones {
            if let Some(key) = phone_key(&phone.value) {
                by_key.entry((1, key)).or_default().push(i);
            }
        }
    }
    for ((kind, key), members) in &by_key {
        let label = if *kind == 0 {
            "same email"
        } else {
            "same phone"
        };
        for (n, &i) in members.iter().enumerate() {
            for &j in &members[n + 1..] {
                add(i, j, format!("{label}: {key}"));
            }
        }
    }
    let mut names: Vec<(String, usize)> = contacts
        .iter()
        .enumerate()
        .map(|(i, c)| (normalize_name(&c.card.formatted_name), i))
        .filter(|(n, _)| !n.is_empty())
        .collect();
    names.sort();
    for (n, (name, i)) in names.iter().enumerate() {
        for (other, j) in names.iter().skip(n + 1).take(NAME_WINDOW) {
            if name == other {
                add(*i, *j, "same name".to_string());
            } else {
                let score = strsim::jaro_winkler(name, other);
                if score >= SIMILAR_NAME {
                    add(*i, *j, format!("similar name ({score:.2})"));
                }
            }
        }
    }
    reasons
        .into_iter()
        .map(|((i, j), why)| DuplicatePair {
            a: contacts[i].clone(),
            b: contacts[j].clone(),
            reasons: why.into_iter().collect(),
        })
        .collect()
}

fn push_unique<T: Clone + PartialEq>(into: &mut Vec<T>, from: &[T]) {
    for item in from {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}

fn fill<T: Clone>(into: &mut Option<T>, from: &Option<T>) {
    if into.is_none() {
        into.clone_from(from);
    }
}

/// Folds `others` into `kept`: lists are united (without repeats), and a
/// field the kept card leaves empty is taken from the first that has it.
pub fn merge_cards(kept: &ContactCard, others: &[ContactCard]) -> ContactCard {
    let mut card = kept.clone();
    for other in others {
        fill(&mut card.given_name, &other.given_name);
        fill(&mut card.family_name, &other.family_name);
        fill(&mut card.additional_names, &other.additional_names);
        fill(&mut card.name_prefix, &other.name_prefix);
        fill(&mut card.name_suffix, &other.name_suffix);
        fill(&mut card.organization, &other.organization);
        fill(&mut card.birthday, &other.birthday);
        fill(&mut card.anniversary, &other.anniversary);
        fill(&mut card.photo, &other.photo);
        match (&mut card.note, &other.note) {
            (Some(note), Some(more)) if !note.contains(more.as_str()) => {
                note.push_str("\n\n");
                note.push_str(more);
            }
            (note @ None, Some(more)) => *note = Some(more.clone()),
            _ => {}
        }
        push_unique(&mut card.nicknames, &other.nicknames);
        push_unique(&mut card.emails, &other.emails);
        push_unique(&mut card.phones, &other.phones);
        push_unique(&mut card.departments, &other.departments);
        push_unique(&mut card.titles, &other.titles);
        push_unique(&mut card.roles, &other.roles);
        push_unique(&mut card.addresses, &other.addresses);
        push_unique(&mut card.urls, &other.urls);
        push_unique(&mut card.ims, &other.ims);
        push_unique(&mut card.social_profiles, &other.social_profiles);
        push_unique(&mut card.categories, &other.categories);
        push_unique(&mut card.custom_fields, &other.custom_fields);
        push_unique(&mut card.vcard_extras, &other.vcard_extras);
    }
    card
}

async fn live_contact(
    tx: &Transaction<'_>,
    user_id: Uuid,
    id: Uuid,
) -> Result<Contact, DomainError> {
    let row = tx
        .query_opt(
            "SELECT id, card, version, created_at, updated_at FROM contacts \
             WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
            &[&id, &user_id],
        )
        .await
        .map_err(db)?
        .ok_or(DomainError::NotFound)?;
    row_to_contact(&row)
}

async fn write_card(
    tx: &Transaction<'_>,
    user_id: Uuid,
    card: &PreparedCard,
    now: DateTime<Utc>,
) -> Result<Contact, DomainError> {
    let row = tx
        .query_one(
            "UPDATE contacts SET card = $1, display_name = $2, sort_key = $3, search_text = $4, \
             version = version + 1, updated_at = $5, deleted_at = NULL \
             WHERE id = $6 AND user_id = $7 RETURNING id, card, version, created_at, updated_at",
            &[
                &card.json,
                &card.name,
                &card.sort_key,
                &card.search_text,
                &now,
                &card.id,
                &user_id,
            ],
        )
        .await
        .map_err(db)?;
    row_to_contact(&row)
}

impl Domain {
    pub async fn duplicate_pairs(
        &self,
        viewer: &Viewer,
    ) -> Result<Vec<DuplicatePair>, DomainError> {
        let contacts = self.all_contacts(viewer, None).await?;
        Ok(find_pairs(&contacts))
    }

    /// Merges `others` into `keep`. The merged contacts are deleted (their
    /// deletion reaches devices and bots through the change log).
    pub async fn merge_contacts(
        &self,
        viewer: &Viewer,
        keep: Uuid,
        others: Vec<Uuid>,
    ) -> Result<MergeOutcome, DomainError> {
        let others: Vec<Uuid> = others
            .into_iter()
            .filter(|id| *id != keep)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if others.is_empty() {
            return Err(DomainError::invalid(
                "merge",
                "name at least one other contact",
            ));
        }
        if others.len() > MAX_MERGE {
            return Err(DomainError::invalid(
                "merge",
                format!("at most {MAX_MERGE} contacts at once"),
            ));
        }
        let merge_id = Uuid::now_v7();
        let user_id = viewer.id;
        self.pools
            .write(viewer.shard, move |tx| {
                let others = others.clone();
                Box::pin(async move {
                    let now = Utc::now();
                    // A retry whose first attempt committed: report that.
                    let done = tx
                        .query_opt("SELECT 1 FROM merges WHERE id = $1", &[&merge_id])
                        .await
                        .map_err(db)?;
                    if done.is_some() {
                        let contact = live_contact(tx, user_id, keep).await?;
                        return Ok(MergeOutcome { merge_id, contact, merged: others });
                    }
                    let kept = live_contact(tx, user_id, keep).await?;
                    let mut merged_cards = Vec::with_capacity(others.len());
                    for id in &others {
                        merged_cards.push(live_contact(tx, user_id, *id).await?.card);
                    }
                    let card = merge_cards(&kept.card, &merged_cards).validated()?;
                    let contact = write_card(tx, user_id, &PreparedCard::new(keep, card)?, now).await?;
                    let payload = serde_json::json!({"user_id": user_id, "contact_id": keep, "op": "update"});
                    record_change(tx, user_id, keep, "update", now, payload).await?;
                    for id in &others {
                        tx.execute(
                            "UPDATE contacts SET deleted_at = $1, updated_at = $1, version = version + 1 WHERE id = $2 AND user_id = $3",
                            &[&now, id, &user_id],
                        )
                        .await
                        .map_err(db)?;
                        let payload = serde_json::json!({"user_id": user_id, "contact_id": id, "op": "delete"});
                        record_change(tx, user_id, *id, "delete", now, payload).await?;
                    }
                    let kept_card = serde_json::to_value(&kept.card).map_err(|e| DomainError::Corrupt(e.to_string()))?;
                    tx.execute(
                        "INSERT INTO merges (id, user_id, kept_id, kept_card, kept_version, merged_ids, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        &[&merge_id, &user_id, &keep, &kept_card, &contact.version, &others, &now],
                    )
                    .await
                    .map_err(db)?;
                    Ok(MergeOutcome {
                        merge_id,
                        contact,
                        merged: others,
                    })
                })
            })
            .await
    }

    /// Undoes a merge: the kept contact gets its previous card back and the
    /// merged ones return. Refused (`Conflict`) when the kept contact was
    /// edited after the merge, since undoing would silently drop that edit.
    pub async fn undo_merge(
        &self,
        viewer: &Viewer,
        merge_id: Uuid,
    ) -> Result<Vec<Contact>, DomainError> {
        let user_id = viewer.id;
        self.pools
            .write(viewer.shard, move |tx| {
                Box::pin(async move {
                    let now = Utc::now();
                    let row = tx
                        .query_opt(
                            "SELECT kept_id, kept_card, kept_version, merged_ids, undone_at FROM merges WHERE id = $1 AND user_id = $2",
                            &[&merge_id, &user_id],
                        )
                        .await
                        .map_err(db)?
                        .ok_or(DomainError::NotFound)?;
                    let (kept_id, kept_card, kept_version, merged): (Uuid, serde_json::Value, i64, Vec<Uuid>) =
                        (row.get(0), row.get(1), row.get(2), row.get(3));
                    let undone: Option<DateTime<Utc>> = row.get(4);
                    if undone.is_some() {
                        return Err(DomainError::Conflict("this merge was already undone".into()));
                    }
                    let current = live_contact(tx, user_id, kept_id).await?;
                    if current.version != kept_version {
                        return Err(DomainError::Conflict("the merged contact was edited after the merge".into()));
                    }
                    let card: ContactCard = serde_json::from_value(kept_card).map_err(|e| DomainError::Corrupt(e.to_string()))?;
                    let mut restored = vec![write_card(tx, user_id, &PreparedCard::new(kept_id, card)?, now).await?];
                    let payload = serde_json::json!({"user_id": user_id, "contact_id": kept_id, "op": "update"});
                    record_change(tx, user_id, kept_id, "update", now, payload).await?;
                    for id in merged {
                        let row = tx
                            .query_one(
                                "UPDATE contacts SET deleted_at = NULL, updated_at = $1, version = version + 1 \
                                 WHERE id = $2 AND user_id = $3 RETURNING id, card, version, created_at, updated_at",
                                &[&now, &id, &user_id],
                            )
                            .await
                            .map_err(db)?;
                        restored.push(row_to_contact(&row)?);
                        let payload = serde_json::json!({"user_id": user_id, "contact_id": id, "op": "create"});
                        record_change(tx, user_id, id, "create", now, payload).await?;
                    }
                    tx.execute("UPDATE merges SET undone_at = $1 WHERE id = $2", &[&now, &merge_id])
                        .await
                        .map_err(db)?;
                    Ok(restored)
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contacts::Labeled;

    fn contact(name: &str, emails: &[&str], phones: &[&str]) -> Contact {
        Contact {
            id: Uuid::new_v4(),
            card: ContactCard {
                formatted_name: name.to_string(),
                emails: emails
                    .iter()
                    .map(|e| Labeled {
                        value: e.to_string(),
                        label: None,
                    })
                    .collect(),
                phones: phones
                    .iter()
                    .map(|p| Labeled {
                        value: p.to_string(),
                        label: None,
                    })
                    .collect(),
                ..ContactCard::default()
            },
            version: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn pairs_by_email_phone_and_name() {
        let contacts = vec![
            contact("Ada Lovelace", &["ADA@example.test"], &[]),
            contact("A. Lovelace", &["ada@example.test"], &[]),
            contact("Charles Babbage", &[], &["+44 20 7946 0018"]),
            contact("Charlie B", &[], &["020 7946 0018"]),
            contact("Jonathan Smith", &[], &[]),
            contact("Jonathon Smith", &[], &[]),
            contact("Grace Hopper", &[], &[]),
        ];
        let pairs = find_pairs(&contacts);
        let reasons = |a: &str, b: &str| -> Vec<String> {
            pairs
                .iter()
                .find(|p| {
                    let names = [
                        p.a.card.formatted_name.as_str(),
                        p.b.card.formatted_name.as_str(),
                    ];
                    names.contains(&a) && names.contains(&b)
                })
                .map(|p| p.reasons.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            reasons("Ada Lovelace", "A. Lovelace"),
            ["same email: ada@example.test"]
        );
        assert!(reasons("Charles Babbage", "Charlie B")[0].starts_with("same phone"));
        assert!(reasons("Jonathan Smith", "Jonathon Smith")[0].starts_with("similar name"));
        assert!(reasons("Grace Hopper", "Ada Lovelace").is_empty());
    }

    #[test]
    fn merge_unites_lists_and_fills_gaps() {
        let kept = ContactCard {
            formatted_name: "Ada Lovelace".into(),
            emails: vec![Labeled {
                value: "ada@a.test".into(),
                label: None,
            }],
            note: Some("met in 1833".into()),
            ..ContactCard::default()
        };
        let other = ContactCard {
            formatted_name: "A. Lovelace".into(),
            emails: vec![
                Labeled {
                    value: "ada@a.test".into(),
                    label: None,
                },
                Labeled {
                    value: "ada@b.test".into(),
                    label: None,
                },
            ],
            organization: Some("Analytical Engines".into()),
            note: Some("poet's daughter".into()),
            ..ContactCard::default()
        };
        let merged = merge_cards(&kept, &[other]);
        assert_eq!(merged.formatted_name, "Ada Lovelace");
        assert_eq!(merged.emails.len(), 2);
        assert_eq!(merged.organization.as_deref(), Some("Analytical Engines"));
        assert_eq!(
            merged.note.as_deref(),
            Some("met in 1833\n\npoet's daughter")
        );
    }
}
