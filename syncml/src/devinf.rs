//! Device information (DevInf 1.1/1.2): the client's, stored per device to
//! pick vCard versions, GUID lengths and large-object support, and ours,
//! answered to `Get ./devinf1x`.

use crate::codec::Encoding;
use crate::message::parse::{all_text, flag, opt_num, opt_text, req_text, text};
use crate::message::path::At;
use crate::message::{Item, ItemData, Location, MessageError, Meta, Results};
use crate::tree::{Element, Namespace, Version};
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevInf {
    pub version: Version,
    pub man: Option<String>,
    pub model: Option<String>,
    pub oem: Option<String>,
    pub fw_v: Option<String>,
    pub sw_v: Option<String>,
    pub hw_v: Option<String>,
    pub dev_id: String,
    pub dev_typ: String,
    pub utc: bool,
    pub support_large_objs: bool,
    pub support_number_of_changes: bool,
    pub data_stores: Vec<DataStore>,
    /// DevInf 1.0/1.1 capabilities (one flat CTCap after the data stores),
    /// kept as elements: only field-level merging will need to read them.
    pub ctcaps: Vec<Element<'static>>,
    pub exts: Vec<Ext>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataStore {
    /// The URI clients address this store by (`./addressbook`, `card`, …).
    pub source_ref: String,
    pub display_name: Option<String>,
    /// Longest GUID the client can store; old phones allow as few as 8.
    pub max_guid_size: Option<u32>,
    pub rx_pref: Vec<ContentType>,
    pub rx: Vec<ContentType>,
    pub tx_pref: Vec<ContentType>,
    pub tx: Vec<ContentType>,
    /// DevInf 1.2 capabilities (nested Property/PropParam), kept as elements.
    pub ctcaps: Vec<Element<'static>>,
    pub ds_mem: Option<DsMem>,
    pub support_hierarchical_sync: bool,
    /// SyncCap/SyncType: 1 two-way … 7 server-alerted (and vendor values).
    pub sync_types: Vec<u32>,
    /// Filter-Rx, FilterCap and anything newer, kept for re-emission.
    pub other: Vec<Element<'static>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContentType {
    pub ct_type: String,
    pub ver_ct: String,
}

impl ContentType {
    pub fn new(ct_type: &str, ver_ct: &str) -> ContentType {
        ContentType {
            ct_type: ct_type.to_owned(),
            ver_ct: ver_ct.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DsMem {
    pub shared_mem: bool,
    pub max_mem: Option<u64>,
    pub max_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ext {
    pub x_nam: String,
    pub x_val: Vec<String>,
}

impl DevInf {
    pub fn data_store(&self, source_ref: &str) -> Option<&DataStore> {
        self.data_stores.iter().find(|d| d.source_ref == source_ref)
    }

    pub fn to_element(&self) -> Element<'_> {
        build(self)
    }

    /// A standalone XML document, the form the server stores a client's
    /// DevInf in between sessions.
    pub fn to_xml(&self) -> Vec<u8> {
        crate::xml::write(&crate::tree::Document {
            version: self.version,
            root: self.to_element(),
        })
    }

    /// Reads what [`DevInf::to_xml`] wrote.
    pub fn from_xml(bytes: &[u8]) -> Result<DevInf, crate::codec::CodecError> {
        let doc = crate::xml::parse(bytes)?;
        Ok(parse(&doc.root, &At::root("DevInf"))?)
    }

    /// `application/vnd.syncml-devinf+xml` or `+wbxml`, matching the
    /// encoding of the message that carries it (as libsynthesis does).
    pub fn meta_type(encoding: Encoding) -> &'static str {
        match encoding {
            Encoding::Xml => "application/vnd.syncml-devinf+xml",
            Encoding::Wbxml => "application/vnd.syncml-devinf+wbxml",
        }
    }

    /// The `Results` answering a client's `Get ./devinf1x`.
    pub fn results(
        self,
        cmd_id: String,
        msg_ref: String,
        get_cmd_id: String,
        encoding: Encoding,
    ) -> Results {
        let uri = self.version.devinf_uri().to_owned();
        Results {
            cmd_id,
            msg_ref: Some(msg_ref),
            cmd_ref: get_cmd_id,
            meta: Some(Meta {
                content_type: Some(Self::meta_type(encoding).to_owned()),
                ..Meta::default()
            }),
            target_refs: Vec::new(),
            source_refs: Vec::new(),
            items: vec![Item {
                source: Some(Location::new(uri)),
                data: Some(ItemData::DevInf(Box::new(self))),
                ..Item::default()
            }],
        }
    }
}

impl DataStore {
    /// Whether the store can receive this content type (any version).
    pub fn receives(&self, ct_type: &str) -> bool {
        self.rx_pref
            .iter()
            .chain(&self.rx)
            .any(|c| c.ct_type.eq_ignore_ascii_case(ct_type))
    }
}

/// Our own DevInf: one contacts store per URI, vCard 3.0 preferred and 2.1
/// accepted both ways, all sync types a server offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDevInf {
    /// The server URL clients post to; DevInf calls it DevID.
    pub dev_id: String,
    pub man: String,
    pub model: String,
    pub sw_v: String,
    /// Datastore URIs clients use for contacts (`contacts`, `card`, …).
    pub contacts_uris: Vec<String>,
}

impl ServerDevInf {
    pub fn new(dev_id: impl Into<String>) -> ServerDevInf {
        ServerDevInf {
            dev_id: dev_id.into(),
            man: "Onebook".to_owned(),
            model: "Onebook SyncML server".to_owned(),
            sw_v: env!("CARGO_PKG_VERSION").to_owned(),
            contacts_uris: Vec::new(),
        }
    }

    pub fn contacts(mut self, uri: impl Into<String>) -> ServerDevInf {
        self.contacts_uris.push(uri.into());
        self
    }

    pub fn build(&self, version: Version) -> DevInf {
        let vcard30 = ContentType::new("text/vcard", "3.0");
        let vcard21 = ContentType::new("text/x-vcard", "2.1");
        DevInf {
            version,
            man: Some(self.man.clone()),
            model: Some(self.model.clone()),
            oem: None,
            fw_v: Some(self.sw_v.clone()),
            sw_v: Some(self.sw_v.clone()),
            hw_v: Some("unknown".to_owned()),
            dev_id: self.dev_id.clone(),
            dev_typ: "server".to_owned(),
            utc: true,
            support_large_objs: true,
            support_number_of_changes: true,
            data_stores: self
                .contacts_uris
                .iter()
                .map(|uri| DataStore {
                    source_ref: uri.clone(),
                    display_name: Some("Contacts".to_owned()),
                    rx_pref: vec![vcard30.clone()],
                    rx: vec![vcard21.clone()],
                    tx_pref: vec![vcard30.clone()],
                    tx: vec![vcard21.clone()],
                    sync_types: (1..=7).collect(),
                    ..DataStore::default()
                })
                .collect(),
            ctcaps: Vec::new(),
            exts: Vec::new(),
        }
    }
}

type R<T> = Result<T, MessageError>;

pub(crate) fn parse(el: &Element, at: &At<'_>) -> R<DevInf> {
    let ver = req_text(el, at, "VerDTD")?;
    let version = Version::parse(&ver).ok_or_else(|| {
        at.named("VerDTD")
            .invalid(&ver, "unsupported DevInf version")
    })?;
    let mut data_stores = Vec::new();
    let mut ctcaps = Vec::new();
    let mut exts = Vec::new();
    for c in el.children() {
        let here = at.child(el, c);
        match &*c.name {
            "DataStore" => data_stores.push(data_store(c, &here)?),
            "CTCap" => ctcaps.push(c.clone().into_owned()),
            "Ext" => exts.push(Ext {
                x_nam: req_text(c, &here, "XNam")?,
                x_val: all_text(c, &here, "XVal")?,
            }),
            _ => {}
        }
    }
    Ok(DevInf {
        version,
        man: opt_text(el, at, "Man")?,
        model: opt_text(el, at, "Mod")?,
        oem: opt_text(el, at, "OEM")?,
        fw_v: opt_text(el, at, "FwV")?,
        sw_v: opt_text(el, at, "SwV")?,
        hw_v: opt_text(el, at, "HwV")?,
        // Some phones omit DevID/DevTyp in DevInf; the SyncHdr has the id.
        dev_id: opt_text(el, at, "DevID")?.unwrap_or_default(),
        dev_typ: opt_text(el, at, "DevTyp")?.unwrap_or_default(),
        utc: flag(el, "UTC"),
        support_large_objs: flag(el, "SupportLargeObjs"),
        support_number_of_changes: flag(el, "SupportNumberOfChanges"),
        data_stores,
        ctcaps,
        exts,
    })
}

fn data_store(el: &Element, at: &At<'_>) -> R<DataStore> {
    let mut ds = DataStore {
        source_ref: req_text(el, at, "SourceRef")?,
        display_name: opt_text(el, at, "DisplayName")?,
        max_guid_size: opt_num(el, at, "MaxGUIDSize")?,
        support_hierarchical_sync: flag(el, "SupportHierarchicalSync"),
        ..DataStore::default()
    };
    for c in el.children() {
        let here = at.child(el, c);
        match &*c.name {
            "Rx-Pref" => ds.rx_pref.push(content_type(c, &here)?),
            "Rx" => ds.rx.push(content_type(c, &here)?),
            "Tx-Pref" => ds.tx_pref.push(content_type(c, &here)?),
            "Tx" => ds.tx.push(content_type(c, &here)?),
            "CTCap" => ds.ctcaps.push(c.clone().into_owned()),
            "DSMem" => {
                ds.ds_mem = Some(DsMem {
                    shared_mem: flag(c, "SharedMem"),
                    max_mem: opt_num(c, &here, "MaxMem")?,
                    max_id: opt_num(c, &here, "MaxID")?,
                })
            }
            "SyncCap" => {
                for t in c.children_named("SyncType") {
                    let th = here.child(c, t);
                    let v = text(t, &th)?;
                    ds.sync_types
                        .push(v.parse().map_err(|_| th.invalid(&v, "not a number"))?);
                }
            }
            "SourceRef" | "DisplayName" | "MaxGUIDSize" | "SupportHierarchicalSync" => {}
            _ => ds.other.push(c.clone().into_owned()),
        }
    }
    Ok(ds)
}

fn content_type(el: &Element, at: &At<'_>) -> R<ContentType> {
    Ok(ContentType {
        ct_type: req_text(el, at, "CTType")?,
        // Lenient: some phones leave VerCT out of Rx/Tx.
        ver_ct: opt_text(el, at, "VerCT")?.unwrap_or_default(),
    })
}

const D: Namespace = Namespace::DevInf;

fn t<'a>(name: &'static str, v: impl Into<Cow<'a, str>>) -> Element<'a> {
    Element::with_text(name, D, v)
}

fn build(d: &DevInf) -> Element<'_> {
    let mut c = vec![t("VerDTD", d.version.as_str())];
    let opt = [
        ("Man", &d.man),
        ("Mod", &d.model),
        ("OEM", &d.oem),
        ("FwV", &d.fw_v),
        ("SwV", &d.sw_v),
        ("HwV", &d.hw_v),
    ];
    for (name, v) in opt {
        if let Some(v) = v {
            c.push(t(name, v));
        }
    }
    c.push(t("DevID", &d.dev_id));
    c.push(t("DevTyp", &d.dev_typ));
    // libsynthesis' order (SupportNumberOfChanges first); its clients and
    // the phones it syncs with accept it, so it is the proven one.
    let flags = [
        ("UTC", d.utc),
        ("SupportNumberOfChanges", d.support_number_of_changes),
        ("SupportLargeObjs", d.support_large_objs),
    ];
    for (name, on) in flags {
        if on {
            c.push(Element::new(name, D));
        }
    }
    c.extend(d.data_stores.iter().map(build_data_store));
    c.extend(d.ctcaps.iter().cloned());
    for e in &d.exts {
        let mut ec = vec![t("XNam", &e.x_nam)];
        ec.extend(e.x_val.iter().map(|v| t("XVal", v)));
        c.push(Element::with_children("Ext", D, ec));
    }
    Element::with_children("DevInf", D, c)
}

fn build_data_store(ds: &DataStore) -> Element<'_> {
    let mut c = vec![t("SourceRef", &ds.source_ref)];
    if let Some(n) = &ds.display_name {
        c.push(t("DisplayName", n));
    }
    if let Some(n) = ds.max_guid_size {
        c.push(t("MaxGUIDSize", n.to_string()));
    }
    let lists = [
        ("Rx-Pref", &ds.rx_pref),
        ("Rx", &ds.rx),
        ("Tx-Pref", &ds.tx_pref),
        ("Tx", &ds.tx),
    ];
    for (name, list) in lists {
        for ct in list {
            c.push(Element::with_children(
                name,
                D,
                vec![t("CTType", &ct.ct_type), t("VerCT", &ct.ver_ct)],
            ));
        }
    }
    c.extend(ds.ctcaps.iter().cloned());
    if let Some(m) = &ds.ds_mem {
        let mut mc = Vec::new();
        if m.shared_mem {
            mc.push(Element::new("SharedMem", D));
        }
        if let Some(v) = m.max_mem {
            mc.push(t("MaxMem", v.to_string()));
        }
        if let Some(v) = m.max_id {
            mc.push(t("MaxID", v.to_string()));
        }
        c.push(Element::with_children("DSMem", D, mc));
    }
    if ds.support_hierarchical_sync {
        c.push(Element::new("SupportHierarchicalSync", D));
    }
    let sync_types = ds
        .sync_types
        .iter()
        .map(|n| t("SyncType", n.to_string()))
        .collect();
    c.push(Element::with_children("SyncCap", D, sync_types));
    c.extend(ds.other.iter().cloned());
    Element::with_children("DataStore", D, c)
}

