//! The generic element tree shared by the XML and WBXML codecs.
//!
//! SyncML has no attributes and no mixed content, so an element is a name,
//! the DTD it belongs to and one kind of content. Keeping WBXML's distinction
//! between inline strings and OPAQUE data (XML: plain text vs CDATA) is what
//! lets a decoded message be re-encoded byte for byte.
//!
//! Content borrows where it can (`'a`): a decoded tree points into the
//! request body and a tree built from a message points into the message, so
//! payloads such as vCards and photos are not copied on their way through.

use std::borrow::Cow;
use std::fmt;

/// The DTD an element belongs to; decides the XML namespace and the WBXML
/// code page (or, for DevInf, the nested WBXML document).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    SyncMl,
    MetInf,
    DevInf,
}

/// Protocol version of a document, as carried by VerDTD, the XML namespace
/// and the WBXML public identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    V1_0,
    V1_1,
    V1_2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    pub fn parse(s: &str) -> Option<Version> {
        match s.trim() {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }

    /// The `VerProto` value that goes with this DTD version.
    pub fn proto(self) -> &'static str {
        match self {
            Version::V1_0 => "SyncML/1.0",
            Version::V1_1 => "SyncML/1.1",
            Version::V1_2 => "SyncML/1.2",
        }
    }

    /// Default namespace of the `SyncML` root element in XML.
    pub fn syncml_namespace(self) -> &'static str {
        match self {
            Version::V1_0 => "SYNCML:SYNCML1.0",
            Version::V1_1 => "SYNCML:SYNCML1.1",
            Version::V1_2 => "SYNCML:SYNCML1.2",
        }
    }

    /// The well-known URI a device information document lives at.
    pub fn devinf_uri(self) -> &'static str {
        match self {
            Version::V1_0 => "./devinf10",
            Version::V1_1 => "./devinf11",
            Version::V1_2 => "./devinf12",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A whole document: a SyncML message or a standalone DevInf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document<'a> {
    pub version: Version,
    pub root: Element<'a>,
}

impl Document<'_> {
    pub fn into_owned(self) -> Document<'static> {
        Document {
            version: self.version,
            root: self.root.into_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element<'a> {
    /// Known names borrow the static tag tables, so decoding allocates no names.
    pub name: Cow<'static, str>,
    pub ns: Namespace,
    pub content: Content<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Content<'a> {
    #[default]
    Empty,
    /// WBXML inline string / XML character data.
    Text(Cow<'a, str>),
    /// WBXML OPAQUE / XML CDATA: item payloads whose bytes (CRLF, foreign
    /// charsets) must survive untouched.
    Opaque(Cow<'a, [u8]>),
    Children(Vec<Element<'a>>),
}

impl<'a> Element<'a> {
    pub fn new(name: impl Into<Cow<'static, str>>, ns: Namespace) -> Element<'a> {
        Element {
            name: name.into(),
            ns,
            content: Content::Empty,
        }
    }

    pub fn with_text(
        name: impl Into<Cow<'static, str>>,
        ns: Namespace,
        text: impl Into<Cow<'a, str>>,
    ) -> Element<'a> {
        Element {
            name: name.into(),
            ns,
            content: Content::Text(text.into()),
        }
    }

    pub fn with_opaque(
        name: impl Into<Cow<'static, str>>,
        ns: Namespace,
        bytes: impl Into<Cow<'a, [u8]>>,
    ) -> Element<'a> {
        Element {
            name: name.into(),
            ns,
            content: Content::Opaque(bytes.into()),
        }
    }

    pub fn with_children(
        name: impl Into<Cow<'static, str>>,
        ns: Namespace,
        children: Vec<Element<'a>>,
    ) -> Element<'a> {
        Element {
            name: name.into(),
            ns,
            content: Content::Children(children),
        }
    }

    pub fn children(&self) -> &[Element<'a>] {
        match &self.content {
            Content::Children(c) => c,
            _ => &[],
        }
    }

    pub fn child(&self, name: &str) -> Option<&Element<'a>> {
        self.children().iter().find(|c| c.name == name)
    }

    pub fn children_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = &'s Element<'a>> + 's {
        self.children().iter().filter(move |c| c.name == name)
    }

    /// Appends a child; an element that had no content becomes a container.
    pub fn push(&mut self, child: Element<'a>) {
        match &mut self.content {
            Content::Children(c) => c.push(child),
            other => *other = Content::Children(vec![child]),
        }
    }

    /// The character content, whether it came as text or opaque data.
    /// `None` for containers and for opaque data that is not UTF-8.
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Empty => Some(""),
            Content::Text(t) => Some(t),
            Content::Opaque(b) => std::str::from_utf8(b).ok(),
            Content::Children(_) => None,
        }
    }

    /// The raw bytes of text or opaque content.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.content {
            Content::Empty => Some(b""),
            Content::Text(t) => Some(t.as_bytes()),
            Content::Opaque(b) => Some(b),
            Content::Children(_) => None,
        }
    }

    /// Detaches the tree from the buffer it borrows, for keeping it around
    /// (unknown commands, raw CTCap).
    pub fn into_owned(self) -> Element<'static> {
        Element {
            name: self.name,
            ns: self.ns,
            content: match self.content {
                Content::Empty => Content::Empty,
                Content::Text(t) => Content::Text(Cow::Owned(t.into_owned())),
                Content::Opaque(b) => Content::Opaque(Cow::Owned(b.into_owned())),
                Content::Children(c) => {
                    Content::Children(c.into_iter().map(Element::into_owned).collect())
                }
            },
        }
    }

    pub fn has_content(&self) -> bool {
        match &self.content {
            Content::Empty => false,
            Content::Text(t) => !t.is_empty(),
            Content::Opaque(b) => !b.is_empty(),
            Content::Children(c) => !c.is_empty(),
        }
    }
}

/// Where encoders write: a buffer, or a counter that only measures, so the
/// session layer can check MaxMsgSize without building the bytes.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn byte(&mut self, b: u8) {
        self.put(&[b]);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn byte(&mut self, b: u8) {
        self.push(b);
    }
}

#[derive(Default)]
pub(crate) struct Counter(pub usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// Deepest element nesting accepted from the wire. Real messages stay below
/// 15 levels; the cap keeps hostile input from building trees whose
/// recursive drop or traversal would overflow the stack.
pub const MAX_DEPTH: usize = 64;
