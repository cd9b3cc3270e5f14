//! Element tree to typed message.

use super::path::At;
use super::*;
use crate::devinf;
use crate::tree::{Content, Element, Namespace};
use std::str::FromStr;

type R<T> = Result<T, MessageError>;

pub(super) fn message(root: &Element) -> R<Message> {
    if root.name != "SyncML" {
        return Err(MessageError::NotSyncMl(root.name.to_string()));
    }
    let at = At::root("SyncML");
    let hdr = root.child("SyncHdr").ok_or_else(|| at.missing("SyncHdr"))?;
    let body = root
        .child("SyncBody")
        .ok_or_else(|| at.missing("SyncBody"))?;
    Ok(Message {
        header: header(hdr, &at.child(root, hdr))?,
        body: sync_body(body, &at.child(root, body))?,
    })
}

/// Character content of a scalar element, trimmed: pretty-printing clients
/// wrap values in whitespace. Item data never goes through here.
pub(crate) fn text(el: &Element, at: &At<'_>) -> R<String> {
    match el.text() {
        Some(t) => Ok(t.trim().to_owned()),
        None if matches!(el.content, Content::Children(_)) => Err(at.not_text()),
        None => Err(at.invalid(
            &String::from_utf8_lossy(el.bytes().unwrap_or_default()),
            "not UTF-8",
        )),
    }
}

pub(crate) fn opt_text(el: &Element, at: &At<'_>, name: &'static str) -> R<Option<String>> {
    match el.child(name) {
        None => Ok(None),
        Some(c) => text(c, &at.child(el, c)).map(Some),
    }
}

pub(crate) fn req_text(el: &Element, at: &At<'_>, name: &'static str) -> R<String> {
    opt_text(el, at, name)?.ok_or_else(|| at.missing(name))
}

pub(crate) fn opt_num<T: FromStr>(el: &Element, at: &At<'_>, name: &'static str) -> R<Option<T>> {
    match el.child(name) {
        None => Ok(None),
        Some(c) => {
            let here = at.child(el, c);
            let t = text(c, &here)?;
            t.parse()
                .map(Some)
                .map_err(|_| here.invalid(&t, "not a number"))
        }
    }
}

pub(crate) fn flag(el: &Element, name: &str) -> bool {
    el.child(name).is_some()
}

pub(crate) fn all_text(el: &Element, at: &At<'_>, name: &'static str) -> R<Vec<String>> {
    el.children_named(name)
        .map(|c| text(c, &at.child(el, c)))
        .collect()
}

fn header(el: &Element, at: &At<'_>) -> R<SyncHdr> {
    let ver = req_text(el, at, "VerDTD")?;
    let version = Version::parse(&ver).ok_or_else(|| {
        at.named("VerDTD")
            .invalid(&ver, "unsupported SyncML version")
    })?;
    Ok(SyncHdr {
        version,
        ver_proto: opt_text(el, at, "VerProto")?.unwrap_or_else(|| version.proto().to_owned()),
        session_id: req_text(el, at, "SessionID")?,
        msg_id: req_text(el, at, "MsgID")?,
        target: req_location(el, at, "Target")?,
        source: req_location(el, at, "Source")?,
        resp_uri: opt_text(el, at, "RespURI")?,
        no_resp: flag(el, "NoResp"),
        cred: opt_cred(el, at)?,
        meta: opt_meta(el, at)?,
    })
}

fn opt_location(el: &Element, at: &At<'_>, name: &'static str) -> R<Option<Location>> {
    match el.child(name) {
        None => Ok(None),
        Some(c) => {
            let here = at.child(el, c);
            Ok(Some(Location {
                loc_uri: req_text(c, &here, "LocURI")?,
                loc_name: opt_text(c, &here, "LocName")?,
            }))
        }
    }
}

fn req_location(el: &Element, at: &At<'_>, name: &'static str) -> R<Location> {
    opt_location(el, at, name)?.ok_or_else(|| at.missing(name))
}

fn opt_cred(el: &Element, at: &At<'_>) -> R<Option<Cred>> {
    match el.child("Cred") {
        None => Ok(None),
        Some(c) => {
            let here = at.child(el, c);
            Ok(Some(Cred {
                meta: opt_meta(c, &here)?,
                data: req_text(c, &here, "Data")?,
            }))
        }
    }
}

fn opt_meta(el: &Element, at: &At<'_>) -> R<Option<Meta>> {
    match el.child("Meta") {
        None => Ok(None),
        Some(c) => meta(c, &at.child(el, c)).map(Some),
    }
}

