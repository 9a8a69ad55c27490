//! What the cluster's controllers set in motion after a change is admitted, read from
//! the request's objects (docs/policy.md, "What a change sets in motion").
//!
//! Measured in `radius`, with the cluster's current sizes looked up by the engine
//! where the objects do not tell.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::kinds::Workload;
use crate::review::{ObjectParts, Operation, RawMap, differs};

/// What controllers will do because of one change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Motion {
    /// `metadata.ownerReferences` changed: the garbage collector may delete the
    /// object (and its pods) when its new owners do not exist; counted as a delete.
    pub owners_changed: bool,
    /// A Pod's labels changed: it may leave its controller's selector, which then
    /// makes a replacement, and every Service that selected it.
    pub pod_relabeled: bool,
    /// Pods a rollout that was waiting replaces now: `paused` set to false, or a
    /// StatefulSet's partition lowered, while a template change is pending.
    pub released_rollout: Option<u64>,
    /// A HorizontalPodAutoscaler's range and targets.
    pub autoscaler: Option<Autoscaler>,
    /// A CronJob whose change starts runs (its creation, or a change of its schedule,
    /// suspension, parallelism or job template), with its schedule.
    pub cron: Option<CronRuns>,
    /// A Service's selector or ports changed, or the Service goes: its endpoints are
    /// cut off from it.
    pub service_rewired: bool,
    /// A PodDisruptionBudget deleted or changed: the pods it protected (its old
    /// status's `expectedPods`), which evictions and drains may then take at once.
    pub budget_released: Option<u64>,
}

/// A HorizontalPodAutoscaler after the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autoscaler {
    /// `spec.minReplicas` (default 1).
    pub min: u64,
    /// `spec.maxReplicas`.
    pub max: u64,
    /// The workload it scales.
    pub target: ScaleRef,
    /// Whether the HPA controller may now drive the target anywhere in its range:
    /// a new autoscaler, a new target, or changed `metrics` or `behavior`.
    pub drives: bool,
}

/// A `scaleTargetRef`: the workload an autoscaler scales, in the autoscaler's own
/// namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleRef {
    /// API group, from `apiVersion` (`""` for the core group).
    pub group: String,
    /// Kind, from `kind`.
    pub kind: String,
    /// Name, from `name`; the namespace is the autoscaler's own.
    pub name: String,
}

/// A CronJob whose change starts runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronRuns {
    /// `spec.schedule`.
    pub schedule: String,
    /// `spec.suspend` after the change.
    pub suspended: bool,
}

impl Motion {
    /// Reads what `new` (after) and `old` (before) set in motion. What cannot be read
    /// where the count depends on it is added to `unreadable`.
    /// `replicas` are the change's counts (old, new) as `Change` read them.
    pub(super) fn read(
        workload: Workload,
        operation: Operation,
        (new, old): (Option<&ObjectParts<'_>>, Option<&ObjectParts<'_>>),
        replicas: (u64, u64),
        unreadable: &mut Vec<String>,
    ) -> Self {
        let update = match (operation, new, old) {
            (Operation::Update, Some(n), Some(o)) => Some((n, o)),
            _ => None,
        };
        let mut motion = Motion::default();
        if let Some((n, o)) = update {
            motion.owners_changed = differs(n.owner_references, o.owner_references);
            motion.pod_relabeled = workload == Workload::Pod && differs(n.labels, o.labels);
            if workload == Workload::Replicated {
                motion.released_rollout = released_rollout(n, o, replicas);
            }
        }
        match workload {
            Workload::Autoscaler => {
                if let Some(n) = new.filter(|_| operation != Operation::Delete) {
                    motion.autoscaler = autoscaler(n, update.map(|(_, o)| o), unreadable);
                }
            }
            Workload::CronJob => {
                motion.cron = cron(operation, new, old, unreadable);
            }
            Workload::Service => {
                motion.service_rewired = operation == Operation::Delete
                    || update.is_some_and(|(n, o)| {
                        differs(n.raw_at("/spec/selector"), o.raw_at("/spec/selector"))
                            || differs(n.raw_at("/spec/ports"), o.raw_at("/spec/ports"))
                    });
            }
            Workload::DisruptionBudget => {
                let released = operation == Operation::Delete
                    || update.is_some_and(|(n, o)| differs(n.field("spec"), o.field("spec")));
                if released && let Some(o) = old {
                    match status::<BudgetStatus>(o).and_then(|s| s.expected_pods) {
                        Some(pods) => motion.budget_released = Some(pods),
                        None => unreadable.push(
                            "the old PodDisruptionBudget's status.expectedPods (the pods it protects) cannot be read".into(),
                        ),
                    }
                }
            }
            _ => {}
        }
        motion
    }
}

/// A field at `pointer`, read as `T`; `None` when absent or of another shape.
fn read<T: DeserializeOwned>(object: &ObjectParts<'_>, pointer: &str) -> Option<T> {
    object
        .raw_at(pointer)
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
}

