//! Element paths for error messages, built on the stack as the parser
//! descends so the happy path allocates nothing for them.

use crate::tree::Element;
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("{path}: missing <{element}>")]
    Missing { path: String, element: &'static str },
    #[error("{path}: {reason}: {value:?}")]
    Invalid {
        path: String,
        value: String,
        reason: &'static str,
    },
    #[error("{path}: expected character data, found child elements")]
    NotText { path: String },
    #[error("root element is <{0}>, expected <SyncML>")]
    NotSyncMl(String),
}

/// One step of the path. The position among same-named siblings is only
/// worked out when an error is printed, so walking a large Sync costs
/// nothing extra.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    parent: Option<&'a At<'a>>,
    name: &'a str,
    /// The element itself and its siblings, when it exists in the tree.
    place: Option<(&'a Element<'a>, &'a [Element<'a>])>,
}

impl<'a> At<'a> {
    pub(crate) fn root(name: &'a str) -> At<'a> {
        At {
            parent: None,
            name,
            place: None,
        }
    }

    /// Path step for `child`, a child of `parent` (the element `self` names).
    pub(crate) fn child(&'a self, parent: &'a Element<'a>, child: &'a Element<'a>) -> At<'a> {
        At {
            parent: Some(self),
            name: &child.name,
            place: Some((child, parent.children())),
        }
    }

    /// Path step for an element that should exist but does not.
    pub(crate) fn named(&'a self, name: &'a str) -> At<'a> {
        At {
            parent: Some(self),
            name,
            place: None,
        }
    }

    /// 1-based position among same-named siblings, if there are several.
    fn index(&self) -> Option<usize> {
        let (me, siblings) = self.place?;
        let mut same = siblings.iter().filter(|s| s.name == me.name);
        let pos = same.by_ref().position(|s| std::ptr::eq(s, me))?;
        let total = pos + 1 + same.count();
        (total > 1).then_some(pos + 1)
    }

    pub(crate) fn path(&self) -> String {
        let mut steps = Vec::new();
        let mut cur = Some(self);
        while let Some(at) = cur {
            steps.push(at);
            cur = at.parent;
        }
        let mut out = String::new();
        for (i, at) in steps.iter().rev().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(at.name);
            if let Some(index) = at.index() {
                let _ = write!(out, "[{index}]");
            }
        }
        out
    }

    pub(crate) fn missing(&self, element: &'static str) -> MessageError {
        MessageError::Missing {
            path: self.path(),
            element,
        }
    }

    pub(crate) fn invalid(&self, value: &str, reason: &'static str) -> MessageError {
        MessageError::Invalid {
            path: self.path(),
            value: value.to_owned(),
            reason,
        }
    }

    pub(crate) fn not_text(&self) -> MessageError {
        MessageError::NotText { path: self.path() }
    }
}
