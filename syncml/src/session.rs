//! One HTTP request of a SyncML session: find the session, authenticate,
//! answer every command with a Status, run the sync steps, and store the
//! state for whichever instance gets the next message.

use crate::auth::{self, Outcome, Presented, AUTH_MD5};
use crate::codec::{self, CodecError, Encoding};
use crate::devinf::{DevInf, ServerDevInf};
use crate::message::{
    Chal, Command, ItemData, Location, Message, Meta, PutGet, Status, SyncBody, SyncHdr,
};
use crate::store::{Phase, SessionState, SessionUser, SESSION_TTL_MINUTES};
use crate::sync;
use crate::tree::Version;
use onebook_domain::accounts::Viewer;
use onebook_domain::syncml_state::StoredSyncSession;
use onebook_domain::{Domain, DomainError};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Datastore URIs clients may use for the contacts store (compared without
/// a leading `./` and case-insensitively). Phones are provisioned with all
/// sorts of names: `contacts` (Synthesis, SyncEvolution's default template),
/// `card` (Funambol clients), `addressbook` (libsynthesis server, Nokia).
pub const CONTACTS_URIS: &[&str] = &["contacts", "card", "addressbook"];

/// The storage key of the contacts store; all aliases share it, so a device
/// keeps its anchors and maps when its URI setting changes.
pub const CONTACTS_KEY: &str = "contacts";

pub fn datastore_key(uri: &str) -> Option<&'static str> {
    let name = uri.trim().trim_start_matches("./").trim_end_matches('/');
    CONTACTS_URIS
        .iter()
        .any(|u| u.eq_ignore_ascii_case(name))
        .then_some(CONTACTS_KEY)
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("session state: {0}")]
    State(#[from] serde_json::Error),
}

pub struct Reply {
    pub encoding: Encoding,
    pub body: Vec<u8>,
}

pub struct Engine {
    pub domain: Arc<Domain>,
    /// What we announce as MaxMsgSize/MaxObjSize: the HTTP body limit.
    pub max_body_bytes: usize,
}

/// The reply being assembled for one client message.
pub(crate) struct Turn<'a> {
    pub domain: &'a Domain,
    pub viewer: Viewer,
    pub state: &'a mut SessionState,
    pub session_id: String,
    pub dev_id: String,
    pub encoding: Encoding,
    pub version: Version,
    /// The client's MsgID, for MsgRef.
    pub msg_ref: String,
    pub out: Vec<Command>,
    next_cmd_id: u32,
    max_body_bytes: usize,
    /// The reply's header, for size estimates.
    header: SyncHdr,
}

