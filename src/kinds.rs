//! The kinds blastguard judges, and how the reach of each is measured
//! (docs/design.md#radius).
//!
//! The list is `charts/blastguard/files/kinds.yaml`, compiled in: the chart renders the
//! webhook's rules from the same file, so the kinds the API server sends and the kinds
//! the engine measures cannot drift apart (tests/chart_webhook.rs holds them to each other).

use std::sync::LazyLock;

use serde::Deserialize;

/// The list as the chart ships it.
const KINDS_YAML: &str = include_str!("../charts/blastguard/files/kinds.yaml");

/// How a kind's reach is measured (the `reach` column of the list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reach {
    /// `spec.replicas` pods, replaced when the template (or any pod-replacing field)
    /// changes: Deployment, StatefulSet, ReplicaSet, ReplicationController.
    Replicas,
    /// Every node: DaemonSet.
    Nodes,
    /// `spec.parallelism` pods per run: Job.
    Job,
    /// `spec.jobTemplate.spec.parallelism` pods per run: CronJob.
    Cronjob,
    /// A HorizontalPodAutoscaler: the rise of `minReplicas`; `maxReplicas` results.
    Autoscaler,
    /// One pod: a bare Pod, an eviction.
    Pod,
    /// A Service: its endpoints, when its selector or ports change.
    Service,
    /// A PodDisruptionBudget: the pods it protects, when it is deleted or changed.
    Budget,
    /// Cluster-scoped: the whole cluster.
    Cluster,
}

/// What kind of object the change is to, as far as its reach is concerned
/// ([`Reach`], plus the policy's custom workloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Deployment, StatefulSet, ReplicaSet, ReplicationController, or a custom kind of
    /// `spec.workloads`: replicas pods.
    Replicated,
    /// A DaemonSet: one pod per node.
    DaemonSet,
    /// A Job: `spec.parallelism` pods.
    Job,
    /// A CronJob: `spec.jobTemplate.spec.parallelism` pods per run.
    CronJob,
    /// A HorizontalPodAutoscaler: its `minReplicas` is a floor the HPA controller
    /// scales its target to under its own identity.
    Autoscaler,
    /// A bare Pod, or an eviction of one.
    Pod,
    /// A Service: a change of its selector or ports cuts its endpoints off.
    Service,
    /// A PodDisruptionBudget: deleting or loosening it exposes the pods it protects.
    DisruptionBudget,
    /// A Namespace or another cluster-scoped kind: cluster reach.
    Cluster,
    /// Anything else (ConfigMap, Service, ...): no pods.
    Other,
}

/// One kind blastguard judges.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kind {
    /// API group (`""` for core).
    pub group: String,
    /// The version the webhook's rules name (matchPolicy Equivalent converts others).
    pub version: String,
    /// The plural resource name.
    pub resource: String,
    /// The kind, e.g. `Deployment`.
    pub kind: String,
    /// How its reach is measured.
    pub reach: Reach,
    /// Subresources sent to the webhook too (`scale`, `eviction`).
    #[serde(default)]
    pub subresources: Vec<String>,
    /// Whether the kind is cluster-scoped.
    #[serde(default)]
    pub cluster_scoped: bool,
}

// The file is compiled in and parsed by a test: a failure here is a build defect, found
// before anything ships, not an input error.
#[allow(clippy::expect_used)]
static BUILT_IN: LazyLock<Vec<Kind>> = LazyLock::new(|| {
    // The file is part of the source tree and tested below: a parse failure is a
    // build defect, not an input error.
    serde_saphyr::from_str_with_options(KINDS_YAML, crate::yaml::options())
        .expect("charts/blastguard/files/kinds.yaml is valid")
});

/// Every built-in kind blastguard judges, in the list's order.
pub fn built_in() -> &'static [Kind] {
    &BUILT_IN
}

/// The built-in kind with this group and kind name.
pub fn find(group: &str, kind: &str) -> Option<&'static Kind> {
    built_in()
        .iter()
        .find(|k| k.group == group && k.kind == kind)
}

/// The Workload class of a built-in (group, kind).
pub fn classify(group: &str, kind: &str) -> Workload {
    match find(group, kind).map(|k| k.reach) {
        Some(Reach::Replicas) => Workload::Replicated,
        Some(Reach::Nodes) => Workload::DaemonSet,
        Some(Reach::Job) => Workload::Job,
        Some(Reach::Cronjob) => Workload::CronJob,
        Some(Reach::Autoscaler) => Workload::Autoscaler,
        Some(Reach::Pod) => Workload::Pod,
        Some(Reach::Service) => Workload::Service,
        Some(Reach::Budget) => Workload::DisruptionBudget,
        Some(Reach::Cluster) => Workload::Cluster,
        None => Workload::Other,
    }
}

/// The built-in kind with this group and resource name (for subresource requests,
/// whose `kind` is the subresource's, e.g. `Scale`).
pub fn by_resource(group: &str, resource: &str) -> Option<&'static Kind> {
    built_in()
        .iter()
        .find(|k| k.group == group && k.resource == resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_parses_and_names_each_kind_once() {
        let kinds = built_in();
        assert!(kinds.len() >= 10);
        for (i, k) in kinds.iter().enumerate() {
            assert!(
                kinds[..i]
                    .iter()
                    .all(|o| (o.group.as_str(), o.kind.as_str()) != (&k.group, &k.kind)),
                "{}/{} listed twice",
                k.group,
                k.kind
            );
            assert_eq!(
                k.cluster_scoped,
                k.reach == Reach::Cluster,
                "{}: cluster-scoped kinds and cluster reach go together",
                k.kind
            );
        }
    }

    #[test]
    fn lookups_by_kind_and_by_resource_agree() {
        let cases = [
            ("apps", "Deployment", "deployments", Reach::Replicas),
            ("apps", "DaemonSet", "daemonsets", Reach::Nodes),
            (
                "",
                "ReplicationController",
                "replicationcontrollers",
                Reach::Replicas,
            ),
            ("batch", "CronJob", "cronjobs", Reach::Cronjob),
            (
                "autoscaling",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                Reach::Autoscaler,
            ),
            ("", "Pod", "pods", Reach::Pod),
            ("", "Node", "nodes", Reach::Cluster),
        ];
        for (group, kind, resource, reach) in cases {
            let k = find(group, kind).unwrap_or_else(|| panic!("{kind} missing"));
            assert_eq!(k.reach, reach, "{kind}");
            assert_eq!(by_resource(group, resource), Some(k), "{resource}");
        }
        assert!(find("", "ConfigMap").is_none());
        assert!(
            find("apps", "Pod").is_none(),
            "the group is part of the key"
        );
    }
}
