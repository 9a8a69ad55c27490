//! The chart's self-protection (docs/design.md "Install", issue 19) as rendered by `helm
//! template`: the ValidatingAdmissionPolicy and its binding, the read of the webhook
//! configuration and its alerts, and the NetworkPolicy's CIDRs.
//!
//! The policy's CEL is evaluated here with the `cel` crate, with the variables the API
//! server gives a ValidatingAdmissionPolicy (`request`, and `variables` evaluated in
//! order): a stand-in for the API server, for a fast table of cases. The API server's
//! own evaluation of the same policy is tested in tests/e2e_self_protection.rs.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::chart::{NAMESPACE, alert_tests, chart_dir, find, helm_template, object, objects};
use serde_json::{Value, json};

const VAP: &str = "blastguard-self-protection";

/// The rendered objects, the test failing if rendering does.
fn render(values: &str) -> Vec<Value> {
    objects(&common::chart::render(values))
}

// ---------------------------------------------------------------------------------
// The policy's CEL, evaluated as the API server evaluates a ValidatingAdmissionPolicy.

struct Policy {
    env: Arc<cel::Env>,
    conditions: Vec<(String, cel::Program)>,
    variables: Vec<(String, cel::Program)>,
    validations: Vec<(cel::Program, String)>,
}

impl Policy {
    fn of(objs: &[Value]) -> Policy {
        let env = Arc::new(cel::Env::stdlib());
        let vap = object(objs, "ValidatingAdmissionPolicy", VAP);
        let compile = |what: &str, e: &Value| -> cel::Program {
            let text = e.as_str().expect("an expression");
            env.compile(text)
                .unwrap_or_else(|err| panic!("{what} does not compile: {err}\n{text}"))
        };
        let spec = &vap["spec"];
        let named = |list: &Value, what: &str| -> Vec<(String, cel::Program)> {
            list.as_array()
                .expect(what)
                .iter()
                .map(|c| {
                    let name = c["name"].as_str().expect("name").to_string();
                    let program = compile(&name, &c["expression"]);
                    (name, program)
                })
                .collect()
        };
        // The API server refuses a variable named by a CEL reserved word (the cel crate
        // does not).
        const RESERVED: &[&str] = &[
            "as",
            "break",
            "const",
            "continue",
            "else",
            "false",
            "for",
            "function",
            "if",
            "import",
            "in",
            "let",
            "loop",
            "namespace",
            "null",
            "package",
            "return",
            "true",
            "var",
            "void",
            "while",
        ];
        for v in spec["variables"].as_array().expect("variables") {
            let name = v["name"].as_str().expect("name");
            assert!(
                !RESERVED.contains(&name),
                "variable {name} is a CEL reserved word"
            );
        }
        Policy {
            conditions: named(&spec["matchConditions"], "matchConditions"),
            variables: named(&spec["variables"], "variables"),
            validations: spec["validations"]
                .as_array()
                .expect("validations")
                .iter()
                .map(|v| {
                    (
                        compile("a validation", &v["expression"]),
                        v["message"].as_str().expect("message").to_string(),
                    )
                })
                .collect(),
            env: env.clone(),
        }
    }

    /// `Ok(None)`: admitted (not matched, or every validation holds); `Ok(Some(msg))`:
    /// denied; `Err`: an evaluation error (a defect: under failurePolicy Fail it denies
    /// whoever is matched).
    fn decide(&self, request: &Value) -> Result<Option<String>, String> {
        let eval = |program: &cel::Program, vars: &HashMap<String, cel::Value>| {
            let mut ctx = cel::Context::with_env(self.env.clone());
            ctx.add_variable("request", request)
                .map_err(|e| format!("{e:?}"))?;
            ctx.add_variable_from_value("variables", vars.clone());
            program.execute(&ctx).map_err(|e| format!("{e:?}"))
        };
        let mut vars = HashMap::new();
        for (name, program) in &self.conditions {
            match eval(program, &vars)? {
                cel::Value::Bool(true) => {}
                cel::Value::Bool(false) => return Ok(None),
                other => return Err(format!("{name} gave {other:?}")),
            }
        }
        for (name, program) in &self.variables {
            let value = eval(program, &vars).map_err(|e| format!("variable {name}: {e}"))?;
            vars.insert(name.clone(), value);
        }
        for (program, message) in &self.validations {
            match eval(program, &vars)? {
                cel::Value::Bool(true) => {}
                cel::Value::Bool(false) => return Ok(Some(message.clone())),
                other => return Err(format!("a validation gave {other:?}")),
            }
        }
        Ok(None)
    }
}

