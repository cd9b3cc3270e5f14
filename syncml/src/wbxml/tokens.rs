//! Tag tables of the SyncML Representation Protocol (SyncML page 0, MetInf
//! page 1) and of the DevInf DTD, identical to libsynthesis `xlttags.c`.

use crate::tree::{Namespace, Version};

const SYNCML: &[(u8, &str)] = &[
    (0x05, "Add"),
    (0x06, "Alert"),
    (0x07, "Archive"),
    (0x08, "Atomic"),
    (0x09, "Chal"),
    (0x0A, "Cmd"),
    (0x0B, "CmdID"),
    (0x0C, "CmdRef"),
    (0x0D, "Copy"),
    (0x0E, "Cred"),
    (0x0F, "Data"),
    (0x10, "Delete"),
    (0x11, "Exec"),
    (0x12, "Final"),
    (0x13, "Get"),
    (0x14, "Item"),
    (0x15, "Lang"),
    (0x16, "LocName"),
    (0x17, "LocURI"),
    (0x18, "Map"),
    (0x19, "MapItem"),
    (0x1A, "Meta"),
    (0x1B, "MsgID"),
    (0x1C, "MsgRef"),
    (0x1D, "NoResp"),
    (0x1E, "NoResults"),
    (0x1F, "Put"),
    (0x20, "Replace"),
    (0x21, "RespURI"),
    (0x22, "Results"),
    (0x23, "Search"),
    (0x24, "Sequence"),
    (0x25, "SessionID"),
    (0x26, "SftDel"),
    (0x27, "Source"),
    (0x28, "SourceRef"),
    (0x29, "Status"),
    (0x2A, "Sync"),
    (0x2B, "SyncBody"),
    (0x2C, "SyncHdr"),
    (0x2D, "SyncML"),
    (0x2E, "Target"),
    (0x2F, "TargetRef"),
    (0x31, "VerDTD"),
    (0x32, "VerProto"),
    (0x33, "NumberOfChanges"),
    (0x34, "MoreData"),
    (0x35, "Field"),
    (0x36, "Filter"),
    (0x37, "Record"),
    (0x38, "FilterType"),
    (0x39, "SourceParent"),
    (0x3A, "TargetParent"),
    (0x3B, "Move"),
    (0x3C, "Correlator"),
];

const METINF: &[(u8, &str)] = &[
    (0x05, "Anchor"),
    (0x06, "EMI"),
    (0x07, "Format"),
    (0x08, "FreeID"),
    (0x09, "FreeMem"),
    (0x0A, "Last"),
    (0x0B, "Mark"),
    (0x0C, "MaxMsgSize"),
    (0x0D, "Mem"),
    (0x0E, "MetInf"),
    (0x0F, "Next"),
    (0x10, "NextNonce"),
    (0x11, "SharedMem"),
    (0x12, "Size"),
    (0x13, "Type"),
    (0x14, "Version"),
    (0x15, "MaxObjSize"),
    (0x16, "FieldLevel"),
];

const DEVINF: &[(u8, &str)] = &[
    (0x05, "CTCap"),
    (0x06, "CTType"),
    (0x07, "DataStore"),
    (0x08, "DataType"),
    (0x09, "DevID"),
    (0x0A, "DevInf"),
    (0x0B, "DevTyp"),
    (0x0C, "DisplayName"),
    (0x0D, "DSMem"),
    (0x0E, "Ext"),
    (0x0F, "FwV"),
    (0x10, "HwV"),
    (0x11, "Man"),
    (0x12, "MaxGUIDSize"),
    (0x13, "MaxID"),
    (0x14, "MaxMem"),
    (0x15, "Mod"),
    (0x16, "OEM"),
    (0x17, "ParamName"),
    (0x18, "PropName"),
    (0x19, "Rx"),
    (0x1A, "Rx-Pref"),
    (0x1B, "SharedMem"),
    (0x1C, "MaxSize"),
    (0x1D, "SourceRef"),
    (0x1E, "SwV"),
    (0x1F, "SyncCap"),
    (0x20, "SyncType"),
    (0x21, "Tx"),
    (0x22, "Tx-Pref"),
    (0x23, "ValEnum"),
    (0x24, "VerCT"),
    (0x25, "VerDTD"),
    (0x26, "XNam"),
    (0x27, "XVal"),
    (0x28, "UTC"),
    (0x29, "SupportNumberOfChanges"),
    (0x2A, "SupportLargeObjs"),
    (0x2B, "Property"),
    (0x2C, "PropParam"),
    (0x2D, "MaxOccur"),
    (0x2E, "NoTruncate"),
    (0x30, "Filter-Rx"),
    (0x31, "FilterCap"),
    (0x32, "FilterKeyword"),
    (0x33, "FieldLevel"),
    (0x34, "SupportHierarchicalSync"),
];

