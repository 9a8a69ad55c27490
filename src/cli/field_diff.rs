//! What a change does to an object, field by field: the diff an approver reads before
//! signing (`kubectl blastguard diff -f FILE`, and the inbox's `show NAME`).
//!
//! [`diff`] is pure: it compares the live object with the requested one (both as the
//! API server presents them) and lists only the fields that change. What the server
//! sets by itself (`status`, `metadata.resourceVersion`, `managedFields`, ...) and the
//! annotations of the approval itself are left out: they are not what anyone
//! approves, and listing them would bury the change in noise. Lists of named items
//! (containers, env, volumes, ports) are compared by name, as `kubectl apply` merges
//! them, so inserting a container shows one added container, not every later one
//! changed.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::annotations::{APPROVAL, APPROVAL_SIGNATURE};

/// `metadata` fields the API server sets on its own; never part of what is approved.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
];

/// Annotations that say how a change was made or approved, not what it changes.
const BOOKKEEPING_ANNOTATIONS: &[&str] = &[
    APPROVAL,
    APPROVAL_SIGNATURE,
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// The field, e.g. `spec.template.spec.containers[web].image` (a named list item
    /// by its name, other list items by index, keys with dots or slashes quoted:
    /// `metadata.labels["app.kubernetes.io/name"]`).
    pub path: String,
    /// The live value; `None` when the field is added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    /// The requested value; `None` when the field is removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

impl FieldChange {
    /// `+` for an added field, `-` for a removed one, `~` for a changed one.
    pub fn sign(&self) -> char {
        match (&self.old, &self.new) {
            (None, _) => '+',
            (_, None) => '-',
            _ => '~',
        }
    }
}

/// The fields a change sets, changes or removes, in the order of the objects' keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Diff {
    /// Whether there is a live object (false: the change creates it, or the live
    /// object was not found).
    pub live: bool,
    /// Whether there is a requested object (false: the change deletes it).
    pub requested: bool,
    /// The fields that differ.
    pub changes: Vec<FieldChange>,
}

impl Diff {
    /// True when nothing an approver signs for changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.live == self.requested
    }
}

/// The diff between the `live` object (`None`: it does not exist yet) and the
/// `requested` one (`None`: it is deleted). Both are objects as the API server
/// presents them; a manifest should be defaulted first, or every defaulted field
/// shows as a removal.
pub fn diff(live: Option<&Value>, requested: Option<&Value>) -> Diff {
    let empty = Value::Object(Map::new());
    let old = live.map(relevant).unwrap_or_else(|| empty.clone());
    let new = requested.map(relevant).unwrap_or(empty);
    let mut changes = Vec::new();
    compare(&mut String::new(), Some(&old), Some(&new), &mut changes);
    Diff {
        live: live.is_some(),
        requested: requested.is_some(),
        changes,
    }
}

/// The object without what the server sets and the approval's own annotations.
fn relevant(object: &Value) -> Value {
    let mut object = object.clone();
    let Some(map) = object.as_object_mut() else {
        return object;
    };
    map.remove("status");
    if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_METADATA {
            metadata.remove(*field);
        }
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            for key in BOOKKEEPING_ANNOTATIONS {
                annotations.remove(*key);
            }
            if annotations.is_empty() {
                metadata.remove("annotations");
            }
        }
    }
    object
}

/// `path` extended by a mapping key, quoted when it is not a plain word.
fn push_key(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (plain, path.is_empty()) {
        (true, true) => key.to_string(),
        (true, false) => format!("{path}.{key}"),
        (false, _) => format!("{path}[{}]", Value::String(key.to_string())),
    }
}

fn name_of(item: &Value) -> Option<&str> {
    item.get("name").and_then(Value::as_str)
}

/// Lists whose items all carry a distinct `name` are compared by name.
fn named(items: &[Value]) -> bool {
    let mut names: Vec<&str> = Vec::with_capacity(items.len());
    for item in items {
        match name_of(item) {
            Some(name) if !names.contains(&name) => names.push(name),
            _ => return false,
        }
    }
    true
}

