//! The contacts datastore: Alert (anchors and the sync type), the client's
//! Sync (Add/Replace/Delete with a Status per item, large objects over
//! several messages, conflicts merged per [`crate::merge`]), our Sync
//! (changes since the device's last sync), Map, and committing the anchors.
//!
//! Sync types: two-way (200) and slow (201) exchange both ways; one-way
//! from client (202) applies the client's changes and sends none (ours stay
//! pending for the next sync); refresh from client (203) makes the user's
//! contacts exactly the client's set; one-way from server (204) sends our
//! changes and accepts none; refresh from server (205) sends everything to a
//! client that has deleted its own data.

use crate::merge;
use crate::message::{
    Alert, Anchor, Command, Item, ItemCommand, ItemData, Location, Map, Meta, Status, Sync,
};
use crate::session::{datastore_key, SessionError, Turn};
use crate::store::{Chunk, Pending, PendingOp, Phase, StoreState};
use crate::tree::Version;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use onebook_domain::contact_queries::ContactQuery;
use onebook_domain::contacts::{Contact, ContactCard};
use onebook_domain::syncml_state::SyncAnchors;
use onebook_domain::vcard;
use onebook_domain::DomainError;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

const TWO_WAY: u16 = 200;
const SLOW: u16 = 201;
const ONE_WAY_FROM_CLIENT: u16 = 202;
const REFRESH_FROM_CLIENT: u16 = 203;
const ONE_WAY_FROM_SERVER: u16 = 204;
const REFRESH_FROM_SERVER: u16 = 205;
/// Alert: resume a suspended or interrupted session (SyncML 1.2).
const RESUME: u16 = 225;
/// Alert: the last chunk of a large object never came.
const MISSING_END_OF_DATA: u16 = 223;
/// Our GUIDs: contact UUIDs without dashes.
const UUID_GUID_LEN: u32 = 32;
/// Bulk deletes take at most this many ids.
const DELETE_BATCH: usize = 1000;
const NEXT_MESSAGE: u16 = 222;
const CHANGES_PAGE: i64 = 1000;
const CONTACTS_PAGE: i64 = 500;

fn anchor_now() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

fn uri_of(loc: Option<&Location>) -> String {
    loc.map(|l| l.loc_uri.trim().to_owned()).unwrap_or_default()
}

/// Statuses for item-level domain failures; the session goes on.
fn item_error_code(e: &DomainError) -> u16 {
    match e {
        DomainError::Invalid { .. } => 400,
        DomainError::NotFound => 404,
        DomainError::Conflict(_) => 409,
        DomainError::Unavailable { .. } | DomainError::Database { .. } => 510,
        _ => 500,
    }
}

pub(crate) async fn alert(t: &mut Turn<'_>, alert: &Alert) -> Result<(), SessionError> {
    let id = alert.cmd_id.clone();
    let item = alert.items.first();
    let target = uri_of(item.and_then(|i| i.target.as_ref()));
    let source = uri_of(item.and_then(|i| i.source.as_ref()));
    let respond = |t: &mut Turn<'_>, code| {
        if !alert.no_resp {
            t.push_status(&id, "Alert", Some(&target), Some(&source), code);
        }
    };
    let early = match alert.code {
        Some(TWO_WAY..=REFRESH_FROM_SERVER | RESUME) => None,
        // Nothing of ours is split over messages yet, so there is never
        // more to send; the Status is all the client needs.
        Some(NEXT_MESSAGE) | Some(100) => Some(200),
        Some(_) => Some(406),
        None => Some(400),
    };
    let key = datastore_key(&target);
    let (requested, key) = match (early, alert.code, key) {
        (Some(code), _, _) => {
            respond(t, code);
            return Ok(());
        }
        (None, Some(requested), Some(key)) => (requested, key),
        _ => {
            respond(t, 404);
            return Ok(());
        }
    };
    let client_anchor = item
        .and_then(|i| i.meta.as_ref())
        .and_then(|m| m.anchor.clone())
        .unwrap_or_default();
    let stored = t.domain.syncml_anchors(&t.viewer, &t.dev_id, key).await?;
    let anchors_match = stored.as_ref().is_some_and(|s| {
        client_anchor.last.as_deref().map(str::trim) == Some(s.client_next.trim())
    });
    // Incremental types (two-way, one-way) only from a state both sides
    // agree on; anything else (first contact, lost state, anchors out of
    // step) is a slow sync, announced with 508 so the client sends
    // everything. Slow and refresh syncs need no common state.
    let (code, mode) = match requested {
        TWO_WAY | ONE_WAY_FROM_CLIENT | ONE_WAY_FROM_SERVER if anchors_match => (200, requested),
        TWO_WAY | ONE_WAY_FROM_CLIENT | ONE_WAY_FROM_SERVER => (508, SLOW),
        // We keep no state of interrupted sessions to resume from: a slow
        // sync brings both sides together again (libsynthesis clients
        // resume a session that failed half-way).
        RESUME => (508, SLOW),
        other => (200, other),
    };
    let server_next = anchor_now();
    let since_seq = match (&stored, mode) {
        (Some(s), TWO_WAY | ONE_WAY_FROM_CLIENT | ONE_WAY_FROM_SERVER) => s.last_seq,
        _ => 0,
    };
    if !alert.no_resp {
        let mut status = t.status(&id, "Alert", Some(&target), Some(&source), code);
        status.items.push(Item {
            data: Some(ItemData::Anchor(Anchor {
                last: None,
                next: client_anchor.next.clone(),
            })),
            ..Item::default()
        });
        t.out.push(Command::Status(status));
    }
    let alert_id = t.next_id();
    t.out.push(Command::Alert(Alert {
        cmd_id: alert_id.clone(),
        code: Some(mode),
        items: vec![Item {
            target: Some(Location::new(source.clone())),
            source: Some(Location::new(target.clone())),
            meta: Some(Meta {
                anchor: Some(Anchor {
                    last: stored.as_ref().map(|s| s.server_next.clone()),
                    next: server_next.clone(),
                }),
                max_obj_size: Some(t.max_obj_size()),
                ..Meta::default()
            }),
            ..Item::default()
        }],
        ..Alert::default()
    }));
    t.state.stores.retain(|s| s.key != key);
    t.state.stores.push(StoreState {
        uri: target,
        client_uri: source,
        key: key.to_owned(),
        mode,
        client_next: client_anchor.next,
        server_next,
        last_server_next: stored.as_ref().map(|s| s.server_next.clone()),
        since_seq,
        sent_seq: since_seq,
        phase: Phase::Alerted,
        touched: Vec::new(),
        seen_luids: Vec::new(),
        alert_ref: format!("{}/{}", t.state.server_msg_id, alert_id),
        outbox: Vec::new(),
        announced: false,
        chunk: None,
    });
    Ok(())
}

