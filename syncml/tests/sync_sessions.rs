//! SyncML sessions against the running stack (`./dev up`): the client
//! messages SyncEvolution sent to the libsynthesis reference server, replayed
//! through the edge with a fresh test user's credentials (so the header is
//! rebuilt with the message model, not replayed byte for byte), and the
//! cards checked through the web API.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use onebook_syncml::auth::{md5_digest, md5_secret, AUTH_BASIC, AUTH_MD5};
use onebook_syncml::codec::{self, Encoding};
use onebook_syncml::devinf::ContentType;
use onebook_syncml::message::{
    Alert, Anchor, Command, Cred, Item, ItemCommand, ItemData, Location, Map, MapItem, Message,
    Meta, Status, Sync,
};
use onebook_syncml::tree::Version;
use onebook_testkit::{Stack, TestUser};
use serde_json::Value;

/// `TestUser::sign_up`'s password.
const PASSWORD: &str = "test-password-1";

const SAMPLE_NAMES: [&str; 5] = [
    "Dr. Anna Maria Müller",
    "Mr. Bob J. Smith Jr.",
    "José García",
    "李伟",
    "Ольга Петрова",
];

fn load(name: &str) -> (Encoding, Message) {
    let raw = std::fs::read(common::data_dir().join(name)).unwrap();
    let ct = if name.ends_with(".wbxml") {
        codec::CONTENT_TYPE_WBXML
    } else {
        codec::CONTENT_TYPE_XML
    };
    codec::decode(ct, &raw).unwrap()
}

enum Auth<'a> {
    None,
    Basic(&'a str),
    Md5 { password: &'a str, nonce: &'a str },
}

/// One client device talking to one URL; follows our RespURI like
/// SyncEvolution does.
struct Client {
    http: reqwest::Client,
    url: String,
    dev_id: String,
    user: String,
    session_id: u32,
    msg_id: u32,
    encoding: Encoding,
}

struct Answer {
    http_status: u16,
    message: Message,
}

