//! What an object must be approved as, read through the webhook's own path: the
//! object becomes the AdmissionReview the API server would send (as `check` builds
//! it, crate::cli::check::synth), the engine's [`Change::from_view`] reads it, and
//! [`ApprovalSubject::of`] binds it, exactly as the webhook binds the request. No
//! second reading of targets, scopes or digests exists here to drift from the
//! webhook's.

use serde_json::Value;

use super::args::ChangeArgs;
use super::error::ApproveError;
use super::error::SubjectProblem;
use super::input::{from_server, object_annotations};
use crate::annotations::APPROVAL;
use crate::approval::{ApprovalOperation, ApprovalPayload, ApprovalSubject};
use crate::change::Change;
use crate::cli::check::input::Manifest;
use crate::cli::check::resources::Resources;
use crate::cli::check::synth::{Caller, Planner};
use crate::policy::Policy;

/// The subject of one object, and the change the webhook would see for it.
#[derive(Debug)]
pub struct Subject {
    /// What it must be approved as.
    pub subject: ApprovalSubject,
    /// The change, as the engine reads it.
    pub change: Change,
}

/// What `object` must be approved as for `operation`. `given_replicas` is the count a
/// given scale payload names.
pub fn of_object(
    object: &Value,
    operation: ApprovalOperation,
    args: &ChangeArgs,
    given_replicas: Option<u64>,
    policy: &Policy,
) -> Result<Subject, ApproveError> {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    let api_version = text("/apiVersion").unwrap_or_default();
    let kind = text("/kind").unwrap_or_default();
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    text("/metadata/name")
        .filter(|n| !n.is_empty())
        .ok_or(SubjectProblem::NoName)?;
    let mut resources = Resources::builtin();
    // A kind blastguard knows to be cluster-scoped (a Namespace, a ClusterRole) needs
    // no --cluster-scoped: its target has no namespace whatever the flags say.
    let known = resources.lookup(group, kind).map(|info| info.namespaced);
    let cluster_scoped = args.cluster_scoped || known == Some(false);
    let namespace = match (text("/metadata/namespace"), &args.namespace, cluster_scoped) {
        (Some(ns), Some(flag), _) if ns != flag => {
            return Err(SubjectProblem::NamespaceContradicts {
                flag: flag.clone(),
                namespace: ns.to_string(),
            }
            .into());
        }
        (Some(_), _, true) => return Err(SubjectProblem::ClusterScopedContradicts.into()),
        (Some(ns), _, _) => Some(ns.to_string()),
        (None, Some(flag), _) => Some(flag.clone()),
        (None, None, true) => None,
        (None, None, false) => return Err(SubjectProblem::NoNamespace.into()),
    };
    if known == Some(true) && namespace.is_none() {
        return Err(SubjectProblem::Namespaced(kind.to_string()).into());
    }
    if known.is_none() {
        // A kind the reader does not know (a custom resource): its scope is what
        // the manifest and flags say.
        resources.learn_kind(group, kind, None, namespace.is_some());
    }
    let replicas = match operation {
        ApprovalOperation::Scale => {
            let existing = object_annotations(object)
                .get(APPROVAL)
                .and_then(|p| ApprovalPayload::parse(p).ok())
                .and_then(|p| p.replicas);
            Some(
                args.replicas
                    .or(given_replicas)
                    .or(existing)
                    .ok_or(SubjectProblem::ReplicasRequired)?,
            )
        }
        ApprovalOperation::Apply | ApprovalOperation::Delete if args.replicas.is_some() => {
            return Err(SubjectProblem::ReplicasNotScale.into());
        }
        ApprovalOperation::Apply | ApprovalOperation::Delete => None,
    };
    let change = change_of(object, operation, namespace, resources, policy)?;
    let subject = match operation {
        // A scale binds the exact count, on the workload's target.
        ApprovalOperation::Scale => {
            ApprovalSubject::new(&change.target, ApprovalOperation::Scale, None, replicas)?
        }
        ApprovalOperation::Apply | ApprovalOperation::Delete => {
            ApprovalSubject::of_without(&change, &policy.approvals.unsigned_labels)?
        }
    };
    Ok(Subject { subject, change })
}

