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
/// them, and the pods the engine counted. Written only when a denial offers a payload,
/// from one pass over each object's text that keeps only what the line names (the
/// replicas, each container's name and image, the labels) instead of a tree of the
/// whole object; the spec is compared whole only in the rare case nothing else
/// changed. The line is [`describe`]'s: the same function writes it.
pub fn of_change(change: &crate::change::Change, pods: Option<u64>) -> String {
    // Any JSON is read (as a tree would be); only an object has anything to see.
    let read = |o: Option<&crate::review::KeptObject>| {
        o.and_then(|o| serde_json::from_str::<walk::Lenient<walk::Object>>(o.text()).ok())
            .map(|read| read.0.map(walk::Object::seen).unwrap_or_default())
    };
    let (old, new) = (
        read(change.old_object.as_ref()),
        read(change.object.as_ref()),
    );
    let operation = if change.is_scale() {
        ApprovalOperation::Scale
    } else if change.operation == crate::change::Operation::Delete {
        ApprovalOperation::Delete
    } else {
        ApprovalOperation::Apply
    };
    let new = if operation == ApprovalOperation::Apply {
        new
    } else {
        None
    };
    let spec = |o: &crate::review::KeptObject| {
        serde_json::from_str::<Value>(o.text())
            .ok()
            .and_then(|mut v| v.get_mut("spec").map(Value::take))
    };
    write(
        operation,
        old.as_ref(),
        new.as_ref(),
        (change.old_replicas, change.new_replicas),
        pods,
        change.operation == crate::change::Operation::Create,
        || match (&change.old_object, &change.object) {
            (Some(old), Some(new)) => spec(old) != spec(new),
            _ => true,
        },
    )
}

/// What a summary reads of one object.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    /// `spec.replicas`, when a non-negative integer.
    replicas: Option<u64>,
    /// `(container name, image)` as [`images`] lists them.
    images: Vec<(String, String)>,
    /// `metadata.labels`, whatever it is.
    labels: Option<Value>,
}

impl Seen {
    fn of(object: &Value) -> Self {
        Seen {
            replicas: object.pointer("/spec/replicas").and_then(Value::as_u64),
            images: images(Some(object)),
            labels: object.pointer("/metadata/labels").cloned(),
        }
    }
}

/// One line of what the change does.
pub fn describe(facts: &Facts<'_>) -> String {
    let (old, new) = (facts.old.map(Seen::of), facts.new.map(Seen::of));
    fn spec(o: Option<&Value>) -> Option<&Value> {
        o.and_then(|o| o.get("spec"))
    }
    write(
        facts.operation,
        old.as_ref(),
        new.as_ref(),
        facts.replicas,
        facts.pods,
        facts.creating,
        || spec(facts.old) != spec(facts.new),
    )
}

/// The line, from what was seen of each object; `spec_differs` is asked only when
/// nothing else changed.
fn write(
    operation: ApprovalOperation,
    old: Option<&Seen>,
    new: Option<&Seen>,
    replicas: (Option<u64>, Option<u64>),
    pods: Option<u64>,
    creating: bool,
    spec_differs: impl FnOnce() -> bool,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    let old_replicas = replicas.0.or(old.and_then(|o| o.replicas));
    let new_replicas = replicas.1.or(new.and_then(|o| o.replicas));
    match operation {
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
            if creating {
                parts.push("create".into());
            }
            // An update that keeps the count says nothing of replicas.
            let unchanged = old.is_some() && old_replicas == new_replicas;
            if new_replicas.is_some() && !unchanged {
                parts.push(replicas_line(old_replicas, new_replicas));
            }
            fn images(o: Option<&Seen>) -> &[(String, String)] {
                o.map_or(&[], |o| &o.images)
            }
            parts.extend(image_changes(old.is_some(), images(old), images(new)));
            if let (Some(old), Some(new)) = (old, new) {
                if old.labels != new.labels {
                    parts.push("labels changed".into());
                }
                if parts.is_empty() {
                    parts.push(if spec_differs() {
                        "spec changed".into()
                    } else {
                        "no change to spec or labels".into()
                    });
                }
            }
        }
    }
    if let Some(pods) = pods {
        parts.push(format!(
            "{pods} pod{} affected",
            if pods == 1 { "" } else { "s" }
        ));
    }
    cut(&parts.join(", "))
}