impl Answer {
    fn statuses(&self) -> Vec<&Status> {
        self.message
            .body
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Status(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn status_for(&self, cmd: &str) -> Vec<u16> {
        self.statuses()
            .iter()
            .filter(|s| s.cmd == cmd)
            .map(|s| s.code)
            .collect()
    }

    fn header_status(&self) -> &Status {
        let first = self.statuses()[0];
        assert_eq!(first.cmd, "SyncHdr");
        assert_eq!(first.cmd_ref, "0");
        first
    }

    fn server_alert(&self) -> &Alert {
        self.message
            .body
            .commands
            .iter()
            .find_map(|c| match c {
                Command::Alert(a) => Some(a),
                _ => None,
            })
            .expect("server Alert")
    }

    fn server_sync(&self) -> &Sync {
        self.message
            .body
            .commands
            .iter()
            .find_map(|c| match c {
                Command::Sync(s) => Some(s),
                _ => None,
            })
            .expect("server Sync")
    }

    fn next_nonce(&self) -> Option<String> {
        self.header_status()
            .chal
            .as_ref()
            .and_then(|c| c.meta.next_nonce.clone())
    }

    fn chal_type(&self) -> Option<String> {
        self.header_status()
            .chal
            .as_ref()
            .and_then(|c| c.meta.content_type.clone())
    }
}

impl Client {
    fn new(stack: &Stack, base: &str, user: &str, encoding: Encoding) -> Client {
        Client {
            http: stack.client(),
            url: format!("{base}/sync"),
            dev_id: format!("sc-pim-test-{}", uuid::Uuid::new_v4().simple()),
            user: user.to_owned(),
            session_id: 10,
            msg_id: 0,
            encoding,
        }
    }

    /// Starts a new session at the original URL.
    fn new_session(&mut self, base: &str) {
        self.session_id += 5;
        self.msg_id = 0;
        self.url = format!("{base}/sync");
    }

    async fn send(&mut self, mut message: Message, auth: Auth<'_>) -> Answer {
        self.msg_id += 1;
        let h = &mut message.header;
        h.session_id = self.session_id.to_string();
        h.msg_id = self.msg_id.to_string();
        h.target = Location::new(self.url.clone());
        h.source = Location {
            loc_uri: self.dev_id.clone(),
            loc_name: Some(self.user.clone()),
        };
        h.cred = match auth {
            Auth::None => None,
            Auth::Basic(password) => Some(Cred {
                meta: Some(Meta {
                    content_type: Some(AUTH_BASIC.into()),
                    format: Some("b64".into()),
                    ..Meta::default()
                }),
                data: B64.encode(format!("{}:{password}", self.user)),
            }),
            Auth::Md5 { password, nonce } => Some(Cred {
                meta: Some(Meta {
                    content_type: Some(AUTH_MD5.into()),
                    format: Some("b64".into()),
                    ..Meta::default()
                }),
                data: md5_digest(&md5_secret(&self.user, password), nonce),
            }),
        };
        let body = codec::encode(self.encoding, &message).unwrap();
        self.post(body).await
    }

    async fn post(&mut self, body: Vec<u8>) -> Answer {
        let response = self
            .http
            .post(&self.url)
            .header("content-type", self.encoding.content_type())
            .body(body)
            .send()
            .await
            .unwrap();
        let http_status = response.status().as_u16();
        let ct = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = response.bytes().await.unwrap();
        assert_eq!(
            ct,
            self.encoding.content_type(),
            "reply in the request's encoding: {}",
            String::from_utf8_lossy(&bytes)
        );
        let (enc, message) = codec::decode(&ct, &bytes).unwrap();
        assert_eq!(enc, self.encoding);
        if let Some(resp) = &message.header.resp_uri {
            self.url = resp.clone();
        }
        Answer {
            http_status,
            message,
        }
    }
}

/// The client's three messages of a slow sync, from a captured conversation.
fn slow_sync_messages(conversation: &str, ext: &str) -> Vec<Message> {
    (1..=3)
        .map(|n| load(&format!("conversations/{conversation}/00{n}-req.{ext}")).1)
        .collect()
}

async fn contacts(stack: &Stack, user: &TestUser) -> Vec<Value> {
    let page: Value = user.get_json(stack, "/api/v1/contacts?limit=100").await;
    page["contacts"].as_array().cloned().unwrap_or_default()
}

fn names(contacts: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = contacts
        .iter()
        .map(|c| c["formatted_name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Runs the captured slow sync; returns the client's Next anchor, the
/// server's Next anchor and the last answer.
async fn slow_sync(
    client: &mut Client,
    conversation: &str,
    ext: &str,
    auth: Auth<'_>,
) -> (String, String) {
    let msgs = slow_sync_messages(conversation, ext);
    let a1 = client.send(msgs[0].clone(), auth).await;
    assert_eq!(a1.http_status, 200);
    assert_eq!(a1.header_status().code, 212);
    assert_eq!(a1.chal_type().as_deref(), Some(AUTH_MD5));
    assert!(a1.next_nonce().is_some());
    assert!(a1
        .message
        .header
        .resp_uri
        .as_deref()
        .is_some_and(|u| u.contains("?sessionid=")));
    assert_eq!(a1.status_for("Put"), [200]);
    assert_eq!(a1.status_for("Get"), [200]);
    assert_eq!(a1.status_for("Alert"), [200]);
    assert!(a1
        .message
        .body
        .commands
        .iter()
        .any(|c| matches!(c, Command::Results(_))));
    let server_alert = a1.server_alert();
    assert_eq!(server_alert.code, Some(201));
    let server_next = server_alert.items[0]
        .meta
        .as_ref()
        .and_then(|m| m.anchor.as_ref())
        .map(|a| a.next.clone())
        .unwrap();
    assert!(a1.message.body.final_flag);
    let client_next = match &msgs[0].body.commands[2] {
        Command::Alert(a) => {
            a.items[0]
                .meta
                .as_ref()
                .unwrap()
                .anchor
                .clone()
                .unwrap()
                .next
        }
        other => panic!("{other:?}"),
    };
    // Every command got a Status, CmdIDs count from 1 in document order.
    for (i, c) in a1.message.body.commands.iter().enumerate() {
        assert_eq!(c.cmd_id(), (i + 1).to_string());
    }

    let a2 = client.send(msgs[1].clone(), Auth::None).await;
    assert_eq!(a2.header_status().code, 200);
    assert_eq!(a2.status_for("Sync"), [200]);
    assert_eq!(a2.status_for("Add"), [201; 5]);
    assert!(a2.message.body.final_flag);
    let a3 = client.send(msgs[2].clone(), Auth::None).await;
    assert_eq!(a3.header_status().code, 200);
    assert!(a3.message.body.final_flag);
    (client_next, server_next)
}

#[tokio::test]
async fn slow_sync_xml_lands_the_five_sample_cards() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-slow-xml").await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Xml);
    slow_sync(&mut client, "ref-slow-xml", "xml", Auth::Basic(PASSWORD)).await;
    let all = contacts(stack, &user).await;
    assert_eq!(names(&all), sorted(&SAMPLE_NAMES));
    let anna = all
        .iter()
        .find(|c| c["formatted_name"] == "Dr. Anna Maria Müller")
        .unwrap();
    assert_eq!(anna["family_name"], "Müller");
    assert!(anna["emails"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["value"] == "anna.mueller@example.com"));
    assert!(anna["photo"].is_object(), "{anna}");
}

#[tokio::test]
async fn md5_is_learned_from_one_basic_login_then_used_with_wbxml() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-md5").await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Wbxml);
    let msgs = slow_sync_messages("ref-slow-wbxml", "wbxml");

    // No secret yet: md5 cannot be checked, so the challenge asks for basic.
    let a = client
        .send(
            msgs[0].clone(),
            Auth::Md5 {
                password: PASSWORD,
                nonce: "",
            },
        )
        .await;
    assert_eq!(a.http_status, 200);
    assert_eq!(a.header_status().code, 401);
    assert_eq!(a.chal_type().as_deref(), Some(AUTH_BASIC));
    assert!(a.message.header.resp_uri.is_none());
    assert!(a.statuses()[1..].iter().all(|s| s.code == 401));

    // Wrong basic password: 401 again.
    client.new_session(&stack.edge_https);
    let a = client
        .send(msgs[0].clone(), Auth::Basic("wrong-password"))
        .await;
    assert_eq!(a.header_status().code, 401);

    // Basic works, and the server switches the device to md5.
    client.new_session(&stack.edge_https);
    let a = client.send(msgs[0].clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a.header_status().code, 212);
    assert_eq!(a.chal_type().as_deref(), Some(AUTH_MD5));
    assert!(a.next_nonce().is_some());

    // md5 with a stale nonce fails and hands out a fresh one...
    client.new_session(&stack.edge_https);
    let a = client
        .send(
            msgs[0].clone(),
            Auth::Md5 {
                password: PASSWORD,
                nonce: "c3RhbGU=",
            },
        )
        .await;
    assert_eq!(a.header_status().code, 401);
    assert_eq!(a.chal_type().as_deref(), Some(AUTH_MD5));
    let nonce = a.next_nonce().unwrap();

    // ...with which the whole slow sync runs in WBXML.
    client.new_session(&stack.edge_https);
    slow_sync(
        &mut client,
        "ref-slow-wbxml",
        "wbxml",
        Auth::Md5 {
            password: PASSWORD,
            nonce: &nonce,
        },
    )
    .await;
    assert_eq!(names(&contacts(stack, &user).await), sorted(&SAMPLE_NAMES));
}

/// Two-way after a slow sync: anchors continue, a client Replace and Delete
/// apply, a contact created on the web goes to the client as an Add (the
/// client's own changes do not come back), and the client's Map is kept.
#[tokio::test]
async fn two_way_after_slow_sync_exchanges_changes_and_maps() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-two-way").await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Xml);
    let (client_next, server_next) =
        slow_sync(&mut client, "ref-slow-xml", "xml", Auth::Basic(PASSWORD)).await;

    let grace = user
        .create_contact(
            stack,
            &serde_json::json!({"formatted_name": "Grace Hopper", "emails": [{"value": "grace@navy.example"}]}),
        )
        .await;
    let grace_id = grace["id"].as_str().unwrap().replace('-', "");

    // Session 2: two-way with the anchors of session 1.
    client.new_session(&stack.edge_https);
    let mut m1 = slow_sync_messages("ref-slow-xml", "xml")[0].clone();
    for c in m1.body.commands.iter_mut() {
        if let Command::Alert(a) = c {
            a.code = Some(200);
            a.items[0].meta.as_mut().unwrap().anchor = Some(Anchor {
                last: Some(client_next.clone()),
                next: "20261127T120000Z".into(),
            });
        }
    }
    let a1 = client.send(m1.clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Alert"), [200]);
    let alert = a1.server_alert();
    assert_eq!(alert.code, Some(200));
    let anchor = alert.items[0]
        .meta
        .as_ref()
        .unwrap()
        .anchor
        .clone()
        .unwrap();
    assert_eq!(anchor.last.as_deref(), Some(server_next.as_str()));

    let bob = "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Smith;Bob;;;\r\nFN:Bob Smith\r\nTEL;TYPE=CELL:+1 555 0100\r\nEND:VCARD\r\n";
    let sync = Message {
        header: m1.header.clone(),
        body: onebook_syncml::message::SyncBody {
            commands: vec![Command::Sync(Sync {
                cmd_id: "2".into(),
                target: Some(Location::new("addressbook")),
                source: Some(Location::new("./addressbook")),
                commands: vec![
                    Command::Replace(ItemCommand {
                        cmd_id: "3".into(),
                        meta: Some(Meta {
                            content_type: Some("text/vcard".into()),
                            ..Meta::default()
                        }),
                        items: vec![Item {
                            source: Some(Location::new("bob-21-plain.vcf")),
                            data: Some(ItemData::Bytes(bob.as_bytes().to_vec())),
                            ..Item::default()
                        }],
                        ..ItemCommand::default()
                    }),
                    Command::Delete(ItemCommand {
                        cmd_id: "4".into(),
                        items: vec![Item {
                            source: Some(Location::new("olga-30-minimal.vcf")),
                            ..Item::default()
                        }],
                        ..ItemCommand::default()
                    }),
                    Command::Delete(ItemCommand {
                        cmd_id: "5".into(),
                        items: vec![Item {
                            source: Some(Location::new("never-synced.vcf")),
                            ..Item::default()
                        }],
                        ..ItemCommand::default()
                    }),
                ],
                ..Sync::default()
            })],
            final_flag: true,
        },
    };
    let a2 = client.send(sync, Auth::None).await;
    assert_eq!(a2.status_for("Sync"), [200]);
    assert_eq!(a2.status_for("Replace"), [200]);
    assert_eq!(a2.status_for("Delete"), [200, 211]);
    let server_sync = a2.server_sync();
    assert_eq!(server_sync.number_of_changes, Some(1));
    let Command::Add(add) = &server_sync.commands[0] else {
        panic!("{:?}", server_sync.commands);
    };
    let item = &add.items[0];
    assert_eq!(item.source.as_ref().unwrap().loc_uri, grace_id);
    let data = String::from_utf8(item.data.as_ref().unwrap().as_bytes().unwrap().to_vec()).unwrap();
    assert!(data.contains("FN:Grace Hopper"), "{data}");
    assert!(data.contains("VERSION:3.0"), "{data}");

    let map = Message {
        header: m1.header.clone(),
        body: onebook_syncml::message::SyncBody {
            commands: vec![
                Command::Status(Status {
                    cmd_id: "1".into(),
                    msg_ref: Some("2".into()),
                    cmd_ref: add.cmd_id.clone(),
                    cmd: "Add".into(),
                    source_refs: vec![grace_id.clone()],
                    code: 201,
                    ..Status::default()
                }),
                Command::Map(Map {
                    cmd_id: "2".into(),
                    target: Location::new("addressbook"),
                    source: Location::new("./addressbook"),
                    items: vec![MapItem {
                        target: Location::new(grace_id.clone()),
                        source: Location::new("grace.vcf"),
                    }],
                    ..Map::default()
                }),
            ],
            final_flag: true,
        },
    };
    let a3 = client.send(map, Auth::None).await;
    assert_eq!(a3.status_for("Map"), [200]);
    assert!(a3.message.body.final_flag);

    let all = contacts(stack, &user).await;
    let mut expected = SAMPLE_NAMES.to_vec();
    expected.retain(|n| *n != "Ольга Петрова" && *n != "Mr. Bob J. Smith Jr.");
    expected.extend(["Bob Smith", "Grace Hopper"]);
    assert_eq!(names(&all), sorted(&expected));

    // Session 3: the web edits Grace; the client gets a Replace addressed
    // by its LUID from the Map. A wrong Last anchor would force a slow sync.
    let grace_url = format!(
        "{}/api/v1/contacts/{}",
        stack.edge_https,
        grace["id"].as_str().unwrap()
    );
    let edited = user
        .client
        .put(&grace_url)
        .json(&serde_json::json!({"formatted_name": "Grace B. Hopper"}))
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), 200);
    client.new_session(&stack.edge_https);
    let mut m1b = m1.clone();
    for c in m1b.body.commands.iter_mut() {
        if let Command::Alert(a) = c {
            a.items[0].meta.as_mut().unwrap().anchor = Some(Anchor {
                last: Some("20261127T120000Z".into()),
                next: "20261127T130000Z".into(),
            });
        }
    }
    let a1 = client.send(m1b, Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Alert"), [200]);
    let empty_sync = Message {
        header: m1.header.clone(),
        body: onebook_syncml::message::SyncBody {
            commands: vec![Command::Sync(Sync {
                cmd_id: "2".into(),
                target: Some(Location::new("addressbook")),
                source: Some(Location::new("./addressbook")),
                ..Sync::default()
            })],
            final_flag: true,
        },
    };
    let a2 = client.send(empty_sync, Auth::None).await;
    let sync = a2.server_sync();
    assert_eq!(sync.number_of_changes, Some(1), "{:?}", sync.commands);
    let Command::Replace(replace) = &sync.commands[0] else {
        panic!("{:?}", sync.commands);
    };
    assert_eq!(
        replace.items[0].target.as_ref().unwrap().loc_uri,
        "grace.vcf"
    );

    // Session 4 with anchors that do not match: 508 and a slow sync.
    client.new_session(&stack.edge_https);
    let a1 = client.send(m1, Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Alert"), [508]);
    assert_eq!(a1.server_alert().code, Some(201));
}

/// Message 1 on one instance, message 2 on the other (straight to their
/// ports, bypassing the edge's balancing): the session state is shared.
#[tokio::test]
async fn one_session_spans_both_sync_server_instances() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-instances").await;
    let mut client = Client::new(stack, "http://127.0.0.1:8201", &user.email, Encoding::Wbxml);
    client.http = reqwest::Client::new();
    let msgs = slow_sync_messages("ref-slow-wbxml", "wbxml");
    let a1 = client.send(msgs[0].clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.header_status().code, 212);
    let resp = a1.message.header.resp_uri.clone().unwrap();
    assert!(
        resp.starts_with("http://127.0.0.1:8201/sync?sessionid="),
        "{resp}"
    );
    client.url = resp.replace(":8201", ":8202");
    let a2 = client.send(msgs[1].clone(), Auth::None).await;
    assert_eq!(a2.header_status().code, 200, "authenticated by instance 1");
    assert_eq!(a2.status_for("Add"), [201; 5]);
    client.url = client.url.replace(":8202", ":8201");
    let a3 = client.send(msgs[2].clone(), Auth::None).await;
    assert_eq!(a3.header_status().code, 200);
    assert_eq!(names(&contacts(stack, &user).await), sorted(&SAMPLE_NAMES));
}

/// A client that resends a message (lost reply) gets the same reply and no
/// second copy of its cards.
#[tokio::test]
async fn a_resent_message_is_answered_again_without_applying_it_twice() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-resend").await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Xml);
    let msgs = slow_sync_messages("ref-slow-xml", "xml");
    client.send(msgs[0].clone(), Auth::Basic(PASSWORD)).await;
    let mut m2 = msgs[1].clone();
    client.msg_id += 1;
    m2.header.session_id = client.session_id.to_string();
    m2.header.msg_id = client.msg_id.to_string();
    m2.header.target = Location::new(client.url.clone());
    m2.header.source = Location {
        loc_uri: client.dev_id.clone(),
        loc_name: Some(client.user.clone()),
    };
    let body = codec::encode(Encoding::Xml, &m2).unwrap();
    let first = client.post(body.clone()).await;
    let again = client.post(body).await;
    assert_eq!(first.message, again.message);
    assert_eq!(contacts(stack, &user).await.len(), 5);
}

#[tokio::test]
async fn unknown_datastores_and_unsupported_modes_get_their_statuses() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-404").await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Xml);
    let mut m1 = slow_sync_messages("ref-slow-xml", "xml")[0].clone();
    let Command::Alert(alert) = m1.body.commands[2].clone() else {
        panic!()
    };
    let mut calendar = alert.clone();
    calendar.cmd_id = "4".into();
    calendar.items[0].target = Some(Location::new("calendar"));
    // Server-alerted sync types (206-210) are not ours to receive.
    let mut alerted = alert.clone();
    alerted.cmd_id = "5".into();
    alerted.code = Some(206);
    alerted.items[0].target = Some(Location::new("card"));
    m1.body.commands.insert(3, Command::Alert(calendar));
    m1.body.commands.insert(4, Command::Alert(alerted));
    let a = client.send(m1, Auth::Basic(PASSWORD)).await;
    assert_eq!(a.status_for("Alert"), [200, 404, 406]);
}

