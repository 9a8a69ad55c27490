//! Radius: how far a change reaches (docs/design.md#radius), and which limits it exceeds.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::change::{Autoscaler, Change, CronRuns, Operation};
use crate::kinds::Workload;
use crate::policy::LimitsSpec;

/// What the cluster says of the objects a change points at, looked up by the engine
/// before measuring (this module reads nothing itself), and the time the change is
/// judged at.
#[derive(Debug, Clone)]
pub struct Surroundings {
    /// The current replicas of an autoscaler's target; `Err` says why it is unknown.
    pub target_replicas: Option<Result<u64, String>>,
    /// A Service's current endpoints; `Err` says why they are unknown.
    pub endpoints: Option<Result<u64, String>>,
    /// When the change is judged: a CronJob's runs are counted from here.
    pub now: SystemTime,
    /// How far ahead a CronJob's runs count: the change-set window.
    pub window: Duration,
}

impl Surroundings {
    /// Nothing known of the cluster, judged at `now` over `window`.
    pub fn at(now: SystemTime, window: Duration) -> Self {
        Self {
            target_replicas: None,
            endpoints: None,
            now,
            window,
        }
    }
}

/// Most runs of a schedule counted in one window: a schedule that starts more is
/// already far over any limit, and the count stays cheap.
const MAX_RUNS: u64 = 10_000;

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
        /// Pods this change affects.
        measured: u64,
        /// The rule's value.
        limit: u64,
    },
    /// `maxPercentAffected`.
    PercentAffected {
        /// Measured percentage.
        measured: f64,
        /// The rule's value.
        limit: u64,
    },
    /// `maxReplicas`.
    Replicas {
        /// Replicas after the change.
        measured: u64,
        /// The rule's value.
        limit: u64,
    },
    /// `maxNamespacesPerChange`.
    Namespaces {
        /// Distinct namespaces in the change set.
        measured: u64,
        /// The rule's value.
        limit: u64,
    },
    /// `maxPodsPerChangeSet`.
    PodsPerChangeSet {
        /// Pods affected by the change set, this change included.
        measured: u64,
        /// The rule's value.
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
pub fn measure(change: &Change, around: &Surroundings) -> Radius {
    let old = change.old_replicas;
    let new = change.new_replicas;
    let motion = &change.motion;
    let mut unmeasurable: Vec<String> = change.unmeasurable.iter().cloned().collect();
    // A size the count depends on; unknown counts nothing and makes the change
    // unmeasurable (fail closed: no approval lifts that).
    let mut known = |value: &Option<Result<u64, String>>, what: &str| match value {
        Some(Ok(n)) => Some(*n),
        Some(Err(why)) => {
            unmeasurable.push(why.clone());
            None
        }
        None => {
            unmeasurable.push(format!("{what} is not known"));
            None
        }
    };
    let mut pods_affected = match (change.workload, change.operation) {
        (_, Operation::Connect) => 0,
        (Workload::DaemonSet | Workload::Cluster | Workload::Other, _) => 0,
        // Deleting an autoscaler leaves its target's replicas as they are.
        (Workload::Autoscaler, Operation::Delete) => 0,
        (Workload::Autoscaler, Operation::Create | Operation::Update) => {
            match &motion.autoscaler {
                Some(hpa) => known(&around.target_replicas, "the autoscaler's target's size")
                    .map_or(0, |current| autoscaled(hpa, current)),
                // Unreadable: already noted by the change.
                None => 0,
            }
        }
        (Workload::Service, _) if motion.service_rewired || motion.owners_changed => {
            known(&around.endpoints, "the Service's endpoints").unwrap_or(0)
        }
        (Workload::Service, _) => 0,
        (Workload::DisruptionBudget, _) => motion.budget_released.unwrap_or(0),
        (Workload::CronJob, Operation::Create | Operation::Update) => match &motion.cron {
            Some(cron) => match runs(cron, around) {
                Ok(runs) => new.unwrap_or(0).saturating_mul(runs.max(1)),
                Err(why) => {
                    unmeasurable.push(why);
                    0
                }
            },
            None => 0,
        },
        (_, Operation::Create) => new.unwrap_or(0),
        (_, Operation::Delete) => old.unwrap_or(0),
        // Job pods do not roll: an update that changes the spec affects one run.
        (Workload::Job, Operation::Update) => {
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
    // What controllers do after the change, on top of what it does itself.
    if motion.owners_changed {
        // The garbage collector may delete the object: as a delete of it.
        let as_delete = match change.workload {
            Workload::Pod => 1,
            Workload::Replicated | Workload::Job | Workload::CronJob => old.unwrap_or(0),
            _ => 0,
        };
        pods_affected = pods_affected.max(as_delete);
    }
    if motion.pod_relabeled {
        pods_affected = pods_affected.max(1);
    }
    if let Some(released) = motion.released_rollout {
        pods_affected = pods_affected.saturating_add(released);
    }
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
        unmeasurable: (!unmeasurable.is_empty()).then(|| unmeasurable.join("; ")),
    }
}

/// Pods the HPA controller adds or removes from a target of `current` replicas: the
/// distance to the range when it only bounds the target, the range's far end when the
/// controller may drive the target anywhere in it (new metrics, a new target).
fn autoscaled(hpa: &Autoscaler, current: u64) -> u64 {
    let (min, max) = (hpa.min, hpa.max.max(hpa.min));
    if hpa.drives {
        current.abs_diff(min).max(current.abs_diff(max))
    } else {
        current.abs_diff(current.clamp(min, max))
    }
}

/// How many runs a CronJob's schedule starts within the window from now (none while
/// it is suspended). The schedule is read as the CronJob controller reads it: five
/// fields, the `@hourly`-style descriptors, and `@every <duration>`.
pub fn runs(cron: &CronRuns, around: &Surroundings) -> Result<u64, String> {
    if cron.suspended {
        return Ok(0);
    }
    let schedule = cron.schedule.trim();
    let unreadable = |why: String| format!("the CronJob's schedule {schedule:?} cannot be read: {why}");
    let window = around.window.as_secs();
    if let Some(every) = schedule.strip_prefix("@every") {
        let every = humantime::parse_duration(every.trim())
            .map_err(|e| unreadable(e.to_string()))?
            .as_secs()
            .max(1);
        return Ok(window.checked_div(every).unwrap_or(0).min(MAX_RUNS));
    }
    let parsed = croner::Cron::from_str(schedule).map_err(|e| unreadable(e.to_string()))?;
    let start = chrono::DateTime::<chrono::Utc>::from(around.now);
    let end = around
        .now
        .checked_add(around.window)
        .map_or(chrono::DateTime::<chrono::Utc>::MAX_UTC, chrono::DateTime::from);
    let runs = parsed
        .iter_after(start)
        .take_while(|at| *at <= end)
        .take(MAX_RUNS as usize)
        .count();
    Ok(runs as u64)
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
