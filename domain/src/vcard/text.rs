//! Escaping and transfer encodings shared by the parser, the writer and the
//! mapping.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Phones and old exporters drop or add padding at will; only the alphabet
/// has to be right.
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(crate) fn decode_base64(value: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    BASE64.decode(compact.as_bytes()).ok()
}

pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Undoes canonical escaping. Unknown escapes keep their backslash, since
/// real-world data has Windows paths in notes far more often than typos.
pub(crate) fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') | Some('N') => out.push('\n'),
            Some(e @ ('\\' | ',' | ';' | ':')) => out.push(e),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Escapes TEXT for a canonical value (RFC 6350 §3.4).
pub(crate) fn escape_text(s: &str) -> String {
    escape(s, true)
}

/// Escapes one N/ADR component: commas stay bare because there they separate
/// the values of a multi-valued component.
pub(crate) fn escape_component(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, comma: bool) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' if comma => out.push_str("\\,"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a URI-ish value (URL, IMPP, tel:): only what would break the
/// line, since readers do not expect `\,` inside a URI.
pub(crate) fn escape_uri(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace("\r\n", "\\n")
        .replace(['\r', '\n'], "\\n")
}

/// Splits on `sep` where it is not escaped; the parts keep their escapes.
pub(crate) fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A 2.1 value (newlines literal, only `\;` escaped) in canonical escaping.
/// Commas stay bare: 2.1 never escaped them, so a bare comma there is
/// ambiguous and readers of the canonical form treat both spellings alike.
pub(crate) fn v21_to_canonical(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&';') => {
                chars.next();
                out.push_str("\\;");
            }
            // Our 2.1 writer doubles a backslash that would otherwise
            // escape what follows (see `canonical_to_v21`).
            '\\' if chars.peek() == Some(&'\\') => {
                chars.next();
                out.push_str("\\\\");
            }
            '\\' => out.push_str("\\\\"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Canonical escaping to 2.1 text: newlines become CRLF (2.1 is a
/// Windows-era format and phones send CRLF), only `\;` stays escaped. A
/// literal backslash is doubled only where it would otherwise escape the
/// next character, so Windows paths stay readable for phones.
pub(crate) fn canonical_to_v21(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'\\') {
            chars.next();
            let rest = chars.clone().next();
            if matches!(rest, Some('\\' | ';')) {
                out.push_str("\\\\");
            } else {
                out.push('\\');
            }
            continue;
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') | Some('N') => out.push_str("\r\n"),
            Some(';') => out.push_str("\\;"),
            Some(e @ (',' | ':')) => out.push(e),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Decodes quoted-printable; malformed `=XX` sequences are kept literally
/// rather than failing the whole card.
pub(crate) fn qp_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'=' {
            let hi = input.get(i + 1).and_then(|c| hex_value(*c));
            let lo = input.get(i + 2).and_then(|c| hex_value(*c));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
            // A trailing '=' is a soft break the line joiner already used.
            if i + 1 == input.len() {
                break;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Quoted-printable encoding of UTF-8 text, without line breaks (the writer
/// adds soft breaks when folding).
pub(crate) fn qp_encode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(bytes.len() * 2);
    for (i, &b) in bytes.iter().enumerate() {
        let last = i + 1 == bytes.len();
        let plain = (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// Decodes bytes in the named charset. UTF-8 is the default; bytes that are
/// not UTF-8 are read as Windows-1252, which is what 2.1 phones without a
/// CHARSET send.
pub(crate) fn decode_charset(bytes: &[u8], charset: Option<&str>) -> String {
    let charset = charset.map(|c| c.trim().to_ascii_lowercase());
    match charset.as_deref() {
        Some("iso-8859-1" | "latin1" | "latin-1" | "iso8859-1" | "us-ascii" | "ascii") => {
            bytes.iter().map(|&b| b as char).collect()
        }
        Some("windows-1252" | "cp1252") => windows_1252(bytes),
        _ => match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            Err(_) => windows_1252(bytes),
        },
    }
}

fn windows_1252(bytes: &[u8]) -> String {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9f => HIGH[usize::from(b - 0x80)],
            _ => b as char,
        })
        .collect()
}

/// RFC 6868 parameter value decoding (vCard 4.0 only).
pub(crate) fn caret_decode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '^' {
            match chars.peek() {
                Some('n') | Some('N') => {
                    chars.next();
                    out.push('\n');
                    continue;
                }
                Some('^') => {
                    chars.next();
                    out.push('^');
                    continue;
                }
                Some('\'') => {
                    chars.next();
                    out.push('"');
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

pub(crate) fn caret_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '^' => out.push_str("^^"),
            '\n' => out.push_str("^n"),
            '"' => out.push_str("^'"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_escapes_round_trip() {
        let raw = "a\\b;c,d\ne";
        assert_eq!(escape_text(raw), "a\\\\b\\;c\\,d\\ne");
        assert_eq!(unescape(&escape_text(raw)), raw);
        assert_eq!(escape_component("x,y"), "x,y");
        assert_eq!(unescape("C:\\dir"), "C:\\dir");
    }

    #[test]
    fn split_respects_escapes() {
        assert_eq!(split_unescaped("a\\;b;c;", ';'), vec!["a\\;b", "c", ""]);
        assert_eq!(split_unescaped("", ';'), vec![""]);
    }

    #[test]
    fn quoted_printable_both_ways() {
        assert_eq!(qp_decode(b"Jos=C3=A9"), "José".as_bytes());
        assert_eq!(qp_decode(b"bad=ZZ=4"), b"bad=ZZ=4");
        assert_eq!(qp_encode("José ="), "Jos=C3=A9 =3D");
        assert_eq!(qp_encode("end "), "end=20");
        let s = "Zeile 1\r\nZeile 2 ü";
        assert_eq!(qp_decode(qp_encode(s).as_bytes()), s.as_bytes());
    }

    #[test]
    fn v21_conversion() {
        assert_eq!(v21_to_canonical("a\r\nb\\;c\\d"), "a\\nb\\;c\\\\d");
        assert_eq!(canonical_to_v21("a\\nb\\;c\\\\d\\,e"), "a\r\nb\\;c\\d,e");
    }

    #[test]
    fn charsets() {
        assert_eq!(decode_charset(&[0x4d, 0xfc], Some("ISO-8859-1")), "Mü");
        assert_eq!(decode_charset(&[0x80, 0xfc], None), "€ü");
        assert_eq!(decode_charset("ü".as_bytes(), Some("UTF-8")), "ü");
    }

    #[test]
    fn carets() {
        assert_eq!(caret_decode("a^nb^^c^'d^x"), "a\nb^c\"d^x");
        assert_eq!(caret_encode("a\nb^c\"d"), "a^nb^^c^'d");
    }
}
