//! The chart's approval inbox (docs/approvals.md, "The inbox") as `helm template`
//! renders it: the `ApprovalRequest` CRD with its status subresource and printer
//! columns, the server's Role, the approver and requester ClusterRoles and their
//! bindings from values, the serve flags, `notify.url` refused unless http(s), and the
//! waiting-request alert through promtool. The self-protection policy's part is in
//! tests/chart_self_protection.rs; the whole loop on a real cluster in
//! tests/e2e_inbox.rs.

mod common;

use std::collections::BTreeSet;

use common::chart::{NAMESPACE, alert_tests, chart_dir, find, helm_template, object, objects};
use common::repo;
use serde_json::{Value, json};

/// `helm template` of the chart with `values`, the CRDs included.
fn helm(values: &str) -> std::process::Output {
    helm_template(chart_dir(), NAMESPACE, values, &["--include-crds"])
}

/// The rendered objects, the test failing if rendering does.
fn render(values: &str) -> Vec<Value> {
    objects(&common::chart::render(values))
}

/// (apiGroups, resources, verbs) of a role, each sorted.
fn rules(role: &Value) -> BTreeSet<(String, String, String)> {
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let join = |v: &Value| {
                let mut items: Vec<String> = v
                    .as_array()
                    .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                items.sort();
                items.join(",")
            };
            (
                join(&r["apiGroups"]),
                join(&r["resources"]),
                join(&r["verbs"]),
            )
        })
        .collect()
}

