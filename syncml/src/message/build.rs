//! Typed message to element tree, children in DTD order.

use super::*;
use crate::tree::{Element, Namespace};
use std::borrow::Cow;

const S: Namespace = Namespace::SyncMl;
const M: Namespace = Namespace::MetInf;

fn t<'a>(name: &'static str, value: impl Into<Cow<'a, str>>) -> Element<'a> {
    Element::with_text(name, S, value)
}

fn mt<'a>(name: &'static str, value: impl Into<Cow<'a, str>>) -> Element<'a> {
    Element::with_text(name, M, value)
}

fn empty<'a>(name: &'static str) -> Element<'a> {
    Element::new(name, S)
}

pub(super) fn message<'a>(m: &'a Message) -> Element<'a> {
    Element::with_children("SyncML", S, vec![header(&m.header), body(&m.body)])
}

fn header<'a>(h: &'a SyncHdr) -> Element<'a> {
    let mut c = vec![
        t("VerDTD", h.version.as_str()),
        t("VerProto", &h.ver_proto),
        t("SessionID", &h.session_id),
        t("MsgID", &h.msg_id),
        location("Target", &h.target),
        location("Source", &h.source),
    ];
    if let Some(r) = &h.resp_uri {
        c.push(t("RespURI", r));
    }
    if h.no_resp {
        c.push(empty("NoResp"));
    }
    push_cred(&mut c, &h.cred);
    push_meta(&mut c, &h.meta);
    Element::with_children("SyncHdr", S, c)
}

fn body<'a>(b: &'a SyncBody) -> Element<'a> {
    let mut c: Vec<Element> = b.commands.iter().map(command).collect();
    if b.final_flag {
        c.push(empty("Final"));
    }
    Element::with_children("SyncBody", S, c)
}

fn location<'a>(name: &'static str, l: &'a Location) -> Element<'a> {
    let mut c = vec![t("LocURI", &l.loc_uri)];
    if let Some(n) = &l.loc_name {
        c.push(t("LocName", n));
    }
    Element::with_children(name, S, c)
}

fn push_cred<'a>(c: &mut Vec<Element<'a>>, cred: &'a Option<Cred>) {
    if let Some(cred) = cred {
        let mut cc = Vec::with_capacity(2);
        push_meta(&mut cc, &cred.meta);
        cc.push(t("Data", &cred.data));
        c.push(Element::with_children("Cred", S, cc));
    }
}

fn push_meta<'a>(c: &mut Vec<Element<'a>>, m: &'a Option<Meta>) {
    if let Some(m) = m {
        c.push(meta(m));
    }
}

fn meta<'a>(m: &'a Meta) -> Element<'a> {
    let mut c = Vec::new();
    if m.field_level {
        c.push(Element::new("FieldLevel", M));
    }
    let text_fields = [
        ("Format", &m.format),
        ("Type", &m.content_type),
        ("Mark", &m.mark),
    ];
    for (name, v) in text_fields {
        if let Some(v) = v {
            c.push(mt(name, v));
        }
    }
    if let Some(s) = m.size {
        c.push(mt("Size", s.to_string()));
    }
    if let Some(a) = &m.anchor {
        c.push(anchor(a));
    }
    if let Some(v) = &m.version {
        c.push(mt("Version", v));
    }
    if let Some(v) = &m.next_nonce {
        c.push(mt("NextNonce", v));
    }
    if let Some(v) = m.max_msg_size {
        c.push(mt("MaxMsgSize", v.to_string()));
    }
    if let Some(v) = m.max_obj_size {
        c.push(mt("MaxObjSize", v.to_string()));
    }
    for e in &m.emi {
        c.push(mt("EMI", e));
    }
    Element::with_children("Meta", S, c)
}

fn anchor<'a>(a: &'a Anchor) -> Element<'a> {
    let mut c = Vec::with_capacity(2);
    if let Some(l) = &a.last {
        c.push(mt("Last", l));
    }
    c.push(mt("Next", &a.next));
    Element::with_children("Anchor", M, c)
}

fn push_refs<'a>(c: &mut Vec<Element<'a>>, name: &'static str, refs: &'a [String]) {
    c.extend(refs.iter().map(|r| t(name, r)));
}

fn push_items<'a>(c: &mut Vec<Element<'a>>, items: &'a [Item]) {
    c.extend(items.iter().map(item));
}

fn command<'a>(cmd: &'a Command) -> Element<'a> {
    match cmd {
        Command::Status(s) => status(s),
        Command::Alert(a) => alert(a),
        Command::Put(p) => put_get("Put", p),
        Command::Get(g) => put_get("Get", g),
        Command::Results(r) => results(r),
        Command::Sync(s) => sync(s),
        Command::Map(m) => map(m),
        Command::Add(i) => item_command("Add", i),
        Command::Replace(i) => item_command("Replace", i),
        Command::Delete(i) => item_command("Delete", i),
        Command::Copy(i) => item_command("Copy", i),
        Command::Move(i) => item_command("Move", i),
        Command::Other(o) => o.element.clone(),
    }
}

