//! Typed SyncML messages on top of the element tree.
//!
//! Parsing is lenient the way real clients need (unknown elements are
//! skipped, optional elements may be missing, values are trimmed) but strict
//! where the session engine would otherwise guess: a missing CmdID or a
//! non-numeric status code is an error naming the element path, e.g.
//! `SyncML/SyncBody/Alert[2]/Item/Meta/Anchor`. Building writes elements in
//! DTD order, which is what libsynthesis-based clients insist on (e.g. Status:
//! Data before Item).

mod build;
pub(crate) mod parse;
pub(crate) mod path;

pub use path::MessageError;

use crate::devinf::DevInf;
use crate::tree::{Element, Version};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: SyncHdr,
    pub body: SyncBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncHdr {
    /// From VerDTD; decides namespaces, public ids and `./devinf1x`.
    pub version: Version,
    pub ver_proto: String,
    pub session_id: String,
    pub msg_id: String,
    pub target: Location,
    pub source: Location,
    pub resp_uri: Option<String>,
    pub no_resp: bool,
    pub cred: Option<Cred>,
    pub meta: Option<Meta>,
}

/// `Target`/`Source`: a URI plus an optional display name (SyncEvolution puts
/// the user name into the client's `Source/LocName`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub loc_uri: String,
    pub loc_name: Option<String>,
}

