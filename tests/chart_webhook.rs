//! The chart's ValidatingWebhookConfiguration: the contract it follows (failurePolicy,
//! timeouts, namespaces left out), rules that send every kind and subresource the engine
//! judges and nothing else, `webhook.url` for a webhook outside the cluster, and the
//! NOTES that try an AI change through it.
//!
//! The chart's helpers (`helm template`, the rendered objects, matchConditions in CEL) are
//! in tests/common/chart.rs; helm and kubernetes-validate come from `.tools/bin`
//! (`scripts/install-tools.sh`, which `scripts/test.sh` runs), kubectl, openssl and
//! promtool from PATH.

mod common;

use std::collections::BTreeSet;

use common::chart::*;
use common::review::Request;
use common::tool;
use serde_json::json;

// ---------------------------------------------------------------------------------
// The webhook configuration.

#[test]
fn webhook_configuration_follows_the_contract() {
    let objs = objects(&render(""));
    let vwc = webhook_config(&objs);
    let webhooks = vwc.webhooks.expect("webhooks");
    assert_eq!(webhooks.len(), 1);
    let w = &webhooks[0];
    assert_eq!(w.name, "validate.blastguard.io");
    assert_eq!(w.admission_review_versions, vec!["v1".to_string()]);
    assert_eq!(w.side_effects, "NoneOnDryRun");
    assert_eq!(w.timeout_seconds, Some(3));
    assert_eq!(w.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(w.match_policy.as_deref(), Some("Equivalent"));

    // The Service it calls is the one rendered, on the pods' webhook port.
    let svc = w.client_config.service.as_ref().expect("service reference");
    assert_eq!(
        (svc.name.as_str(), svc.namespace.as_str()),
        ("blastguard", NAMESPACE)
    );
    assert_eq!(svc.path.as_deref(), Some("/validate"));
    let service = object(&objs, "Service", &svc.name);
    let port = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["port"] == json!(svc.port.unwrap_or(443)))
        .expect("the webhook's port on the Service");
    assert_eq!(port["targetPort"], "webhook");
    let container =
        &object(&objs, "Deployment", "blastguard")["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["ports"]
            .as_array()
            .expect("ports")
            .contains(&json!({"name": "webhook", "containerPort": 8443, "protocol": "TCP"}))
    );

    // The rules: `webhook_rules_are_the_engines_kinds`.

    // Namespace exclusions: only the release namespace by default; kube-system is
    // guarded like any other (the matchConditions keep the cluster's controllers out).
    let excluded = |w: &k8s_openapi::api::admissionregistration::v1::ValidatingWebhook| {
        let sel = w.namespace_selector.clone().expect("namespaceSelector");
        let exprs = sel.match_expressions.expect("matchExpressions");
        assert_eq!(exprs.len(), 1);
        assert_eq!(exprs[0].key, "kubernetes.io/metadata.name");
        assert_eq!(exprs[0].operator, "NotIn");
        exprs[0].values.clone().unwrap_or_default()
    };
    assert_eq!(excluded(w), ["blastguard"]);

    // Configured: another release namespace, more exclusions, an extra cluster-scoped
    // resource, a longer timeout. The release namespace stays excluded whatever the
    // list says.
    let values = "webhook:\n  timeoutSeconds: 5\n  excludedNamespaces: [kube-system, gatekeeper-system]\n  extraClusterScopedResources: [{apiGroup: storage.k8s.io, apiVersion: v1, resource: volumeattachments}]\n";
    let out = helm_template(chart_dir(), "platform-tools", values, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let objs = objects(&text(&out.stdout));
    let w = webhook_config(&objs).webhooks.expect("webhooks").remove(0);
    assert_eq!(
        excluded(&w),
        ["platform-tools", "kube-system", "gatekeeper-system"]
    );
    assert_eq!(w.timeout_seconds, Some(5));
    assert_eq!(
        w.client_config.service.as_ref().expect("service").namespace,
        "platform-tools"
    );
    let added = sent_resources(&w)
        .difference(&sent_resources(&webhooks[0]))
        .cloned()
        .collect::<BTreeSet<_>>();
    assert_eq!(
        added,
        ["CREATE", "UPDATE", "DELETE"]
            .map(|op| sent("storage.k8s.io", "v1", "volumeattachments", op, "Cluster"))
            .into()
    );

    // Naming the release namespace does not list it twice.
    let out = helm_template(
        chart_dir(),
        NAMESPACE,
        "webhook: {excludedNamespaces: [blastguard]}\n",
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let w = webhook_config(&objects(&text(&out.stdout)))
        .webhooks
        .expect("webhooks")
        .remove(0);
    assert_eq!(excluded(&w), ["blastguard"]);
}

/// What a rule sends: API group, version, resource (with subresource), operation, scope.
type Sent = (String, String, String, String, String);

fn sent(group: &str, version: &str, resource: &str, operation: &str, scope: &str) -> Sent {
    (
        group.into(),
        version.into(),
        resource.into(),
        operation.into(),
        scope.into(),
    )
}

/// Every (group, version, resource, operation, scope) the webhook's rules send.
fn sent_resources(
    w: &k8s_openapi::api::admissionregistration::v1::ValidatingWebhook,
) -> BTreeSet<Sent> {
    let mut all = BTreeSet::new();
    for rule in w.rules.as_ref().expect("rules") {
        let scope = rule.scope.clone().expect("every rule names its scope");
        assert_ne!(
            scope, "*",
            "a rule for both scopes sends more than the engine judges"
        );
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for version in rule.api_versions.as_deref().unwrap_or_default() {
                for resource in rule.resources.as_deref().unwrap_or_default() {
                    for op in rule.operations.as_deref().unwrap_or_default() {
                        all.insert(sent(group, version, resource, op, &scope));
                    }
                }
            }
        }
    }
    all
}

/// What the engine judges: every namespaced kind and every subresource of one (a
/// `status` or `resize` change like the object, a ConfigMap toward namespace reach),
/// and its built-in cluster-scoped kinds with their subresources; each for CREATE,
/// UPDATE and DELETE. The policy's custom workloads are namespaced: under the first.
fn judged_resources() -> BTreeSet<Sent> {
    const ALL: [&str; 3] = ["CREATE", "UPDATE", "DELETE"];
    let mut all = BTreeSet::new();
    // `*/*` is every resource and every subresource (the API server allows it alone).
    for op in ALL {
        all.insert(sent("*", "*", "*/*", op, "Namespaced"));
    }
    for k in blastguard::kinds::built_in() {
        if !k.cluster_scoped {
            continue;
        }
        for op in ALL {
            all.insert(sent(&k.group, &k.version, &k.resource, op, "Cluster"));
            let every_subresource = format!("{}/*", k.resource);
            all.insert(sent(
                &k.group,
                &k.version,
                &every_subresource,
                op,
                "Cluster",
            ));
        }
    }
    all
}

#[test]
fn webhook_rules_send_every_namespaced_kind_and_subresource() {
    let objs = objects(&render(""));
    let w = webhook_config(&objs).webhooks.expect("webhooks").remove(0);
    let rendered = sent_resources(&w);
    let judged = judged_resources();
    let unjudged: Vec<_> = rendered.difference(&judged).collect();
    assert!(
        unjudged.is_empty(),
        "sent but not judged by the engine: {unjudged:?}"
    );
    let unsent: Vec<_> = judged.difference(&rendered).collect();
    assert!(
        unsent.is_empty(),
        "judged by the engine but never sent: {unsent:?}"
    );
    // Every namespaced kind of the engine's list is under the wildcard rule, custom
    // workloads and their scale included.
    for k in blastguard::kinds::built_in() {
        assert!(
            k.cluster_scoped || rendered.contains(&sent("*", "*", "*/*", "CREATE", "Namespaced")),
            "{} is not sent",
            k.kind
        );
    }
    // The subresources whose object is another kind carry no marker of the object's:
    // the matchConditions name the engine's list.
    let expression = w
        .match_conditions
        .as_ref()
        .expect("matchConditions")
        .iter()
        .map(|c| c.expression.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let listed = blastguard::review::FOREIGN_SUBRESOURCES
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    assert!(
        expression.contains(&format!("!(request.subResource in [{listed}])")),
        "{expression}"
    );
    // Rules name the version the engine reads; Equivalent has other versions converted
    // to it (autoscaling/v1 HorizontalPodAutoscalers arrive as v2).
    assert_eq!(w.match_policy.as_deref(), Some("Equivalent"));
    // Compact: one rule per group, version, scope and set of operations.
    let rules = w.rules.as_ref().expect("rules");
    let keys: BTreeSet<_> = rules
        .iter()
        .map(|r| (&r.api_groups, &r.api_versions, &r.scope, &r.operations))
        .collect();
    assert_eq!(
        keys.len(),
        rules.len(),
        "rules that could be one: {rules:?}"
    );

    // Custom workloads in values change nothing in the rules: they are namespaced,
    // and every namespaced kind is sent.
    let values = r#"
policy:
  workloads:
    - {group: flagger.app, kind: Canary, replicas: /spec/replicas, template: /spec/template, resource: canaries}
"#;
    let objs = objects(&render(values));
    let w = webhook_config(&objs).webhooks.expect("webhooks").remove(0);
    assert_eq!(sent_resources(&w), judged_resources());
}

#[test]
fn notes_try_an_ai_change_that_reaches_the_webhook() {
    let out = succeed(
        tool("helm")
            .args(["install", RELEASE])
            .arg(chart_dir())
            .args(["--namespace", NAMESPACE, "--dry-run=client"]),
    );
    let notes = out.split("NOTES:").nth(1).expect("helm prints the notes");

    // The try-it command: a pipeline continued over lines with backslashes.
    let lines: Vec<&str> = notes.lines().map(str::trim).collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("kubectl -n default create deployment"))
        .expect("the notes show a command to try");
    let mut command = String::new();
    for line in &lines[start..] {
        let continued = line.ends_with('\\');
        command.push_str(line.trim_end_matches('\\').trim_end());
        command.push(' ');
        if !continued {
            break;
        }
    }
    let stages: Vec<&str> = command.split(" | ").map(str::trim).collect();
    assert_eq!(
        stages.last(),
        Some(&"kubectl apply --dry-run=server -f -"),
        "{command}"
    );

    // Everything before the server-side dry run runs offline; what it would send is
    // AI-assisted, and the same Deployment without the annotation stage is not.
    let objs = objects(&render(""));
    let conditions = MatchConditions::of(&objs);
    let policy = rendered_policy(&objs);
    let offline = |stages: &[&str]| {
        let yaml = succeed(tool("bash").args(["-c", &stages.join(" | ")]));
        let object = objects(&yaml).remove(0);
        Request::on("CREATE", Some(&object), None)
    };
    let marked = offline(&stages[..stages.len() - 1]);
    assert_eq!(conditions.sends(&marked), Ok(true), "{command}");
    assert!(server_calls_ai(&policy, &marked));
    let plain = offline(&stages[..1]);
    assert_eq!(conditions.sends(&plain), Ok(false));

    // Uninstall: the webhook configuration first.
    let delete = notes
        .find("kubectl delete validatingwebhookconfiguration blastguard")
        .expect("the notes delete the webhook configuration");
    let uninstall = notes.find("helm uninstall").expect("the notes uninstall");
    assert!(delete < uninstall);
}

#[test]
fn webhook_url_calls_a_webhook_outside_the_cluster() {
    // No pods, so nothing that serves or guards them: only the webhook configuration,
    // the policy and approvers (which the outside server is given) and the
    // ServiceAccount.
    // The ChangeSet CRD (crds/) stays: the outside server keeps its change sets in
    // the cluster with its own credentials; no RBAC for pods that do not exist.
    let objs = objects(&render(OUTSIDE));
    assert_eq!(
        names(&objs),
        set(&[
            ("ServiceAccount", "blastguard"),
            ("ConfigMap", "blastguard-policy"),
            ("ConfigMap", "blastguard-allowed-signers"),
            ("ValidatingWebhookConfiguration", "blastguard"),
            ("CustomResourceDefinition", "changesets.blastguard.io"),
            ("CustomResourceDefinition", "spentapprovals.blastguard.io"),
            // The API server evaluates it: it guards a webhook outside the cluster too.
            ("ValidatingAdmissionPolicy", "blastguard-self-protection"),
            (
                "ValidatingAdmissionPolicyBinding",
                "blastguard-self-protection"
            ),
            // The inbox's CRD and the roles people are bound to: the outside server
            // keeps its requests in the cluster with its own credentials.
            ("CustomResourceDefinition", "approvalrequests.blastguard.io"),
            ("ClusterRole", "blastguard-approver"),
            ("ClusterRole", "blastguard-requester"),
        ])
    );
    let w = webhook_config(&objs).webhooks.expect("webhooks").remove(0);
    assert_eq!(w.client_config.url.as_deref(), Some(OUTSIDE_URL));
    assert!(
        w.client_config.service.is_none(),
        "url and service exclude each other"
    );
    assert_eq!(ca_bundle(&objs), "ca-bundle");
    // Everything else about the webhook is the in-cluster one's.
    let in_cluster = webhook_config(&objects(&render("")))
        .webhooks
        .expect("webhooks")
        .remove(0);
    assert_eq!(w.rules, in_cluster.rules);
    assert_eq!(w.match_conditions, in_cluster.match_conditions);
    assert_eq!(w.namespace_selector, in_cluster.namespace_selector);
    assert_eq!(w.failure_policy, in_cluster.failure_policy);

    // The optional parts that watch pods go too; the dashboard, which needs none, stays.
    let optional = objects(&render(&format!("{OPTIONAL_PARTS}{OUTSIDE}")));
    let kinds: BTreeSet<String> = optional.iter().map(|o| kind_and_name(o).0).collect();
    for gone in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
        "Secret",
    ] {
        assert!(!kinds.contains(gone), "{gone} rendered with webhook.url");
    }
    object(&optional, "ConfigMap", "blastguard-dashboard");

    // Every object is valid for the API server (also checked with every rendering in
    // every_rendered_object_validates_against_kubernetes_1_30_and_the_newest_schemas).
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("outside.yaml");
    std::fs::write(&file, render(OUTSIDE)).expect("write rendering");
    for version in ["1.30.0".to_string(), newest_kubernetes_version()] {
        let v = kubernetes_validate(std::slice::from_ref(&file), &version)
            .unwrap_or_else(|r| panic!("Kubernetes {version}:\n{r}"));
        assert_eq!(v.passed, objs.len(), "Kubernetes {version}");
    }

    // The notes say where the webhook must be served instead of waiting for pods.
    let dir = tempfile::tempdir().expect("tempdir");
    let values = write_values(dir.path(), OUTSIDE);
    let out = succeed(
        tool("helm")
            .args(["install", RELEASE])
            .arg(chart_dir())
            .args(["--namespace", NAMESPACE, "--dry-run=client", "-f"])
            .arg(&values),
    );
    let notes = out.split("NOTES:").nth(1).expect("helm prints the notes");
    assert!(notes.contains(OUTSIDE_URL), "{notes}");
    assert!(!notes.contains("rollout status"), "{notes}");
}