#[tokio::test]
async fn syncml_11_wbxml_slow_sync() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-11").await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Wbxml);
    let msgs = slow_sync_messages("ref-syncml11-slow-wbxml", "wbxml");
    assert_eq!(msgs[0].version(), Version::V1_1);
    let a1 = client.send(msgs[0].clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.message.version(), Version::V1_1);
    assert_eq!(a1.header_status().code, 212);
    let results = a1
        .message
        .body
        .commands
        .iter()
        .find_map(|c| match c {
            Command::Results(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        results.items[0].source.as_ref().unwrap().loc_uri,
        "./devinf11"
    );
    let a2 = client.send(msgs[1].clone(), Auth::None).await;
    assert_eq!(a2.status_for("Add"), [201; 5]);
    assert_eq!(a2.server_sync().number_of_changes, None, "1.1 has none");
    let a3 = client.send(msgs[2].clone(), Auth::None).await;
    assert_eq!(a3.header_status().code, 200);
    assert_eq!(names(&contacts(stack, &user).await), sorted(&SAMPLE_NAMES));
}

/// A phone that prefers vCard 2.1 (DevInf Rx-Pref text/x-vcard) gets the
/// server's contacts as 2.1, and its own 2.1 cards (quoted-printable,
/// CHARSET) arrive decoded.
#[tokio::test]
async fn vcard_21_both_ways_for_a_phone_that_prefers_it() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-21").await;
    user.create_contact(
        stack,
        &serde_json::json!({"formatted_name": "Jürgen Web", "phones": [{"value": "+49 30 1234"}]}),
    )
    .await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Wbxml);
    let mut m1 = slow_sync_messages("ref-slow-wbxml", "wbxml")[0].clone();
    for c in m1.body.commands.iter_mut() {
        if let Command::Put(put) = c {
            let Some(ItemData::DevInf(devinf)) = put.items[0].data.as_mut() else {
                panic!("no DevInf in the Put")
            };
            for store in devinf.data_stores.iter_mut() {
                store.rx_pref = vec![ContentType::new("text/x-vcard", "2.1")];
            }
        }
    }
    let a1 = client.send(m1.clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Put"), [200]);
    let jose = std::fs::read(common::data_dir().join("vcards/jose-garcia-21.vcf")).unwrap();
    assert!(String::from_utf8_lossy(&jose).contains("QUOTED-PRINTABLE"));
    let sync = Message {
        header: m1.header.clone(),
        body: onebook_syncml::message::SyncBody {
            commands: vec![Command::Sync(Sync {
                cmd_id: "2".into(),
                target: Some(Location::new("addressbook")),
                source: Some(Location::new("./addressbook")),
                commands: vec![Command::Add(ItemCommand {
                    cmd_id: "3".into(),
                    items: vec![Item {
                        source: Some(Location::new("17")),
                        meta: Some(Meta {
                            content_type: Some("text/x-vcard".into()),
                            ..Meta::default()
                        }),
                        data: Some(ItemData::Bytes(jose)),
                        ..Item::default()
                    }],
                    ..ItemCommand::default()
                })],
                ..Sync::default()
            })],
            final_flag: true,
        },
    };
    let a2 = client.send(sync, Auth::None).await;
    assert_eq!(a2.status_for("Add"), [201]);
    let server_sync = a2.server_sync();
    assert_eq!(server_sync.number_of_changes, Some(1));
    let Command::Add(add) = &server_sync.commands[0] else {
        panic!("{:?}", server_sync.commands)
    };
    assert_eq!(
        add.meta.as_ref().unwrap().content_type.as_deref(),
        Some("text/x-vcard")
    );
    let card = String::from_utf8_lossy(add.items[0].data.as_ref().unwrap().as_bytes().unwrap())
        .into_owned();
    assert!(card.contains("VERSION:2.1"), "{card}");
    assert!(
        card.contains("J=C3=BCrgen") || card.contains("Jürgen"),
        "{card}"
    );
    let mut expected = vec!["José García".to_owned(), "Jürgen Web".to_owned()];
    expected.sort();
    assert_eq!(names(&contacts(stack, &user).await), expected);
}

