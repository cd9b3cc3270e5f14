//! vCard 2.1 / 3.0 / 4.0 codec and its mapping onto [`ContactCard`].
//!
//! Two layers, so that what we do not model is never lost:
//! * the codec ([`parse`], [`write`]) turns text into [`VCard`]s of
//!   [`Property`]s and back. Transfer encodings (quoted-printable, CHARSET,
//!   2.1 folding) are undone on input, so a [`Property`] value is always
//!   Unicode text in one canonical escaping (RFC 6350's `\\ \n \, \;`),
//!   whatever version it came from; the writer re-encodes for the target.
//! * the mapping ([`mapping`]) turns a [`VCard`] into a [`ContactCard`] and
//!   keeps every property and parameter it does not model in the card's
//!   per-source [`VcardExtras`], which the export writes back.
//!
//! [`ContactCard`]: crate::contacts::ContactCard
//! [`VcardExtras`]: crate::contacts::VcardExtras

pub mod mapping;
mod parse;
mod text;
mod write;

pub use mapping::{export, from_vcard, import, import_bytes, to_vcard};
pub use parse::{parse, parse_bytes};
pub(crate) use text::decode_base64;
pub use write::{write, write_all};

use serde::{Deserialize, Serialize};

/// The vCard versions we read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Version {
    #[serde(rename = "2.1")]
    V21,
    #[serde(rename = "3.0")]
    V30,
    #[serde(rename = "4.0")]
    V40,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V21 => "2.1",
            Version::V30 => "3.0",
            Version::V40 => "4.0",
        }
    }

    pub fn from_value(s: &str) -> Option<Version> {
        match s.trim() {
            "2.1" => Some(Version::V21),
            "3.0" => Some(Version::V30),
            "4.0" => Some(Version::V40),
            _ => None,
        }
    }

    /// The SyncML / HTTP media type a peer uses for this version.
    pub fn media_type(self) -> &'static str {
        match self {
            Version::V21 => "text/x-vcard",
            Version::V30 | Version::V40 => "text/vcard",
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One parameter. Names are upper-cased; 2.1's bare `TEL;WORK` becomes
/// `TYPE=WORK`, and `TYPE` lists are split so callers never re-parse them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl Param {
    pub fn new(name: &str, values: &[&str]) -> Param {
        Param {
            name: name.to_ascii_uppercase(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }
}

/// One content line. `name` is upper-cased; `value` is in canonical escaping
/// (see the module docs); binary values are base64 with an `ENCODING=b`
/// parameter whichever spelling the source used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Property {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    #[serde(default)]
    pub value: String,
}

impl Property {
    pub fn new(name: &str, value: impl Into<String>) -> Property {
        Property {
            group: None,
            name: name.to_ascii_uppercase(),
            params: Vec::new(),
            value: value.into(),
        }
    }

    pub fn with_param(mut self, name: &str, values: &[&str]) -> Property {
        self.params.push(Param::new(name, values));
        self
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// First value of a parameter.
    pub fn param_value(&self, name: &str) -> Option<&str> {
        self.param(name)
            .and_then(|p| p.values.first())
            .map(String::as_str)
    }

    /// All `TYPE` values, across repeated `TYPE` parameters.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .filter(|p| p.name == "TYPE")
            .flat_map(|p| p.values.iter().map(String::as_str))
    }

    pub fn has_type(&self, ty: &str) -> bool {
        self.types().any(|t| t.eq_ignore_ascii_case(ty))
    }

    pub fn is_binary(&self) -> bool {
        self.param_value("ENCODING")
            .is_some_and(|e| e.eq_ignore_ascii_case("b"))
    }

    /// The value as plain text (escapes undone).
    pub fn text(&self) -> String {
        text::unescape(&self.value)
    }

    /// The `;`-separated components (N, ADR, ORG), each unescaped.
    pub fn components(&self) -> Vec<String> {
        text::split_unescaped(&self.value, ';')
            .into_iter()
            .map(text::unescape)
            .collect()
    }

    /// The `,`-separated list (CATEGORIES, NICKNAME), each unescaped.
    pub fn list(&self) -> Vec<String> {
        text::split_unescaped(&self.value, ',')
            .into_iter()
            .map(|s| text::unescape(s).trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// One card. `VERSION`, `BEGIN` and `END` are not in `properties`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VCard {
    pub version: Version,
    pub properties: Vec<Property>,
}

impl VCard {
    pub fn new(version: Version) -> VCard {
        VCard {
            version,
            properties: Vec::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Property> {
        self.properties
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Property> + 'a {
        self.properties
            .iter()
            .filter(move |p| p.name.eq_ignore_ascii_case(name))
    }
}

/// Why one card of a file could not be read. The other cards of the file
/// are still returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("vCard #{card_index} (line {line}): {kind}")]
pub struct ParseError {
    /// 0-based position of the card in the file.
    pub card_index: usize,
    /// 1-based physical line where the problem was found.
    pub line: usize,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("no BEGIN:VCARD found")]
    NoCard,
    #[error("BEGIN:VCARD without END:VCARD")]
    Unterminated,
    #[error("content line without ':'")]
    MissingColon,
    #[error("invalid property name {0:?}")]
    BadName(String),
    #[error("unsupported VERSION {0:?}")]
    UnsupportedVersion(String),
    #[error("nested vCard (2.1 AGENT) is not supported")]
    Nested,
}
