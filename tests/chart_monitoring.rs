//! Alerts and the dashboard through promtool, and the NetworkPolicy that lets the
//! ServiceMonitor's scraper in.
//!
//! The chart's helpers (`helm template`, the rendered objects, matchConditions in CEL) are
//! in tests/common/chart.rs; helm and kubernetes-validate come from `.tools/bin`
//! (`scripts/install-tools.sh`, which `scripts/test.sh` runs), kubectl, openssl and
//! promtool from PATH.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::chart::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------
// Alerts and the dashboard, through promtool.

const ALERT_TESTS: &str = r#"
rule_files: [alerts.yaml]
evaluation_interval: 1m
tests:
  # One pod down of two: no alert. Both down: after 2 minutes.
  - interval: 1m
    input_series:
      - series: 'up{job="blastguard", namespace="blastguard", pod="blastguard-a"}'
        values: '1x10 0x20'
      - series: 'up{job="blastguard", namespace="blastguard", pod="blastguard-b"}'
        values: '1x15 0x15'
    alert_rule_test:
      - {eval_time: 14m, alertname: BlastguardWebhookUnavailable, exp_alerts: []}
      - {eval_time: 16m, alertname: BlastguardWebhookUnavailable, exp_alerts: []}
      - eval_time: 20m
        alertname: BlastguardWebhookUnavailable
        exp_alerts: [{exp_labels: {severity: critical}}]
  # Never scraped at all.
  - interval: 1m
    input_series:
      - series: 'up{job="other", namespace="blastguard", pod="other-a"}'
        values: '1x10'
    alert_rule_test:
      - eval_time: 5m
        alertname: BlastguardWebhookUnavailable
        exp_alerts: [{exp_labels: {severity: critical, job: blastguard, namespace: blastguard}}]
  # Denials: half a minute for two hours, then thirty a minute.
  - interval: 1m
    input_series:
      - series: 'blastguard_admission_requests_total{decision="deny", namespace="blastguard", pod="blastguard-a", operation="UPDATE", kind="Deployment", reason="max_pods_affected"}'
        values: '0+0.5x120 60+30x30'
      - series: 'blastguard_admission_requests_total{decision="allow", namespace="blastguard", pod="blastguard-a", operation="UPDATE", kind="Deployment", reason="within_limits"}'
        values: '0+100x150'
    alert_rule_test:
      - {eval_time: 110m, alertname: BlastguardDenialRateSpike, exp_alerts: []}
      - eval_time: 150m
        alertname: BlastguardDenialRateSpike
        exp_alerts: [{exp_labels: {severity: warning}}]
  # Certificates: one pod still serves one that expires in under 14 days.
  - interval: 1m
    input_series:
      - series: 'blastguard_tls_cert_not_after_seconds{namespace="blastguard", pod="blastguard-a"}'
        values: '2000000x30'
      - series: 'blastguard_tls_cert_not_after_seconds{namespace="blastguard", pod="blastguard-b"}'
        values: '1000000x30'
    alert_rule_test:
      - {eval_time: 5m, alertname: BlastguardCertificateExpiringSoon, exp_alerts: []}
      - eval_time: 20m
        alertname: BlastguardCertificateExpiringSoon
        exp_alerts: [{exp_labels: {severity: warning}}]
  - interval: 1m
    input_series:
      - series: 'blastguard_tls_cert_not_after_seconds{namespace="blastguard", pod="blastguard-a"}'
        values: '2000000x30'
    alert_rule_test:
      - {eval_time: 20m, alertname: BlastguardCertificateExpiringSoon, exp_alerts: []}
  # A pod on its last good policy.
  - interval: 1m
    input_series:
      - series: 'blastguard_policy_last_reload_success{namespace="blastguard", pod="blastguard-a"}'
        values: '1x5 0x20'
      - series: 'blastguard_policy_last_reload_success{namespace="blastguard", pod="blastguard-b"}'
        values: '1x25'
    alert_rule_test:
      - {eval_time: 8m, alertname: BlastguardPolicyReloadFailing, exp_alerts: []}
      - eval_time: 15m
        alertname: BlastguardPolicyReloadFailing
        exp_alerts: [{exp_labels: {severity: warning, pod: blastguard-a}}]
  # No usable allowed_signers on one pod (never loaded), and one with no key lines.
  - interval: 1m
    input_series:
      - series: 'blastguard_allowed_signers_loaded{namespace="blastguard", pod="blastguard-a"}'
        values: '0x20'
      - series: 'blastguard_allowed_signers_entries{namespace="blastguard", pod="blastguard-a"}'
        values: '0x20'
      - series: 'blastguard_allowed_signers_loaded{namespace="blastguard", pod="blastguard-b"}'
        values: '1x20'
      - series: 'blastguard_allowed_signers_entries{namespace="blastguard", pod="blastguard-b"}'
        values: '3x20'
    alert_rule_test:
      - {eval_time: 3m, alertname: BlastguardNoApprovers, exp_alerts: []}
      - eval_time: 10m
        alertname: BlastguardNoApprovers
        exp_alerts: [{exp_labels: {severity: critical, pod: blastguard-a}}]
  - interval: 1m
    input_series:
      - series: 'blastguard_allowed_signers_loaded{namespace="blastguard", pod="blastguard-a"}'
        values: '1x20'
      - series: 'blastguard_allowed_signers_entries{namespace="blastguard", pod="blastguard-a"}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 10m
        alertname: BlastguardNoApprovers
        exp_alerts: [{exp_labels: {severity: critical, pod: blastguard-a}}]
  # A certificate that does not reload.
  - interval: 1m
    input_series:
      - series: 'blastguard_tls_cert_reloads_total{result="failure", namespace="blastguard", pod="blastguard-b"}'
        values: '0x5 1x30'
      - series: 'blastguard_allowed_signers_reloads_total{result="success", namespace="blastguard", pod="blastguard-a"}'
        values: '0+1x35'
    alert_rule_test:
      - {eval_time: 4m, alertname: BlastguardReloadFailing, exp_alerts: []}
      - eval_time: 15m
        alertname: BlastguardReloadFailing
        exp_alerts: [{exp_labels: {severity: warning, pod: blastguard-b}}]