/// Slow syncs do not duplicate what the server already has: a second
/// device with the same cards, and the first device again after its anchors
/// stopped matching (508), both end up paired with the same 5 contacts.
#[tokio::test]
async fn slow_syncs_pair_existing_contacts_instead_of_duplicating() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-dedup").await;
    let mut first = Client::new(stack, &stack.edge_https, &user.email, Encoding::Xml);
    slow_sync(&mut first, "ref-slow-xml", "xml", Auth::Basic(PASSWORD)).await;

    let mut second = Client::new(stack, &stack.edge_https, &user.email, Encoding::Xml);
    let msgs = slow_sync_messages("ref-slow-xml", "xml");
    let a1 = second.send(msgs[0].clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.server_alert().code, Some(201));
    let a2 = second.send(msgs[1].clone(), Auth::None).await;
    assert_eq!(a2.status_for("Add"), [201; 5]);
    assert_eq!(a2.server_sync().number_of_changes, Some(0));
    second.send(msgs[2].clone(), Auth::None).await;
    assert_eq!(contacts(stack, &user).await.len(), 5);

    // The first device comes back with an anchor we never saw.
    first.new_session(&stack.edge_https);
    let mut m1 = msgs[0].clone();
    for c in m1.body.commands.iter_mut() {
        if let Command::Alert(a) = c {
            a.code = Some(200);
            a.items[0].meta.as_mut().unwrap().anchor = Some(Anchor {
                last: Some("19990101T000000Z".into()),
                next: "20261127T140000Z".into(),
            });
        }
    }
    let a1 = first.send(m1, Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Alert"), [508]);
    assert_eq!(a1.server_alert().code, Some(201));
    // After a 508 SyncEvolution resends everything as Replace.
    let mut m2 = msgs[1].clone();
    for c in m2.body.commands.iter_mut() {
        if let Command::Sync(s) = c {
            for inner in s.commands.iter_mut() {
                if let Command::Add(cmd) = inner {
                    *inner = Command::Replace(cmd.clone());
                }
            }
        }
    }
    let a2 = first.send(m2, Auth::None).await;
    assert_eq!(a2.status_for("Replace"), [200; 5]);
    assert_eq!(a2.server_sync().number_of_changes, Some(0));
    assert_eq!(contacts(stack, &user).await.len(), 5);
}

