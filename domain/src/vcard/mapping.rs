//! [`VCard`] ⇄ [`ContactCard`].
//!
//! Import maps what the model has a place for and files everything else
//! under the card's [`VcardExtras`] for that source: whole properties it does
//! not model, and the leftover parameters and groups of those it does
//! (keyed by the model value, see [`ParamAttachment`]). Export regenerates
//! the modelled properties for the target version and re-attaches the rest,
//! so import → export → import keeps every property.

use std::collections::{HashMap, HashSet};

use super::text::{self, escape_component, escape_text, escape_uri};
use super::write::split_data_uri;
use super::{parse, parse_bytes, write_all, Param, ParseError, Property, VCard, Version};
use crate::contacts::{
    Address, ContactCard, CustomField, ImHandle, Labeled, ParamAttachment, Photo, VcardExtras,
};

/// Parses a file and maps every readable card; `source` names where the
/// cards came from (e.g. "syncml:IMEI:35...", "import"), so their unmodelled
/// rest is written back only to that source.
pub fn import(input: &str, source: &str) -> Vec<Result<ContactCard, ParseError>> {
    parse(input)
        .into_iter()
        .map(|r| r.map(|card| from_vcard(&card, source)))
        .collect()
}

/// Like [`import`], for bytes whose charset is only known per property
/// (2.1 phones sending ISO-8859-1 without quoted-printable).
pub fn import_bytes(input: &[u8], source: &str) -> Vec<Result<ContactCard, ParseError>> {
    parse_bytes(input)
        .into_iter()
        .map(|r| r.map(|card| from_vcard(&card, source)))
        .collect()
}

/// Writes cards as one file for `version`, with the unmodelled rest of
/// `source` (if any) put back.
pub fn export<'a>(
    cards: impl IntoIterator<Item = &'a ContactCard>,
    version: Version,
    source: Option<&str>,
) -> String {
    let vcards: Vec<VCard> = cards
        .into_iter()
        .map(|c| to_vcard(c, version, source))
        .collect();
    write_all(&vcards, version)
}

/// X-properties that are instant-messaging handles in vCard 2.1/3.0, with
/// the IMPP URI scheme each one stands for.
const IM_PROPERTIES: &[(&str, &str)] = &[
    ("X-JABBER", "xmpp"),
    ("X-AIM", "aim"),
    ("X-ICQ", "icq"),
    ("X-MSN", "msnim"),
    ("X-YAHOO", "ymsgr"),
    ("X-SKYPE", "skype"),
    ("X-SKYPE-USERNAME", "skype"),
    ("X-GOOGLE-TALK", "gtalk"),
    ("X-GADUGADU", "gg"),
    ("X-QQ", "qq"),
    ("X-SIP", "sip"),
];

const ANNIVERSARY_PROPERTIES: &[&str] =
    &["ANNIVERSARY", "X-ANNIVERSARY", "X-EVOLUTION-ANNIVERSARY"];

/// Phone TYPE values the label stands for, in the order labels are built.
const PHONE_WORDS: &[(&str, &str)] = &[
    ("home", "HOME"),
    ("work", "WORK"),
    ("mobile", "CELL"),
    ("fax", "FAX"),
    ("pager", "PAGER"),
];

const PLACE_WORDS: &[(&str, &str)] = &[("home", "HOME"), ("work", "WORK")];

fn non_empty(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Apple writes its stock labels as `_$!<Mobile>!$_`.
fn clean_label(raw: &str) -> String {
    let t = raw.trim();
    match t.strip_prefix("_$!<").and_then(|r| r.strip_suffix(">!$_")) {
        Some(inner) => inner.to_lowercase(),
        None => t.to_string(),
    }
}

struct Importer<'a> {
    card: ContactCard,
    extras: VcardExtras,
    /// Apple `itemN.X-ABLabel` values by lower-cased group.
    ab_labels: HashMap<String, String>,
    used_label_groups: HashSet<String>,
    seen: HashSet<&'a str>,
}

impl<'a> Importer<'a> {
    /// The label of a property from its TYPE words (or an Apple label on its
    /// group), and the TYPE values that label accounts for.
    fn label(&mut self, prop: &Property, words: &[(&str, &str)]) -> (Option<String>, Vec<String>) {
        if let Some(group) = &prop.group {
            let key = group.to_ascii_lowercase();
            if let Some(label) = self.ab_labels.get(&key) {
                self.used_label_groups.insert(key);
                return (Some(label.clone()), Vec::new());
            }
        }
        let mut label = Vec::new();
        let mut consumed = Vec::new();
        for (word, ty) in words {
            if let Some(t) = prop.types().find(|t| t.eq_ignore_ascii_case(ty)) {
                label.push(*word);
                consumed.push(t.to_string());
            }
        }
        ((!label.is_empty()).then(|| label.join(" ")), consumed)
    }

