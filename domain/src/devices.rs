//! The SyncML devices of a user, as the web shows them: read from the sync
//! server's tables (migration 4, written by [`crate::syncml_state`]), and
//! forgotten on request.
//!
//! Forgetting a device deletes its anchors, LUID maps, short GUIDs and
//! DevInf. The sync server then finds no anchors for the device and answers
//! its next sync with 508 (refresh required): a slow sync that re-sends
//! everything.

use crate::accounts::Viewer;
use crate::db::db;
use crate::error::DomainError;
use crate::Domain;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// What a device said about itself in its DevInf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceModel {
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub oem: Option<String>,
    pub device_type: Option<String>,
    pub software_version: Option<String>,
    pub firmware_version: Option<String>,
    pub hardware_version: Option<String>,
}

/// Sync state of one datastore (`./contacts`, `addressbook`, ...) of a device.
#[derive(Debug, Clone, Serialize)]
pub struct DatastoreState {
    pub datastore: String,
    pub last_sync_at: DateTime<Utc>,
    /// The user's change sequence number the device has caught up to.
    pub last_seq: i64,
    pub client_anchor: String,
    pub server_anchor: String,
    /// Contacts mapped to the device's local ids (LUIDs).
    pub mapped_items: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub dev_id: String,
    /// From the DevInf the device last sent; `None` if it never sent one.
    pub info: Option<DeviceModel>,
    pub devinf_updated_at: Option<DateTime<Utc>>,
    /// The latest completed sync over all datastores.
    pub last_sync_at: Option<DateTime<Utc>>,
    pub datastores: Vec<DatastoreState>,
}

/// The text of the first `<tag>` element, with XML's predefined entities
/// decoded. The DevInf is the XML our own writer made from the client's
/// (XML or WBXML) DevInf, so plain elements without attributes are all
/// there is to read.
fn element_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    let raw = xml[start..start + len].trim();
    let raw = raw
        .strip_prefix("<![CDATA[")
        .and_then(|r| r.strip_suffix("]]>"))
        .map(str::to_string)
        .unwrap_or_else(|| {
            raw.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&")
        });
    (!raw.is_empty()).then_some(raw)
}

/// The device description in a stored DevInf document.
pub fn device_model(devinf: &[u8]) -> DeviceModel {
    let xml = String::from_utf8_lossy(devinf);
    let get = |tag| element_text(&xml, tag);
    DeviceModel {
        manufacturer: get("Man"),
        model: get("Mod"),
        oem: get("OEM"),
        device_type: get("DevTyp"),
        software_version: get("SwV"),
        firmware_version: get("FwV"),
        hardware_version: get("HwV"),
    }
}

fn device_entry(devices: &mut BTreeMap<String, Device>, dev_id: String) -> &mut Device {
    devices.entry(dev_id.clone()).or_insert_with(|| Device {
        dev_id,
        info: None,
        devinf_updated_at: None,
        last_sync_at: None,
        datastores: Vec::new(),
    })
}

