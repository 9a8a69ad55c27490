//! The policy file as written: the serde model of `BlastRadiusPolicy` (docs/design.md#policy).
//!
//! Every struct denies unknown fields, because a misspelt limit silently ignored is a
//! limit that does not exist.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole policy document.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDocument {
    /// Must be `blastguard.io/v1alpha1`.
    pub api_version: String,
    /// Must be `BlastRadiusPolicy`.
    pub kind: String,
    /// Kubernetes-style metadata; only the name is used.
    #[serde(default)]
    pub metadata: PolicyMetadata,
    /// The policy itself.
    pub spec: PolicySpec,
}

/// Metadata of the policy document.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyMetadata {
    /// Name shown in logs.
    #[serde(default)]
    pub name: String,
    /// Accepted so a policy can be pasted from a cluster object; unused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Accepted so a policy can be pasted from a cluster object; unused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `spec` of the policy.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Default mode for rules that set none.
    #[serde(default)]
    pub mode: Mode,
    /// How an AI-assisted change is recognised.
    #[serde(default)]
    pub provenance: ProvenanceSpec,
    /// Custom kinds counted like Deployments (built-in kinds need no entry).
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
    /// How long an admitted change counts toward its change set.
    #[serde(default)]
    pub change_sets: ChangeSetsSpec,
    /// Ordered rules; the first that matches the namespace wins.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// How approvals are verified.
    #[serde(default)]
    pub approvals: ApprovalsSpec,
    /// What an AI-assisted change that fits its limits gets when the cluster state it
    /// needs (namespace labels, change-set counts, a parent's approval) cannot be read
    /// from the API server in time. Optional, so the embedded default policy need not
    /// name it; the default, `deny`, fails closed like the webhook.
    #[serde(default)]
    pub on_cluster_unavailable: OnClusterUnavailable,
}

/// `spec.onClusterUnavailable`: deny (the default) or allow, with a warning, a change
/// that fits its limits as far as they could be checked without the cluster's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnClusterUnavailable {
    /// Hold the change until the state can be read (fail closed).
    #[default]
    Deny,
    /// Decide with what is known, and say so in a warning.
    Allow,
}

impl OnClusterUnavailable {
    /// The spelling in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnClusterUnavailable::Deny => "deny",
            OnClusterUnavailable::Allow => "allow",
        }
    }
}

/// What blastguard does with a change over its limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny it unless approved.
    #[default]
    Enforce,
    /// Allow it with warnings shown to the client.
    Warn,
    /// Allow it silently; only logs, metrics and audit annotations record it.
    Audit,
}

impl Mode {
    /// The lowercase name used in the policy file, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }
}

/// `spec.provenance`: the signals that mark a change AI-assisted.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvenanceSpec {
    /// Annotation keys whose presence (any value but `false`) marks a change AI-assisted.
    #[serde(default)]
    pub annotations: Vec<String>,
    /// Globs over the requesting username.
    #[serde(default)]
    pub users: Vec<String>,
    /// Globs over the requester's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Globs over `request.options.fieldManager`.
    #[serde(default)]
    pub field_managers: Vec<String>,
    /// An UPDATE that strips the markers from an object that had them stays AI-assisted.
    #[serde(default = "default_true")]
    pub sticky: bool,
    /// Globs over the usernames of the cluster's own controllers: their requests are
    /// consequences of changes already admitted, never AI-assisted by annotation.
    #[serde(default = "default_controllers")]
    pub controllers: Vec<String>,
}

/// The cluster's own controllers (docs/design.md#annotations).
pub fn default_controllers() -> Vec<String> {
    [
        "system:kube-controller-manager",
        "system:kube-scheduler",
        "system:node:*",
        "system:serviceaccount:kube-system:*",
    ]
    .map(String::from)
    .to_vec()
}

/// One entry of `spec.workloads`: a custom kind counted like a Deployment.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// API group, e.g. `argoproj.io`.
    pub group: String,
    /// Kind, e.g. `Rollout`.
    pub kind: String,
    /// JSON pointer to the replica count, e.g. `/spec/replicas`.
    pub replicas: String,
    /// JSON pointer to the pod template, e.g. `/spec/template`.
    pub template: String,
    /// The resource's plural name for the webhook's rules; defaults to the lowercase
    /// kind plus `s` (`Rollout` → `rollouts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