/// An AdmissionRequest as the API server builds it: `namespace` and `name` absent when
/// empty, `groups` absent when none.
fn request(
    user: &str,
    groups: &[&str],
    op: &str,
    resource: (&str, &str),
    ns: &str,
    name: &str,
) -> Value {
    let mut r = json!({
        "uid": "0",
        "kind": {"group": resource.0, "version": "v1", "kind": "X"},
        "resource": {"group": resource.0, "version": "v1", "resource": resource.1},
        "operation": op,
        "userInfo": {"username": user},
    });
    if !groups.is_empty() {
        r["userInfo"]["groups"] = json!(groups);
    }
    if !ns.is_empty() {
        r["namespace"] = json!(ns);
    }
    if !name.is_empty() {
        r["name"] = json!(name);
    }
    r
}

const BOT: &str = "system:serviceaccount:ai-agents:bot";
const ALICE: &str = "alice@example.com";
const CORE: &str = "";
const ADMISSION: &str = "admissionregistration.k8s.io";

#[test]
fn the_policy_keeps_ai_identities_away_from_blastguards_own_objects_only() {
    let objs = render("");
    let policy = Policy::of(&objs);
    // (what, request, denied)
    // One line a case: the table reads as the list of what is and is not guarded.
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, bool)> = vec![
        ("rewrite allowed_signers", request(BOT, &[], "UPDATE", (CORE, "configmaps"), NAMESPACE, "blastguard-allowed-signers"), true),
        ("rewrite the policy", request(BOT, &[], "UPDATE", (CORE, "configmaps"), NAMESPACE, "blastguard-policy"), true),
        ("a Deployment in the release namespace", request(BOT, &[], "CREATE", ("apps", "deployments"), NAMESPACE, "big"), true),
        ("a generated name in the release namespace", request(BOT, &[], "CREATE", (CORE, "pods"), NAMESPACE, ""), true),
        ("delete a ChangeSet record", request(BOT, &[], "DELETE", ("blastguard.io", "changesets"), NAMESPACE, "agent-bot"), true),
        ("scale blastguard to 0", request(BOT, &[], "UPDATE", ("apps", "deployments/scale"), NAMESPACE, "blastguard"), true),
        ("delete the release Namespace (as cluster-scoped)", request(BOT, &[], "DELETE", (CORE, "namespaces"), "", NAMESPACE), true),
        ("delete the release Namespace (namespace set)", request(BOT, &[], "DELETE", (CORE, "namespaces"), NAMESPACE, NAMESPACE), true),
        ("label the release Namespace", request(BOT, &[], "UPDATE", (CORE, "namespaces"), "", NAMESPACE), true),
        ("edit the webhook configuration", request(BOT, &[], "UPDATE", (ADMISSION, "validatingwebhookconfigurations"), "", "blastguard"), true),
        ("delete the webhook configuration", request(BOT, &[], "DELETE", (ADMISSION, "validatingwebhookconfigurations"), "", "blastguard"), true),
        ("delete the ChangeSet CRD", request(BOT, &[], "DELETE", ("apiextensions.k8s.io", "customresourcedefinitions"), "", "changesets.blastguard.io"), true),
        ("create another blastguard.io CRD", request(BOT, &[], "CREATE", ("apiextensions.k8s.io", "customresourcedefinitions"), "", "approvals.blastguard.io"), true),
        // The policy says so, though the API server never evaluates admission policies
        // for these two (tests/e2e_self_protection.rs): RBAC has to keep agents away.
        ("delete the policy", request(BOT, &[], "DELETE", (ADMISSION, "validatingadmissionpolicies"), "", VAP), true),
        ("delete the binding", request(BOT, &[], "DELETE", (ADMISSION, "validatingadmissionpolicybindings"), "", VAP), true),
        ("delete the server's ClusterRoleBinding", request(BOT, &[], "DELETE", ("rbac.authorization.k8s.io", "clusterrolebindings"), "", "blastguard-cluster-state"), true),
        // Everything else is the webhook's to judge, or nobody's.
        ("a ConfigMap elsewhere", request(BOT, &[], "UPDATE", (CORE, "configmaps"), "team-a", "blastguard-policy"), false),
        ("a Deployment elsewhere", request(BOT, &[], "CREATE", ("apps", "deployments"), "team-a", "web"), false),
        ("another Namespace", request(BOT, &[], "DELETE", (CORE, "namespaces"), "", "team-a"), false),
        ("another webhook configuration", request(BOT, &[], "DELETE", (ADMISSION, "validatingwebhookconfigurations"), "", "other"), false),
        ("another CRD", request(BOT, &[], "DELETE", ("apiextensions.k8s.io", "customresourcedefinitions"), "", "widgets.example.com"), false),
        ("a CRD whose name only contains blastguard.io", request(BOT, &[], "DELETE", ("apiextensions.k8s.io", "customresourcedefinitions"), "", "blastguard.io.example.com"), false),
        ("another ClusterRole", request(BOT, &[], "DELETE", ("rbac.authorization.k8s.io", "clusterroles"), "", "view"), false),
        // People, blastguard itself and the cluster's controllers are never matched.
        ("a person rewrites allowed_signers", request(ALICE, &["system:authenticated"], "UPDATE", (CORE, "configmaps"), NAMESPACE, "blastguard-allowed-signers"), false),
        ("a person deletes the release Namespace", request(ALICE, &[], "DELETE", (CORE, "namespaces"), "", NAMESPACE), false),
        ("a person deletes the webhook configuration", request(ALICE, &[], "DELETE", (ADMISSION, "validatingwebhookconfigurations"), "", "blastguard"), false),
        ("blastguard writes a record", request("system:serviceaccount:blastguard:blastguard", &[], "UPDATE", ("blastguard.io", "changesets"), NAMESPACE, "agent-bot"), false),
        ("a request without a username", request("", &[], "UPDATE", (CORE, "configmaps"), NAMESPACE, "x"), false),
    ];
    for (what, req, denied) in &cases {
        let mut req = req.clone();
        if req["userInfo"]["username"] == "" {
            req["userInfo"].as_object_mut().unwrap().remove("username");
        }
        let decision = policy
            .decide(&req)
            .unwrap_or_else(|e| panic!("{what}: the policy cannot be evaluated: {e}"));
        assert_eq!(decision.is_some(), *denied, "{what}: {decision:?}");
        if let Some(message) = decision {
            assert!(
                message.contains("AI identities may not"),
                "{what}: {message}"
            );
        }
    }
}

