#![allow(dead_code)]

use onebook_syncml::tree::{Content, Element};
use std::path::{Path, PathBuf};

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// All fixture files whose name ends with `suffix`, sorted, relative names
/// included for messages.
pub fn fixtures(suffix: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    walk(&data_dir(), &mut out);
    let mut out: Vec<_> = out
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .map(|p| {
            (
                p.strip_prefix(data_dir())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                p,
            )
        })
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Raw XML captures (not the `.decoded.xml` renderings of WBXML).
pub fn xml_captures() -> Vec<(String, PathBuf)> {
    fixtures(".xml")
        .into_iter()
        .filter(|(n, _)| !n.ends_with(".decoded.xml"))
        .collect()
}

/// Same elements, namespaces and character content; text and opaque data
/// compare by bytes because XML renderings cannot tell them apart.
pub fn semantic_diff(a: &Element, b: &Element, path: &str) -> Option<String> {
    let here = format!("{path}/{}", a.name);
    if a.name != b.name || a.ns != b.ns {
        return Some(format!(
            "{here}: <{}>({:?}) vs <{}>({:?})",
            a.name, a.ns, b.name, b.ns
        ));
    }
    match (&a.content, &b.content) {
        (Content::Children(x), Content::Children(y)) => {
            if x.len() != y.len() {
                return Some(format!("{here}: {} vs {} children", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .find_map(|(c, d)| semantic_diff(c, d, &here))
        }
        (Content::Children(_), _) | (_, Content::Children(_)) => {
            Some(format!("{here}: container vs leaf"))
        }
        _ => (a.bytes() != b.bytes()).then(|| {
            format!(
                "{here}: {:?} vs {:?}",
                String::from_utf8_lossy(a.bytes().unwrap()),
                String::from_utf8_lossy(b.bytes().unwrap())
            )
        }),
    }
}

pub fn find<'a, 'x>(el: &'a Element<'x>, path: &[&str]) -> Option<&'a Element<'x>> {
    let mut cur = el;
    for p in path {
        cur = cur.child(p)?;
    }
    Some(cur)
}

/// The tree with every element's children sorted by name (stable), for
/// comparing documents whose writers order siblings differently.
pub fn sorted<'x>(el: &Element<'x>) -> Element<'x> {
    let mut out = el.clone();
    if let Content::Children(children) = &mut out.content {
        *children = children.iter().map(sorted).collect();
        children.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}
