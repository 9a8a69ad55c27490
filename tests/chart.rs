//! The Helm chart (`charts/blastguard`) and the plain manifests (`manifests/`) against
//! DESIGN.md section 7, through the real tools: `helm lint` and `helm template`,
//! `kubernetes-validate --strict` (the official Kubernetes schemas), `promtool`,
//! `kubectl`, `openssl`, rustls for TLS, and the `cel` crate evaluating the rendered
//! matchConditions with the variables the API server gives them.
//!
//! helm and kubernetes-validate are taken from `.tools/bin` (`scripts/install-tools.sh`,
//! which `scripts/test.sh` runs); kubectl, openssl and promtool from PATH.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use blastguard::policy::Policy;
use common::{repo, tool};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use serde_json::{Value, json};

const RELEASE: &str = "blastguard";
const NAMESPACE: &str = "blastguard";
/// The name the API server calls the webhook by: `<service>.<namespace>.svc`.
const SERVICE_DNS_NAME: &str = "blastguard.blastguard.svc";

/// Kinds from CRDs (Prometheus operator, cert-manager) that kubernetes-validate has no
/// schema for. They are checked by other means: PrometheusRule by promtool, the others
/// field by field in `each_mode_renders_exactly_its_objects`.
const SCHEMALESS_KINDS: &[&str] = &["ServiceMonitor", "PrometheusRule", "Certificate", "Issuer"];

/// Every optional part of the chart switched on.
const OPTIONAL_PARTS: &str = r#"
metrics:
  serviceMonitor: {enabled: true, labels: {release: prometheus}}
  prometheusRule: {enabled: true, labels: {release: prometheus}}
networkPolicy:
  enabled: true
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
grafanaDashboard: {enabled: true}
priorityClassName: system-cluster-critical
cluster: {enabled: true}
allowedSigners:
  entries:
    - 'alice@example.com namespaces="approval@blastguard.io" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEDRbbeo68CP2MprQEJGYnHK8jjEFT5bvdQ1SfOw64y'
"#;

/// The values every rendering test covers: the defaults, each certificate mode, and
/// the optional parts on.
fn renderings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("default values", ""),
        ("cert-manager", "certificates: {mode: cert-manager}\n"),
        (
            "cert-manager with an issuer of one's own",
            "certificates:\n  mode: cert-manager\n  certManager: {issuerRef: {kind: ClusterIssuer, name: corp-ca}}\n",
        ),
        (
            "an existing Secret",
            "certificates:\n  mode: secret\n  secret: {name: corp-tls, caBundle: Y2EtYnVuZGxl}\n",
        ),
        ("optional parts on", OPTIONAL_PARTS),
        ("a webhook outside the cluster", OUTSIDE),
    ]
}

/// webhook.url: the development loop, the webhook served outside the cluster with a
/// certificate from this CA (base64 of a placeholder: only the rendering reads it).
const OUTSIDE_URL: &str = "https://192.168.49.1:8443/validate";
const OUTSIDE: &str = "webhook:\n  url: https://192.168.49.1:8443/validate\ncertificates:\n  mode: secret\n  secret: {caBundle: Y2EtYnVuZGxl}\n";

// ---------------------------------------------------------------------------------
// Running the tools.

fn chart_dir() -> PathBuf {
    repo().join("charts/blastguard")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run scripts/install-tools.sh)"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the command, fails the test with its output unless it succeeds, returns stdout.
fn succeed(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn write_values(dir: &Path, values: &str) -> PathBuf {
    let file = dir.join("values.yaml");
    std::fs::write(&file, values).expect("write values file");
    file
}

/// `helm template` of the chart with these values, release blastguard.
fn helm_template(namespace: &str, values: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_values(dir.path(), values);
    run(tool("helm")
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", namespace, "-f"])
        .arg(&file)
        .args(extra))
}

/// The rendered YAML in the release namespace, the CRDs of crds/ included (as helm
/// install applies them); the test fails if rendering does.
fn render(values: &str) -> String {
    let out = helm_template(NAMESPACE, values, &["--include-crds"]);
    assert!(
        out.status.success(),
        "helm template failed for values:\n{values}\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The documents of a YAML stream, as JSON values, empty documents skipped.
fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).expect("YAML maps to JSON"))
        .collect()
}

fn kind_and_name(o: &Value) -> (String, String) {
    (
        o["kind"].as_str().unwrap_or_default().to_string(),
        o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn object<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| kind_and_name(o) == (kind.to_string(), name.to_string()))
        .unwrap_or_else(|| {
            let have: Vec<_> = objs.iter().map(kind_and_name).collect();
            panic!("no {kind} {name} among {have:?}")
        })
}

fn typed<T: serde::de::DeserializeOwned>(o: &Value) -> T {
    serde_json::from_value(o.clone())
        .unwrap_or_else(|e| panic!("{:?} does not deserialize: {e}", kind_and_name(o)))
}

/// A Secret's value as text (certificates and keys are PEM).
fn secret_data(secret: &Value, key: &str) -> String {
    let s: Secret = typed(secret);
    let bytes = s
        .data
        .unwrap_or_default()
        .get(key)
        .unwrap_or_else(|| panic!("Secret {:?} has no {key}", kind_and_name(secret)))
        .0
        .clone();
    String::from_utf8(bytes).expect("PEM is text")
}

fn webhook_config(objs: &[Value]) -> ValidatingWebhookConfiguration {
    typed(object(objs, "ValidatingWebhookConfiguration", "blastguard"))
}

