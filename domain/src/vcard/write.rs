//! [`VCard`] → text for a target version: parameter spelling, binary
//! values, escaping, quoted-printable and folding all follow the target,
//! whatever version the card was read from.

use super::text;
use super::{Param, Property, VCard, Version};

/// RFC 2425/6350: lines SHOULD NOT exceed 75 octets, excluding the CRLF.
const MAX_LINE: usize = 75;

/// Writes one card with CRLF line ends.
pub fn write(card: &VCard, version: Version) -> String {
    let mut out = String::new();
    out.push_str("BEGIN:VCARD\r\n");
    out.push_str("VERSION:");
    out.push_str(version.as_str());
    out.push_str("\r\n");
    for prop in &card.properties {
        if matches!(prop.name.as_str(), "VERSION" | "BEGIN" | "END") {
            continue;
        }
        write_property(&mut out, prop, version);
    }
    out.push_str("END:VCARD\r\n");
    out
}

/// Writes several cards into one file.
pub fn write_all<'a>(cards: impl IntoIterator<Item = &'a VCard>, version: Version) -> String {
    cards.into_iter().map(|c| write(c, version)).collect()
}

/// Media types for the `TYPE` of inline binaries (3.0 `TYPE=JPEG`) and back.
fn media_type(prop_name: &str, ty: &str) -> String {
    // Only token characters: anything else would end the URI's media type.
    let ty: String = ty
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '/'))
        .collect();
    if ty.is_empty() {
        return "application/octet-stream".into();
    }
    if ty.contains('/') {
        return ty.to_ascii_lowercase();
    }
    let top = match prop_name {
        "SOUND" => "audio",
        "KEY" => "application",
        _ => "image",
    };
    format!("{top}/{}", ty.to_ascii_lowercase())
}

fn short_type(media: &str) -> String {
    let sub = media.rsplit('/').next().unwrap_or(media);
    sub.trim().to_ascii_uppercase()
}

/// Splits a `data:<media>;base64,<payload>` URI.
pub(crate) fn split_data_uri(value: &str) -> Option<(Option<&str>, &str)> {
    let rest = value.strip_prefix("data:")?;
    let (meta, payload) = rest.split_once(',')?;
    let meta = meta.strip_suffix(";base64")?;
    let media = meta.split(';').next().filter(|m| !m.is_empty());
    Some((media, payload))
}

/// Rewrites one property's parameters and value for the target version.
fn convert(prop: &Property, version: Version) -> (Vec<Param>, String, bool) {
    let mut params: Vec<Param> = Vec::new();
    let mut types: Vec<String> = Vec::new();
    let mut pref = false;
    let mut pref_value: Option<String> = None;
    let mut binary = prop.is_binary();
    let mut value = if binary {
        prop.value.chars().filter(|c| !c.is_whitespace()).collect()
    } else {
        prop.value.clone()
    };
    for p in &prop.params {
        match p.name.as_str() {
            "TYPE" => {
                for t in &p.values {
                    if t.eq_ignore_ascii_case("pref") {
                        pref = true;
                    } else if !types.iter().any(|x| x.eq_ignore_ascii_case(t)) {
                        types.push(t.clone());
                    }
                }
            }
            "PREF" => {
                pref = true;
                pref_value = p.values.first().cloned();
            }
            "ENCODING" => {}
            _ => params.push(p.clone()),
        }
    }
    // Binaries: 2.1/3.0 inline with ENCODING, 4.0 as data: URIs.
    if binary && version == Version::V40 {
        let media = types
            .first()
            .map(|t| media_type(&prop.name, t))
            .unwrap_or_else(|| "application/octet-stream".to_string());
        types.clear();
        value = format!("data:{media};base64,{value}");
        binary = false;
    } else if !binary && version != Version::V40 {
        if let Some((media, payload)) = split_data_uri(&prop.value) {
            if let Some(media) = media.map(short_type).filter(|t| !t.is_empty()) {
                types.insert(0, media);
            }
            value = payload.chars().filter(|c| !c.is_whitespace()).collect();
            binary = true;
            params.retain(|p| p.name != "VALUE");
        }
    }
    let mut out = Vec::with_capacity(params.len() + 2);
    if binary {
        let enc = if version == Version::V21 {
            "BASE64"
        } else {
            "b"
        };
        out.push(Param::new("ENCODING", &[enc]));
    }
    if version == Version::V40 {
        if pref {
            let value = pref_value.unwrap_or_else(|| "1".into());
            out.push(Param::new("PREF", &[&value]));
        }
        types.iter_mut().for_each(|t| *t = t.to_ascii_lowercase());
    } else {
        if pref {
            types.push("PREF".into());
        }
        types.iter_mut().for_each(|t| *t = t.to_ascii_uppercase());
    }
    if !types.is_empty() {
        out.push(Param {
            name: "TYPE".into(),
            values: types,
        });
    }
    out.extend(params);
    (out, value, binary)
}