/// A client with a small MaxMsgSize gets our Sync over several messages
/// (each under its limit, no Final until the last), asks for the rest with
/// Alert 222, maps everything, and the next two-way sync is quiet.
#[tokio::test]
async fn server_package_is_split_under_the_client_max_msg_size() {
    const MAX: u64 = 4000;
    const CONTACTS: usize = 25;
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-split").await;
    for i in 0..CONTACTS {
        let response = user
            .client
            .post(format!("{}/api/v1/contacts", stack.edge_https))
            .json(&serde_json::json!({
                "formatted_name": format!("Contact {i:02} with a longish name"),
                "emails": [{"value": format!("contact{i}@split.example")}],
                "note": "x".repeat(150),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Xml);
    let mut m1 = slow_sync_messages("ref-slow-xml", "xml")[0].clone();
    m1.header.meta.as_mut().unwrap().max_msg_size = Some(MAX);
    let a1 = client.send(m1.clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.server_alert().code, Some(201));
    let client_next = "20261127T081545Z".to_owned();
    let server_next = a1.server_alert().items[0]
        .meta
        .as_ref()
        .unwrap()
        .anchor
        .as_ref()
        .unwrap()
        .next
        .clone();

    let message = |commands: Vec<Command>, final_flag: bool| Message {
        header: m1.header.clone(),
        body: onebook_syncml::message::SyncBody {
            commands,
            final_flag,
        },
    };
    let empty_sync = Command::Sync(Sync {
        cmd_id: "1".into(),
        target: Some(Location::new("addressbook")),
        source: Some(Location::new("./addressbook")),
        ..Sync::default()
    });
    let mut answer = client
        .send(message(vec![empty_sync], true), Auth::None)
        .await;
    let mut guids = Vec::new();
    let mut messages = 0;
    loop {
        messages += 1;
        let size = codec::encode(Encoding::Xml, &answer.message).unwrap().len();
        assert!(size <= MAX as usize, "reply of {size} bytes");
        let sync = answer.server_sync();
        assert_eq!(
            sync.number_of_changes,
            (messages == 1).then_some(CONTACTS as u32),
            "NumberOfChanges only with the first part"
        );
        assert!(!sync.commands.is_empty());
        for c in &sync.commands {
            let Command::Add(add) = c else {
                panic!("{c:?}")
            };
            guids.push(add.items[0].source.as_ref().unwrap().loc_uri.clone());
        }
        if answer.message.body.final_flag {
            break;
        }
        // Statuses for what came, and Alert 222 for the rest.
        let mut commands: Vec<Command> = sync
            .commands
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Command::Status(Status {
                    cmd_id: (i + 1).to_string(),
                    msg_ref: Some(answer.message.header.msg_id.clone()),
                    cmd_ref: c.cmd_id().to_owned(),
                    cmd: "Add".into(),
                    code: 201,
                    ..Status::default()
                })
            })
            .collect();
        commands.push(Command::Alert(Alert {
            cmd_id: (commands.len() + 1).to_string(),
            code: Some(222),
            items: vec![Item {
                target: Some(Location::new(client.url.clone())),
                source: Some(Location::new(client.dev_id.clone())),
                ..Item::default()
            }],
            ..Alert::default()
        }));
        answer = client.send(message(commands, false), Auth::None).await;
        assert_eq!(answer.status_for("Alert"), [200]);
        assert!(messages < CONTACTS, "no progress");
    }
    assert!(messages > 1, "{messages} message(s)");
    let mut unique = guids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), CONTACTS);
    assert_eq!(guids.len(), CONTACTS);

    let map = Command::Map(Map {
        cmd_id: "1".into(),
        target: Location::new("addressbook"),
        source: Location::new("./addressbook"),
        items: guids
            .iter()
            .enumerate()
            .map(|(i, g)| MapItem {
                target: Location::new(g.clone()),
                source: Location::new(format!("{i}.vcf")),
            })
            .collect(),
        ..Map::default()
    });
    let done = client.send(message(vec![map], true), Auth::None).await;
    assert_eq!(done.status_for("Map"), [200]);
    assert!(done.message.body.final_flag);

    // Next session: two-way from the committed anchors, nothing to send.
    client.new_session(&stack.edge_https);
    let mut m1b = m1.clone();
    for c in m1b.body.commands.iter_mut() {
        if let Command::Alert(a) = c {
            a.code = Some(200);
            a.items[0].meta.as_mut().unwrap().anchor = Some(Anchor {
                last: Some(client_next.clone()),
                next: "20261127T150000Z".into(),
            });
        }
    }
    let a1 = client.send(m1b, Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Alert"), [200]);
    let anchor = a1.server_alert().items[0]
        .meta
        .clone()
        .unwrap()
        .anchor
        .unwrap();
    assert_eq!(anchor.last, Some(server_next));
    let empty_sync = Command::Sync(Sync {
        cmd_id: "1".into(),
        target: Some(Location::new("addressbook")),
        source: Some(Location::new("./addressbook")),
        ..Sync::default()
    });
    let a2 = client
        .send(message(vec![empty_sync], true), Auth::None)
        .await;
    assert_eq!(a2.server_sync().number_of_changes, Some(0));
    assert!(a2.message.body.final_flag);
}

/// The client's Sync split over two messages: the reply to the non-final
/// one carries Statuses only (no Sync of ours, no Final).
#[tokio::test]
async fn client_package_over_two_messages() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-client-split").await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Wbxml);
    let msgs = slow_sync_messages("ref-slow-wbxml", "wbxml");
    client.send(msgs[0].clone(), Auth::Basic(PASSWORD)).await;
    let mut first = msgs[1].clone();
    let mut second = msgs[1].clone();
    for c in first.body.commands.iter_mut() {
        if let Command::Sync(s) = c {
            s.commands.truncate(3);
        }
    }
    first.body.final_flag = false;
    for c in second.body.commands.iter_mut() {
        if let Command::Sync(s) = c {
            s.commands.drain(..3);
        }
    }
    let a = client.send(first, Auth::None).await;
    assert_eq!(a.status_for("Add"), [201; 3]);
    assert!(!a.message.body.final_flag);
    assert!(!a
        .message
        .body
        .commands
        .iter()
        .any(|c| matches!(c, Command::Sync(_))));
    // The first chunk of a large object whose last chunk never comes: 213,
    // then Alert 223 at the end of the package, and nothing stored.
    for c in second.body.commands.iter_mut() {
        if let Command::Sync(s) = c {
            let Command::Add(mut chunk) = s.commands[0].clone() else {
                panic!()
            };
            chunk.cmd_id = "99".into();
            chunk.items[0].more_data = true;
            chunk.items[0].source = Some(Location::new("chunked.vcf"));
            s.commands.push(Command::Add(chunk));
        }
    }
    let b = client.send(second, Auth::None).await;
    assert_eq!(b.status_for("Add"), [201, 201, 213]);
    let missing: Vec<&Alert> = b
        .message
        .body
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Alert(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].code, Some(223));
    assert_eq!(
        missing[0].items[0].source.as_ref().unwrap().loc_uri,
        "chunked.vcf"
    );
    assert_eq!(b.server_sync().number_of_changes, Some(0));
    assert!(b.message.body.final_flag);
    assert_eq!(names(&contacts(stack, &user).await), sorted(&SAMPLE_NAMES));
}

#[tokio::test]
async fn malformed_foreign_and_oversized_bodies_are_refused() {
    let stack = Stack::get();
    let http = stack.client();
    let url = format!("{}/sync", stack.edge_https);
    let post = |ct: &'static str, body: Vec<u8>| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(&url)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        post(codec::CONTENT_TYPE_XML, b"<SyncML><SyncHdr>".to_vec()).await,
        400
    );
    assert_eq!(
        post(codec::CONTENT_TYPE_XML, b"<Other/>".to_vec()).await,
        400
    );
    assert_eq!(
        post(
            codec::CONTENT_TYPE_WBXML,
            vec![0x02, 0xa4, 0x01, 0x6a, 0x00, 0x6d, 0x6c]
        )
        .await,
        400
    );
    assert_eq!(post(codec::CONTENT_TYPE_WBXML, vec![0xff; 64]).await, 400);
    assert_eq!(post("text/plain", b"hello".to_vec()).await, 415);
    assert_eq!(
        post(codec::CONTENT_TYPE_XML, vec![b' '; 5 * 1024 * 1024]).await,
        413
    );
    // Still serving afterwards.
    let raw = std::fs::read(common::data_dir().join("syncevolution-init.wbxml")).unwrap();
    assert_eq!(post(codec::CONTENT_TYPE_WBXML, raw).await, 200);
}

/// A client message of a session after `slow_sync`: the captured first
/// message with the given Alert code and anchors.
fn alert_message(code: u16, last: &str, next: &str) -> Message {
    let mut m1 = slow_sync_messages("ref-slow-xml", "xml")[0].clone();
    for c in m1.body.commands.iter_mut() {
        if let Command::Alert(a) = c {
            a.code = Some(code);
            a.items[0].meta.as_mut().unwrap().anchor = Some(Anchor {
                last: Some(last.to_owned()),
                next: next.to_owned(),
            });
        }
    }
    m1
}

