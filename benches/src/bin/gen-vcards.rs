//! Writes N generated, deterministic contacts as vCards, for the app and SyncML benches.
//!
//! usage: gen-vcards N (--file PATH | --dir DIR) [--version 2.1|3.0] [--seed S]
//!
//! `--file` writes one .vcf holding every card (the import API); `--dir` writes one card
//! per file, `NNNNNN.vcf` (SyncEvolution's file backend, where the file name is the LUID).
//! Cards mix what phones send: N/FN, 1–3 phones, 0–2 emails, and on some an ORG, an ADR,
//! a NOTE and non-ASCII names, so parsing and storage see realistic variety. No photos.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::exit;

const GIVEN: &[&str] = &[
    "Anna", "Ben", "Chloé", "David", "Eva", "Farid", "Greta", "Hiro", "Inés", "Jonas", "Kasia",
    "Lars", "María", "Nils", "Olga", "Pavel", "Quinn", "Rosa", "Søren", "Tomás", "Ulla", "Vera",
    "Wei", "Xenia", "Yusuf", "Zoë",
];
const FAMILY: &[&str] = &[
    "Müller", "Schmidt", "García", "Novak", "Kowalski", "Rossi", "Dubois", "Jansen", "Nielsen",
    "Silva", "Tanaka", "Öztürk", "Petrova", "O'Brien", "Smith", "Virtanen", "Horváth", "Li",
];
const ORGS: &[&str] = &[
    "Acme GmbH",
    "Globex",
    "Initech",
    "Umbrella Ltd",
    "Stark Industries",
];
const CITIES: &[&str] = &["Berlin", "Madrid", "Warszawa", "København", "Lyon", "Porto"];

/// SplitMix64: tiny, seedable, and the same output on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.below(list.len())]
    }
}

fn card(i: usize, rng: &mut Rng, v21: bool) -> String {
    let given = rng.pick(GIVEN);
    let family = rng.pick(FAMILY);
    let mut s = String::new();
    let (version, charset, tel_cell, tel_work, email) = if v21 {
        (
            "2.1",
            ";CHARSET=UTF-8",
            "TEL;CELL",
            "TEL;WORK;VOICE",
            "EMAIL;INTERNET",
        )
    } else {
        (
            "3.0",
            "",
            "TEL;TYPE=CELL",
            "TEL;TYPE=WORK,VOICE",
            "EMAIL;TYPE=INTERNET",
        )
    };
    let _ = write!(s, "BEGIN:VCARD\r\nVERSION:{version}\r\n");
    let _ = write!(
        s,
        "N{charset}:{family};{given};;;\r\nFN{charset}:{given} {family}\r\n"
    );
    let _ = write!(
        s,
        "{tel_cell}:+49 170 {:07}\r\n",
        (i * 7919 + 1234) % 10_000_000
    );
    if rng.below(2) == 0 {
        let _ = write!(
            s,
            "{tel_work}:+49 30 {:06}-{}\r\n",
            rng.below(1_000_000),
            rng.below(100)
        );
    }
    if rng.below(4) == 0 {
        let _ = write!(
            s,
            "TEL{}:+34 91 {:07}\r\n",
            if v21 { ";HOME" } else { ";TYPE=HOME" },
            rng.below(10_000_000)
        );
    }
    let local = format!("{}.{}{i}", ascii(given), ascii(family));
    let _ = write!(s, "{email}:{local}@example.com\r\n");
    if rng.below(3) == 0 {
        let _ = write!(s, "{email}:{local}@mail.example.org\r\n");
    }
    if rng.below(3) == 0 {
        let _ = write!(s, "ORG{charset}:{}\r\nTITLE:Engineer\r\n", rng.pick(ORGS));
    }
    if rng.below(4) == 0 {
        let adr = if v21 {
            "ADR;HOME;CHARSET=UTF-8"
        } else {
            "ADR;TYPE=HOME"
        };
        let city = rng.pick(CITIES);
        let _ = write!(
            s,
            "{adr}:;;Hauptstraße {};{city};;{:05};\r\n",
            rng.below(200) + 1,
            rng.below(100_000)
        );
    }
    if rng.below(5) == 0 {
        let _ = write!(s, "NOTE{charset}:Bench contact {i}\\, generated\r\n");
    }
    s.push_str("END:VCARD\r\n");
    s
}

/// An ASCII-only form of a name for email local parts.
fn ascii(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn usage() -> ! {
    eprintln!("usage: gen-vcards N (--file PATH | --dir DIR) [--version 2.1|3.0] [--seed S]");
    exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(n) = args.first().and_then(|a| a.parse::<usize>().ok()) else {
        usage()
    };
    let (mut file, mut dir, mut v21, mut seed) = (None, None, false, 1u64);
    let mut it = args.iter().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--file" => file = Some(PathBuf::from(value)),
            "--dir" => dir = Some(PathBuf::from(value)),
            "--version" => match value.as_str() {
                "2.1" => v21 = true,
                "3.0" => v21 = false,
                _ => usage(),
            },
            "--seed" => seed = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let mut rng = Rng(seed);
    let result = match (file, dir) {
        (Some(path), None) => std::fs::File::create(&path).and_then(|f| {
            let mut out = std::io::BufWriter::new(f);
            for i in 0..n {
                out.write_all(card(i, &mut rng, v21).as_bytes())?;
            }
            out.flush()
        }),
        (None, Some(dir)) => std::fs::create_dir_all(&dir).and_then(|()| {
            (0..n).try_for_each(|i| {
                std::fs::write(dir.join(format!("{i:06}.vcf")), card(i, &mut rng, v21))
            })
        }),
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("gen-vcards: {e}");
        exit(1);
    }
}
