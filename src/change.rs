//! Change: the normalized view of one admission request (docs/design.md#request-path).
//!
//! Everything later stages need is read out of the request view here, once, so the
//! rules downstream are pure functions over plain data. Only AI-assisted changes get
//! this far: the objects are parsed here, not on the fast path (see `engine`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::annotations;
use crate::kinds::{self, Workload, classify};
use crate::policy::{Policy, WorkloadSpec};
use crate::change_sets::{Expect, Sighting};
use crate::review::{KeptObject, ObjectParts, RawMap, RequestView, ReviewError, differs};
use serde_json::value::RawValue;

mod motion;

pub use motion::{Autoscaler, CronRuns, Motion, ScaleRef};

/// The admission operation; the wire reader ([`crate::review`]) defines it.
pub use crate::review::Operation;

/// The object a change is aimed at: for a scale request, the parent workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// API group (`""` for the core group).
    pub group: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Object name (may be empty on CREATE with generateName).
    pub name: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Who sent the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    /// Username, e.g. `system:serviceaccount:ai-agents:claude`.
    pub username: String,
    /// Groups as the API server reports them, `system:authenticated` included.
    pub groups: Vec<String>,
}

/// The normalized view of one admission request.
#[derive(Debug, Clone)]
pub struct Change {
    /// The request uid, echoed in the response.
    pub uid: String,
    /// CREATE, UPDATE, DELETE or CONNECT; a scale is an UPDATE of the subresource.
    pub operation: Operation,
    /// The object the change is aimed at (the parent workload for `scale`). A
    /// Namespace's target has no namespace: the API server sends its own name as
    /// `request.namespace`, which is not where it lives.
    pub target: Target,
    /// The namespace the change reaches, whose rule judges it and which its change
    /// set counts: the target's, or a Namespace's own name.
    pub namespace: Option<String>,
    /// The subresource, e.g. `scale`, if any.
    pub subresource: Option<String>,
    /// Classification for radius purposes.
    pub workload: Workload,
    /// Desired pods before the change: replicas (Job: parallelism, Pod: 1).
    pub old_replicas: Option<u64>,
    /// Desired pods after the change.
    pub new_replicas: Option<u64>,
    /// Whether the update replaces every pod: the pod template changed, or any other
    /// field of the spec that is not known to leave running pods alone (docs/design.md#radius).
    pub replaces_pods: bool,
    /// Whether anything in the object's spec changed (for Jobs, whose pods do not roll).
    pub spec_changed: bool,
    /// A HorizontalPodAutoscaler's `maxReplicas` after the change: the replicas it can
    /// scale its target to.
    pub autoscaler_max: Option<u64>,
    /// What the cluster's controllers will do because of this change, read from the
    /// objects (docs/policy.md: a change is measured by what it sets in motion).
    pub motion: Motion,
    /// What could not be read of a field the pod count depends on; an AI-assisted
    /// change that cannot be measured is not admitted on a guess.
    pub unmeasurable: Option<String>,
    /// The requesting user.
    pub requester: Requester,
    /// `request.options.fieldManager`, if set.
    pub field_manager: Option<String>,
    /// Annotations of the new object (empty for DELETE and scale).
    pub new_annotations: BTreeMap<String, String>,
    /// Annotations of the old object (empty for CREATE and scale).
    pub old_annotations: BTreeMap<String, String>,
    /// Dry-run requests are evaluated but never recorded.
    pub dry_run: bool,
    /// The new object as a decision reads it (for the approval digest).
    pub object: Option<KeptObject>,
    /// The old object as a decision reads it (for a delete approval's digest).
    pub old_object: Option<KeptObject>,
    /// What the change leaves in the cluster once the API server makes it, which a
    /// replica looks for before the change spends its change set's budget for good.
    pub sighting: Sighting,
}