/// The webhook's caBundle as PEM text.
fn ca_bundle(objs: &[Value]) -> String {
    let vwc = webhook_config(objs);
    let webhooks = vwc.webhooks.unwrap_or_default();
    let bytes = webhooks[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("the webhook configuration has a caBundle")
        .0;
    String::from_utf8(bytes).expect("PEM is text")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

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

/// The newest Kubernetes version kubernetes-validate knows: its default.
fn newest_kubernetes_version() -> String {
    let help = succeed(tool("kubernetes-validate").arg("--help"));
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let rest = flat
        .split("Defaults to ")
        .nth(1)
        .expect("kubernetes-validate --help names its default version");
    rest.chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect::<String>()
        .trim_end_matches('.')
        .to_string()
}

struct Validation {
    passed: usize,
    schemaless: BTreeSet<String>,
}

/// `kubernetes-validate --strict` over the files for one Kubernetes version.
fn kubernetes_validate(files: &[PathBuf], version: &str) -> Result<Validation, String> {
    let out = run(tool("kubernetes-validate")
        .args(["--strict", "-k", version])
        .args(files));
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    if !out.status.success() || report.contains("ERROR") {
        return Err(report);
    }
    let passed = report
        .lines()
        .filter(|l| l.contains(" passed for "))
        .count();
    let schemaless = report
        .lines()
        .filter_map(|l| l.split("Couldn't find schema for kind ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect();
    Ok(Validation { passed, schemaless })
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

fn names(objs: &[Value]) -> BTreeSet<(String, String)> {
    objs.iter().map(kind_and_name).collect()
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect()
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
    let out = helm_template("platform-tools", values, &[]);
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

// ---------------------------------------------------------------------------------
// matchConditions, evaluated with CEL as the API server does.

/// The rendered matchConditions of the webhook, compiled.
///
/// The API server evaluates them with the variables `request` (the AdmissionRequest
/// without `object` and `oldObject`, its optional fields absent when unset), `object`
/// and `oldObject` (null where the operation has none: `object` on DELETE, `oldObject`
/// on CREATE). A request is sent only if every condition is true; an error under
/// failurePolicy Fail rejects the request, so any error is a defect.
struct MatchConditions {
    env: Arc<cel::Env>,
    programs: Vec<(String, cel::Program)>,
}

impl MatchConditions {
    fn of(objs: &[Value]) -> Self {
        let env = Arc::new(cel::Env::stdlib());
        let vwc = webhook_config(objs);
        let conditions = vwc.webhooks.expect("webhooks")[0]
            .match_conditions
            .clone()
            .expect("matchConditions");
        assert!(!conditions.is_empty() && conditions.len() <= 64);
        let programs = conditions
            .into_iter()
            .map(|c| {
                let program = env.compile(&c.expression).unwrap_or_else(|e| {
                    panic!(
                        "matchCondition {} does not compile: {e}\n{}",
                        c.name, c.expression
                    )
                });
                (c.name, program)
            })
            .collect();
        Self { env, programs }
    }

    /// Whether the API server sends the request to the webhook.
    fn sends(&self, request: &Request) -> Result<bool, String> {
        let mut req = request.0.clone();
        let fields = req.as_object_mut().expect("request is an object");
        let object = fields.remove("object").unwrap_or(Value::Null);
        let old_object = fields.remove("oldObject").unwrap_or(Value::Null);
        let mut all = true;
        for (name, program) in &self.programs {
            let mut ctx = cel::Context::with_env(self.env.clone());
            ctx.add_variable("request", &req)
                .map_err(|e| format!("{e:?}"))?;
            ctx.add_variable("object", &object)
                .map_err(|e| format!("{e:?}"))?;
            ctx.add_variable("oldObject", &old_object)
                .map_err(|e| format!("{e:?}"))?;
            match program.execute(&ctx) {
                Ok(cel::Value::Bool(b)) => all &= b,
                Ok(other) => return Err(format!("{name} returned {other:?}, not a bool")),
                Err(e) => return Err(format!("{name} raised {e:?}")),
            }
        }
        Ok(all)
    }
}

/// An AdmissionRequest (admission.k8s.io/v1) as the API server builds it.
#[derive(Clone)]
struct Request(Value);

/// The plural the API server puts in `request.resource`, from the engine's list of kinds.
fn plural(group: &str, kind: &str) -> String {
    blastguard::kinds::find(group, kind)
        .unwrap_or_else(|| panic!("the engine does not list {group}/{kind}"))
        .resource
        .clone()
}

impl Request {
    /// `operation` on an object: `new` for CREATE and UPDATE, `old` for UPDATE and
    /// DELETE. Requested by a person (alice) through kubectl.
    fn on(operation: &str, new: Option<&Value>, old: Option<&Value>) -> Self {
        let subject = new.or(old).expect("a request has an object");
        let api_version = subject["apiVersion"].as_str().expect("apiVersion");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind = subject["kind"].as_str().expect("kind");
        let gvk = json!({"group": group, "version": version, "kind": kind});
        let gvr = json!({"group": group, "version": version, "resource": plural(group, kind)});
        let options = match operation {
            "CREATE" => {
                json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"})
            }
            "UPDATE" => {
                json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"})
            }
            _ => {
                json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Background"})
            }
        };
        let mut req = json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": subject["metadata"]["name"],
            "operation": operation,
            "userInfo": {"username": "alice@example.com", "uid": "1f2e", "groups": ["developers", "system:authenticated"]},
            "dryRun": false,
            "options": options,
        });
        if let Some(ns) = subject["metadata"]["namespace"].as_str() {
            req["namespace"] = json!(ns);
        }
        if let Some(o) = new {
            req["object"] = o.clone();
        }
        if let Some(o) = old {
            req["oldObject"] = o.clone();
        }
        Self(req)
    }

    /// An UPDATE of a Deployment's scale subresource (`kubectl scale`, the HPA): the
    /// objects are autoscaling/v1 Scales, which carry no annotations of the workload.
    fn scale(deployment: &Value, from: u64, to: u64) -> Self {
        let scale = |replicas: u64| {
            json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {
                    "name": deployment["metadata"]["name"],
                    "namespace": deployment["metadata"]["namespace"],
                    "uid": "9a1c", "resourceVersion": "4711",
                    "creationTimestamp": "2026-11-20T10:00:00Z"
                },
                "spec": {"replicas": replicas},
                "status": {"replicas": from, "selector": "app=api"}
            })
        };
        let gvk = json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
        let gvr = json!({"group": "apps", "version": "v1", "resource": "deployments"});
        Self(json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800003",
            "kind": gvk, "resource": gvr, "subResource": "scale",
            "requestKind": gvk, "requestResource": gvr, "requestSubResource": "scale",
            "name": deployment["metadata"]["name"],
            "namespace": deployment["metadata"]["namespace"],
            "operation": "UPDATE",
            "userInfo": {"username": "alice@example.com", "groups": ["developers", "system:authenticated"]},
            "object": scale(to), "oldObject": scale(from),
            "dryRun": false,
            "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-scale"},
        }))
    }

    /// A CREATE of a Pod's eviction subresource (`kubectl drain`, an agent evicting a
    /// pod): the object is the policy/v1 Eviction, which names the pod and carries none
    /// of its annotations; there is no oldObject.
    fn eviction(pod: &Value) -> Self {
        let gvk = json!({"group": "policy", "version": "v1", "kind": "Eviction"});
        let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
        Self(json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800004",
            "kind": gvk, "resource": gvr, "subResource": "eviction",
            "requestKind": gvk, "requestResource": gvr, "requestSubResource": "eviction",
            "name": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "alice@example.com", "groups": ["developers", "system:authenticated"]},
            "object": {
                "apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {
                    "name": pod["metadata"]["name"],
                    "namespace": pod["metadata"]["namespace"],
                    "creationTimestamp": null
                }
            },
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        }))
    }

    /// By one of the cluster's controllers, with the groups the API server gives a
    /// service account in kube-system, or a core component's certificate.
    fn by_controller(self, user: &str) -> Self {
        let groups: &[&str] = if user.starts_with("system:serviceaccount:kube-system:") {
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ]
        } else if user.starts_with("system:node:") {
            &["system:nodes", "system:authenticated"]
        } else {
            &["system:authenticated"]
        };
        let mut r = self.by(user).in_groups(groups);
        // Controllers name no field manager (the API server records their user agent
        // instead), so their options carry none.
        if let Some(options) = r.0["options"].as_object_mut() {
            options.remove("fieldManager");
        }
        r
    }

    fn by(mut self, user: &str) -> Self {
        self.0["userInfo"]["username"] = json!(user);
        self
    }

    fn in_groups(mut self, groups: &[&str]) -> Self {
        self.0["userInfo"]["groups"] = json!(groups);
        self
    }

    fn field_manager(mut self, manager: &str) -> Self {
        self.0["options"]["fieldManager"] = json!(manager);
        self
    }

    /// Without username, groups and options, as the API server omits them when unset.
    fn without_identity(mut self) -> Self {
        self.0["userInfo"] = json!({});
        if let Some(fields) = self.0.as_object_mut() {
            fields.remove("options");
        }
        self
    }

    /// Annotations on the objects themselves (for a Scale: what a client may send).
    fn objects_annotated(mut self, annotations: &[(&str, &str)]) -> Self {
        for key in ["object", "oldObject"] {
            if self.0[key].is_object() {
                for (k, v) in annotations {
                    self.0[key]["metadata"]["annotations"][*k] = json!(v);
                }
            }
        }
        self
    }

    fn review(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": self.0,
        }))
        .expect("JSON")
    }
}

/// Whether the server's own provenance check (src/provenance.rs) calls the request
/// AI-assisted under this policy.
fn server_calls_ai(policy: &Policy, request: &Request) -> bool {
    let body = request.review();
    let req = blastguard::review::decode(&body)
        .unwrap_or_else(|r| panic!("the server cannot read the sample: {}", r.error));
    // The server's own fast path: the request view and the objects' annotations.
    let (new, old) = req.annotations();
    let facts = blastguard::provenance::Facts::of_view(&req, new, old);
    blastguard::provenance::detect(&facts, &policy.provenance).is_some()
}

/// The policy the chart renders into its ConfigMap.
fn rendered_policy(objs: &[Value]) -> Policy {
    let cm = object(objs, "ConfigMap", "blastguard-policy");
    let text = cm["data"]["policy.yaml"].as_str().expect("policy.yaml");
    Policy::from_yaml(text, Some("the chart's policy ConfigMap".into()))
        .unwrap_or_else(|e| panic!("the rendered policy does not load: {e}\n{text}"))
}

/// A real object from kubectl (client-side, no cluster).
fn kubectl_object(args: &[&str]) -> Value {
    let json = succeed(
        tool("kubectl")
            .args(args)
            .args(["--dry-run=client", "-o", "json"]),
    );
    serde_json::from_str(&json).expect("kubectl prints JSON")
}

fn annotated(object: &Value, annotations: &[(&str, &str)]) -> Value {
    let mut o = object.clone();
    for (k, v) in annotations {
        o["metadata"]["annotations"][*k] = json!(v);
    }
    o
}

struct Objects {
    deployment: Value,
    cronjob: Value,
    namespace: Value,
}