    /// Files the parameters and group of a modelled property that the model
    /// did not take.
    fn attach(&mut self, prop: &Property, key: &str, types: &[String], params: &[&str]) {
        let mut left = Vec::new();
        for p in &prop.params {
            if params.iter().any(|n| p.name.eq_ignore_ascii_case(n)) {
                continue;
            }
            if p.name == "TYPE" {
                let values: Vec<String> = p
                    .values
                    .iter()
                    .filter(|v| !types.iter().any(|t| t.eq_ignore_ascii_case(v)))
                    .cloned()
                    .collect();
                if !values.is_empty() {
                    left.push(Param {
                        name: "TYPE".into(),
                        values,
                    });
                }
                continue;
            }
            left.push(p.clone());
        }
        // X- names are remembered even without parameters: the export
        // writes X-JABBER back as X-JABBER, not as IMPP.
        if left.is_empty() && prop.group.is_none() && !prop.name.starts_with("X-") {
            return;
        }
        self.extras.attachments.push(ParamAttachment {
            property: prop.name.clone(),
            key: key.to_string(),
            group: prop.group.clone(),
            params: left,
        });
    }

    fn keep(&mut self, prop: &Property) {
        self.extras.properties.push(prop.clone());
    }

    /// True the first time a singleton property is seen.
    fn first(&mut self, name: &'a str) -> bool {
        self.seen.insert(name)
    }

    fn property(&mut self, prop: &'a Property) {
        let name = prop.name.as_str();
        let text = prop.text();
        // SyncEvolution sends every field it knows, empty ones included.
        if text.trim().is_empty() && !prop.name.starts_with("X-") {
            return;
        }
        match name {
            "FN" if self.first("FN") => {
                self.card.formatted_name = text.trim().to_string();
                self.attach(prop, "", &[], &[]);
            }
            "N" if self.first("N") => {
                let mut parts = prop.components().into_iter().map(non_empty);
                let mut next = || parts.next().flatten();
                self.card.family_name = next();
                self.card.given_name = next();
                self.card.additional_names = next();
                self.card.name_prefix = next();
                self.card.name_suffix = next();
                self.attach(prop, "", &[], &[]);
            }
            // Repeated NICKNAME / CATEGORIES lines merge into one list; the
            // export writes one line, with the first line's parameters.
            "NICKNAME" => {
                if self.first("NICKNAME") {
                    self.attach(prop, "", &[], &[]);
                }
                self.card.nicknames.extend(prop.list());
            }
            "ORG" if self.first("ORG") => {
                let mut parts = prop.components().into_iter();
                self.card.organization = parts.next().and_then(non_empty);
                self.card.departments = parts.filter_map(non_empty).collect();
                self.attach(prop, "", &[], &[]);
            }
            "TITLE" | "ROLE" => {
                let value = text.trim().to_string();
                self.attach(prop, &value, &[], &[]);
                if name == "TITLE" {
                    self.card.titles.push(value);
                } else {
                    self.card.roles.push(value);
                }
            }
            "EMAIL" => {
                let value = text.trim().to_string();
                let (label, used) = self.label(prop, PLACE_WORDS);
                self.attach(prop, &value, &used, &[]);
                self.card.emails.push(Labeled { value, label });
            }
            "TEL" => {
                let trimmed = text.trim();
                let value = trimmed.strip_prefix("tel:").unwrap_or(trimmed).to_string();
                let (label, used) = self.label(prop, PHONE_WORDS);
                self.attach(prop, &value, &used, &[]);
                self.card.phones.push(Labeled { value, label });
            }
            "ADR" => {
                let mut parts = prop.components().into_iter();
                let mut next = || parts.next().unwrap_or_default();
                let (label, used) = self.label(prop, PLACE_WORDS);
                let address = Address {
                    label,
                    po_box: next(),
                    extended: next(),
                    street: next(),
                    locality: next(),
                    region: next(),
                    postal_code: next(),
                    country: next(),
                };
                self.attach(prop, &address_key(&address), &used, &[]);
                self.card.addresses.push(address);
            }
            "URL" => {
                let value = text.trim().to_string();
                let (label, used) = self.label(prop, PLACE_WORDS);
                self.attach(prop, &value, &used, &[]);
                self.card.urls.push(Labeled { value, label });
            }
            "IMPP" => {
                let value = text.trim();
                let (protocol, handle) = match value.split_once(':') {
                    Some((p, h)) => (p.to_ascii_lowercase(), h.to_string()),
                    None => (String::new(), value.to_string()),
                };
                self.im(prop, protocol, handle);
            }
            _ if im_protocol(name).is_some() => {
                let protocol = im_protocol(name).unwrap_or_default().to_string();
                self.im(prop, protocol, text.trim().to_string());
            }
            "SOCIALPROFILE" | "X-SOCIALPROFILE" => {
                let value = text.trim().to_string();
                let (label, used, params): (_, Vec<String>, &[&str]) =
                    match prop.param_value("SERVICE-TYPE") {
                        Some(s) => (Some(s.to_lowercase()), Vec::new(), &["SERVICE-TYPE"]),
                        None => match prop.types().find(|t| !t.eq_ignore_ascii_case("pref")) {
                            Some(t) => (Some(t.to_lowercase()), vec![t.to_string()], &[]),
                            None => (None, Vec::new(), &[]),
                        },
                    };
                self.attach(prop, &value, &used, params);
                self.card.social_profiles.push(Labeled { value, label });
            }
            "BDAY" if self.first("BDAY") => {
                let date = normalize_date(&text);
                self.attach(prop, "", &[], &[]);
                self.card.birthday = Some(date);
            }
            _ if ANNIVERSARY_PROPERTIES.contains(&name) && self.first("ANNIVERSARY") => {
                let date = normalize_date(&text);
                self.attach(prop, "", &[], &[]);
                self.card.anniversary = Some(date);
            }
            "NOTE" if self.first("NOTE") => {
                self.card.note = Some(text);
                self.attach(prop, "", &[], &[]);
            }
            "PHOTO" if self.card.photo.is_none() => match photo(prop) {
                Some((photo, used, params)) => {
                    self.card.photo = Some(photo);
                    self.attach(prop, "", &used, params);
                }
                None => self.keep(prop),
            },
            "CATEGORIES" => {
                if self.first("CATEGORIES") {
                    self.attach(prop, "", &[], &[]);
                }
                self.card.categories.extend(prop.list());
            }
            "X-ABLABEL" if prop.group.is_some() => {}
            _ if name.starts_with("X-") && prop.group.is_none() && prop.params.is_empty() => {
                self.card.custom_fields.push(CustomField {
                    name: prop.name.clone(),
                    value: text,
                });
            }
            _ => self.keep(prop),
        }
    }

