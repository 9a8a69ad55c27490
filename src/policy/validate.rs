//! Checking a policy document: every problem, each with its path in the document
//! (`spec.rules[1].limits.maxPercentAffected: must be 0..100`).

use std::collections::HashSet;
use std::fmt;

use super::model::{LabelSelectorSpec, PolicyDocument};

/// The apiVersion a policy must declare.
pub const API_VERSION: &str = "blastguard.io/v1alpha1";
/// The kind a policy must declare.
pub const KIND: &str = "BlastRadiusPolicy";

/// One problem in a policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the document, e.g. `spec.rules[1].limits.maxPercentAffected`.
    pub path: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Parses YAML (or JSON) into the typed document. A syntax or type error is reported
/// with its path in the document and its line and column: serde-saphyr gives the
/// place, serde_path_to_error the path (`spec.rules[1].limits`). Parsing cannot go
/// past the first such error.
pub(super) fn parse(text: &str) -> Result<PolicyDocument, Vec<Problem>> {
    let mut path = None;
    serde_saphyr::with_deserializer_from_str_with_options(text, crate::yaml::options(), |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    })
    .map_err(|e| {
        // `.` is serde_path_to_error's name for the document itself.
        let path = path.filter(|p| p != ".").unwrap_or_default();
        vec![Problem {
            path,
            message: crate::yaml::message(&e),
        }]
    })
}

