//! End to end, through a real API server (tests/common/cluster.rs): the chart installs,
//! upgrades and uninstalls with the real `helm` against a real kube-apiserver.
//!
//! What only a real cluster shows: that the API server accepts every object the chart
//! renders (its validation, not a schema's), that it compiles the matchConditions' CEL
//! (it rejects an expression that does not compile, so an accepted configuration is
//! one whose expression compiles), that the chart's `lookup` finds the generated
//! certificates on `helm upgrade` (`helm template` has no cluster to look in), and that
//! `helm uninstall` leaves no webhook configuration that would hold AI changes.

mod common;

use common::cluster::{AI_AGENT, E2e, Steps, chart, deployment};
use serde_json::Value;

/// The second release, in the default certificate mode (`generate`).
const GENERATED: &str = "generated";
const GENERATED_NS: &str = "bg-generate";

#[test]
fn the_chart_installs_upgrades_and_uninstalls_on_a_real_api_server() {
    let mut e2e = E2e::start();
    e2e.namespaces(&["team"]);
    let mut steps = Steps::default();

    steps.run(
        "every object of the webhook.url install is in the cluster",
        || {
            let manifest = e2e
                .helm(&["get", "manifest", "blastguard", "-n", "blastguard"])
                .expect_ok();
            let kinds = kinds_of(&e2e, &manifest);
            assert_eq!(
                kinds,
                [
                    // The inbox's roles, for people to bind (tests/chart_inbox.rs).
                    "ClusterRole/blastguard-approver",
                    "ClusterRole/blastguard-requester",
                    "ConfigMap/blastguard-allowed-signers",
                    "ConfigMap/blastguard-policy",
                    "ServiceAccount/blastguard",
                    "ValidatingAdmissionPolicy/blastguard-self-protection",
                    "ValidatingAdmissionPolicyBinding/blastguard-self-protection",
                    "ValidatingWebhookConfiguration/blastguard",
                ],
                "webhook.url renders nothing that needs pods"
            );
            // Every object the release made exists, as the API server stored it.
            e2e.kubectl_with(&["get", "-f", "-"], Some(&manifest))
                .expect_ok();

            let vwc = e2e
                .get("", "validatingwebhookconfiguration/blastguard")
                .unwrap();
            let hook = &vwc["webhooks"][0];
            assert_eq!(hook["name"], "validate.blastguard.io");
            assert_eq!(
                hook["clientConfig"]["url"],
                format!("https://{}/validate", e2e.webhook.listen)
            );
            assert!(hook["clientConfig"].get("service").is_none());
            assert_eq!(hook["failurePolicy"], "Fail");
            assert_eq!(hook["sideEffects"], "NoneOnDryRun");
            assert_eq!(hook["matchConditions"][0]["name"], "ai-assisted");
            // The stored expression is the chart's, unchanged.
            let rendered = rendered_objects(&e2e, &manifest);
            let chart_vwc = rendered
                .iter()
                .find(|o| o["kind"] == "ValidatingWebhookConfiguration")
                .unwrap();
            assert_eq!(
                hook["matchConditions"],
                chart_vwc["webhooks"][0]["matchConditions"]
            );
            assert_eq!(hook["rules"], chart_vwc["webhooks"][0]["rules"]);
        },
    );

    steps.run(
        "the API server compiles matchConditions: broken CEL is rejected, the chart's accepted",
        || {
            let mut copy = e2e
                .get("", "validatingwebhookconfiguration/blastguard")
                .unwrap();
            copy["metadata"] = serde_json::json!({"name": "blastguard-copy"});
            // The chart's configuration under another name: accepted (the control).
            e2e.kubectl_with(
                &["create", "--dry-run=server", "-f", "-"],
                Some(&copy.to_string()),
            )
            .expect_ok();
            for (broken, why) in [
                ("request.userInfo.username.matches(", "Syntax error"),
                ("request.userInfo.username + 1", "no matching overload"),
            ] {
                copy["webhooks"][0]["matchConditions"][0]["expression"] =
                    Value::String(broken.into());
                let err = e2e
                    .kubectl_with(
                        &["create", "--dry-run=server", "-f", "-"],
                        Some(&copy.to_string()),
                    )
                    .expect_err();
                assert!(
                    err.contains("matchConditions[0].expression")
                        && err.contains("compilation failed")
                        && err.contains(why),
                    "{broken:?} not rejected as expected:\n{err}"
                );
            }
        },
    );

    steps.run(
        "the registration works: an AI change is sent to the local server and denied",
        || {
            let before = e2e.webhook.requests();
            let err = e2e
                .apply(
                    &deployment("team", "big", 40, &[(AI_AGENT, "claude-code")]),
                    &["--dry-run=server"],
                    None,
                )
                .expect_err();
            assert!(
                err.contains(
                    r#"admission webhook "validate.blastguard.io" denied the request: blastguard:"#
                ) && err.contains("pods affected 40 > 10 (maxPodsAffected)"),
                "{err}"
            );
            assert_eq!(e2e.webhook.requests(), before + 1.0);
        },
    );

    steps.run(
        "certificates.mode=generate: every object is accepted, optional ones too",
        || {
            // NetworkPolicy and the Grafana dashboard ConfigMap are built-in kinds, so the
            // API server can judge them; ServiceMonitor and PrometheusRule need CRDs that are
            // not installed here.
            e2e.helm(&[
                "install",
                GENERATED,
                chart().to_str().unwrap(),
                "--namespace",
                GENERATED_NS,
                "--create-namespace",
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "grafanaDashboard.enabled=true",
            ])
            .expect_ok();
            let manifest = e2e
                .helm(&["get", "manifest", GENERATED, "-n", GENERATED_NS])
                .expect_ok();
            let kinds = kinds_of(&e2e, &manifest);
            for expected in [
                "ConfigMap/generated-blastguard-allowed-signers",
                "ConfigMap/generated-blastguard-dashboard",
                "ConfigMap/generated-blastguard-policy",
                "Deployment/generated-blastguard",
                "NetworkPolicy/generated-blastguard",
                "PodDisruptionBudget/generated-blastguard",
                "Secret/generated-blastguard-ca",
                "Secret/generated-blastguard-tls",
                "Service/generated-blastguard",
                "ServiceAccount/generated-blastguard",
                "ValidatingWebhookConfiguration/generated-blastguard",
            ] {
                assert!(
                    kinds.iter().any(|k| k == expected),
                    "{expected} not in {kinds:?}"
                );
            }
            e2e.kubectl_with(&["get", "-f", "-"], Some(&manifest))
                .expect_ok();
            // The Deployment is real: its controller makes the ReplicaSet (pods stay Pending).
            e2e.wait_for_replicaset(GENERATED_NS, "generated-blastguard", 2);
            let vwc = e2e
                .get("", "validatingwebhookconfiguration/generated-blastguard")
                .unwrap();
            assert_eq!(
                vwc["webhooks"][0]["clientConfig"]["service"]["name"],
                "generated-blastguard"
            );
        },
    );

    steps.run(
        "helm upgrade keeps the generated CA and serving certificate (lookup)",
        || {
            let before = generated_certificates(&e2e);
            assert!(
                before.iter().all(|s| !s.is_empty()),
                "generated certificates missing: {before:?}"
            );
            e2e.helm(&[
                "upgrade",
                GENERATED,
                chart().to_str().unwrap(),
                "--namespace",
                GENERATED_NS,
                "--reuse-values",
                "--set",
                "replicaCount=3",
            ])
            .expect_ok();
            // The upgrade did change the release...
            assert_eq!(
                e2e.jsonpath(
                    GENERATED_NS,
                    "deployment/generated-blastguard",
                    "{.spec.replicas}"
                ),
                "3"
            );
            // ...and kept the CA, its key, the serving certificate and the bundle.
            assert_eq!(generated_certificates(&e2e), before);
            // Without a cluster to look in, the chart makes a new CA every time: what kept
            // them above is `lookup` against the real API server.
            let template = e2e
                .helm(&[
                    "template",
                    GENERATED,
                    chart().to_str().unwrap(),
                    "--namespace",
                    GENERATED_NS,
                    "--show-only",
                    "templates/webhook.yaml",
                ])
                .expect_ok();
            assert!(
                !template.contains(&before[3]),
                "helm template reused the CA bundle"
            );
        },
    );

    steps.run(
        "helm uninstall leaves no webhook configuration; Deployments, AI-marked too, are created",
        || {
            for (release, ns) in [(GENERATED, GENERATED_NS), ("blastguard", "blastguard")] {
                e2e.helm(&["uninstall", release, "--namespace", ns, "--wait"])
                    .expect_ok();
            }
            let left = e2e
                .kubectl(&["get", "validatingwebhookconfigurations", "-o", "name"])
                .expect_ok();
            assert_eq!(left.trim(), "", "webhook configurations left behind");
            // With the server stopped too, an AI-marked change over the limits can only be
            // created if nothing would call a webhook for it any more.
            e2e.webhook.stop();
            e2e.apply(
                &deployment("team", "after-ai", 40, &[(AI_AGENT, "claude-code")]),
                &[],
                None,
            )
            .expect_ok();
            e2e.apply(&deployment("team", "after", 2, &[]), &[], None)
                .expect_ok();
            e2e.wait_for_replicaset("team", "after-ai", 40);
        },
    );

    steps.finish();
}