    fn im(&mut self, prop: &Property, protocol: String, handle: String) {
        let (label, used) = self.label(prop, PLACE_WORDS);
        self.attach(prop, &format!("{protocol}:{handle}"), &used, &[]);
        self.card.ims.push(ImHandle {
            protocol,
            handle,
            label,
        });
    }
}

fn im_protocol(name: &str) -> Option<&'static str> {
    IM_PROPERTIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
}

fn address_key(a: &Address) -> String {
    a.parts().join(";")
}

/// Photo from PHOTO: inline (2.1/3.0 ENCODING, 4.0 data: URI) or a link.
/// None when the inline data is not base64, so the property is kept raw.
fn photo(prop: &Property) -> Option<(Photo, Vec<String>, &'static [&'static str])> {
    if prop.is_binary() {
        let bytes = text::decode_base64(&prop.value)?;
        let ty = prop.types().next().map(str::to_string);
        let media_type = ty.as_deref().map(|t| {
            if t.contains('/') {
                t.to_ascii_lowercase()
            } else {
                format!("image/{}", t.to_ascii_lowercase())
            }
        });
        let photo = Photo {
            media_type,
            data: Some(text::encode_base64(&bytes)),
            uri: None,
        };
        return Some((photo, ty.into_iter().collect(), &["ENCODING"]));
    }
    if let Some((media, payload)) = split_data_uri(&prop.value) {
        let bytes = text::decode_base64(payload)?;
        let photo = Photo {
            media_type: media.map(str::to_ascii_lowercase),
            data: Some(text::encode_base64(&bytes)),
            uri: None,
        };
        return Some((photo, Vec::new(), &[]));
    }
    let media_type = prop
        .param_value("MEDIATYPE")
        .map(str::to_string)
        .or_else(|| {
            prop.types()
                .next()
                .map(|t| format!("image/{}", t.to_ascii_lowercase()))
        });
    let used = prop
        .types()
        .next()
        .map(str::to_string)
        .into_iter()
        .collect();
    let photo = Photo {
        media_type,
        data: None,
        uri: Some(prop.value.trim().to_string()),
    };
    Some((photo, used, &["MEDIATYPE", "VALUE"]))
}

