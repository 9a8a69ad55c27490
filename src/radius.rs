//! Radius: how far a change reaches (DESIGN.md section 5), and which limits it exceeds.

use std::fmt;

use crate::change::{Change, Operation, Workload};
use crate::policy::LimitsSpec;

/// How far one change reaches.
#[derive(Debug, Clone, PartialEq)]
pub struct Radius {
    /// Pods created, replaced or removed.
    pub pods_affected: u64,
    /// Pods affected as a percentage of the old replica count; `None` on CREATE and
    /// for objects without replicas.
    pub percent_affected: Option<f64>,
    /// Replica count after the change, for replicated workloads.
    pub resulting_replicas: Option<u64>,
    /// Whether the object is cluster-scoped (or a Namespace).
    pub cluster_scoped: bool,
    /// Whether the change reaches every node (DaemonSet).
    pub node_wide: bool,
    /// Distinct namespaces touched by the change set, this request included.
    pub namespaces_in_change_set: Option<u64>,
    /// Pods affected by the change set's admitted changes within the window, this
    /// request included.
    pub pods_in_change_set: Option<u64>,
    /// What could not be read of a field the count depends on.
    pub unmeasurable: Option<String>,
}

/// One limit a change exceeds: measured value against the limit.
#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    /// `maxPodsAffected`.
    PodsAffected {
        /// Measured.
        measured: u64,
        /// Limit.
        limit: u64,
    },
    /// `maxPercentAffected`.
    PercentAffected {
        /// Measured percentage.
        measured: f64,
        /// Limit.
        limit: u64,
    },
    /// `maxReplicas`.
    Replicas {
        /// Replicas after the change.
        measured: u64,
        /// Limit.
        limit: u64,
    },
    /// `maxNamespacesPerChange`.
    Namespaces {
        /// Distinct namespaces in the change set.
        measured: u64,
        /// Limit.
        limit: u64,
    },
    /// `maxPodsPerChangeSet`.
    PodsPerChangeSet {
        /// Pods affected by the change set, this change included.
        measured: u64,
        /// Limit.
        limit: u64,
    },
    /// A field the count depends on could not be read: no limit can be shown to hold.
    Unmeasurable(String),
    /// The update removes (or sets to `false`) the AI marker of an object that had
    /// it: handing an object back to people is itself a change that takes approval.
    MarkerRemoved {
        /// The marker annotation.
        key: String,
    },
    /// `allowClusterScoped: false`.
    ClusterScoped,
    /// `allowNodeWide: false`.
    NodeWide,
}

impl Violation {
    /// The policy field this violation is about.
    pub fn limit_name(&self) -> &'static str {
        match self {
            Violation::PodsAffected { .. } => "maxPodsAffected",
            Violation::PercentAffected { .. } => "maxPercentAffected",
            Violation::Replicas { .. } => "maxReplicas",
            Violation::Namespaces { .. } => "maxNamespacesPerChange",
            Violation::PodsPerChangeSet { .. } => "maxPodsPerChangeSet",
            Violation::Unmeasurable(_) => "unmeasurable",
            Violation::MarkerRemoved { .. } => "stickyProvenance",
            Violation::ClusterScoped => "allowClusterScoped",
            Violation::NodeWide => "allowNodeWide",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::PodsAffected { measured, limit } => {
                write!(f, "pods affected {measured} > {limit} (maxPodsAffected)")
            }
            Violation::PercentAffected { measured, limit } => write!(
                f,
                "{measured:.0}% of current pods affected > {limit}% (maxPercentAffected)"
            ),
            Violation::Replicas { measured, limit } => {
                write!(
                    f,
                    "replicas after change {measured} > {limit} (maxReplicas)"
                )
            }
            Violation::Namespaces { measured, limit } => write!(
                f,
                "namespaces in this change set {measured} > {limit} (maxNamespacesPerChange)"
            ),
            Violation::PodsPerChangeSet { measured, limit } => write!(
                f,
                "pods affected by this change set {measured} > {limit} (maxPodsPerChangeSet)"
            ),
            Violation::Unmeasurable(what) => {
                write!(f, "the change cannot be measured: {what}")
            }
            Violation::MarkerRemoved { key } => write!(
                f,
                "removes the AI marker {key}: handing an object back to people takes an approval (sticky provenance)"
            ),
            Violation::ClusterScoped => {
                write!(
                    f,
                    "cluster-scoped object: reaches the whole cluster (allowClusterScoped: false)"
                )
            }
            Violation::NodeWide => {
                write!(f, "DaemonSet: reaches every node (allowNodeWide: false)")
            }
        }
    }
}

