//! Policy: which limits and mode apply to a namespace (docs/design.md#policy).
//!
//! [`Policy`] is the checked, compiled form of a [`PolicyDocument`]: globs are
//! compiled and durations parsed once at load, so the request path does no parsing.

mod model;
mod selector;
mod unsigned_labels;
mod validate;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use wildmatch::WildMatch;

pub use model::{
    ApprovalsSpec, ApproverTerm, ChangeSetsSpec, LabelRequirementSpec, LabelSelectorSpec,
    LimitsSpec, Mode, OnClusterUnavailable, PolicyDocument, PolicyMetadata, PolicySpec,
    ProvenanceSpec, RuleSpec, WorkloadSpec, default_controllers,
};
pub use unsigned_labels::UnsignedLabels;
pub use validate::Problem;

/// The embedded default policy (docs/policy.md explains each field).
pub const DEFAULT_POLICY_YAML: &str = include_str!("default.yaml");

/// Validity offered in the approval payload a denial prints, capped by the policy's
/// maxTTL ([`Approvals::offered_ttl`]).
pub const DEFAULT_TTL: Duration = Duration::from_secs(2 * 3600);

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The document is not a valid policy; every problem found is listed.
    #[error("invalid policy{}:\n{}", origin_suffix(.origin), format_problems(.problems))]
    Invalid {
        /// Where the document came from (a path), if anywhere.
        origin: Option<String>,
        /// Each problem with its path in the document.
        problems: Vec<Problem>,
    },
}

fn origin_suffix(origin: &Option<String>) -> String {
    origin.as_ref().map(|o| format!(" {o}")).unwrap_or_default()
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A loaded, valid policy ready for the request path.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The document as written.
    pub document: PolicyDocument,
    /// The compiled rules, in order.
    pub rules: Vec<Rule>,
    /// Compiled provenance signals.
    pub provenance: Provenance,
    /// Parsed approval settings.
    pub approvals: Approvals,
    /// How long an admitted change counts toward its change set.
    pub change_set_window: Duration,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's name.
    pub name: String,
    namespaces: Vec<WildMatch>,
    /// Label selector over the namespace's labels.
    pub namespace_selector: Option<LabelSelectorSpec>,
    /// Effective mode (rule override, else the policy's).
    pub mode: Mode,
    /// The limits past which an AI-assisted change needs an approval.
    pub limits: LimitsSpec,
    /// Distinct approvers an approval needs.
    pub required_approvals: u32,
    /// Signers needed from approver groups (docs/design.md#policy).
    pub approvers: Vec<ApproverTerm>,
}

/// Compiled provenance signals.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// Annotation keys that mark AI assistance.
    pub annotations: Vec<String>,
    /// Username globs.
    pub users: Vec<WildMatch>,
    /// Group globs.
    pub groups: Vec<WildMatch>,
    /// Field-manager globs.
    pub field_managers: Vec<WildMatch>,
    /// Whether markers on the old object count on UPDATE.
    pub sticky: bool,
    /// Username globs of the cluster's own controllers (never AI by annotation).
    pub controllers: Vec<WildMatch>,
}

/// Parsed `spec.approvals`.
#[derive(Debug, Clone)]
pub struct Approvals {
    /// Path of the allowed_signers file.
    pub allowed_signers: String,
    /// Longest allowed validity window.
    pub max_ttl: Duration,
    /// Tolerated clock skew.
    pub clock_skew: Duration,
    /// Approver groups: name to principals, each case-folded as signers are matched.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Label keys left out of the approval digest.
    pub unsigned_labels: UnsignedLabels,
    /// Usernames of the GitOps controllers that may restore a signed state.
    pub restorers: Vec<WildMatch>,
}

impl Approvals {
    /// The validity a new payload is offered with: two hours, or maxTTL if shorter.
    pub fn offered_ttl(&self) -> Duration {
        DEFAULT_TTL.min(self.max_ttl)
    }
}

impl Policy {
    /// The embedded default policy.
    pub fn embedded() -> Self {
        Self::from_yaml(DEFAULT_POLICY_YAML, None).expect("the embedded default policy is valid")
    }

