//! Element tree to WBXML bytes, in the shape SyncEvolution/libsynthesis
//! write: UTF-8, no string table, inline strings for text, OPAQUE for
//! payloads and for the nested DevInf document, and a code page switch only
//! right before a tag that needs the other page.

use super::tokens::{self, END, OPAQUE, STR_I, SWITCH_PAGE};
use super::WbxmlError;
use crate::tree::{Content, Counter, Document, Element, Namespace, Sink, Version};

pub fn encode(doc: &Document<'_>) -> Result<Vec<u8>, WbxmlError> {
    let mut out = Vec::with_capacity(encoded_len(doc)?);
    write_document(&doc.root, doc.version, &mut out)?;
    Ok(out)
}

/// Size of `encode(doc)` without building it.
pub fn encoded_len(doc: &Document<'_>) -> Result<usize, WbxmlError> {
    let mut n = Counter::default();
    write_document(&doc.root, doc.version, &mut n)?;
    Ok(n.0)
}

fn write_document<S: Sink>(
    root: &Element<'_>,
    version: Version,
    out: &mut S,
) -> Result<(), WbxmlError> {
    let doc_ns = match root.ns {
        Namespace::DevInf => Namespace::DevInf,
        _ => Namespace::SyncMl,
    };
    out.byte(0x02);
    mb_u_int32(out, tokens::public_id(doc_ns, version));
    mb_u_int32(out, tokens::CHARSET_UTF8);
    out.byte(0); // empty string table
    let mut w = Writer {
        out,
        doc_ns,
        version,
        page: tokens::PAGE_SYNCML,
    };
    w.element(root, 0)
}

struct Writer<'s, S: Sink> {
    out: &'s mut S,
    doc_ns: Namespace,
    version: Version,
    page: u8,
}

impl<S: Sink> Writer<'_, S> {
    fn element(&mut self, el: &Element<'_>, depth: usize) -> Result<(), WbxmlError> {
        if depth >= crate::tree::MAX_DEPTH {
            return Err(WbxmlError::TreeTooDeep);
        }
        let (page, ns_ok) = match (self.doc_ns, el.ns) {
            (Namespace::DevInf, Namespace::DevInf) => (0, true),
            (Namespace::SyncMl, Namespace::SyncMl) => (tokens::PAGE_SYNCML, true),
            (Namespace::SyncMl, Namespace::MetInf) => (tokens::PAGE_METINF, true),
            _ => (0, false),
        };
        let token = tokens::token(el.ns, &el.name)
            .filter(|_| ns_ok)
            .ok_or_else(|| WbxmlError::UnencodableTag {
                name: el.name.to_string(),
                ns: el.ns,
            })?;
        if page != self.page && self.doc_ns == Namespace::SyncMl {
            self.out.byte(SWITCH_PAGE);
            self.out.byte(page);
            self.page = page;
        }
        if !el.has_content() {
            self.out.byte(token);
            return Ok(());
        }
        self.out.byte(token | 0x40);
        match &el.content {
            Content::Empty => {}
            Content::Text(t) => {
                // A NUL cannot live in an inline string; OPAQUE carries it.
                if t.as_bytes().contains(&0) {
                    self.opaque(t.as_bytes());
                } else {
                    self.out.byte(STR_I);
                    self.out.put(t.as_bytes());
                    self.out.byte(0);
                }
            }
            Content::Opaque(b) => self.opaque(b),
            Content::Children(children) => {
                for child in children {
                    if child.ns == Namespace::DevInf && self.doc_ns == Namespace::SyncMl {
                        self.nested_devinf(child)?;
                    } else {
                        self.element(child, depth + 1)?;
                    }
                }
            }
        }
        self.out.byte(END);
        Ok(())
    }

    fn opaque(&mut self, bytes: &[u8]) {
        self.out.byte(OPAQUE);
        mb_u_int32(self.out, len_u32(bytes.len()));
        self.out.put(bytes);
    }

    /// DevInf inside a SyncML message is a document of its own, carried as
    /// OPAQUE; its length is measured first so it is written in one pass.
    fn nested_devinf(&mut self, devinf: &Element<'_>) -> Result<(), WbxmlError> {
        let mut n = Counter::default();
        write_document(devinf, self.version, &mut n)?;
        self.out.byte(OPAQUE);
        mb_u_int32(self.out, len_u32(n.0));
        write_document(devinf, self.version, self.out)
    }
}

fn len_u32(len: usize) -> u32 {
    // Messages are bounded by MaxMsgSize far below 4 GiB; saturate rather
    // than wrap if a caller ever builds something absurd.
    u32::try_from(len).unwrap_or(u32::MAX)
}

pub(crate) fn mb_u_int32<S: Sink + ?Sized>(out: &mut S, mut value: u32) {
    let mut buf = [0u8; 5];
    let mut i = buf.len() - 1;
    buf[i] = (value & 0x7F) as u8;
    value >>= 7;
    while value != 0 {
        i -= 1;
        buf[i] = 0x80 | (value & 0x7F) as u8;
        value >>= 7;
    }
    out.put(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::mb_u_int32;

    fn mb(v: u32) -> Vec<u8> {
        let mut out = Vec::new();
        mb_u_int32(&mut out, v);
        out
    }

    #[test]
    fn multi_byte_integers() {
        assert_eq!(mb(0), [0x00]);
        assert_eq!(mb(0x7F), [0x7F]);
        assert_eq!(mb(0x80), [0x81, 0x00]);
        assert_eq!(mb(0x0FD3), [0x9F, 0x53]);
        assert_eq!(mb(0x1201), [0xA4, 0x01]);
        assert_eq!(mb(u32::MAX), [0x8F, 0xFF, 0xFF, 0xFF, 0x7F]);
    }
}