fn sample_objects() -> Objects {
    Objects {
        deployment: kubectl_object(&[
            "create",
            "deployment",
            "api",
            "--image=nginx:1.27",
            "--replicas=3",
            "-n",
            "shop",
        ]),
        cronjob: kubectl_object(&[
            "create",
            "cronjob",
            "nightly",
            "--image=busybox",
            "--schedule=0 3 * * *",
            "-n",
            "shop",
        ]),
        namespace: kubectl_object(&["create", "namespace", "team-x"]),
    }
}

/// Evaluates each case, asserting no expression errors, the expected answer, and that
/// the webhook is sent exactly the requests the server itself calls AI-assisted.
fn check_cases(values: &str, cases: &[(&str, Request, bool)]) {
    let objs = objects(&render(values));
    let conditions = MatchConditions::of(&objs);
    let policy = rendered_policy(&objs);
    for (name, request, sent) in cases {
        let got = conditions
            .sends(request)
            .unwrap_or_else(|e| panic!("{name}: a matchCondition errors: {e}"));
        assert_eq!(got, *sent, "{name}: sent to the webhook?");
        assert_eq!(
            got,
            server_calls_ai(&policy, request),
            "{name}: the matchConditions and the server's provenance check disagree"
        );
    }
}

#[test]
fn match_conditions_send_only_ai_assisted_requests() {
    let o = sample_objects();
    let deploy = &o.deployment;
    let mut updated = deploy.clone();
    updated["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    let marked = annotated(deploy, &[("blastguard.io/ai-agent", "claude-code")]);
    let ai = "system:serviceaccount:ai-agents:claude";
    let hpa = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

    let cases = [
        // People.
        (
            "a person creates a Deployment",
            Request::on("CREATE", Some(deploy), None),
            false,
        ),
        (
            "a person updates it",
            Request::on("UPDATE", Some(&updated), Some(deploy)),
            false,
        ),
        (
            "a person deletes it",
            Request::on("DELETE", None, Some(deploy)),
            false,
        ),
        (
            "a person deletes one an AI made",
            Request::on("DELETE", None, Some(&marked)),
            false,
        ),
        ("a person scales it", Request::scale(deploy, 3, 30), false),
        (
            "the HPA scales it",
            Request::scale(deploy, 3, 30).by(hpa).in_groups(&[
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ]),
            false,
        ),
        (
            "a person scales, the Scale carrying an AI marker",
            Request::scale(deploy, 3, 30).objects_annotated(&[("blastguard.io/ai-agent", "x")]),
            false,
        ),
        (
            "a request without username, groups or options",
            Request::on("CREATE", Some(deploy), None).without_identity(),
            false,
        ),
        (
            "a person marks ai-agent false",
            Request::on(
                "CREATE",
                Some(&annotated(deploy, &[("blastguard.io/ai-agent", "false")])),
                None,
            ),
            false,
        ),
        (
            "a person marks ai-assisted ' False '",
            Request::on(
                "CREATE",
                Some(&annotated(
                    deploy,
                    &[("blastguard.io/ai-assisted", " False ")],
                )),
                None,
            ),
            false,
        ),
        (
            "a person updates an object marked false",
            Request::on(
                "UPDATE",
                Some(&updated),
                Some(&annotated(deploy, &[("blastguard.io/ai-agent", "FALSE")])),
            ),
            false,
        ),
        (
            "a person creates a Namespace",
            Request::on("CREATE", Some(&o.namespace), None),
            false,
        ),
        // AI-assisted.
        (
            "an AI-annotated create",
            Request::on("CREATE", Some(&marked), None),
            true,
        ),
        (
            "an ai-assisted: true update",
            Request::on(
                "UPDATE",
                Some(&annotated(
                    &updated,
                    &[("blastguard.io/ai-assisted", "true")],
                )),
                Some(deploy),
            ),
            true,
        ),
        (
            "a marker whose value is 'falsely'",
            Request::on(
                "CREATE",
                Some(&annotated(deploy, &[("blastguard.io/ai-agent", "falsely")])),
                None,
            ),
            true,
        ),
        (
            // Unicode case folding would call it "false"; the server compares ASCII only.
            "a marker 'fal\u{17f}e'",
            Request::on(
                "CREATE",
                Some(&annotated(
                    deploy,
                    &[("blastguard.io/ai-agent", "fal\u{17f}e")],
                )),
                None,
            ),
            true,
        ),
        (
            "a marker value longer than the regex is run on",
            Request::on(
                "CREATE",
                Some(&annotated(
                    deploy,
                    &[("blastguard.io/ai-agent", &"agent ".repeat(50))],
                )),
                None,
            ),
            true,
        ),
        (
            "an UPDATE that strips the marker",
            Request::on("UPDATE", Some(&updated), Some(&marked)),
            true,
        ),
        (
            "an UPDATE that sets the marker to false",
            Request::on(
                "UPDATE",
                Some(&annotated(&updated, &[("blastguard.io/ai-agent", "false")])),
                Some(&marked),
            ),
            true,
        ),
        (
            "an AI identity deletes",
            Request::on("DELETE", None, Some(deploy)).by(ai),
            true,
        ),
        (
            "an AI identity scales",
            Request::scale(deploy, 3, 30).by(ai),
            true,
        ),
        (
            "an AI tool's field manager scales",
            Request::scale(deploy, 3, 30).field_manager("kubectl-ai-scaler"),
            true,
        ),
        (
            "an AI tool applies server-side",
            Request::on("CREATE", Some(deploy), None).field_manager("kubectl-ai"),
            true,
        ),
        (
            "an AI identity whose name holds a newline",
            Request::on("CREATE", Some(deploy), None).by("system:serviceaccount:ai-agents:x\ny"),
            true,
        ),
        (
            "an AI-annotated Namespace",
            Request::on(
                "CREATE",
                Some(&annotated(
                    &o.namespace,
                    &[("blastguard.io/ai-agent", "copilot")],
                )),
                None,
            ),
            true,
        ),
        (
            "an AI-annotated CronJob",
            Request::on(
                "CREATE",
                Some(&annotated(
                    &o.cronjob,
                    &[("blastguard.io/ai-assisted", "true")],
                )),
                None,
            ),
            true,
        ),
    ];
    check_cases("", &cases);
}

/// The ReplicaSet the deployment controller makes for a Deployment: the Deployment's
/// annotations copied (blastguard's included), owned by it.
fn replica_set_of(deployment: &Value) -> Value {
    let meta = &deployment["metadata"];
    let mut annotations = meta["annotations"].clone();
    if !annotations.is_object() {
        annotations = json!({});
    }
    annotations["deployment.kubernetes.io/revision"] = json!("1");
    annotations["deployment.kubernetes.io/desired-replicas"] =
        json!(deployment["spec"]["replicas"].to_string());
    annotations["deployment.kubernetes.io/max-replicas"] = json!("4");
    let mut template = deployment["spec"]["template"].clone();
    template["metadata"]["labels"]["pod-template-hash"] = json!("5d4f8c7b9");
    let mut labels = template["metadata"]["labels"].clone();
    labels["pod-template-hash"] = json!("5d4f8c7b9");
    let mut selector = deployment["spec"]["selector"].clone();
    selector["matchLabels"]["pod-template-hash"] = json!("5d4f8c7b9");
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-5d4f8c7b9", meta["name"].as_str().expect("name")),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                "uid": "3c1b2a90-8f0e-4d7c-9b5a-2e6f1d0c4b3a",
                "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {"replicas": deployment["spec"]["replicas"], "selector": selector, "template": template}
    })
}

/// The Job the CronJob controller makes for one run: the job template's metadata and
/// spec, owned by the CronJob.
fn job_of(cronjob: &Value) -> Value {
    let template = &cronjob["spec"]["jobTemplate"];
    let mut metadata = template["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["name"] = json!(format!(
        "{}-29000000",
        cronjob["metadata"]["name"].as_str().expect("name")
    ));
    metadata["namespace"] = cronjob["metadata"]["namespace"].clone();
    metadata["ownerReferences"] = json!([{
        "apiVersion": "batch/v1", "kind": "CronJob", "name": cronjob["metadata"]["name"],
        "uid": "7d0e5c1a-2b3f-4a6e-8c9d-0f1e2d3c4b5a",
        "controller": true, "blockOwnerDeletion": true
    }]);
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": template["spec"]})
}