fn meta(el: &Element, at: &At<'_>) -> R<Meta> {
    let mut m = Meta::default();
    for c in el.children() {
        let here = at.child(el, c);
        let num = |s: String| {
            s.parse::<u64>()
                .map_err(|_| here.invalid(&s, "not a number"))
        };
        match &*c.name {
            "FieldLevel" => m.field_level = true,
            "Format" => m.format = Some(text(c, &here)?),
            "Type" => m.content_type = Some(text(c, &here)?),
            "Mark" => m.mark = Some(text(c, &here)?),
            "Size" => m.size = Some(num(text(c, &here)?)?),
            "Anchor" => m.anchor = Some(anchor(c, &here)?),
            "Version" => m.version = Some(text(c, &here)?),
            "NextNonce" => m.next_nonce = Some(text(c, &here)?),
            "MaxMsgSize" => m.max_msg_size = Some(num(text(c, &here)?)?),
            "MaxObjSize" => m.max_obj_size = Some(num(text(c, &here)?)?),
            "EMI" => m.emi.push(text(c, &here)?),
            // Mem, FreeMem, SharedMem, …: nothing a server acts on.
            _ => {}
        }
    }
    Ok(m)
}

fn anchor(el: &Element, at: &At<'_>) -> R<Anchor> {
    Ok(Anchor {
        last: opt_text(el, at, "Last")?,
        next: req_text(el, at, "Next")?,
    })
}

fn sync_body(el: &Element, at: &At<'_>) -> R<SyncBody> {
    let mut body = SyncBody::default();
    for c in el.children() {
        if c.name == "Final" {
            body.final_flag = true;
        } else {
            body.commands.push(command(c, &at.child(el, c))?);
        }
    }
    Ok(body)
}

fn command(el: &Element, at: &At<'_>) -> R<Command> {
    if el.ns != Namespace::SyncMl {
        return other(el, at);
    }
    Ok(match &*el.name {
        "Status" => Command::Status(status(el, at)?),
        "Alert" => Command::Alert(alert(el, at)?),
        "Put" => Command::Put(put_get(el, at)?),
        "Get" => Command::Get(put_get(el, at)?),
        "Results" => Command::Results(results(el, at)?),
        "Sync" => Command::Sync(sync(el, at)?),
        "Map" => Command::Map(map(el, at)?),
        "Add" => Command::Add(item_command(el, at)?),
        "Replace" => Command::Replace(item_command(el, at)?),
        "Delete" => Command::Delete(item_command(el, at)?),
        "Copy" => Command::Copy(item_command(el, at)?),
        "Move" => Command::Move(item_command(el, at)?),
        _ => other(el, at)?,
    })
}

fn other(el: &Element, at: &At<'_>) -> R<Command> {
    Ok(Command::Other(OtherCommand {
        cmd_id: opt_text(el, at, "CmdID")?,
        no_resp: flag(el, "NoResp"),
        element: el.clone().into_owned(),
    }))
}

fn status(el: &Element, at: &At<'_>) -> R<Status> {
    let code = req_text(el, at, "Data")?;
    let code = code.parse().map_err(|_| {
        at.named("Data")
            .invalid(&code, "status code is not a number")
    })?;
    Ok(Status {
        cmd_id: req_text(el, at, "CmdID")?,
        msg_ref: opt_text(el, at, "MsgRef")?,
        cmd_ref: req_text(el, at, "CmdRef")?,
        cmd: req_text(el, at, "Cmd")?,
        target_refs: all_text(el, at, "TargetRef")?,
        source_refs: all_text(el, at, "SourceRef")?,
        cred: opt_cred(el, at)?,
        chal: match el.child("Chal") {
            None => None,
            Some(c) => {
                let here = at.child(el, c);
                Some(Chal {
                    meta: opt_meta(c, &here)?.ok_or_else(|| here.missing("Meta"))?,
                })
            }
        },
        code,
        items: items(el, at)?,
    })
}

fn alert(el: &Element, at: &At<'_>) -> R<Alert> {
    let code = match opt_text(el, at, "Data")? {
        None => None,
        Some(c) => Some(
            c.parse()
                .map_err(|_| at.named("Data").invalid(&c, "alert code is not a number"))?,
        ),
    };
    Ok(Alert {
        cmd_id: req_text(el, at, "CmdID")?,
        no_resp: flag(el, "NoResp"),
        cred: opt_cred(el, at)?,
        code,
        correlator: opt_text(el, at, "Correlator")?,
        items: items(el, at)?,
    })
}