impl Domain {
    /// Every device that has synced (or sent its DevInf), latest sync first.
    pub async fn devices(&self, viewer: &Viewer) -> Result<Vec<Device>, DomainError> {
        let user_id = viewer.id;
        let (devinfs, anchors, maps) = self
            .pools
            .read(viewer.shard, move |client| {
                Box::pin(async move {
                    let devinfs = client
                        .query(
                            "SELECT dev_id, devinf, updated_at FROM syncml_devices WHERE user_id = $1",
                            &[&user_id],
                        )
                        .await
                        .map_err(db)?;
                    let anchors = client
                        .query(
                            "SELECT dev_id, datastore, client_next, server_next, last_seq, updated_at \
                             FROM syncml_anchors WHERE user_id = $1",
                            &[&user_id],
                        )
                        .await
                        .map_err(db)?;
                    let maps = client
                        .query(
                            "SELECT dev_id, datastore, count(*) FROM syncml_maps WHERE user_id = $1 \
                             GROUP BY dev_id, datastore",
                            &[&user_id],
                        )
                        .await
                        .map_err(db)?;
                    Ok((devinfs, anchors, maps))
                })
            })
            .await?;
        let mut devices: BTreeMap<String, Device> = BTreeMap::new();
        for row in &devinfs {
            let device = device_entry(&mut devices, row.get(0));
            let devinf: Option<Vec<u8>> = row.get(1);
            device.info = devinf.as_deref().map(device_model);
            device.devinf_updated_at = Some(row.get(2));
        }
        let mapped: BTreeMap<(String, String), i64> = maps
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();
        for row in &anchors {
            let dev_id: String = row.get(0);
            let datastore: String = row.get(1);
            let at: DateTime<Utc> = row.get(5);
            let mapped_items = mapped
                .get(&(dev_id.clone(), datastore.clone()))
                .copied()
                .unwrap_or(0);
            let device = device_entry(&mut devices, dev_id);
            device.datastores.push(DatastoreState {
                datastore,
                last_sync_at: at,
                last_seq: row.get(4),
                client_anchor: row.get(2),
                server_anchor: row.get(3),
                mapped_items,
            });
            device.last_sync_at = device.last_sync_at.max(Some(at));
        }
        // Maps without anchors: a first sync that never completed.
        for (dev_id, _) in mapped.keys() {
            device_entry(&mut devices, dev_id.clone());
        }
        let mut devices: Vec<Device> = devices.into_values().collect();
        for device in &mut devices {
            device
                .datastores
                .sort_by(|a, b| a.datastore.cmp(&b.datastore));
        }
        devices.sort_by(|a, b| {
            b.last_sync_at
                .cmp(&a.last_sync_at)
                .then_with(|| a.dev_id.cmp(&b.dev_id))
        });
        Ok(devices)
    }

    /// Forgets a device: its anchors, maps, short GUIDs and DevInf, so its
    /// next sync is a slow sync. `NotFound` if the user has no such device.
    pub async fn forget_device(&self, viewer: &Viewer, dev_id: &str) -> Result<(), DomainError> {
        let (user_id, dev_id) = (viewer.id, dev_id.to_string());
        let removed = self
            .pools
            .write(viewer.shard, move |tx| {
                let dev_id = dev_id.clone();
                Box::pin(async move {
                    let mut removed = 0;
                    for sql in [
                        "DELETE FROM syncml_maps WHERE user_id = $1 AND dev_id = $2",
                        "DELETE FROM syncml_guids WHERE user_id = $1 AND dev_id = $2",
                        "DELETE FROM syncml_anchors WHERE user_id = $1 AND dev_id = $2",
                        "DELETE FROM syncml_devices WHERE user_id = $1 AND dev_id = $2",
                    ] {
                        removed += tx.execute(sql, &[&user_id, &dev_id]).await.map_err(db)?;
                    }
                    Ok(removed)
                })
            })
            .await?;
        if removed == 0 {
            return Err(DomainError::NotFound);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_devinf_names_the_device() {
        let xml = b"<DevInf xmlns=\"syncml:devinf\"><VerDTD>1.2</VerDTD><Man>Patrick Ohly</Man>\
            <Mod>SyncEvolution</Mod><OEM>Synthesis AG</OEM><FwV>2.0.0</FwV><SwV>3.4.0.47</SwV>\
            <HwV>unknown</HwV><DevID>sc-pim-test-0001</DevID><DevTyp>workstation</DevTyp>\
            <DataStore><SourceRef>./addressbook</SourceRef></DataStore></DevInf>";
        let model = device_model(xml);
        assert_eq!(model.manufacturer.as_deref(), Some("Patrick Ohly"));
        assert_eq!(model.model.as_deref(), Some("SyncEvolution"));
        assert_eq!(model.oem.as_deref(), Some("Synthesis AG"));
        assert_eq!(model.device_type.as_deref(), Some("workstation"));
        assert_eq!(model.software_version.as_deref(), Some("3.4.0.47"));
        assert_eq!(model.firmware_version.as_deref(), Some("2.0.0"));
        assert_eq!(model.hardware_version.as_deref(), Some("unknown"));
    }

    #[test]
    fn entities_are_decoded_and_missing_fields_stay_empty() {
        let model = device_model(b"<DevInf><Man>AT&amp;T &lt;x&gt;</Man><Mod></Mod></DevInf>");
        assert_eq!(model.manufacturer.as_deref(), Some("AT&T <x>"));
        assert_eq!(model.model, None);
        assert_eq!(model.device_type, None);
        assert_eq!(device_model(b"\xff\xfe garbage"), DeviceModel::default());
    }
}