/// Every semantic problem of a well-typed document.
pub(super) fn check(doc: &PolicyDocument) -> Vec<Problem> {
    let mut out = Problems::default();
    if doc.api_version != API_VERSION {
        out.add(
            "apiVersion",
            format!("must be {API_VERSION}, got {:?}", doc.api_version),
        );
    }
    if doc.kind != KIND {
        out.add("kind", format!("must be {KIND}, got {:?}", doc.kind));
    }
    let spec = &doc.spec;

    let p = &spec.provenance;
    for (i, key) in p.annotations.iter().enumerate() {
        if let Err(why) = qualified_name(key) {
            out.add(format!("spec.provenance.annotations[{i}]"), why);
        }
    }
    for (field, globs) in [
        ("users", &p.users),
        ("groups", &p.groups),
        ("fieldManagers", &p.field_managers),
        ("controllers", &p.controllers),
    ] {
        for (i, g) in globs.iter().enumerate() {
            if g.trim().is_empty() {
                out.add(format!("spec.provenance.{field}[{i}]"), "must not be empty");
            }
        }
    }

    for (i, w) in spec.workloads.iter().enumerate() {
        let at = format!("spec.workloads[{i}]");
        if w.kind.trim().is_empty() {
            out.add(format!("{at}.kind"), "must not be empty");
        }
        if crate::kinds::find(&w.group, &w.kind).is_some() {
            out.add(
                format!("{at}.kind"),
                format!(
                    "{}/{} is a built-in kind blastguard already measures; list only custom kinds",
                    w.group, w.kind
                ),
            );
        }
        for (field, pointer) in [("replicas", &w.replicas), ("template", &w.template)] {
            if !pointer.starts_with('/') {
                out.add(
                    format!("{at}.{field}"),
                    format!("must be a JSON pointer like /spec/{field}, got {pointer:?}"),
                );
            }
        }
        if spec.workloads[..i]
            .iter()
            .any(|o| o.group == w.group && o.kind == w.kind)
        {
            out.add(&at, format!("duplicate workload {}/{}", w.group, w.kind));
        }
    }
    match humantime::parse_duration(&spec.change_sets.window) {
        Ok(d) if d.is_zero() => out.add("spec.changeSets.window", "must be longer than 0s"),
        Ok(_) => {}
        Err(e) => out.add(
            "spec.changeSets.window",
            format!(
                "{:?} is not a duration like 1h or 30m: {e}",
                spec.change_sets.window
            ),
        ),
    }

    if spec.rules.is_empty() {
        out.add("spec.rules", "at least one rule is required");
    }
    let mut names = HashSet::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if rule.name.trim().is_empty() {
            out.add(format!("{at}.name"), "must not be empty");
        } else if !names.insert(rule.name.as_str()) {
            out.add(
                format!("{at}.name"),
                format!("duplicate rule name {:?}", rule.name),
            );
        }
        if rule.namespaces.is_empty() && rule.namespace_selector.is_none() {
            out.add(
                &at,
                "matches no namespace: set namespaces, namespaceSelector, or both",
            );
        }
        for (j, g) in rule.namespaces.iter().enumerate() {
            if g.is_empty() {
                out.add(format!("{at}.namespaces[{j}]"), "must not be empty");
            }
        }
        if let Some(sel) = &rule.namespace_selector {
            check_selector(sel, &format!("{at}.namespaceSelector"), &mut out);
        }
        if let Some(pct) = rule.limits.max_percent_affected
            && pct > 100
        {
            out.add(
                format!("{at}.limits.maxPercentAffected"),
                format!("must be 0..100, got {pct}"),
            );
        }
        if !(1..=16).contains(&rule.required_approvals) {
            out.add(
                format!("{at}.requiredApprovals"),
                format!("must be 1..16, got {}", rule.required_approvals),
            );
        }
        let groups = &spec.approvals.groups;
        let mut seen_groups = HashSet::new();
        for (j, term) in rule.approvers.iter().enumerate() {
            let at = format!("{at}.approvers[{j}]");
            if !seen_groups.insert(term.group.as_str()) {
                out.add(
                    format!("{at}.group"),
                    format!(
                        "group {:?} is named twice in this rule: add the counts",
                        term.group
                    ),
                );
            }
            match groups.get(&term.group) {
                None => out.add(
                    format!("{at}.group"),
                    format!(
                        "unknown group {:?} (spec.approvals.groups has: {})",
                        term.group,
                        if groups.is_empty() {
                            "none".to_string()
                        } else {
                            groups.keys().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ),
                ),
                Some(members) if term.count as usize > members.len() => out.add(
                    format!("{at}.count"),
                    format!(
                        "{} is more than the {} principal(s) of group {:?}: no approval could ever meet it",
                        term.count,
                        members.len(),
                        term.group
                    ),
                ),
                Some(_) => {}
            }
            if term.count == 0 {
                out.add(format!("{at}.count"), "must be at least 1");
            }
        }
    }
    for (name, members) in &spec.approvals.groups {
        let at = format!("spec.approvals.groups.{name}");
        if name.trim().is_empty() {
            out.add("spec.approvals.groups", "a group needs a name");
        }
        if members.is_empty() {
            out.add(at.clone(), "must list at least one principal");
        }
        let mut seen = HashSet::new();
        for (i, member) in members.iter().enumerate() {
            let m = member.trim();
            if m.is_empty() || m.contains([',', '*', '?', ' ']) || m.starts_with('!') {
                out.add(
                    format!("{at}[{i}]"),
                    format!(
                        "{member:?} must be one principal as allowed_signers names it (no spaces, commas or patterns)"
                    ),
                );
            } else if !seen.insert(crate::identity::fold_case(m)) {
                out.add(format!("{at}[{i}]"), format!("{member:?} is listed twice"));
            }
        }
    }

    unsigned_labels(spec, &mut out);
    for (i, restorer) in spec.approvals.restorers.iter().enumerate() {
        let at = format!("spec.approvals.restorers[{i}]");
        let r = restorer.trim();
        if r.is_empty() || r.chars().all(|c| matches!(c, '*' | '?' | ':')) {
            out.add(
                at,
                format!("{restorer:?} must name the GitOps controllers' usernames, not everyone"),
            );
        } else if spec.provenance.users.iter().any(|u| u.trim() == r) {
            out.add(
                at,
                format!("{restorer:?} is an AI identity (spec.provenance.users): an AI agent must not restore approved states"),
            );
        }
    }

    let a = &spec.approvals;
    if a.allowed_signers.trim().is_empty() {
        out.add("spec.approvals.allowedSigners", "must name a file");
    }
    match humantime::parse_duration(&a.max_ttl) {
        Ok(d) if d.is_zero() => out.add("spec.approvals.maxTTL", "must be longer than 0s"),
        Ok(_) => {}
        Err(e) => out.add(
            "spec.approvals.maxTTL",
            format!("{:?} is not a duration like 24h or 90m: {e}", a.max_ttl),
        ),
    }
    match humantime::parse_duration(&a.clock_skew) {
        Ok(d) if d > std::time::Duration::from_secs(3600) => {
            out.add("spec.approvals.clockSkew", "must be at most 1h")
        }
        Ok(_) => {}
        Err(e) => out.add(
            "spec.approvals.clockSkew",
            format!("{:?} is not a duration like 60s: {e}", a.clock_skew),
        ),
    }
    out.0
}