impl Location {
    pub fn new(uri: impl Into<String>) -> Location {
        Location {
            loc_uri: uri.into(),
            loc_name: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cred {
    pub meta: Option<Meta>,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chal {
    pub meta: Meta,
}

/// MetInf content of a `Meta` element; every field is optional and which ones
/// matter depends on where the Meta sits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    pub field_level: bool,
    pub format: Option<String>,
    pub content_type: Option<String>,
    pub mark: Option<String>,
    /// Total size of a chunked object, in raw bytes including CRs.
    pub size: Option<u64>,
    pub anchor: Option<Anchor>,
    pub version: Option<String>,
    pub next_nonce: Option<String>,
    pub max_msg_size: Option<u64>,
    pub max_obj_size: Option<u64>,
    /// Vendor extensions (libsynthesis `datapos=` on chunks); kept for logs.
    pub emi: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Anchor {
    pub last: Option<String>,
    pub next: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncBody {
    pub commands: Vec<Command>,
    pub final_flag: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status(Status),
    Alert(Alert),
    Put(PutGet),
    Get(PutGet),
    Results(Results),
    Sync(Sync),
    Map(Map),
    Add(ItemCommand),
    Replace(ItemCommand),
    Delete(ItemCommand),
    Copy(ItemCommand),
    Move(ItemCommand),
    /// Atomic, Sequence, Exec, Search, …: kept whole so the session can
    /// answer 406 and log what it got.
    Other(OtherCommand),
}

impl Command {
    /// Element name, as used in `Status/Cmd`.
    pub fn name(&self) -> &str {
        match self {
            Command::Status(_) => "Status",
            Command::Alert(_) => "Alert",
            Command::Put(_) => "Put",
            Command::Get(_) => "Get",
            Command::Results(_) => "Results",
            Command::Sync(_) => "Sync",
            Command::Map(_) => "Map",
            Command::Add(_) => "Add",
            Command::Replace(_) => "Replace",
            Command::Delete(_) => "Delete",
            Command::Copy(_) => "Copy",
            Command::Move(_) => "Move",
            Command::Other(o) => &o.element.name,
        }
    }

    pub fn cmd_id(&self) -> &str {
        match self {
            Command::Status(c) => &c.cmd_id,
            Command::Alert(c) => &c.cmd_id,
            Command::Put(c) | Command::Get(c) => &c.cmd_id,
            Command::Results(c) => &c.cmd_id,
            Command::Sync(c) => &c.cmd_id,
            Command::Map(c) => &c.cmd_id,
            Command::Add(c)
            | Command::Replace(c)
            | Command::Delete(c)
            | Command::Copy(c)
            | Command::Move(c) => &c.cmd_id,
            Command::Other(c) => c.cmd_id.as_deref().unwrap_or(""),
        }
    }

    /// Whether the sender asked for no Status; Status and Results never get one.
    pub fn no_resp(&self) -> bool {
        match self {
            Command::Status(_) | Command::Results(_) => true,
            Command::Alert(c) => c.no_resp,
            Command::Put(c) | Command::Get(c) => c.no_resp,
            Command::Sync(c) => c.no_resp,
            Command::Map(_) => false,
            Command::Add(c)
            | Command::Replace(c)
            | Command::Delete(c)
            | Command::Copy(c)
            | Command::Move(c) => c.no_resp,
            Command::Other(c) => c.no_resp,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub cmd_id: String,
    pub msg_ref: Option<String>,
    pub cmd_ref: String,
    pub cmd: String,
    pub target_refs: Vec<String>,
    pub source_refs: Vec<String>,
    pub cred: Option<Cred>,
    pub chal: Option<Chal>,
    pub code: u16,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Alert {
    pub cmd_id: String,
    pub no_resp: bool,
    pub cred: Option<Cred>,
    /// 200–210 sync types, 222 next message, 223 missing end of data, …
    pub code: Option<u16>,
    pub correlator: Option<String>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutGet {
    pub cmd_id: String,
    pub no_resp: bool,
    pub lang: Option<String>,
    pub cred: Option<Cred>,
    pub meta: Option<Meta>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Results {
    pub cmd_id: String,
    pub msg_ref: Option<String>,
    pub cmd_ref: String,
    pub meta: Option<Meta>,
    pub target_refs: Vec<String>,
    pub source_refs: Vec<String>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sync {
    pub cmd_id: String,
    pub no_resp: bool,
    pub cred: Option<Cred>,
    pub target: Option<Location>,
    pub source: Option<Location>,
    pub meta: Option<Meta>,
    pub number_of_changes: Option<u32>,
    pub commands: Vec<Command>,
}

/// Add, Replace, Delete, Copy and Move share one shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ItemCommand {
    pub cmd_id: String,
    pub no_resp: bool,
    /// Delete only.
    pub archive: bool,
    /// Delete only: soft delete, treated like a delete.
    pub sft_del: bool,
    pub cred: Option<Cred>,
    /// SyncEvolution puts the content type here, other clients on the item.
    pub meta: Option<Meta>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Map {
    pub cmd_id: String,
    pub target: Location,
    pub source: Location,
    pub cred: Option<Cred>,
    pub meta: Option<Meta>,
    pub items: Vec<MapItem>,
}

/// Target = server GUID, Source = client LUID.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapItem {
    pub target: Location,
    pub source: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherCommand {
    pub cmd_id: Option<String>,
    pub no_resp: bool,
    pub element: Element<'static>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Item {
    pub target: Option<Location>,
    pub source: Option<Location>,
    pub source_parent: Option<String>,
    pub target_parent: Option<String>,
    pub meta: Option<Meta>,
    pub data: Option<ItemData>,
    /// This is a chunk of a large object and more chunks follow.
    pub more_data: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemData {
    /// Inline text (XML character data, WBXML inline string).
    Text(String),
    /// Payload bytes (XML CDATA, WBXML OPAQUE); vCards arrive like this and
    /// keep their CRLFs and original charset.
    Bytes(Vec<u8>),
    DevInf(Box<DevInf>),
    /// The anchor echo inside a Status for an Alert.
    Anchor(Anchor),
    /// Any other structured content, kept as is.
    Elements(Vec<Element<'static>>),
}

impl ItemData {
    /// The payload bytes of text or byte data.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            ItemData::Text(t) => Some(t.as_bytes()),
            ItemData::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

impl Message {
    pub fn version(&self) -> Version {
        self.header.version
    }

    pub fn from_element(root: &Element<'_>) -> Result<Message, MessageError> {
        parse::message(root)
    }

    /// The tree for this message; payloads are borrowed, not copied.
    pub fn to_element(&self) -> Element<'_> {
        build::message(self)
    }

    pub fn to_document(&self) -> crate::tree::Document<'_> {
        crate::tree::Document {
            version: self.header.version,
            root: self.to_element(),
        }
    }
}