    /// Reads and checks a policy file.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, Some(path.display().to_string()))
    }

    /// Parses and checks a policy document; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: Option<String>) -> Result<Self, PolicyError> {
        let document = validate::parse(text).map_err(|problems| PolicyError::Invalid {
            origin: origin.clone(),
            problems,
        })?;
        let problems = validate::check(&document);
        if !problems.is_empty() {
            return Err(PolicyError::Invalid { origin, problems });
        }
        Ok(Self::compile(document))
    }

    /// Compiles a document that [`validate::check`] accepted.
    fn compile(document: PolicyDocument) -> Self {
        let spec = &document.spec;
        let globs = |v: &[String]| v.iter().map(|g| WildMatch::new(g)).collect::<Vec<_>>();
        let rules = spec
            .rules
            .iter()
            .map(|r| Rule {
                name: r.name.clone(),
                namespaces: globs(&r.namespaces),
                namespace_selector: r.namespace_selector.clone(),
                mode: r.mode.unwrap_or(spec.mode),
                limits: r.limits.clone(),
                required_approvals: r.required_approvals,
                approvers: r.approvers.clone(),
            })
            .collect();
        let p = &spec.provenance;
        let provenance = Provenance {
            annotations: p.annotations.clone(),
            users: globs(&p.users),
            groups: globs(&p.groups),
            field_managers: globs(&p.field_managers),
            sticky: p.sticky,
            controllers: globs(&p.controllers),
        };
        let approvals = Approvals {
            allowed_signers: spec.approvals.allowed_signers.clone(),
            // check() has parsed both durations already.
            max_ttl: humantime::parse_duration(&spec.approvals.max_ttl).unwrap_or_default(),
            clock_skew: humantime::parse_duration(&spec.approvals.clock_skew).unwrap_or_default(),
            groups: spec
                .approvals
                .groups
                .iter()
                .map(|(name, members)| {
                    let members = members
                        .iter()
                        .map(|m| crate::identity::fold_case(m.trim()))
                        .collect();
                    (name.clone(), members)
                })
                .collect(),
            unsigned_labels: UnsignedLabels::new(spec.approvals.unsigned_labels.iter().cloned()),
            restorers: globs(&spec.approvals.restorers),
        };
        let change_set_window =
            humantime::parse_duration(&spec.change_sets.window).unwrap_or_default();
        Self {
            document,
            rules,
            provenance,
            approvals,
            change_set_window,
        }
    }

    /// The custom workload entry for a (group, kind), if the policy lists one.
    pub fn custom_workload(&self, group: &str, kind: &str) -> Option<&WorkloadSpec> {
        self.document
            .spec
            .workloads
            .iter()
            .find(|w| w.group == group && w.kind == kind)
    }

    /// The first rule that matches the namespace by name glob or, when the namespace's
    /// labels are known, by label selector. Cluster-scoped objects match with `""`.
    pub fn rule_for(
        &self,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(namespace, labels))
    }
}

/// Where a namespace's labels come from, for `namespaceSelector`: the cluster's
/// Namespaces when there is a cluster, the input's Namespaces for `check`.
pub trait NamespaceLabels: Send + Sync {
    /// The namespace's labels: `Some` (empty when it has none or is not known to
    /// exist), or `None` when they cannot be known now (the cluster is unreachable), in
    /// which case the strictest rule that could match applies.
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
}

/// Namespace labels known in advance: the Namespaces in `check`'s input, or none.
#[derive(Debug, Default, Clone)]
pub struct KnownNamespaces(pub std::collections::HashMap<String, BTreeMap<String, String>>);

/// The label the API server sets on every Namespace to its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl NamespaceLabels for KnownNamespaces {
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        let mut labels = self.0.get(namespace).cloned().unwrap_or_default();
        // As in a cluster, where the API server sets it on every Namespace, so a
        // selector on it picks the same rule offline as online.
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), namespace.to_string());
        Some(labels)
    }
}

