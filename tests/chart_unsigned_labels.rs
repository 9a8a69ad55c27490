//! The chart refuses, at `helm template`/`helm install`, an unsigned label
//! (`policy.approvals.unsignedLabels`) that a rule's namespaceSelector reads: left out
//! of the digest it could be changed under an approval, and it picks the rule. The
//! server refuses the same policy (src/policy/validate.rs); this is the install-time
//! refusal, before a pod ever loads it. Real `helm`.

mod common;

use common::chart::{NAMESPACE, chart_dir, helm_template, text};

/// Values with one rule selected by `selector` and `unsigned` left out of the digest.
fn values(selector: &str, unsigned: &str) -> String {
    format!(
        "policy:\n  rules:\n    - name: critical\n      namespaceSelector: {selector}\n      limits: {{maxPodsAffected: 10}}\n  approvals:\n    maxTTL: 24h\n    clockSkew: 60s\n    unsignedLabels: {unsigned}\n"
    )
}

/// `helm template` of the chart with `values`: whether it rendered, and stderr.
fn template(values: &str) -> (bool, String) {
    let out = helm_template(chart_dir(), NAMESPACE, values, &[]);
    (out.status.success(), text(&out.stderr))
}

#[test]
fn an_unsigned_label_a_namespace_selector_reads_is_refused_at_install() {
    for (selector, unsigned, covered) in [
        (
            "{matchLabels: {example.com/tier: critical}}",
            "[\"example.com/tier\"]",
            "example.com/tier",
        ),
        (
            "{matchLabels: {example.com/tier: critical}}",
            "[\"team\", \"example.com/*\"]",
            "example.com/tier",
        ),
        (
            "{matchExpressions: [{key: tier, operator: In, values: [critical]}]}",
            "[\"tier\"]",
            "tier",
        ),
    ] {
        let (ok, stderr) = template(&values(selector, unsigned));
        assert!(!ok, "{selector} with {unsigned} rendered");
        assert!(
            stderr.contains(&format!("covers label \"{covered}\""))
                && stderr.contains("policy.rules[0].namespaceSelector"),
            "{stderr}"
        );
    }
}

#[test]
fn unsigned_labels_the_selectors_do_not_read_render() {
    for (selector, unsigned) in [
        (
            "{matchLabels: {example.com/tier: critical}}",
            "[\"kustomize.toolkit.fluxcd.io/*\"]",
        ),
        // A domain that merely shares a prefix with the selector's key is another key.
        ("{matchLabels: {tier: critical}}", "[\"tier-owner\"]"),
    ] {
        let (ok, stderr) = template(&values(selector, unsigned));
        assert!(ok, "{selector} with {unsigned}: {stderr}");
    }
}