fn compare(
    path: &mut String,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<FieldChange>,
) {
    match (old, new) {
        (Some(a), Some(b)) if a == b => {}
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            for (key, value) in a {
                let mut sub = push_key(path, key);
                compare(&mut sub, Some(value), b.get(key), out);
            }
            for (key, value) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                let mut sub = push_key(path, key);
                compare(&mut sub, None, Some(value), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b)))
            if !a.is_empty() && !b.is_empty() && named(a) && named(b) =>
        {
            let find = |items: &'_ [Value], name: &str| -> Option<Value> {
                items.iter().find(|i| name_of(i) == Some(name)).cloned()
            };
            for item in a {
                let name = name_of(item).unwrap_or_default();
                let mut sub = format!("{path}[{name}]");
                compare(&mut sub, Some(item), find(b, name).as_ref(), out);
            }
            for item in b {
                let name = name_of(item).unwrap_or_default();
                if find(a, name).is_none() {
                    let mut sub = format!("{path}[{name}]");
                    compare(&mut sub, None, Some(item), out);
                }
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let mut sub = format!("{path}[{i}]");
                compare(&mut sub, Some(x), Some(y), out);
            }
        }
        (None, None) => {}
        (old, new) => out.push(FieldChange {
            path: path.clone(),
            old: old.cloned(),
            new: new.cloned(),
        }),
    }
}

/// A value as one short line: strings as they are when that is unambiguous, anything
/// else as compact JSON.
pub fn show_value(value: &Value) -> String {
    match value {
        Value::String(s)
            if !s.is_empty()
                && !s.contains(char::is_whitespace)
                && s.parse::<f64>().is_err()
                && !matches!(s.as_str(), "true" | "false" | "null") =>
        {
            s.clone()
        }
        other => other.to_string(),
    }
}