fn status<'a>(s: &'a Status) -> Element<'a> {
    let mut c = vec![t("CmdID", &s.cmd_id)];
    if let Some(m) = &s.msg_ref {
        c.push(t("MsgRef", m));
    }
    c.push(t("CmdRef", &s.cmd_ref));
    c.push(t("Cmd", &s.cmd));
    push_refs(&mut c, "TargetRef", &s.target_refs);
    push_refs(&mut c, "SourceRef", &s.source_refs);
    push_cred(&mut c, &s.cred);
    if let Some(chal) = &s.chal {
        c.push(Element::with_children("Chal", S, vec![meta(&chal.meta)]));
    }
    c.push(t("Data", s.code.to_string()));
    push_items(&mut c, &s.items);
    Element::with_children("Status", S, c)
}

fn alert<'a>(a: &'a Alert) -> Element<'a> {
    let mut c = vec![t("CmdID", &a.cmd_id)];
    if a.no_resp {
        c.push(empty("NoResp"));
    }
    push_cred(&mut c, &a.cred);
    if let Some(code) = a.code {
        c.push(t("Data", code.to_string()));
    }
    if let Some(x) = &a.correlator {
        c.push(t("Correlator", x));
    }
    push_items(&mut c, &a.items);
    Element::with_children("Alert", S, c)
}

fn put_get<'a>(name: &'static str, p: &'a PutGet) -> Element<'a> {
    let mut c = vec![t("CmdID", &p.cmd_id)];
    if p.no_resp {
        c.push(empty("NoResp"));
    }
    if let Some(l) = &p.lang {
        c.push(t("Lang", l));
    }
    push_cred(&mut c, &p.cred);
    push_meta(&mut c, &p.meta);
    push_items(&mut c, &p.items);
    Element::with_children(name, S, c)
}

fn results<'a>(r: &'a Results) -> Element<'a> {
    let mut c = vec![t("CmdID", &r.cmd_id)];
    if let Some(m) = &r.msg_ref {
        c.push(t("MsgRef", m));
    }
    c.push(t("CmdRef", &r.cmd_ref));
    push_meta(&mut c, &r.meta);
    push_refs(&mut c, "TargetRef", &r.target_refs);
    push_refs(&mut c, "SourceRef", &r.source_refs);
    push_items(&mut c, &r.items);
    Element::with_children("Results", S, c)
}

fn sync<'a>(s: &'a Sync) -> Element<'a> {
    let mut c = vec![t("CmdID", &s.cmd_id)];
    if s.no_resp {
        c.push(empty("NoResp"));
    }
    push_cred(&mut c, &s.cred);
    if let Some(l) = &s.target {
        c.push(location("Target", l));
    }
    if let Some(l) = &s.source {
        c.push(location("Source", l));
    }
    push_meta(&mut c, &s.meta);
    if let Some(n) = s.number_of_changes {
        c.push(t("NumberOfChanges", n.to_string()));
    }
    c.extend(s.commands.iter().map(command));
    Element::with_children("Sync", S, c)
}

fn item_command<'a>(name: &'static str, i: &'a ItemCommand) -> Element<'a> {
    let mut c = vec![t("CmdID", &i.cmd_id)];
    if i.no_resp {
        c.push(empty("NoResp"));
    }
    if i.archive {
        c.push(empty("Archive"));
    }
    if i.sft_del {
        c.push(empty("SftDel"));
    }
    push_cred(&mut c, &i.cred);
    push_meta(&mut c, &i.meta);
    push_items(&mut c, &i.items);
    Element::with_children(name, S, c)
}

fn map<'a>(m: &'a Map) -> Element<'a> {
    let mut c = vec![
        t("CmdID", &m.cmd_id),
        location("Target", &m.target),
        location("Source", &m.source),
    ];
    push_cred(&mut c, &m.cred);
    push_meta(&mut c, &m.meta);
    c.extend(m.items.iter().map(|i| {
        Element::with_children(
            "MapItem",
            S,
            vec![location("Target", &i.target), location("Source", &i.source)],
        )
    }));
    Element::with_children("Map", S, c)
}

fn item<'a>(i: &'a Item) -> Element<'a> {
    let mut c = Vec::new();
    if let Some(l) = &i.target {
        c.push(location("Target", l));
    }
    if let Some(l) = &i.source {
        c.push(location("Source", l));
    }
    if let Some(p) = &i.source_parent {
        c.push(Element::with_children(
            "SourceParent",
            S,
            vec![t("LocURI", p)],
        ));
    }
    if let Some(p) = &i.target_parent {
        c.push(Element::with_children(
            "TargetParent",
            S,
            vec![t("LocURI", p)],
        ));
    }
    push_meta(&mut c, &i.meta);
    if let Some(d) = &i.data {
        c.push(data(d));
    }
    if i.more_data {
        c.push(empty("MoreData"));
    }
    Element::with_children("Item", S, c)
}

fn data<'a>(d: &'a ItemData) -> Element<'a> {
    match d {
        ItemData::Text(s) => t("Data", s),
        ItemData::Bytes(b) => Element::with_opaque("Data", S, &b[..]),
        ItemData::DevInf(di) => Element::with_children("Data", S, vec![di.to_element()]),
        ItemData::Anchor(a) => Element::with_children("Data", S, vec![anchor(a)]),
        ItemData::Elements(e) => Element::with_children("Data", S, e.clone()),
    }
}