/// What a client can store for one content type, read from CTCap. DevInf
/// 1.1 writes it as one flat list (CTType, PropName, ValEnum, ParamName …)
/// at DevInf level, 1.2 nests Property/PropParam per data store; both end up
/// here so field-level merging can ignore the difference.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CtCap {
    pub ct_type: String,
    pub ver_ct: Option<String>,
    pub properties: Vec<Property>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Property {
    pub name: String,
    pub values: Vec<String>,
    pub max_occur: Option<u32>,
    pub max_size: Option<u32>,
    pub no_truncate: bool,
    pub params: Vec<PropParam>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropParam {
    pub name: String,
    pub values: Vec<String>,
}

impl DevInf {
    /// Capabilities that apply to `store`: its own CTCaps (1.2), else the
    /// device-wide ones (1.0/1.1). Malformed parts are skipped, not errors:
    /// this only refines merging and must not fail a session.
    pub fn capabilities(&self, store: &DataStore) -> Vec<CtCap> {
        let raw = if store.ctcaps.is_empty() {
            &self.ctcaps
        } else {
            &store.ctcaps
        };
        let mut caps = Vec::new();
        for ctcap in raw {
            read_ctcap(ctcap, &mut caps);
        }
        caps
    }
}

fn trimmed(el: &Element<'_>) -> String {
    el.text().unwrap_or_default().trim().to_owned()
}

fn read_ctcap(ctcap: &Element<'_>, caps: &mut Vec<CtCap>) {
    // Flat 1.1 lists: ValEnum/Size belong to the last ParamName, if one
    // followed the last PropName, else to the property.
    let mut in_param = false;
    for c in ctcap.children() {
        if c.name == "CTType" {
            caps.push(CtCap {
                ct_type: trimmed(c),
                ..CtCap::default()
            });
            in_param = false;
            continue;
        }
        let Some(cap) = caps.last_mut() else { continue };
        match &*c.name {
            "VerCT" => cap.ver_ct = Some(trimmed(c)),
            "Property" => cap.properties.push(nested_property(c)),
            "PropName" => {
                cap.properties.push(Property {
                    name: trimmed(c),
                    ..Property::default()
                });
                in_param = false;
            }
            "ParamName" => {
                if let Some(p) = cap.properties.last_mut() {
                    p.params.push(PropParam {
                        name: trimmed(c),
                        values: Vec::new(),
                    });
                    in_param = true;
                }
            }
            "ValEnum" => {
                let Some(p) = cap.properties.last_mut() else {
                    continue;
                };
                match p.params.last_mut() {
                    Some(param) if in_param => param.values.push(trimmed(c)),
                    _ => p.values.push(trimmed(c)),
                }
            }
            "Size" | "MaxSize" if !in_param => {
                if let Some(p) = cap.properties.last_mut() {
                    p.max_size = trimmed(c).parse().ok();
                }
            }
            _ => {}
        }
    }
}

fn nested_property(el: &Element<'_>) -> Property {
    let mut p = Property::default();
    for c in el.children() {
        match &*c.name {
            "PropName" => p.name = trimmed(c),
            "ValEnum" => p.values.push(trimmed(c)),
            "MaxOccur" => p.max_occur = trimmed(c).parse().ok(),
            "MaxSize" | "Size" => p.max_size = trimmed(c).parse().ok(),
            "NoTruncate" => p.no_truncate = true,
            "PropParam" => p.params.push(PropParam {
                name: c.child("ParamName").map(trimmed).unwrap_or_default(),
                values: c.children_named("ValEnum").map(trimmed).collect(),
            }),
            _ => {}
        }
    }
    p
}
