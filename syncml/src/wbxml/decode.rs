//! WBXML bytes to element tree.

use super::tokens::{self, END, ENTITY, OPAQUE, STR_I, STR_T, SWITCH_PAGE};
use super::WbxmlError;
use crate::tree::{Content, Document, Element, Namespace, Version, MAX_DEPTH};
use std::borrow::Cow;

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of `data` inside the outermost input, so errors inside a
    /// nested DevInf document still point at the right byte.
    base: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, WbxmlError> {
        let b = *self.data.get(self.pos).ok_or(WbxmlError::Truncated {
            offset: self.offset(),
            what,
        })?;
        self.pos += 1;
        Ok(b)
    }

    fn mb_u_int32(&mut self, what: &'static str) -> Result<u32, WbxmlError> {
        let start = self.offset();
        let mut value: u32 = 0;
        // 5 bytes carry 35 bits; anything longer (or above 32 bits) is garbage.
        for _ in 0..5 {
            let b = self.byte(what)?;
            if value > (u32::MAX >> 7) {
                return Err(WbxmlError::IntegerOverflow { offset: start });
            }
            value = (value << 7) | u32::from(b & 0x7F);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WbxmlError::IntegerOverflow { offset: start })
    }

    /// Takes `len` bytes; the length comes from the wire, so it is checked
    /// against what is left before anything is sliced or allocated.
    fn take(&mut self, len: u32, what: &'static str) -> Result<&'a [u8], WbxmlError> {
        let len = len as usize;
        if len > self.data.len() - self.pos {
            return Err(WbxmlError::Truncated {
                offset: self.offset(),
                what,
            });
        }
        let s = &self.data[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }

    fn c_string(&mut self, what: &'static str) -> Result<&'a [u8], WbxmlError> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(WbxmlError::Truncated {
                offset: self.offset(),
                what,
            })?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }
}

#[derive(Clone, Copy)]
enum Charset {
    Utf8,
    Latin1,
}

struct Header<'a> {
    ns: Namespace,
    version: Version,
    charset: Charset,
    string_table: &'a [u8],
}

fn header<'a>(cur: &mut Cursor<'a>) -> Result<Header<'a>, WbxmlError> {
    let version_offset = cur.offset();
    let wbxml_version = cur.byte("WBXML version")?;
    if !(0x01..=0x03).contains(&wbxml_version) {
        return Err(WbxmlError::UnsupportedVersion {
            offset: version_offset,
            version: wbxml_version,
        });
    }
    let pub_offset = cur.offset();
    let public_id = cur.mb_u_int32("public identifier")?;
    let fpi_index = if public_id == 0 {
        Some(cur.mb_u_int32("public identifier string index")?)
    } else {
        None
    };
    let charset_offset = cur.offset();
    let charset = match cur.mb_u_int32("charset")? {
        // 0 = "unknown": clients that send it write UTF-8.
        tokens::CHARSET_UTF8 | 0 | 3 => Charset::Utf8,
        4 => Charset::Latin1,
        mib => {
            return Err(WbxmlError::UnsupportedCharset {
                offset: charset_offset,
                mib,
            })
        }
    };
    let table_len = cur.mb_u_int32("string table length")?;
    let string_table = cur.take(table_len, "string table")?;
    let kind = match fpi_index {
        None => tokens::from_public_id(public_id),
        Some(index) => table_string(string_table, index).and_then(tokens::from_fpi),
    };
    let (ns, version) = kind.ok_or(WbxmlError::UnknownPublicId {
        offset: pub_offset,
        public_id,
    })?;
    Ok(Header {
        ns,
        version,
        charset,
        string_table,
    })
}

fn table_string(table: &[u8], index: u32) -> Option<&[u8]> {
    let rest = table.get(index as usize..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..end])
}

/// Decodes a WBXML document; strings and OPAQUE data borrow from `input`.
pub fn decode(input: &[u8]) -> Result<Document<'_>, WbxmlError> {
    decode_at(input, 0, false)
}

