//! Change: the normalized view of one admission request (DESIGN.md section 1).
//!
//! Everything later stages need is read out of the AdmissionRequest here, once, so the
//! rules downstream are pure functions over plain data.

use std::collections::BTreeMap;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation as KubeOperation};
use serde_json::Value;

use crate::annotations;

/// The admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// CREATE
    Create,
    /// UPDATE
    Update,
    /// DELETE
    Delete,
    /// CONNECT (never a workload change; always allowed)
    Connect,
}

impl Operation {
    /// The API server's spelling, used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

impl From<&KubeOperation> for Operation {
    fn from(op: &KubeOperation) -> Self {
        match op {
            KubeOperation::Create => Operation::Create,
            KubeOperation::Update => Operation::Update,
            KubeOperation::Delete => Operation::Delete,
            KubeOperation::Connect => Operation::Connect,
        }
    }
}

/// What kind of object the change is to, as far as its reach is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Deployment, StatefulSet, ReplicaSet or ReplicationController: `spec.replicas` pods.
    Replicated,
    /// A DaemonSet: one pod per node.
    DaemonSet,
    /// A Job: `spec.parallelism` pods.
    Job,
    /// A CronJob: `spec.jobTemplate.spec.parallelism` pods per run.
    CronJob,
    /// A bare Pod.
    Pod,
    /// A Namespace: cluster reach.
    Namespace,
    /// Anything else (ConfigMap, Service, RBAC, CRDs...): no pods.
    Other,
}

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
    /// Groups.
    pub groups: Vec<String>,
}

/// The normalized view of one admission request.
#[derive(Debug, Clone)]
pub struct Change {
    /// The request uid, echoed in the response.
    pub uid: String,
    /// The operation.
    pub operation: Operation,
    /// The object the change is aimed at (the parent workload for `scale`).
    pub target: Target,
    /// The subresource, e.g. `scale`, if any.
    pub subresource: Option<String>,
    /// Classification for radius purposes.
    pub workload: Workload,
    /// Desired pods before the change: replicas (Job: parallelism, Pod: 1).
    pub old_replicas: Option<u64>,
    /// Desired pods after the change.
    pub new_replicas: Option<u64>,
    /// Whether the pod template (Job template for CronJob) changed semantically.
    pub template_changed: bool,
    /// Whether anything in the object's spec changed (for Jobs, whose pods do not roll).
    pub spec_changed: bool,
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
    /// The new object as presented (for the approval digest).
    pub object: Option<DynamicObject>,
    /// The old object as presented (for a delete approval's digest).
    pub old_object: Option<DynamicObject>,
}