/// `YYYY-MM-DD` / `--MM-DD` when the text is a plain date in either ISO
/// 8601 format; anything else verbatim.
pub(crate) fn normalize_date(raw: &str) -> String {
    let t = raw.trim();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ok_md = |m: &str, d: &str| {
        let (m, d) = (m.parse::<u8>().unwrap_or(0), d.parse::<u8>().unwrap_or(0));
        (1..=12).contains(&m) && (1..=31).contains(&d)
    };
    let bytes = t.as_bytes();
    if t.len() == 8 && digits(t) && ok_md(&t[4..6], &t[6..8]) {
        return format!("{}-{}-{}", &t[..4], &t[4..6], &t[6..8]);
    }
    if t.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && digits(&t[..4])
        && digits(&t[5..7])
        && digits(&t[8..10])
        && ok_md(&t[5..7], &t[8..10])
    {
        return t.to_string();
    }
    if let Some(md) = t.strip_prefix("--") {
        if md.len() == 4 && digits(md) && ok_md(&md[..2], &md[2..]) {
            return format!("--{}-{}", &md[..2], &md[2..]);
        }
        let mb = md.as_bytes();
        if md.len() == 5 && mb[2] == b'-' && digits(&md[..2]) && digits(&md[3..]) {
            return t.to_string();
        }
    }
    t.to_string()
}

/// A normalized date in the target version's preferred ISO 8601 format:
/// 3.0 writers (and Google) use the extended form, 2.1 phones and RFC 6350
/// examples the basic one.
fn format_date(date: &str, version: Version) -> String {
    let extended = version == Version::V30;
    let b = date.as_bytes();
    if !b.iter().all(|c| c.is_ascii_digit() || *c == b'-') {
        return escape_text(date);
    }
    if date.len() == 10 && b[4] == b'-' && b[7] == b'-' && !date.starts_with("--") {
        return if extended {
            date.to_string()
        } else {
            date.replace('-', "")
        };
    }
    if date.len() == 7 && date.starts_with("--") && b[4] == b'-' {
        return if extended {
            date.to_string()
        } else {
            format!("--{}{}", &date[2..4], &date[5..])
        };
    }
    escape_text(date)
}

/// Maps one card; never fails: what does not fit the model is kept.
pub fn from_vcard(vcard: &VCard, source: &str) -> ContactCard {
    let ab_labels = vcard
        .properties
        .iter()
        .filter(|p| p.name == "X-ABLABEL")
        .filter_map(|p| {
            let group = p.group.as_ref()?.to_ascii_lowercase();
            Some((group, clean_label(&p.text())))
        })
        .collect();
    let mut importer = Importer {
        card: ContactCard::default(),
        extras: VcardExtras {
            source: source.to_string(),
            version: vcard.version,
            properties: Vec::new(),
            attachments: Vec::new(),
        },
        ab_labels,
        used_label_groups: HashSet::new(),
        seen: HashSet::new(),
    };
    for prop in &vcard.properties {
        importer.property(prop);
    }
    // Apple labels on groups we did not model stay with their group.
    for prop in vcard.properties.iter().filter(|p| p.name == "X-ABLABEL") {
        match &prop.group {
            Some(g) if importer.used_label_groups.contains(&g.to_ascii_lowercase()) => {}
            _ => importer.keep(prop),
        }
    }
    let Importer {
        mut card, extras, ..
    } = importer;
    if !extras.properties.is_empty() || !extras.attachments.is_empty() {
        card.vcard_extras.push(extras);
    }
    card
}

struct Exporter<'a> {
    attachments: Vec<&'a ParamAttachment>,
    used: Vec<bool>,
    out: Vec<Property>,
    next_group: usize,
    /// Groups the source already uses, lower-cased.
    reserved: HashSet<String>,
}

