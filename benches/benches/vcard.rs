//! vCard parse and write, 2.1 and 3.0, with and without a photo.
//!
//! `parse` is text → `VCard` (the codec); `import` adds the mapping to the
//! contact model (what an import or a SyncML Add does per card). `write` is
//! `VCard` → text for a target version; `export` adds the mapping back from
//! the model. The 2.1-with-a-large-photo input is the 3.0 card with its 7 KB
//! PNG rewritten by our own writer, so both versions carry the same photo.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use onebook_domain::vcard::{self, Version};
use std::hint::black_box;
use std::time::Duration;

const ANNA_30_PHOTO: &str = include_str!("../fixtures/vcards/anna-mueller-30.vcf");
const JOSE_21_QP: &str = include_str!("../fixtures/vcards/jose-garcia-21.vcf");
const LI_21_SMALL_PHOTO: &str = include_str!("../fixtures/vcards/li-wei-21-photo.vcf");
const OLGA_30: &str = include_str!("../fixtures/vcards/olga-30-minimal.vcf");

fn one(text: &str) -> vcard::VCard {
    let mut cards = vcard::parse(text);
    assert_eq!(cards.len(), 1, "fixture holds one card");
    cards.remove(0).expect("fixture parses")
}

/// (name, version, text) of every case.
fn cases() -> Vec<(&'static str, Version, String)> {
    let anna = one(ANNA_30_PHOTO);
    let mut anna_no_photo = anna.clone();
    anna_no_photo
        .properties
        .retain(|p| !p.name.eq_ignore_ascii_case("PHOTO"));
    vec![
        ("2.1-qp-no-photo", Version::V21, JOSE_21_QP.to_owned()),
        (
            "2.1-small-photo",
            Version::V21,
            LI_21_SMALL_PHOTO.to_owned(),
        ),
        (
            "2.1-7k-photo",
            Version::V21,
            vcard::write(&anna, Version::V21),
        ),
        ("3.0-minimal", Version::V30, OLGA_30.to_owned()),
        (
            "3.0-full-no-photo",
            Version::V30,
            vcard::write(&anna_no_photo, Version::V30),
        ),
        ("3.0-full-7k-photo", Version::V30, ANNA_30_PHOTO.to_owned()),
    ]
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("vcard/parse");
    for (name, _, text) in cases() {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &text, |b, text| {
            b.iter(|| vcard::parse(black_box(text)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("vcard/import");
    for (name, _, text) in cases() {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &text, |b, text| {
            b.iter(|| vcard::import(black_box(text), "bench"))
        });
    }
    group.finish();
}

fn write(c: &mut Criterion) {
    let mut group = c.benchmark_group("vcard/write");
    for (name, version, text) in cases() {
        let card = one(&text);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &card, |b, card| {
            b.iter(|| vcard::write(black_box(card), version))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("vcard/export");
    for (name, version, text) in cases() {
        let contact = vcard::from_vcard(&one(&text), "bench");
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &contact, |b, contact| {
            b.iter(|| vcard::export([black_box(contact)], version, Some("bench")))
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = parse, write
}
criterion_main!(benches);
