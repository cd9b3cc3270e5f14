//! The conflict policy for a contact changed on both sides since a device's
//! last sync (docs/syncml.md): merge field by field, the newer change wins a
//! field both sides set differently, and nothing is silently lost.
//!
//! There is no common ancestor to compare with (the server does not keep
//! the version each device last saw), so the merge is two-way:
//! * a field only one side has is kept (a phone added on the device and an
//!   email added on the web both survive);
//! * list fields (phones, emails, addresses, …) are united, the newer
//!   side's entries first; entries with the same value count once;
//! * a single-valued field set differently on both sides takes the newer
//!   value, and the older one is kept in an `X-ONEBOOK-CONFLICT` custom
//!   field (`<field>: <value>`), which travels to devices as a vCard
//!   property and shows in the web app.
//!
//! The price of having no ancestor: an entry deleted on one side while the
//! other side changed the contact comes back. That errs on keeping data.

use chrono::{DateTime, NaiveDateTime, Utc};
use onebook_domain::contacts::{ContactCard, CustomField};
use serde_json::Value;

/// The custom field holding values that lost a conflict.
pub const CONFLICT_FIELD: &str = "X-ONEBOOK-CONFLICT";

/// Photos and other structured values larger than this are not copied into
/// the conflict note; it records that a value was replaced instead.
const MAX_NOTED_VALUE: usize = 1024;

/// Merges two versions of a contact; `a_at`/`b_at` are when each side last
/// changed it. Ties go to `a`.
pub fn merge(
    a: &ContactCard,
    a_at: DateTime<Utc>,
    b: &ContactCard,
    b_at: DateTime<Utc>,
) -> ContactCard {
    let (newer, older) = if b_at > a_at { (b, a) } else { (a, b) };
    let (Ok(Value::Object(new)), Ok(Value::Object(old))) =
        (serde_json::to_value(newer), serde_json::to_value(older))
    else {
        return newer.clone();
    };
    let mut out = new.clone();
    let mut lost: Vec<CustomField> = Vec::new();
    for (key, old_value) in &old {
        let new_value = new.get(key).unwrap_or(&Value::Null);
        if is_empty(old_value) || new_value == old_value {
            continue;
        }
        if is_empty(new_value) {
            out.insert(key.clone(), old_value.clone());
            continue;
        }
        match (key.as_str(), new_value, old_value) {
            ("vcard_extras", Value::Array(n), Value::Array(o)) => {
                // One entry per source: the newer side's, plus sources only
                // the older side has.
                let mut merged = n.clone();
                for entry in o {
                    if !n.iter().any(|e| e.get("source") == entry.get("source")) {
                        merged.push(entry.clone());
                    }
                }
                out.insert(key.clone(), Value::Array(merged));
            }
            (_, Value::Array(n), Value::Array(o)) => {
                let mut merged = n.clone();
                for entry in o {
                    if !merged.iter().any(|e| same_entry(e, entry)) {
                        merged.push(entry.clone());
                    }
                }
                out.insert(key.clone(), Value::Array(merged));
            }
            _ => lost.push(CustomField {
                name: CONFLICT_FIELD.to_owned(),
                value: format!("{key}: {}", noted(old_value)),
            }),
        }
    }
    let merged: Result<ContactCard, _> = serde_json::from_value(Value::Object(out));
    let mut card = merged.unwrap_or_else(|_| newer.clone());
    for field in lost {
        if !card.custom_fields.contains(&field) {
            card.custom_fields.push(field);
        }
    }
    card
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// List entries are the same when equal, or when both carry the same
/// `value` (an email or phone whose label differs is still one entry).
fn same_entry(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (value_key(a), value_key(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn value_key(v: &Value) -> Option<String> {
    let s = v.get("value")?.as_str()?;
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    // Phones compare by digits (`+49 30 1234` = `+4930 1234`), the rest by
    // case-folded text.
    if !s.contains('@') && digits.len() >= 3 && digits.len() * 2 >= s.trim().len() {
        Some(digits)
    } else {
        Some(s.trim().to_lowercase())
    }
}

fn noted(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.len() > MAX_NOTED_VALUE {
        format!("(an older value of {} bytes was replaced)", text.len())
    } else {
        text
    }
}

/// When a vCard says it was last changed (`REV`), if it says so readably.
pub fn revision(rev: &str) -> Option<DateTime<Utc>> {
    let rev = rev.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(rev) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y%m%dT%H%M%SZ",
        "%Y-%m-%dT%H:%M:%SZ",
        "%Y%m%dT%H%M%S",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(rev, format) {
            return Some(t.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use onebook_domain::contacts::Labeled;

    fn card(name: &str) -> ContactCard {
        ContactCard {
            formatted_name: name.to_owned(),
            ..ContactCard::default()
        }
    }

    fn labeled(v: &str) -> Labeled {
        Labeled {
            value: v.to_owned(),
            label: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        revision(s).unwrap()
    }

    #[test]
    fn additions_on_both_sides_survive() {
        let mut device = card("Ada");
        device.phones.push(labeled("+1 555 0100"));
        let mut web = card("Ada");
        web.emails.push(labeled("ada@example.com"));
        let m = merge(
            &web,
            at("20261127T100000Z"),
            &device,
            at("20261127T110000Z"),
        );
        assert_eq!(m.phones, vec![labeled("+1 555 0100")]);
        assert_eq!(m.emails, vec![labeled("ada@example.com")]);
        assert!(m.custom_fields.is_empty(), "{:?}", m.custom_fields);
    }

    #[test]
    fn newer_wins_a_field_and_the_loser_is_kept() {
        let mut device = card("Ada");
        device.note = Some("from the phone".into());
        let mut web = card("Ada");
        web.note = Some("from the web".into());
        let m = merge(
            &web,
            at("20261127T120000Z"),
            &device,
            at("20261127T110000Z"),
        );
        assert_eq!(m.note.as_deref(), Some("from the web"));
        assert_eq!(
            m.custom_fields,
            vec![CustomField {
                name: CONFLICT_FIELD.into(),
                value: "note: from the phone".into()
            }]
        );
        // The other way round the phone wins.
        let m = merge(
            &web,
            at("20261127T100000Z"),
            &device,
            at("20261127T110000Z"),
        );
        assert_eq!(m.note.as_deref(), Some("from the phone"));
        assert_eq!(m.custom_fields[0].value, "note: from the web");
    }

    #[test]
    fn same_values_count_once() {
        let mut a = card("Ada");
        a.phones = vec![labeled("+49 30 1234"), labeled("ada@x.example")];
        let mut b = card("Ada");
        b.phones = vec![
            Labeled {
                value: "+4930 1234".into(),
                label: Some("cell".into()),
            },
            labeled("ADA@x.example"),
        ];
        let m = merge(&a, at("20261127T100000Z"), &b, at("20261127T090000Z"));
        assert_eq!(m.phones, a.phones);
        assert!(m.custom_fields.is_empty());
    }

    #[test]
    fn revisions_parse() {
        assert!(revision("20261127T081545Z").is_some());
        assert!(revision("2026-11-27T08:15:45Z").is_some());
        assert!(revision("garbage").is_none());
    }
}