#[test]
fn match_conditions_never_send_the_clusters_controllers_by_annotation() {
    let o = sample_objects();
    let marked = annotated(&o.deployment, &[("blastguard.io/ai-agent", "claude-code")]);
    let rs = replica_set_of(&marked);
    assert_eq!(
        rs["metadata"]["annotations"]["blastguard.io/ai-agent"],
        "claude-code"
    );
    let mut rs_down = rs.clone();
    rs_down["spec"]["replicas"] = json!(0);
    let mut cronjob = o.cronjob.clone();
    cronjob["spec"]["jobTemplate"]["metadata"]["annotations"] =
        json!({"blastguard.io/ai-assisted": "true"});
    let job = job_of(&cronjob);
    let hpa = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "api", "namespace": "shop", "annotations": {"blastguard.io/ai-agent": "copilot"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
            "minReplicas": 2, "maxReplicas": 10,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
        }
    });
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api-5d4f8c7b9-x2k4q", "namespace": "shop", "annotations": {"blastguard.io/ai-agent": "claude-code"}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}
    });
    let node = |annotations: Value| {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "worker-1", "labels": {"kubernetes.io/hostname": "worker-1"}, "annotations": annotations},
            "spec": {"podCIDR": "10.244.1.0/24"}
        })
    };
    let node_old =
        node(json!({"blastguard.io/ai-agent": "claude-code", "node.alpha.kubernetes.io/ttl": "0"}));
    let node_new = node(json!({"node.alpha.kubernetes.io/ttl": "15"}));
    let ai = "system:serviceaccount:ai-agents:bot";

    let cases = [
        // The cluster's own controllers: consequences of admitted changes.
        (
            "the deployment controller creates a ReplicaSet carrying the Deployment's markers",
            Request::on("CREATE", Some(&rs), None)
                .by_controller("system:serviceaccount:kube-system:deployment-controller"),
            false,
        ),
        (
            "the replicaset controller's identity, the same ReplicaSet",
            Request::on("CREATE", Some(&rs), None)
                .by_controller("system:serviceaccount:kube-system:replicaset-controller"),
            false,
        ),
        (
            "the controller manager's own identity, the same ReplicaSet",
            Request::on("CREATE", Some(&rs), None).by_controller("system:kube-controller-manager"),
            false,
        ),
        (
            "the deployment controller scales the marked old ReplicaSet down",
            Request::on("UPDATE", Some(&rs_down), Some(&rs))
                .by_controller("system:serviceaccount:kube-system:deployment-controller"),
            false,
        ),
        (
            "the CronJob controller creates a Job from the marked job template",
            Request::on("CREATE", Some(&job), None)
                .by_controller("system:serviceaccount:kube-system:cronjob-controller"),
            false,
        ),
        (
            "a kubelet updates its Node, which an AI once marked",
            Request::on("UPDATE", Some(&node_new), Some(&node_old))
                .by_controller("system:node:worker-1"),
            false,
        ),
        // Not the cluster's controllers.
        (
            "an AI identity creates the same ReplicaSet",
            Request::on("CREATE", Some(&rs), None).by(ai),
            true,
        ),
        (
            "a service account outside kube-system creates the same ReplicaSet",
            Request::on("CREATE", Some(&rs), None)
                .by("system:serviceaccount:argocd:argocd-application-controller"),
            true,
        ),
        (
            "a name that only starts like kube-system's service accounts",
            Request::on("CREATE", Some(&rs), None)
                .by("system:serviceaccount:kube-systemx:deployer"),
            true,
        ),
        (
            "a person creates an AI-annotated HorizontalPodAutoscaler",
            Request::on("CREATE", Some(&hpa), None),
            true,
        ),
        (
            "a person creates an AI-annotated Pod",
            Request::on("CREATE", Some(&pod), None),
            true,
        ),
        // An eviction carries no annotations of the pod: identity alone.
        (
            "an AI identity evicts a pod",
            Request::eviction(&pod).by(ai),
            true,
        ),
        (
            "a person evicts an AI-annotated pod",
            Request::eviction(&pod),
            false,
        ),
        (
            "a person evicts, the Eviction carrying an AI marker",
            Request::eviction(&pod).objects_annotated(&[("blastguard.io/ai-agent", "x")]),
            false,
        ),
        (
            "the node lifecycle controller evicts a pod",
            Request::eviction(&pod)
                .by_controller("system:serviceaccount:kube-system:node-controller"),
            false,
        ),
    ];
    check_cases("", &cases);

    // Identity still applies to a controller: an AI agent run as a kube-system service
    // account is sent. And with no controllers configured, the copied markers are AI.
    let values = r#"
policy:
  provenance:
    users: ["system:serviceaccount:ai-agents:*", "system:serviceaccount:kube-system:ai-*"]
"#;
    let cases = [
        (
            "an AI agent in kube-system creates the ReplicaSet",
            Request::on("CREATE", Some(&rs), None)
                .by_controller("system:serviceaccount:kube-system:ai-operator"),
            true,
        ),
        (
            "an AI agent in kube-system evicts a pod",
            Request::eviction(&pod).by_controller("system:serviceaccount:kube-system:ai-operator"),
            true,
        ),
        (
            "the deployment controller, still",
            Request::on("CREATE", Some(&rs), None)
                .by_controller("system:serviceaccount:kube-system:deployment-controller"),
            false,
        ),
    ];
    check_cases(values, &cases);
    let cases = [(
        "no controllers configured: the deployment controller's copy is marked",
        Request::on("CREATE", Some(&rs), None)
            .by_controller("system:serviceaccount:kube-system:deployment-controller"),
        true,
    )];
    check_cases("policy: {provenance: {controllers: []}}\n", &cases);
}

#[test]
fn match_conditions_agree_with_the_server_on_the_shared_fixtures() {
    // tests/fixtures: AdmissionReviews built from real kubectl output, shared with the
    // engine's tests.
    let objs = objects(&render(""));
    let conditions = MatchConditions::of(&objs);
    let policy = rendered_policy(&objs);
    let mut answers = BTreeSet::new();
    let dir = repo().join("tests/fixtures");
    for entry in std::fs::read_dir(&dir).expect("tests/fixtures") {
        let path = entry.expect("fixture").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let review: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read fixture")).expect("JSON");
        let request = Request(review["request"].clone());
        let sent = conditions
            .sends(&request)
            .unwrap_or_else(|e| panic!("{}: a matchCondition errors: {e}", path.display()));
        assert_eq!(
            sent,
            server_calls_ai(&policy, &request),
            "{}: the matchConditions and the server's provenance check disagree",
            path.display()
        );
        answers.insert(sent);
    }
    assert_eq!(
        answers,
        BTreeSet::from([false, true]),
        "the fixtures hold both kinds"
    );
}