impl Turn<'_> {
    pub fn next_id(&mut self) -> String {
        self.next_cmd_id += 1;
        self.next_cmd_id.to_string()
    }

    /// Gives back the last id from [`Turn::next_id`] (a command that did
    /// not make it into the message), keeping CmdIDs contiguous.
    pub fn unassign_id(&mut self) {
        self.next_cmd_id -= 1;
    }

    /// Encoded size of the reply so far, plus `extra`, with Final.
    pub fn reply_len(&self, extra: Option<&crate::message::Sync>) -> Result<usize, CodecError> {
        let mut commands = self.out.clone();
        commands.extend(extra.cloned().map(Command::Sync));
        self.bare_len(&commands)
    }

    /// Encoded size of a reply holding just `commands`.
    pub fn bare_len(&self, commands: &[Command]) -> Result<usize, CodecError> {
        codec::encoded_len(
            self.encoding,
            &Message {
                header: self.header.clone(),
                body: SyncBody {
                    commands: commands.to_vec(),
                    final_flag: true,
                },
            },
        )
    }

    pub fn status(
        &mut self,
        cmd_ref: &str,
        cmd: &str,
        target_ref: Option<&str>,
        source_ref: Option<&str>,
        code: u16,
    ) -> Status {
        Status {
            cmd_id: self.next_id(),
            msg_ref: Some(self.msg_ref.clone()),
            cmd_ref: cmd_ref.to_owned(),
            cmd: cmd.to_owned(),
            target_refs: target_ref.map(str::to_owned).into_iter().collect(),
            source_refs: source_ref.map(str::to_owned).into_iter().collect(),
            code,
            ..Status::default()
        }
    }

    pub fn push_status(
        &mut self,
        cmd_ref: &str,
        cmd: &str,
        target_ref: Option<&str>,
        source_ref: Option<&str>,
        code: u16,
    ) {
        let s = self.status(cmd_ref, cmd, target_ref, source_ref, code);
        self.out.push(Command::Status(s));
    }

    /// Our MaxObjSize: a whole object must fit in one request body.
    pub fn max_obj_size(&self) -> u64 {
        self.max_body_bytes as u64
    }

    pub fn source(&self) -> String {
        format!("syncml:{}", self.dev_id)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Our RespURI: the URL the client used, with our session id as the query
/// (any earlier query replaced), so the host and path the client knows —
/// through the edge or directly — keep working.
fn resp_uri(target: &str, session_id: &str) -> String {
    let base = target.split('?').next().unwrap_or(target);
    format!("{base}?sessionid={session_id}")
}

fn reply_header(request: &SyncHdr, msg_id: u32, resp: Option<String>, max: u64) -> SyncHdr {
    SyncHdr {
        version: request.version,
        ver_proto: request.version.proto().to_owned(),
        session_id: request.session_id.clone(),
        msg_id: msg_id.to_string(),
        target: request.source.clone(),
        source: Location::new(request.target.loc_uri.clone()),
        resp_uri: resp,
        no_resp: false,
        cred: None,
        meta: Some(Meta {
            max_msg_size: Some(max),
            max_obj_size: Some(max),
            ..Meta::default()
        }),
    }
}

fn hdr_status(request: &Message, code: u16, chal: Option<Chal>) -> Status {
    Status {
        cmd_id: "1".to_owned(),
        msg_ref: Some(request.header.msg_id.clone()),
        cmd_ref: "0".to_owned(),
        cmd: "SyncHdr".to_owned(),
        target_refs: vec![request.header.target.loc_uri.clone()],
        source_refs: vec![request.header.source.loc_uri.clone()],
        chal,
        code,
        ..Status::default()
    }
}

impl Engine {
    pub async fn handle(
        &self,
        content_type: &str,
        session_param: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, SessionError> {
        let (encoding, request) = codec::decode(content_type, body)?;
        let dev_id = request.header.source.loc_uri.trim().to_owned();
        let stored = match session_param {
            Some(id) => self.domain.syncml_session(id).await?,
            None if request.header.msg_id.trim() != "1" => {
                self.domain
                    .syncml_session_by_device(&dev_id, request.header.session_id.trim())
                    .await?
            }
            None => None,
        }
        // A session id is no capability: it must come from the same device.
        .filter(|s| s.dev_id == dev_id);
        let request_hash = sha256_hex(body);
        if let Some(s) = &stored {
            if s.last_request_sha256.as_deref() == Some(&request_hash) {
                if let Some(previous) = &s.last_response {
                    // A resend after a lost reply: the same answer again,
                    // without applying anything twice.
                    return Ok(Reply {
                        encoding,
                        body: previous.clone(),
                    });
                }
            }
        }
        let (session_id, mut state) = match &stored {
            Some(s) => (
                s.id.clone(),
                serde_json::from_value::<SessionState>(s.state.clone())?,
            ),
            None => (
                uuid::Uuid::new_v4().simple().to_string(),
                SessionState::default(),
            ),
        };

        let (viewer, hdr_code, chal) = match state.user.as_ref() {
            Some(user) => (user.viewer(), 200, None),
            None => {
                let presented = Presented::from_cred(
                    request.header.cred.as_ref(),
                    request.header.source.loc_name.as_deref(),
                );
                let nonce = self.domain.syncml_nonce(&dev_id).await?.unwrap_or_default();
                let next_nonce = auth::new_nonce();
                self.domain.set_syncml_nonce(&dev_id, &next_nonce).await?;
                match auth::check(&self.domain, &presented, &nonce).await? {
                    Outcome::Authenticated(viewer) => {
                        state.user = Some(SessionUser::from_viewer(&viewer));
                        (viewer, 212, Some(auth::chal(AUTH_MD5, Some(next_nonce))))
                    }
                    Outcome::Rejected { code, challenge } => {
                        tracing::info!(dev_id = %dev_id, user = ?presented.user(), code, "SyncML authentication failed");
                        let nonce = (challenge == AUTH_MD5).then_some(next_nonce);
                        return self.rejected(
                            encoding,
                            &request,
                            code,
                            auth::chal(challenge, nonce),
                        );
                    }
                }
            }
        };

        state.server_msg_id += 1;
        if let Some(m) = request.header.meta.as_ref().and_then(|m| m.max_msg_size) {
            state.client_max_msg_size = Some(m);
        }
        // Where this message finds each store decides what happens after
        // its commands: continue our split package, or commit.
        let sending: Vec<usize> = phases(&state, Phase::ServerSending);
        let committable: Vec<usize> = phases(&state, Phase::ServerSyncSent);
        let max = self.max_body_bytes as u64;
        let header = reply_header(
            &request.header,
            state.server_msg_id,
            Some(resp_uri(&request.header.target.loc_uri, &session_id)),
            max,
        );
        let mut turn = Turn {
            domain: &self.domain,
            viewer,
            state: &mut state,
            session_id: session_id.clone(),
            dev_id: dev_id.clone(),
            encoding,
            version: request.version(),
            msg_ref: request.header.msg_id.clone(),
            out: vec![Command::Status(hdr_status(&request, hdr_code, chal))],
            next_cmd_id: 1,
            max_body_bytes: self.max_body_bytes,
            header: header.clone(),
        };
        for command in &request.body.commands {
            turn.command(command, &request.header.target.loc_uri)
                .await?;
        }
        for &i in &sending {
            sync::emit(&mut turn, i).await?;
        }
        if request.body.final_flag {
            turn.end_of_package(&committable).await?;
        }
        let still_sending = !phases(turn.state, Phase::ServerSending).is_empty();
        let reply = Message {
            header,
            body: SyncBody {
                commands: std::mem::take(&mut turn.out),
                // Final ends a package: ours when the last part of a split
                // Sync went out, else it answers the client's final
                // message. Never on a reply to a non-final message in the
                // middle of the client's package (the client would take our
                // Sync as out of phase).
                final_flag: !still_sending && (request.body.final_flag || !sending.is_empty()),
            },
        };
        let bytes = codec::encode(encoding, &reply)?;
        self.domain
            .save_syncml_session(
                &StoredSyncSession {
                    id: session_id,
                    dev_id,
                    client_session_id: request.header.session_id.trim().to_owned(),
                    state: serde_json::to_value(&state)?,
                    last_request_sha256: Some(request_hash),
                    last_response: Some(bytes.clone()),
                },
                chrono::Duration::minutes(SESSION_TTL_MINUTES),
            )
            .await?;
        Ok(Reply {
            encoding,
            body: bytes,
        })
    }

    /// 401/407: the same code for the header and every command, a
    /// challenge, Final, and no RespURI (the client retries from scratch).
    fn rejected(
        &self,
        encoding: Encoding,
        request: &Message,
        code: u16,
        chal: Chal,
    ) -> Result<Reply, SessionError> {
        let mut commands = vec![Command::Status(hdr_status(request, code, Some(chal)))];
        let mut next = 1;
        for c in &request.body.commands {
            if c.no_resp() {
                continue;
            }
            next += 1;
            commands.push(Command::Status(Status {
                cmd_id: next.to_string(),
                msg_ref: Some(request.header.msg_id.clone()),
                cmd_ref: c.cmd_id().to_owned(),
                cmd: c.name().to_owned(),
                code,
                ..Status::default()
            }));
        }
        let reply = Message {
            header: reply_header(&request.header, 1, None, self.max_body_bytes as u64),
            body: SyncBody {
                commands,
                final_flag: true,
            },
        };
        Ok(Reply {
            encoding,
            body: codec::encode(encoding, &reply)?,
        })
    }
}

impl Turn<'_> {
    async fn command(&mut self, command: &Command, server_uri: &str) -> Result<(), SessionError> {
        let id = command.cmd_id().to_owned();
        match command {
            Command::Status(status) => sync::client_status(self, status),
            Command::Results(_) => {}
            Command::Put(put) => {
                let code = self.put(put).await?;
                if !put.no_resp {
                    let uri = put.items.first().and_then(|i| i.source.as_ref());
                    let uri = uri.map(|l| l.loc_uri.clone());
                    self.push_status(&id, "Put", None, uri.as_deref(), code);
                }
            }
            Command::Get(get) => self.get(get, server_uri),
            Command::Alert(alert) => sync::alert(self, alert).await?,
            Command::Sync(s) => sync::sync(self, s).await?,
            Command::Map(map) => sync::map(self, map).await?,
            // Item commands only make sense inside a Sync.
            Command::Add(_) | Command::Replace(_) | Command::Delete(_) => {
                if !command.no_resp() {
                    self.push_status(&id, command.name(), None, None, 403);
                }
            }
            Command::Copy(_) | Command::Move(_) | Command::Other(_) => {
                if !command.no_resp() {
                    self.push_status(&id, command.name(), None, None, 406);
                }
            }
        }
        Ok(())
    }

    /// The client's DevInf: remembered per device, for the vCard version we
    /// send (Rx-Pref).
    async fn put(&mut self, put: &PutGet) -> Result<u16, SessionError> {
        let Some(devinf) = put.items.iter().find_map(|i| match &i.data {
            Some(ItemData::DevInf(d)) => Some(d),
            _ => None,
        }) else {
            return Ok(406);
        };
        self.state.client_prefers_21 = Some(prefers_21(devinf));
        self.state.client_max_guid_size = max_guid_size(devinf);
        self.state.client_large_objects = devinf.support_large_objs;
        self.domain
            .set_syncml_devinf(&self.viewer, &self.dev_id, &devinf.to_xml())
            .await?;
        Ok(200)
    }

    fn get(&mut self, get: &PutGet, server_uri: &str) {
        let id = get.cmd_id.clone();
        let target = get
            .items
            .first()
            .and_then(|i| i.target.as_ref())
            .map(|l| l.loc_uri.clone())
            .unwrap_or_default();
        let wanted = ["./devinf10", "./devinf11", "./devinf12"]
            .iter()
            .any(|u| u.eq_ignore_ascii_case(target.trim()));
        if !wanted {
            if !get.no_resp {
                self.push_status(&id, "Get", Some(&target), None, 404);
            }
            return;
        }
        self.push_status(&id, "Get", Some(&target), None, 200);
        let server = CONTACTS_URIS.iter().fold(
            ServerDevInf::new(server_uri.split('?').next().unwrap_or(server_uri)),
            |d, uri| d.contacts(*uri),
        );
        let results_id = self.next_id();
        let results =
            server
                .build(self.version)
                .results(results_id, self.msg_ref.clone(), id, self.encoding);
        self.out.push(Command::Results(results));
    }

    /// The client's final message of a package: answer with our Sync where
    /// we received theirs, and commit the stores whose sync just completed.
    async fn end_of_package(&mut self, committable: &[usize]) -> Result<(), SessionError> {
        for &i in committable {
            if self.state.stores[i].phase == Phase::ServerSyncSent {
                sync::commit(self, i).await?;
            }
        }
        for i in 0..self.state.stores.len() {
            if self.state.stores[i].phase == Phase::ClientSync {
                sync::server_sync(self, i).await?;
            }
        }
        Ok(())
    }

    /// Whether to send vCard 2.1: from this session's DevInf, else the one
    /// stored for the device, else no (3.0 is our Rx-Pref/Tx-Pref).
    pub async fn client_prefers_21(&mut self) -> Result<bool, SessionError> {
        if let Some(p) = self.state.client_prefers_21 {
            return Ok(p);
        }
        let stored = self
            .domain
            .syncml_devinf(&self.viewer, &self.dev_id)
            .await?;
        let devinf = stored.and_then(|bytes| DevInf::from_xml(&bytes).ok());
        let p = devinf.as_ref().is_some_and(prefers_21);
        self.state.client_prefers_21 = Some(p);
        self.state.client_max_guid_size = devinf.as_ref().and_then(max_guid_size);
        // Unknown (a client whose DevInf went with a message we rejected
        // with 401 does not send it again): chunking is the only chance an
        // oversized card has, a whole one would overflow the client's buffer.
        self.state.client_large_objects = devinf.as_ref().is_none_or(|d| d.support_large_objs);
        Ok(p)
    }

    /// The longest GUID the client can store (DevInf MaxGUIDSize), if it
    /// said.
    pub async fn client_max_guid_size(&mut self) -> Result<Option<u32>, SessionError> {
        self.client_prefers_21().await?;
        Ok(self.state.client_max_guid_size)
    }
}

/// The smallest MaxGUIDSize over the client's datastores (0 means unknown).
fn max_guid_size(devinf: &DevInf) -> Option<u32> {
    devinf
        .data_stores
        .iter()
        .filter_map(|d| d.max_guid_size)
        .filter(|&n| n > 0)
        .min()
}

fn phases(state: &SessionState, phase: Phase) -> Vec<usize> {
    (0..state.stores.len())
        .filter(|&i| state.stores[i].phase == phase)
        .collect()
}

/// A client prefers 2.1 when the first vCard type its stores prefer to
/// receive is `text/x-vcard`.
fn prefers_21(devinf: &DevInf) -> bool {
    devinf
        .data_stores
        .iter()
        .flat_map(|d| d.rx_pref.iter())
        .find(|c| c.ct_type.to_ascii_lowercase().contains("vcard"))
        .is_some_and(|c| c.ct_type.eq_ignore_ascii_case("text/x-vcard"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datastore_aliases() {
        for uri in [
            "contacts",
            "./contacts",
            "Card",
            "addressbook",
            "./addressbook/",
        ] {
            assert_eq!(datastore_key(uri), Some(CONTACTS_KEY), "{uri}");
        }
        for uri in ["calendar", "./tasks", "", "contactsx"] {
            assert_eq!(datastore_key(uri), None, "{uri}");
        }
    }

    #[test]
    fn resp_uri_replaces_the_query() {
        assert_eq!(
            resp_uri("https://h/sync", "abc"),
            "https://h/sync?sessionid=abc"
        );
        assert_eq!(
            resp_uri("https://h/sync?sessionid=old", "abc"),
            "https://h/sync?sessionid=abc"
        );
    }
}
