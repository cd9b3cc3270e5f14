mod common;

use common::{find, semantic_diff, xml_captures};
use onebook_syncml::tree::{Content, Namespace, Version};
use onebook_syncml::{wbxml, xml};

#[test]
fn every_xml_capture_survives_parse_write_parse() {
    let files = xml_captures();
    assert_eq!(files.len(), 108);
    for (name, path) in files {
        let raw = std::fs::read(&path).unwrap();
        let doc = xml::parse(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        let written = xml::write(&doc);
        assert_eq!(xml::written_len(&doc), written.len(), "{name}");
        let again = xml::parse(&written).unwrap_or_else(|e| panic!("{name} rewritten: {e}"));
        assert_eq!(doc, again, "{name}");
    }
}

#[test]
fn syncevolution_init_xml_is_written_back_byte_exact() {
    // The writer copies SyncEvolution's layout (declaration, single-quoted
    // xmlns, no whitespace), so a tree-level round trip is byte exact.
    let raw = std::fs::read(common::data_dir().join("syncevolution-init-xml.xml")).unwrap();
    let doc = xml::parse(&raw).unwrap();
    assert_eq!(
        String::from_utf8(xml::write(&doc)).unwrap(),
        String::from_utf8(raw).unwrap()
    );
}

#[test]
fn xml_and_wbxml_captures_of_the_same_message_agree() {
    let x_raw = std::fs::read(common::data_dir().join("syncevolution-init-xml.xml")).unwrap();
    let w_raw = std::fs::read(common::data_dir().join("syncevolution-init.wbxml")).unwrap();
    let x = xml::parse(&x_raw).unwrap();
    let w = wbxml::decode(&w_raw).unwrap();
    // Different sessions: only the structure has to agree.
    assert_eq!(x.root.children().len(), w.root.children().len());
    let names = |d: &onebook_syncml::tree::Document| -> Vec<String> {
        d.root
            .child("SyncBody")
            .unwrap()
            .children()
            .iter()
            .map(|c| c.name.to_string())
            .collect()
    };
    assert_eq!(names(&x), names(&w));
    assert_eq!(x.version, Version::V1_2);
}

#[test]
fn cdata_keeps_crlf_and_becomes_opaque() {
    let raw = std::fs::read(common::data_dir().join("syncevolution-sync-add-xml.xml")).unwrap();
    let doc = xml::parse(&raw).unwrap();
    let sync = doc.root.child("SyncBody").unwrap().child("Sync").unwrap();
    let data = find(sync, &["Add", "Item", "Data"]).unwrap();
    let Content::Opaque(bytes) = &data.content else {
        panic!("CDATA should be opaque")
    };
    assert!(bytes.starts_with(b"BEGIN:VCARD\r\nVERSION:3.0\r\n"));
    // Re-encoding the XML capture as WBXML gives what the WBXML capture of
    // the same client message looks like: vCards as OPAQUE.
    let bin = wbxml::encode(&doc).unwrap();
    let back = wbxml::decode(&bin).unwrap();
    assert!(semantic_diff(&doc.root, &back.root, "").is_none());
    assert_eq!(doc, back);
}

#[test]
fn large_object_size_counts_the_crs() {
    // First chunk announces Size=7296 raw bytes; the chunks must add up to
    // exactly that, which only holds if CRLF survives parsing.
    let dir = common::data_dir().join("conversations/fake-large-object-client-to-server-xml");
    let mut total = 0usize;
    let mut announced = None;
    for n in 2..=6 {
        let raw = std::fs::read(dir.join(format!("{n:03}-req.xml"))).unwrap();
        let doc = xml::parse(&raw).unwrap();
        let body = doc.root.child("SyncBody").unwrap();
        for sync in body.children_named("Sync") {
            for cmd in sync.children() {
                let Some(item) = cmd.child("Item") else {
                    continue;
                };
                let luid = find(item, &["Source", "LocURI"]).and_then(|l| l.text());
                if luid == Some("anna-mueller-30.vcf") {
                    if let Some(size) = find(item, &["Meta", "Size"]) {
                        announced = Some(size.text().unwrap().parse::<usize>().unwrap());
                    }
                    if let Some(data) = item.child("Data") {
                        total += data.bytes().unwrap().len();
                    }
                }
            }
        }
    }
    assert_eq!(announced, Some(7296));
    assert_eq!(total, 7296);
}

#[test]
fn lenient_namespaces_entities_and_whitespace() {
    let input = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE SyncML PUBLIC "-//SYNCML//DTD SyncML 1.1//EN" "http://www.syncml.org/docs/syncml_represent_v11_20020213.dtd">
<SyncML>
  <SyncHdr>
    <VerDTD>1.1</VerDTD>
    <!-- a comment -->
    <Meta><Type>text/x-vcard</Type><m:MaxMsgSize xmlns:m="syncml:metinf">8000</m:MaxMsgSize></Meta>
    <Source><LocURI>IMEI:&#x33;5&lt;&amp;&gt;&quot;&apos;</LocURI></Source>
  </SyncHdr>
  <SyncBody><Final/></SyncBody>
</SyncML>
"#;
    let doc = xml::parse(input).unwrap();
    assert_eq!(doc.version, Version::V1_1);
    let hdr = doc.root.child("SyncHdr").unwrap();
    assert_eq!(hdr.children().len(), 3);
    let meta = hdr.child("Meta").unwrap();
    assert_eq!(meta.children()[0].ns, Namespace::MetInf);
    assert_eq!(meta.children()[1].ns, Namespace::MetInf);
    assert_eq!(meta.children()[1].name, "MaxMsgSize");
    assert_eq!(
        find(hdr, &["Source", "LocURI"]).unwrap().text(),
        Some("IMEI:35<&>\"'")
    );
    // A tree read without namespaces still encodes to WBXML.
    assert!(wbxml::encode(&doc).is_ok());
}

#[test]
fn malformed_xml_is_reported_with_an_offset() {
    for bad in [
        &b"<SyncML><SyncHdr></SyncML>"[..],
        b"<SyncML><SyncHdr>",
        b"<SyncML>&bogus;</SyncML>",
        b"<SyncML><A>text<B/></A></SyncML>",
        b"<SyncML/><SyncML/>",
        b"",
        b"\xff\xfe<",
    ] {
        let err = xml::parse(bad).expect_err(&String::from_utf8_lossy(bad));
        assert!(err.to_string().contains("byte"), "{err}");
    }
    let deep = "<a>".repeat(10_000);
    assert!(matches!(
        xml::parse(deep.as_bytes()),
        Err(xml::XmlError::TooDeep { .. })
    ));
}

#[test]
fn cdata_terminator_inside_payload_is_split() {
    use onebook_syncml::tree::{Document, Element};
    let doc = Document {
        version: Version::V1_2,
        root: Element::with_children(
            "SyncML",
            Namespace::SyncMl,
            vec![Element::with_opaque(
                "Data",
                Namespace::SyncMl,
                &b"NOTE:a]]>b\r\n"[..],
            )],
        ),
    };
    let written = xml::write(&doc);
    let again = xml::parse(&written).unwrap();
    assert_eq!(again, doc);
}

#[test]
fn latin1_declared_documents_are_converted() {
    let input = b"<?xml version='1.0' encoding='ISO-8859-1'?><SyncML><SyncHdr><VerDTD>1.1</VerDTD><Source><LocURI>J\xfcrgen</LocURI></Source></SyncHdr></SyncML>";
    let doc = xml::parse(input).unwrap();
    assert_eq!(doc.version, Version::V1_1);
    let uri = find(&doc.root, &["SyncHdr", "Source", "LocURI"]).unwrap();
    assert_eq!(uri.text(), Some("Jürgen"));
}

#[test]
fn payloads_are_borrowed_from_the_input() {
    use std::borrow::Cow;
    let raw = std::fs::read(common::data_dir().join("syncevolution-sync-add-xml.xml")).unwrap();
    let doc = xml::parse(&raw).unwrap();
    let sync = doc.root.child("SyncBody").unwrap().child("Sync").unwrap();
    let data = find(sync, &["Add", "Item", "Data"]).unwrap();
    assert!(matches!(data.content, Content::Opaque(Cow::Borrowed(_))));

    let raw = std::fs::read(common::data_dir().join("syncevolution-sync-add.wbxml")).unwrap();
    let doc = wbxml::decode(&raw).unwrap();
    let sync = doc.root.child("SyncBody").unwrap().child("Sync").unwrap();
    let data = find(sync, &["Add", "Item", "Data"]).unwrap();
    assert!(matches!(data.content, Content::Opaque(Cow::Borrowed(_))));
    let cmd_id = find(sync, &["CmdID"]).unwrap();
    assert!(matches!(cmd_id.content, Content::Text(Cow::Borrowed(_))));
}

#[test]
fn corrupted_xml_never_panics() {
    let raw = std::fs::read(common::data_dir().join("conversations/ref-two-way-xml/002-req.xml"))
        .unwrap();
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"<>/&;'\"=![]CDATA xmlns:\xc3\xa9\x00\r\n";
    for _ in 0..3000 {
        let mut bytes = raw.clone();
        for _ in 0..(1 + next() % 4) {
            let i = (next() as usize) % bytes.len();
            bytes[i] = alphabet[(next() as usize) % alphabet.len()];
        }
        if let Ok(doc) = xml::parse(&bytes) {
            let _ = onebook_syncml::message::Message::from_element(&doc.root);
        }
        let _ = xml::parse(&bytes[..(next() as usize) % bytes.len()]);
    }
    let ns = "<SyncML xmlns='SYNCML:SYNCMLé1.2'><SyncHdr/></SyncML>";
    assert!(xml::parse(ns.as_bytes()).is_ok());
}