#[test]
fn match_conditions_follow_the_configured_provenance_values() {
    // Globs with regex metacharacters, groups, another annotation, sticky off: the
    // rendering must escape them and match exactly as the server's globs do.
    let values = r#"
policy:
  provenance:
    annotations: [example.com/made-by-ai]
    users: ["bot-??", "*@ai.example.com"]
    groups: ["ai:agents", "team-(x)+*"]
    fieldManagers: ["agent.*"]
    sticky: false
"#;
    let o = sample_objects();
    let d = &o.deployment;
    let create = || Request::on("CREATE", Some(d), None);
    let marked = annotated(d, &[("example.com/made-by-ai", "yes")]);
    let cases = [
        ("user bot-42", create().by("bot-42"), true),
        ("user bot-4", create().by("bot-4"), false),
        ("user bot-423", create().by("bot-423"), false),
        (
            "user x@ai.example.com",
            create().by("x@ai.example.com"),
            true,
        ),
        (
            "user x@aiXexample.com",
            create().by("x@aiXexample.com"),
            false,
        ),
        (
            "group ai:agents",
            create().in_groups(&["developers", "ai:agents"]),
            true,
        ),
        (
            "group ai:agents-2",
            create().in_groups(&["ai:agents-2"]),
            false,
        ),
        (
            "group team-(x)+1",
            create().in_groups(&["team-(x)+1"]),
            true,
        ),
        ("group team-x1", create().in_groups(&["team-x1"]), false),
        (
            "field manager agent.k",
            create().field_manager("agent.k"),
            true,
        ),
        (
            "field manager agentXk",
            create().field_manager("agentXk"),
            false,
        ),
        (
            "the configured annotation",
            Request::on("CREATE", Some(&marked), None),
            true,
        ),
        (
            "an annotation no longer configured",
            Request::on(
                "CREATE",
                Some(&annotated(d, &[("blastguard.io/ai-agent", "x")])),
                None,
            ),
            false,
        ),
        (
            "stripping the marker with sticky off",
            Request::on("UPDATE", Some(d), Some(&marked)),
            false,
        ),
        (
            "a person deletes a marked object",
            Request::on("DELETE", None, Some(&marked)),
            false,
        ),
        (
            "an AI group deletes",
            Request::on("DELETE", None, Some(d)).in_groups(&["ai:agents"]),
            true,
        ),
        (
            "an AI group scales",
            Request::scale(d, 3, 4).in_groups(&["ai:agents"]),
            true,
        ),
    ];
    check_cases(values, &cases);

    // No signal at all: nothing is AI-assisted, nothing is sent, and nothing errors.
    let none =
        "policy:\n  provenance: {annotations: [], users: [], groups: [], fieldManagers: []}\n";
    let conditions = MatchConditions::of(&objects(&render(none)));
    for request in [
        Request::on("CREATE", Some(&marked), None).by("system:serviceaccount:ai-agents:a"),
        Request::scale(d, 1, 9),
    ] {
        assert_eq!(conditions.sends(&request), Ok(false));
    }
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

// ---------------------------------------------------------------------------------
// The policy, values.schema.json, the pods.

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
        let out = helm_template(NAMESPACE, values, &[]);
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
            NAMESPACE,
            "replicaCount: 1\npodDisruptionBudget: {enabled: false}\n",
            &[]
        )
        .status
        .success()
    );
    let old = helm_template(NAMESPACE, "", &["--kube-version", "1.29.0"]);
    assert!(!old.status.success());
    assert!(
        text(&old.stderr).contains(">=1.30.0-0"),
        "{}",
        text(&old.stderr)
    );
}

fn arg_value<'a>(args: &'a [Value], flag: &str) -> &'a str {
    args.iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
}

/// (apiGroups, resources, verbs) of each rule, sorted, for comparing rule sets.
fn rules(role: &Value) -> BTreeSet<(Vec<String>, Vec<String>, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        let mut out: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    };
    role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["verbs"]),
            )
        })
        .collect()
}

#[test]
fn cluster_rbac_is_minimal() {
    let objs = objects(&render(""));
    let read = || vec!["get".to_string(), "list".to_string(), "watch".to_string()];
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Read-only, cluster-wide: Namespaces (labels) and the kinds whose Scale the engine
    // judges (the parent's approval), from the same list the engine compiles in, plus
    // the policy's custom workloads. Nothing else: no Secrets, no Pods, no writes.
    let mut scaled: BTreeMap<String, Vec<String>> = BTreeMap::new();
    scaled.insert(String::new(), vec!["namespaces".into()]);
    for k in blastguard::kinds::built_in() {
        if k.reach == blastguard::kinds::Reach::Replicas
            && k.subresources.iter().any(|s| s == "scale")
        {
            scaled
                .entry(k.group.clone())
                .or_default()
                .push(k.resource.clone());
        }
    }
    scaled.insert("argoproj.io".into(), vec!["rollouts".into()]);
    let want: BTreeSet<_> = scaled
        .into_iter()
        .map(|(group, mut resources)| {
            resources.sort();
            (vec![group], resources, read())
        })
        .collect();
    let mut want = want;
    // A Service's endpoints, listed when an AI change rewires it.
    want.insert((
        owned(&["discovery.k8s.io"]),
        owned(&["endpointslices"]),
        owned(&["list"]),
    ));
    let cluster_role = object(&objs, "ClusterRole", "blastguard-cluster-state");
    assert_eq!(rules(cluster_role), want);
    assert!(
        want.iter().any(|(g, r, _)| g == &owned(&["apps"])
            && r == &owned(&["deployments", "replicasets", "statefulsets"])),
        "the built-in scaled kinds are there: {want:?}"
    );
    // Writes only on the change-set records, only in the release namespace.
    let role = object(&objs, "Role", "blastguard-change-sets");
    assert_eq!(role["metadata"]["namespace"], "blastguard");
    assert_eq!(
        rules(role),
        BTreeSet::from([
            (
                owned(&["blastguard.io"]),
                owned(&["changesets"]),
                owned(&["create", "delete", "get", "list", "update", "watch"]),
            ),
            (
                owned(&["blastguard.io"]),
                owned(&["spentapprovals"]),
                owned(&["create", "delete", "get", "list"]),
            ),
        ])
    );
    // Each bound to the pods' ServiceAccount and nothing else.
    for (kind, name, role_kind, role_name) in [
        (
            "ClusterRoleBinding",
            "blastguard-cluster-state",
            "ClusterRole",
            "blastguard-cluster-state",
        ),
        (
            "RoleBinding",
            "blastguard-change-sets",
            "Role",
            "blastguard-change-sets",
        ),
    ] {
        let b = object(&objs, kind, name);
        assert_eq!(b["roleRef"]["kind"], role_kind);
        assert_eq!(b["roleRef"]["name"], role_name);
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "blastguard", "namespace": "blastguard"}])
        );
    }
    let roles = objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        .count();
    // And the read of the webhook configuration, checked in
    // tests/chart_self_protection.rs.
    assert_eq!(roles, 3, "no other role");
    // A custom workload of the policy is readable too, under its plural.
    let custom = objects(&render(
        "policy:\n  workloads:\n    - {group: example.com, kind: Canary, replicas: /spec/replicas, template: /spec/template, resource: canaries}\n",
    ));
    let rules = rules(object(&custom, "ClusterRole", "blastguard-cluster-state"));
    assert!(rules.contains(&(owned(&["example.com"]), owned(&["canaries"]), read())));
    assert!(!rules.iter().any(|(g, _, _)| g == &owned(&["argoproj.io"])));
    // The CRD: namespaced records of blastguard.io/v1alpha1 with the columns an
    // operator reads.
    let crd = object(
        &objs,
        "CustomResourceDefinition",
        "changesets.blastguard.io",
    );
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["group"], "blastguard.io");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Key",
            "Namespaces",
            "Pods",
            "Window",
            "Last Change",
            "Touched",
            "Expires"
        ]
    );
}