impl<'a> Exporter<'a> {
    /// The unused attachment filed for `key` under one of `names`.
    fn take(&mut self, names: &[&str], key: &str) -> Option<&'a ParamAttachment> {
        let i = self.attachments.iter().enumerate().position(|(i, a)| {
            !self.used[i] && a.key == key && names.iter().any(|n| a.property == *n)
        })?;
        self.used[i] = true;
        Some(self.attachments[i])
    }

    fn fresh_group(&mut self) -> String {
        loop {
            self.next_group += 1;
            let g = format!("item{}", self.next_group);
            let taken = self.reserved.contains(&g)
                || self
                    .out
                    .iter()
                    .filter_map(|p| p.group.as_deref())
                    .any(|x| x.eq_ignore_ascii_case(&g));
            if !taken {
                return g;
            }
        }
    }

    /// Pushes a property with its re-attached parameters, and an Apple
    /// label when `label` has no TYPE spelling.
    fn push(
        &mut self,
        mut prop: Property,
        att: Option<&'a ParamAttachment>,
        label: Option<&str>,
        words: &[(&str, &str)],
    ) {
        let mut custom = None;
        if let Some(label) = label.filter(|l| !l.trim().is_empty()) {
            match label_types(label, words) {
                Some(types) if !types.is_empty() => {
                    prop.params.insert(
                        0,
                        Param {
                            name: "TYPE".into(),
                            values: types,
                        },
                    );
                }
                Some(_) => {}
                None => custom = Some(label.to_string()),
            }
        }
        if let Some(att) = att {
            prop.group = att.group.clone();
            prop.params.extend(att.params.iter().cloned());
        }
        let label_prop = custom.map(|label| {
            let group = match &prop.group {
                Some(g) => g.clone(),
                None => {
                    let g = self.fresh_group();
                    prop.group = Some(g.clone());
                    g
                }
            };
            let mut p = Property::new("X-ABLabel", escape_text(&label));
            p.group = Some(group);
            p
        });
        self.out.push(prop);
        self.out.extend(label_prop);
    }
}

/// TYPE values for a label, or None when some word has no TYPE spelling
/// (then the label travels as an Apple X-ABLabel).
fn label_types(label: &str, words: &[(&str, &str)]) -> Option<Vec<String>> {
    label
        .split_whitespace()
        .map(|w| {
            let w = w.to_lowercase();
            let w = if w == "cell" { "mobile".to_string() } else { w };
            words
                .iter()
                .find(|(word, _)| *word == w)
                .map(|(_, ty)| ty.to_string())
        })
        .collect()
}