/// The engine's reading of the request that applies (or deletes) `object`. A
/// manifest is presented with the API server's defaults, an object read from a
/// server as it is (crate::cli::check::synth).
fn change_of(
    object: &Value,
    operation: ApprovalOperation,
    namespace: Option<String>,
    resources: Resources,
    policy: &Policy,
) -> Result<Change, ApproveError> {
    let mut object = object.clone();
    if let (Some(ns), Some(metadata)) = (
        &namespace,
        object.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        metadata.insert("namespace".into(), Value::String(ns.clone()));
    }
    let Value::Object(object) = object else {
        return Err(SubjectProblem::NotAMapping.into());
    };
    let planner = Planner {
        resources,
        namespace: namespace.unwrap_or_default(),
        caller: Caller {
            username: "blastguard-approve".into(),
            groups: Vec::new(),
            field_manager: None,
        },
    };
    let manifest = Manifest {
        object,
        origin: Default::default(),
    };
    let delete = operation == ApprovalOperation::Delete;
    let planned = planner
        .plan(vec![manifest], Vec::new(), delete)
        .map_err(SubjectProblem::from)?
        .pop()
        .expect("one manifest, one plan");
    let review = planned
        .review
        .expect("every kind was taught to the planner above");
    let body = serde_json::to_vec(&review).expect("a review serializes");
    let request = crate::review::decode(&body).map_err(|r| SubjectProblem::from(r.error))?;
    Ok(Change::from_view(&request, policy).map_err(SubjectProblem::from)?)
}

/// Whether a manifest will be digested by the cluster after defaults this tool
/// applied (not an object read from a server).
pub fn defaulted_here(object: &Value) -> bool {
    !from_server(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn args() -> ChangeArgs {
        ChangeArgs::for_file(Path::new("deploy.yaml"))
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "prod"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "api", "image": "nginx:1.27"}]}}}
        })
    }

    #[test]
    fn the_digest_is_the_one_the_engine_binds_for_the_served_object() {
        let object = deployment();
        let got = of_object(
            &object,
            ApprovalOperation::Apply,
            &args(),
            None,
            &Policy::embedded(),
        )
        .unwrap();
        // The webhook digests the object with the API server's defaults.
        let served = crate::defaults::defaulted(&object).0;
        assert_eq!(
            got.subject.digest.unwrap(),
            crate::approval::digest::object_digest(&served).unwrap()
        );
        assert_eq!(
            got.subject.target.to_string(),
            "Deployment prod/api (group apps)"
        );
    }

    #[test]
    fn delete_binds_the_object_and_scale_the_count() {
        let object = deployment();
        let policy = Policy::embedded();
        let deleted = of_object(&object, ApprovalOperation::Delete, &args(), None, &policy)
            .unwrap()
            .subject;
        assert_eq!(deleted.operation, ApprovalOperation::Delete);
        assert!(deleted.digest.is_some());
        let mut scale = args();
        scale.replicas = Some(40);
        let scaled = of_object(&object, ApprovalOperation::Scale, &scale, None, &policy)
            .unwrap()
            .subject;
        assert_eq!((scaled.digest, scaled.replicas), (None, Some(40)));
        // The count a given scale payload names needs no --replicas.
        let given = of_object(
            &object,
            ApprovalOperation::Scale,
            &args(),
            Some(45),
            &policy,
        )
        .unwrap()
        .subject;
        assert_eq!(given.replicas, Some(45));
        let missing = of_object(&object, ApprovalOperation::Scale, &args(), None, &policy);
        assert!(missing.unwrap_err().to_string().contains("--replicas N"));
    }

    #[test]
    fn scope_comes_from_the_kind_the_manifest_and_the_flags() {
        let policy = Policy::embedded();
        let namespace =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
        let got = of_object(&namespace, ApprovalOperation::Apply, &args(), None, &policy)
            .unwrap()
            .subject;
        assert_eq!(got.target.namespace, "");
        let mut no_ns = deployment();
        no_ns["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("namespace");
        let e = of_object(&no_ns, ApprovalOperation::Apply, &args(), None, &policy).unwrap_err();
        assert!(e.to_string().contains("pass --namespace"), "{e}");
        let mut cluster = args();
        cluster.cluster_scoped = true;
        let e = of_object(&no_ns, ApprovalOperation::Apply, &cluster, None, &policy).unwrap_err();
        assert!(e.to_string().contains("is namespaced"), "{e}");
        let mut flag = args();
        flag.namespace = Some("dev".into());
        let e = of_object(
            &deployment(),
            ApprovalOperation::Apply,
            &flag,
            None,
            &policy,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("contradicts metadata.namespace prod"),
            "{e}"
        );
        // A custom kind takes the manifest's scope.
        let custom = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "team"}, "spec": {"size": 1}});
        let got = of_object(&custom, ApprovalOperation::Apply, &args(), None, &policy)
            .unwrap()
            .subject;
        assert_eq!(got.target.to_string(), "Widget team/w (group example.com)");
    }
}