#[test]
fn pods_are_highly_available_and_hardened() {
    let objs = objects(&render(""));
    let d = object(&objs, "Deployment", "blastguard");
    let spec = &d["spec"];
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    let selects_pods = |selector: &Value| {
        selector
            .as_object()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| pod_labels[k] == *v))
    };

    // Availability.
    assert_eq!(spec["replicas"], 2);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    );
    let pdb = object(&objs, "PodDisruptionBudget", "blastguard");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(selects_pods(&pdb["spec"]["selector"]["matchLabels"]));
    let spread = pod["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints");
    let nodes = spread
        .iter()
        .find(|t| t["topologyKey"] == "kubernetes.io/hostname")
        .expect("spread over nodes");
    assert_eq!(nodes["maxSkew"], 1);
    assert!(selects_pods(&nodes["labelSelector"]["matchLabels"]));
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .expect("preStop sleep");
    assert!(
        pre_stop > 0
            && pre_stop
                < pod["terminationGracePeriodSeconds"]
                    .as_i64()
                    .expect("grace")
    );

    // Probes on the admin port, which is where the server's admin listener is.
    let args = c["args"].as_array().expect("args");
    assert_eq!(c["command"], json!(["/blastguard"]));
    assert_eq!(args[0], "serve");
    assert_eq!(arg_value(args, "--admin-listen"), "0.0.0.0:8080");
    assert_eq!(arg_value(args, "--listen"), "0.0.0.0:8443");
    assert!(
        c["ports"]
            .as_array()
            .expect("ports")
            .contains(&json!({"name": "admin", "containerPort": 8080, "protocol": "TCP"}))
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "admin"})
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/livez", "port": "admin"})
    );

    // Restricted security.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    // The token the cluster state reads with (cluster.enabled, the default).
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(
        object(&objs, "ServiceAccount", "blastguard")["automountServiceAccountToken"],
        true
    );
    assert_eq!(arg_value(args, "--state"), "cluster");
    assert_eq!(arg_value(args, "--state-namespace"), "blastguard");
    assert_eq!(arg_value(args, "--webhook-configuration"), "blastguard");
    assert_eq!(pod["serviceAccountName"], "blastguard");
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());

    // Each file flag points into a whole-directory mount (never subPath, so kubelet's
    // symlink swaps reach the pod) of the object that holds that file.
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    assert!(mounts.iter().all(|m| m.get("subPath").is_none()));
    let volumes = pod["volumes"].as_array().expect("volumes");
    let source_of = |flag: &str| {
        let path = Path::new(arg_value(args, flag));
        let dir = path.parent().expect("a file in a directory");
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == dir.to_str().expect("UTF-8"))
            .unwrap_or_else(|| panic!("{flag}: nothing mounted at {dir:?}"));
        assert_eq!(mount["readOnly"], true);
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mount's volume");
        let file = path
            .file_name()
            .expect("file")
            .to_str()
            .expect("UTF-8")
            .to_string();
        (volume.clone(), file)
    };
    for (flag, key) in [("--tls-cert", "tls.crt"), ("--tls-key", "tls.key")] {
        let (volume, file) = source_of(flag);
        let secret = object(
            &objs,
            "Secret",
            volume["secret"]["secretName"].as_str().expect("secret"),
        );
        assert!(
            volume["secret"]["items"]
                .as_array()
                .expect("items")
                .contains(&json!({"key": key, "path": file}))
        );
        assert!(!secret_data(secret, key).is_empty());
    }
    for (flag, configmap) in [
        ("--policy", "blastguard-policy"),
        ("--allowed-signers", "blastguard-allowed-signers"),
    ] {
        let (volume, file) = source_of(flag);
        assert_eq!(volume["configMap"]["name"], configmap);
        assert!(object(&objs, "ConfigMap", configmap)["data"][&file].is_string());
    }
    // The policy names the same allowed_signers file the flag does.
    assert_eq!(
        rendered_policy(&objs).approvals.allowed_signers,
        arg_value(args, "--allowed-signers")
    );

    // Optional: a priority class.
    let optional = objects(&render(OPTIONAL_PARTS));
    let pod = &object(&optional, "Deployment", "blastguard")["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");

    // Without the cluster state the pods get no token and count in memory.
    let memory = objects(&render("cluster: {enabled: false}\n"));
    let pod = &object(&memory, "Deployment", "blastguard")["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        object(&memory, "ServiceAccount", "blastguard")["automountServiceAccountToken"],
        false
    );
    let args = pod["containers"][0]["args"].as_array().expect("args");
    assert_eq!(arg_value(args, "--state"), "memory");
    assert!(!args.iter().any(|a| {
        a.as_str().is_some_and(|a| {
            a.starts_with("--state-namespace") || a.starts_with("--webhook-configuration")
        })
    }));
}

#[test]
fn dockerfile_builds_the_image_the_pods_run() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let final_stage = dockerfile
        .rsplit_once("\nFROM ")
        .expect("a multi-stage build")
        .1;
    assert!(final_stage.starts_with("gcr.io/distroless/"));
    assert!(final_stage.contains("COPY --from=build /blastguard /blastguard"));
    let objs = objects(&render(""));
    let pod = &object(&objs, "Deployment", "blastguard")["spec"]["template"]["spec"];
    let user = pod["securityContext"]["runAsUser"]
        .as_i64()
        .expect("runAsUser");
    assert!(final_stage.contains(&format!("\nUSER {user}:{user}\n")));
    let command = pod["containers"][0]["command"][0]
        .as_str()
        .expect("command");
    assert!(final_stage.contains(&format!("ENTRYPOINT [\"{command}\"]")));
    let ignored = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    for dir in ["target", ".tools", ".git"] {
        assert!(
            ignored.lines().any(|l| l == dir),
            ".dockerignore keeps out {dir}"
        );
    }
}

// ---------------------------------------------------------------------------------
// manifests/ and its certificate step.

/// The default rendering without the certificate material: the generated Secrets
/// dropped, the webhook's caBundle removed.
fn without_certificate_material(mut objs: Vec<Value>) -> Vec<Value> {
    let before = objs.len();
    objs.retain(|o| {
        kind_and_name(o) != ("Secret".into(), "blastguard-ca".into())
            && kind_and_name(o) != ("Secret".into(), "blastguard-tls".into())
    });
    assert_eq!(before - objs.len(), 2, "two generated Secrets");
    for o in &mut objs {
        if o["kind"] == "ValidatingWebhookConfiguration" {
            for w in o["webhooks"].as_array_mut().expect("webhooks") {
                let cc = w["clientConfig"].as_object_mut().expect("clientConfig");
                assert!(cc.remove("caBundle").is_some(), "a generated caBundle");
            }
        }
    }
    objs
}

fn sorted(mut objs: Vec<Value>) -> Vec<Value> {
    objs.sort_by_key(kind_and_name);
    objs
}

fn manifests() -> Vec<Value> {
    ["blastguard.yaml", "webhook.yaml"]
        .iter()
        .flat_map(|f| {
            objects(
                &std::fs::read_to_string(repo().join("manifests").join(f))
                    .expect("manifests/ is committed"),
            )
        })
        .collect()
}

#[test]
fn manifests_are_helm_template_without_the_certificate_material() {
    // Byte for byte what scripts/render-manifests.sh writes...
    let dir = tempfile::tempdir().expect("tempdir");
    succeed(
        tool("bash")
            .arg(repo().join("scripts/render-manifests.sh"))
            .arg(dir.path()),
    );
    for f in ["blastguard.yaml", "webhook.yaml"] {
        let fresh = std::fs::read_to_string(dir.path().join(f)).expect("rendered");
        let committed = std::fs::read_to_string(repo().join("manifests").join(f))
            .expect("manifests/ is committed");
        assert!(
            fresh == committed,
            "manifests/{f} is stale: run scripts/render-manifests.sh"
        );
    }
    // ...and, object for object, helm template of the defaults minus the certificates.
    assert_eq!(
        sorted(manifests()),
        sorted(without_certificate_material(objects(&render(""))))
    );
}