/// Statuses the client sends for our commands. A 508 on our Alert means the
/// client could not verify our anchor and will send everything: slow sync.
pub(crate) fn client_status(t: &mut Turn<'_>, status: &Status) {
    if status.cmd == "Alert" && status.code == 508 {
        let reference = format!(
            "{}/{}",
            status.msg_ref.as_deref().unwrap_or_default().trim(),
            status.cmd_ref.trim()
        );
        for store in t.state.stores.iter_mut() {
            if store.alert_ref == reference {
                store.mode = SLOW;
                store.since_seq = 0;
            }
        }
    } else if status.code >= 300 && status.cmd != "SyncHdr" {
        tracing::info!(dev_id = %t.dev_id, cmd = %status.cmd, code = status.code, refs = ?status.source_refs, "client rejected a command");
    }
}

/// Everything the client's Sync needs while its items are applied.
struct Apply {
    store: usize,
    /// LUID → contact.
    maps: HashMap<String, Uuid>,
    changed_maps: Vec<(String, Option<Uuid>)>,
    /// Slow sync: server contacts not yet claimed by a client item, by match key.
    unclaimed: Option<HashMap<String, Uuid>>,
    /// Two-way: contacts changed on the server since the device's last
    /// sync, with the last operation (a client change to one is a conflict).
    server_changed: Option<HashMap<Uuid, String>>,
    /// Short GUIDs we gave the device → contact.
    short_guids: Option<HashMap<String, Uuid>>,
}

pub(crate) async fn sync(t: &mut Turn<'_>, sync: &Sync) -> Result<(), SessionError> {
    let id = sync.cmd_id.clone();
    let target = uri_of(sync.target.as_ref());
    let source = uri_of(sync.source.as_ref());
    let store = datastore_key(&target).and_then(|key| {
        t.state
            .stores
            .iter()
            .position(|s| s.key == key && matches!(s.phase, Phase::Alerted | Phase::ClientSync))
    });
    let Some(store) = store else {
        // Not alerted in this session (or unknown): nothing inside applies.
        let code = if datastore_key(&target).is_some() {
            403
        } else {
            404
        };
        if !sync.no_resp {
            t.push_status(&id, "Sync", Some(&target), Some(&source), code);
        }
        for c in &sync.commands {
            if !c.no_resp() {
                t.push_status(c.cmd_id(), c.name(), None, None, code);
            }
        }
        return Ok(());
    };
    if !sync.no_resp {
        t.push_status(&id, "Sync", Some(&target), Some(&source), 200);
    }
    t.state.stores[store].phase = Phase::ClientSync;
    let key = t.state.stores[store].key.clone();
    let maps = t
        .domain
        .syncml_maps(&t.viewer, &t.dev_id, &key)
        .await?
        .into_iter()
        .collect();
    let mut apply = Apply {
        store,
        maps,
        changed_maps: Vec::new(),
        unclaimed: None,
        server_changed: None,
        short_guids: None,
    };
    let sync_meta = sync.meta.as_ref();
    for c in &sync.commands {
        match c {
            Command::Add(cmd) | Command::Replace(cmd) | Command::Delete(cmd) => {
                for item in &cmd.items {
                    let code = receive_item(t, &mut apply, c.name(), cmd, item, sync_meta).await?;
                    if !cmd.no_resp {
                        let luid = uri_of(item.source.as_ref());
                        let guid = uri_of(item.target.as_ref());
                        let status = t.status(
                            &cmd.cmd_id,
                            c.name(),
                            (!guid.is_empty()).then_some(guid.as_str()),
                            (!luid.is_empty()).then_some(luid.as_str()),
                            code,
                        );
                        t.out.push(Command::Status(status));
                    }
                }
            }
            other => {
                if !other.no_resp() {
                    t.push_status(other.cmd_id(), other.name(), None, None, 406);
                }
            }
        }
    }
    t.domain
        .set_syncml_maps(&t.viewer, &t.dev_id, &key, &apply.changed_maps)
        .await?;
    Ok(())
}

