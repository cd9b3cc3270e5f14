mod common;

use onebook_syncml::codec::{self, CodecError, Encoding};
use onebook_syncml::devinf::{DevInf, ServerDevInf};
use onebook_syncml::message::{
    Anchor, Command, Item, ItemCommand, ItemData, Location, Message, Meta, Status, SyncBody,
    SyncHdr,
};
use onebook_syncml::tree::Version;

#[test]
fn content_types_pick_the_encoding() {
    let cases = [
        ("application/vnd.syncml+xml", Some(Encoding::Xml)),
        (
            "application/vnd.syncml+xml; charset=UTF-8",
            Some(Encoding::Xml),
        ),
        (
            "Application/VND.SyncML+XML;charset=\"utf-8\"",
            Some(Encoding::Xml),
        ),
        ("application/vnd.syncml+wbxml", Some(Encoding::Wbxml)),
        (
            " application/vnd.syncml+wbxml ; charset=UTF-8",
            Some(Encoding::Wbxml),
        ),
        ("text/plain", None),
        ("application/vnd.syncml.dm+xml", None),
        ("", None),
    ];
    for (ct, want) in cases {
        assert_eq!(Encoding::from_content_type(ct), want, "{ct}");
    }
    assert!(Encoding::Xml
        .content_type()
        .starts_with("application/vnd.syncml+xml"));
    assert_eq!(
        Encoding::Wbxml.content_type(),
        "application/vnd.syncml+wbxml"
    );
    assert!(matches!(
        codec::decode("text/plain", b"x"),
        Err(CodecError::UnsupportedContentType(_))
    ));
}

#[test]
fn captured_headers_match_the_bodies() {
    let mut checked = 0;
    for (name, path) in common::fixtures(".headers.txt") {
        let headers = std::fs::read_to_string(&path).unwrap();
        let Some(ct) = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type:").map(str::trim))
        else {
            continue;
        };
        let base = path.to_string_lossy().replace(".headers.txt", "");
        let body = [base.clone(), format!("{base}.xml"), format!("{base}.wbxml")]
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .unwrap_or_else(|| panic!("{name}: no body"));
        checked += 1;
        let (enc, msg) = codec::decode(ct, &body).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The reply goes out in the request's encoding.
        let again = codec::encode(enc, &msg).unwrap();
        assert_eq!(
            codec::decode(enc.content_type(), &again).unwrap().1,
            msg,
            "{name}"
        );
    }
    assert_eq!(checked, 154);
}

#[test]
fn garbage_bodies_are_errors() {
    for (ct, body) in [
        (
            "application/vnd.syncml+wbxml",
            &b"\x02\xa4\x01\x6a\x00\x6d\x6c"[..],
        ),
        ("application/vnd.syncml+wbxml", b"<SyncML/>"),
        ("application/vnd.syncml+xml", b"\x02\xa4\x01\x6a\x00"),
        ("application/vnd.syncml+xml", b"<SyncML><SyncHdr/></SyncML>"),
    ] {
        let err = codec::decode(ct, body).unwrap_err();
        assert!(!err.to_string().is_empty());
    }
}