"#;

#[test]
fn alerts_pass_promtool_and_fire_when_they_should() {
    let objs = objects(&render(OPTIONAL_PARTS));
    let rule = object(&objs, "PrometheusRule", "blastguard");
    let groups = &rule["spec"]["groups"];
    let alerts: BTreeSet<&str> = groups
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .filter_map(|r| r["alert"].as_str())
        .collect();
    for required in [
        "BlastguardWebhookUnavailable",
        "BlastguardDenialRateSpike",
        "BlastguardCertificateExpiringSoon",
        "BlastguardPolicyReloadFailing",
        "BlastguardNoApprovers",
        "BlastguardWebhookConfigurationMissing",
        "BlastguardWebhookConfigurationChanged",
    ] {
        assert!(alerts.contains(required), "no {required} alert");
    }
    // Every alert links its section of docs/runbook.md, and the section exists.
    let runbook =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbook.md"))
            .expect("docs/runbook.md");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    for r in groups
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .filter(|r| r["alert"].is_string())
    {
        let alert = r["alert"].as_str().expect("alert");
        let url = r["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{alert} has no runbook_url"));
        let (page, anchor) = url.split_once('#').expect("an anchor");
        assert!(page.ends_with("docs/runbook.md"), "{alert}: {url}");
        assert_eq!(anchor, alert.to_lowercase(), "{alert}: {url}");
        assert!(
            anchors.contains(anchor),
            "docs/runbook.md has no section ## {alert}"
        );
    }

    alert_tests(&objs, |_| true, ALERT_TESTS);
}

#[test]
fn dashboard_queries_are_valid_promql_over_blastguard_metrics() {
    let objs = objects(&render(OPTIONAL_PARTS));
    let cm = object(&objs, "ConfigMap", "blastguard-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: Value =
        serde_json::from_str(cm["data"]["blastguard.json"].as_str().expect("json"))
            .expect("the dashboard is JSON");
    let mut rules = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            assert!(expr.contains("blastguard_"), "{expr}");
            // Grafana's variables, as Grafana substitutes them.
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "6h")
                .replace("$namespace", NAMESPACE);
            rules.push(json!({
                "record": format!("dashboard:panel_{}_{}", panel["id"], target["refId"].as_str().unwrap_or("A")),
                "expr": expr,
            }));
        }
    }
    assert!(rules.len() >= 10);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = serde_yaml::to_string(&json!({"groups": [{"name": "dashboard", "rules": rules}]}))
        .expect("YAML");
    std::fs::write(dir.path().join("dashboard.yaml"), file).expect("write");
    promtool(dir.path(), &["check", "rules", "dashboard.yaml"]);
}

/// With a ServiceMonitor and no metricsFrom, the NetworkPolicy lets the scraper in
/// (prometheus-operator's pods by default): a blocked scrape reads as an outage.
#[test]
fn network_policy_lets_the_service_monitors_scraper_in() {
    let admin_from = |values: &str| -> Vec<Value> {
        let objs = objects(&render(values));
        let np = object(&objs, "NetworkPolicy", "blastguard");
        np["spec"]["ingress"]
            .as_array()
            .expect("ingress")
            .iter()
            .filter(|rule| rule["ports"][0]["port"] == "admin")
            .flat_map(|rule| rule["from"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let scraper = json!({
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    });
    assert_eq!(
        admin_from("networkPolicy: {enabled: true}\nmetrics: {serviceMonitor: {enabled: true}}\n"),
        vec![scraper]
    );
    // Without a ServiceMonitor nothing reaches the admin port unless listed.
    assert!(admin_from("networkPolicy: {enabled: true}\n").is_empty());
    // An explicit list wins.
    let listed = json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}});
    assert_eq!(admin_from(OPTIONAL_PARTS), vec![listed]);
}