/// The fenced shell block between the markers in docs/install.md.
fn documented_certificate_script() -> String {
    let doc = std::fs::read_to_string(repo().join("docs/install.md")).expect("docs/install.md");
    let block = doc
        .split("<!-- BEGIN certificate-script")
        .nth(1)
        .and_then(|rest| rest.split("<!-- END certificate-script -->").next())
        .expect("docs/install.md marks the certificate script");
    let body = block
        .split("```sh")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```sh block");
    body.lines()
        .map(|l| l.strip_prefix("   ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_documented_certificate_step_completes_the_plain_manifests() {
    let dir = tempfile::tempdir().expect("tempdir");
    succeed(
        tool("bash")
            .args(["-c", &documented_certificate_script()])
            .current_dir(dir.path())
            .env("MANIFESTS", repo().join("manifests")),
    );
    let secret_file = dir.path().join("tls-secret.yaml");
    let webhook_file = dir.path().join("webhook.yaml");
    for version in ["1.30.0".to_string(), newest_kubernetes_version()] {
        kubernetes_validate(&[secret_file.clone(), webhook_file.clone()], &version)
            .unwrap_or_else(|r| panic!("Kubernetes {version}:\n{r}"));
    }

    // The Secret is the one the pods mount, in their namespace.
    let secret_objs = objects(&std::fs::read_to_string(&secret_file).expect("secret"));
    let secret = &secret_objs[0];
    let plain = manifests();
    let deployment = object(&plain, "Deployment", "blastguard");
    let tls_volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("tls volume");
    assert_eq!(
        secret["metadata"]["name"],
        tls_volume["secret"]["secretName"]
    );
    assert_eq!(secret["metadata"]["namespace"], NAMESPACE);

    // The webhook configuration is manifests/webhook.yaml plus the CA bundle...
    let patched = objects(&std::fs::read_to_string(&webhook_file).expect("webhook"));
    let bundle = ca_bundle(&patched);
    let mut stripped = patched[0].clone();
    stripped["webhooks"][0]["clientConfig"]
        .as_object_mut()
        .expect("clientConfig")
        .remove("caBundle");
    assert_eq!(
        stripped,
        *object(&plain, "ValidatingWebhookConfiguration", "blastguard")
    );
    // ...and the API server, trusting only that bundle, reaches the server by its name.
    let cert = secret_data(secret, "tls.crt");
    let key = secret_data(secret, "tls.key");
    tls_handshake(&cert, &key, &bundle, SERVICE_DNS_NAME)
        .unwrap_or_else(|e| panic!("TLS to {SERVICE_DNS_NAME} fails: {e}"));
}

// ---------------------------------------------------------------------------------
// Certificates.

/// A TLS handshake in memory between a rustls server (the webhook's TLS stack) with
/// this certificate and key, and a client that trusts only `ca_pem` and asks for
/// `server_name`, as the API server does with the webhook's caBundle.
fn tls_handshake(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    server_name: &str,
) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("key PEM: {e}"))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the server cannot use this certificate and key: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(|e| format!("CA PEM: {e}"))?)
            .map_err(|e| format!("CA: {e}"))?;
    }
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let mut client: rustls::Connection = rustls::ClientConnection::new(Arc::new(client), name)
        .map_err(|e| e.to_string())?
        .into();
    let mut server: rustls::Connection = rustls::ServerConnection::new(Arc::new(server))
        .map_err(|e| e.to_string())?
        .into();
    fn pump(from: &mut rustls::Connection, to: &mut rustls::Connection) -> Result<(), String> {
        let mut bytes = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut bytes).map_err(|e| e.to_string())?;
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).map_err(|e| e.to_string())?;
            to.process_new_packets().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        pump(&mut client, &mut server).map_err(|e| format!("server: {e}"))?;
        pump(&mut server, &mut client).map_err(|e| format!("client: {e}"))?;
    }
    Err("the handshake did not finish".into())
}

/// notBefore and notAfter (unix seconds) and the DNS names of a PEM certificate.
fn certificate_facts(pem: &str) -> (i64, i64, Vec<String>) {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM certificate");
    let cert = pem.parse_x509().expect("X.509 certificate");
    let names = cert
        .subject_alternative_name()
        .expect("SAN extension parses")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
        names,
    )
}

const DAY: i64 = 86_400;

#[test]
fn generated_certificates_serve_tls_for_the_webhook_service() {
    let objs = objects(&render(""));
    let tls = object(&objs, "Secret", "blastguard-tls");
    let ca = object(&objs, "Secret", "blastguard-ca");
    let bundle = ca_bundle(&objs);
    assert_eq!(
        secret_data(ca, "tls.crt"),
        bundle,
        "the bundle is the CA's certificate"
    );
    assert_eq!(secret_data(tls, "ca.crt"), bundle);
    let (cert, key) = (secret_data(tls, "tls.crt"), secret_data(tls, "tls.key"));

    tls_handshake(&cert, &key, &bundle, SERVICE_DNS_NAME)
        .unwrap_or_else(|e| panic!("TLS to {SERVICE_DNS_NAME} fails: {e}"));
    assert!(
        tls_handshake(&cert, &key, &bundle, "blastguard.other.svc").is_err(),
        "the certificate is for this Service only"
    );
    let stranger_ca = ca_bundle(&objects(&render("")));
    assert!(
        tls_handshake(&cert, &key, &stranger_ca, SERVICE_DNS_NAME).is_err(),
        "another CA is not trusted"
    );

    // A long-lived CA, a shorter serving certificate, its expiry recorded for renewal.
    let now = unix_now();
    let (ca_from, ca_until, _) = certificate_facts(&bundle);
    let (from, until, names) = certificate_facts(&cert);
    assert!((ca_until - ca_from - 3650 * DAY).abs() <= DAY);
    assert!((until - from - 365 * DAY).abs() <= DAY);
    assert!((until - now - 365 * DAY).abs() <= DAY);
    assert_eq!(
        names,
        [
            "blastguard",
            "blastguard.blastguard",
            "blastguard.blastguard.svc",
            "blastguard.blastguard.svc.cluster.local"
        ]
    );
    let recorded: i64 = tls["metadata"]["annotations"]["certs.blastguard.io/not-after"]
        .as_str()
        .expect("not-after annotation")
        .parse()
        .expect("unix seconds");
    assert!((recorded - until).abs() <= 60);
}

mod fake_apiserver {
    //! Stands in for the Kubernetes API server, which cannot run here, for
    //! `helm template --dry-run=server`: the only way helm's `lookup` reaches a cluster.
    //! It answers what helm asks, in the API server's shapes: /version, discovery
    //! (/api, /apis, an APIResourceList per group version), and GET of a named object
    //! (the stored object, or a 404 Status). helm template writes nothing.

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::{Method, StatusCode, Uri, header};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};

    type Store = Arc<Mutex<BTreeMap<String, Value>>>;

    /// A resource: plural name, kind, namespaced.
    type Resource = (&'static str, &'static str, bool);

    /// The resources the chart renders by default, per group version.
    const RESOURCES: &[(&str, &[Resource])] = &[
        (
            "v1",
            &[
                ("secrets", "Secret", true),
                ("configmaps", "ConfigMap", true),
                ("services", "Service", true),
                ("serviceaccounts", "ServiceAccount", true),
            ],
        ),
        ("apps/v1", &[("deployments", "Deployment", true)]),
        (
            "policy/v1",
            &[("poddisruptionbudgets", "PodDisruptionBudget", true)],
        ),
        (
            "apiextensions.k8s.io/v1",
            &[(
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            )],
        ),
        (
            "rbac.authorization.k8s.io/v1",
            &[
                ("clusterroles", "ClusterRole", false),
                ("clusterrolebindings", "ClusterRoleBinding", false),
                ("roles", "Role", true),
                ("rolebindings", "RoleBinding", true),
            ],
        ),
        (
            "admissionregistration.k8s.io/v1",
            &[
                (
                    "validatingwebhookconfigurations",
                    "ValidatingWebhookConfiguration",
                    false,
                ),
                (
                    "validatingadmissionpolicies",
                    "ValidatingAdmissionPolicy",
                    false,
                ),
                (
                    "validatingadmissionpolicybindings",
                    "ValidatingAdmissionPolicyBinding",
                    false,
                ),
            ],
        ),
    ];

    pub struct FakeApiServer {
        pub url: String,
        store: Store,
    }

    impl FakeApiServer {
        pub fn start() -> Self {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
            listener.set_nonblocking(true).expect("nonblocking");
            let url = format!("http://{}", listener.local_addr().expect("address"));
            let store: Store = Arc::default();
            let app = axum::Router::new()
                .fallback(answer)
                .with_state(store.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    axum::serve(listener, app).await.expect("serve");
                });
            });
            Self { url, store }
        }

        fn path(kind: &str, namespace: &str, name: &str) -> String {
            let (gv, plural) = RESOURCES
                .iter()
                .find_map(|(gv, rs)| {
                    rs.iter()
                        .find(|(_, k, _)| *k == kind)
                        .map(|(p, _, _)| (*gv, *p))
                })
                .expect("a known kind");
            let prefix = if gv.contains('/') {
                format!("/apis/{gv}")
            } else {
                format!("/api/{gv}")
            };
            format!("{prefix}/namespaces/{namespace}/{plural}/{name}")
        }

        /// Stores an object as `helm install` left it: with the release's ownership
        /// metadata and the fields the API server adds.
        pub fn put_installed(&self, object: &Value, release: &str, namespace: &str) {
            let mut o = object.clone();
            let name = o["metadata"]["name"].as_str().expect("name").to_string();
            let kind = o["kind"].as_str().expect("kind").to_string();
            o["metadata"]["namespace"] = json!(namespace);
            o["metadata"]["annotations"]["meta.helm.sh/release-name"] = json!(release);
            o["metadata"]["annotations"]["meta.helm.sh/release-namespace"] = json!(namespace);
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
            o["metadata"]["uid"] = json!("6b1f3a52-1c1e-4c57-9a0e-0d5c1d1f2a10");
            o["metadata"]["resourceVersion"] = json!("1001");
            o["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            let path = Self::path(&kind, namespace, &name);
            self.store.lock().expect("store").insert(path, o);
        }

        pub fn remove(&self, kind: &str, namespace: &str, name: &str) {
            self.store
                .lock()
                .expect("store")
                .remove(&Self::path(kind, namespace, name));
        }
    }

    /// A JSON answer, as the API server gives it.
    fn reply(status: StatusCode, body: Value) -> Response {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }

    fn not_found(path: &str) -> Response {
        reply(
            StatusCode::NOT_FOUND,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": format!("{path} not found"),
                "reason": "NotFound", "code": 404
            }),
        )
    }

    async fn answer(State(store): State<Store>, method: Method, uri: Uri) -> Response {
        let path = uri.path();
        if method != Method::GET {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "MethodNotAllowed", "code": 405}),
            );
        }
        match path {
            "/version" => reply(
                StatusCode::OK,
                json!({
                    "major": "1", "minor": "31", "gitVersion": "v1.31.0",
                    "platform": "linux/amd64", "goVersion": "go1.22.5", "compiler": "gc"
                }),
            ),
            "/api" => reply(
                StatusCode::OK,
                json!({
                    "kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]
                }),
            ),
            "/apis" => {
                let groups: Vec<Value> = RESOURCES
                    .iter()
                    .filter_map(|(gv, _)| gv.split_once('/'))
                    .map(|(group, version)| {
                        let v = json!({"groupVersion": format!("{group}/{version}"), "version": version});
                        json!({"name": group, "versions": [v], "preferredVersion": v})
                    })
                    .collect();
                reply(
                    StatusCode::OK,
                    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
                )
            }
            _ => {
                let list = RESOURCES
                    .iter()
                    .find(|(gv, _)| path == format!("/api/{gv}") || path == format!("/apis/{gv}"));
                if let Some((gv, resources)) = list {
                    let resources: Vec<Value> = resources
                        .iter()
                        .map(|(plural, kind, namespaced)| {
                            json!({
                                "name": plural, "singularName": kind.to_lowercase(),
                                "namespaced": namespaced, "kind": kind,
                                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]
                            })
                        })
                        .collect();
                    return reply(
                        StatusCode::OK,
                        json!({"kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": gv, "resources": resources}),
                    );
                }
                match store.lock().expect("store").get(path) {
                    Some(object) => reply(StatusCode::OK, object.clone()),
                    None => not_found(path),
                }
            }
        }
    }
}

#[test]
fn generated_certificates_are_kept_across_helm_upgrade() {
    let api = fake_apiserver::FakeApiServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: test, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: test, user: {{token: test}}}}]\ncontexts: [{{name: test, context: {{cluster: test, user: test, namespace: {NAMESPACE}}}}}]\ncurrent-context: test\n",
            api.url
        ),
    )
    .expect("kubeconfig");
    // What `helm upgrade` renders: templates with lookup answered by the cluster.
    let upgrade = || {
        objects(&succeed(
            tool("helm")
                .args(["template", RELEASE])
                .arg(chart_dir())
                .args([
                    "--namespace",
                    NAMESPACE,
                    "--dry-run=server",
                    "--disable-openapi-validation",
                ])
                .env("KUBECONFIG", &kubeconfig),
        ))
    };
    let ca_of = |objs: &[Value]| secret_data(object(objs, "Secret", "blastguard-ca"), "tls.crt");
    let leaf_of = |objs: &[Value]| {
        let s = object(objs, "Secret", "blastguard-tls");
        (secret_data(s, "tls.crt"), secret_data(s, "tls.key"))
    };

    let installed = objects(&render(""));
    let ca_secret = object(&installed, "Secret", "blastguard-ca");
    let tls_secret = object(&installed, "Secret", "blastguard-tls");

    // Nothing in the cluster yet: every rendering makes a new CA.
    assert_ne!(ca_of(&upgrade()), ca_of(&installed));

    // Installed: the upgrade keeps the CA, the bundle and the serving certificate.
    api.put_installed(ca_secret, RELEASE, NAMESPACE);
    api.put_installed(tls_secret, RELEASE, NAMESPACE);
    let kept = upgrade();
    assert_eq!(ca_of(&kept), ca_of(&installed));
    assert_eq!(ca_bundle(&kept), ca_bundle(&installed));
    assert_eq!(leaf_of(&kept), leaf_of(&installed));
    for name in ["blastguard-ca", "blastguard-tls"] {
        assert_eq!(
            object(&kept, "Secret", name)["metadata"]["annotations"],
            object(&installed, "Secret", name)["metadata"]["annotations"],
            "{name}: the recorded expiry is kept"
        );
    }

    // Each reason for a new serving certificate: due for renewal, lost, issued for
    // other names. The new one comes from the same CA, so the bundle stays.
    let mut due = tls_secret.clone();
    due["metadata"]["annotations"]["certs.blastguard.io/not-after"] =
        json!((unix_now() + 10 * DAY).to_string());
    let mut renamed = tls_secret.clone();
    renamed["metadata"]["annotations"]["certs.blastguard.io/dns-names"] =
        json!("blastguard.old.svc");
    for (why, stored) in [
        ("due for renewal", Some(due)),
        ("lost", None),
        ("for other names", Some(renamed)),
    ] {
        match &stored {
            Some(s) => api.put_installed(s, RELEASE, NAMESPACE),
            None => api.remove("Secret", NAMESPACE, "blastguard-tls"),
        }
        let renewed = upgrade();
        assert_eq!(ca_of(&renewed), ca_of(&installed), "{why}: the CA is kept");
        assert_eq!(
            ca_bundle(&renewed),
            ca_bundle(&installed),
            "{why}: the bundle is kept"
        );
        let (cert, key) = leaf_of(&renewed);
        assert_ne!(
            cert,
            leaf_of(&installed).0,
            "{why}: a new serving certificate"
        );
        tls_handshake(&cert, &key, &ca_bundle(&installed), SERVICE_DNS_NAME)
            .unwrap_or_else(|e| panic!("{why}: the new certificate does not serve: {e}"));
        let (_, until, _) = certificate_facts(&cert);
        assert!(
            (until - unix_now() - 365 * DAY).abs() <= DAY,
            "{why}: a full year"
        );
    }

    // The CA due for renewal: a new CA, a serving certificate from it, and a bundle
    // that trusts both, so the pods' current certificate keeps working until kubelet
    // delivers the new one. The next upgrade drops the old CA.
    api.put_installed(tls_secret, RELEASE, NAMESPACE);
    let mut ca_due = ca_secret.clone();
    ca_due["metadata"]["annotations"]["certs.blastguard.io/not-after"] =
        json!((unix_now() + 10 * DAY).to_string());
    api.put_installed(&ca_due, RELEASE, NAMESPACE);
    let rotated = upgrade();
    let new_ca = ca_of(&rotated);
    assert_ne!(new_ca, ca_of(&installed), "a new CA");
    let bundle = ca_bundle(&rotated);
    assert_eq!(bundle, [new_ca.clone(), ca_of(&installed)].concat());
    let (cert, key) = leaf_of(&rotated);
    tls_handshake(&cert, &key, &new_ca, SERVICE_DNS_NAME)
        .unwrap_or_else(|e| panic!("the certificate from the new CA does not serve: {e}"));
    let (old_cert, old_key) = leaf_of(&installed);
    tls_handshake(&old_cert, &old_key, &bundle, SERVICE_DNS_NAME)
        .unwrap_or_else(|e| panic!("the pods' current certificate is no longer trusted: {e}"));
    let (_, ca_until, _) = certificate_facts(&new_ca);
    assert!((ca_until - unix_now() - 3650 * DAY).abs() <= DAY);
    for o in &rotated {
        if o["kind"] == "Secret" {
            api.put_installed(o, RELEASE, NAMESPACE);
        }
    }
    let after = upgrade();
    assert_eq!(ca_of(&after), new_ca);
    assert_eq!(ca_bundle(&after), new_ca, "the old CA leaves the bundle");
    assert_eq!(leaf_of(&after), leaf_of(&rotated));
}

// ---------------------------------------------------------------------------------
// Alerts and the dashboard, through promtool.

fn promtool(dir: &Path, args: &[&str]) -> String {
    succeed(tool("promtool").args(args).current_dir(dir))
}

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

    let dir = tempfile::tempdir().expect("tempdir");
    let full = serde_yaml::to_string(&json!({"groups": groups})).expect("YAML");
    std::fs::write(dir.path().join("rules.yaml"), full).expect("write");
    promtool(dir.path(), &["check", "rules", "rules.yaml"]);

    // The unit tests compare labels only: annotations are templates of the live value.
    let mut bare = groups.clone();
    for group in bare.as_array_mut().expect("groups") {
        for r in group["rules"].as_array_mut().expect("rules") {
            r.as_object_mut().expect("rule").remove("annotations");
        }
    }
    let bare = serde_yaml::to_string(&json!({"groups": bare})).expect("YAML");
    std::fs::write(dir.path().join("alerts.yaml"), bare).expect("write");
    std::fs::write(dir.path().join("tests.yaml"), ALERT_TESTS).expect("write");
    promtool(dir.path(), &["test", "rules", "tests.yaml"]);
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