fn write_params(line: &mut String, params: &[Param], version: Version) {
    for p in params {
        if version == Version::V21 {
            write_v21_param(line, p);
            continue;
        }
        line.push(';');
        line.push_str(&p.name);
        if p.values.is_empty() {
            continue;
        }
        line.push('=');
        for (i, v) in p.values.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let v = match version {
                Version::V40 => text::caret_encode(v),
                // No way to write a newline or quote in a 3.0 parameter.
                _ => v
                    .replace(['\r', '\n'], " ")
                    .replace('"', "'")
                    .trim()
                    .to_string(),
            };
            if v.contains([':', ';', ',']) {
                line.push('"');
                line.push_str(&v);
                line.push('"');
            } else {
                line.push_str(&v);
            }
        }
    }
}

/// 2.1 has no quoting: separators inside a value cannot be written, so
/// they become spaces; TYPE values go bare (`TEL;WORK;VOICE`) as phones
/// expect, unless they would read back as something else.
fn write_v21_param(line: &mut String, p: &Param) {
    let clean = |v: &str| v.replace([';', ':', '\r', '\n'], " ").trim().to_string();
    let bare = |v: &String| {
        let upper = v.trim().to_ascii_uppercase();
        // These would read back as an ENCODING.
        let encoding = matches!(
            upper.as_str(),
            "QUOTED-PRINTABLE" | "BASE64" | "8BIT" | "7BIT" | "B"
        );
        !v.contains(['=', ',']) && !upper.is_empty() && !encoding
    };
    if p.name == "TYPE" && p.values.iter().all(bare) {
        for v in &p.values {
            line.push(';');
            line.push_str(clean(v).trim());
        }
        return;
    }
    line.push(';');
    line.push_str(&p.name);
    if !p.values.is_empty() {
        line.push('=');
        let values: Vec<String> = p.values.iter().map(|v| clean(v)).collect();
        line.push_str(&values.join(","));
    }
}

fn write_property(out: &mut String, prop: &Property, version: Version) {
    let (mut params, value, binary) = convert(prop, version);
    let v21_value = (version == Version::V21 && !binary).then(|| text::canonical_to_v21(&value));
    let needs_qp = v21_value.as_ref().is_some_and(|v| {
        !v.is_ascii()
            || v.contains(['\r', '\n'])
            || v.ends_with([' ', '\t'])
            || header_len(prop, &params) + v.len() >= MAX_LINE
    });
    if needs_qp {
        if v21_value.as_ref().is_some_and(|v| !v.is_ascii()) {
            params.push(Param::new("CHARSET", &["UTF-8"]));
        }
        params.push(Param::new("ENCODING", &["QUOTED-PRINTABLE"]));
    }
    // Names can come from stored JSON (custom fields): keep them tokens so
    // the card still parses.
    let token = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect()
    };
    let mut line = String::new();
    if let Some(g) = prop.group.as_deref().map(token).filter(|g| !g.is_empty()) {
        line.push_str(&g);
        line.push('.');
    }
    let name = token(&prop.name);
    line.push_str(if name.is_empty() { "X-INVALID" } else { &name });
    write_params(&mut line, &params, version);
    line.push(':');
    match (version, v21_value) {
        (Version::V21, Some(v)) if needs_qp => {
            fold_qp(out, &line, &text::qp_encode(&v));
        }
        (Version::V21, Some(v)) => {
            line.push_str(&v);
            out.push_str(&line);
            out.push_str("\r\n");
        }
        (Version::V21, None) => fold_v21_base64(out, &line, &value),
        _ => {
            line.push_str(&value);
            fold(out, &line);
        }
    }
}

fn header_len(prop: &Property, params: &[Param]) -> usize {
    prop.name.len()
        + prop.group.as_ref().map_or(0, |g| g.len() + 1)
        + params
            .iter()
            .map(|p| p.name.len() + 2 + p.values.iter().map(|v| v.len() + 1).sum::<usize>())
            .sum::<usize>()
        + 1
}

