//! Text → [`VCard`]s. Liberal in what it accepts (see research/syncml.md
//! §3.12 for what phones send), strict only where guessing would corrupt
//! data; a broken card never stops the cards after it.

use super::text;
use super::{Param, ParseError, ParseErrorKind, Property, VCard, Version};

/// Parses every card in `input`, one result per `BEGIN:VCARD`.
pub fn parse(input: &str) -> Vec<Result<VCard, ParseError>> {
    parse_bytes(input.as_bytes())
}

/// Like [`parse`], for input whose charset is only known per property
/// (2.1 `CHARSET=ISO-8859-1` values without quoted-printable).
pub fn parse_bytes(input: &[u8]) -> Vec<Result<VCard, ParseError>> {
    let input = input.strip_prefix(b"\xef\xbb\xbf").unwrap_or(input);
    let lines: Vec<&[u8]> = input
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    let mut results = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if is_marker(lines[i], b"BEGIN") {
            let card_index = results.len();
            let (result, next) = parse_card(&lines, i, card_index);
            results.push(result);
            i = next;
        } else {
            i += 1;
        }
    }
    if results.is_empty() && lines.iter().any(|l| !l.trim_ascii().is_empty()) {
        results.push(Err(ParseError {
            card_index: 0,
            line: 1,
            kind: ParseErrorKind::NoCard,
        }));
    }
    results
}

fn is_marker(line: &[u8], which: &[u8]) -> bool {
    let line = line.trim_ascii();
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    line[..colon].trim_ascii().eq_ignore_ascii_case(which)
        && line[colon + 1..]
            .trim_ascii()
            .eq_ignore_ascii_case(b"VCARD")
}

/// Parses the card whose BEGIN is at `begin`; returns the result and the
/// index of the first line after the card.
fn parse_card(
    lines: &[&[u8]],
    begin: usize,
    card_index: usize,
) -> (Result<VCard, ParseError>, usize) {
    let mut card = VCard::new(Version::V30);
    let mut first_error: Option<ParseError> = None;
    let fail = |line: usize, kind: ParseErrorKind, slot: &mut Option<ParseError>| {
        if slot.is_none() {
            *slot = Some(ParseError {
                card_index,
                line: line + 1,
                kind,
            });
        }
    };
    let mut i = begin + 1;
    while i < lines.len() {
        let line = lines[i];
        if line.trim_ascii().is_empty() {
            i += 1;
            continue;
        }
        if is_marker(line, b"END") {
            let result = match first_error {
                Some(e) => Err(e),
                None => Ok(card),
            };
            return (result, i + 1);
        }
        if is_marker(line, b"BEGIN") {
            // Skip the embedded card so its END does not end ours.
            fail(i, ParseErrorKind::Nested, &mut first_error);
            let mut depth = 1;
            i += 1;
            while i < lines.len() && depth > 0 {
                if is_marker(lines[i], b"BEGIN") {
                    depth += 1;
                } else if is_marker(lines[i], b"END") {
                    depth -= 1;
                }
                i += 1;
            }
            continue;
        }
        let start = i;
        let (logical, next) = join_logical(lines, i, card.version);
        i = next;
        match parse_property(&logical, card.version) {
            Ok(prop) if prop.name == "VERSION" => match Version::from_value(&prop.value) {
                Some(v) => card.version = v,
                None => fail(
                    start,
                    ParseErrorKind::UnsupportedVersion(prop.value),
                    &mut first_error,
                ),
            },
            Ok(prop) => card.properties.push(prop),
            Err(kind) => fail(start, kind, &mut first_error),
        }
    }
    (
        Err(first_error.unwrap_or(ParseError {
            card_index,
            line: begin + 1,
            kind: ParseErrorKind::Unterminated,
        })),
        lines.len(),
    )
}