impl Change {
    /// Reads a Change out of a request view, parsing the parts of its objects the view
    /// kept. Fails only when an object is not JSON of an object's shape; unknown kinds
    /// are [`Workload::Other`], and a count that cannot be read is noted in
    /// [`Change::unmeasurable`].
    pub fn from_view(req: &RequestView<'_>, policy: &Policy) -> Result<Self, ReviewError> {
        let new = req.object.as_ref();
        let old = req.old_object.as_ref();
        let operation = req.operation;
        let subresource = req.subresource().map(str::to_string);
        let namespace = req.namespace().map(str::to_string);
        let sub = Subresource::of(subresource.as_deref(), &req.resource.resource);
        let name = if req.name.is_empty() {
            object_name(new.or(old))
        } else {
            req.name.to_string()
        };

        let (target, shape) = match sub {
            Subresource::Scale => {
                let parent = parent_of(&req.resource.group, &req.resource.resource, policy);
                let target = Target {
                    group: req.resource.group.to_string(),
                    kind: parent.unwrap_or_else(|| "Unknown".to_string()),
                    namespace: namespace.clone(),
                    name,
                };
                (target, Shape::scale())
            }
            Subresource::Eviction => {
                let target = Target {
                    group: String::new(),
                    kind: "Pod".to_string(),
                    namespace: namespace.clone(),
                    name,
                };
                (target, Shape::of(Workload::Pod))
            }
            Subresource::Foreign | Subresource::Own | Subresource::None => {
                let (group, kind) = (&req.kind.group, &req.kind.kind);
                let target = Target {
                    group: group.to_string(),
                    kind: kind.to_string(),
                    namespace: if is_namespace(group, kind) {
                        None
                    } else {
                        namespace.clone()
                    },
                    name,
                };
                let shape = match (sub, policy.custom_workload(group, kind)) {
                    (Subresource::Foreign, _) => Shape::of(Workload::Other),
                    (_, Some(custom)) => Shape::custom(custom),
                    (_, None) => Shape::of(classify(group, kind)),
                };
                (target, shape)
            }
        };
        // A Namespace reaches itself: its own rule judges it, its change set counts it.
        let namespace = namespace.or_else(|| {
            is_namespace(&target.group, &target.kind).then(|| target.name.clone())
        });
        let workload = shape.workload;

        let mut unreadable = Vec::new();
        let mut count = |o: Option<&ObjectParts<'_>>, which: &str| {
            let o = o?;
            if workload == Workload::Pod {
                return Some(1);
            }
            match shape.replicas.map(|r| r.read(o)) {
                Some(Ok(n)) => n,
                Some(Err(why)) => {
                    unreadable.push(format!("{which} {why}"));
                    None
                }
                None => None,
            }
        };
        let new_replicas = count(new, "the new object's");
        let old_replicas = count(old, "the old object's");
        if operation == Operation::Delete && old.is_none() && shape.replicas.is_some() {
            unreadable
                .push("the DELETE carries no oldObject, so its pods cannot be counted".into());
        }
        if sub == Subresource::Scale && operation != Operation::Delete && new.is_none() {
            unreadable.push("the scale request carries no Scale object".into());
        }
        let autoscaler_max = match (workload, new) {
            (Workload::Autoscaler, Some(n)) => match INT32_MAX_REPLICAS.read(n) {
                Ok(max) => max,
                Err(why) => {
                    unreadable.push(format!("the new object's {why}"));
                    None
                }
            },
            _ => None,
        };
        let whole_object = matches!(sub, Subresource::None | Subresource::Own);
        let (replaces_pods, spec_changed) = match (new, old) {
            (Some(n), Some(o)) if whole_object => (
                shape.replaces_pods(n, o),
                differs(n.field("spec"), o.field("spec")),
            ),
            _ => (false, false),
        };

