//! The Helm chart (`charts/blastguard`) renders what docs/install.md promises: `helm
//! lint --strict` passes, every rendered object validates against the official
//! Kubernetes schemas (`kubernetes-validate --strict`), each mode renders exactly its
//! objects, the policy ConfigMap is the server's default policy, and values.schema.json
//! refuses bad values.
//!
//! The chart's helpers (`helm template`, the rendered objects, matchConditions in CEL) are
//! in tests/common/chart.rs; helm and kubernetes-validate come from `.tools/bin`
//! (`scripts/install-tools.sh`, which `scripts/test.sh` runs), kubectl, openssl and
//! promtool from PATH.

mod common;

use std::collections::BTreeSet;

use blastguard::policy::Policy;
use common::chart::*;
use common::{repo, tool};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------
// helm lint, kubernetes-validate, the rendered objects.

#[test]
fn helm_lint_strict_passes_with_the_defaults_and_every_mode() {
    for (name, values) in renderings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write_values(dir.path(), values);
        let out = run(tool("helm")
            .args(["lint", "--strict", "--namespace", NAMESPACE])
            .arg(chart_dir())
            .arg("-f")
            .arg(&file));
        assert!(
            out.status.success(),
            "helm lint --strict fails with {name}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

#[test]
fn every_rendered_object_validates_against_kubernetes_1_30_and_the_newest_schemas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    let mut total = 0;
    let mut schemaless_objects = 0;
    let mut schemaless_kinds = BTreeSet::new();
    let mut count = |yaml: &str| {
        for o in objects(yaml) {
            total += 1;
            let (kind, _) = kind_and_name(&o);
            if SCHEMALESS_KINDS.contains(&kind.as_str()) {
                schemaless_objects += 1;
                schemaless_kinds.insert(kind);
            }
        }
    };
    for (i, (_, values)) in renderings().iter().enumerate() {
        let yaml = render(values);
        count(&yaml);
        let file = dir.path().join(format!("rendering-{i}.yaml"));
        std::fs::write(&file, yaml).expect("write rendering");
        files.push(file);
    }
    for name in ["blastguard.yaml", "webhook.yaml"] {
        let file = repo().join("manifests").join(name);
        count(&std::fs::read_to_string(&file).expect("manifests/ is committed"));
        files.push(file);
    }

    let newest = newest_kubernetes_version();
    assert!(
        newest.split('.').nth(1).and_then(|m| m.parse::<u32>().ok()) > Some(30),
        "kubernetes-validate's newest version is {newest}"
    );
    for version in ["1.30.0", newest.as_str()] {
        let v = kubernetes_validate(&files, version)
            .unwrap_or_else(|report| panic!("invalid for Kubernetes {version}:\n{report}"));
        assert_eq!(
            v.schemaless,
            schemaless_kinds.iter().cloned().collect::<BTreeSet<_>>(),
            "Kubernetes {version}: only the CRD kinds may lack a schema"
        );
        assert_eq!(
            v.passed,
            total - schemaless_objects,
            "Kubernetes {version}: every object with a schema is validated"
        );
    }

    // The validator is strict: an unknown field in a rendered Deployment fails it.
    let mut objs = objects(&render(""));
    let deployment = objs
        .iter_mut()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["bogusField"] = json!(true);
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, serde_yaml::to_string(deployment).expect("YAML")).expect("write");
    assert!(
        kubernetes_validate(&[broken], "1.30.0").is_err(),
        "kubernetes-validate --strict must reject an unknown field"
    );
}