/// DevInf token 0x1C is `Size` up to DevInf 1.1 and `MaxSize` from 1.2 on.
const DEVINF_SIZE: u8 = 0x1C;

fn table(ns: Namespace) -> &'static [(u8, &'static str)] {
    match ns {
        Namespace::SyncMl => SYNCML,
        Namespace::MetInf => METINF,
        Namespace::DevInf => DEVINF,
    }
}

pub(crate) fn name(ns: Namespace, token: u8, version: Version) -> Option<&'static str> {
    if ns == Namespace::DevInf && token == DEVINF_SIZE && version < Version::V1_2 {
        return Some("Size");
    }
    table(ns).iter().find(|(t, _)| *t == token).map(|(_, n)| *n)
}

pub(crate) fn token(ns: Namespace, name: &str) -> Option<u8> {
    if ns == Namespace::DevInf && name == "Size" {
        return Some(DEVINF_SIZE);
    }
    table(ns).iter().find(|(_, n)| *n == name).map(|(t, _)| *t)
}

/// The known name as a `'static` string, so trees built from XML borrow the
/// table instead of allocating a name per element; `None` also tells the XML
/// reader that `name` is not a tag of `ns` when it places elements that
/// arrive without (or with a wrong) namespace declaration.
pub(crate) fn static_name(ns: Namespace, name: &str) -> Option<&'static str> {
    if ns == Namespace::DevInf && name == "Size" {
        return Some("Size");
    }
    table(ns).iter().find(|(_, n)| *n == name).map(|(_, n)| *n)
}

pub(crate) const SWITCH_PAGE: u8 = 0x00;
pub(crate) const END: u8 = 0x01;
pub(crate) const ENTITY: u8 = 0x02;
pub(crate) const STR_I: u8 = 0x03;
pub(crate) const STR_T: u8 = 0x83;
pub(crate) const OPAQUE: u8 = 0xC3;

pub(crate) const PAGE_SYNCML: u8 = 0;
pub(crate) const PAGE_METINF: u8 = 1;

pub(crate) const CHARSET_UTF8: u32 = 106;

/// WBXML public identifiers of the SyncML and DevInf DTDs.
pub(crate) fn public_id(ns: Namespace, version: Version) -> u32 {
    match (ns, version) {
        (Namespace::DevInf, Version::V1_0) => 0x0FD2,
        (Namespace::DevInf, Version::V1_1) => 0x0FD4,
        (Namespace::DevInf, Version::V1_2) => 0x1203,
        (_, Version::V1_0) => 0x0FD1,
        (_, Version::V1_1) => 0x0FD3,
        (_, Version::V1_2) => 0x1201,
    }
}

pub(crate) fn from_public_id(id: u32) -> Option<(Namespace, Version)> {
    Some(match id {
        0x0FD1 => (Namespace::SyncMl, Version::V1_0),
        0x0FD3 => (Namespace::SyncMl, Version::V1_1),
        0x1201 => (Namespace::SyncMl, Version::V1_2),
        0x0FD2 => (Namespace::DevInf, Version::V1_0),
        0x0FD4 => (Namespace::DevInf, Version::V1_1),
        0x1203 => (Namespace::DevInf, Version::V1_2),
        _ => return None,
    })
}

/// Documents that carry their public id as a string-table FPI (public id 0).
pub(crate) fn from_fpi(fpi: &[u8]) -> Option<(Namespace, Version)> {
    let fpi = std::str::from_utf8(fpi).ok()?;
    let rest = fpi.strip_prefix("-//SYNCML//DTD ")?;
    let (dtd, rest) = rest.split_once(' ')?;
    let version = Version::parse(rest.strip_suffix("//EN")?)?;
    let ns = match dtd.to_ascii_lowercase().as_str() {
        "syncml" => Namespace::SyncMl,
        "devinf" => Namespace::DevInf,
        _ => return None,
    };
    Some((ns, version))
}
