//! How YAML is read: serde-saphyr, set to read scalars as serde_yaml did (YAML 1.2).
//!
//! `yes`, `on` and `y` are strings, `0755` and `1_000` too when the type is open, so
//! moving off the deprecated serde_yaml changed no reading of a policy or manifest, and
//! digests computed by `check` from YAML still match the webhook's.

use serde_saphyr::{Budget, Options};

/// Options for a policy file: the parser's default budget (events, aliases, nesting
/// and documents bounded, so an alias bomb cannot exhaust the server on reload), and
/// errors on one line, for logs.
pub fn options() -> Options {
    let mut options = Options::default();
    options.with_snippet = false;
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options
}

/// Options for manifests given to `check` or `approve`: as [`options`], with counts
/// that grow with the input (a rendered chart holds thousands of documents; no count
/// can exceed the input's length without aliases, which stay bounded) and the nesting
/// serde_json allows (CRD schemas nest deeply).
pub fn manifest_options(text: &str) -> Options {
    let defaults = Budget::default();
    let at_least = |n: usize| n.max(text.len());
    let mut budget = defaults.clone();
    budget.max_documents = at_least(defaults.max_documents);
    budget.max_events = at_least(defaults.max_events);
    budget.max_nodes = at_least(defaults.max_nodes);
    budget.max_depth = 128;
    let mut options = options();
    options.budget = Some(budget);
    options
}

/// The parser's message on one line.
pub fn message(e: &serde_saphyr::Error) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    #[test]
    fn scalars_read_as_serde_yaml_read_them() {
        let text = "a: y\nb: on\nc: 0755\nd: 1_000\ne: true\nf: 12\ng: ~\nh: 1.5\n";
        let got: Value = serde_saphyr::from_str_with_options(text, super::options()).unwrap();
        assert_eq!(
            got,
            json!({"a": "y", "b": "on", "c": "0755", "d": "1_000", "e": true, "f": 12, "g": null, "h": 1.5})
        );
    }

    #[test]
    fn manifest_counts_grow_with_the_input() {
        let doc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        let text = vec![doc; 2000].join("---\n");
        let docs: Vec<Value> =
            serde_saphyr::from_multiple_with_options(&text, super::manifest_options(&text))
                .unwrap();
        assert_eq!(docs.len(), 2000);
    }

    #[test]
    fn an_alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let read =
            serde_saphyr::from_str_with_options::<Value>(&text, super::manifest_options(&text));
        assert!(read.is_err());
    }
}
