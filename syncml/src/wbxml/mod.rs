//! WBXML 1.1–1.3 codec for SyncML and DevInf documents (no crate for this
//! exists). Decoding accepts what real clients send (string tables, FPI
//! public ids, ISO-8859-1, entities); encoding writes what SyncEvolution
//! writes, so captured traffic re-encodes byte for byte.

mod decode;
mod encode;
mod tokens;

pub use decode::decode;
pub use encode::{encode, encoded_len};

pub(crate) use tokens::static_name;

use crate::tree::Namespace;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WbxmlError {
    #[error("WBXML truncated at byte {offset}: expected {what}")]
    Truncated { offset: usize, what: &'static str },
    #[error("WBXML multi-byte integer at byte {offset} does not fit 32 bits")]
    IntegerOverflow { offset: usize },
    #[error("unsupported WBXML version 0x{version:02x} at byte {offset}")]
    UnsupportedVersion { offset: usize, version: u8 },
    #[error("unknown WBXML public identifier 0x{public_id:x} at byte {offset}")]
    UnknownPublicId { offset: usize, public_id: u32 },
    #[error("unsupported WBXML charset (MIBenum {mib}) at byte {offset}")]
    UnsupportedCharset { offset: usize, mib: u32 },
    #[error("unsupported WBXML token 0x{token:02x} at byte {offset}")]
    UnsupportedToken { offset: usize, token: u8 },
    #[error("unknown WBXML tag 0x{token:02x} on code page {page} at byte {offset}")]
    UnknownTag { offset: usize, token: u8, page: u8 },
    #[error("unknown WBXML code page {page} at byte {offset}")]
    UnknownCodePage { offset: usize, page: u8 },
    #[error("WBXML END without open element at byte {offset}")]
    UnexpectedEnd { offset: usize },
    #[error("WBXML content outside any element at byte {offset}")]
    ContentOutsideElement { offset: usize },
    #[error("WBXML string table reference {index} out of range at byte {offset}")]
    BadStringTableRef { offset: usize, index: u32 },
    #[error("WBXML entity {code} is not a character at byte {offset}")]
    BadEntity { offset: usize, code: u32 },
    #[error("invalid UTF-8 in WBXML string at byte {offset}")]
    InvalidUtf8 { offset: usize },
    #[error("WBXML element mixes text and child elements at byte {offset}")]
    MixedContent { offset: usize },
    #[error("WBXML elements nested too deeply at byte {offset}")]
    TooDeep { offset: usize },
    #[error("unexpected data after the WBXML root element at byte {offset}")]
    TrailingData { offset: usize },
    #[error("element <{name}> ({ns:?}) has no WBXML token")]
    UnencodableTag { name: String, ns: Namespace },
    #[error("element tree nested too deeply to encode")]
    TreeTooDeep,
}
