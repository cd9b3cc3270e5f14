//! SyncML XML to and from the element tree, with quick-xml.
//!
//! Text is taken verbatim: quick-xml's raw events do not normalise line ends,
//! and item data must keep its CRs because `Meta/Size` counts them. CDATA
//! sections become opaque content, so a tree read from XML re-encodes to
//! WBXML the way SyncEvolution would send it (payloads as OPAQUE).

use crate::tree::{Content, Counter, Document, Element, Namespace, Sink, Version, MAX_DEPTH};
use crate::wbxml;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use std::borrow::Cow;

#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("XML is not valid UTF-8 at byte {offset}")]
    InvalidUtf8 { offset: usize },
    #[error("malformed XML at byte {offset}: {source}")]
    Syntax {
        offset: usize,
        #[source]
        source: quick_xml::Error,
    },
    #[error("unknown XML entity &{name}; at byte {offset}")]
    UnknownEntity { offset: usize, name: String },
    #[error("XML element <{element}> mixes text and child elements at byte {offset}")]
    MixedContent { offset: usize, element: String },
    #[error("XML elements nested too deeply at byte {offset}")]
    TooDeep { offset: usize },
    #[error("text outside the root element at byte {offset}")]
    TextOutsideRoot { offset: usize },
    #[error("more than one root element at byte {offset}")]
    SecondRoot { offset: usize },
    #[error("XML ended before the root element was closed at byte {offset}")]
    Truncated { offset: usize },
}

/// Parses SyncML XML; text borrows from `input` where no entity or charset
/// conversion was needed. UTF-8 is the norm; documents that declare
/// ISO-8859-1 (some Sony Ericsson phones) are converted first, and byte
/// offsets in errors then count characters of the converted text.
pub fn parse(input: &[u8]) -> Result<Document<'_>, XmlError> {
    if declares_latin1(input) {
        let text: String = input.iter().map(|&b| char::from(b)).collect();
        return parse_str(&text).map(Document::into_owned);
    }
    let text = std::str::from_utf8(input).map_err(|e| XmlError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    parse_str(text)
}

fn declares_latin1(input: &[u8]) -> bool {
    let Some(rest) = input.strip_prefix(b"<?xml") else {
        return false;
    };
    let decl = &rest[..rest.iter().position(|&b| b == b'>').unwrap_or(rest.len())];
    let decl = String::from_utf8_lossy(decl).to_ascii_lowercase();
    let Some(pos) = decl.find("encoding") else {
        return false;
    };
    let value = decl[pos + "encoding".len()..]
        .trim_start_matches(|c: char| c == '=' || c.is_ascii_whitespace())
        .trim_start_matches(['"', '\'']);
    ["iso-8859-1", "iso8859-1", "latin1", "latin-1"]
        .iter()
        .any(|n| value.starts_with(n))
}

fn parse_str(text: &str) -> Result<Document<'_>, XmlError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Element<'_>> = Vec::with_capacity(16);
    let mut root: Option<Element<'_>> = None;
    let mut root_version: Option<Version> = None;

    loop {
        let offset = reader.buffer_position() as usize;
        let (resolved, event) = match reader.read_resolved_event() {
            Ok(ev) => ev,
            Err(source) => {
                return Err(XmlError::Syntax {
                    offset: reader.error_position() as usize,
                    source,
                })
            }
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let hint = namespace_hint(&resolved);
                if root.is_some() {
                    return Err(XmlError::SecondRoot { offset });
                }
                if stack.is_empty() {
                    if let ResolveResult::Bound(ns) = &resolved {
                        root_version = version_from_namespace(ns.0);
                    }
                }
                let local = e.local_name();
                let local = std::str::from_utf8(local.as_ref())
                    .map_err(|_| XmlError::InvalidUtf8 { offset })?;
                let parent_ns = stack.last().map(|p| p.ns);
                let el = new_element(local, hint, parent_ns);
                if matches!(event, Event::Start(_)) {
                    if stack.len() >= MAX_DEPTH {
                        return Err(XmlError::TooDeep { offset });
                    }
                    stack.push(el);
                } else {
                    attach(&mut stack, &mut root, el, offset)?;
                }
            }
            Event::End(_) => {
                // quick-xml has already checked that the end tag matches.
                if let Some(el) = stack.pop() {
                    attach(&mut stack, &mut root, el, offset)?;
                }
            }
            Event::Text(t) => add_text(&mut stack, utf8(t.into_inner(), offset)?, false, offset)?,
            Event::CData(c) => add_text(&mut stack, utf8(c.into_inner(), offset)?, true, offset)?,
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => predefined_entity(&r).ok_or_else(|| XmlError::UnknownEntity {
                        offset,
                        name: String::from_utf8_lossy(&r).into_owned(),
                    })?,
                    Err(source) => return Err(XmlError::Syntax { offset, source }),
                };
                add_text(&mut stack, Cow::Owned(c.to_string()), false, offset)?;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    let end = reader.buffer_position() as usize;
    if !stack.is_empty() {
        return Err(XmlError::Truncated { offset: end });
    }
    let root = root.ok_or(XmlError::Truncated { offset: end })?;
    let version = root_version
        .or_else(|| version_from_tree(&root))
        .unwrap_or(Version::V1_2);
    Ok(Document { version, root })
}