/// The objects of a manifest as the API server's client reads them (`kubectl create
/// --dry-run=client`), without contacting the admission chain.
fn rendered_objects(e2e: &E2e, manifest: &str) -> Vec<Value> {
    let out = e2e
        .kubectl_with(
            &["create", "--dry-run=client", "-o", "json", "-f", "-"],
            Some(manifest),
        )
        .expect_ok();
    // One JSON document per object, one after the other.
    serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect()
}

/// `Kind/name` of every object in a manifest, sorted.
fn kinds_of(e2e: &E2e, manifest: &str) -> Vec<String> {
    let mut kinds: Vec<String> = rendered_objects(e2e, manifest)
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    kinds.sort();
    kinds
}

/// The generated release's CA Secret data, serving Secret data and annotations (the
/// certificate's notAfter, CA hash), and the webhook configuration's CA bundle (last).
fn generated_certificates(e2e: &E2e) -> Vec<String> {
    let ns = GENERATED_NS;
    let bundle = e2e.jsonpath(
        "",
        "validatingwebhookconfiguration/generated-blastguard",
        "{.webhooks[0].clientConfig.caBundle}",
    );
    vec![
        e2e.jsonpath(ns, "secret/generated-blastguard-ca", "{.data}"),
        e2e.jsonpath(ns, "secret/generated-blastguard-tls", "{.data}"),
        e2e.jsonpath(
            ns,
            "secret/generated-blastguard-tls",
            "{.metadata.annotations}",
        ),
        bundle,
    ]
}
