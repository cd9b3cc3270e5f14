mod common;

use common::{fixtures, semantic_diff, xml_captures};
use onebook_syncml::codec::{self, Encoding};
use onebook_syncml::message::{Command, ItemData, Message, MessageError};
use onebook_syncml::tree::Version;
use onebook_syncml::{wbxml, xml};

fn all_messages() -> Vec<(String, Encoding, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, path) in fixtures(".wbxml") {
        out.push((name, Encoding::Wbxml, std::fs::read(path).unwrap()));
    }
    for (name, path) in xml_captures() {
        out.push((name, Encoding::Xml, std::fs::read(path).unwrap()));
    }
    out
}

fn load(name: &str) -> Message {
    let raw = std::fs::read(common::data_dir().join(name)).unwrap();
    let ct = if name.ends_with(".wbxml") {
        "application/vnd.syncml+wbxml"
    } else {
        "application/vnd.syncml+xml"
    };
    codec::decode(ct, &raw).unwrap().1
}

#[test]
fn every_capture_parses_and_rebuilds_the_same_tree() {
    let all = all_messages();
    assert_eq!(all.len(), 154);
    for (name, enc, raw) in all {
        let doc = match enc {
            Encoding::Wbxml => wbxml::decode(&raw).unwrap(),
            Encoding::Xml => xml::parse(&raw).unwrap(),
        };
        let msg = Message::from_element(&doc.root).unwrap_or_else(|e| panic!("{name}: {e}"));
        let rebuilt = msg.to_element();
        let (ours, theirs) = if written_by_python_fake(&name) {
            (common::sorted(&rebuilt), common::sorted(&doc.root))
        } else {
            (rebuilt.clone(), doc.root.clone())
        };
        if let Some(diff) = semantic_diff(&ours, &theirs, "") {
            panic!("{name}: {diff}");
        }
        // Model level: parse(build(m)) == m.
        assert_eq!(Message::from_element(&rebuilt).unwrap(), msg, "{name}");
    }
}

/// Replies of `fake_syncml_server.py` use their own element order (e.g. Type
/// before Format, HwV before FwV); everything else comes from libsynthesis,
/// whose order the model reproduces exactly.
fn written_by_python_fake(name: &str) -> bool {
    name.starts_with("conversations/fake-") && name.contains("-resp.")
}

#[test]
fn every_wbxml_capture_reencodes_byte_exact_through_the_model() {
    let mut exact = 0;
    for (name, path) in fixtures(".wbxml") {
        if written_by_python_fake(&name) {
            continue;
        }
        exact += 1;
        let raw = std::fs::read(&path).unwrap();
        let (enc, msg) = codec::decode("application/vnd.syncml+wbxml", &raw).unwrap();
        assert_eq!(enc, Encoding::Wbxml);
        let bytes = codec::encode(enc, &msg).unwrap();
        assert!(
            bytes == raw,
            "{name}: {} vs {} bytes",
            bytes.len(),
            raw.len()
        );
        assert_eq!(codec::encoded_len(enc, &msg).unwrap(), raw.len(), "{name}");
    }
    assert_eq!(exact, 33);
}

#[test]
fn every_xml_capture_rewrites_byte_exact_through_the_model() {
    // SyncEvolution and libsynthesis write exactly our layout: declaration,
    // single-quoted xmlns, CDATA payloads, no whitespace.
    let mut exact = 0;
    for (name, path) in xml_captures() {
        if written_by_python_fake(&name) {
            continue;
        }
        exact += 1;
        let raw = std::fs::read(&path).unwrap();
        let (enc, msg) = codec::decode("application/vnd.syncml+xml; charset=UTF-8", &raw).unwrap();
        let bytes = codec::encode(enc, &msg).unwrap();
        assert!(
            bytes == raw,
            "{name}:\n ours {}\n raw  {}",
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&raw)
        );
        assert_eq!(codec::encoded_len(enc, &msg).unwrap(), raw.len(), "{name}");
    }
    assert_eq!(exact, 96);
}