/// Ids of contacts created from client items: derived from our session and
/// the LUID, so a retried write (or a resent message) creates nothing twice,
/// while a later session re-adding the same LUID gets a new contact.
fn contact_id_for(session_id: &str, luid: &str) -> Uuid {
    let digest = Sha256::digest(format!("{session_id}\n{luid}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Slow-sync duplicate detection: same name and same first email or phone.
fn match_key(card: &ContactCard) -> String {
    let contact = card
        .emails
        .first()
        .map(|e| e.value.trim().to_lowercase())
        .or_else(|| {
            card.phones.first().map(|p| {
                p.value
                    .chars()
                    .filter(|c| c.is_ascii_digit())
                    .collect::<String>()
            })
        })
        .unwrap_or_default();
    format!("{}\n{contact}", card.formatted_name.trim().to_lowercase())
}

fn is_vcard_type(t: &str) -> bool {
    let t = t.trim().to_ascii_lowercase();
    t == "text/vcard" || t == "text/x-vcard" || t == "text/directory"
}

fn item_bytes(item: &Item) -> &[u8] {
    item.data
        .as_ref()
        .and_then(ItemData::as_bytes)
        .unwrap_or_default()
}

fn item_content_type<'m>(
    item: &'m Item,
    cmd: &'m ItemCommand,
    sync_meta: Option<&'m Meta>,
) -> Option<&'m str> {
    item.meta
        .as_ref()
        .and_then(|m| m.content_type.as_deref())
        .or(cmd.meta.as_ref().and_then(|m| m.content_type.as_deref()))
        .or(sync_meta.and_then(|m| m.content_type.as_deref()))
}

/// Tells the client that the large object it started never ended (it sent
/// another item, or ended its package, before the last chunk).
pub(crate) fn missing_end_of_data(t: &mut Turn<'_>, chunk: &Chunk) {
    tracing::info!(dev_id = %t.dev_id, luid = %chunk.luid, "large object without its last chunk");
    let cmd_id = t.next_id();
    t.out.push(Command::Alert(Alert {
        cmd_id,
        code: Some(MISSING_END_OF_DATA),
        items: vec![Item {
            target: (!chunk.guid.is_empty()).then(|| Location::new(chunk.guid.clone())),
            source: Some(Location::new(chunk.luid.clone())),
            ..Item::default()
        }],
        ..Alert::default()
    }));
}

/// One client item: a chunk of a large object (213 until the last one,
/// which is checked against the announced size: 424 on a mismatch), or a
/// whole item.
async fn receive_item(
    t: &mut Turn<'_>,
    a: &mut Apply,
    kind: &str,
    cmd: &ItemCommand,
    item: &Item,
    sync_meta: Option<&Meta>,
) -> Result<u16, SessionError> {
    let mode = t.state.stores[a.store].mode;
    if matches!(mode, ONE_WAY_FROM_SERVER | REFRESH_FROM_SERVER) {
        // The client asked for our changes only.
        return Ok(405);
    }
    let luid = uri_of(item.source.as_ref());
    let guid = uri_of(item.target.as_ref());
    if let Some(chunk) = t.state.stores[a.store].chunk.take() {
        if chunk.kind == kind && chunk.luid == luid && chunk.guid == guid {
            let mut data = B64.decode(&chunk.data).unwrap_or_default();
            data.extend_from_slice(item_bytes(item));
            if chunk.size.is_some_and(|size| data.len() as u64 > size) {
                return Ok(424);
            }
            if item.more_data {
                t.state.stores[a.store].chunk = Some(Chunk {
                    data: B64.encode(&data),
                    ..chunk
                });
                return Ok(213);
            }
            if chunk.size.is_some_and(|size| data.len() as u64 != size) {
                return Ok(424);
            }
            let content_type = chunk
                .content_type
                .clone()
                .or_else(|| item_content_type(item, cmd, sync_meta).map(str::to_owned));
            let whole = Item {
                data: Some(ItemData::Bytes(data)),
                more_data: false,
                meta: Some(Meta {
                    content_type,
                    ..Meta::default()
                }),
                ..item.clone()
            };
            return apply_item(t, a, kind, cmd, &whole, sync_meta).await;
        }
        missing_end_of_data(t, &chunk);
    }
    if item.more_data && kind != "Delete" {
        let size = item
            .meta
            .as_ref()
            .and_then(|m| m.size)
            .or(cmd.meta.as_ref().and_then(|m| m.size));
        if size.is_some_and(|size| size > t.max_obj_size()) {
            return Ok(416);
        }
        let data = item_bytes(item);
        if size.is_some_and(|size| data.len() as u64 > size) {
            return Ok(424);
        }
        if luid.is_empty() && guid.is_empty() {
            return Ok(400);
        }
        t.state.stores[a.store].chunk = Some(Chunk {
            kind: kind.to_owned(),
            luid,
            guid,
            content_type: item_content_type(item, cmd, sync_meta).map(str::to_owned),
            size,
            data: B64.encode(data),
        });
        return Ok(213);
    }
    apply_item(t, a, kind, cmd, item, sync_meta).await
}

/// Contacts changed on the server since the device's last sync (not by
/// this session), with their last operation.
async fn server_changes(
    t: &Turn<'_>,
    since: i64,
    skip: &HashSet<Uuid>,
) -> Result<Vec<(Uuid, String)>, SessionError> {
    let viewer = t.domain.refresh_viewer(&t.viewer).await?;
    let mut since = since;
    let mut last_op: Vec<(Uuid, String)> = Vec::new();
    loop {
        let feed = t.domain.changes_since(&viewer, since, CHANGES_PAGE).await?;
        if feed.changes.is_empty() {
            break;
        }
        for c in feed.changes {
            last_op.retain(|(id, _)| *id != c.contact_id);
            last_op.push((c.contact_id, c.op));
        }
        since = feed.next_since;
    }
    last_op.retain(|(id, _)| !skip.contains(id));
    Ok(last_op)
}

/// Whether the server changed `contact` (other than deleting it) since the
/// device's last sync: a client change to it then conflicts.
async fn changed_on_server(
    t: &Turn<'_>,
    a: &mut Apply,
    contact: Uuid,
) -> Result<bool, SessionError> {
    let st = &t.state.stores[a.store];
    if !matches!(st.mode, TWO_WAY | ONE_WAY_FROM_CLIENT) {
        return Ok(false);
    }
    if a.server_changed.is_none() {
        let touched: HashSet<Uuid> = st.touched.iter().copied().collect();
        let changes = server_changes(t, st.since_seq, &touched).await?;
        a.server_changed = Some(changes.into_iter().collect());
    }
    Ok(a.server_changed
        .as_ref()
        .and_then(|c| c.get(&contact))
        .is_some_and(|op| op != "delete"))
}

/// The contact a client item names by our GUID (Target), full or short.
async fn contact_for_guid(
    t: &Turn<'_>,
    a: &mut Apply,
    guid: &str,
) -> Result<Option<Uuid>, SessionError> {
    if guid.is_empty() {
        return Ok(None);
    }
    if let Ok(id) = Uuid::try_parse(guid) {
        return Ok(Some(id));
    }
    if a.short_guids.is_none() {
        let key = t.state.stores[a.store].key.clone();
        a.short_guids = Some(
            t.domain
                .syncml_guid_contacts(&t.viewer, &t.dev_id, &key)
                .await?,
        );
    }
    Ok(a.short_guids.as_ref().and_then(|g| g.get(guid)).copied())
}

async fn apply_item(
    t: &mut Turn<'_>,
    a: &mut Apply,
    kind: &str,
    cmd: &ItemCommand,
    item: &Item,
    sync_meta: Option<&Meta>,
) -> Result<u16, SessionError> {
    let luid = uri_of(item.source.as_ref());
    let guid = uri_of(item.target.as_ref());
    let mapped = match a.maps.get(&luid).copied() {
        Some(id) => Some(id),
        None => contact_for_guid(t, a, &guid).await?,
    };
    if kind == "Delete" {
        let Some(contact_id) = mapped else {
            return Ok(211);
        };
        a.changed_maps.push((luid.clone(), None));
        a.maps.remove(&luid);
        if changed_on_server(t, a, contact_id).await? {
            // Deleted on the device, changed on the web: the change wins
            // and the contact goes back to the device as an Add.
            return Ok(200);
        }
        t.state.stores[a.store].touched.push(contact_id);
        return Ok(match t.domain.delete_contact(&t.viewer, contact_id).await {
            Ok(()) => 200,
            Err(DomainError::NotFound) => 211,
            Err(e) => {
                tracing::warn!(error = %e, "SyncML delete failed");
                item_error_code(&e)
            }
        });
    }
    let content_type = item_content_type(item, cmd, sync_meta);
    if content_type.is_some_and(|ct| !is_vcard_type(ct)) {
        return Ok(415);
    }
    let Some(data) = item.data.as_ref().and_then(ItemData::as_bytes) else {
        return Ok(412);
    };
    let Some(Ok(parsed)) = vcard::parse_bytes(data).into_iter().next() else {
        return Ok(415);
    };
    let card = vcard::from_vcard(&parsed, &t.source());
    if luid.is_empty() {
        return Ok(400);
    }
    t.state.stores[a.store].seen_luids.push(luid.clone());
    if let Some(contact_id) = mapped {
        if kind == "Replace" && changed_on_server(t, a, contact_id).await? {
            let client_at = client_change_time(
                parsed.get("REV").map(|p| p.value.as_str()),
                t.state.stores[a.store].last_server_next.as_deref(),
            );
            match merge_into(t, contact_id, &card, client_at).await {
                Ok(true) => {
                    if !a.maps.contains_key(&luid) {
                        a.maps.insert(luid.clone(), contact_id);
                        a.changed_maps.push((luid, Some(contact_id)));
                    }
                    // Not `touched`: the merged card goes back to the device.
                    return Ok(207);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "SyncML conflict merge failed");
                    return Ok(item_error_code(&e));
                }
            }
        }
        match t
            .domain
            .update_contact(&t.viewer, contact_id, None, card.clone())
            .await
        {
            Ok(_) => {
                t.state.stores[a.store].touched.push(contact_id);
                if !a.maps.contains_key(&luid) {
                    a.maps.insert(luid.clone(), contact_id);
                    a.changed_maps.push((luid, Some(contact_id)));
                }
                return Ok(if kind == "Add" { 201 } else { 200 });
            }
            // Deleted on the server meanwhile: the client's edit brings it back.
            Err(DomainError::NotFound) => {}
            Err(e) => {
                tracing::warn!(error = %e, "SyncML update failed");
                return Ok(item_error_code(&e));
            }
        }
    }
    let mode = t.state.stores[a.store].mode;
    if matches!(mode, SLOW | REFRESH_FROM_CLIENT) {
        if a.unclaimed.is_none() {
            a.unclaimed = Some(unclaimed_contacts(t, a).await?);
        }
        let key = match_key(&card);
        if let Some(existing) = a.unclaimed.as_mut().and_then(|u| u.remove(&key)) {
            // Already on the server (a slow sync after lost state): pair it
            // instead of duplicating; the server's version stays, except in
            // a refresh from the client, whose data is the reference.
            if mode == REFRESH_FROM_CLIENT {
                if let Err(e) = t
                    .domain
                    .update_contact(&t.viewer, existing, None, card.clone())
                    .await
                {
                    tracing::warn!(error = %e, "SyncML refresh update failed");
                    return Ok(item_error_code(&e));
                }
            }
            t.state.stores[a.store].touched.push(existing);
            a.maps.insert(luid.clone(), existing);
            a.changed_maps.push((luid, Some(existing)));
            return Ok(if kind == "Add" { 201 } else { 200 });
        }
    }
    let id = contact_id_for(&t.session_id, &luid);
    match t.domain.create_contact(&t.viewer, Some(id), card).await {
        Ok(contact) => {
            t.state.stores[a.store].touched.push(contact.id);
            a.maps.insert(luid.clone(), contact.id);
            a.changed_maps.push((luid, Some(contact.id)));
            Ok(201)
        }
        Err(e) => {
            tracing::warn!(error = %e, "SyncML add failed");
            Ok(item_error_code(&e))
        }
    }
}

