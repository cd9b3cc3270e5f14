//! Session state as it is kept between the HTTP requests of one SyncML
//! session: serialised into the `syncml_sessions` row on the directory shard,
//! so the next message may land on any sync-server instance.

use onebook_domain::accounts::Viewer;
use onebook_domain::shard::ShardId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How long a session may sit idle; phones on slow links take minutes
/// between messages.
pub const SESSION_TTL_MINUTES: i64 = 15;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionState {
    pub user: Option<SessionUser>,
    /// MsgID of our last reply; replies count from 1 per session.
    pub server_msg_id: u32,
    /// Whether the client sent DevInf in this session and prefers vCard 2.1.
    pub client_prefers_21: Option<bool>,
    /// Whether the client takes large objects: its DevInf's SupportLargeObjs,
    /// or true without a DevInf; loaded together with `client_prefers_21`.
    #[serde(default)]
    pub client_large_objects: bool,
    /// The client's MaxMsgSize (SyncHdr Meta): our replies stay below it.
    pub client_max_msg_size: Option<u64>,
    /// The smallest MaxGUIDSize of the client's datastores (DevInf); loaded
    /// together with `client_prefers_21`.
    #[serde(default)]
    pub client_max_guid_size: Option<u32>,
    pub stores: Vec<StoreState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionUser {
    pub id: Uuid,
    pub email: String,
    pub shard: usize,
}

impl SessionUser {
    pub fn from_viewer(viewer: &Viewer) -> SessionUser {
        SessionUser {
            id: viewer.id,
            email: viewer.email.clone(),
            shard: viewer.shard.0,
        }
    }

    /// A viewer for writes and our own tables. `change_seq` is a cache-key
    /// input: anything that reads contacts must use
    /// `Domain::refresh_viewer` first, or it may be served a stale entry.
    pub fn viewer(&self) -> Viewer {
        Viewer {
            id: self.id,
            email: self.email.clone(),
            shard: ShardId(self.shard),
            change_seq: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Alert answered; waiting for the client's Sync.
    Alerted,
    /// Client's Sync (part of it) received; our Sync goes out with the
    /// reply to its final message.
    ClientSync,
    /// Our Sync did not fit into one message: the rest of the outbox goes
    /// with the replies to the client's next (non-final) messages.
    ServerSending,
    /// Our Sync sent; the next final client message (statuses, Map) ends it.
    ServerSyncSent,
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreState {
    /// The datastore as the client addressed it (`contacts`, `card`, …).
    pub uri: String,
    /// The client's own datastore URI (`./addressbook`).
    pub client_uri: String,
    /// Our storage key for the datastore, shared by all aliases.
    pub key: String,
    /// The sync type: 200 two-way, 201 slow, 202 one-way from client, 203
    /// refresh from client, 204 one-way from server, 205 refresh from server.
    pub mode: u16,
    pub client_next: String,
    pub server_next: String,
    /// Our anchor of the device's last completed sync: when it started.
    #[serde(default)]
    pub last_server_next: Option<String>,
    /// Change sequence the device had seen at its last completed sync.
    pub since_seq: i64,
    /// Change sequence covered by the Sync we sent.
    pub sent_seq: i64,
    pub phase: Phase,
    /// Contacts written from client items in this session: never echoed back.
    pub touched: Vec<Uuid>,
    /// Client LUIDs seen in this (slow) sync.
    pub seen_luids: Vec<String>,
    /// `MsgID/CmdID` of our Alert, to recognise the client's Status for it.
    pub alert_ref: String,
    /// Our changes not sent yet (multi-message package).
    #[serde(default)]
    pub outbox: Vec<Pending>,
    /// Whether NumberOfChanges went out with the first message of our Sync.
    #[serde(default)]
    pub announced: bool,
    /// A client item arriving in chunks (MoreData) over several messages.
    #[serde(default)]
    pub chunk: Option<Chunk>,
}

/// The part of a large object received so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chunk {
    /// Add or Replace.
    pub kind: String,
    pub luid: String,
    pub guid: String,
    pub content_type: Option<String>,
    /// Meta/Size of the first chunk: the whole object in bytes, CRs counted.
    pub size: Option<u64>,
    /// The bytes so far, base64 (the state is JSON).
    pub data: String,
}

/// One change for the client, by reference: the card is read when the
/// message that carries it is built.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub op: PendingOp,
    pub contact_id: Uuid,
    /// The client's LUID, for Replace and Delete.
    pub luid: Option<String>,
    /// A card too large for one message, as it goes out in chunks
    /// (base64): fixed when the first chunk is sent, so later chunks match
    /// it even if the contact changes meanwhile.
    #[serde(default)]
    pub chunked: Option<String>,
    /// Bytes of `chunked` already sent.
    #[serde(default)]
    pub chunk_sent: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingOp {
    Add,
    Replace,
    Delete,
}