#[test]
fn client_init_message_model() {
    let msg = load("syncevolution-init.wbxml");
    let h = &msg.header;
    assert_eq!(h.version, Version::V1_2);
    assert_eq!(h.ver_proto, "SyncML/1.2");
    assert_eq!(h.msg_id, "1");
    assert_eq!(h.source.loc_uri, "sc-pim-test-0001");
    assert_eq!(h.source.loc_name.as_deref(), Some("alice"));
    let cred = h.cred.as_ref().unwrap();
    let cm = cred.meta.as_ref().unwrap();
    assert_eq!(cm.content_type.as_deref(), Some("syncml:auth-md5"));
    assert_eq!(cm.format.as_deref(), Some("b64"));
    assert!(!cred.data.is_empty());
    let meta = h.meta.as_ref().unwrap();
    assert_eq!(meta.max_msg_size, Some(150000));
    assert_eq!(meta.max_obj_size, Some(4000000));
    assert!(msg.body.final_flag);

    let names: Vec<_> = msg.body.commands.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["Put", "Get", "Alert"]);
    let Command::Put(put) = &msg.body.commands[0] else {
        unreachable!()
    };
    assert_eq!(
        put.meta.as_ref().unwrap().content_type.as_deref(),
        Some("application/vnd.syncml-devinf+wbxml")
    );
    let Some(ItemData::DevInf(devinf)) = &put.items[0].data else {
        panic!("Put without DevInf")
    };
    assert_eq!(devinf.version, Version::V1_2);
    assert_eq!(devinf.model.as_deref(), Some("SyncEvolution"));
    assert!(devinf.support_large_objs && devinf.support_number_of_changes && devinf.utc);
    let ds = &devinf.data_stores[0];
    assert_eq!(ds.source_ref, "./addressbook");
    assert_eq!(ds.max_guid_size, Some(64));
    assert_eq!(ds.rx_pref[0].ct_type, "text/vcard");
    assert_eq!(ds.rx_pref[0].ver_ct, "3.0");
    assert!(ds.receives("text/x-vcard"));
    assert_eq!(ds.sync_types, [1, 2, 3, 4, 5, 6, 7, 390001]);
    assert_eq!(ds.ctcaps.len(), 2);

    let Command::Alert(alert) = &msg.body.commands[2] else {
        unreachable!()
    };
    assert_eq!(alert.code, Some(201));
    let item = &alert.items[0];
    assert_eq!(item.target.as_ref().unwrap().loc_uri, "card");
    assert_eq!(item.source.as_ref().unwrap().loc_uri, "./addressbook");
    let anchor = item.meta.as_ref().unwrap().anchor.as_ref().unwrap();
    assert!(anchor.last.is_none());
    assert!(!anchor.next.is_empty());
}

#[test]
fn server_reply_statuses_chal_results_and_resp_uri() {
    let msg = load("conversations/ref-two-way-xml/001-resp.xml");
    assert!(msg
        .header
        .resp_uri
        .as_deref()
        .unwrap()
        .contains("?sessionid="));
    let Command::Status(hdr_status) = &msg.body.commands[0] else {
        unreachable!()
    };
    assert_eq!(
        (
            hdr_status.cmd_ref.as_str(),
            hdr_status.cmd.as_str(),
            hdr_status.code
        ),
        ("0", "SyncHdr", 212)
    );
    let chal = hdr_status.chal.as_ref().unwrap();
    assert_eq!(chal.meta.next_nonce.as_deref(), Some("N2AjSUIkISE="));
    let results = msg.body.commands.iter().find_map(|c| match c {
        Command::Results(r) => Some(r),
        _ => None,
    });
    let results = results.unwrap();
    assert_eq!(results.cmd_ref, "2");
    assert!(matches!(results.items[0].data, Some(ItemData::DevInf(_))));
    // Status for the Alert echoes the client's Next anchor in Item/Data.
    let anchor_echo = msg.body.commands.iter().find_map(|c| match c {
        Command::Status(s) if s.cmd == "Alert" => s.items.first()?.data.clone(),
        _ => None,
    });
    assert!(matches!(anchor_echo, Some(ItemData::Anchor(a)) if !a.next.is_empty()));
}

