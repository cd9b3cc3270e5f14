//! vCard import and export, and groups (vCard CATEGORIES).

use crate::accounts::Viewer;
use crate::contacts::{insert_contact, row_to_contact, Contact, PreparedCard};
use crate::db::db;
use crate::error::DomainError;
use crate::vcard::{self, Version};
use crate::Domain;
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

/// Cards per transaction: big enough to amortise pgpool's round trips,
/// small enough that a retry after a serialization failure is cheap.
const IMPORT_BATCH: usize = 100;
pub const MAX_IMPORT_CARDS: usize = 20_000;

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub imported: usize,
    pub ids: Vec<Uuid>,
    /// Cards that could not be imported, by their 0-based index in the file;
    /// the others were imported all the same.
    pub errors: Vec<ImportError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportError {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub name: String,
    pub count: i64,
}

impl Domain {
    /// Imports every readable card of a vCard file (2.1, 3.0 or 4.0).
    pub async fn import_vcards(
        &self,
        viewer: &Viewer,
        file: &[u8],
    ) -> Result<ImportReport, DomainError> {
        let parsed = vcard::parse_bytes(file);
        if parsed.len() > MAX_IMPORT_CARDS {
            return Err(DomainError::invalid(
                "file",
                format!("more than {MAX_IMPORT_CARDS} cards"),
            ));
        }
        let mut errors = Vec::new();
        let mut ready = Vec::new();
        for (index, result) in parsed.into_iter().enumerate() {
            let card = match result {
                Ok(vcard) => vcard::from_vcard(&vcard, "import"),
                Err(e) => {
                    errors.push(ImportError {
                        index,
                        line: Some(e.line),
                        message: e.kind.to_string(),
                    });
                    continue;
                }
            };
            // Ids are fixed before the write, so a retried batch inserts
            // nothing twice.
            match card
                .validated()
                .and_then(|c| PreparedCard::new(Uuid::now_v7(), c))
            {
                Ok(prepared) => ready.push(prepared),
                Err(e) => errors.push(ImportError {
                    index,
                    line: None,
                    message: e.to_string(),
                }),
            }
        }
        let mut ids = Vec::with_capacity(ready.len());
        let user_id = viewer.id;
        for batch in ready.chunks(IMPORT_BATCH) {
            let batch = batch.to_vec();
            let stored = self
                .pools
                .write(viewer.shard, move |tx| {
                    let batch = batch.clone();
                    Box::pin(async move {
                        let now = Utc::now();
                        let mut ids = Vec::with_capacity(batch.len());
                        for card in &batch {
                            ids.push(insert_contact(tx, user_id, card, now).await?.id);
                        }
                        Ok(ids)
                    })
                })
                .await?;
            ids.extend(stored);
        }
        Ok(ImportReport {
            imported: ids.len(),
            ids,
            errors,
        })
    }

    /// Every live contact of the user (optionally of one group), in name order.
    pub async fn all_contacts(
        &self,
        viewer: &Viewer,
        group: Option<String>,
    ) -> Result<Vec<Contact>, DomainError> {
        let user_id = viewer.id;
        self.pools
            .read(viewer.shard, move |client| {
                let group = group.clone();
                Box::pin(async move {
                    let rows = client
                        .query(
                            "SELECT id, card, version, created_at, updated_at FROM contacts \
                             WHERE user_id = $1 AND deleted_at IS NULL \
                             AND ($2::text IS NULL OR card->'categories' ? $2) \
                             ORDER BY sort_key, id",
                            &[&user_id, &group],
                        )
                        .await
                        .map_err(db)?;
                    rows.iter().map(row_to_contact).collect()
                })
            })
            .await
    }

    /// The user's contacts as one vCard file.
    pub async fn export_vcards(
        &self,
        viewer: &Viewer,
        version: Version,
        group: Option<String>,
    ) -> Result<String, DomainError> {
        let contacts = self.all_contacts(viewer, group).await?;
        Ok(vcard::export(
            contacts.iter().map(|c| &c.card),
            version,
            Some("import"),
        ))
    }

    /// The user's groups with their sizes.
    pub async fn groups(&self, viewer: &Viewer) -> Result<Vec<Group>, DomainError> {
        let user_id = viewer.id;
        self.pools
            .read(viewer.shard, move |client| {
                Box::pin(async move {
                    let rows = client
                        .query(
                            "SELECT g, count(*) FROM contacts, jsonb_array_elements_text(card->'categories') AS g \
                             WHERE user_id = $1 AND deleted_at IS NULL AND jsonb_typeof(card->'categories') = 'array' \
                             GROUP BY g ORDER BY lower(g), g",
                            &[&user_id],
                        )
                        .await
                        .map_err(db)?;
                    Ok(rows
                        .iter()
                        .map(|r| Group {
                            name: r.get(0),
                            count: r.get(1),
                        })
                        .collect())
                })
            })
            .await
    }
}