fn sync_message(template: &Message, commands: Vec<Command>, final_flag: bool) -> Message {
    Message {
        header: template.header.clone(),
        body: onebook_syncml::message::SyncBody {
            commands: vec![Command::Sync(Sync {
                cmd_id: "1".into(),
                target: Some(Location::new("addressbook")),
                source: Some(Location::new("./addressbook")),
                commands,
                ..Sync::default()
            })],
            final_flag,
        },
    }
}

fn card_command(kind: &str, cmd_id: &str, luid: &str, card: &str) -> Command {
    let cmd = ItemCommand {
        cmd_id: cmd_id.into(),
        meta: Some(Meta {
            content_type: Some("text/vcard".into()),
            ..Meta::default()
        }),
        items: vec![Item {
            source: Some(Location::new(luid)),
            data: Some(ItemData::Bytes(card.as_bytes().to_vec())),
            ..Item::default()
        }],
        ..ItemCommand::default()
    };
    match kind {
        "Add" => Command::Add(cmd),
        _ => Command::Replace(cmd),
    }
}

async fn create_contact(stack: &Stack, user: &TestUser, body: Value) -> Value {
    let created = user
        .client
        .post(format!("{}/api/v1/contacts", stack.edge_https))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    created.json().await.unwrap()
}

fn sync_items(sync: &Sync) -> Vec<(String, String)> {
    sync.commands
        .iter()
        .map(|c| {
            let (Command::Add(cmd) | Command::Replace(cmd) | Command::Delete(cmd)) = c else {
                panic!("{c:?}")
            };
            let data = cmd.items[0]
                .data
                .as_ref()
                .and_then(|d| d.as_bytes())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (c.name().to_owned(), data)
        })
        .collect()
}

