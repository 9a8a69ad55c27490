//! The `summary` of an approval payload: one human line of what the change does
//! (docs/approvals.md#the-approval).
//!
//! E.g. `replicas 3 → 40, image nginx:1.27 → nginx:1.28, 40 pods affected`. It is
//! signed with the rest of the payload and checked against nothing: the digest binds
//! the change; the summary tells the approver, in words, what that digest is of.

use serde_json::Value;

use super::ApprovalOperation;

/// Longest summary written into a payload, in characters; a longer one is cut with `…`
/// so the payload stays well under its size bound.
pub const MAX_SUMMARY_CHARS: usize = 400;

/// What is known of a change when its summary is written.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// What is approved.
    pub operation: ApprovalOperation,
    /// The object before the change (`None` on CREATE, or when not known).
    pub old: Option<&'a Value>,
    /// The object after the change (`None` on DELETE and scale).
    pub new: Option<&'a Value>,
    /// Replicas before and after (scale, or when read by the engine).
    pub replicas: (Option<u64>, Option<u64>),
    /// Pods the change affects, when measured.
    pub pods: Option<u64>,
    /// A CREATE (an apply without `old` may also be an update whose old object is
    /// not known, as for a manifest read offline).
    pub creating: bool,
}

/// The summary of a change the webhook judged: its objects as the request carried
/// them, and the pods the engine counted. Parsed only when a denial offers a payload.
pub fn of_change(change: &crate::change::Change, pods: Option<u64>) -> String {
    let parse = |o: Option<&crate::review::KeptObject>| {
        o.and_then(|o| serde_json::from_str::<Value>(o.text()).ok())
    };
    let (old, new) = (
        parse(change.old_object.as_ref()),
        parse(change.object.as_ref()),
    );
    let operation = if change.is_scale() {
        ApprovalOperation::Scale
    } else if change.operation == crate::change::Operation::Delete {
        ApprovalOperation::Delete
    } else {
        ApprovalOperation::Apply
    };
    describe(&Facts {
        operation,
        old: old.as_ref(),
        new: if operation == ApprovalOperation::Apply {
            new.as_ref()
        } else {
            None
        },
        replicas: (change.old_replicas, change.new_replicas),
        pods,
        creating: change.operation == crate::change::Operation::Create,
    })
}

/// One line of what the change does.
pub fn describe(facts: &Facts<'_>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let replicas_of = |o: Option<&Value>| o.and_then(|o| o.pointer("/spec/replicas")?.as_u64());
    let old_replicas = facts.replicas.0.or(replicas_of(facts.old));
    let new_replicas = facts.replicas.1.or(replicas_of(facts.new));
    match facts.operation {
        ApprovalOperation::Delete => {
            parts.push("delete".into());
            if let Some(r) = old_replicas {
                parts.push(format!("replicas {r} → 0"));
            }
        }
        ApprovalOperation::Scale => {
            parts.push(replicas_line(old_replicas, new_replicas));
        }
        ApprovalOperation::Apply => {
            if facts.creating {
                parts.push("create".into());
            }
            // An update that keeps the count says nothing of replicas.
            let unchanged = facts.old.is_some() && old_replicas == new_replicas;
            if new_replicas.is_some() && !unchanged {
                parts.push(replicas_line(old_replicas, new_replicas));
            }
            let (old_images, new_images) = (images(facts.old), images(facts.new));
            parts.extend(image_changes(facts.old.is_some(), &old_images, &new_images));
            if facts.old.is_some()
                && let (Some(old), Some(new)) = (facts.old, facts.new)
            {
                let labels = |o: &Value| o.pointer("/metadata/labels").cloned();
                if labels(old) != labels(new) {
                    parts.push("labels changed".into());
                }
                if parts.is_empty() {
                    let spec = |o: &Value| o.get("spec").cloned();
                    parts.push(if spec(old) != spec(new) {
                        "spec changed".into()
                    } else {
                        "no change to spec or labels".into()
                    });
                }
            }
        }
    }
    if let Some(pods) = facts.pods {
        parts.push(format!(
            "{pods} pod{} affected",
            if pods == 1 { "" } else { "s" }
        ));
    }
    cut(&parts.join(", "))
}

fn replicas_line(old: Option<u64>, new: Option<u64>) -> String {
    let show = |r: Option<u64>| r.map_or("?".to_string(), |r| r.to_string());
    match old {
        Some(_) => format!("replicas {} → {}", show(old), show(new)),
        None => format!("replicas {}", show(new)),
    }
}