        let motion = if whole_object {
            let counts = (old_replicas.unwrap_or(0), new_replicas.unwrap_or(0));
            Motion::read(workload, operation, (new, old), counts, &mut unreadable)
        } else {
            Motion::default()
        };
        // A foreign subresource's object (Scale, Eviction) carries no annotations of
        // the workload's: never read provenance or approvals from it.
        let annotations_of = |parts: Option<&ObjectParts<'_>>| match parts {
            Some(parts) if whole_object => kept_annotations(parts, policy),
            _ => BTreeMap::new(),
        };
        let new_annotations = annotations_of(new);
        let old_annotations = annotations_of(old);
        Ok(Self {
            uid: req.uid.to_string(),
            operation,
            target,
            namespace,
            subresource,
            workload,
            old_replicas,
            new_replicas,
            replaces_pods,
            spec_changed,
            autoscaler_max,
            motion,
            unmeasurable: (!unreadable.is_empty()).then(|| unreadable.join("; ")),
            requester: Requester {
                username: req
                    .user_info
                    .username
                    .as_deref()
                    .unwrap_or_default()
                    .to_string(),
                groups: req
                    .user_info
                    .groups
                    .iter()
                    .flatten()
                    .map(|g| g.to_string())
                    .collect(),
            },
            field_manager: req.field_manager().map(str::to_string),
            new_annotations,
            old_annotations,
            dry_run: req.dry_run.unwrap_or(false),
            object: new.map(KeptObject::new),
            old_object: old.map(KeptObject::new),
            sighting: sighting(req, sub, (new, old)),
        })
    }

    /// Whether this request is to a subresource that carries no annotations of the
    /// object's own (`scale`, `eviction`, ...): its provenance is the requester's alone.
    pub fn is_identity_only(&self) -> bool {
        self.subresource
            .as_deref()
            .is_some_and(crate::review::is_foreign_subresource)
    }

    /// The annotations an approval of this change is read from, when the request
    /// carries them: the new object's for apply, the deleted object's for delete. A
    /// scale's approval is on the parent workload, which the request does not carry
    /// (`None`).
    pub fn approval_annotations(&self) -> Option<&BTreeMap<String, String>> {
        if self.is_scale() {
            None
        } else if self.operation == Operation::Delete {
            Some(&self.old_annotations)
        } else {
            Some(&self.new_annotations)
        }
    }

    /// Whether this is a request to the `scale` subresource.
    pub fn is_scale(&self) -> bool {
        self.subresource.as_deref() == Some("scale")
    }

    /// Whether the object is cluster-scoped (no namespace), Namespaces included.
    pub fn is_cluster_scoped(&self) -> bool {
        self.target.namespace.is_none() || self.workload == Workload::Cluster
    }

    /// The change sets this change counts toward (docs/design.md#radius): its
    /// requester's always, and its `change-id`'s (new object, else old) when it has
    /// one. Counting both means a fresh change-id per object still meets the
    /// requester's count.
    pub fn change_set_keys(&self) -> Vec<String> {
        let mut keys = vec![format!("user:{}", self.requester.username)];
        if let Some(id) = self
            .new_annotations
            .get(annotations::CHANGE_ID)
            .or_else(|| self.old_annotations.get(annotations::CHANGE_ID))
            .filter(|id| !id.is_empty())
        {
            keys.push(format!("change-id:{id}"));
        }
        keys
    }
}

/// What a request leaves in the cluster once the API server makes it: the object at
/// `request.resource` and its name (the parent's for a subresource), expected as the
/// operation says.
fn sighting<'a>(
    req: &RequestView<'_>,
    sub: Subresource,
    (new, old): (Option<&ObjectParts<'a>>, Option<&ObjectParts<'a>>),
) -> Sighting {
    let uid = |o: Option<&ObjectParts<'_>>| {
        o.and_then(|o| o.identity.uid.as_deref())
            .unwrap_or_default()
            .to_string()
    };
    let name = if req.name.is_empty() {
        object_name(new.or(old))
    } else {
        req.name.to_string()
    };
    let expect = match (req.operation, sub) {
        (Operation::Create, Subresource::Eviction) => Expect::Deleted { uid: String::new() },
        (Operation::Create, Subresource::None) => Expect::Created { uid: uid(new) },
        (Operation::Update, Subresource::None | Subresource::Own | Subresource::Scale) => {
            Expect::Updated {
                uid: if old.is_some() { uid(old) } else { uid(new) },
                version: old
                    .and_then(|o| o.identity.resource_version.as_deref())
                    .unwrap_or_default()
                    .to_string(),
                subresource: req.subresource().map(str::to_string),
            }
        }
        (Operation::Delete, Subresource::None) => Expect::Deleted { uid: uid(old) },
        _ => Expect::Unchecked,
    };
    Sighting {
        group: req.resource.group.to_string(),
        version: req.resource.version.to_string(),
        resource: req.resource.resource.to_string(),
        // A Namespace arrives with its own name as `request.namespace`; it lives in none.
        namespace: req
            .namespace()
            .filter(|_| !(req.resource.group.is_empty() && req.resource.resource == "namespaces"))
            .map(str::to_string),
        name,
        expect,
    }
}