fn reply(version: Version) -> Message {
    let devinf = ServerDevInf::new("http://sync.example/sync")
        .contacts("contacts")
        .contacts("card")
        .build(version);
    Message {
        header: SyncHdr {
            version,
            ver_proto: version.proto().to_owned(),
            session_id: "15".into(),
            msg_id: "1".into(),
            target: Location {
                loc_uri: "sc-pim-test-0001".into(),
                loc_name: None,
            },
            source: Location::new("http://sync.example/sync"),
            resp_uri: Some("http://sync.example/sync?sessionid=abc".into()),
            no_resp: false,
            cred: None,
            meta: Some(Meta {
                max_msg_size: Some(150_000),
                max_obj_size: Some(4_000_000),
                ..Meta::default()
            }),
        },
        body: SyncBody {
            commands: vec![
                Command::Status(Status {
                    cmd_id: "1".into(),
                    msg_ref: Some("1".into()),
                    cmd_ref: "0".into(),
                    cmd: "SyncHdr".into(),
                    target_refs: vec!["http://sync.example/sync".into()],
                    source_refs: vec!["sc-pim-test-0001".into()],
                    code: 212,
                    ..Status::default()
                }),
                Command::Results(devinf.results(
                    "2".into(),
                    "1".into(),
                    "2".into(),
                    Encoding::Wbxml,
                )),
                Command::Status(Status {
                    cmd_id: "3".into(),
                    msg_ref: Some("1".into()),
                    cmd_ref: "3".into(),
                    cmd: "Alert".into(),
                    target_refs: vec!["contacts".into()],
                    source_refs: vec!["./addressbook".into()],
                    code: 200,
                    items: vec![Item {
                        data: Some(ItemData::Anchor(Anchor {
                            last: None,
                            next: "20261127T081545Z".into(),
                        })),
                        ..Item::default()
                    }],
                    ..Status::default()
                }),
                Command::Add(ItemCommand {
                    cmd_id: "4".into(),
                    meta: Some(Meta {
                        content_type: Some("text/x-vcard".into()),
                        size: Some(40),
                        ..Meta::default()
                    }),
                    items: vec![Item {
                        source: Some(Location::new("guid-1")),
                        data: Some(ItemData::Bytes(
                            b"BEGIN:VCARD\r\nVERSION:2.1\r\nEND:VCARD\r\n".to_vec(),
                        )),
                        more_data: true,
                        ..Item::default()
                    }],
                    ..ItemCommand::default()
                }),
            ],
            final_flag: true,
        },
    }
}

#[test]
fn server_devinf_answers_get_in_both_versions_and_encodings() {
    for version in [Version::V1_1, Version::V1_2] {
        let msg = reply(version);
        for enc in [Encoding::Xml, Encoding::Wbxml] {
            let bytes = codec::encode(enc, &msg).unwrap();
            assert_eq!(codec::encoded_len(enc, &msg).unwrap(), bytes.len());
            let (got_enc, back) = codec::decode(enc.content_type(), &bytes).unwrap();
            assert_eq!(got_enc, enc);
            assert_eq!(back, msg, "{version} {enc:?}");
            let Command::Results(r) = &back.body.commands[1] else {
                panic!()
            };
            let uri = &r.items[0].source.as_ref().unwrap().loc_uri;
            assert_eq!(uri, version.devinf_uri());
            let Some(ItemData::DevInf(d)) = &r.items[0].data else {
                panic!()
            };
            assert_eq!(d.dev_typ, "server");
            assert_eq!(d.version, version);
            assert_eq!(d.data_stores.len(), 2);
            let ds = d.data_store("card").unwrap();
            assert_eq!(ds.rx_pref[0].ct_type, "text/vcard");
            assert_eq!(ds.rx_pref[0].ver_ct, "3.0");
            assert!(ds.receives("text/x-vcard"));
            assert_eq!(ds.sync_types, [1, 2, 3, 4, 5, 6, 7]);
        }
    }
    let bytes = codec::encode(Encoding::Wbxml, &reply(Version::V1_1)).unwrap();
    assert_eq!(&bytes[..3], &[0x02, 0x9F, 0x53]);
    // The nested DevInf document carries the DevInf 1.1 public id.
    assert!(bytes.windows(4).any(|w| w == [0x02, 0x9F, 0x54, 0x6A]));
    let xml =
        String::from_utf8(codec::encode(Encoding::Xml, &reply(Version::V1_1)).unwrap()).unwrap();
    assert!(xml.contains("<SyncML xmlns='SYNCML:SYNCML1.1'>"));
    assert!(xml.contains("<DevInf xmlns='syncml:devinf'><VerDTD>1.1</VerDTD>"));
    assert!(xml.contains("<![CDATA[BEGIN:VCARD\r\nVERSION:2.1\r\nEND:VCARD\r\n]]>"));
    assert_eq!(
        DevInf::meta_type(Encoding::Xml),
        "application/vnd.syncml-devinf+xml"
    );
}

#[test]
fn wbxml_is_much_smaller_and_sizes_are_exact() {
    let msg = reply(Version::V1_2);
    let x = codec::encoded_len(Encoding::Xml, &msg).unwrap();
    let w = codec::encoded_len(Encoding::Wbxml, &msg).unwrap();
    assert!(w * 2 < x, "wbxml {w} vs xml {x}");
}