/// The approval inbox (docs/approvals.md): an AI identity may create an
/// ApprovalRequest in the release namespace, its one write there; never update,
/// delete or write its status (signatures, rejections). With the inbox off, not even
/// that.
#[test]
fn ai_identities_may_ask_for_an_approval_but_never_complete_one() {
    let requests = ("blastguard.io", "approvalrequests");
    let status = |op: &str| {
        let mut r = request(
            BOT,
            &[],
            op,
            requests,
            NAMESPACE,
            "deployment-prod-api-apply-0",
        );
        r["subResource"] = json!("status");
        r
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, bool)> = vec![
        ("create a request", request(BOT, &[], "CREATE", requests, NAMESPACE, "deployment-prod-api-apply-0"), false),
        ("update a request", request(BOT, &[], "UPDATE", requests, NAMESPACE, "deployment-prod-api-apply-0"), true),
        ("delete a request", request(BOT, &[], "DELETE", requests, NAMESPACE, "deployment-prod-api-apply-0"), true),
        ("sign a request (status)", status("UPDATE"), true),
        ("create through status", status("CREATE"), true),
        ("create a ChangeSet", request(BOT, &[], "CREATE", ("blastguard.io", "changesets"), NAMESPACE, "x"), true),
        ("create a SpentApproval", request(BOT, &[], "CREATE", ("blastguard.io", "spentapprovals"), NAMESPACE, "x"), true),
        ("a person signs", { let mut r = status("UPDATE"); r["userInfo"]["username"] = json!(ALICE); r }, false),
    ];
    let on = Policy::of(&render(""));
    let off = Policy::of(&render("inbox: {enabled: false}\n"));
    for (what, req, denied) in &cases {
        let decision = on
            .decide(req)
            .unwrap_or_else(|e| panic!("{what}: the policy cannot be evaluated: {e}"));
        assert_eq!(decision.is_some(), *denied, "{what}: {decision:?}");
    }
    let create = &cases[0].1;
    assert!(
        off.decide(create).unwrap().is_some(),
        "without the inbox an AI may not create a request either"
    );
}