/// Maps a card to a vCard for `version`, with the unmodelled rest of
/// `source` put back when the card has one.
pub fn to_vcard(card: &ContactCard, version: Version, source: Option<&str>) -> VCard {
    let extras = source.and_then(|s| card.vcard_extras.iter().find(|e| e.source == s));
    let attachments: Vec<&ParamAttachment> = extras
        .map(|e| e.attachments.iter().collect())
        .unwrap_or_default();
    let mut reserved: HashSet<String> = HashSet::new();
    if let Some(e) = extras {
        let groups = e.properties.iter().filter_map(|p| p.group.as_deref());
        let groups = groups.chain(e.attachments.iter().filter_map(|a| a.group.as_deref()));
        reserved.extend(groups.map(str::to_ascii_lowercase));
    }
    let mut ex = Exporter {
        reserved,
        used: vec![false; attachments.len()],
        attachments,
        out: Vec::new(),
        next_group: 0,
    };

    let att = ex.take(&["FN"], "");
    ex.push(
        Property::new("FN", escape_text(&card.formatted_name)),
        att,
        None,
        &[],
    );

    let n = [
        &card.family_name,
        &card.given_name,
        &card.additional_names,
        &card.name_prefix,
        &card.name_suffix,
    ];
    if version != Version::V40 || n.iter().any(|p| p.is_some()) {
        let value = n
            .iter()
            .map(|p| escape_component(p.as_deref().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(";");
        let att = ex.take(&["N"], "");
        ex.push(Property::new("N", value), att, None, &[]);
    }
    if !card.nicknames.is_empty() {
        let value = card
            .nicknames
            .iter()
            .map(|n| escape_text(n))
            .collect::<Vec<_>>()
            .join(",");
        let att = ex.take(&["NICKNAME"], "");
        ex.push(Property::new("NICKNAME", value), att, None, &[]);
    }
    if card.organization.is_some() || !card.departments.is_empty() {
        let value = std::iter::once(card.organization.as_deref().unwrap_or(""))
            .chain(card.departments.iter().map(String::as_str))
            .map(escape_text)
            .collect::<Vec<_>>()
            .join(";");
        let att = ex.take(&["ORG"], "");
        ex.push(Property::new("ORG", value), att, None, &[]);
    }
    for (name, values) in [("TITLE", &card.titles), ("ROLE", &card.roles)] {
        for v in values {
            let att = ex.take(&[name], v);
            ex.push(Property::new(name, escape_text(v)), att, None, &[]);
        }
    }
    for phone in &card.phones {
        let att = ex.take(&["TEL"], &phone.value);
        let uri = att.is_some_and(|a| {
            a.params.iter().any(|p| {
                p.name == "VALUE" && p.values.iter().any(|v| v.eq_ignore_ascii_case("uri"))
            })
        });
        let value = if uri && !phone.value.starts_with("tel:") {
            format!("tel:{}", escape_uri(&phone.value))
        } else {
            escape_text(&phone.value)
        };
        ex.push(
            Property::new("TEL", value),
            att,
            phone.label.as_deref(),
            PHONE_WORDS,
        );
    }
    for email in &card.emails {
        let att = ex.take(&["EMAIL"], &email.value);
        let prop = Property::new("EMAIL", escape_text(&email.value));
        ex.push(prop, att, email.label.as_deref(), PLACE_WORDS);
    }
    for address in &card.addresses {
        let att = ex.take(&["ADR"], &address_key(address));
        let value = address
            .parts()
            .iter()
            .map(|p| escape_component(p))
            .collect::<Vec<_>>()
            .join(";");
        ex.push(
            Property::new("ADR", value),
            att,
            address.label.as_deref(),
            PLACE_WORDS,
        );
    }
    for url in &card.urls {
        let att = ex.take(&["URL"], &url.value);
        ex.push(
            Property::new("URL", escape_uri(&url.value)),
            att,
            url.label.as_deref(),
            PLACE_WORDS,
        );
    }
    for im in &card.ims {
        let key = format!("{}:{}", im.protocol, im.handle);
        let mut names: Vec<&str> = IM_PROPERTIES.iter().map(|(n, _)| *n).collect();
        names.push("IMPP");
        let att = ex.take(&names, &key);
        // The source's own X- spelling wins where the target still uses it.
        let x_name = match att {
            Some(a) if a.property.starts_with("X-") => Some(a.property.clone()),
            _ if version == Version::V21 => IM_PROPERTIES
                .iter()
                .find(|(_, p)| *p == im.protocol)
                .map(|(n, _)| n.to_string()),
            _ => None,
        };
        let prop = match x_name {
            Some(name) if version != Version::V40 => Property::new(&name, escape_text(&im.handle)),
            _ if im.protocol.is_empty() => Property::new("IMPP", escape_uri(&im.handle)),
            _ => Property::new("IMPP", escape_uri(&key)),
        };
        // Parameters and group follow the handle whatever it is called now.
        ex.push(prop, att, im.label.as_deref(), PLACE_WORDS);
    }
    for profile in &card.social_profiles {
        let att = ex.take(&["SOCIALPROFILE", "X-SOCIALPROFILE"], &profile.value);
        let mut prop = if version == Version::V40 {
            let mut p = Property::new("SOCIALPROFILE", escape_uri(&profile.value));
            if let Some(l) = &profile.label {
                p = p.with_param("SERVICE-TYPE", &[l]);
            }
            p
        } else {
            let mut p = Property::new("X-SOCIALPROFILE", escape_uri(&profile.value));
            if let Some(l) = &profile.label {
                p = p.with_param("TYPE", &[l]);
            }
            p
        };
        let att = att.filter(|a| a.property == prop.name);
        if let Some(a) = att {
            prop.group = a.group.clone();
            prop.params.extend(a.params.iter().cloned());
        }
        ex.out.push(prop);
    }
    if let Some(b) = &card.birthday {
        let att = ex.take(&["BDAY"], "");
        ex.push(
            Property::new("BDAY", format_date(b, version)),
            att,
            None,
            &[],
        );
    }
    if let Some(a) = &card.anniversary {
        let att = ex.take(ANNIVERSARY_PROPERTIES, "");
        let name = match (version, att) {
            (Version::V40, _) => "ANNIVERSARY".to_string(),
            (_, Some(a)) if a.property != "ANNIVERSARY" => a.property.clone(),
            _ => "X-ANNIVERSARY".to_string(),
        };
        let att = att.filter(|a| a.property == name);
        ex.push(
            Property::new(&name, format_date(a, version)),
            att,
            None,
            &[],
        );
    }
    if let Some(note) = &card.note {
        let att = ex.take(&["NOTE"], "");
        ex.push(Property::new("NOTE", escape_text(note)), att, None, &[]);
    }
    if let Some(photo) = &card.photo {
        let att = ex.take(&["PHOTO"], "");
        let prop = match (&photo.data, &photo.uri) {
            (Some(data), _) => {
                let mut p = Property::new("PHOTO", data.clone()).with_param("ENCODING", &["b"]);
                if let Some(m) = &photo.media_type {
                    let sub = m.rsplit('/').next().unwrap_or(m).to_ascii_uppercase();
                    p = p.with_param("TYPE", &[&sub]);
                }
                Some(p)
            }
            (None, Some(uri)) => {
                let mut p = Property::new("PHOTO", escape_uri(uri));
                match version {
                    Version::V21 => p = p.with_param("VALUE", &["URL"]),
                    Version::V30 => p = p.with_param("VALUE", &["uri"]),
                    Version::V40 => {
                        if let Some(m) = &photo.media_type {
                            p = p.with_param("MEDIATYPE", &[m]);
                        }
                    }
                }
                Some(p)
            }
            (None, None) => None,
        };
        if let Some(prop) = prop {
            ex.push(prop, att, None, &[]);
        }
    }
    if !card.categories.is_empty() {
        let value = card
            .categories
            .iter()
            .map(|c| escape_text(c))
            .collect::<Vec<_>>()
            .join(",");
        let att = ex.take(&["CATEGORIES"], "");
        ex.push(Property::new("CATEGORIES", value), att, None, &[]);
    }
    for field in &card.custom_fields {
        ex.out
            .push(Property::new(&field.name, escape_uri(&field.value)));
    }
    if let Some(extras) = extras {
        ex.out.extend(extras.properties.iter().cloned());
    }
    VCard {
        version,
        properties: ex.out,
    }
}

impl ContactCard {
    /// See [`from_vcard`].
    pub fn from_vcard(vcard: &VCard, source: &str) -> ContactCard {
        from_vcard(vcard, source)
    }

    /// See [`to_vcard`].
    pub fn to_vcard(&self, version: Version, source: Option<&str>) -> VCard {
        to_vcard(self, version, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import_one(s: &str) -> ContactCard {
        import(s, "test").remove(0).unwrap()
    }

    #[test]
    fn dates_normalize_and_format_per_version() {
        assert_eq!(normalize_date("19800101"), "1980-01-01");
        assert_eq!(normalize_date("1975-03-14"), "1975-03-14");
        assert_eq!(normalize_date("--0314"), "--03-14");
        assert_eq!(
            normalize_date("1980-01-01T10:00:00Z"),
            "1980-01-01T10:00:00Z"
        );
        assert_eq!(normalize_date("19801301"), "19801301");
        assert_eq!(format_date("1980-01-01", Version::V21), "19800101");
        assert_eq!(format_date("1980-01-01", Version::V30), "1980-01-01");
        assert_eq!(format_date("--03-14", Version::V40), "--0314");
    }

    #[test]
    fn apple_labels_become_labels_and_come_back() {
        let card = import_one(concat!(
            "BEGIN:VCARD\nVERSION:3.0\nFN:A\n",
            "item1.TEL:+49 30 1\nitem1.X-ABLabel:_$!<Other>!$_\n",
            "item2.URL:https://a.example\nitem2.X-ABLABEL:Blog\n",
            "item3.X-FOO:bar\nitem3.X-ABLABEL:Foo\nEND:VCARD\n"
        ));
        assert_eq!(card.phones[0].label.as_deref(), Some("other"));
        assert_eq!(card.urls[0].label.as_deref(), Some("Blog"));
        let out = to_vcard(&card, Version::V30, Some("test"));
        let written = super::super::write(&out, Version::V30);
        assert!(written.contains("item1.TEL:+49 30 1\r\n"), "{written}");
        assert!(written.contains("item1.X-ABLABEL:other\r\n"), "{written}");
        assert!(written.contains("item2.X-ABLABEL:Blog\r\n"), "{written}");
        assert!(written.contains("item3.X-FOO:bar\r\n"), "{written}");
        assert!(written.contains("item3.X-ABLABEL:Foo\r\n"), "{written}");
        // A new custom label gets a group that does not collide.
        let mut edited = card.clone();
        edited.emails.push(Labeled {
            value: "x@y.z".into(),
            label: Some("Verein".into()),
        });
        let written =
            super::super::write(&to_vcard(&edited, Version::V30, Some("test")), Version::V30);
        assert!(
            written.contains("item4.EMAIL:x@y.z\r\nitem4.X-ABLABEL:Verein\r\n"),
            "{written}"
        );
    }

    #[test]
    fn ims_social_and_anniversary() {
        let card = import_one(concat!(
            "BEGIN:VCARD\nVERSION:3.0\nFN:A\nX-JABBER;TYPE=HOME:a@jabber.example\n",
            "IMPP;X-SERVICE-TYPE=Skype:skype:a.b\n",
            "X-SOCIALPROFILE;TYPE=twitter;X-USER=ab:https://twitter.com/ab\n",
            "X-ANNIVERSARY:2001-06-30\nEND:VCARD\n"
        ));
        assert_eq!(
            card.ims,
            vec![
                ImHandle {
                    protocol: "xmpp".into(),
                    handle: "a@jabber.example".into(),
                    label: Some("home".into())
                },
                ImHandle {
                    protocol: "skype".into(),
                    handle: "a.b".into(),
                    label: None
                }
            ]
        );
        assert_eq!(card.social_profiles[0].label.as_deref(), Some("twitter"));
        assert_eq!(card.anniversary.as_deref(), Some("2001-06-30"));
        let v3 = super::super::write(&to_vcard(&card, Version::V30, Some("test")), Version::V30);
        assert!(
            v3.contains("X-JABBER;TYPE=HOME:a@jabber.example\r\n"),
            "{v3}"
        );
        assert!(
            v3.contains("IMPP;X-SERVICE-TYPE=Skype:skype:a.b\r\n"),
            "{v3}"
        );
        assert!(
            v3.contains("X-SOCIALPROFILE;TYPE=TWITTER;X-USER=ab:https://twitter.com/ab"),
            "{v3}"
        );
        assert!(v3.contains("X-ANNIVERSARY:2001-06-30\r\n"), "{v3}");
        let v4 = super::super::write(&to_vcard(&card, Version::V40, Some("test")), Version::V40);
        assert!(
            v4.contains("IMPP;TYPE=home:xmpp:a@jabber.example\r\n"),
            "{v4}"
        );
        assert!(
            v4.contains("SOCIALPROFILE;SERVICE-TYPE=twitter:https://twitter.com/ab"),
            "{v4}"
        );
        assert!(v4.contains("ANNIVERSARY:20010630\r\n"), "{v4}");
    }

    #[test]
    fn unknown_properties_and_params_are_kept_per_source() {
        let card = import_one(concat!(
            "BEGIN:VCARD\nVERSION:3.0\nFN:A\nUID:u-1\nGEO:1.5;2.5\n",
            "EMAIL;TYPE=INTERNET,WORK;X-CUSTOM=\"a,b\":a@b.example\nX-SPOUSE:Bea\n",
            "X-EPOC;FOO=1:z\nEND:VCARD\n"
        ));
        assert_eq!(card.emails[0].label.as_deref(), Some("work"));
        assert_eq!(card.custom_fields[0].name, "X-SPOUSE");
        let other =
            super::super::write(&to_vcard(&card, Version::V30, Some("other")), Version::V30);
        assert!(
            !other.contains("UID") && !other.contains("INTERNET"),
            "{other}"
        );
        let same = super::super::write(&to_vcard(&card, Version::V30, Some("test")), Version::V30);
        assert!(
            same.contains("UID:u-1\r\n") && same.contains("GEO:1.5;2.5\r\n"),
            "{same}"
        );
        assert!(same.contains("X-EPOC;FOO=1:z\r\n"), "{same}");
        assert!(
            same.contains("EMAIL;TYPE=WORK,INTERNET;X-CUSTOM=\"a,b\":a@b.example\r\n"),
            "{same}"
        );
        // The extras survive the jsonb round trip.
        let json = serde_json::to_value(&card).unwrap();
        let back: ContactCard = serde_json::from_value(json).unwrap();
        assert_eq!(back, card);
    }

    #[test]
    fn edited_values_drop_their_stale_params() {
        let mut card = import_one(
            "BEGIN:VCARD\nVERSION:3.0\nFN:A\nEMAIL;TYPE=INTERNET,PREF:old@x.example\nEND:VCARD\n",
        );
        card.emails[0].value = "new@x.example".into();
        let s = super::super::write(&to_vcard(&card, Version::V30, Some("test")), Version::V30);
        assert!(s.contains("EMAIL:new@x.example\r\n"), "{s}");
    }

    #[test]
    fn old_stored_json_still_reads() {
        let old = serde_json::json!({
            "formatted_name": "Ada", "given_name": "Ada",
            "emails": [{"value": "a@b.c", "label": "work"}], "phones": [{"value": "1"}]
        });
        let card: ContactCard = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(serde_json::to_value(&card).unwrap(), old);
    }
}