/// The kind of the workload whose `scale` subresource `resource` is: a built-in kind
/// with a scale subresource, or a custom workload.
pub fn parent_of(group: &str, resource: &str, policy: &Policy) -> Option<String> {
    if let Some(k) = kinds::by_resource(group, resource)
        && k.subresources.iter().any(|s| s == "scale")
    {
        return Some(k.kind.clone());
    }
    policy
        .document
        .spec
        .workloads
        .iter()
        .find(|w| w.group == group && w.resource_name() == resource)
        .map(|w| w.kind.clone())
}

/// Which subresource a request is to, as far as reach is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subresource {
    /// The object itself.
    None,
    /// `scale`: replicas of the parent workload.
    Scale,
    /// `pods/eviction`: one pod.
    Eviction,
    /// Another subresource whose object is of another kind (`binding`, `token`): no
    /// pods.
    Foreign,
    /// A subresource that carries the whole object (`status`, `resize`,
    /// `ephemeralcontainers`, ...): judged like the object, since the object changes
    /// through it.
    Own,
}

impl Subresource {
    fn of(subresource: Option<&str>, resource: &str) -> Self {
        match (subresource, resource) {
            (None, _) => Subresource::None,
            (Some("scale"), _) => Subresource::Scale,
            (Some("eviction"), "pods") => Subresource::Eviction,
            (Some(s), _) if crate::review::is_foreign_subresource(s) => Subresource::Foreign,
            (Some(_), _) => Subresource::Own,
        }
    }
}

/// Whether (group, kind) is a Namespace.
fn is_namespace(group: &str, kind: &str) -> bool {
    group.is_empty() && kind == "Namespace"
}

/// Where a count is read, and what stands when the field is absent.
#[derive(Debug, Clone, Copy)]
struct Count<'a> {
    pointer: &'a str,
    /// The API server's default when the field is absent. The API server always sends
    /// the defaulted value in a review; this default serves manifests (`check -f`)
    /// and kinds whose controllers apply the default themselves.
    absent: u64,
}

const INT32_MAX_REPLICAS: Count<'static> = Count {
    pointer: "/spec/maxReplicas",
    absent: 0,
};

impl Count<'_> {
    /// The count, or why it cannot be read: present but not an int32 (a float, a
    /// string, a negative number, or beyond 2^31-1) is unmeasurable, never a default.
    fn read(&self, object: &ObjectParts<'_>) -> Result<Option<u64>, String> {
        let value = object
            .raw_at(self.pointer)
            .map(|raw| serde_json::from_str::<Value>(raw.get()))
            .transpose()
            .map_err(|e| format!("{} is not JSON: {e}", self.pointer))?;
        match value {
            None | Some(Value::Null) => Ok(Some(self.absent)),
            Some(v) => match v.as_u64().filter(|n| *n <= i32::MAX as u64) {
                Some(n) => Ok(Some(n)),
                None => Err(format!(
                    "{} is {v}, not an int32 replica count",
                    self.pointer.trim_start_matches('/').replace('/', ".")
                )),
            },
        }
    }
}

/// How one kind's pods are counted and when its update replaces them.
#[derive(Debug, Clone, Copy)]
struct Shape<'a> {
    workload: Workload,
    replicas: Option<Count<'a>>,
    template: Option<&'a str>,
    /// A custom kind: only its template pointer says whether pods are replaced.
    custom: bool,
}

impl<'a> Shape<'a> {
    fn of(workload: Workload) -> Self {
        let (replicas, template) = match workload {
            Workload::Replicated => (Some(("/spec/replicas", 1)), Some("/spec/template")),
            Workload::DaemonSet => (None, Some("/spec/template")),
            Workload::Job => (Some(("/spec/parallelism", 1)), Some("/spec/template")),
            Workload::CronJob => (
                Some(("/spec/jobTemplate/spec/parallelism", 1)),
                Some("/spec/jobTemplate"),
            ),
            Workload::Autoscaler => (Some(("/spec/minReplicas", 1)), None),
            Workload::Pod => (None, Some("/spec")),
            Workload::Service
            | Workload::DisruptionBudget
            | Workload::Cluster
            | Workload::Other => (None, None),
        };
        Self {
            workload,
            replicas: replicas.map(|(pointer, absent)| Count { pointer, absent }),
            template,
            custom: false,
        }
    }

