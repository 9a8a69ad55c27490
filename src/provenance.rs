//! Provenance: is a change AI-assisted, and by which signal (DESIGN.md section 2)?

use std::collections::BTreeMap;
use std::fmt;

use crate::change::{Change, Operation};
use crate::policy::Provenance;

/// The signal that marked a change AI-assisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A provenance annotation on the new object.
    Annotation {
        /// The annotation key.
        key: String,
        /// Its value.
        value: String,
    },
    /// A provenance annotation that the old object had; the update removed or
    /// changed it, but provenance is sticky.
    StickyAnnotation {
        /// The annotation key.
        key: String,
        /// Its value on the old object.
        value: String,
    },
    /// The requesting user matches a `users` glob.
    User(String),
    /// One of the requester's groups matches a `groups` glob.
    Group(String),
    /// The field manager matches a `fieldManagers` glob.
    FieldManager(String),
}

impl Signal {
    /// A short label for metrics and audit annotations.
    pub fn kind(&self) -> &'static str {
        match self {
            Signal::Annotation { .. } => "annotation",
            Signal::StickyAnnotation { .. } => "sticky-annotation",
            Signal::User(_) => "user",
            Signal::Group(_) => "group",
            Signal::FieldManager(_) => "field-manager",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signal::Annotation { key, value } => write!(f, "annotation {key}={value:?}"),
            Signal::StickyAnnotation { key, value } => write!(
                f,
                "annotation {key}={value:?} on the current object (removing it does not make a change human)"
            ),
            Signal::User(u) => write!(f, "requester {u}"),
            Signal::Group(g) => write!(f, "requester group {g}"),
            Signal::FieldManager(m) => write!(f, "field manager {m}"),
        }
    }
}

/// The first AI signal in the change, or `None` for a change made by people.
///
/// Identity (user, group, field manager) is checked first: it is the strong signal and
/// the one that survives DELETE and scale, which carry no annotations of their own.
pub fn detect(change: &Change, p: &Provenance) -> Option<Signal> {
    let user = &change.requester.username;
    if p.users.iter().any(|g| g.matches(user)) {
        return Some(Signal::User(user.clone()));
    }
    if let Some(group) = change
        .requester
        .groups
        .iter()
        .find(|group| p.groups.iter().any(|g| g.matches(group)))
    {
        return Some(Signal::Group(group.clone()));
    }
    if let Some(m) = &change.field_manager
        && p.field_managers.iter().any(|g| g.matches(m))
    {
        return Some(Signal::FieldManager(m.clone()));
    }
    // DELETE, scale and eviction are judged by identity alone (DESIGN.md section 2).
    if change.operation == Operation::Delete || change.is_identity_only() {
        return None;
    }
    // The cluster's controllers act on changes already admitted: the annotations they
    // carry were copied (Deployment to ReplicaSet, CronJob to Job), never new AI work.
    if p.controllers.iter().any(|g| g.matches(user)) {
        return None;
    }
    if let Some((key, value)) = marker(&change.new_annotations, p) {
        return Some(Signal::Annotation { key, value });
    }
    if p.sticky
        && change.operation == Operation::Update
        && let Some((key, value)) = marker(&change.old_annotations, p)
    {
        return Some(Signal::StickyAnnotation { key, value });
    }
    None
}

/// A provenance annotation that is present with any value but `false`.
fn marker(annotations: &BTreeMap<String, String>, p: &Provenance) -> Option<(String, String)> {
    p.annotations.iter().find_map(|key| {
        annotations
            .get(key)
            .filter(|v| !v.trim().eq_ignore_ascii_case("false"))
            .map(|v| (key.clone(), v.clone()))
    })
}