/// Joins the physical lines of one content line, returning it and the index
/// of the next unused line.
fn join_logical(lines: &[&[u8]], start: usize, version: Version) -> (Vec<u8>, usize) {
    let mut logical = lines[start].to_vec();
    let encoding = header_encoding(&logical, version);
    let qp = encoding.as_deref() == Some("QUOTED-PRINTABLE");
    let base64 = matches!(encoding.as_deref(), Some("BASE64" | "B"));
    let mut i = start + 1;
    while i < lines.len() {
        let next = lines[i];
        if qp && logical.last() == Some(&b'=') && !is_marker(next, b"END") {
            // Soft line break: "=" CRLF disappears, the next line is content
            // as is (libsynthesis keeps a leading space there too).
            logical.pop();
            logical.extend_from_slice(next);
        } else if matches!(next.first(), Some(b' ' | b'\t')) {
            // 2.1 unfolds RFC 822 style (the whitespace stays); 3.0 and 4.0
            // drop the one whitespace the folder inserted.
            if version == Version::V21 {
                logical.extend_from_slice(next);
            } else {
                logical.extend_from_slice(&next[1..]);
            }
        } else if base64 && version == Version::V21 && is_base64_line(next) {
            // 2.1 lets base64 run on over unindented lines until a blank one.
            logical.extend_from_slice(next);
        } else {
            break;
        }
        i += 1;
    }
    (logical, i)
}

fn is_base64_line(line: &[u8]) -> bool {
    let line = line.trim_ascii();
    !line.is_empty()
        && line
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// The ENCODING of a content line's first physical line, upper-cased:
/// how its continuation lines join depends on it.
fn header_encoding(line: &[u8], version: Version) -> Option<String> {
    let end = value_colon(line, version).unwrap_or(line.len());
    let header = String::from_utf8_lossy(&line[..end]);
    split_quoted(&header, ';', version)
        .into_iter()
        .skip(1)
        .map(|raw| parse_param(raw.trim(), version))
        .find(|p| p.name == "ENCODING")
        .and_then(|p| p.values.first().map(|v| v.to_ascii_uppercase()))
}

/// The colon that starts the value: the first one outside a quoted
/// parameter value (2.1 has no quoting).
fn value_colon(line: &[u8], version: Version) -> Option<usize> {
    let mut quoted = false;
    for (i, &b) in line.iter().enumerate() {
        match b {
            b'"' if version != Version::V21 => quoted = !quoted,
            b':' if !quoted => return Some(i),
            _ => {}
        }
    }
    // An unbalanced quote: fall back to the first colon rather than failing.
    line.iter().position(|&b| b == b':')
}

/// Splits on `sep` outside double quotes (2.1 has no quoting).
fn split_quoted(s: &str, sep: char, version: Version) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' && version != Version::V21 {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_property(line: &[u8], version: Version) -> Result<Property, ParseErrorKind> {
    let colon = value_colon(line, version).ok_or(ParseErrorKind::MissingColon)?;
    let header = String::from_utf8_lossy(&line[..colon]);
    let raw_value = &line[colon + 1..];
    let mut parts = split_quoted(&header, ';', version).into_iter();
    let full_name = parts.next().unwrap_or_default().trim();
    let (group, name) = match full_name.rsplit_once('.') {
        Some((g, n)) => (Some(g), n),
        None => (None, full_name),
    };
    if !valid_name(name) || group.is_some_and(|g| !g.split('.').all(valid_name)) {
        return Err(ParseErrorKind::BadName(
            full_name.chars().take(80).collect(),
        ));
    }
    let mut params = Vec::new();
    for raw in parts {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let param = parse_param(raw, version);
        if !(param.name == "TYPE" && param.values.is_empty()) {
            params.push(param);
        }
    }

    let encoding = find(&params, "ENCODING").map(|v| v.to_ascii_uppercase());
    let charset = find(&params, "CHARSET").map(str::to_string);
    let value = match encoding.as_deref() {
        Some("QUOTED-PRINTABLE") => {
            let decoded = text::decode_charset(&text::qp_decode(raw_value), charset.as_deref());
            // QP is a 2.1 habit, but some 3.0 writers use it too; either
            // way the decoded text has literal newlines.
            text::v21_to_canonical(&decoded)
        }
        Some("B" | "BASE64") => {
            let compact: String = String::from_utf8_lossy(raw_value)
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            params.retain(|p| p.name != "ENCODING");
            params.push(Param::new("ENCODING", &["b"]));
            compact
        }
        _ => {
            let decoded = text::decode_charset(raw_value, charset.as_deref());
            match version {
                Version::V21 => text::v21_to_canonical(&decoded),
                // A stray CR cannot be written back as itself; read it as
                // the newline it most likely was.
                Version::V30 | Version::V40 if decoded.contains('\r') => {
                    decoded.replace("\r\n", "\\n").replace('\r', "\\n")
                }
                Version::V30 | Version::V40 => decoded,
            }
        }
    };
    // Transfer details are re-chosen by the writer for the target version.
    params.retain(|p| {
        !(p.name == "CHARSET"
            || p.name == "ENCODING"
                && p.values.first().is_some_and(|v| {
                    matches!(
                        v.to_ascii_uppercase().as_str(),
                        "QUOTED-PRINTABLE" | "8BIT" | "7BIT"
                    )
                }))
    });
    Ok(Property {
        group: group.map(str::to_string),
        name: name.to_ascii_uppercase(),
        params,
        value,
    })
}