fn put_get(el: &Element, at: &At<'_>) -> R<PutGet> {
    Ok(PutGet {
        cmd_id: req_text(el, at, "CmdID")?,
        no_resp: flag(el, "NoResp"),
        lang: opt_text(el, at, "Lang")?,
        cred: opt_cred(el, at)?,
        meta: opt_meta(el, at)?,
        items: items(el, at)?,
    })
}

fn results(el: &Element, at: &At<'_>) -> R<Results> {
    Ok(Results {
        cmd_id: req_text(el, at, "CmdID")?,
        msg_ref: opt_text(el, at, "MsgRef")?,
        cmd_ref: req_text(el, at, "CmdRef")?,
        meta: opt_meta(el, at)?,
        target_refs: all_text(el, at, "TargetRef")?,
        source_refs: all_text(el, at, "SourceRef")?,
        items: items(el, at)?,
    })
}

fn sync(el: &Element, at: &At<'_>) -> R<Sync> {
    let mut commands = Vec::new();
    for c in el.children() {
        match &*c.name {
            "CmdID" | "NoResp" | "Cred" | "Target" | "Source" | "Meta" | "NumberOfChanges" => {}
            _ => commands.push(command(c, &at.child(el, c))?),
        }
    }
    Ok(Sync {
        cmd_id: req_text(el, at, "CmdID")?,
        no_resp: flag(el, "NoResp"),
        cred: opt_cred(el, at)?,
        target: opt_location(el, at, "Target")?,
        source: opt_location(el, at, "Source")?,
        meta: opt_meta(el, at)?,
        number_of_changes: opt_num(el, at, "NumberOfChanges")?,
        commands,
    })
}

fn item_command(el: &Element, at: &At<'_>) -> R<ItemCommand> {
    Ok(ItemCommand {
        cmd_id: req_text(el, at, "CmdID")?,
        no_resp: flag(el, "NoResp"),
        archive: flag(el, "Archive"),
        sft_del: flag(el, "SftDel"),
        cred: opt_cred(el, at)?,
        meta: opt_meta(el, at)?,
        items: items(el, at)?,
    })
}

fn map(el: &Element, at: &At<'_>) -> R<Map> {
    let mut map_items = Vec::new();
    for c in el.children_named("MapItem") {
        let here = at.child(el, c);
        map_items.push(MapItem {
            target: req_location(c, &here, "Target")?,
            source: req_location(c, &here, "Source")?,
        });
    }
    Ok(Map {
        cmd_id: req_text(el, at, "CmdID")?,
        target: req_location(el, at, "Target")?,
        source: req_location(el, at, "Source")?,
        cred: opt_cred(el, at)?,
        meta: opt_meta(el, at)?,
        items: map_items,
    })
}

fn items(el: &Element, at: &At<'_>) -> R<Vec<Item>> {
    el.children_named("Item")
        .map(|c| item(c, &at.child(el, c)))
        .collect()
}

fn item(el: &Element, at: &At<'_>) -> R<Item> {
    let parent = |name: &'static str| -> R<Option<String>> {
        match el.child(name) {
            None => Ok(None),
            Some(c) => opt_text(c, &at.child(el, c), "LocURI"),
        }
    };
    Ok(Item {
        target: opt_location(el, at, "Target")?,
        source: opt_location(el, at, "Source")?,
        source_parent: parent("SourceParent")?,
        target_parent: parent("TargetParent")?,
        meta: opt_meta(el, at)?,
        data: match el.child("Data") {
            None => None,
            Some(c) => Some(item_data(c, &at.child(el, c))?),
        },
        more_data: flag(el, "MoreData"),
    })
}

fn item_data(el: &Element, at: &At<'_>) -> R<ItemData> {
    Ok(match &el.content {
        Content::Empty => ItemData::Text(String::new()),
        Content::Text(t) => ItemData::Text(t.to_string()),
        Content::Opaque(b) => ItemData::Bytes(b.to_vec()),
        Content::Children(children) => match children.as_slice() {
            [c] if c.ns == Namespace::DevInf && c.name == "DevInf" => {
                ItemData::DevInf(Box::new(devinf::parse(c, &at.child(el, c))?))
            }
            [c] if c.ns == Namespace::MetInf && c.name == "Anchor" => {
                ItemData::Anchor(anchor(c, &at.child(el, c))?)
            }
            _ => ItemData::Elements(children.iter().map(|c| c.clone().into_owned()).collect()),
        },
    })
}