fn utf8(bytes: Cow<'_, [u8]>, offset: usize) -> Result<Cow<'_, str>, XmlError> {
    match bytes {
        Cow::Borrowed(b) => std::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|_| XmlError::InvalidUtf8 { offset }),
        Cow::Owned(v) => String::from_utf8(v)
            .map(Cow::Owned)
            .map_err(|_| XmlError::InvalidUtf8 { offset }),
    }
}

fn predefined_entity(name: &[u8]) -> Option<char> {
    Some(match name {
        b"lt" => '<',
        b"gt" => '>',
        b"amp" => '&',
        b"apos" => '\'',
        b"quot" => '"',
        _ => return None,
    })
}

fn namespace_hint(resolved: &ResolveResult<'_>) -> Option<Namespace> {
    let ResolveResult::Bound(ns) = resolved else {
        return None;
    };
    let uri = ns.0;
    if uri.len() >= 13 && uri[..13].eq_ignore_ascii_case(b"syncml:syncml") {
        Some(Namespace::SyncMl)
    } else if uri.eq_ignore_ascii_case(b"syncml:metinf") {
        Some(Namespace::MetInf)
    } else if uri.eq_ignore_ascii_case(b"syncml:devinf") {
        Some(Namespace::DevInf)
    } else {
        None
    }
}