/// `(container name, image)` of every container of the object's pod template, init
/// containers included, wherever the kind keeps its template (a Pod's own spec, a
/// workload's `spec.template`, a CronJob's job template).
fn images(object: Option<&Value>) -> Vec<(String, String)> {
    let Some(object) = object else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for pod_spec in [
        "/spec",
        "/spec/template/spec",
        "/spec/jobTemplate/spec/template/spec",
    ] {
        for list in ["initContainers", "containers"] {
            let Some(containers) = object
                .pointer(&format!("{pod_spec}/{list}"))
                .and_then(Value::as_array)
            else {
                continue;
            };
            for c in containers {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
                let image = c.get("image").and_then(Value::as_str).unwrap_or("?");
                out.push((name.to_string(), image.to_string()));
            }
        }
    }
    out
}

fn image_changes(update: bool, old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
    // One container: `image a → b`; several: each named.
    let single = new.len() == 1 && old.len() <= 1;
    let mut out = Vec::new();
    for (name, image) in new {
        let before = old.iter().find(|(n, _)| n == name).map(|(_, i)| i);
        let label = if single {
            "image".to_string()
        } else {
            format!("image {name}")
        };
        match before {
            Some(before) if before == image => {}
            Some(before) => out.push(format!("{label} {before} → {image}")),
            None if update && !old.is_empty() => out.push(format!("{label} added: {image}")),
            None => out.push(format!("{label} {image}")),
        }
    }
    for (name, image) in old {
        if !new.iter().any(|(n, _)| n == name) && !new.is_empty() {
            out.push(format!("container {name} removed ({image})"));
        }
    }
    out
}

/// Cut to [`MAX_SUMMARY_CHARS`], control characters replaced: the summary is one line
/// shown in terminals, and an image name is the requester's text.
fn cut(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_SUMMARY_CHARS)
        .collect();
    if text.chars().count() > MAX_SUMMARY_CHARS {
        out.pop();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(replicas: u64, image: &str) -> Value {
        json!({"spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn each_operation_reads_as_one_line() {
        let (old, new) = (deployment(3, "nginx:1.27"), deployment(40, "nginx:1.28"));
        let cases = [
            (
                Facts {
                    operation: ApprovalOperation::Apply,
                    old: Some(&old),
                    new: Some(&new),
                    replicas: (None, None),
                    pods: Some(40),
                    creating: false,
                },
                "replicas 3 → 40, image nginx:1.27 → nginx:1.28, 40 pods affected",
            ),
            (
                Facts {
                    operation: ApprovalOperation::Apply,
                    old: None,
                    new: Some(&new),
                    replicas: (None, None),
                    pods: Some(40),
                    creating: true,
                },
                "create, replicas 40, image nginx:1.28, 40 pods affected",
            ),
            (
                Facts {
                    operation: ApprovalOperation::Scale,
                    old: None,
                    new: None,
                    replicas: (Some(3), Some(45)),
                    pods: Some(42),
                    creating: false,
                },
                "replicas 3 → 45, 42 pods affected",
            ),
            (
                Facts {
                    operation: ApprovalOperation::Delete,
                    old: Some(&old),
                    new: None,
                    replicas: (None, None),
                    pods: Some(1),
                    creating: false,
                },
                "delete, replicas 3 → 0, 1 pod affected",
            ),
            (
                Facts {
                    operation: ApprovalOperation::Apply,
                    old: Some(&old),
                    new: Some(
                        &json!({"spec": {"replicas": 3, "paused": true, "template": old["spec"]["template"]}}),
                    ),
                    replicas: (None, None),
                    pods: None,
                    creating: false,
                },
                "spec changed",
            ),
        ];
        for (facts, expected) in cases {
            assert_eq!(describe(&facts), expected);
        }
    }

    #[test]
    fn a_summary_is_one_bounded_line() {
        let image = format!("evil\n{}", "x".repeat(1000));
        let new = deployment(1, &image);
        let line = describe(&Facts {
            operation: ApprovalOperation::Apply,
            old: None,
            new: Some(&new),
            replicas: (None, None),
            pods: None,
            creating: false,
        });
        assert!(!line.contains('\n'));
        assert_eq!(line.chars().count(), MAX_SUMMARY_CHARS);
        assert!(line.ends_with('…'));
    }
}