impl fmt::Display for Diff {
    /// One line a field: `~ spec.replicas: 20 → 40`, `+ path: value`, `- path: value`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.live && self.requested {
            writeln!(f, "(the object does not exist yet: it is created)")?;
        }
        if self.live && !self.requested {
            writeln!(f, "(the object is deleted)")?;
            return Ok(());
        }
        if self.changes.is_empty() {
            return writeln!(f, "(no change)");
        }
        for change in &self.changes {
            match (&change.old, &change.new) {
                (Some(old), Some(new)) => writeln!(
                    f,
                    "~ {}: {} → {}",
                    change.path,
                    show_value(old),
                    show_value(new)
                )?,
                (None, Some(new)) => writeln!(f, "+ {}: {}", change.path, show_value(new))?,
                (Some(old), None) => writeln!(f, "- {}: {}", change.path, show_value(old))?,
                (None, None) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: u64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "payments",
                "uid": "1", "resourceVersion": "7", "generation": 3,
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "kubectl"}],
                "labels": {"app": "web"},
                "annotations": {"blastguard.io/ai-agent": "claude-code"}
            },
            "spec": {
                "replicas": replicas,
                "template": {"spec": {"containers": [
                    {"name": "web", "image": image, "imagePullPolicy": "IfNotPresent"},
                    {"name": "sidecar", "image": "envoy:1"}
                ]}}
            },
            "status": {"replicas": replicas, "readyReplicas": 1}
        })
    }

    #[test]
    fn lists_only_the_fields_that_change() {
        let live = deployment(20, "nginx:1.27");
        let mut requested = deployment(40, "nginx:1.28");
        requested["metadata"]["resourceVersion"] = json!("8");
        requested["status"] = json!({});
        let d = diff(Some(&live), Some(&requested));
        assert_eq!(
            d.changes,
            vec![
                FieldChange {
                    path: "spec.replicas".into(),
                    old: Some(json!(20)),
                    new: Some(json!(40)),
                },
                FieldChange {
                    path: "spec.template.spec.containers[web].image".into(),
                    old: Some(json!("nginx:1.27")),
                    new: Some(json!("nginx:1.28")),
                },
            ]
        );
        assert_eq!(
            d.to_string(),
            "~ spec.replicas: 20 → 40\n~ spec.template.spec.containers[web].image: nginx:1.27 → nginx:1.28\n"
        );
    }

    #[test]
    fn the_approval_annotations_are_left_out_but_other_annotations_are_not() {
        let live = deployment(20, "nginx:1.27");
        let mut requested = live.clone();
        let annotations = requested["metadata"]["annotations"]
            .as_object_mut()
            .unwrap();
        annotations.insert(APPROVAL.into(), json!("{\"kind\":\"Approval\"}"));
        annotations.insert(
            APPROVAL_SIGNATURE.into(),
            json!("-----BEGIN SSH SIGNATURE-----"),
        );
        assert!(diff(Some(&live), Some(&requested)).is_empty());
        annotations_of(&mut requested).insert("team".into(), json!("payments"));
        annotations_of(&mut requested).remove("blastguard.io/ai-agent");
        let d = diff(Some(&live), Some(&requested));
        assert_eq!(
            d.to_string(),
            "- metadata.annotations[\"blastguard.io/ai-agent\"]: claude-code\n+ metadata.annotations.team: payments\n"
        );
    }

    fn annotations_of(object: &mut Value) -> &mut Map<String, Value> {
        object["metadata"]["annotations"].as_object_mut().unwrap()
    }

    #[test]
    fn named_items_are_matched_by_name_not_position() {
        let live = deployment(1, "nginx:1.27");
        let mut requested = live.clone();
        requested["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .insert(0, json!({"name": "init", "image": "busybox"}));
        let d = diff(Some(&live), Some(&requested));
        assert_eq!(d.changes.len(), 1, "{d}");
        assert_eq!(d.changes[0].path, "spec.template.spec.containers[init]");
        assert_eq!(d.changes[0].sign(), '+');
    }

    #[test]
    fn unnamed_lists_compare_by_index_or_as_a_whole() {
        let live = json!({"spec": {"args": ["a", "b"], "ports": [1]}});
        let requested = json!({"spec": {"args": ["a", "c"], "ports": [1, 2]}});
        let d = diff(Some(&live), Some(&requested));
        assert_eq!(
            d.to_string(),
            "~ spec.args[1]: b → c\n~ spec.ports: [1] → [1,2]\n"
        );
    }

    #[test]
    fn a_creation_lists_every_field_and_a_deletion_says_so() {
        let requested = deployment(3, "nginx:1.27");
        let created = diff(None, Some(&requested));
        assert!(!created.live && created.requested);
        assert!(created.changes.iter().all(|c| c.sign() == '+'));
        assert!(
            created
                .to_string()
                .starts_with("(the object does not exist yet")
        );
        assert!(
            !created.to_string().contains("resourceVersion"),
            "server-set fields are left out: {created}"
        );
        let deleted = diff(Some(&requested), None);
        assert_eq!(deleted.to_string(), "(the object is deleted)\n");
    }

    #[test]
    fn ambiguous_strings_are_quoted() {
        assert_eq!(show_value(&json!("40")), "\"40\"");
        assert_eq!(show_value(&json!("true")), "\"true\"");
        assert_eq!(show_value(&json!("")), "\"\"");
        assert_eq!(show_value(&json!("a b")), "\"a b\"");
        assert_eq!(show_value(&json!("nginx:1.28")), "nginx:1.28");
        assert_eq!(show_value(&json!(40)), "40");
    }

    #[test]
    fn keys_with_dots_or_slashes_are_quoted() {
        let d = diff(
            Some(&json!({"metadata": {"labels": {}}})),
            Some(&json!({"metadata": {"labels": {"app.kubernetes.io/name": "web"}}})),
        );
        assert_eq!(
            d.to_string(),
            "+ metadata.labels[\"app.kubernetes.io/name\"]: web\n"
        );
    }
}
