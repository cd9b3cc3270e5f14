mod common;

use common::{fixtures, semantic_diff};
use onebook_syncml::tree::{Content, Document, Element, Namespace, Version};
use onebook_syncml::{wbxml, xml};

#[test]
fn every_capture_decodes_like_the_reference_decoder() {
    let files = fixtures(".wbxml");
    assert_eq!(files.len(), 46);
    for (name, path) in files {
        let raw = std::fs::read(&path).unwrap();
        let doc = wbxml::decode(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        let reference = std::fs::read(format!("{}.decoded.xml", path.display())).unwrap();
        let reference =
            xml::parse(&reference).unwrap_or_else(|e| panic!("{name}.decoded.xml: {e}"));
        assert_eq!(doc.version, reference.version, "{name}");
        if let Some(diff) = semantic_diff(&doc.root, &reference.root, "") {
            panic!("{name}: {diff}");
        }
    }
}

#[test]
fn every_capture_reencodes_byte_exact() {
    for (name, path) in fixtures(".wbxml") {
        let raw = std::fs::read(&path).unwrap();
        let doc = wbxml::decode(&raw).unwrap();
        let again = wbxml::encode(&doc).unwrap();
        assert!(
            again == raw,
            "{name}: re-encoding differs (len {} vs {})",
            again.len(),
            raw.len()
        );
        assert_eq!(wbxml::encoded_len(&doc).unwrap(), raw.len(), "{name}");
    }
}

#[test]
fn syncml_11_capture_has_11_public_id_and_devinf() {
    let raw = std::fs::read(
        common::data_dir().join("conversations/ref-syncml11-slow-wbxml/001-req.wbxml"),
    )
    .unwrap();
    assert_eq!(&raw[..3], &[0x02, 0x9F, 0x53]);
    let doc = wbxml::decode(&raw).unwrap();
    assert_eq!(doc.version, Version::V1_1);
    let put = doc.root.child("SyncBody").unwrap().child("Put").unwrap();
    let devinf = common::find(put, &["Item", "Data", "DevInf"]).unwrap();
    assert_eq!(devinf.ns, Namespace::DevInf);
    assert_eq!(devinf.child("VerDTD").unwrap().text(), Some("1.1"));
}

#[test]
fn nested_devinf_and_opaque_vcards() {
    let raw = std::fs::read(common::data_dir().join("syncevolution-sync-add.wbxml")).unwrap();
    let doc = wbxml::decode(&raw).unwrap();
    let sync = doc.root.child("SyncBody").unwrap().child("Sync").unwrap();
    let adds: Vec<_> = sync.children_named("Add").collect();
    assert_eq!(adds.len(), 5);
    for add in adds {
        let data = common::find(add, &["Item", "Data"]).unwrap();
        let Content::Opaque(bytes) = &data.content else {
            panic!("vCard is not OPAQUE: {:?}", data.content)
        };
        assert!(bytes.starts_with(b"BEGIN:VCARD\r\n"));
        assert!(bytes.ends_with(b"END:VCARD\r\n"));
    }

    let raw = std::fs::read(common::data_dir().join("syncevolution-init.wbxml")).unwrap();
    let doc = wbxml::decode(&raw).unwrap();
    let put = doc.root.child("SyncBody").unwrap().child("Put").unwrap();
    let devinf = common::find(put, &["Item", "Data", "DevInf"]).unwrap();
    assert_eq!(devinf.child("Man").unwrap().text(), Some("Patrick Ohly"));
    let meta_type = common::find(put, &["Meta", "Type"]).unwrap();
    assert_eq!(meta_type.ns, Namespace::MetInf);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for name in [
        "syncevolution-init.wbxml",
        "conversations/ref-two-way-wbxml/003-req.wbxml",
    ] {
        let raw = std::fs::read(common::data_dir().join(name)).unwrap();
        for len in 0..raw.len() {
            let err = wbxml::decode(&raw[..len]).expect_err("a strict prefix cannot be a document");
            let text = err.to_string();
            assert!(text.contains("byte"), "{name}[..{len}]: {text}");
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let raw =
        std::fs::read(common::data_dir().join("conversations/ref-two-way-wbxml/002-req.wbxml"))
            .unwrap();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut bytes = raw.clone();
        for _ in 0..(1 + next() % 4) {
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
        }
        if let Ok(doc) = wbxml::decode(&bytes) {
            let _ = onebook_syncml::message::Message::from_element(&doc.root);
        }
    }
}

#[test]
fn huge_length_fields_are_bounded_by_the_input() {
    // SyncML 1.2 header, <SyncML> with content, OPAQUE claiming ~256 MiB.
    let bytes = [
        0x02, 0xA4, 0x01, 0x6A, 0x00, 0x6D, 0xC3, 0xFF, 0xFF, 0xFF, 0x7F, b'x',
    ];
    assert_eq!(
        wbxml::decode(&bytes),
        Err(wbxml::WbxmlError::Truncated {
            offset: 11,
            what: "opaque data"
        })
    );
    // String table length beyond the input.
    let bytes = [0x02, 0xA4, 0x01, 0x6A, 0x8F, 0xFF, 0x7F, 0x6D];
    assert!(matches!(
        wbxml::decode(&bytes),
        Err(wbxml::WbxmlError::Truncated { offset: 7, .. })
    ));
    // A multi-byte integer that never ends within 32 bits.
    let bytes = [0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    assert_eq!(
        wbxml::decode(&bytes),
        Err(wbxml::WbxmlError::IntegerOverflow { offset: 1 })
    );
}

#[test]
fn garbage_and_deep_nesting_are_rejected() {
    assert!(matches!(
        wbxml::decode(b"<?xml version='1.0'?>"),
        Err(wbxml::WbxmlError::UnsupportedVersion { offset: 0, .. })
    ));
    assert!(matches!(
        wbxml::decode(&[0x02, 0x42, 0x6A, 0x00, 0x6D, 0x01]),
        Err(wbxml::WbxmlError::UnknownPublicId { offset: 1, .. })
    ));
    let mut deep = vec![0x02, 0xA4, 0x01, 0x6A, 0x00];
    deep.extend(std::iter::repeat_n(0x54u8, 100_000)); // <Item> without END
    assert!(matches!(
        wbxml::decode(&deep),
        Err(wbxml::WbxmlError::TooDeep { .. })
    ));
    // Unknown token on page 0.
    assert!(matches!(
        wbxml::decode(&[0x02, 0xA4, 0x01, 0x6A, 0x00, 0x6D, 0x7F, 0x01, 0x01]),
        Err(wbxml::WbxmlError::UnknownTag {
            offset: 6,
            token: 0x7F,
            page: 0
        })
    ));
}

#[test]
fn string_table_fpi_latin1_and_entities() {
    // Public id 0 with FPI in the string table, charset ISO-8859-1, a STR_T
    // reference and an ENTITY, as some older phones write.
    let fpi = b"-//SYNCML//DTD SyncML 1.1//EN\0J\xfcrgen\0";
    let mut bytes = vec![0x03, 0x00, 0x00, 0x04, fpi.len() as u8];
    bytes.extend_from_slice(fpi);
    bytes.extend_from_slice(&[0x6D, 0x6C, 0x71, 0x83, 30, 0x02, 0x21, 0x01, 0x01, 0x01]);
    let doc = wbxml::decode(&bytes).unwrap();
    assert_eq!(doc.version, Version::V1_1);
    let verdtd = common::find(&doc.root, &["SyncHdr", "VerDTD"]).unwrap();
    assert_eq!(verdtd.text(), Some("Jürgen!"));
}

#[test]
fn encoder_switches_pages_and_nests_devinf() {
    let meta = Element::with_children(
        "Meta",
        Namespace::SyncMl,
        vec![Element::with_text("Type", Namespace::MetInf, "text/vcard")],
    );
    let devinf = Element::with_children(
        "DevInf",
        Namespace::DevInf,
        vec![Element::with_text("VerDTD", Namespace::DevInf, "1.2")],
    );
    let data = Element::with_children("Data", Namespace::SyncMl, vec![devinf]);
    let root = Element::with_children(
        "SyncML",
        Namespace::SyncMl,
        vec![meta, data, Element::new("Final", Namespace::SyncMl)],
    );
    let doc = Document {
        version: Version::V1_2,
        root,
    };
    let bytes = wbxml::encode(&doc).unwrap();
    let expected: Vec<u8> = [
        &[
            0x02, 0xA4, 0x01, 0x6A, 0x00, 0x6D, 0x5A, 0x00, 0x01, 0x53, 0x03,
        ][..],
        b"text/vcard\0",
        &[
            0x01, 0x01, 0x00, 0x00, 0x4F, 0xC3, 0x0E, 0x02, 0xA4, 0x03, 0x6A, 0x00, 0x4A, 0x65,
            0x03,
        ],
        b"1.2\0",
        &[0x01, 0x01, 0x01, 0x12, 0x01],
    ]
    .concat();
    assert_eq!(bytes, expected);
    assert_eq!(wbxml::decode(&bytes).unwrap(), doc);
}

#[test]
fn unknown_names_cannot_be_encoded() {
    let doc = Document {
        version: Version::V1_2,
        root: Element::with_children(
            "SyncML",
            Namespace::SyncMl,
            vec![Element::new("Bogus", Namespace::SyncMl)],
        ),
    };
    assert!(matches!(
        wbxml::encode(&doc),
        Err(wbxml::WbxmlError::UnencodableTag { .. })
    ));
}

#[test]
fn devinf_token_1c_is_size_in_11_and_max_size_in_12() {
    for (version, name) in [(Version::V1_1, "Size"), (Version::V1_2, "MaxSize")] {
        let doc = Document {
            version,
            root: Element::with_children(
                "DevInf",
                Namespace::DevInf,
                vec![Element::with_text(name, Namespace::DevInf, "64")],
            ),
        };
        let bytes = wbxml::encode(&doc).unwrap();
        assert_eq!(
            &bytes[bytes.len() - 7..],
            [0x5C, 0x03, b'6', b'4', 0, 1, 1],
            "{name}"
        );
        assert_eq!(wbxml::decode(&bytes).unwrap(), doc);
    }
}