/// Measures a change on its own; the engine adds the change-set counts.
pub fn measure(change: &Change) -> Radius {
    let old = change.old_replicas;
    let new = change.new_replicas;
    let pods_affected = match (change.workload, change.operation) {
        (_, Operation::Connect) => 0,
        (Workload::DaemonSet | Workload::Cluster | Workload::Other, _) => 0,
        // Deleting an autoscaler leaves its target's replicas as they are.
        (Workload::Autoscaler, Operation::Delete) => 0,
        // The floor it raises is what the HPA controller will scale to.
        (Workload::Autoscaler, Operation::Update) => {
            new.unwrap_or(0).saturating_sub(old.unwrap_or(0))
        }
        (_, Operation::Create) => new.unwrap_or(0),
        (_, Operation::Delete) => old.unwrap_or(0),
        // Job pods do not roll: an update that changes the spec affects one run.
        (Workload::Job | Workload::CronJob, Operation::Update) => {
            if change.spec_changed {
                new.unwrap_or(0)
            } else {
                0
            }
        }
        (_, Operation::Update) => {
            let (o, n) = (old.unwrap_or(0), new.unwrap_or(0));
            if change.replaces_pods {
                o.max(n)
            } else {
                o.abs_diff(n)
            }
        }
    };
    let percent_affected = match (change.workload, change.operation) {
        (Workload::Autoscaler, _) => None,
        (_, Operation::Update | Operation::Delete) => old.map(|o| percent(pods_affected, o)),
        (_, Operation::Create | Operation::Connect) => None,
    };
    let resulting_replicas = match (change.workload, change.operation) {
        (Workload::Replicated, Operation::Delete) => Some(0),
        (Workload::Replicated, _) => new,
        (Workload::Autoscaler, Operation::Create | Operation::Update) => change.autoscaler_max,
        _ => None,
    };
    Radius {
        pods_affected,
        percent_affected,
        resulting_replicas,
        cluster_scoped: change.is_cluster_scoped(),
        node_wide: change.workload == Workload::DaemonSet,
        namespaces_in_change_set: None,
        pods_in_change_set: None,
        unmeasurable: change.unmeasurable.clone(),
    }
}

/// `affected` as a percentage of `old`; growing from zero pods counts as 100%.
fn percent(affected: u64, old: u64) -> f64 {
    match (affected, old) {
        (0, _) => 0.0,
        (_, 0) => 100.0,
        (a, o) => a as f64 * 100.0 / o as f64,
    }
}

/// Every limit the radius exceeds, in the order the policy lists them.
pub fn violations(radius: &Radius, limits: &LimitsSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Some(what) = &radius.unmeasurable {
        out.push(Violation::Unmeasurable(what.clone()));
    }
    if let Some(limit) = limits.max_pods_affected
        && radius.pods_affected > limit
    {
        out.push(Violation::PodsAffected {
            measured: radius.pods_affected,
            limit,
        });
    }
    if let (Some(limit), Some(measured)) = (limits.max_percent_affected, radius.percent_affected)
        && measured > limit as f64
    {
        out.push(Violation::PercentAffected { measured, limit });
    }
    if let (Some(limit), Some(measured)) = (limits.max_replicas, radius.resulting_replicas)
        && measured > limit
    {
        out.push(Violation::Replicas { measured, limit });
    }
    if let (Some(limit), Some(measured)) = (
        limits.max_namespaces_per_change,
        radius.namespaces_in_change_set,
    ) && measured > limit
    {
        out.push(Violation::Namespaces { measured, limit });
    }
    if let (Some(limit), Some(measured)) =
        (limits.max_pods_per_change_set, radius.pods_in_change_set)
        && measured > limit
    {
        out.push(Violation::PodsPerChangeSet { measured, limit });
    }
    if radius.cluster_scoped && !limits.allow_cluster_scoped {
        out.push(Violation::ClusterScoped);
    }
    if radius.node_wide && !limits.allow_node_wide {
        out.push(Violation::NodeWide);
    }
    out
}
