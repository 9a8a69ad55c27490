//! `blastguard check -f` reads no cluster: a rule's `namespaceSelector` is judged on the
//! labels of the Namespaces in its input (issue 10).

mod common;

fn manifest(labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: payments\n  labels: {labels}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: payments\n  \
         annotations: {{blastguard.io/ai-agent: claude-code}}\nspec:\n  replicas: 3\n  \
         selector: {{matchLabels: {{app: api}}}}\n  template:\n    metadata: {{labels: {{app: api}}}}\n    \
         spec: {{containers: [{{name: api, image: nginx}}]}}\n"
    )
}

fn check(labels: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.yaml");
    std::fs::write(&file, manifest(labels)).unwrap();
    let (status, stdout, stderr) =
        common::run_to_exit(&["check", "-f", file.to_str().unwrap(), "-o", "json"]);
    (status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

#[test]
fn namespace_selectors_see_the_labels_of_the_namespaces_in_the_input() {
    // The embedded policy's protected rule selects blastguard.io/tier: critical and
    // allows no pods without two approvals.
    let (code, out) = check("{blastguard.io/tier: critical}");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\"protected\""), "{out}");

    let (code, out) = check("{team: payments}");
    assert_eq!(code, 0, "the default rule admits 3 pods: {out}");
    assert!(!out.contains("\"protected\""), "{out}");
}
