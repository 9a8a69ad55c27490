//! The sizes a change's consequences depend on and its objects do not carry: an
//! autoscaler's target's replicas, a Service's endpoints (docs/policy.md).
//!
//! The engine asks [`Sizes`] before measuring; the cluster answers in `serve`
//! (`cluster::sizes`), this process's memory without one (`--dev`, `check`), where
//! what was never seen is unknown and an AI change that depends on it is unmeasurable.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::change::Target;

/// Where the engine reads current sizes. `Err` says, for the person at kubectl, why a
/// size is not known.
pub trait Sizes: Send + Sync {
    /// The current replicas of a workload (`Ok(0)` when it does not exist).
    fn replicas(&self, target: &Target) -> Result<u64, String>;
    /// The endpoints a Service routes to now.
    fn endpoints(&self, namespace: &str, service: &str) -> Result<u64, String>;
    /// Notes the replicas of a workload an admitted change stores (`None`: deleted).
    fn observe(&self, target: &Target, replicas: Option<u64>);
}

/// Most workloads remembered by [`InMemorySizes`]; past it nothing new is noted, and
/// what is not noted is unknown (so measured as unmeasurable, never as 0).
const MAX_REMEMBERED: usize = 10_000;

/// The sizes this process has seen admitted: all `check` and `--dev` know.
#[derive(Debug, Default)]
pub struct InMemorySizes {
    replicas: Mutex<HashMap<Target, Option<u64>>>,
}

impl Sizes for InMemorySizes {
    fn replicas(&self, target: &Target) -> Result<u64, String> {
        let known = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        match known.get(target) {
            Some(replicas) => Ok(replicas.unwrap_or(0)),
            None => Err(format!(
                "the current size of {target} is not known without a cluster (give it with the input, or check against the cluster)"
            )),
        }
    }

    fn endpoints(&self, namespace: &str, service: &str) -> Result<u64, String> {
        Err(format!(
            "the endpoints of Service {namespace}/{service} are not known without a cluster"
        ))
    }

    fn observe(&self, target: &Target, replicas: Option<u64>) {
        let mut known = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() < MAX_REMEMBERED || known.contains_key(target) {
            known.insert(target.clone(), replicas);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> Target {
        Target {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("prod".into()),
            name: name.into(),
        }
    }

    #[test]
    fn what_was_seen_is_known_and_the_rest_is_unknown_never_zero() {
        let sizes = InMemorySizes::default();
        sizes.observe(&target("api"), Some(40));
        sizes.observe(&target("gone"), None);
        assert_eq!(sizes.replicas(&target("api")), Ok(40));
        assert_eq!(sizes.replicas(&target("gone")), Ok(0));
        let unknown = sizes.replicas(&target("web")).unwrap_err();
        assert!(unknown.contains("Deployment prod/web"), "{unknown}");
        let endpoints = sizes.endpoints("prod", "front").unwrap_err();
        assert!(endpoints.contains("Service prod/front"), "{endpoints}");
    }
}
