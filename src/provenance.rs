//! Provenance: is a change AI-assisted, and by which signal (docs/design.md#annotations)?

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use crate::change::{Change, Operation};
use crate::policy::Provenance;
use crate::review::{RawAnnotations, RequestView};

/// An object's annotations, however they were read.
pub trait Annotations {
    /// The value of `key`, if present.
    fn value(&self, key: &str) -> Option<Cow<'_, str>>;
}

impl Annotations for BTreeMap<String, String> {
    fn value(&self, key: &str) -> Option<Cow<'_, str>> {
        self.get(key).map(|v| Cow::Borrowed(v.as_str()))
    }
}

impl Annotations for RawAnnotations<'_> {
    fn value(&self, key: &str) -> Option<Cow<'_, str>> {
        self.get(key)
    }
}

/// What provenance reads of a request: who asks, through which field manager, and
/// the markers of both objects. Cheap to take from the borrowed request view, so a
/// person's change is judged without parsing its objects.
pub struct Facts<'a> {
    /// The requesting user.
    pub username: &'a str,
    /// The requester's groups.
    pub groups: Vec<&'a str>,
    /// `options.fieldManager`.
    pub field_manager: Option<&'a str>,
    /// DELETE carries no new object: its provenance is the requester's.
    pub operation: Operation,
    /// A request to a subresource of another kind (a Scale, an Eviction, ...): no
    /// annotations of the object's own.
    pub identity_only: bool,
    /// The new object's annotations.
    pub new: &'a dyn Annotations,
    /// The old object's annotations.
    pub old: &'a dyn Annotations,
}

impl<'a> Facts<'a> {
    /// The facts of a normalized change.
    pub fn of_change(change: &'a Change) -> Self {
        Self {
            username: &change.requester.username,
            groups: change.requester.groups.iter().map(String::as_str).collect(),
            field_manager: change.field_manager.as_deref(),
            operation: change.operation,
            identity_only: change.is_identity_only(),
            new: &change.new_annotations,
            old: &change.old_annotations,
        }
    }

    /// The facts of a request view, with its objects' annotations.
    pub fn of_view(
        view: &'a RequestView<'a>,
        new: &'a RawAnnotations<'a>,
        old: &'a RawAnnotations<'a>,
    ) -> Self {
        Self {
            username: view.user_info.username.as_deref().unwrap_or_default(),
            groups: view
                .user_info
                .groups
                .iter()
                .flatten()
                .map(|g| g.as_ref())
                .collect(),
            field_manager: view.field_manager(),
            operation: view.operation,
            identity_only: view.is_foreign_subresource(),
            new,
            old,
        }
    }
}

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
pub fn detect(facts: &Facts<'_>, p: &Provenance) -> Option<Signal> {
    let user = facts.username;
    if p.users.iter().any(|g| g.matches(user)) {
        return Some(Signal::User(user.to_string()));
    }
    if let Some(group) = facts
        .groups
        .iter()
        .find(|group| p.groups.iter().any(|g| g.matches(group)))
    {
        return Some(Signal::Group(group.to_string()));
    }
    if let Some(m) = facts.field_manager
        && p.field_managers.iter().any(|g| g.matches(m))
    {
        return Some(Signal::FieldManager(m.to_string()));
    }
    // DELETE, scale and eviction are judged by identity alone (docs/design.md#annotations).
    if facts.operation == Operation::Delete || facts.identity_only {
        return None;
    }
    // The cluster's controllers act on changes already admitted: the annotations they
    // carry were copied (Deployment to ReplicaSet, CronJob to Job), never new AI work.
    if p.controllers.iter().any(|g| g.matches(user)) {
        return None;
    }
    if let Some((key, value)) = marker(facts.new, p) {
        return Some(Signal::Annotation { key, value });
    }
    if p.sticky
        && facts.operation == Operation::Update
        && let Some((key, value)) = marker(facts.old, p)
    {
        return Some(Signal::StickyAnnotation { key, value });
    }
    None
}

/// A provenance annotation that is present with any value but `false`.
fn marker(annotations: &dyn Annotations, p: &Provenance) -> Option<(String, String)> {
    p.annotations.iter().find_map(|key| {
        annotations
            .value(key)
            .filter(|v| !v.trim().eq_ignore_ascii_case("false"))
            .map(|v| (key.clone(), v.into_owned()))
    })
}