/// 202, 204, 203 and 205 after a slow sync, with the anchors carried from
/// session to session: each direction only where the type says so.
#[tokio::test]
async fn one_way_and_refresh_sync_types() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-modes").await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Xml);
    let (mut client_next, _) =
        slow_sync(&mut client, "ref-slow-xml", "xml", Auth::Basic(PASSWORD)).await;
    let mut next_anchor = {
        let mut n = 0;
        move || {
            n += 1;
            format!("20261127T1{n:05}Z")
        }
    };
    create_contact(
        stack,
        &user,
        serde_json::json!({"formatted_name": "Web Only", "emails": [{"value": "web@only.example"}]}),
    )
    .await;

    // 202: the client's changes land, ours stay on the server.
    client.new_session(&stack.edge_https);
    let next = next_anchor();
    let m1 = alert_message(202, &client_next, &next);
    let a1 = client.send(m1.clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Alert"), [200]);
    assert_eq!(a1.server_alert().code, Some(202));
    let olga = "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Petrova;Olga;;;\r\nFN:Olga Petrova-Ivanova\r\nEND:VCARD\r\n";
    let dev = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Device Only\r\nTEL:+1 555 0199\r\nEND:VCARD\r\n";
    let a2 = client
        .send(
            sync_message(
                &m1,
                vec![
                    card_command("Replace", "2", "olga-30-minimal.vcf", olga),
                    card_command("Add", "3", "device-only.vcf", dev),
                ],
                true,
            ),
            Auth::None,
        )
        .await;
    assert_eq!(a2.status_for("Replace"), [200]);
    assert_eq!(a2.status_for("Add"), [201]);
    assert_eq!(a2.server_sync().number_of_changes, Some(0));
    assert!(a2.server_sync().commands.is_empty());
    client
        .send(sync_message(&m1, vec![], true), Auth::None)
        .await;
    client_next = next;
    let all = names(&contacts(stack, &user).await);
    assert!(all.contains(&"Olga Petrova-Ivanova".to_owned()), "{all:?}");
    assert!(all.contains(&"Device Only".to_owned()), "{all:?}");
    assert_eq!(all.len(), 7);

    // 204: what the web did reaches the client; the client may not send.
    client.new_session(&stack.edge_https);
    let next = next_anchor();
    let m1 = alert_message(204, &client_next, &next);
    let a1 = client.send(m1.clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Alert"), [200]);
    assert_eq!(a1.server_alert().code, Some(204));
    let refused = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Refused\r\nEND:VCARD\r\n";
    let a2 = client
        .send(
            sync_message(
                &m1,
                vec![card_command("Add", "2", "refused.vcf", refused)],
                true,
            ),
            Auth::None,
        )
        .await;
    assert_eq!(a2.status_for("Add"), [405]);
    let items = sync_items(a2.server_sync());
    assert!(
        items
            .iter()
            .any(|(op, card)| op == "Add" && card.contains("FN:Web Only")),
        "{items:?}"
    );
    client
        .send(sync_message(&m1, vec![], true), Auth::None)
        .await;
    client_next = next;
    assert!(!names(&contacts(stack, &user).await).contains(&"Refused".to_owned()));

    // 203: the user's contacts become exactly the client's three.
    create_contact(
        stack,
        &user,
        serde_json::json!({"formatted_name": "Web Later"}),
    )
    .await;
    client.new_session(&stack.edge_https);
    let next = next_anchor();
    let m1 = alert_message(203, &client_next, &next);
    let a1 = client.send(m1.clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Alert"), [200]);
    assert_eq!(a1.server_alert().code, Some(203));
    let anna = "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Müller;Anna;;;\r\nFN:Dr. Anna Maria Müller\r\nEMAIL:anna.mueller@example.com\r\nNOTE:from the refresh\r\nEND:VCARD\r\n";
    let a2 = client
        .send(
            sync_message(
                &m1,
                vec![
                    // Paired by content with the server's Anna.
                    card_command("Add", "2", "a-new-luid-for-anna.vcf", anna),
                    card_command("Replace", "3", "olga-30-minimal.vcf", olga),
                    card_command("Replace", "4", "device-only.vcf", dev),
                ],
                true,
            ),
            Auth::None,
        )
        .await;
    assert_eq!(a2.status_for("Add"), [201]);
    assert_eq!(a2.status_for("Replace"), [200, 200]);
    assert_eq!(a2.server_sync().number_of_changes, Some(0));
    client
        .send(sync_message(&m1, vec![], true), Auth::None)
        .await;
    client_next = next;
    let all = contacts(stack, &user).await;
    assert_eq!(
        names(&all),
        sorted(&[
            "Device Only",
            "Dr. Anna Maria Müller",
            "Olga Petrova-Ivanova"
        ])
    );
    let anna_now = all
        .iter()
        .find(|c| c["formatted_name"] == "Dr. Anna Maria Müller")
        .unwrap();
    assert_eq!(anna_now["note"], "from the refresh", "{anna_now}");

    // 205: the client dropped its data and gets all three as Adds; its
    // next two-way sync continues from there.
    client.new_session(&stack.edge_https);
    let next = next_anchor();
    let m1 = alert_message(205, &client_next, &next);
    let a1 = client.send(m1.clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Alert"), [200]);
    assert_eq!(a1.server_alert().code, Some(205));
    let a2 = client
        .send(sync_message(&m1, vec![], true), Auth::None)
        .await;
    let sync = a2.server_sync();
    assert_eq!(sync.number_of_changes, Some(3));
    let items = sync_items(sync);
    assert!(items.iter().all(|(op, _)| op == "Add"), "{items:?}");
    client
        .send(sync_message(&m1, vec![], true), Auth::None)
        .await;
    client_next = next;

    client.new_session(&stack.edge_https);
    let m1 = alert_message(200, &client_next, &next_anchor());
    let a1 = client.send(m1.clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Alert"), [200]);
    let a2 = client
        .send(sync_message(&m1, vec![], true), Auth::None)
        .await;
    assert_eq!(a2.server_sync().number_of_changes, Some(0));
}

/// The same contact edited on the device and on the web between two
/// syncs: merged field by field, the newer note wins and the older one is
/// kept, and the merged card goes back to the device.
#[tokio::test]
async fn conflicting_edits_are_merged_field_by_field() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-conflict").await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Xml);
    let (client_next, _) =
        slow_sync(&mut client, "ref-slow-xml", "xml", Auth::Basic(PASSWORD)).await;
    // The device edits after that sync (anchors have 1 s resolution), the
    // web after the device.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let rev = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let all = contacts(stack, &user).await;
    let olga = all
        .iter()
        .find(|c| c["formatted_name"] == "Ольга Петрова")
        .unwrap();
    let path = format!("/api/v1/contacts/{}", olga["id"].as_str().unwrap());
    let url = format!("{}{path}", stack.edge_https);
    let mut edited = olga.clone();
    edited["emails"] = serde_json::json!([{"value": "olga@web.example"}]);
    edited["note"] = serde_json::json!("note from the web");
    let obj = edited.as_object_mut().unwrap();
    for k in ["id", "version", "created_at", "updated_at"] {
        obj.remove(k);
    }
    let response = user.client.put(&url).json(&edited).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    // The device's edit (its REV) is older than the web's.
    client.new_session(&stack.edge_https);
    let m1 = alert_message(200, &client_next, "20261127T160000Z");
    let a1 = client.send(m1.clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Alert"), [200]);
    let card = format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Петрова;Ольга;;;\r\nFN:Ольга Петрова\r\n\
                TEL;TYPE=CELL:+7 495 123 45 67\r\nTEL;TYPE=HOME:+7 495 765 43 21\r\n\
                NOTE:note from the phone\r\nREV:{rev}\r\nEND:VCARD\r\n"
    );
    let a2 = client
        .send(
            sync_message(
                &m1,
                vec![card_command("Replace", "2", "olga-30-minimal.vcf", &card)],
                true,
            ),
            Auth::None,
        )
        .await;
    assert_eq!(a2.status_for("Replace"), [207]);
    let sync = a2.server_sync();
    let Command::Replace(back) = &sync.commands[0] else {
        panic!("{:?}", sync.commands)
    };
    assert_eq!(
        back.items[0].target.as_ref().unwrap().loc_uri,
        "olga-30-minimal.vcf"
    );
    let back = String::from_utf8_lossy(back.items[0].data.as_ref().unwrap().as_bytes().unwrap())
        .into_owned();
    assert!(back.contains("olga@web.example"), "{back}");
    assert!(back.contains("+7 495 765 43 21"), "{back}");
    assert!(back.contains("X-ONEBOOK-CONFLICT"), "{back}");

    let now: Value = user.get_json(stack, &path).await;
    assert_eq!(now["note"], "note from the web", "{now}");
    let phones: Vec<&str> = now["phones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_str().unwrap())
        .collect();
    assert!(phones.contains(&"+7 495 765 43 21"), "{now}");
    assert!(now["emails"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["value"] == "olga@web.example"));
    assert!(
        now["custom_fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "X-ONEBOOK-CONFLICT"
                && f["value"] == "note: note from the phone"),
        "{now}"
    );
}

/// The client messages of SyncEvolution sending a 7.3 KB card in 5 chunks
/// (captured against a server announcing MaxMsgSize 3000): 213 per chunk,
/// 201 for the whole card, which arrives with its photo intact.
#[tokio::test]
async fn a_large_object_from_the_client_is_reassembled() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-lo").await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Xml);
    let dir = "conversations/fake-large-object-client-to-server-xml";
    let msgs: Vec<Message> = (1..=8)
        .map(|n| load(&format!("{dir}/00{n}-req.xml")).1)
        .collect();
    let a1 = client.send(msgs[0].clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Alert"), [200]);
    let mut adds = Vec::new();
    for (i, m) in msgs[1..].iter().enumerate() {
        let a = client.send(m.clone(), Auth::None).await;
        adds.extend(a.status_for("Add"));
        assert_eq!(a.message.body.final_flag, i == 6, "message {}", i + 2);
    }
    assert_eq!(adds, [213, 213, 213, 213, 201, 201, 201, 201, 201]);
    let all = contacts(stack, &user).await;
    assert_eq!(names(&all), sorted(&SAMPLE_NAMES));
    let anna = all
        .iter()
        .find(|c| c["formatted_name"] == "Dr. Anna Maria Müller")
        .unwrap();
    assert!(
        anna["photo"]["data"].as_str().unwrap().len() > 5000,
        "{anna}"
    );

    // The same chunks with one byte missing from the last: 424.
    let user = TestUser::sign_up(stack, "syncml-lo-424").await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Xml);
    client.send(msgs[0].clone(), Auth::Basic(PASSWORD)).await;
    let mut adds = Vec::new();
    for (i, m) in msgs[1..6].iter().enumerate() {
        let mut m = m.clone();
        if i == 4 {
            for c in m.body.commands.iter_mut() {
                if let Command::Sync(s) = c {
                    let Command::Add(add) = &mut s.commands[0] else {
                        panic!()
                    };
                    let Some(ItemData::Bytes(b)) = add.items[0].data.as_mut() else {
                        panic!("{:?}", add.items[0].data)
                    };
                    b.pop();
                }
            }
        }
        adds.extend(client.send(m, Auth::None).await.status_for("Add"));
    }
    assert_eq!(adds, [213, 213, 213, 213, 424, 201]);
    assert!(!names(&contacts(stack, &user).await).contains(&"Dr. Anna Maria Müller".to_owned()));
}

/// A phone with MaxGUIDSize 8 gets short GUIDs, maps them, and later
/// Replace commands reach it by its LUIDs.
#[tokio::test]
async fn short_guids_for_a_small_max_guid_size() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-guid").await;
    for i in 0..3 {
        create_contact(
            stack,
            &user,
            serde_json::json!({"formatted_name": format!("Short {i}")}),
        )
        .await;
    }
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Wbxml);
    let mut m1 = slow_sync_messages("ref-slow-wbxml", "wbxml")[0].clone();
    for c in m1.body.commands.iter_mut() {
        if let Command::Put(put) = c {
            let Some(ItemData::DevInf(devinf)) = put.items[0].data.as_mut() else {
                panic!("no DevInf in the Put")
            };
            for store in devinf.data_stores.iter_mut() {
                store.max_guid_size = Some(8);
            }
        }
    }
    client.send(m1.clone(), Auth::Basic(PASSWORD)).await;
    let empty = Message {
        body: onebook_syncml::message::SyncBody {
            commands: vec![Command::Sync(Sync {
                cmd_id: "1".into(),
                target: Some(Location::new("addressbook")),
                source: Some(Location::new("./addressbook")),
                ..Sync::default()
            })],
            final_flag: true,
        },
        ..m1.clone()
    };
    let a2 = client.send(empty.clone(), Auth::None).await;
    let guids: Vec<String> = a2
        .server_sync()
        .commands
        .iter()
        .map(|c| {
            let Command::Add(add) = c else {
                panic!("{c:?}")
            };
            add.items[0].source.as_ref().unwrap().loc_uri.clone()
        })
        .collect();
    assert_eq!(guids.len(), 3);
    assert!(
        guids.iter().all(|g| !g.is_empty() && g.len() <= 8),
        "{guids:?}"
    );
    let map = Message {
        body: onebook_syncml::message::SyncBody {
            commands: vec![Command::Map(Map {
                cmd_id: "1".into(),
                target: Location::new("addressbook"),
                source: Location::new("./addressbook"),
                items: guids
                    .iter()
                    .enumerate()
                    .map(|(i, g)| MapItem {
                        target: Location::new(g.clone()),
                        source: Location::new(format!("{}", 100 + i)),
                    })
                    .collect(),
                ..Map::default()
            })],
            final_flag: true,
        },
        ..m1.clone()
    };
    assert_eq!(client.send(map, Auth::None).await.status_for("Map"), [200]);
    let client_next = match &m1.body.commands[2] {
        Command::Alert(a) => {
            a.items[0]
                .meta
                .as_ref()
                .unwrap()
                .anchor
                .clone()
                .unwrap()
                .next
        }
        other => panic!("{other:?}"),
    };

    // Every contact changes on the web; the phone hears by its LUIDs.
    let all = contacts(stack, &user).await;
    for c in &all {
        let url = format!(
            "{}/api/v1/contacts/{}",
            stack.edge_https,
            c["id"].as_str().unwrap()
        );
        let r = user
            .client
            .put(&url)
            .json(&serde_json::json!({"formatted_name": format!("{} edited", c["formatted_name"].as_str().unwrap())}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    client.new_session(&stack.edge_https);
    let mut m1b = m1.clone();
    for c in m1b.body.commands.iter_mut() {
        if let Command::Alert(a) = c {
            a.code = Some(200);
            a.items[0].meta.as_mut().unwrap().anchor = Some(Anchor {
                last: Some(client_next.clone()),
                next: "20261127T170000Z".into(),
            });
        }
    }
    let a1 = client.send(m1b.clone(), Auth::Basic(PASSWORD)).await;
    assert_eq!(a1.status_for("Alert"), [200]);
    let a2 = client
        .send(
            Message {
                header: m1b.header.clone(),
                ..empty
            },
            Auth::None,
        )
        .await;
    let mut luids: Vec<String> = a2
        .server_sync()
        .commands
        .iter()
        .map(|c| {
            let Command::Replace(r) = c else {
                panic!("{c:?}")
            };
            let item = &r.items[0];
            assert!(item.source.as_ref().unwrap().loc_uri.len() <= 8);
            item.target.as_ref().unwrap().loc_uri.clone()
        })
        .collect();
    luids.sort();
    assert_eq!(luids, ["100", "101", "102"]);
}

/// Expired sessions are deleted as other sessions are saved, so the table
/// does not grow with abandoned sessions.
#[tokio::test]
async fn expired_sessions_are_purged() {
    let stack = Stack::get();
    let db = onebook_testkit::pg(&stack.shard_urls[0]).await;
    let id = format!("expired-{}", uuid::Uuid::new_v4().simple());
    let long_ago = chrono::DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    db.execute(
        "INSERT INTO syncml_sessions (id, dev_id, client_session_id, state, created_at, updated_at, expires_at) \
         VALUES ($1, 'sc-pim-gone', '1', '{}'::jsonb, $2, $2, $2)",
        &[&id, &long_ago],
    )
    .await
    .unwrap();
    let exists = "SELECT 1 FROM syncml_sessions WHERE id = $1";
    assert!(db.query_opt(exists, &[&id]).await.unwrap().is_some());
    let user = TestUser::sign_up(stack, "syncml-expiry").await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Xml);
    let m1 = slow_sync_messages("ref-slow-xml", "xml")[0].clone();
    assert_eq!(
        client
            .send(m1, Auth::Basic(PASSWORD))
            .await
            .header_status()
            .code,
        212
    );
    assert!(
        db.query_opt(exists, &[&id]).await.unwrap().is_none(),
        "the expired session is still there"
    );
}

/// A card larger than the client's MaxMsgSize goes out as a large object:
/// the first chunk with Meta/Size and MoreData, every reply under the
/// limit, and the chunks add up to the card.
#[tokio::test]
async fn a_card_larger_than_the_client_message_limit_goes_in_chunks() {
    use base64::Engine as _;
    const MAX: u64 = 10240;
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncml-lo-out").await;
    let mut x: u32 = 0x9e37_79b9;
    let bytes: Vec<u8> = (0..24 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let photo = B64.encode(&bytes);
    create_contact(
        stack,
        &user,
        serde_json::json!({"formatted_name": "Big Picture", "photo": {"media_type": "image/png", "data": photo}}),
    )
    .await;
    create_contact(
        stack,
        &user,
        serde_json::json!({"formatted_name": "Small One"}),
    )
    .await;
    let mut client = Client::new(stack, &stack.edge_https, &user.email, Encoding::Xml);
    let mut m1 = slow_sync_messages("ref-slow-xml", "xml")[0].clone();
    m1.header.meta.as_mut().unwrap().max_msg_size = Some(MAX);
    client.send(m1.clone(), Auth::Basic(PASSWORD)).await;
    let mut answer = client
        .send(sync_message(&m1, vec![], true), Auth::None)
        .await;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut declared = None;
    let mut whole = Vec::new();
    for round in 0.. {
        assert!(round < 20, "no progress");
        let size = codec::encode(Encoding::Xml, &answer.message).unwrap().len();
        assert!(size <= MAX as usize, "reply of {size} bytes");
        let sync = answer.server_sync();
        let mut statuses = Vec::new();
        for (i, c) in sync.commands.iter().enumerate() {
            let Command::Add(add) = c else {
                panic!("{c:?}")
            };
            let item = &add.items[0];
            let data = item.data.as_ref().unwrap().as_bytes().unwrap().to_vec();
            let name = String::from_utf8_lossy(&data).contains("Big Picture") || !chunks.is_empty();
            if item.more_data {
                assert_eq!(i, sync.commands.len() - 1, "MoreData ends the message");
                if chunks.is_empty() {
                    declared = item.meta.as_ref().and_then(|m| m.size);
                } else {
                    assert!(item.meta.as_ref().and_then(|m| m.size).is_none());
                }
                chunks.push(data);
            } else if name && !chunks.is_empty() {
                chunks.push(data);
                whole = chunks.concat();
                chunks.clear();
            }
            statuses.push(Command::Status(Status {
                cmd_id: (i + 1).to_string(),
                msg_ref: Some(answer.message.header.msg_id.clone()),
                cmd_ref: add.cmd_id.clone(),
                cmd: "Add".into(),
                code: if item.more_data { 213 } else { 201 },
                ..Status::default()
            }));
        }
        if answer.message.body.final_flag {
            break;
        }
        statuses.push(Command::Alert(Alert {
            cmd_id: (statuses.len() + 1).to_string(),
            code: Some(222),
            items: vec![Item {
                target: Some(Location::new(client.url.clone())),
                source: Some(Location::new(client.dev_id.clone())),
                ..Item::default()
            }],
            ..Alert::default()
        }));
        answer = client
            .send(
                Message {
                    header: m1.header.clone(),
                    body: onebook_syncml::message::SyncBody {
                        commands: statuses,
                        final_flag: false,
                    },
                },
                Auth::None,
            )
            .await;
    }
    let declared = declared.expect("a chunked item");
    assert_eq!(whole.len() as u64, declared);
    let card = String::from_utf8(whole).unwrap();
    assert!(
        card.starts_with("BEGIN:VCARD") && card.trim_end().ends_with("END:VCARD"),
        "{card}"
    );
    let parsed = onebook_domain::vcard::parse_bytes(card.as_bytes())
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    let contact = onebook_domain::vcard::from_vcard(&parsed, "test");
    assert_eq!(contact.photo.unwrap().data.unwrap(), photo);
}
