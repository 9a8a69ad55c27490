//! Kubernetes label-selector semantics over a namespace's labels.

use std::collections::BTreeMap;

use super::LabelSelectorSpec;

/// Whether `labels` satisfy every requirement of `selector`, as the API server decides
/// it. An empty selector matches nothing here: a rule without namespaces and with `{}`
/// must not silently cover the whole cluster.
pub fn matches(selector: &LabelSelectorSpec, labels: &BTreeMap<String, String>) -> bool {
    if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
        return false;
    }
    let labels_ok = selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().all(|req| {
        let value = labels.get(&req.key);
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| req.values.contains(v)),
            "NotIn" => value.is_none_or(|v| !req.values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // Rejected when the policy is loaded; never match an unknown operator.
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::LabelRequirementSpec;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelRequirementSpec {
        LabelRequirementSpec {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn selector_table() {
        let tier = LabelSelectorSpec {
            match_labels: labels(&[("tier", "critical")]),
            match_expressions: vec![],
        };
        let expr = |r| LabelSelectorSpec {
            match_labels: BTreeMap::new(),
            match_expressions: vec![r],
        };
        let cases = [
            (tier.clone(), labels(&[("tier", "critical")]), true),
            (tier.clone(), labels(&[("tier", "low")]), false),
            (tier.clone(), labels(&[]), false),
            (
                expr(req("env", "In", &["prod", "stage"])),
                labels(&[("env", "prod")]),
                true,
            ),
            (
                expr(req("env", "In", &["prod"])),
                labels(&[("env", "dev")]),
                false,
            ),
            (expr(req("env", "NotIn", &["dev"])), labels(&[]), true),
            (
                expr(req("env", "NotIn", &["dev"])),
                labels(&[("env", "dev")]),
                false,
            ),
            (
                expr(req("env", "Exists", &[])),
                labels(&[("env", "")]),
                true,
            ),
            (
                expr(req("env", "DoesNotExist", &[])),
                labels(&[("env", "x")]),
                false,
            ),
            (LabelSelectorSpec::default(), labels(&[("a", "b")]), false),
        ];
        for (i, (selector, labels, want)) in cases.iter().enumerate() {
            assert_eq!(matches(selector, labels), *want, "case {i}");
        }
    }
}