    fn scale() -> Self {
        Self {
            workload: Workload::Replicated,
            // A Scale's spec.replicas is omitted when 0 (omitempty in its Go type).
            replicas: Some(Count {
                pointer: "/spec/replicas",
                absent: 0,
            }),
            template: None,
            custom: false,
        }
    }

    fn custom(spec: &'a WorkloadSpec) -> Self {
        Self {
            workload: Workload::Replicated,
            replicas: Some(Count {
                pointer: &spec.replicas,
                absent: 1,
            }),
            template: Some(spec.template.as_str()),
            custom: true,
        }
    }

    /// Whether an update from `old` to `new` replaces every pod.
    fn replaces_pods(&self, new: &ObjectParts<'_>, old: &ObjectParts<'_>) -> bool {
        let Some(template) = self.template else {
            return false;
        };
        if differs(new.raw_at(template), old.raw_at(template)) {
            return true;
        }
        self.workload == Workload::Replicated && !self.custom && other_spec_changed(new, old)
    }
}

/// Spec fields known not to touch running pods (docs/design.md#radius): any other spec
/// change of a replicated workload (a StatefulSet's ordinals or volumeClaimTemplates,
/// a selector, ...) replaces every pod.
const NON_DISRUPTIVE: &[&str] = &[
    "replicas",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "minReadySeconds",
    "paused",
];

/// Rollout strategies, whose numbers (maxSurge, maxUnavailable, partition) pace a
/// rollout without starting one.
const STRATEGIES: &[&str] = &["strategy", "updateStrategy"];

fn other_spec_changed(new: &ObjectParts<'_>, old: &ObjectParts<'_>) -> bool {
    let empty = RawMap::default();
    let (new, old) = (new.spec().unwrap_or(&empty), old.spec().unwrap_or(&empty));
    let keys = new
        .0
        .iter()
        .chain(old.0.iter().filter(|(k, _)| new.get(k).is_none()))
        .map(|(k, _)| k.as_ref());
    for key in keys {
        if NON_DISRUPTIVE.contains(&key) || key == "template" {
            continue;
        }
        let (n, o) = (new.get(key), old.get(key));
        let changed = if STRATEGIES.contains(&key) {
            differs(n, o) && strategy_kind(n) != strategy_kind(o)
        } else {
            differs(n, o)
        };
        if changed {
            return true;
        }
    }
    false
}

/// A strategy without its numbers: what is left when `rollingUpdate` is set aside.
fn strategy_kind(raw: Option<&RawValue>) -> Option<Vec<(String, Value)>> {
    let map: serde_json::Map<String, Value> = serde_json::from_str(raw?.get()).ok()?;
    Some(
        map.into_iter()
            .filter(|(k, _)| k.as_str() != "rollingUpdate")
            .collect(),
    )
}

/// The annotations a decision can look up, decoded.
fn kept_annotations(parts: &ObjectParts<'_>, policy: &Policy) -> BTreeMap<String, String> {
    parts
        .annotations
        .iter()
        .filter(|(k, _)| keeps_annotation(k, policy))
        .filter_map(|(k, raw)| {
            serde_json::from_str::<String>(raw.get())
                .ok()
                .map(|v| (k.to_string(), v))
        })
        .collect()
}

/// Annotations a decision reads: blastguard's own (change-id, approval) and the
/// policy's provenance markers.
fn keeps_annotation(key: &str, policy: &Policy) -> bool {
    key.starts_with("blastguard.io/") || policy.provenance.annotations.iter().any(|k| k == key)
}

/// The name of an object without one in the request (CREATE with generateName).
fn object_name(o: Option<&ObjectParts<'_>>) -> String {
    let non_empty = |s: &Option<std::borrow::Cow<'_, str>>| {
        s.as_deref().filter(|s| !s.is_empty()).map(str::to_string)
    };
    o.and_then(|o| non_empty(&o.name).or_else(|| non_empty(&o.generate_name)))
        .unwrap_or_default()
}