#[test]
fn the_policy_follows_the_identity_values_and_spares_blastguard_and_the_controllers() {
    // Every service account an AI identity, and an AI group: blastguard's own account
    // and the controllers' must still run the release.
    let objs = render(
        "policy:\n  provenance:\n    users: [\"system:serviceaccount:*\"]\n    groups: [ai-agents]\n",
    );
    let policy = Policy::of(&objs);
    let record = |user: &str, groups: &[&str]| {
        request(
            user,
            groups,
            "UPDATE",
            ("blastguard.io", "changesets"),
            NAMESPACE,
            "x",
        )
    };
    let denied = |r: Value| policy.decide(&r).expect("evaluates").is_some();
    assert!(denied(record("system:serviceaccount:team-a:deployer", &[])));
    assert!(!denied(record(
        "system:serviceaccount:blastguard:blastguard",
        &[]
    )));
    assert!(!denied(record(
        "system:serviceaccount:kube-system:replicaset-controller",
        &[]
    )));
    assert!(!denied(record("system:kube-controller-manager", &[])));
    assert!(denied(record(ALICE, &["devs", "ai-agents"])));
    assert!(!denied(record(ALICE, &["devs"])));

    // Groups only.
    let objs = render("policy:\n  provenance:\n    users: []\n    groups: [\"ai-*\"]\n");
    let policy = Policy::of(&objs);
    assert!(
        policy
            .decide(&record(ALICE, &["ai-team"]))
            .unwrap()
            .is_some()
    );
    assert!(policy.decide(&record(BOT, &[])).unwrap().is_none());

    // No identity named, or switched off: nothing to keep out, nothing rendered.
    for values in [
        "policy:\n  provenance:\n    users: []\n    groups: []\n",
        "selfProtection: {enabled: false}\n",
    ] {
        let objs = render(values);
        assert!(
            find(&objs, "ValidatingAdmissionPolicy", VAP).is_none(),
            "{values}"
        );
        assert!(
            find(&objs, "ValidatingAdmissionPolicyBinding", VAP).is_none(),
            "{values}"
        );
    }

    // The binding: every request the policy matches, denied.
    let objs = render("");
    let binding = object(&objs, "ValidatingAdmissionPolicyBinding", VAP);
    assert_eq!(binding["spec"]["policyName"], VAP);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert!(binding["spec"].get("matchResources").is_none());
    let vap = object(&objs, "ValidatingAdmissionPolicy", VAP);
    assert_eq!(vap["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(vap["spec"]["failurePolicy"], "Fail");
}

#[test]
fn globs_translate_to_cel_that_matches_as_the_server_does() {
    let globs = [
        "system:serviceaccount:ai-agents:*",
        "*:bot",
        "*agent*",
        "exact-user",
        "ai-?",
        "system:serviceaccount:*:agent-*",
        "*",
        "**",
    ];
    let users = [
        "system:serviceaccount:ai-agents:bot",
        "system:serviceaccount:team:agent-7",
        "system:serviceaccount:team:bot",
        "my-agent-x",
        "exact-user",
        "exact-user2",
        "ai-x",
        "ai-xy",
        "alice",
        "a\nb",
    ];
    for glob in globs {
        let values = format!(
            "policy:\n  provenance:\n    users: [{}]\n    groups: []\n",
            serde_json::to_string(glob).unwrap()
        );
        let objs = render(&values);
        let vap = object(&objs, "ValidatingAdmissionPolicy", VAP);
        let expr = vap["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap();
        // The common forms are plain string functions, not regexes.
        let plain = match glob {
            "system:serviceaccount:ai-agents:*" => Some(".startsWith("),
            "*:bot" => Some(".endsWith("),
            "*agent*" => Some(".contains("),
            "exact-user" => Some(" == "),
            _ => None,
        };
        if let Some(f) = plain {
            assert!(
                expr.contains(f) && !expr.contains(".matches("),
                "{glob}: {expr}"
            );
        }
        let policy = Policy::of(&objs);
        for user in users {
            let req = request(user, &[], "DELETE", (CORE, "namespaces"), "", NAMESPACE);
            let cel = policy.decide(&req).expect("evaluates").is_some();
            let server = wildmatch::WildMatch::new(glob).matches(user);
            assert_eq!(cel, server, "glob {glob:?} on {user:?}: {expr}");
        }
    }
    // A pattern that can only be a mistake is refused by helm with the reason.
    let out = helm_template(
        chart_dir(),
        NAMESPACE,
        "policy:\n  provenance:\n    users: [\"\"]\n",
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("users"), "{stderr}");
}

// ---------------------------------------------------------------------------------
// The watch of the webhook configuration: its flag, its RBAC, its alerts.

#[test]
fn the_server_reads_its_own_webhook_configuration_and_nothing_more() {
    let objs = render("");
    let args = object(&objs, "Deployment", "blastguard")["spec"]["template"]["spec"]["containers"]
        [0]["args"]
        .as_array()
        .expect("args")
        .clone();
    assert!(
        args.contains(&json!("--webhook-configuration=blastguard")),
        "{args:?}"
    );
    let role = object(&objs, "ClusterRole", "blastguard-webhook-configuration");
    assert_eq!(
        role["rules"],
        json!([{
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations"],
            "resourceNames": ["blastguard"],
            "verbs": ["get", "list", "watch"],
        }])
    );
    let binding = object(
        &objs,
        "ClusterRoleBinding",
        "blastguard-webhook-configuration",
    );
    assert_eq!(
        binding["roleRef"]["name"],
        "blastguard-webhook-configuration"
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "blastguard", "namespace": "blastguard"}])
    );
    // Without the cluster state there is no token to watch with.
    let memory = render("cluster: {enabled: false}\n");
    assert!(find(&memory, "ClusterRole", "blastguard-webhook-configuration").is_none());
}