#[test]
fn each_mode_renders_exactly_its_objects() {
    let base = [
        ("ServiceAccount", "blastguard"),
        ("ConfigMap", "blastguard-policy"),
        ("ConfigMap", "blastguard-allowed-signers"),
        ("Service", "blastguard"),
        ("Deployment", "blastguard"),
        ("PodDisruptionBudget", "blastguard"),
        ("ValidatingWebhookConfiguration", "blastguard"),
        // The ChangeSet CRD (crds/, always) and, with the cluster state
        // (cluster.enabled, on by default), the server's read-only ClusterRole and
        // change-set Role.
        ("CustomResourceDefinition", "changesets.blastguard.io"),
        ("CustomResourceDefinition", "spentapprovals.blastguard.io"),
        ("ClusterRole", "blastguard-cluster-state"),
        ("ClusterRoleBinding", "blastguard-cluster-state"),
        ("Role", "blastguard-change-sets"),
        ("RoleBinding", "blastguard-change-sets"),
        // The server reads its own webhook configuration (cluster.enabled), and the
        // self-protection policy (tests/chart_self_protection.rs).
        ("ClusterRole", "blastguard-webhook-configuration"),
        ("ClusterRoleBinding", "blastguard-webhook-configuration"),
        ("ValidatingAdmissionPolicy", "blastguard-self-protection"),
        (
            "ValidatingAdmissionPolicyBinding",
            "blastguard-self-protection",
        ),
        // The approval inbox (tests/chart_inbox.rs): its CRD, the server's Role on
        // the requests, and the ClusterRoles to bind to approvers and requesters.
        ("CustomResourceDefinition", "approvalrequests.blastguard.io"),
        ("Role", "blastguard-approval-requests"),
        ("RoleBinding", "blastguard-approval-requests"),
        ("ClusterRole", "blastguard-approver"),
        ("ClusterRole", "blastguard-requester"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all = set(&base);
        all.extend(set(extra));
        all
    };
    let volume_secret = |objs: &[Value]| {
        let d = object(objs, "Deployment", "blastguard");
        let volumes = d["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes");
        volumes
            .iter()
            .find(|v| v["name"] == "tls")
            .expect("tls volume")["secret"]["secretName"]
            .as_str()
            .expect("secretName")
            .to_string()
    };

    // Default: the chart makes the certificates.
    let default = objects(&render(""));
    assert_eq!(
        names(&default),
        with(&[("Secret", "blastguard-ca"), ("Secret", "blastguard-tls")])
    );
    assert_eq!(volume_secret(&default), "blastguard-tls");

    // Without the cluster state: no RBAC objects at all.
    let memory = objects(&render("cluster: {enabled: false}\n"));
    let cluster_state = ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];
    let mut without = with(&[("Secret", "blastguard-ca"), ("Secret", "blastguard-tls")]);
    without.retain(|(kind, _)| !cluster_state.contains(&kind.as_str()));
    assert_eq!(names(&memory), without);

    // cert-manager with the chart's own CA: self-signed Issuer -> CA Certificate -> CA
    // Issuer -> serving Certificate into the Secret the pods mount; the CA injector
    // fills in the bundle.
    let cm = objects(&render("certificates: {mode: cert-manager}\n"));
    assert_eq!(
        names(&cm),
        with(&[
            ("Issuer", "blastguard-selfsigned"),
            ("Certificate", "blastguard-ca"),
            ("Issuer", "blastguard-ca"),
            ("Certificate", "blastguard-tls"),
        ])
    );
    let ca_cert = object(&cm, "Certificate", "blastguard-ca");
    assert_eq!(ca_cert["spec"]["isCA"], true);
    assert_eq!(ca_cert["spec"]["secretName"], "blastguard-ca");
    assert_eq!(
        ca_cert["spec"]["issuerRef"]["name"],
        "blastguard-selfsigned"
    );
    assert_eq!(
        object(&cm, "Issuer", "blastguard-ca")["spec"]["ca"]["secretName"],
        "blastguard-ca"
    );
    let serving = object(&cm, "Certificate", "blastguard-tls");
    assert_eq!(serving["spec"]["secretName"], "blastguard-tls");
    assert_eq!(
        serving["spec"]["issuerRef"],
        json!({"kind": "Issuer", "name": "blastguard-ca"})
    );
    assert!(
        serving["spec"]["dnsNames"]
            .as_array()
            .expect("dnsNames")
            .contains(&json!(SERVICE_DNS_NAME))
    );
    assert_eq!(volume_secret(&cm), "blastguard-tls");
    let vwc = webhook_config(&cm);
    assert_eq!(
        vwc.metadata.annotations.unwrap_or_default()["cert-manager.io/inject-ca-from"],
        "blastguard/blastguard-tls"
    );
    assert!(
        vwc.webhooks.unwrap_or_default()[0]
            .client_config
            .ca_bundle
            .is_none()
    );

    // cert-manager with an issuer of one's own: only the serving Certificate.
    let own = objects(&render(renderings()[2].1));
    assert_eq!(names(&own), with(&[("Certificate", "blastguard-tls")]));
    assert_eq!(
        object(&own, "Certificate", "blastguard-tls")["spec"]["issuerRef"],
        json!({"kind": "ClusterIssuer", "name": "corp-ca"})
    );

    // An existing Secret: nothing made, the given bundle used.
    let existing = objects(&render(renderings()[3].1));
    assert_eq!(names(&existing), with(&[]));
    assert_eq!(volume_secret(&existing), "corp-tls");
    assert_eq!(ca_bundle(&existing), "ca-bundle");

    // Optional parts.
    let optional = objects(&render(OPTIONAL_PARTS));
    assert_eq!(
        names(&optional),
        with(&[
            ("Secret", "blastguard-ca"),
            ("Secret", "blastguard-tls"),
            ("ServiceMonitor", "blastguard"),
            ("PrometheusRule", "blastguard"),
            ("NetworkPolicy", "blastguard"),
            ("ConfigMap", "blastguard-dashboard"),
        ])
    );
    let sm = object(&optional, "ServiceMonitor", "blastguard");
    let service = object(&optional, "Service", "blastguard");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"].as_object().map(|m| m
            .iter()
            .all(|(k, v)| service["metadata"]["labels"][k] == *v)),
        Some(true),
        "the ServiceMonitor selects the Service"
    );
    let admin_port = &sm["spec"]["endpoints"][0]["port"];
    assert!(
        service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == *admin_port && p["targetPort"] == "admin"),
        "the ServiceMonitor scrapes the admin port"
    );
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let np = object(&optional, "NetworkPolicy", "blastguard");
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], "webhook");
    assert!(
        np["spec"]["ingress"][0].get("from").is_none(),
        "the API server reaches the webhook from anywhere"
    );
    assert_eq!(np["spec"]["ingress"][1]["ports"][0]["port"], "admin");
    assert_eq!(
        np["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    let signers = object(&optional, "ConfigMap", "blastguard-allowed-signers");
    assert!(
        signers["data"]["allowed_signers"]
            .as_str()
            .expect("allowed_signers")
            .lines()
            .any(|l| l.starts_with(
                "alice@example.com namespaces=\"approval@blastguard.io\" ssh-ed25519 "
            )),
        "the approver's line is in allowed_signers"
    );
}

// ---------------------------------------------------------------------------------
// The policy and values.schema.json.

#[test]
fn the_policy_config_map_is_the_servers_default_policy() {
    let objs = objects(&render(""));
    let rendered = rendered_policy(&objs);
    let mut expected = Policy::embedded().document.spec;
    expected.approvals.allowed_signers = "/etc/blastguard/signers/allowed_signers".into();
    assert_eq!(
        rendered.document.spec, expected,
        "the chart's default values are the embedded default policy"
    );

    // Values reach the policy.
    let values = "policy:\n  mode: warn\n  rules: [{name: all, namespaces: ['*'], mode: audit, limits: {maxPercentAffected: 25}}]\n  approvals: {maxTTL: 2h}\n";
    let p = rendered_policy(&objects(&render(values)));
    assert_eq!(p.document.spec.mode.as_str(), "warn");
    assert_eq!(p.rules.len(), 1);
    assert_eq!(p.rules[0].mode.as_str(), "audit");
    assert_eq!(p.rules[0].limits.max_percent_affected, Some(25));
    assert_eq!(p.approvals.max_ttl.as_secs(), 2 * 3600);

    // The fields of the change-set and controller contract reach it too.
    let values = r#"
policy:
  provenance: {controllers: ["system:kube-controller-manager", "system:serviceaccount:flux-system:*"]}
  workloads: [{group: flagger.app, kind: Canary, replicas: /spec/replicas, template: /spec/template, resource: canaries}]
  changeSets: {window: 30m}
  rules: [{name: all, namespaces: ['*'], limits: {maxPodsPerChangeSet: 20}}]
"#;
    let spec = rendered_policy(&objects(&render(values))).document.spec;
    assert_eq!(
        spec.provenance.controllers,
        [
            "system:kube-controller-manager",
            "system:serviceaccount:flux-system:*"
        ]
    );
    assert_eq!(spec.workloads.len(), 1);
    assert_eq!(spec.workloads[0].resource.as_deref(), Some("canaries"));
    assert_eq!(spec.change_sets.window, "30m");
    assert_eq!(spec.rules[0].limits.max_pods_per_change_set, Some(20));
}

#[test]
fn values_schema_rejects_bad_values() {
    let cases = [
        (
            "a negative replica count",
            "replicaCount: -1\n",
            "/replicaCount",
        ),
        (
            "an unknown certificate mode",
            "certificates: {mode: self-signed}\n",
            "/certificates/mode",
        ),
        (
            "an unknown policy mode",
            "policy: {mode: block}\n",
            "/policy/mode",
        ),
        (
            "an unknown onClusterUnavailable",
            "policy: {onClusterUnavailable: retry}\n",
            "/policy/onClusterUnavailable",
        ),
        ("a misspelt key", "replicas: 3\n", "'replicas' not allowed"),
        (
            "a timeout over 30s",
            "webhook: {timeoutSeconds: 31}\n",
            "/webhook/timeoutSeconds",
        ),
        (
            "an unknown failure policy",
            "webhook: {failurePolicy: Retry}\n",
            "/webhook/failurePolicy",
        ),
        (
            "a percent limit over 100",
            "policy: {rules: [{name: r, namespaces: ['*'], limits: {maxPercentAffected: 150}}]}\n",
            "maxPercentAffected",
        ),
        (
            "a misspelt limit",
            "policy: {rules: [{name: r, namespaces: ['*'], limits: {maxPods: 5}}]}\n",
            "'maxPods' not allowed",
        ),
        (
            "an invalid annotation key",
            "policy: {provenance: {annotations: ['not a key']}}\n",
            "/policy/provenance/annotations/0",
        ),
        (
            "secret mode without a CA bundle",
            "certificates: {mode: secret, secret: {name: corp-tls}}\n",
            "caBundle",
        ),
        (
            "secret mode without a Secret for the pods",
            "certificates: {mode: secret, secret: {caBundle: Y2E=}}\n",
            "/certificates/secret/name",
        ),
        (
            "webhook.url over plain http",
            "webhook: {url: 'http://10.0.0.5:8443/validate'}\ncertificates: {mode: secret, secret: {caBundle: Y2E=}}\n",
            "/webhook/url",
        ),
        (
            "webhook.url with a query",
            "webhook: {url: 'https://10.0.0.5:8443/validate?x=1'}\ncertificates: {mode: secret, secret: {caBundle: Y2E=}}\n",
            "/webhook/url",
        ),
        (
            "webhook.url with the chart's own certificates, which name the Service",
            "webhook: {url: 'https://10.0.0.5:8443/validate'}\n",
            "webhook.url needs certificates.mode=secret",
        ),
        (
            "the old clusterScopedResources key, now from files/kinds.yaml",
            "webhook: {clusterScopedResources: []}\n",
            "'clusterScopedResources' not allowed",
        ),
        (
            "a custom workload without a pod template",
            "policy: {workloads: [{group: argoproj.io, kind: Rollout, replicas: /spec/replicas}]}\n",
            "template",
        ),
        (
            "a custom workload whose replicas is not a JSON pointer",
            "policy: {workloads: [{group: argoproj.io, kind: Rollout, replicas: spec.replicas, template: /spec/template}]}\n",
            "/policy/workloads/0/replicas",
        ),
        (
            "a change-set window that is not a duration",
            "policy: {changeSets: {window: soon}}\n",
            "/policy/changeSets/window",
        ),
        (
            "an approver line holding a newline",
            "allowedSigners: {entries: [\"a ssh-ed25519 AAAA\\nb ssh-ed25519 BBBB\"]}\n",
            "/allowedSigners/entries/0",
        ),
        (
            "one replica with a PodDisruptionBudget that could never let it go",
            "replicaCount: 1\n",
            "podDisruptionBudget.minAvailable (1) must be less than replicaCount (1)",
        ),
    ];
    for (name, values, message) in cases {
        let out = helm_template(chart_dir(), NAMESPACE, values, &[]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(
            stderr.contains(message),
            "{name}: the error does not say {message:?}:\n{stderr}"
        );
    }

    // The controls: one replica renders once the PDB is off; Kubernetes before 1.30
    // (no matchConditions) is refused.
    assert!(
        helm_template(
            chart_dir(),
            NAMESPACE,
            "replicaCount: 1\npodDisruptionBudget: {enabled: false}\n",
            &[]
        )
        .status
        .success()
    );
    let old = helm_template(chart_dir(), NAMESPACE, "", &["--kube-version", "1.29.0"]);
    assert!(!old.status.success());
    assert!(
        text(&old.stderr).contains(">=1.30.0-0"),
        "{}",
        text(&old.stderr)
    );
}
