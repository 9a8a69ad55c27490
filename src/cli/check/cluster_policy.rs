//! `check` judges with the policy the cluster runs
//! (docs/kubectl-plugin.md#policy-and-approvers).
//!
//! The chart's ConfigMap (`<release>-policy` in the release namespace, key
//! `policy.yaml`), read with `kubectl get` and the user's kubeconfig, as `--server`
//! reads everything else. Every report names the policy that judged, so a CI verdict
//! and the cluster's can no longer differ without anyone seeing why.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::policy::{Policy, PolicyError};

/// The chart's policy ConfigMap name with the default release name.
pub const DEFAULT_CONFIGMAP: &str = "blastguard-policy";
/// The chart's default release namespace.
pub const DEFAULT_NAMESPACE: &str = "blastguard";
/// The key the chart writes the policy under.
pub const POLICY_KEY: &str = "policy.yaml";

/// Which policy judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// The policy compiled into blastguard.
    Embedded,
    /// A file given with `--policy`.
    File(PathBuf),
    /// The cluster's ConfigMap.
    Cluster {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySource::Embedded => f.write_str("embedded default"),
            PolicySource::File(path) => write!(f, "file {}", path.display()),
            PolicySource::Cluster { namespace, name } => {
                write!(f, "cluster ConfigMap {namespace}/{name}")
            }
        }
    }
}

/// Why the cluster's policy could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterPolicyError {
    /// kubectl could not read the ConfigMap.
    #[error("cannot read ConfigMap {namespace}/{name} with kubectl: {message}")]
    Read {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// kubectl's words.
        message: String,
    },
    /// The ConfigMap has no policy under the chart's key.
    #[error("ConfigMap {namespace}/{name} has no data key {POLICY_KEY}")]
    NoKey {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The policy in it does not load.
    #[error(transparent)]
    Invalid(#[from] PolicyError),
}

/// Reads the cluster's policy with `kubectl get configmap`.
pub fn read(kubectl: &str, namespace: &str, name: &str) -> Result<Policy, ClusterPolicyError> {
    let read_error = |message: String| ClusterPolicyError::Read {
        namespace: namespace.to_string(),
        name: name.to_string(),
        message,
    };
    let out = Command::new(kubectl)
        .args(["get", "configmap", name, "-n", namespace, "-o", "json"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| read_error(format!("cannot run {kubectl}: {e}")))?;
    if !out.status.success() {
        return Err(read_error(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let object: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| read_error(format!("unreadable answer: {e}")))?;
    let text = object
        .pointer(&format!("/data/{}", POLICY_KEY.replace('/', "~1")))
        .and_then(Value::as_str)
        .ok_or_else(|| ClusterPolicyError::NoKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?;
    Ok(Policy::from_yaml(
        text,
        Some(format!("ConfigMap {namespace}/{name} key {POLICY_KEY}")),
    )?)
}

/// Where `check`'s policy comes from: `--policy` first; the cluster's when asked
/// (`--policy-from-cluster`: it must be readable) or when `--server` already talks
/// to the cluster (then an unreadable ConfigMap falls back to the embedded policy,
/// and `note` says why); else the embedded policy.
pub struct Choice<'a> {
    /// `--policy`.
    pub file: Option<&'a Path>,
    /// `--policy-from-cluster`.
    pub from_cluster: bool,
    /// `--server`.
    pub server: bool,
    /// kubectl to run.
    pub kubectl: &'a str,
    /// The release namespace.
    pub namespace: &'a str,
    /// The ConfigMap's name.
    pub configmap: &'a str,
}

/// The policy, where it came from, and a note when `--server` fell back.
pub fn choose(
    choice: &Choice<'_>,
) -> Result<(Policy, PolicySource, Option<String>), ClusterPolicyError> {
    if let Some(path) = choice.file {
        return Ok((
            Policy::from_file(path)?,
            PolicySource::File(path.to_path_buf()),
            None,
        ));
    }
    let cluster = PolicySource::Cluster {
        namespace: choice.namespace.to_string(),
        name: choice.configmap.to_string(),
    };
    if choice.from_cluster {
        let policy = read(choice.kubectl, choice.namespace, choice.configmap)?;
        return Ok((policy, cluster, None));
    }
    if choice.server {
        return match read(choice.kubectl, choice.namespace, choice.configmap) {
            Ok(policy) => Ok((policy, cluster, None)),
            Err(e) => {
                tracing::debug!(error = %e, "the cluster's policy is not readable");
                Ok((
                    Policy::embedded(),
                    PolicySource::Embedded,
                    Some(format!(
                        "judged with the embedded default policy, not the cluster's: {e} \
                         (--policy FILE, or --release-namespace/--policy-configmap for another release)"
                    )),
                ))
            }
        };
    }
    Ok((Policy::embedded(), PolicySource::Embedded, None))
}