/// When the device changed a card: its REV, if that is plausible, else
/// now. A change reported in this sync was made after the last one, so a
/// REV from before it (clients keep stale REVs, or derive them from file
/// times) or from the future (a wrong clock) says nothing, and the arrival
/// time is the best bound we have.
fn client_change_time(rev: Option<&str>, last_sync: Option<&str>) -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    let after = last_sync.and_then(merge::revision);
    rev.and_then(merge::revision)
        .filter(|t| after.is_none_or(|a| *t > a) && *t <= now + chrono::Duration::minutes(5))
        .unwrap_or(now)
}

/// Merges the client's card into a contact the server changed too (see
/// [`crate::merge`]). False if the contact is gone (the client's version
/// then simply comes back).
async fn merge_into(
    t: &Turn<'_>,
    contact_id: Uuid,
    card: &ContactCard,
    client_at: chrono::DateTime<chrono::Utc>,
) -> Result<bool, DomainError> {
    let viewer = t.domain.refresh_viewer(&t.viewer).await?;
    let current = match t.domain.get_contact(&viewer, contact_id).await {
        Ok(c) => c,
        Err(DomainError::NotFound) => return Ok(false),
        Err(e) => return Err(e),
    };
    let merged = merge::merge(&current.card, current.updated_at, card, client_at);
    match t
        .domain
        .update_contact(&viewer, contact_id, Some(current.version), merged)
        .await
    {
        Ok(_) => Ok(true),
        Err(DomainError::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Server contacts a slow sync may pair client items with: those not
/// mapped to a LUID the client still has, by match key.
async fn unclaimed_contacts(
    t: &mut Turn<'_>,
    a: &Apply,
) -> Result<HashMap<String, Uuid>, SessionError> {
    let claimed: HashSet<Uuid> = a.maps.values().copied().collect();
    let mut out = HashMap::new();
    for contact in all_contacts(t).await? {
        if !claimed.contains(&contact.id) {
            out.entry(match_key(&contact.card)).or_insert(contact.id);
        }
    }
    Ok(out)
}

/// Reads go through the per-instance cache, whose keys carry the user's
/// change_seq: the viewer must be fresh, or a list cached before this
/// session's writes would be served.
async fn all_contacts(t: &Turn<'_>) -> Result<Vec<Contact>, SessionError> {
    let viewer = t.domain.refresh_viewer(&t.viewer).await?;
    let mut all = Vec::new();
    loop {
        let page = t
            .domain
            .query_contacts(
                &viewer,
                ContactQuery {
                    offset: all.len() as i64,
                    limit: CONTACTS_PAGE,
                    ..ContactQuery::default()
                },
            )
            .await?;
        let n = page.contacts.len();
        all.extend(page.contacts);
        if n == 0 || all.len() as i64 >= page.total {
            return Ok(all);
        }
    }
}

pub(crate) async fn map(t: &mut Turn<'_>, map: &Map) -> Result<(), SessionError> {
    let target = map.target.loc_uri.trim().to_owned();
    let source = map.source.loc_uri.trim().to_owned();
    let code = match datastore_key(&target) {
        None => 404,
        Some(key) => {
            let needs_short = map
                .items
                .iter()
                .any(|i| Uuid::try_parse(i.target.loc_uri.trim()).is_err());
            let short = if needs_short {
                t.domain
                    .syncml_guid_contacts(&t.viewer, &t.dev_id, key)
                    .await?
            } else {
                HashMap::new()
            };
            let entries: Vec<(String, Option<Uuid>)> = map
                .items
                .iter()
                .filter_map(|i| {
                    let target = i.target.loc_uri.trim();
                    let guid = Uuid::try_parse(target)
                        .ok()
                        .or_else(|| short.get(target).copied())?;
                    Some((i.source.loc_uri.trim().to_owned(), Some(guid)))
                })
                .collect();
            t.domain
                .set_syncml_maps(&t.viewer, &t.dev_id, key, &entries)
                .await?;
            if entries.len() == map.items.len() {
                200
            } else {
                // Some GUIDs were never ours.
                400
            }
        }
    };
    t.push_status(&map.cmd_id, "Map", Some(&target), Some(&source), code);
    Ok(())
}

/// Our half of the sync: everything the client lacks (slow) or every change
/// since its last sync that did not come from this session (two-way). The
/// changes go into the store's outbox; [`emit`] sends what fits.
pub(crate) async fn server_sync(t: &mut Turn<'_>, store: usize) -> Result<(), SessionError> {
    if let Some(chunk) = t.state.stores[store].chunk.take() {
        missing_end_of_data(t, &chunk);
    }
    let mut viewer = t.domain.refresh_viewer(&t.viewer).await?;
    let s = t.state.stores[store].clone();
    let touched: HashSet<Uuid> = s.touched.iter().copied().collect();
    let maps = t.domain.syncml_maps(&viewer, &t.dev_id, &s.key).await?;
    let mut by_contact: HashMap<Uuid, String> = maps.iter().map(|(l, c)| (*c, l.clone())).collect();
    let mut outbox = Vec::new();
    let mut forget = Vec::new();
    let sent_seq;
    if s.mode == REFRESH_FROM_CLIENT {
        // The client's set is now the user's: what it did not send goes,
        // and so do the maps of LUIDs it no longer has.
        let seen: HashSet<&String> = s.seen_luids.iter().collect();
        for (luid, _) in &maps {
            if !seen.contains(luid) {
                forget.push((luid.clone(), None));
            }
        }
        let gone: Vec<Uuid> = all_contacts(t)
            .await?
            .into_iter()
            .map(|c| c.id)
            .filter(|id| !touched.contains(id))
            .collect();
        for batch in gone.chunks(DELETE_BATCH) {
            t.domain.delete_contacts(&viewer, batch.to_vec()).await?;
        }
        // Our own deletions are nothing the device needs to hear about.
        viewer = t.domain.refresh_viewer(&viewer).await?;
        sent_seq = viewer.change_seq;
    } else if s.mode == ONE_WAY_FROM_CLIENT {
        // Nothing goes to the client; our changes since its last sync stay
        // pending for the next sync that sends.
        sent_seq = s.since_seq;
    } else if s.mode == REFRESH_FROM_SERVER {
        // The client dropped its data: every old LUID is gone.
        t.domain
            .clear_syncml_maps(&viewer, &t.dev_id, &s.key)
            .await?;
        sent_seq = viewer.change_seq;
        for contact in all_contacts(t).await? {
            outbox.push(Pending {
                op: PendingOp::Add,
                contact_id: contact.id,
                luid: None,
                chunked: None,
                chunk_sent: 0,
            });
        }
    } else if s.mode == SLOW {
        // The client sent all it has; maps to LUIDs it did not send are stale.
        let seen: HashSet<&String> = s.seen_luids.iter().collect();
        for (luid, contact) in &maps {
            if !seen.contains(luid) {
                forget.push((luid.clone(), None));
                by_contact.remove(contact);
            }
        }
        sent_seq = viewer.change_seq;
        for contact in all_contacts(t).await? {
            if !touched.contains(&contact.id) && !by_contact.contains_key(&contact.id) {
                outbox.push(Pending {
                    op: PendingOp::Add,
                    contact_id: contact.id,
                    luid: None,
                    chunked: None,
                    chunk_sent: 0,
                });
            }
        }
    } else {
        // Two-way and one-way from server: the changes since the last sync.
        // Read the sequence first: a change landing while we read is then
        // sent again next time rather than never.
        sent_seq = viewer.change_seq.max(s.since_seq);
        for (contact_id, op) in server_changes(t, s.since_seq, &touched).await? {
            let luid = by_contact.get(&contact_id).cloned();
            let op = match (op == "delete", &luid) {
                (true, Some(luid)) => {
                    forget.push((luid.clone(), None));
                    PendingOp::Delete
                }
                (true, None) => continue,
                (false, Some(_)) => PendingOp::Replace,
                (false, None) => PendingOp::Add,
            };
            outbox.push(Pending {
                op,
                contact_id,
                luid,
                chunked: None,
                chunk_sent: 0,
            });
        }
    }
    t.domain
        .set_syncml_maps(&viewer, &t.dev_id, &s.key, &forget)
        .await?;
    let st = &mut t.state.stores[store];
    st.outbox = outbox;
    st.announced = false;
    st.sent_seq = sent_seq;
    emit(t, store).await
}

/// Room we leave in each message for what size estimates miss.
const SIZE_MARGIN: f64 = 0.9;

/// Room a chunk leaves for what the size estimate of its command misses
/// (MoreData, Meta/Size).
const CHUNK_SLACK: usize = 96;
/// Smaller chunks are not worth a message of their own.
const MIN_CHUNK: usize = 256;

/// The longest prefix of `data` of at most `max` bytes that ends on a
/// character boundary and not between CR and LF (an XML parser would turn a
/// lone CR into LF and the sizes would no longer match).
fn chunk_len(data: &[u8], max: usize) -> usize {
    let mut n = max.min(data.len());
    while n > 0 && n < data.len() && (data[n] & 0xC0) == 0x80 {
        n -= 1;
    }
    if n > 0 && n < data.len() && data[n - 1] == b'\r' {
        n -= 1;
    }
    n
}

/// Sends as much of the store's outbox as fits into this reply under the
/// client's MaxMsgSize, in one Sync command. A card that does not fit into
/// a message of its own goes out as a large object (MoreData, Meta/Size on
/// the first chunk) to clients that support them; to others it goes whole.
pub(crate) async fn emit(t: &mut Turn<'_>, store: usize) -> Result<(), SessionError> {
    let version = if t.client_prefers_21().await? {
        vcard::Version::V21
    } else {
        vcard::Version::V30
    };
    let source = t.source();
    let meta = Meta {
        content_type: Some(version.media_type().to_owned()),
        ..Meta::default()
    };
    let s = t.state.stores[store].clone();
    let budget = t
        .state
        .client_max_msg_size
        .map(|m| (m as f64 * SIZE_MARGIN) as usize)
        .unwrap_or(usize::MAX);
    let sync_id = t.next_id();
    let mut sync = Sync {
        cmd_id: sync_id,
        target: Some(Location::new(s.client_uri.clone())),
        source: Some(Location::new(s.uri.clone())),
        number_of_changes: (t.version >= Version::V1_2 && !s.announced)
            .then_some(s.outbox.len() as u32),
        ..Sync::default()
    };
    // Fresh change_seq: cached cards are keyed by it.
    let viewer = t.domain.refresh_viewer(&t.viewer).await?;
    // Devices that cannot hold our UUIDs as GUIDs get short ones, kept
    // per device so their Map and later commands find the contact.
    let short: Option<HashMap<Uuid, String>> = match t.client_max_guid_size().await? {
        Some(limit) if limit < UUID_GUID_LEN => {
            let ids: Vec<Uuid> = s.outbox.iter().map(|p| p.contact_id).collect();
            Some(
                t.domain
                    .syncml_short_guids(&viewer, &t.dev_id, &s.key, &ids)
                    .await?,
            )
        }
        _ => None,
    };
    let guid_of = |id: Uuid| -> String {
        short
            .as_ref()
            .and_then(|m| m.get(&id).cloned())
            .unwrap_or_else(|| id.simple().to_string())
    };
    let mut used = t.reply_len(Some(&sync))?;
    let empty = t.bare_len(&[])?;
    let mut sent = 0;
    // (index in the outbox, full card, bytes sent after this message)
    let mut chunk_progress: Option<(usize, Vec<u8>, usize)> = None;
    for (index, pending) in s.outbox.iter().enumerate() {
        if let Some(full) = pending.chunked.as_deref() {
            // The rest of a large object: the next chunk, or the last.
            let full = B64.decode(full).unwrap_or_default();
            let rest = &full[pending.chunk_sent.min(full.len())..];
            let cmd_id = t.next_id();
            let mut item = Item {
                target: pending.luid.clone().map(Location::new),
                source: Some(Location::new(guid_of(pending.contact_id))),
                data: Some(ItemData::Bytes(rest.to_vec())),
                ..Item::default()
            };
            let command = |item: Item, cmd_id: String| {
                let cmd = ItemCommand {
                    cmd_id,
                    meta: Some(meta.clone()),
                    items: vec![item],
                    ..ItemCommand::default()
                };
                match pending.luid {
                    Some(_) => Command::Replace(cmd),
                    None => Command::Add(cmd),
                }
            };
            let whole = command(item.clone(), cmd_id.clone());
            let size = t.bare_len(std::slice::from_ref(&whole))? - empty;
            if used + size <= budget {
                used += size;
                sync.commands.push(whole);
                sent += 1;
                continue;
            }
            let overhead = size - rest.len();
            let room = budget.saturating_sub(used + overhead + CHUNK_SLACK);
            let n = chunk_len(rest, room);
            if n < MIN_CHUNK.min(rest.len()) || n == 0 {
                t.unassign_id();
                break;
            }
            item.data = Some(ItemData::Bytes(rest[..n].to_vec()));
            item.more_data = true;
            sync.commands.push(command(item, cmd_id));
            chunk_progress = Some((index, full.clone(), pending.chunk_sent + n));
            break;
        }
        let current = match pending.op {
            PendingOp::Delete => None,
            _ => match t.domain.get_contact(&viewer, pending.contact_id).await {
                Ok(c) => Some(c),
                Err(DomainError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
        };
        let cmd_id = t.next_id();
        let card_item = |c: &Contact, target: Option<&String>| Item {
            target: target.map(|l| Location::new(l.clone())),
            source: Some(Location::new(guid_of(c.id))),
            data: Some(ItemData::Bytes(
                vcard::write(&vcard::to_vcard(&c.card, version, Some(&source)), version)
                    .into_bytes(),
            )),
            ..Item::default()
        };
        let command = match (current, &pending.luid) {
            (Some(c), None) => Some(Command::Add(ItemCommand {
                cmd_id,
                meta: Some(meta.clone()),
                items: vec![card_item(&c, None)],
                ..ItemCommand::default()
            })),
            (Some(c), Some(luid)) => Some(Command::Replace(ItemCommand {
                cmd_id,
                meta: Some(meta.clone()),
                items: vec![card_item(&c, Some(luid))],
                ..ItemCommand::default()
            })),
            // Gone meanwhile: the client only needs to hear if it has it.
            (None, Some(luid)) => Some(Command::Delete(ItemCommand {
                cmd_id,
                items: vec![Item {
                    target: Some(Location::new(luid.clone())),
                    source: Some(Location::new(guid_of(pending.contact_id))),
                    ..Item::default()
                }],
                ..ItemCommand::default()
            })),
            (None, None) => None,
        };
        let Some(command) = command else {
            t.unassign_id();
            sent += 1;
            continue;
        };
        let size = t.bare_len(std::slice::from_ref(&command))? - empty;
        if used + size > budget {
            let data = match &command {
                Command::Add(c) | Command::Replace(c) if t.state.client_large_objects => c.items[0]
                    .data
                    .as_ref()
                    .and_then(|d| d.as_bytes())
                    .map(<[u8]>::to_vec),
                _ => None,
            };
            let room = data.as_ref().map_or(0, |d| {
                budget.saturating_sub(used + (size - d.len()) + CHUNK_SLACK)
            });
            let n = data.as_ref().map_or(0, |d| chunk_len(d, room));
            match data {
                // The first chunk of a large object ends this message.
                Some(data) if n >= MIN_CHUNK && n < data.len() => {
                    let mut command = command;
                    if let Command::Add(c) | Command::Replace(c) = &mut command {
                        let item = &mut c.items[0];
                        item.data = Some(ItemData::Bytes(data[..n].to_vec()));
                        item.more_data = true;
                        item.meta = Some(Meta {
                            size: Some(data.len() as u64),
                            ..Meta::default()
                        });
                    }
                    sync.commands.push(command);
                    chunk_progress = Some((index, data, n));
                    break;
                }
                // No room left here: the next message.
                _ if sent > 0 => {
                    t.unassign_id();
                    break;
                }
                // Nothing else in this message and no chunking: whole.
                _ => {}
            }
        }
        used += size;
        sync.commands.push(command);
        sent += 1;
    }
    t.out.push(Command::Sync(sync));
    let st = &mut t.state.stores[store];
    if let Some((index, full, done)) = chunk_progress {
        let pending = &mut st.outbox[index];
        pending.chunked = Some(B64.encode(&full));
        pending.chunk_sent = done;
    }
    st.outbox.drain(..sent);
    st.announced = true;
    st.phase = if st.outbox.is_empty() {
        Phase::ServerSyncSent
    } else {
        Phase::ServerSending
    };
    Ok(())
}

/// The client answered our Sync (and sent its Maps): both sides now hold
/// the anchors of this session.
pub(crate) async fn commit(t: &mut Turn<'_>, store: usize) -> Result<(), SessionError> {
    let s = t.state.stores[store].clone();
    t.domain
        .set_syncml_anchors(
            &t.viewer,
            &t.dev_id,
            &s.key,
            &SyncAnchors {
                client_next: s.client_next,
                server_next: s.server_next,
                last_seq: s.sent_seq,
            },
        )
        .await?;
    t.state.stores[store].phase = Phase::Done;
    Ok(())
}