fn version_from_namespace(uri: &[u8]) -> Option<Version> {
    const PREFIX: &[u8] = b"syncml:syncml";
    // Byte slicing: the namespace is client input and need not be ASCII.
    if uri.len() <= PREFIX.len() || !uri[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    Version::parse(std::str::from_utf8(&uri[PREFIX.len()..]).ok()?)
}

fn version_from_tree(root: &Element<'_>) -> Option<Version> {
    let verdtd = match root.ns {
        Namespace::DevInf => root.child("VerDTD"),
        _ => root.child("SyncHdr").and_then(|h| h.child("VerDTD")),
    }?;
    Version::parse(verdtd.text()?)
}

/// Places an element in a DTD. Clients forget the MetInf declaration or put
/// DevInf in the SyncML namespace, so a declared namespace only wins when
/// the name belongs to it; otherwise the parent's DTD, then any DTD that has
/// the name, decide (names shared by two DTDs stay with the parent's).
fn new_element<'a>(local: &str, hint: Option<Namespace>, parent: Option<Namespace>) -> Element<'a> {
    let candidates = [
        hint,
        parent,
        Some(Namespace::SyncMl),
        Some(Namespace::MetInf),
        Some(Namespace::DevInf),
    ];
    for ns in candidates.into_iter().flatten() {
        if let Some(name) = wbxml::static_name(ns, local) {
            return Element::new(name, ns);
        }
    }
    let ns = hint.or(parent).unwrap_or(Namespace::SyncMl);
    Element::new(Cow::Owned(local.to_owned()), ns)
}

fn attach<'a>(
    stack: &mut [Element<'a>],
    root: &mut Option<Element<'a>>,
    el: Element<'a>,
    offset: usize,
) -> Result<(), XmlError> {
    let Some(parent) = stack.last_mut() else {
        *root = Some(el);
        return Ok(());
    };
    let blank = match &parent.content {
        Content::Text(t) => t.trim().is_empty(),
        Content::Opaque(b) => b.iter().all(u8::is_ascii_whitespace),
        _ => true,
    };
    if !blank {
        return Err(XmlError::MixedContent {
            offset,
            element: parent.name.to_string(),
        });
    }
    parent.push(el);
    Ok(())
}

fn add_text<'a>(
    stack: &mut [Element<'a>],
    s: Cow<'a, str>,
    cdata: bool,
    offset: usize,
) -> Result<(), XmlError> {
    let Some(el) = stack.last_mut() else {
        if s.trim().is_empty() {
            return Ok(());
        }
        return Err(XmlError::TextOutsideRoot { offset });
    };
    match &mut el.content {
        Content::Empty if cdata => {
            el.content = Content::Opaque(match s {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            })
        }
        Content::Empty => el.content = Content::Text(s),
        Content::Text(t) if cdata => {
            let mut b = std::mem::take(t).into_owned().into_bytes();
            b.extend_from_slice(s.as_bytes());
            el.content = Content::Opaque(Cow::Owned(b));
        }
        Content::Text(t) => t.to_mut().push_str(&s),
        Content::Opaque(b) => b.to_mut().extend_from_slice(s.as_bytes()),
        Content::Children(_) if s.trim().is_empty() => {}
        Content::Children(_) => {
            return Err(XmlError::MixedContent {
                offset,
                element: el.name.to_string(),
            })
        }
    }
    Ok(())
}

/// Serialises the tree the way SyncEvolution does: XML declaration, the
/// version namespace on `SyncML`, `xmlns` on every element that enters the
/// MetInf or DevInf DTD, single-quoted attributes, opaque content as CDATA.
pub fn write(doc: &Document<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(written_len(doc));
    write_into(doc, &mut out);
    out
}

/// Size of `write(doc)` without building it.
pub fn written_len(doc: &Document<'_>) -> usize {
    let mut n = Counter::default();
    write_into(doc, &mut n);
    n.0
}

fn write_into<S: Sink>(doc: &Document<'_>, out: &mut S) {
    out.put(br#"<?xml version="1.0" encoding="UTF-8"?>"#);
    write_element(&doc.root, None, doc.version, out);
}

fn write_element<S: Sink>(
    el: &Element<'_>,
    parent: Option<Namespace>,
    version: Version,
    out: &mut S,
) {
    out.byte(b'<');
    out.put(el.name.as_bytes());
    let xmlns = match (el.ns, parent) {
        (Namespace::SyncMl, None) => Some(version.syncml_namespace()),
        (Namespace::MetInf, p) if p != Some(Namespace::MetInf) => Some("syncml:metinf"),
        (Namespace::DevInf, p) if p != Some(Namespace::DevInf) => Some("syncml:devinf"),
        _ => None,
    };
    if let Some(uri) = xmlns {
        out.put(b" xmlns='");
        out.put(uri.as_bytes());
        out.byte(b'\'');
    }
    if !el.has_content() {
        out.put(b"/>");
        return;
    }
    out.byte(b'>');
    match &el.content {
        Content::Empty => {}
        Content::Text(t) => escape(t.as_bytes(), out),
        Content::Opaque(b) => cdata(b, out),
        Content::Children(children) => {
            for child in children {
                write_element(child, Some(el.ns), version, out);
            }
        }
    }
    out.put(b"</");
    out.put(el.name.as_bytes());
    out.byte(b'>');
}

fn escape<S: Sink>(text: &[u8], out: &mut S) {
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let rep: &[u8] = match b {
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'&' => b"&amp;",
            _ => continue,
        };
        out.put(&text[start..i]);
        out.put(rep);
        start = i + 1;
    }
    out.put(&text[start..]);
}

/// CDATA keeps CRLF and everything else verbatim; a `]]>` inside the data is
/// split across two sections. XML cannot carry bytes that are not UTF-8, so
/// such payloads (e.g. Latin-1 vCards from WBXML clients) are converted
/// lossily; the session layer should reply in WBXML to those clients anyway.
fn cdata<S: Sink>(bytes: &[u8], out: &mut S) {
    let text = String::from_utf8_lossy(bytes);
    let mut rest = text.as_bytes();
    out.put(b"<![CDATA[");
    while let Some(pos) = find(rest, b"]]>") {
        out.put(&rest[..pos + 2]);
        out.put(b"]]><![CDATA[");
        rest = &rest[pos + 2..];
    }
    out.put(rest);
    out.put(b"]]>");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