impl Policy {
    /// The rule for a namespace whose labels may be unknown: with labels, the first
    /// match ([`Policy::rule_for`]); without, the strictest of the rules that could
    /// match (those before the first one whose glob matches, with a selector, and that
    /// one): most required approvals, then the lowest `maxPodsAffected`, then the
    /// earliest. Failing closed means never giving a namespace a laxer rule than its
    /// labels might select.
    pub fn rule_for_labels(
        &self,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Option<&Rule> {
        if labels.is_some() {
            return self.rule_for(namespace, labels);
        }
        let mut candidates = Vec::new();
        for rule in &self.rules {
            let by_glob = rule.namespaces.iter().any(|g| g.matches(namespace));
            if by_glob || rule.namespace_selector.is_some() {
                candidates.push(rule);
            }
            if by_glob {
                break;
            }
        }
        let strictness = |r: &Rule| {
            (
                std::cmp::Reverse(r.required_approvals),
                r.limits.max_pods_affected.unwrap_or(u64::MAX),
            )
        };
        candidates
            .into_iter()
            .enumerate()
            .min_by_key(|(i, r)| (strictness(r), *i))
            .map(|(_, r)| r)
    }
}

impl Rule {
    /// Whether this rule applies to the namespace.
    pub fn matches(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.namespaces.iter().any(|g| g.matches(namespace))
            || match (&self.namespace_selector, labels) {
                (Some(selector), Some(labels)) => selector::matches(selector, labels),
                _ => false,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_policy_loads_with_the_documented_values() {
        let p = Policy::embedded();
        assert_eq!(p.document.metadata.name, "default");
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.rules[0].name, "protected");
        assert_eq!(p.rules[0].limits.max_pods_affected, Some(0));
        assert_eq!(p.rules[0].required_approvals, 2);
        assert_eq!(p.rules[1].limits.max_replicas, Some(100));
        assert_eq!(p.rules[1].limits.max_namespaces_per_change, Some(3));
        assert_eq!(p.rules[1].limits.max_percent_affected, None);
        assert_eq!(p.approvals.max_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(p.approvals.clock_skew, Duration::from_secs(60));
        assert!(p.provenance.sticky);
    }

    #[test]
    fn first_matching_rule_wins() {
        let p = Policy::embedded();
        let critical: BTreeMap<_, _> = [("blastguard.io/tier".to_string(), "critical".to_string())]
            .into_iter()
            .collect();
        type Labels<'a> = Option<&'a BTreeMap<String, String>>;
        let cases: &[(&str, Labels, &str)] = &[
            ("prod", None, "protected"),
            ("prod-eu", None, "protected"),
            ("kube-system", None, "protected"),
            ("production", None, "default"),
            ("staging", None, "default"),
            ("", None, "default"),
            ("payments", Some(&critical), "protected"),
            ("payments", Some(&BTreeMap::new()), "default"),
        ];
        for (ns, labels, want) in cases {
            assert_eq!(
                p.rule_for(ns, *labels).map(|r| r.name.as_str()),
                Some(*want),
                "namespace {ns:?} labels {labels:?}"
            );
        }
    }

    #[test]
    fn unknown_labels_get_the_strictest_rule_that_could_match() {
        let p = Policy::embedded();
        // "payments" could be labelled critical: protected (2 approvals, 0 pods) wins.
        assert_eq!(
            p.rule_for_labels("payments", None).unwrap().name,
            "protected"
        );
        assert_eq!(
            p.rule_for_labels("payments", Some(&BTreeMap::new()))
                .unwrap()
                .name,
            "default"
        );
        // A rule after the first glob match can never apply, so it is no candidate.
        let yaml = DEFAULT_POLICY_YAML.replace(
            "      namespaceSelector: {matchLabels: {blastguard.io/tier: critical}}\n",
            "",
        );
        let p = Policy::from_yaml(&yaml, None).unwrap();
        assert_eq!(p.rule_for_labels("payments", None).unwrap().name, "default");
    }

    #[test]
    fn no_rule_matches_when_no_glob_covers_the_namespace() {
        let yaml = DEFAULT_POLICY_YAML.replace("namespaces: [\"*\"]", "namespaces: [\"team-*\"]");
        let p = Policy::from_yaml(&yaml, None).unwrap();
        assert!(p.rule_for("staging", None).is_none());
        assert_eq!(p.rule_for("team-a", None).unwrap().name, "default");
    }

    #[test]
    fn rule_mode_overrides_policy_mode() {
        let yaml = DEFAULT_POLICY_YAML
            .replace("mode: enforce ", "mode: audit ")
            .replace("- name: default", "- name: default\n      mode: warn");
        let p = Policy::from_yaml(&yaml, None).unwrap();
        assert_eq!(p.rules[0].mode, Mode::Audit);
        assert_eq!(p.rules[1].mode, Mode::Warn);
    }
}