#[test]
fn the_crd_keeps_signatures_in_the_status_and_prints_the_inbox_columns() {
    let objs = render("");
    let crd = object(
        &objs,
        "CustomResourceDefinition",
        "approvalrequests.blastguard.io",
    );
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["kind"], "ApprovalRequest");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    // Signatures and rejections only through /status: a create cannot set them.
    assert_eq!(version["subresources"], json!({"status": {}}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Target",
            "Operation",
            "Pods",
            "Requester",
            "Rule",
            "State",
            "Signed",
            "Age",
            "Expires"
        ]
    );
    let schema = &version["schema"]["openAPIV3Schema"]["properties"];
    assert_eq!(schema["status"]["properties"]["signatures"]["maxItems"], 20);
    assert_eq!(
        schema["spec"]["properties"]["object"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
}

#[test]
fn approvers_sign_through_status_and_requesters_only_create() {
    let objs = render("");
    // The server: its records in the release namespace only.
    let server = object(&objs, "Role", "blastguard-approval-requests");
    assert_eq!(server["metadata"]["namespace"], "blastguard");
    assert_eq!(
        rules(server),
        BTreeSet::from([
            (
                "blastguard.io".into(),
                "approvalrequests".into(),
                "create,delete,get,list,patch,update".into()
            ),
            (
                "blastguard.io".into(),
                "approvalrequests/status".into(),
                "get,update".into()
            ),
        ])
    );
    let approver = object(&objs, "ClusterRole", "blastguard-approver");
    assert_eq!(
        rules(approver),
        BTreeSet::from([
            (
                "blastguard.io".into(),
                "approvalrequests".into(),
                "get,list,watch".into()
            ),
            (
                "blastguard.io".into(),
                "approvalrequests/status".into(),
                "get,patch,update".into()
            ),
            ("".into(), "configmaps".into(), "get".into()),
        ])
    );
    assert_eq!(
        approver["rules"][2]["resourceNames"],
        json!(["blastguard-policy", "blastguard-allowed-signers"])
    );
    let requester = object(&objs, "ClusterRole", "blastguard-requester");
    assert_eq!(
        rules(requester),
        BTreeSet::from([(
            "blastguard.io".into(),
            "approvalrequests".into(),
            "create,get,list,watch".into()
        )])
    );
    // No one is bound until the values say so.
    assert!(find(&objs, "RoleBinding", "blastguard-approvers").is_none());
    let bound = render(
        "inbox:\n  approvers: {users: [alice@example.com], groups: [sre]}\n  requesters: {serviceAccounts: [{namespace: ai-agents, name: bot}]}\n",
    );
    let approvers = object(&bound, "RoleBinding", "blastguard-approvers");
    assert_eq!(approvers["metadata"]["namespace"], "blastguard");
    assert_eq!(approvers["roleRef"]["name"], "blastguard-approver");
    assert_eq!(
        approvers["subjects"],
        json!([
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice@example.com"},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "sre"}
        ])
    );
    let requesters = object(&bound, "RoleBinding", "blastguard-requesters");
    assert_eq!(
        requesters["subjects"],
        json!([{"kind": "ServiceAccount", "name": "bot", "namespace": "ai-agents"}])
    );
    // Off: no roles, and the server is told.
    let off = render("inbox: {enabled: false}\n");
    assert!(find(&off, "ClusterRole", "blastguard-approver").is_none());
    assert!(find(&off, "Role", "blastguard-approval-requests").is_none());
}

#[test]
fn the_server_gets_the_inbox_flags_and_notify_url_must_be_http() {
    let args = |values: &str| -> Vec<String> {
        let objs = render(values);
        object(&objs, "Deployment", "blastguard")["spec"]["template"]["spec"]["containers"][0]
            ["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    let default = args("");
    for flag in [
        "--inbox=true",
        "--requests-per-requester=20",
        "--requests-max=500",
    ] {
        assert!(default.contains(&flag.to_string()), "{flag}: {default:?}");
    }
    assert!(!default.iter().any(|a| a.starts_with("--notify-url")));
    let notified = args("notify: {url: 'https://hooks.slack.com/services/T/B/X'}\n");
    assert!(notified.contains(&"--notify-url=https://hooks.slack.com/services/T/B/X".to_string()));
    for bad in ["ftp://example.com", "hooks.slack.com/x", "https://a b"] {
        let out = helm(&format!("notify: {{url: '{bad}'}}\n"));
        assert!(!out.status.success(), "{bad} was accepted");
    }
}

const ALERT_TESTS: &str = r#"
rule_files: [alerts.yaml]
evaluation_interval: 1m
tests:
  # Two replicas: one sees a request waiting 50 minutes, then past the hour.
  - interval: 1m
    input_series:
      - series: 'blastguard_approval_request_oldest_open_seconds{namespace="blastguard", pod="blastguard-a"}'
        values: '3000+60x30'
      - series: 'blastguard_approval_request_oldest_open_seconds{namespace="blastguard", pod="blastguard-b"}'
        values: '0x30'
    alert_rule_test:
      - {eval_time: 10m, alertname: BlastguardApprovalRequestWaiting, exp_alerts: []}
      - eval_time: 20m
        alertname: BlastguardApprovalRequestWaiting
        exp_alerts: [{exp_labels: {severity: warning}}]
  # Approved in time: never.
  - interval: 1m
    input_series:
      - series: 'blastguard_approval_request_oldest_open_seconds{namespace="blastguard", pod="blastguard-a"}'
        values: '3000+60x5 0x25'
    alert_rule_test:
      - {eval_time: 25m, alertname: BlastguardApprovalRequestWaiting, exp_alerts: []}
"#;

#[test]
fn the_waiting_request_alert_fires_after_an_hour_and_has_a_runbook() {
    let objs = render("metrics:\n  prometheusRule: {enabled: true}\n");
    let kept = alert_tests(
        &objs,
        |alert| alert == "BlastguardApprovalRequestWaiting",
        ALERT_TESTS,
    );
    assert_eq!(kept.len(), 1);
    let url = kept[0]["annotations"]["runbook_url"].as_str().unwrap();
    assert!(url.ends_with("#blastguardapprovalrequestwaiting"), "{url}");
    let runbook = std::fs::read_to_string(repo().join("docs/runbook.md")).unwrap();
    assert!(runbook.contains("\n## BlastguardApprovalRequestWaiting\n"));
}