/// One pass over an object's text that keeps what [`Seen`] holds, as [`Seen::of`]
/// reads it from a tree: the paths [`images`] looks at, `spec.replicas` and
/// `metadata.labels`, each member's last value when a key repeats (as in a tree), and
/// anything of an unexpected type read as absent. Everything else is skipped.
mod walk {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::Value;

    use super::Seen;

    /// An object whose members are read by key.
    pub(super) trait Members<'de>: Default {
        /// Reads the value of the member `key` (exactly one value).
        fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
    }

    /// `Some` when the value was an object; any other value is read and dropped.
    pub(super) struct Lenient<T>(pub(super) Option<T>);

    impl<'de, T: Members<'de>> Deserialize<'de> for Lenient<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Shape(std::marker::PhantomData))
                .map(Lenient)
        }
    }

    /// A string value, or `None` for anything else.
    struct Text(Option<String>);

    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Text;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_str<E>(self, v: &str) -> Result<Text, E> {
                    Ok(Text(Some(v.to_string())))
                }
                fn visit_string<E>(self, v: String) -> Result<Text, E> {
                    Ok(Text(Some(v)))
                }
                fn visit_bool<E>(self, _: bool) -> Result<Text, E> {
                    Ok(Text(None))
                }
                fn visit_i64<E>(self, _: i64) -> Result<Text, E> {
                    Ok(Text(None))
                }
                fn visit_u64<E>(self, _: u64) -> Result<Text, E> {
                    Ok(Text(None))
                }
                fn visit_f64<E>(self, _: f64) -> Result<Text, E> {
                    Ok(Text(None))
                }
                fn visit_unit<E>(self) -> Result<Text, E> {
                    Ok(Text(None))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(Text(None))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(Text(None))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// A non-negative integer (`Value::as_u64`), or `None` for anything else.
    struct Count(Option<u64>);

    impl<'de> Deserialize<'de> for Count {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            // A small value; read as a tree, as `as_u64` reads it.
            Ok(Count(Value::deserialize(d)?.as_u64()))
        }
    }

    /// A list of containers, or `None` when the value is not a list.
    struct Containers(Option<Vec<(String, String)>>);

    impl<'de> Deserialize<'de> for Containers {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Containers;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Containers, A::Error> {
                    let mut out = Vec::new();
                    while let Some(c) = seq.next_element::<Lenient<Container>>()? {
                        let c = c.0.unwrap_or_default();
                        let or_unknown = |t: Option<String>| t.unwrap_or_else(|| "?".to_string());
                        out.push((or_unknown(c.name), or_unknown(c.image)));
                    }
                    Ok(Containers(Some(out)))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Containers, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(Containers(None))
                }
                fn visit_str<E>(self, _: &str) -> Result<Containers, E> {
                    Ok(Containers(None))
                }
                fn visit_bool<E>(self, _: bool) -> Result<Containers, E> {
                    Ok(Containers(None))
                }
                fn visit_i64<E>(self, _: i64) -> Result<Containers, E> {
                    Ok(Containers(None))
                }
                fn visit_u64<E>(self, _: u64) -> Result<Containers, E> {
                    Ok(Containers(None))
                }
                fn visit_f64<E>(self, _: f64) -> Result<Containers, E> {
                    Ok(Containers(None))
                }
                fn visit_unit<E>(self) -> Result<Containers, E> {
                    Ok(Containers(None))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// Reads any value: an object through `T`'s members, anything else dropped.
    struct Shape<T>(std::marker::PhantomData<T>);

    impl<'de, T: Members<'de>> Visitor<'de> for Shape<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
            let mut members = T::default();
            while let Some(key) = map.next_key::<Key<'de>>()? {
                members.member(&key.0, &mut map)?;
            }
            Ok(Some(members))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
    }

    /// An object key, borrowed unless it has escapes.
    struct Key<'a>(Cow<'a, str>);

    impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a key")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v.to_string())))
                }
            }
            d.deserialize_str(V)
        }
    }

    fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
        map.next_value::<IgnoredAny>().map(drop)
    }

    /// The whole object.
    #[derive(Default)]
    pub(super) struct Object {
        spec: Option<Spec>,
        labels: Option<Value>,
    }

    impl Object {
        pub(super) fn seen(self) -> Seen {
            let spec = self.spec.unwrap_or_default();
            let mut images = Vec::new();
            // The order of `images`: the Pod's own spec, a template's, a job
            // template's; in each the init containers, then the containers.
            images.extend(spec.pod.init.into_iter().flatten());
            images.extend(spec.pod.containers.into_iter().flatten());
            let template = spec.template.and_then(|t| t.spec).unwrap_or_default();
            images.extend(template.init.into_iter().flatten());
            images.extend(template.containers.into_iter().flatten());
            let job = spec
                .job_template
                .and_then(|j| j.spec)
                .and_then(|j| j.template)
                .and_then(|t| t.spec)
                .unwrap_or_default();
            images.extend(job.init.into_iter().flatten());
            images.extend(job.containers.into_iter().flatten());
            Seen {
                replicas: spec.replicas,
                images,
                labels: self.labels,
            }
        }
    }

    impl<'de> Members<'de> for Object {
        fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
            match key {
                "spec" => self.spec = map.next_value::<Lenient<Spec>>()?.0,
                "metadata" => {
                    self.labels = map.next_value::<Lenient<Meta>>()?.0.and_then(|m| m.labels)
                }
                _ => skip(map)?,
            }
            Ok(())
        }
    }

    #[derive(Default)]
    struct Meta {
        labels: Option<Value>,
    }

    impl<'de> Members<'de> for Meta {
        fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
            match key {
                "labels" => self.labels = Some(map.next_value()?),
                _ => skip(map)?,
            }
            Ok(())
        }
    }

    /// A pod spec's containers.
    #[derive(Default)]
    struct Pod {
        init: Option<Vec<(String, String)>>,
        containers: Option<Vec<(String, String)>>,
    }

    impl Pod {
        /// Reads `key` if it is one of the pod spec's; `false` otherwise.
        fn member<'de, A: MapAccess<'de>>(
            &mut self,
            key: &str,
            map: &mut A,
        ) -> Result<bool, A::Error> {
            match key {
                "initContainers" => self.init = map.next_value::<Containers>()?.0,
                "containers" => self.containers = map.next_value::<Containers>()?.0,
                _ => return Ok(false),
            }
            Ok(true)
        }
    }

    impl<'de> Members<'de> for Pod {
        fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
            if !Pod::member(self, key, map)? {
                skip(map)?;
            }
            Ok(())
        }
    }

    /// `spec`: a Pod's own containers, the replicas, a template, a job template.
    #[derive(Default)]
    struct Spec {
        pod: Pod,
        replicas: Option<u64>,
        template: Option<Template>,
        job_template: Option<JobTemplate>,
    }

    impl<'de> Members<'de> for Spec {
        fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
            if self.pod.member(key, map)? {
                return Ok(());
            }
            match key {
                "replicas" => self.replicas = map.next_value::<Count>()?.0,
                "template" => self.template = map.next_value::<Lenient<Template>>()?.0,
                "jobTemplate" => self.job_template = map.next_value::<Lenient<JobTemplate>>()?.0,
                _ => skip(map)?,
            }
            Ok(())
        }
    }

    /// A pod template: its `spec`.
    #[derive(Default)]
    struct Template {
        spec: Option<Pod>,
    }

    impl<'de> Members<'de> for Template {
        fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
            match key {
                "spec" => self.spec = map.next_value::<Lenient<Pod>>()?.0,
                _ => skip(map)?,
            }
            Ok(())
        }
    }

    /// A CronJob's job template: its `spec`.
    #[derive(Default)]
    struct JobTemplate {
        spec: Option<JobSpec>,
    }

    impl<'de> Members<'de> for JobTemplate {
        fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
            match key {
                "spec" => self.spec = map.next_value::<Lenient<JobSpec>>()?.0,
                _ => skip(map)?,
            }
            Ok(())
        }
    }

    /// A job spec: its pod `template`.
    #[derive(Default)]
    struct JobSpec {
        template: Option<Template>,
    }

    impl<'de> Members<'de> for JobSpec {
        fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
            match key {
                "template" => self.template = map.next_value::<Lenient<Template>>()?.0,
                _ => skip(map)?,
            }
            Ok(())
        }
    }

    /// A container: its name and image.
    #[derive(Default)]
    struct Container {
        name: Option<String>,
        image: Option<String>,
    }

    impl<'de> Members<'de> for Container {
        fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
            match key {
                "name" => self.name = map.next_value::<Text>()?.0,
                "image" => self.image = map.next_value::<Text>()?.0,
                _ => skip(map)?,
            }
            Ok(())
        }
    }
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

    /// The line written from one pass over the request's objects is the line
    /// written from their trees, on every shape the pass reads differently from a
    /// tree walk: lists that are not lists, names that are not strings, repeated keys,
    /// each place a pod template lives, labels and specs changed or not.
    #[test]
    fn the_one_pass_summary_is_the_tree_summary() {
        use crate::change::Change;
        use crate::policy::Policy;
        let policy = Policy::embedded();
        let review = |op: &str, kind: &str, old: Option<&str>, new: Option<&str>| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"apps","version":"v1","kind":"{kind}"}},"resource":{{"group":"apps","version":"v1","resource":"x"}},"name":"n","namespace":"ns","operation":"{op}","userInfo":{{"username":"a"}},"object":{},"oldObject":{}}}}}"#,
                new.unwrap_or("null"),
                old.unwrap_or("null")
            )
        };
        let dep = |replicas: &str, containers: &str, labels: &str| {
            format!(
                r#"{{"metadata":{{"name":"n","labels":{labels}}},"spec":{{"replicas":{replicas},"template":{{"spec":{{"containers":{containers}}}}}}}}}"#
            )
        };
        let objects = [
            dep("3", r#"[{"name":"web","image":"a:1"}]"#, r#"{"app":"x"}"#),
            dep("40", r#"[{"name":"web","image":"a:2"},{"name":"side","image":"s:1"}]"#, r#"{"app":"x"}"#),
            dep("3", r#"[{"name":"web","image":"a:1"}]"#, r#"{"app":"y"}"#),
            dep("-1", r#"{"name":"web"}"#, "null"),
            dep("2.5", r#"[{"name":7,"image":null},"x",[],{"image":"i"}]"#, r#""s""#),
            dep("3", r#"[{"name":"web","image":"a:1","name":"other"}]"#, r#"{"app":"x"}"#),
            r#"{"spec":{"containers":[{"name":"p","image":"p:1"}],"initContainers":[{"name":"i","image":"i:1"}]},"metadata":{}}"#.to_string(),
            r#"{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"j","image":"j:1"}]}}}},"schedule":"* * * * *"}}"#.to_string(),
            r#"{"spec":{"replicas":3,"template":{"spec":{"containers":[{"name":"web","image":"a:1"}]}},"paused":true},"metadata":{"labels":{"app":"x"}}}"#.to_string(),
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"b"}]}},"template":5},"metadata":{"labels":{"k":"w"}}}"#.to_string(),
            r#"{"spec":[1,{"a":2}],"metadata":{"labels":[]}}"#.to_string(),
            r#"{"spec":{"replicas":3,"template":{"spec":{"containers":[{"name":"we\u0062","image":"a:\"1\""}]}}},"metadata":{"labels":{"app":"x"}}}"#.to_string(),
        ];
        let mut checked = 0;
        for (op, kind) in [
            ("UPDATE", "Deployment"),
            ("CREATE", "Deployment"),
            ("DELETE", "Deployment"),
            ("UPDATE", "CronJob"),
        ] {
            for old in &objects {
                for new in &objects {
                    let body = review(op, kind, Some(old), Some(new));
                    let view = crate::review::decode(body.as_bytes()).unwrap();
                    let change = Change::from_view(&view, &policy).unwrap();
                    for pods in [None, Some(1), Some(7)] {
                        let tree = |o: Option<&crate::review::KeptObject>| {
                            o.and_then(|o| serde_json::from_str::<Value>(o.text()).ok())
                        };
                        let (old_tree, new_tree) = (
                            tree(change.old_object.as_ref()),
                            tree(change.object.as_ref()),
                        );
                        let operation = if op == "DELETE" {
                            ApprovalOperation::Delete
                        } else {
                            ApprovalOperation::Apply
                        };
                        let expected = describe(&Facts {
                            operation,
                            old: old_tree.as_ref(),
                            new: if operation == ApprovalOperation::Apply {
                                new_tree.as_ref()
                            } else {
                                None
                            },
                            replicas: (change.old_replicas, change.new_replicas),
                            pods,
                            creating: op == "CREATE",
                        });
                        assert_eq!(of_change(&change, pods), expected, "{op} {old} -> {new}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
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