const ALERT_TESTS: &str = r#"
rule_files: [alerts.yaml]
evaluation_interval: 1m
tests:
  # Deleted at minute 5 as both pods see it; restored at minute 20.
  - interval: 1m
    input_series:
      - series: 'blastguard_webhook_configuration_present{name="blastguard", namespace="blastguard", pod="blastguard-a"}'
        values: '1x4 0x15 1x20'
      - series: 'blastguard_webhook_configuration_present{name="blastguard", namespace="blastguard", pod="blastguard-b"}'
        values: '1x4 0x15 1x20'
      - series: 'blastguard_webhook_configuration_changes_total{change="deleted", name="blastguard", namespace="blastguard", pod="blastguard-a"}'
        values: '0x4 1x35'
      - series: 'blastguard_webhook_configuration_changes_total{change="deleted", name="blastguard", namespace="blastguard", pod="blastguard-b"}'
        values: '0x4 1x35'
    alert_rule_test:
      - {eval_time: 4m, alertname: BlastguardWebhookConfigurationMissing, exp_alerts: []}
      - eval_time: 8m
        alertname: BlastguardWebhookConfigurationMissing
        exp_alerts: [{exp_labels: {severity: critical, name: blastguard}}]
      - {eval_time: 25m, alertname: BlastguardWebhookConfigurationMissing, exp_alerts: []}
      - {eval_time: 4m, alertname: BlastguardWebhookConfigurationChanged, exp_alerts: []}
      - eval_time: 8m
        alertname: BlastguardWebhookConfigurationChanged
        exp_alerts: [{exp_labels: {severity: warning, name: blastguard}}]
      - {eval_time: 30m, alertname: BlastguardWebhookConfigurationChanged, exp_alerts: []}
  # A CA bundle rotation is not a change worth an alert; a modification is.
  - interval: 1m
    input_series:
      - series: 'blastguard_webhook_configuration_present{name="blastguard", namespace="blastguard", pod="blastguard-a"}'
        values: '1x30'
      - series: 'blastguard_webhook_configuration_changes_total{change="ca_bundle", name="blastguard", namespace="blastguard", pod="blastguard-a"}'
        values: '0x4 1x25'
      - series: 'blastguard_webhook_configuration_changes_total{change="modified", name="blastguard", namespace="blastguard", pod="blastguard-a"}'
        values: '0x14 1x15'
    alert_rule_test:
      - {eval_time: 10m, alertname: BlastguardWebhookConfigurationChanged, exp_alerts: []}
      - {eval_time: 10m, alertname: BlastguardWebhookConfigurationMissing, exp_alerts: []}
      - eval_time: 16m
        alertname: BlastguardWebhookConfigurationChanged
        exp_alerts: [{exp_labels: {severity: warning, name: blastguard}}]