impl WorkloadSpec {
    /// The resource's plural name, as the webhook's rules name it.
    pub fn resource_name(&self) -> String {
        self.resource
            .clone()
            .unwrap_or_else(|| format!("{}s", self.kind.to_lowercase()))
    }
}

/// `spec.changeSets`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeSetsSpec {
    /// How long an admitted change counts toward its change set, e.g. `1h`.
    #[serde(default = "default_window")]
    pub window: String,
}

impl Default for ChangeSetsSpec {
    fn default() -> Self {
        Self {
            window: default_window(),
        }
    }
}

fn default_window() -> String {
    "1h".to_string()
}

impl Default for ProvenanceSpec {
    fn default() -> Self {
        Self {
            annotations: vec![
                crate::annotations::AI_AGENT.to_string(),
                crate::annotations::AI_ASSISTED.to_string(),
            ],
            users: Vec::new(),
            groups: Vec::new(),
            field_managers: Vec::new(),
            sticky: true,
            controllers: default_controllers(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_required_approvals() -> u32 {
    1
}

/// One entry of `spec.rules`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// Shown in denials, logs and audit annotations.
    pub name: String,
    /// Namespace globs (`*`, `?`).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Matches namespaces by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelectorSpec>,
    /// Overrides `spec.mode` for this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The limits; an absent limit does not apply.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Distinct approvers an approval needs.
    #[serde(default = "default_required_approvals")]
    pub required_approvals: u32,
    /// Signers an approval needs from named approver groups (`spec.approvals.groups`),
    /// each term met by its own distinct signers; the total of distinct signers must
    /// still reach `requiredApprovals`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<ApproverTerm>,
}

/// One entry of a rule's `approvers`: `count` distinct signers from `group`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApproverTerm {
    /// A group of `spec.approvals.groups`.
    pub group: String,
    /// How many distinct signers of that group.
    pub count: u32,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, ANDed).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorSpec {
    /// Exact label matches.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default)]
    pub match_expressions: Vec<LabelRequirementSpec>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelRequirementSpec {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// `limits` of a rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsSpec {
    /// Pods created, replaced or removed by one change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods_affected: Option<u64>,
    /// Pods affected as a percentage of the old replica count (never on CREATE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_percent_affected: Option<u64>,
    /// Replica count after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u64>,
    /// Distinct namespaces one change set touches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_namespaces_per_change: Option<u64>,
    /// Pods affected by all admitted changes of one change set within the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods_per_change_set: Option<u64>,
    /// Whether AI changes to cluster-scoped objects pass without approval.
    #[serde(default)]
    pub allow_cluster_scoped: bool,
    /// Whether AI changes to DaemonSets pass without approval.
    #[serde(default)]
    pub allow_node_wide: bool,
}

/// `spec.approvals`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalsSpec {
    /// Path of the OpenSSH `allowed_signers` file.
    #[serde(default = "default_allowed_signers")]
    pub allowed_signers: String,
    /// Longest allowed `notAfter - notBefore`, e.g. `24h`.
    #[serde(default = "default_max_ttl", rename = "maxTTL")]
    pub max_ttl: String,
    /// Tolerated clock difference between approver and server, e.g. `60s`.
    #[serde(default = "default_clock_skew")]
    pub clock_skew: String,
    /// Approver groups: a name to the allowed_signers principals in it
    /// (`sre: [alice@example.com, bob@example.com]`), for rules' `approvers`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Label keys left out of the approval digest (a key, or a prefix ending in
    /// `*`): labels a GitOps tool adds at sync time, e.g.
    /// `kustomize.toolkit.fluxcd.io/*` (docs/gitops.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsigned_labels: Vec<String>,
    /// Usernames (globs) of the GitOps controllers that may restore a state an
    /// approval on the object signed, after it expired or was spent
    /// (docs/gitops.md, "Drift"). Empty: no one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restorers: Vec<String>,
}

impl Default for ApprovalsSpec {
    fn default() -> Self {
        Self {
            allowed_signers: default_allowed_signers(),
            max_ttl: default_max_ttl(),
            clock_skew: default_clock_skew(),
            groups: BTreeMap::new(),
            unsigned_labels: Vec::new(),
            restorers: Vec::new(),
        }
    }
}

fn default_allowed_signers() -> String {
    "/etc/blastguard/allowed_signers".to_string()
}

fn default_max_ttl() -> String {
    "24h".to_string()
}

fn default_clock_skew() -> String {
    "60s".to_string()
}