impl Change {
    /// Reads a Change out of an admission request, taking its objects (they can be
    /// megabytes: no copy). Never fails: unknown kinds are [`Workload::Other`] and
    /// missing fields are simply absent.
    pub fn from_request(mut req: AdmissionRequest<DynamicObject>) -> Self {
        let operation = Operation::from(&req.operation);
        let subresource = req.sub_resource.clone().filter(|s| !s.is_empty());
        let is_scale = subresource.as_deref() == Some("scale");
        let namespace = req.namespace.clone().filter(|n| !n.is_empty());

        let (target, workload) = if is_scale {
            let kind = scale_parent_kind(&req.resource.resource).unwrap_or("Unknown");
            let target = Target {
                group: req.resource.group.clone(),
                kind: kind.to_string(),
                namespace: namespace.clone(),
                name: req.name.clone(),
            };
            (target, Workload::Replicated)
        } else {
            let target = Target {
                group: req.kind.group.clone(),
                kind: req.kind.kind.clone(),
                namespace: namespace.clone(),
                name: object_name(&req),
            };
            let workload = classify(&req.kind.group, &req.kind.kind);
            (target, workload)
        };

        let new = req.object.as_ref();
        let old = req.old_object.as_ref();
        let (new_replicas, old_replicas) = if is_scale {
            (new.and_then(scale_replicas), old.and_then(scale_replicas))
        } else {
            (
                new.and_then(|o| desired_pods(workload, o)),
                old.and_then(|o| desired_pods(workload, o)),
            )
        };
        let template_changed = !is_scale
            && match (new, old) {
                (Some(n), Some(o)) => template(workload, n) != template(workload, o),
                _ => false,
            };
        let spec_changed = match (new, old) {
            (Some(n), Some(o)) => n.data.get("spec") != o.data.get("spec"),
            _ => false,
        };

        // A scale object's annotations are not the workload's: never read provenance
        // or approvals from them.
        let annotations_of = |o: Option<&DynamicObject>| {
            o.filter(|_| !is_scale)
                .and_then(|o| o.metadata.annotations.clone())
                .unwrap_or_default()
        };

        let new_annotations = annotations_of(new);
        let old_annotations = annotations_of(old);
        Self {
            uid: req.uid.clone(),
            operation,
            target,
            subresource,
            workload,
            old_replicas,
            new_replicas,
            template_changed,
            spec_changed,
            requester: Requester {
                username: req.user_info.username.clone().unwrap_or_default(),
                groups: req.user_info.groups.clone().unwrap_or_default(),
            },
            field_manager: req
                .options
                .as_ref()
                .and_then(|o| o.0.get("fieldManager"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            new_annotations,
            old_annotations,
            dry_run: req.dry_run,
            object: req.object.take(),
            old_object: req.old_object.take(),
        }
    }

    /// Whether this is a request to the `scale` subresource.
    pub fn is_scale(&self) -> bool {
        self.subresource.as_deref() == Some("scale")
    }

    /// Whether the object is cluster-scoped (no namespace), Namespaces included.
    pub fn is_cluster_scoped(&self) -> bool {
        self.target.namespace.is_none() || self.workload == Workload::Namespace
    }

    /// The change-set key for namespace reach: the `change-id` annotation of the new
    /// (else old) object, else the requester.
    pub fn change_set_key(&self) -> String {
        self.new_annotations
            .get(annotations::CHANGE_ID)
            .or_else(|| self.old_annotations.get(annotations::CHANGE_ID))
            .filter(|id| !id.is_empty())
            .map(|id| format!("change-id:{id}"))
            .unwrap_or_else(|| format!("user:{}", self.requester.username))
    }
}

/// The Workload class of a (group, kind).
pub fn classify(group: &str, kind: &str) -> Workload {
    match (group, kind) {
        ("apps" | "extensions", "Deployment" | "ReplicaSet") => Workload::Replicated,
        ("apps", "StatefulSet") | ("", "ReplicationController") => Workload::Replicated,
        ("apps" | "extensions", "DaemonSet") => Workload::DaemonSet,
        ("batch", "Job") => Workload::Job,
        ("batch", "CronJob") => Workload::CronJob,
        ("", "Pod") => Workload::Pod,
        ("", "Namespace") => Workload::Namespace,
        _ => Workload::Other,
    }
}

/// The kind whose `scale` subresource a resource name is.
pub fn scale_parent_kind(resource: &str) -> Option<&'static str> {
    match resource {
        "deployments" => Some("Deployment"),
        "statefulsets" => Some("StatefulSet"),
        "replicasets" => Some("ReplicaSet"),
        "replicationcontrollers" => Some("ReplicationController"),
        _ => None,
    }
}

fn object_name(req: &AdmissionRequest<DynamicObject>) -> String {
    if !req.name.is_empty() {
        return req.name.clone();
    }
    req.object
        .as_ref()
        .or(req.old_object.as_ref())
        .and_then(|o| o.metadata.name.clone().or(o.metadata.generate_name.clone()))
        .unwrap_or_default()
}

fn pointer_u64(o: &DynamicObject, pointer: &str) -> Option<u64> {
    o.data.pointer(pointer).and_then(Value::as_u64)
}

/// Desired pods of a workload object, with the API server's defaults when unset.
fn desired_pods(workload: Workload, o: &DynamicObject) -> Option<u64> {
    match workload {
        Workload::Replicated => Some(pointer_u64(o, "/spec/replicas").unwrap_or(1)),
        Workload::Job => Some(pointer_u64(o, "/spec/parallelism").unwrap_or(1)),
        Workload::CronJob => {
            Some(pointer_u64(o, "/spec/jobTemplate/spec/parallelism").unwrap_or(1))
        }
        Workload::Pod => Some(1),
        Workload::DaemonSet | Workload::Namespace | Workload::Other => None,
    }
}

fn scale_replicas(o: &DynamicObject) -> Option<u64> {
    Some(pointer_u64(o, "/spec/replicas").unwrap_or(0))
}

/// The part of the spec whose change replaces pods.
fn template(workload: Workload, o: &DynamicObject) -> Option<&Value> {
    match workload {
        Workload::Replicated | Workload::DaemonSet | Workload::Job => {
            o.data.pointer("/spec/template")
        }
        Workload::CronJob => o.data.pointer("/spec/jobTemplate"),
        Workload::Pod => o.data.get("spec"),
        Workload::Namespace | Workload::Other => None,
    }
}