fn find<'a>(params: &'a [Param], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.values.first())
        .map(String::as_str)
}

fn parse_param(raw: &str, version: Version) -> Param {
    // Lines split on LF only, so a stray CR can sit in a parameter; it
    // could not be written back.
    let raw = &raw.replace('\r', " ");
    let Some((name, value)) = raw.split_once('=') else {
        // 2.1 bare parameter: `TEL;WORK;VOICE`, `;QUOTED-PRINTABLE`, `;BASE64`.
        let upper = raw.to_ascii_uppercase();
        let name = match upper.as_str() {
            "QUOTED-PRINTABLE" | "BASE64" | "8BIT" | "7BIT" | "B" => "ENCODING",
            _ => "TYPE",
        };
        return Param {
            name: name.to_string(),
            values: raw
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect(),
        };
    };
    // Only token characters, so the name reads back the same after writing.
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect::<String>()
        .to_ascii_uppercase();
    let unquote = |v: &str| {
        let v = v.trim();
        // Edge whitespace is never meaningful in a parameter, and keeping
        // it would not survive a 2.1 write (no quoting there).
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v)
            .trim();
        match version {
            Version::V40 => text::caret_decode(v).trim().to_string(),
            _ => v.to_string(),
        }
    };
    // TYPE values never contain commas, and some writers quote the whole
    // list (TYPE="home,work"), so TYPE splits inside quotes too.
    let values = if name == "TYPE" {
        value
            .split(',')
            .map(|v| unquote(v.trim().trim_matches('"')))
            .filter(|v| !v.is_empty())
            .collect()
    } else {
        vec![unquote(value)]
    };
    Param { name, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> VCard {
        let mut cards = parse(s);
        assert_eq!(cards.len(), 1, "{cards:?}");
        cards.remove(0).unwrap()
    }

    #[test]
    fn unfolds_30_and_keeps_groups() {
        let card = one(
            "BEGIN:VCARD\r\nVERSION:3.0\r\nNOTE:abc\r\n def\r\n\tghi\r\nitem1.EMAIL;TYPE=INTERNET,WORK:a@b.c\r\nitem1.X-ABLabel:Büro\r\nEND:VCARD\r\n",
        );
        assert_eq!(card.version, Version::V30);
        assert_eq!(card.properties[0].value, "abcdefghi");
        let email = &card.properties[1];
        assert_eq!(email.group.as_deref(), Some("item1"));
        assert_eq!(email.types().collect::<Vec<_>>(), vec!["INTERNET", "WORK"]);
        assert_eq!(card.properties[2].name, "X-ABLABEL");
    }

    #[test]
    fn lf_only_and_lowercase_markers() {
        let card = one("begin:vcard\nversion:4.0\nfn:X\nend:vcard");
        assert_eq!(card.version, Version::V40);
        assert_eq!(card.get("FN").unwrap().value, "X");
    }

    #[test]
    fn v21_bare_types_qp_and_charset() {
        let card = one(concat!(
            "BEGIN:VCARD\r\nVERSION:2.1\r\nTEL;WORK;VOICE:1\r\n",
            "NOTE;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:a=C3=BC=0D=0Ab; c=\r\n",
            "d\r\nN;CHARSET=UTF-8:M\u{fc}ller;Hans\r\nEND:VCARD\r\n"
        ));
        let tel = &card.properties[0];
        assert!(tel.has_type("work") && tel.has_type("VOICE"));
        let note = &card.properties[1];
        assert_eq!(note.value, "aü\\nb; cd");
        assert!(note.params.is_empty(), "{:?}", note.params);
        assert_eq!(note.text(), "aü\nb; cd");
        assert_eq!(card.properties[2].components()[0], "Müller");
    }

    #[test]
    fn latin1_bytes_without_qp() {
        let cards = parse_bytes(
            b"BEGIN:VCARD\r\nVERSION:2.1\r\nN;CHARSET=ISO-8859-1:M\xfcller\r\nEND:VCARD\r\n",
        );
        assert_eq!(cards[0].as_ref().unwrap().properties[0].value, "Müller");
    }

    #[test]
    fn v21_base64_continuation_lines() {
        let card = one(concat!(
            "BEGIN:VCARD\r\nVERSION:2.1\r\nPHOTO;ENCODING=BASE64;TYPE=GIF:R0lG\r\n",
            "    ODlh\r\nAQAB\r\n\r\nEMAIL:x@y.z\r\nEND:VCARD\r\n"
        ));
        let photo = &card.properties[0];
        assert_eq!(photo.value, "R0lGODlhAQAB");
        assert!(photo.is_binary());
        assert_eq!(card.properties[1].value, "x@y.z");
    }

    #[test]
    fn bad_card_is_reported_and_others_survive() {
        let cards = parse(concat!(
            "BEGIN:VCARD\nVERSION:3.0\nFN:A\nEND:VCARD\n",
            "BEGIN:VCARD\nVERSION:3.0\nthis line has no colon\nEND:VCARD\n",
            "BEGIN:VCARD\nVERSION:9.9\nEND:VCARD\n",
            "BEGIN:VCARD\nVERSION:3.0\nFN:D\nEND:VCARD\n",
            "BEGIN:VCARD\nVERSION:3.0\nFN:E\n"
        ));
        assert_eq!(cards.len(), 5);
        assert!(cards[0].is_ok() && cards[3].is_ok());
        let e = cards[1].as_ref().unwrap_err();
        assert_eq!(
            (e.card_index, e.line, &e.kind),
            (1, 7, &ParseErrorKind::MissingColon)
        );
        assert!(matches!(
            cards[2].as_ref().unwrap_err().kind,
            ParseErrorKind::UnsupportedVersion(_)
        ));
        let e = cards[4].as_ref().unwrap_err();
        assert_eq!(
            (e.card_index, e.line, &e.kind),
            (4, 16, &ParseErrorKind::Unterminated)
        );
    }

    #[test]
    fn nested_agent_card_fails_only_its_parent() {
        let cards = parse(concat!(
            "BEGIN:VCARD\nVERSION:2.1\nAGENT:\nBEGIN:VCARD\nFN:X\nEND:VCARD\nFN:P\nEND:VCARD\n",
            "BEGIN:VCARD\nVERSION:2.1\nFN:Q\nEND:VCARD\n"
        ));
        assert_eq!(cards.len(), 2);
        assert_eq!(cards[0].as_ref().unwrap_err().kind, ParseErrorKind::Nested);
        assert!(cards[1].is_ok());
    }

    #[test]
    fn quoted_params_and_carets() {
        let card = one(
            "BEGIN:VCARD\nVERSION:4.0\nADR;LABEL=\"1 Main St.^nSpringfield: 1\";TYPE=\"home,work\":;;1 Main St.;;;;\nEND:VCARD\n",
        );
        let adr = &card.properties[0];
        assert_eq!(adr.param_value("LABEL"), Some("1 Main St.\nSpringfield: 1"));
        assert_eq!(adr.types().collect::<Vec<_>>(), vec!["home", "work"]);
        assert_eq!(adr.value, ";;1 Main St.;;;;");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(
            parse("hello")[0].as_ref().unwrap_err().kind,
            ParseErrorKind::NoCard
        );
        assert!(parse("").is_empty());
        assert!(matches!(
            parse("BEGIN:VCARD\n:x\nEND:VCARD")[0]
                .as_ref()
                .unwrap_err()
                .kind,
            ParseErrorKind::BadName(_)
        ));
    }
}