fn check_selector(sel: &LabelSelectorSpec, at: &str, out: &mut Problems) {
    for (k, v) in &sel.match_labels {
        if let Err(why) = qualified_name(k) {
            out.add(format!("{at}.matchLabels.{k}"), why);
        }
        if let Err(why) = label_value(v) {
            out.add(format!("{at}.matchLabels.{k}"), why);
        }
    }
    for (i, req) in sel.match_expressions.iter().enumerate() {
        let at = format!("{at}.matchExpressions[{i}]");
        if let Err(why) = qualified_name(&req.key) {
            out.add(format!("{at}.key"), why);
        }
        match req.operator.as_str() {
            "In" | "NotIn" if req.values.is_empty() => out.add(
                format!("{at}.values"),
                format!("{} needs at least one value", req.operator),
            ),
            "Exists" | "DoesNotExist" if !req.values.is_empty() => out.add(
                format!("{at}.values"),
                format!("{} takes no values", req.operator),
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => out.add(
                format!("{at}.operator"),
                format!("must be In, NotIn, Exists or DoesNotExist, got {other:?}"),
            ),
        }
    }
}

/// A Kubernetes qualified name (label or annotation key): optional DNS prefix and `/`.
fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let dns_ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !dns_ok {
            return Err(format!(
                "{key:?}: prefix must be a DNS subdomain like example.com"
            ));
        }
    }
    if name.is_empty() || name.len() > 63 || label_value(name).is_err() {
        return Err(format!(
            "{key:?}: name must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn label_value(v: &str) -> Result<(), String> {
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!("{v:?} is not a valid label value"))
    }
}

/// Label domains whose labels decide what a change does, never left out of the
/// digest: a Namespace's Pod Security level, ClusterRole aggregation, and
/// blastguard's own.
const BOUND_LABEL_DOMAINS: &[&str] = &[
    "pod-security.kubernetes.io/",
    "rbac.authorization.k8s.io/",
    "blastguard.io/",
];

