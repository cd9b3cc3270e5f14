//! SyncML decode and encode, XML and WBXML, on messages SyncEvolution and the
//! libsynthesis reference server really exchanged (benches/fixtures/syncml).
//!
//! `decode` is bytes → typed `Message` (what `POST /sync` does per request);
//! `encode` is `Message` → bytes (every reply). `parse_tree` isolates the
//! tokenizer/tree half of decode. Throughput is in wire bytes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use onebook_syncml::codec::{self, Encoding, CONTENT_TYPE_WBXML, CONTENT_TYPE_XML};
use onebook_syncml::{wbxml, xml};
use std::hint::black_box;
use std::time::Duration;

/// (name, XML bytes, WBXML bytes) of the same message.
const MESSAGES: &[(&str, &[u8], &[u8])] = &[
    (
        "client-init-devinf",
        include_bytes!("../fixtures/syncml/client-init.xml"),
        include_bytes!("../fixtures/syncml/client-init.wbxml"),
    ),
    (
        "client-sync-5-adds",
        include_bytes!("../fixtures/syncml/client-sync-add.xml"),
        include_bytes!("../fixtures/syncml/client-sync-add.wbxml"),
    ),
    (
        "server-init-resp",
        include_bytes!("../fixtures/syncml/server-init-resp.xml"),
        include_bytes!("../fixtures/syncml/server-init-resp.wbxml"),
    ),
    (
        "server-sync-resp",
        include_bytes!("../fixtures/syncml/server-sync-resp.xml"),
        include_bytes!("../fixtures/syncml/server-sync-resp.wbxml"),
    ),
];

fn encodings(
    xml: &'static [u8],
    wbxml: &'static [u8],
) -> [(Encoding, &'static str, &'static [u8]); 2] {
    [
        (Encoding::Xml, CONTENT_TYPE_XML, xml),
        (Encoding::Wbxml, CONTENT_TYPE_WBXML, wbxml),
    ]
}

fn label(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Xml => "xml",
        Encoding::Wbxml => "wbxml",
    }
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("syncml/decode");
    for &(name, xml_bytes, wbxml_bytes) in MESSAGES {
        for (encoding, content_type, body) in encodings(xml_bytes, wbxml_bytes) {
            group.throughput(Throughput::Bytes(body.len() as u64));
            group.bench_with_input(BenchmarkId::new(label(encoding), name), body, |b, body| {
                b.iter(|| {
                    codec::decode(black_box(content_type), black_box(body))
                        .expect("fixture decodes")
                })
            });
        }
    }
    group.finish();
}

fn parse_tree(c: &mut Criterion) {
    let mut group = c.benchmark_group("syncml/parse_tree");
    for &(name, xml_bytes, wbxml_bytes) in MESSAGES {
        group.throughput(Throughput::Bytes(xml_bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("xml", name), xml_bytes, |b, body| {
            b.iter(|| xml::parse(black_box(body)).expect("fixture parses"))
        });
        group.throughput(Throughput::Bytes(wbxml_bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("wbxml", name), wbxml_bytes, |b, body| {
            b.iter(|| wbxml::decode(black_box(body)).expect("fixture decodes"))
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("syncml/encode");
    for &(name, xml_bytes, wbxml_bytes) in MESSAGES {
        for (encoding, content_type, body) in encodings(xml_bytes, wbxml_bytes) {
            let (_, message) = codec::decode(content_type, body).expect("fixture decodes");
            let out_len = codec::encoded_len(encoding, &message).expect("fixture encodes");
            group.throughput(Throughput::Bytes(out_len as u64));
            group.bench_with_input(
                BenchmarkId::new(label(encoding), name),
                &message,
                |b, message| {
                    b.iter(|| codec::encode(encoding, black_box(message)).expect("fixture encodes"))
                },
            );
        }
    }
    group.finish();
}

fn config() -> Criterion {
    // Short windows keep the whole suite at a few minutes on 2 cores; the
    // per-iteration times are microseconds, so 2 s still gives millions of samples.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, parse_tree, encode
}
criterion_main!(benches);