"#;

#[test]
fn webhook_configuration_alerts_fire_when_they_should() {
    let objs = render("metrics:\n  prometheusRule: {enabled: true}\n");
    let kept = alert_tests(
        &objs,
        |alert| alert.starts_with("BlastguardWebhookConfiguration"),
        ALERT_TESTS,
    );
    assert_eq!(kept.len(), 2, "the two alerts of the webhook configuration");
}

// ---------------------------------------------------------------------------------
// The NetworkPolicy.

#[test]
fn the_network_policy_admits_only_the_listed_cidrs_to_the_webhook_port() {
    let webhook_rule = |values: &str| -> Value {
        let objs = render(values);
        let np = object(&objs, "NetworkPolicy", "blastguard");
        np["spec"]["ingress"]
            .as_array()
            .expect("ingress")
            .iter()
            .find(|r| r["ports"][0]["port"] == "webhook")
            .expect("a webhook rule")
            .clone()
    };
    // Default: open to every peer, as before.
    assert!(
        webhook_rule("networkPolicy: {enabled: true}\n")
            .get("from")
            .is_none()
    );
    let listed = webhook_rule(
        "networkPolicy:\n  enabled: true\n  webhookFromCIDRs: [10.0.0.10/32, \"fd00:10::/64\"]\n",
    );
    assert_eq!(
        listed["from"],
        json!([{"ipBlock": {"cidr": "10.0.0.10/32"}}, {"ipBlock": {"cidr": "fd00:10::/64"}}])
    );
    assert_eq!(
        listed["ports"],
        json!([{"port": "webhook", "protocol": "TCP"}])
    );
    // An address without its prefix length is refused, not read as a host.
    let out = helm_template(
        chart_dir(),
        NAMESPACE,
        "networkPolicy:\n  enabled: true\n  webhookFromCIDRs: [10.0.0.10]\n",
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("webhookFromCIDRs"));
}