/// `spec.approvals.unsignedLabels`: whole keys or whole domains (`example.com/*`),
/// none that picks a rule (a namespaceSelector key) or is in a domain that decides
/// what a change does (docs/security.md weighs the list).
fn unsigned_labels(spec: &super::model::PolicySpec, out: &mut Problems) {
    let selector_keys: Vec<&str> = spec
        .rules
        .iter()
        .filter_map(|r| r.namespace_selector.as_ref())
        .flat_map(|s| {
            s.match_labels
                .keys()
                .map(String::as_str)
                .chain(s.match_expressions.iter().map(|e| e.key.as_str()))
        })
        .collect();
    for (i, entry) in spec.approvals.unsigned_labels.iter().enumerate() {
        let at = format!("spec.approvals.unsignedLabels[{i}]");
        let (key, prefix) = match entry.strip_suffix('*') {
            Some(domain) => (domain, true),
            None => (entry.as_str(), false),
        };
        let well_formed = !key.is_empty()
            && !key.contains(['*', '?', ' ', ','])
            && key.matches('/').count() <= 1
            && (!prefix || key.ends_with('/'))
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
        if !well_formed {
            out.add(
                at,
                format!(
                    "{entry:?} must be a label key (team, example.com/team) or a whole domain (example.com/*)"
                ),
            );
            continue;
        }
        let covers = |k: &str| if prefix { k.starts_with(key) } else { k == key };
        if let Some(domain) = BOUND_LABEL_DOMAINS
            .iter()
            .find(|d| key.starts_with(**d) || (prefix && d.starts_with(key)))
        {
            out.add(
                at,
                format!(
                    "{entry:?}: labels of {domain} decide what a change does (Pod Security, RBAC aggregation, blastguard's own) and stay in the digest"
                ),
            );
        } else if let Some(k) = selector_keys.iter().find(|k| covers(k)) {
            out.add(
                at,
                format!(
                    "{entry:?}: label {k:?} picks a rule (a namespaceSelector) and stays in the digest"
                ),
            );
        }
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DEFAULT_POLICY_YAML, Policy, PolicyError};

    fn problems(yaml: &str) -> Vec<String> {
        match Policy::from_yaml(yaml, None) {
            Ok(_) => vec![],
            Err(PolicyError::Invalid { problems, .. }) => {
                problems.iter().map(|p| p.to_string()).collect()
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    fn edited(from: &str, to: &str) -> String {
        assert!(
            DEFAULT_POLICY_YAML.contains(from),
            "fixture edit {from:?} does not apply"
        );
        DEFAULT_POLICY_YAML.replacen(from, to, 1)
    }

    #[test]
    fn unsigned_labels_are_whole_keys_or_domains_and_never_decide_a_change() {
        let with = |list: &str| {
            edited(
                "    maxTTL: 24h\n",
                &format!("    maxTTL: 24h\n    unsignedLabels: {list}\n"),
            )
        };
        assert_eq!(
            problems(&with(
                "[\"kustomize.toolkit.fluxcd.io/*\", argocd.argoproj.io/instance, team]"
            )),
            Vec::<String>::new()
        );
        let p = problems(&with(
            "[\"*\", \"kustomize*\", \"pod-security.kubernetes.io/*\", \"blastguard.io/tier\", \"rbac.authorization.k8s.io/aggregate-to-view\", \"a b\"]",
        ));
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(
            p[0].starts_with("spec.approvals.unsignedLabels[0]: \"*\" must be a label key"),
            "{p:#?}"
        );
        assert!(p[1].contains("must be a label key"), "{p:#?}");
        assert!(p[2].contains("decide what a change does"), "{p:#?}");
        assert!(p[3].contains("decide what a change does"), "{p:#?}");
        assert!(p[4].contains("decide what a change does"), "{p:#?}");
        assert!(p[5].contains("must be a label key"), "{p:#?}");
        // A key that picks a rule stays bound.
        let selector = edited(
            "    maxTTL: 24h\n",
            "    maxTTL: 24h\n    unsignedLabels: [\"example.com/*\"]\n",
        )
        .replace("blastguard.io/tier: critical", "example.com/tier: critical");
        let p = problems(&selector);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].contains("picks a rule"), "{p:#?}");
    }

    #[test]
    fn problem_table() {
        let cases: Vec<(String, &str)> = vec![
            (
                edited("# maxPercentAffected: 50", "maxPercentAffected: 150"),
                "spec.rules[1].limits.maxPercentAffected: must be 0..100, got 150",
            ),
            (
                edited("maxReplicas: 100", "maxReplica: 100"),
                "spec.rules[1].limits.maxReplica: unknown field `maxReplica`, expected one of maxPodsAffected",
            ),
            (
                edited("maxReplicas: 100", "maxReplicas: lots"),
                "spec.rules[1].limits.maxReplicas: invalid u64 at line 29, column 22",
            ),
            (
                edited("mode: enforce", "mode: block"),
                "spec.mode: unknown variant `block`, expected one of",
            ),
            (
                edited("apiVersion: blastguard.io/v1alpha1", "apiVersion: v1"),
                "apiVersion: must be blastguard.io/v1alpha1, got \"v1\"",
            ),
            (
                edited("kind: BlastRadiusPolicy", "kind: Policy"),
                "kind: must be BlastRadiusPolicy, got \"Policy\"",
            ),
            (
                edited("requiredApprovals: 2", "requiredApprovals: 0"),
                "spec.rules[0].requiredApprovals: must be 1..16, got 0",
            ),
            (
                edited("- name: default", "- name: protected"),
                "spec.rules[1].name: duplicate rule name \"protected\"",
            ),
            (
                edited("template: /spec/template}", "template: spec.template}"),
                "spec.workloads[0].template: must be a JSON pointer like /spec/template",
            ),
            (
                edited(
                    "group: argoproj.io, kind: Rollout",
                    "group: apps, kind: Deployment",
                ),
                "spec.workloads[0].kind: apps/Deployment is a built-in kind",
            ),
            (
                edited("window: 1h", "window: 0s"),
                "spec.changeSets.window: must be longer than 0s",
            ),
            (
                edited("window: 1h", "window: soon"),
                "spec.changeSets.window: \"soon\" is not a duration",
            ),
            (
                edited("\"system:node:*\",", "\"\","),
                "spec.provenance.controllers[2]: must not be empty",
            ),
            (
                edited("maxPodsPerChangeSet: 50", "maxPodsPerChangeSet: -1"),
                "spec.rules[1].limits.maxPodsPerChangeSet: invalid u64 at line 31, column 30",
            ),
            (
                edited("maxTTL: 24h", "maxTTL: forever"),
                "spec.approvals.maxTTL: \"forever\" is not a duration",
            ),
            (
                edited("clockSkew: 60s", "clockSkew: 2h"),
                "spec.approvals.clockSkew: must be at most 1h",
            ),
            (
                edited(
                    "{matchLabels: {blastguard.io/tier: critical}}",
                    "{matchExpressions: [{key: tier, operator: Is}]}",
                ),
                "spec.rules[0].namespaceSelector.matchExpressions[0].operator: must be In, NotIn, Exists or DoesNotExist",
            ),
            (
                edited(
                    "{matchLabels: {blastguard.io/tier: critical}}",
                    "{matchExpressions: [{key: tier, operator: In}]}",
                ),
                "spec.rules[0].namespaceSelector.matchExpressions[0].values: In needs at least one value",
            ),
            (
                edited(
                    "annotations: [blastguard.io/ai-agent",
                    "annotations: [\"Bad Key!\"",
                ),
                "spec.provenance.annotations[0]: \"Bad Key!\"",
            ),
            (
                edited("namespaces: [\"*\"]", "namespaces: []"),
                "spec.rules[1]: matches no namespace",
            ),
            (
                edited(
                    "requiredApprovals: 2",
                    "requiredApprovals: 2\n      approvers: [{group: sre, count: 1}]",
                ),
                "spec.rules[0].approvers[0].group: unknown group \"sre\" (spec.approvals.groups has: none)",
            ),
            (
                edited(
                    "requiredApprovals: 2",
                    "requiredApprovals: 2\n      approvers: [{group: sre, count: 3}]",
                )
                .replace("clockSkew: 60s", "clockSkew: 60s\n    groups: {sre: [alice@example.com, bob@example.com]}"),
                "spec.rules[0].approvers[0].count: 3 is more than the 2 principal(s) of group \"sre\"",
            ),
            (
                edited(
                    "requiredApprovals: 2",
                    "requiredApprovals: 2\n      approvers: [{group: sre, count: 0}]",
                )
                .replace("clockSkew: 60s", "clockSkew: 60s\n    groups: {sre: [alice@example.com]}"),
                "spec.rules[0].approvers[0].count: must be at least 1",
            ),
            (
                edited(
                    "requiredApprovals: 2",
                    "requiredApprovals: 2\n      approvers: [{group: sre, count: 1}, {group: sre, count: 1}]",
                )
                .replace("clockSkew: 60s", "clockSkew: 60s\n    groups: {sre: [alice@example.com, bob@example.com]}"),
                "spec.rules[0].approvers[1].group: group \"sre\" is named twice",
            ),
            (
                edited("clockSkew: 60s", "clockSkew: 60s\n    groups: {sre: [\"*@example.com\"]}"),
                "spec.approvals.groups.sre[0]: \"*@example.com\" must be one principal",
            ),
            (
                edited("clockSkew: 60s", "clockSkew: 60s\n    groups: {sre: []}"),
                "spec.approvals.groups.sre: must list at least one principal",
            ),
            (
                edited("requiredApprovals: 2", "requiredApprovals: 2\n      approvers: [{group: sre}]"),
                "spec.rules[0].approvers[0]: missing field `count`",
            ),
            (
                "spec:\n  mode: \"open".to_string(),
                "spec: unclosed quote at line 2, column 9",
            ),
            (
                edited(
                    "mode: enforce ",
                    "onClusterUnavailable: maybe\n  mode: enforce ",
                ),
                "spec.onClusterUnavailable: unknown variant `maybe`, expected one of deny, allow at line 5",
            ),
            (
                "spec: [1]".to_string(),
                "spec: expected mapping start at line 1, column 7",
            ),
        ];
        for (yaml, want) in &cases {
            let got = problems(yaml);
            assert!(
                got.iter().any(|p| p.starts_with(want) || p.contains(want)),
                "want {want:?} in {got:?}"
            );
        }
    }

    #[test]
    fn every_semantic_problem_is_reported_not_just_the_first() {
        let yaml = edited("requiredApprovals: 2", "requiredApprovals: 0")
            .replace("# maxPercentAffected: 50", "maxPercentAffected: 101")
            .replace("maxTTL: 24h", "maxTTL: 0s");
        let got = problems(&yaml);
        assert_eq!(got.len(), 3, "{got:?}");
    }

    #[test]
    fn on_cluster_unavailable_is_optional_and_denies_by_default() {
        use crate::policy::{OnClusterUnavailable, Policy};
        let default = Policy::from_yaml(DEFAULT_POLICY_YAML, None).unwrap();
        assert_eq!(
            default.document.spec.on_cluster_unavailable,
            OnClusterUnavailable::Deny
        );
        let allow = edited(
            "mode: enforce ",
            "onClusterUnavailable: allow\n  mode: enforce ",
        );
        let allow = Policy::from_yaml(&allow, None).unwrap();
        assert_eq!(
            allow.document.spec.on_cluster_unavailable,
            OnClusterUnavailable::Allow
        );
    }

    #[test]
    fn embedded_policy_has_no_problems() {
        assert_eq!(problems(DEFAULT_POLICY_YAML), Vec::<String>::new());
    }
}
