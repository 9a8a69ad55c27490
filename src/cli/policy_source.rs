//! The one policy loader of the commands (docs/kubectl-plugin.md#policy-and-approvers):
//! `--policy FILE`, the policy the cluster runs, or the embedded one.
//!
//! The cluster's is the chart's ConfigMap (`<release>-policy` in the release
//! namespace, key `policy.yaml`), read with `kubectl get` and the user's kubeconfig,
//! as `check --server` and the inbox read everything else. Every report names the
//! policy that judged, so a CI verdict and the cluster's can no longer differ without
//! anyone seeing why. (`serve` reads its `--policy` file through the same parser,
//! [`Policy::from_yaml`], and watches it for reloads: crate::server::reloaders.)

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
        /// The release namespace.
        namespace: String,
        /// `<release>-policy` for the chart.
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

/// Why the policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadPolicyError {
    /// kubectl could not read the cluster's ConfigMap.
    #[error("cannot read ConfigMap {namespace}/{name} with kubectl: {message}")]
    Read {
        /// The release namespace.
        namespace: String,
        /// The ConfigMap, `<release>-policy` for the chart.
        name: String,
        /// kubectl's words.
        message: String,
    },
    /// The ConfigMap has no policy under the chart's key.
    #[error("ConfigMap {namespace}/{name} has no data key {POLICY_KEY}")]
    NoKey {
        /// The release namespace.
        namespace: String,
        /// The ConfigMap, `<release>-policy` for the chart.
        name: String,
    },
    /// The file or the ConfigMap's text is not a valid policy (or the file cannot be
    /// read).
    #[error(transparent)]
    Invalid(#[from] PolicyError),
}

/// Reads the cluster's policy with `kubectl get configmap`.
fn read(kubectl: &str, namespace: &str, name: &str) -> Result<Policy, LoadPolicyError> {
    let read_error = |message: String| LoadPolicyError::Read {
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
        .ok_or_else(|| LoadPolicyError::NoKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?;
    Ok(Policy::from_yaml(
        text,
        Some(format!("ConfigMap {namespace}/{name} key {POLICY_KEY}")),
    )?)
}

/// Where a command's policy comes from: `file` first; else the cluster's, when it
/// must be read ([`Cluster::Required`], `check --policy-from-cluster`) or is tried
/// ([`Cluster::Tried`]: an unreadable ConfigMap falls back to the embedded policy and
/// the note says why); else the embedded policy.
#[derive(Debug, Clone)]
pub struct PolicyChoice<'a> {
    /// `--policy`.
    pub file: Option<&'a Path>,
    /// Whether and how the cluster's ConfigMap is read.
    pub cluster: Cluster,
    /// The kubectl to run.
    pub kubectl: &'a str,
    /// The release namespace.
    pub namespace: &'a str,
    /// The ConfigMap's name.
    pub configmap: &'a str,
}

/// Whether the cluster's policy is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    /// Never: a file or the embedded policy.
    Not,
    /// Read when readable, else the embedded policy with a note.
    Tried,
    /// Read, or fail.
    Required,
}

impl<'a> PolicyChoice<'a> {
    /// `--policy FILE`, else the embedded policy; the cluster is not asked.
    pub fn file_or_embedded(file: Option<&'a Path>) -> Self {
        Self {
            file,
            cluster: Cluster::Not,
            kubectl: "kubectl",
            namespace: DEFAULT_NAMESPACE,
            configmap: DEFAULT_CONFIGMAP,
        }
    }

    /// The chart's ConfigMap of the release in `namespace`, read with `kubectl`.
    pub fn of_release(kubectl: &'a str, namespace: &'a str, cluster: Cluster) -> Self {
        Self {
            file: None,
            cluster,
            kubectl,
            namespace,
            configmap: DEFAULT_CONFIGMAP,
        }
    }
}

/// A loaded policy.
#[derive(Debug)]
pub struct Loaded {
    /// The policy.
    pub policy: Policy,
    /// Where it came from.
    pub source: PolicySource,
    /// Why it is not the cluster's, when the cluster's was tried and fell back.
    pub note: Option<String>,
}

/// Loads the policy `choice` names.
pub fn load(choice: &PolicyChoice<'_>) -> Result<Loaded, LoadPolicyError> {
    let loaded = |policy, source, note| Loaded {
        policy,
        source,
        note,
    };
    if let Some(path) = choice.file {
        return Ok(loaded(
            Policy::from_file(path)?,
            PolicySource::File(path.to_path_buf()),
            None,
        ));
    }
    let cluster = PolicySource::Cluster {
        namespace: choice.namespace.to_string(),
        name: choice.configmap.to_string(),
    };
    match choice.cluster {
        Cluster::Not => Ok(loaded(Policy::embedded(), PolicySource::Embedded, None)),
        Cluster::Required => {
            let policy = read(choice.kubectl, choice.namespace, choice.configmap)?;
            Ok(loaded(policy, cluster, None))
        }
        Cluster::Tried => match read(choice.kubectl, choice.namespace, choice.configmap) {
            Ok(policy) => Ok(loaded(policy, cluster, None)),
            Err(e) => {
                tracing::debug!(error = %e, "the cluster's policy is not readable");
                Ok(loaded(
                    Policy::embedded(),
                    PolicySource::Embedded,
                    Some(format!(
                        "judged with the embedded default policy, not the cluster's: {e} \
                         (--policy FILE, or --release-namespace/--policy-configmap for another release)"
                    )),
                ))
            }
        },
    }
}