/// The longest prefix of `s` within `max` bytes that ends on a char boundary.
fn cut(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// 3.0/4.0 folding: CRLF + one space, never inside a UTF-8 sequence.
fn fold(out: &mut String, line: &str) {
    let mut rest = line;
    let mut limit = MAX_LINE;
    loop {
        let end = cut(rest, limit);
        // A char wider than the limit cannot happen with limit >= 4.
        let end = if end == 0 { rest.len() } else { end };
        out.push_str(&rest[..end]);
        out.push_str("\r\n");
        rest = &rest[end..];
        if rest.is_empty() {
            break;
        }
        out.push(' ');
        limit = MAX_LINE - 1;
    }
}

/// Quoted-printable soft line breaks: `=` CRLF, only inside the (ASCII)
/// encoded value and never splitting an `=XX`.
fn fold_qp(out: &mut String, header: &str, encoded: &str) {
    out.push_str(header);
    let mut budget = MAX_LINE.saturating_sub(header.len()).max(4);
    let mut rest = encoded;
    while rest.len() > budget && rest.is_ascii() {
        let mut end = budget - 1;
        if let Some(pos) = rest[end - 2..end].find('=') {
            end = end - 2 + pos;
        }
        out.push_str(&rest[..end]);
        out.push_str("=\r\n");
        rest = &rest[end..];
        budget = MAX_LINE;
    }
    out.push_str(rest);
    out.push_str("\r\n");
}

/// 2.1 base64: indented continuation lines, then a blank line. Only the
/// value is folded: 2.1 unfolding keeps the whitespace, which base64
/// ignores but a parameter would not.
fn fold_v21_base64(out: &mut String, header: &str, value: &str) {
    out.push_str(header);
    let mut budget = MAX_LINE.saturating_sub(header.len()).max(4);
    let mut rest = value;
    let mut first = true;
    while !rest.is_empty() {
        let end = cut(rest, budget);
        let end = if end == 0 { rest.len() } else { end };
        if !first {
            out.push(' ');
        }
        out.push_str(&rest[..end]);
        out.push_str("\r\n");
        rest = &rest[end..];
        first = false;
        budget = MAX_LINE - 1;
    }
    if first {
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    fn card(props: Vec<Property>) -> VCard {
        VCard {
            version: Version::V30,
            properties: props,
        }
    }

    #[test]
    fn folds_at_75_octets_without_splitting_chars() {
        let long = "ü".repeat(100);
        let c = card(vec![Property::new("NOTE", long.clone())]);
        for v in [Version::V30, Version::V40, Version::V21] {
            let s = write(&c, v);
            assert!(s.split("\r\n").all(|l| l.len() <= MAX_LINE), "{v}: {s}");
            let back = parse(&s).remove(0).unwrap();
            assert_eq!(back.get("NOTE").unwrap().text(), long, "{v}");
        }
    }

    #[test]
    fn v21_uses_bare_types_and_qp_for_newlines() {
        let c = card(vec![
            Property::new("TEL", "1").with_param("TYPE", &["WORK", "VOICE", "pref"]),
            Property::new("NOTE", "a\\nb\\, c"),
        ]);
        let s = write(&c, Version::V21);
        assert!(s.contains("TEL;WORK;VOICE;PREF:1\r\n"), "{s}");
        assert!(
            s.contains("NOTE;ENCODING=QUOTED-PRINTABLE:a=0D=0Ab, c\r\n"),
            "{s}"
        );
        let s = write(&c, Version::V40);
        assert!(s.contains("TEL;PREF=1;TYPE=work,voice:1\r\n"), "{s}");
    }

    #[test]
    fn binaries_follow_the_version() {
        let c = card(vec![Property::new("PHOTO", "QUJD")
            .with_param("ENCODING", &["b"])
            .with_param("TYPE", &["PNG"])]);
        assert!(write(&c, Version::V30).contains("PHOTO;ENCODING=b;TYPE=PNG:QUJD\r\n"));
        assert!(write(&c, Version::V21).contains("PHOTO;ENCODING=BASE64;PNG:QUJD\r\n\r\n"));
        let s = write(&c, Version::V40);
        assert!(s.contains("PHOTO:data:image/png;base64,QUJD\r\n"), "{s}");
        let back = parse(&s).remove(0).unwrap();
        let s3 = write(&back, Version::V30);
        assert!(s3.contains("PHOTO;ENCODING=b;TYPE=PNG:QUJD\r\n"), "{s3}");
    }

    #[test]
    fn quotes_params_that_need_it() {
        let c = card(vec![
            Property::new("ADR", ";;x;;;;").with_param("LABEL", &["a: b\nc \"d\""])
        ]);
        let s = write(&c, Version::V40);
        assert!(s.contains("ADR;LABEL=\"a: b^nc ^'d^'\":;;x;;;;"), "{s}");
        let back = parse(&s).remove(0).unwrap();
        assert_eq!(
            back.properties[0].param_value("LABEL"),
            Some("a: b\nc \"d\"")
        );
    }
}