#[test]
fn sync_items_maps_and_large_objects() {
    let msg = load("syncevolution-sync-add.wbxml");
    let Command::Sync(sync) = &msg
        .body
        .commands
        .iter()
        .find(|c| c.name() == "Sync")
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(sync.commands.len(), 5);
    for c in &sync.commands {
        let Command::Add(add) = c else {
            panic!("expected Add")
        };
        assert_eq!(
            add.meta.as_ref().unwrap().content_type.as_deref(),
            Some("text/vcard")
        );
        let data = add.items[0].data.as_ref().unwrap();
        assert!(matches!(data, ItemData::Bytes(_)));
        assert!(data.as_bytes().unwrap().starts_with(b"BEGIN:VCARD\r\n"));
    }

    let msg = load("conversations/ref-two-way-xml/003-req.xml");
    let Command::Map(map) = msg
        .body
        .commands
        .iter()
        .find(|c| c.name() == "Map")
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(map.items.len(), 1);
    assert!(!map.items[0].target.loc_uri.is_empty());
    assert!(!map.items[0].source.loc_uri.is_empty());

    let msg = load("conversations/fake-large-object-client-to-server-xml/002-req.xml");
    let sync = msg
        .body
        .commands
        .iter()
        .find_map(|c| match c {
            Command::Sync(s) => Some(s),
            _ => None,
        })
        .unwrap();
    let last = sync.commands.last().unwrap();
    let (Command::Add(cmd) | Command::Replace(cmd)) = last else {
        panic!("chunk is {}", last.name())
    };
    let item = &cmd.items[0];
    assert!(item.more_data);
    assert_eq!(
        item.meta
            .as_ref()
            .and_then(|m| m.size)
            .or(cmd.meta.as_ref().and_then(|m| m.size)),
        Some(7296)
    );
    assert!(!msg.body.final_flag);

    let msg = load("conversations/ref-two-way-wbxml/002-resp.wbxml");
    let sync = msg
        .body
        .commands
        .iter()
        .find_map(|c| match c {
            Command::Sync(s) => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(sync.number_of_changes, Some(1));
}

#[test]
fn syncml_11_version_and_devinf_uri() {
    let msg = load("conversations/ref-syncml11-slow-xml/001-req.xml");
    assert_eq!(msg.version(), Version::V1_1);
    let Command::Put(put) = &msg.body.commands[0] else {
        unreachable!()
    };
    assert_eq!(put.items[0].source.as_ref().unwrap().loc_uri, "./devinf11");
    let Some(ItemData::DevInf(d)) = &put.items[0].data else {
        unreachable!()
    };
    assert_eq!(d.version, Version::V1_1);
    // 1.1 keeps CTCap at DevInf level.
    assert_eq!(d.ctcaps.len(), 1);
    assert!(d.data_stores[0].ctcaps.is_empty());
}

#[test]
fn errors_name_the_element_path() {
    let raw = std::fs::read(common::data_dir().join("syncevolution-init-xml.xml")).unwrap();
    let text = String::from_utf8(raw).unwrap();
    // Duplicate the Alert, then drop the Next anchor of the second one.
    let start = text.find("<Alert>").unwrap();
    let end = text.find("</Alert>").unwrap() + "</Alert>".len();
    let alert = &text[start..end];
    let broken = alert.replacen("<Next>", "<Bogus>", 1);
    let broken = broken.replacen("</Next>", "</Bogus>", 1);
    let doc = format!("{}{}{}", &text[..end], broken, &text[end..]);
    let err = codec::decode("application/vnd.syncml+xml", doc.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SyncML/SyncBody/Alert[2]/Item/Meta/Anchor: missing <Next>"
    );

    let doc = text.replacen("<Data>201</Data>", "<Data>slow</Data>", 1);
    let err = Message::from_element(&xml::parse(doc.as_bytes()).unwrap().root).unwrap_err();
    assert!(
        matches!(err, MessageError::Invalid { ref path, .. } if path == "SyncML/SyncBody/Alert/Data"),
        "{err}"
    );

    let doc = text.replacen("<MsgID>1</MsgID>", "", 1);
    let err = Message::from_element(&xml::parse(doc.as_bytes()).unwrap().root).unwrap_err();
    assert_eq!(err.to_string(), "SyncML/SyncHdr: missing <MsgID>");

    let err = Message::from_element(&xml::parse(b"<DevInf xmlns='syncml:devinf'/>").unwrap().root)
        .unwrap_err();
    assert_eq!(err, MessageError::NotSyncMl("DevInf".into()));
}

#[test]
fn unknown_commands_are_kept_for_a_406() {
    let doc = br#"<SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.2</VerDTD><VerProto>SyncML/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>http://s/sync</LocURI></Target><Source><LocURI>dev</LocURI></Source></SyncHdr><SyncBody><Exec><CmdID>3</CmdID><Item><Target><LocURI>x</LocURI></Target></Item></Exec><Final/></SyncBody></SyncML>"#;
    let (_, msg) = codec::decode("application/vnd.syncml+xml", doc).unwrap();
    let Command::Other(o) = &msg.body.commands[0] else {
        panic!()
    };
    assert_eq!(o.cmd_id.as_deref(), Some("3"));
    assert_eq!(msg.body.commands[0].name(), "Exec");
    assert!(!msg.body.commands[0].no_resp());
    // And it goes back out unchanged in both encodings.
    for enc in [Encoding::Xml, Encoding::Wbxml] {
        let bytes = codec::encode(enc, &msg).unwrap();
        let ct = match enc {
            Encoding::Xml => "application/vnd.syncml+xml",
            Encoding::Wbxml => "application/vnd.syncml+wbxml",
        };
        assert_eq!(codec::decode(ct, &bytes).unwrap().1, msg);
    }
}

fn client_devinf(name: &str) -> onebook_syncml::devinf::DevInf {
    let msg = load(name);
    let Command::Put(put) = &msg.body.commands[0] else {
        panic!()
    };
    let Some(ItemData::DevInf(d)) = &put.items[0].data else {
        panic!()
    };
    (**d).clone()
}

#[test]
fn capabilities_read_the_same_from_devinf_11_and_12() {
    let d12 = client_devinf("conversations/ref-slow-xml/001-req.xml");
    let d11 = client_devinf("conversations/ref-syncml11-slow-xml/001-req.xml");
    let caps12 = d12.capabilities(&d12.data_stores[0]);
    let caps11 = d11.capabilities(&d11.data_stores[0]);
    for caps in [&caps12, &caps11] {
        let vcard30 = caps.iter().find(|c| c.ct_type == "text/vcard").unwrap();
        let tel = vcard30.properties.iter().find(|p| p.name == "TEL").unwrap();
        assert_eq!(tel.params[0].name, "TYPE");
        assert!(tel.params[0].values.iter().any(|v| v == "CELL"));
        assert!(tel.values.is_empty());
        let version = vcard30
            .properties
            .iter()
            .find(|p| p.name == "VERSION")
            .unwrap();
        assert_eq!(version.values, ["3.0"]);
        assert!(vcard30.properties.iter().any(|p| p.name == "PHOTO"));
        assert!(caps.iter().any(|c| c.ct_type == "text/x-vcard"));
    }
    // Same property names either way (1.1 lacks MaxOccur, nothing else).
    let names = |caps: &[onebook_syncml::devinf::CtCap]| -> Vec<(String, Vec<String>)> {
        caps.iter()
            .map(|c| {
                (
                    c.ct_type.clone(),
                    c.properties.iter().map(|p| p.name.clone()).collect(),
                )
            })
            .collect()
    };
    assert_eq!(names(&caps12), names(&caps11));
    let tel12 = caps12[0].properties.iter().find(|p| p.name == "N").unwrap();
    assert_eq!(tel12.max_occur, Some(1));
}
