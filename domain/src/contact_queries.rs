//! Reading contacts: search, sorting, paging, and the per-user change feed
//! that the web app, the SyncML server and the bots use for "changes since".

use crate::accounts::Viewer;
use crate::contacts::{row_to_contact, ContactPage, MAX_PAGE};
use crate::db::db;
use crate::error::DomainError;
use crate::Domain;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum SortOrder {
    #[default]
    #[serde(rename = "name")]
    Name,
    #[serde(rename = "-name")]
    NameDesc,
    #[serde(rename = "updated")]
    Updated,
    #[serde(rename = "-updated")]
    UpdatedDesc,
}

impl SortOrder {
    fn sql(self) -> &'static str {
        match self {
            SortOrder::Name => "sort_key ASC, id ASC",
            SortOrder::NameDesc => "sort_key DESC, id DESC",
            SortOrder::Updated => "updated_at ASC, id ASC",
            SortOrder::UpdatedDesc => "updated_at DESC, id DESC",
        }
    }

    fn key(self) -> &'static str {
        match self {
            SortOrder::Name => "n",
            SortOrder::NameDesc => "N",
            SortOrder::Updated => "u",
            SortOrder::UpdatedDesc => "U",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ContactQuery {
    /// Words that must all appear in a contact's names, emails, phones or
    /// organisation (case-insensitive substring match).
    pub search: Option<String>,
    /// Only contacts in this group (vCard CATEGORIES).
    pub group: Option<String>,
    pub sort: SortOrder,
    pub offset: i64,
    pub limit: i64,
}

/// One entry of a user's change log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub seq: i64,
    pub contact_id: Uuid,
    pub op: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeFeed {
    pub changes: Vec<Change>,
    /// Pass as `since` to get the next changes.
    pub next_since: i64,
    /// The user's current sequence number.
    pub latest: i64,
}

/// Escapes LIKE wildcards so user text matches literally.
fn like_pattern(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('%');
    for c in word.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// FNV-1a: a short, stable cache-key component for arbitrary search text.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Domain {
    /// A page of the user's contacts, optionally filtered by search words.
    pub async fn query_contacts(
        &self,
        viewer: &Viewer,
        query: ContactQuery,
    ) -> Result<ContactPage, DomainError> {
        if query.offset < 0 {
            return Err(DomainError::invalid("offset", "must not be negative"));
        }
        if !(1..=MAX_PAGE).contains(&query.limit) {
            return Err(DomainError::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        let words: Vec<String> = query
            .search
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .take(8)
            .map(|w| like_pattern(&w.to_lowercase()))
            .collect();
        let group = query.group.clone();
        let key = format!(
            "q:{}:{}:{}:{}:{}:{:x}",
            viewer.id.simple(),
            viewer.change_seq,
            query.sort.key(),
            query.offset,
            query.limit,
            fnv1a(&format!(
                "{}\u{1e}{}",
                words.join("\u{1f}"),
                group.as_deref().unwrap_or("\u{0}")
            ))
        );
        if let Some(bytes) = self.cache.get(&key).await {
            if let Ok(page) = serde_json::from_slice::<ContactPage>(&bytes) {
                return Ok(page);
            }
        }
        let user_id = viewer.id;
        let (offset, limit) = (query.offset, query.limit);
        let sql = format!(
            "SELECT id, card, version, created_at, updated_at, count(*) OVER () AS total FROM contacts \
             WHERE user_id = $1 AND deleted_at IS NULL AND search_text LIKE ALL($2) \
             AND ($5::text IS NULL OR card->'categories' ? $5) \
             ORDER BY {} OFFSET $3 LIMIT $4",
            query.sort.sql()
        );
        let page = self
            .pools
            .read(viewer.shard, move |client| {
                let (sql, words, group) = (sql.clone(), words.clone(), group.clone());
                Box::pin(async move {
                    let rows = client
                        .query(sql.as_str(), &[&user_id, &words, &offset, &limit, &group])
                        .await
                        .map_err(db)?;
                    let total = rows.first().map(|r| r.get::<_, i64>("total")).unwrap_or(0);
                    let contacts = rows
                        .iter()
                        .map(row_to_contact)
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(ContactPage {
                        contacts,
                        total,
                        offset,
                        limit,
                    })
                })
            })
            .await?;
        if let Ok(bytes) = serde_json::to_vec(&page) {
            self.cache.set(&key, &bytes).await;
        }
        Ok(page)
    }

    /// The user's changes with a sequence number above `since`, oldest first.
    pub async fn changes_since(
        &self,
        viewer: &Viewer,
        since: i64,
        limit: i64,
    ) -> Result<ChangeFeed, DomainError> {
        if since < 0 {
            return Err(DomainError::invalid("since", "must not be negative"));
        }
        if !(1..=1000).contains(&limit) {
            return Err(DomainError::invalid("limit", "must be between 1 and 1000"));
        }
        let user_id = viewer.id;
        let changes = self
            .pools
            .read(viewer.shard, move |client| {
                Box::pin(async move {
                    let rows = client
                        .query(
                            "SELECT seq, contact_id, op, at FROM change_log \
                             WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                            &[&user_id, &since, &limit],
                        )
                        .await
                        .map_err(db)?;
                    Ok(rows
                        .iter()
                        .map(|r| Change {
                            seq: r.get(0),
                            contact_id: r.get(1),
                            op: r.get(2),
                            at: r.get(3),
                        })
                        .collect::<Vec<_>>())
                })
            })
            .await?;
        let next_since = changes.last().map(|c| c.seq).unwrap_or(since);
        Ok(ChangeFeed {
            latest: viewer.change_seq.max(next_since),
            next_since,
            changes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn cache_key_hash_is_stable_and_discriminating() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a("ada"), fnv1a("adb"));
    }
}