/// The object's status, read as `T`.
fn status<T: DeserializeOwned>(object: &ObjectParts<'_>) -> Option<T> {
    object
        .status
        .and_then(|raw: &RawValue| serde_json::from_str(raw.get()).ok())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RolloutStatus {
    #[serde(default)]
    updated_replicas: Option<u64>,
    #[serde(default)]
    current_revision: Option<String>,
    #[serde(default)]
    update_revision: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BudgetStatus {
    #[serde(default)]
    expected_pods: Option<u64>,
}

/// Pods a waiting rollout replaces once this update lets it go: `paused` true → false
/// (Deployments, and custom kinds with the same field), new rollout numbers
/// (`strategy.rollingUpdate`) under a rollout in progress, or a lowered
/// `updateStrategy.rollingUpdate.partition` (StatefulSets). Whether a template change
/// is pending is read from the old object's status; where it cannot tell, every pod
/// the release covers counts (fail closed).
///
/// `replicas` are the change's own counts (old, new), read once by `Change`; the old
/// status is read only when a rollout is released.
fn released_rollout(
    new: &ObjectParts<'_>,
    old: &ObjectParts<'_>,
    (old_replicas, new_replicas): (u64, u64),
) -> Option<u64> {
    let was_paused = read::<bool>(old, "/spec/paused").unwrap_or(false);
    let paused = read::<bool>(new, "/spec/paused").unwrap_or(false);
    let waiting = || match status::<RolloutStatus>(old).and_then(|s| s.updated_replicas) {
        Some(updated) => old_replicas.saturating_sub(updated),
        None => old_replicas.max(new_replicas),
    };
    if was_paused && !paused {
        return Some(waiting()).filter(|w| *w > 0);
    }
    // A Deployment's strategy numbers changed under a rollout in progress (a
    // person's, say): `maxUnavailable: 100%` takes every pod it has not replaced yet
    // down at once. Nothing pending, nothing released.
    if !paused
        && differs(
            new.raw_at("/spec/strategy/rollingUpdate"),
            old.raw_at("/spec/strategy/rollingUpdate"),
        )
    {
        return Some(waiting()).filter(|w| *w > 0);
    }
    const PARTITION: &str = "/spec/updateStrategy/rollingUpdate/partition";
    let (before, after) = (
        read::<u64>(old, PARTITION).unwrap_or(0),
        read::<u64>(new, PARTITION).unwrap_or(0),
    );
    if after < before {
        let pending = match status::<RolloutStatus>(old) {
            Some(RolloutStatus {
                current_revision: Some(current),
                update_revision: Some(update),
                ..
            }) => current != update,
            _ => true,
        };
        let released = before.min(new_replicas).saturating_sub(after);
        return (pending && released > 0).then_some(released);
    }
    None
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetRef {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
}

impl TargetRef {
    fn scale_ref(self) -> ScaleRef {
        let group = match self.api_version.rsplit_once('/') {
            Some((group, _)) => group.to_string(),
            None => String::new(),
        };
        ScaleRef {
            group,
            kind: self.kind,
            name: self.name,
        }
    }
}

fn autoscaler(
    new: &ObjectParts<'_>,
    old: Option<&ObjectParts<'_>>,
    unreadable: &mut Vec<String>,
) -> Option<Autoscaler> {
    let Some(target) = read::<TargetRef>(new, "/spec/scaleTargetRef").map(TargetRef::scale_ref)
    else {
        unreadable.push("the autoscaler's spec.scaleTargetRef cannot be read".into());
        return None;
    };
    let min = read::<u64>(new, "/spec/minReplicas").unwrap_or(1);
    let Some(max) = read::<u64>(new, "/spec/maxReplicas") else {
        unreadable.push("the autoscaler's spec.maxReplicas cannot be read".into());
        return None;
    };
    let drives = match old {
        None => true,
        Some(old) => {
            let old_target =
                read::<TargetRef>(old, "/spec/scaleTargetRef").map(TargetRef::scale_ref);
            old_target.as_ref() != Some(&target)
                || differs(new.raw_at("/spec/metrics"), old.raw_at("/spec/metrics"))
                || differs(new.raw_at("/spec/behavior"), old.raw_at("/spec/behavior"))
        }
    };
    Some(Autoscaler {
        min,
        max,
        target,
        drives,
    })
}

/// CronJob spec fields whose change starts no run: the history kept, and `suspend`
/// (lifting it is counted on its own; setting it stops runs).
const CRON_AT_REST: &[&str] = &["successfulJobsHistoryLimit", "failedJobsHistoryLimit", "suspend"];

fn cron(
    operation: Operation,
    new: Option<&ObjectParts<'_>>,
    old: Option<&ObjectParts<'_>>,
    unreadable: &mut Vec<String>,
) -> Option<CronRuns> {
    let new = new.filter(|_| operation != Operation::Delete)?;
    let suspended = |o: &ObjectParts<'_>| read::<bool>(o, "/spec/suspend").unwrap_or(false);
    let starts_runs = match (operation, old) {
        (Operation::Create, _) => true,
        // Any change of the spec but its history limits and a suspension can start
        // runs or change what they do (a schedule, a time zone, the job template and
        // its parallelism, `concurrencyPolicy: Replace`, a starting deadline), as can
        // lifting a suspension.
        (Operation::Update, Some(old)) => {
            let (empty, empty_old) = (RawMap::default(), RawMap::default());
            let (n, o) = (new.spec().unwrap_or(&empty), old.spec().unwrap_or(&empty_old));
            let keys = n.0.iter().chain(o.0.iter()).map(|(k, _)| k.as_ref());
            let respecified = keys
                .filter(|k| !CRON_AT_REST.contains(k))
                .any(|k| differs(n.get(k), o.get(k)));
            respecified || (suspended(old) && !suspended(new))
        }
        _ => false,
    };
    if !starts_runs {
        return None;
    }
    match read::<String>(new, "/spec/schedule") {
        Some(schedule) => Some(CronRuns {
            schedule,
            suspended: suspended(new),
        }),
        None => {
            unreadable.push("the CronJob's spec.schedule cannot be read".into());
            None
        }
    }
}