fn decode_at(input: &[u8], base: usize, nested: bool) -> Result<Document<'_>, WbxmlError> {
    let mut cur = Cursor {
        data: input,
        pos: 0,
        base,
    };
    let hdr = header(&mut cur)?;
    let mut page = tokens::PAGE_SYNCML;
    let mut stack: Vec<Element<'_>> = Vec::with_capacity(16);
    let mut root: Option<Element<'_>> = None;

    while root.is_none() {
        let offset = cur.offset();
        let tok = cur.byte("element")?;
        match tok {
            SWITCH_PAGE => page = cur.byte("code page")?,
            END => {
                let el = stack.pop().ok_or(WbxmlError::UnexpectedEnd { offset })?;
                attach(&mut stack, &mut root, el, offset)?;
            }
            STR_I => {
                let raw = cur.c_string("inline string")?;
                let s = decode_string(raw, hdr.charset, offset)?;
                add_text(&mut stack, s, offset)?;
            }
            STR_T => {
                let index = cur.mb_u_int32("string table reference")?;
                let raw = table_string(hdr.string_table, index)
                    .ok_or(WbxmlError::BadStringTableRef { offset, index })?;
                let s = decode_string(raw, hdr.charset, offset)?;
                add_text(&mut stack, s, offset)?;
            }
            ENTITY => {
                let code = cur.mb_u_int32("entity")?;
                let c = char::from_u32(code).ok_or(WbxmlError::BadEntity { offset, code })?;
                add_text(&mut stack, Cow::Owned(c.to_string()), offset)?;
            }
            OPAQUE => {
                let len = cur.mb_u_int32("opaque length")?;
                let data_offset = cur.offset();
                let blob = cur.take(len, "opaque data")?;
                let parent = stack
                    .last_mut()
                    .ok_or(WbxmlError::ContentOutsideElement { offset })?;
                match nested_devinf(parent, blob, hdr.ns, nested, data_offset) {
                    Some(devinf) => add_child(parent, devinf.root, offset)?,
                    None => add_opaque(parent, blob, offset)?,
                }
            }
            _ => {
                if tok & 0x80 != 0 || tok & 0x3F < 0x05 {
                    // Attributes, LITERAL, EXT_*, PI: none is used by SyncML.
                    return Err(WbxmlError::UnsupportedToken { offset, token: tok });
                }
                let ns = match (hdr.ns, page) {
                    (Namespace::DevInf, 0) => Namespace::DevInf,
                    (Namespace::SyncMl, tokens::PAGE_SYNCML) => Namespace::SyncMl,
                    (Namespace::SyncMl, tokens::PAGE_METINF) => Namespace::MetInf,
                    _ => return Err(WbxmlError::UnknownCodePage { offset, page }),
                };
                let name =
                    tokens::name(ns, tok & 0x3F, hdr.version).ok_or(WbxmlError::UnknownTag {
                        offset,
                        token: tok,
                        page,
                    })?;
                let el = Element::new(name, ns);
                if tok & 0x40 != 0 {
                    if stack.len() >= MAX_DEPTH {
                        return Err(WbxmlError::TooDeep { offset });
                    }
                    stack.push(el);
                } else {
                    attach(&mut stack, &mut root, el, offset)?;
                }
            }
        }
    }
    if !cur.at_end() {
        return Err(WbxmlError::TrailingData {
            offset: cur.offset(),
        });
    }
    let root = root.ok_or(WbxmlError::Truncated {
        offset: cur.offset(),
        what: "root element",
    })?;
    Ok(Document {
        version: hdr.version,
        root,
    })
}

/// SyncEvolution/libsynthesis put DevInf into `Data` as a complete WBXML
/// document inside OPAQUE; anything that does not decode as one stays bytes.
fn nested_devinf<'a>(
    parent: &Element<'_>,
    blob: &'a [u8],
    doc_ns: Namespace,
    nested: bool,
    offset: usize,
) -> Option<Document<'a>> {
    if nested || doc_ns != Namespace::SyncMl || parent.name != "Data" || parent.has_content() {
        return None;
    }
    if !matches!(blob.first(), Some(0x01..=0x03)) {
        return None;
    }
    let doc = decode_at(blob, offset, true).ok()?;
    (doc.root.ns == Namespace::DevInf).then_some(doc)
}

fn attach<'a>(
    stack: &mut [Element<'a>],
    root: &mut Option<Element<'a>>,
    el: Element<'a>,
    offset: usize,
) -> Result<(), WbxmlError> {
    match stack.last_mut() {
        Some(parent) => add_child(parent, el, offset),
        None => {
            *root = Some(el);
            Ok(())
        }
    }
}

fn decode_string(raw: &[u8], charset: Charset, offset: usize) -> Result<Cow<'_, str>, WbxmlError> {
    match charset {
        Charset::Utf8 => match std::str::from_utf8(raw) {
            Ok(s) => Ok(Cow::Borrowed(s)),
            Err(e) => Err(WbxmlError::InvalidUtf8 {
                offset: offset + 1 + e.valid_up_to(),
            }),
        },
        Charset::Latin1 => Ok(Cow::Owned(raw.iter().map(|&b| char::from(b)).collect())),
    }
}

fn add_text<'a>(
    stack: &mut [Element<'a>],
    s: Cow<'a, str>,
    offset: usize,
) -> Result<(), WbxmlError> {
    let el = stack
        .last_mut()
        .ok_or(WbxmlError::ContentOutsideElement { offset })?;
    match &mut el.content {
        Content::Empty => el.content = Content::Text(s),
        Content::Text(t) => t.to_mut().push_str(&s),
        Content::Opaque(b) => b.to_mut().extend_from_slice(s.as_bytes()),
        Content::Children(_) if s.trim().is_empty() => {}
        Content::Children(_) => return Err(WbxmlError::MixedContent { offset }),
    }
    Ok(())
}

fn add_opaque<'a>(el: &mut Element<'a>, blob: &'a [u8], offset: usize) -> Result<(), WbxmlError> {
    match &mut el.content {
        Content::Empty => el.content = Content::Opaque(Cow::Borrowed(blob)),
        Content::Text(t) => {
            let mut b = std::mem::take(t).into_owned().into_bytes();
            b.extend_from_slice(blob);
            el.content = Content::Opaque(Cow::Owned(b));
        }
        Content::Opaque(b) => b.to_mut().extend_from_slice(blob),
        Content::Children(_) => return Err(WbxmlError::MixedContent { offset }),
    }
    Ok(())
}

fn add_child<'a>(
    el: &mut Element<'a>,
    child: Element<'a>,
    offset: usize,
) -> Result<(), WbxmlError> {
    let blank = match &el.content {
        Content::Text(t) => t.trim().is_empty(),
        Content::Opaque(b) => b.iter().all(u8::is_ascii_whitespace),
        _ => true,
    };
    if !blank {
        return Err(WbxmlError::MixedContent { offset });
    }
    el.push(child);
    Ok(())
}
