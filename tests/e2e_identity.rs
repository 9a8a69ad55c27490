//! End to end, through a real API server (tests/common/cluster.rs): provenance by
//! identity, and sticky provenance.
//!
//! The API server authenticates the requester (here by impersonation: cluster-admin's
//! `kubectl --as`), authorizes it with RBAC, and the webhook configuration's
//! matchConditions decide from `request.userInfo` whether to send the request. So an
//! AI agent's own service account (`system:serviceaccount:ai-agents:*`, in the chart's
//! default policy) is judged on `kubectl scale` and `kubectl delete`, which carry no
//! annotations, while the HorizontalPodAutoscaler's identity doing the very same
//! scale is never sent. And an update that strips the AI marker from a marked object
//! is still judged as AI-assisted.

mod common;

use common::cluster::{AI_AGENT, BOT, E2e, HPA, Steps, deployment};
use serde_json::json;

/// RBAC that lets `kubectl --as` act as these identities in the test namespaces.
fn grant(e2e: &E2e) {
    e2e.namespaces(&["ai-agents", "team", "prod"]);
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot", "namespace": "ai-agents"}});
    e2e.apply(&sa, &[], None).expect_ok();
    let role = |name: &str, rules: serde_json::Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name}, "rules": rules})
    };
    let binding = |ns: &str, role: &str, sa_ns: &str, sa: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": role, "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}]})
    };
    // The agent may change workloads in the test namespaces, and nothing else.
    e2e.apply(
        &role(
            "e2e-ai-agent",
            json!([{"apiGroups": ["apps"],
                    "resources": ["deployments", "deployments/scale", "replicasets"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]),
        ),
        &[],
        None,
    )
    .expect_ok();
    // The bootstrap role of the HPA controller grants get and update on */scale;
    // `kubectl scale` also reads the Deployment and sends a PATCH.
    e2e.apply(
        &role(
            "e2e-hpa-kubectl-scale",
            json!([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
                   {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch", "update"]}]),
        ),
        &[],
        None,
    )
    .expect_ok();
    for ns in ["team", "prod"] {
        e2e.apply(&binding(ns, "e2e-ai-agent", "ai-agents", "bot"), &[], None)
            .expect_ok();
        e2e.apply(
            &binding(
                ns,
                "e2e-hpa-kubectl-scale",
                "kube-system",
                "horizontal-pod-autoscaler",
            ),
            &[],
            None,
        )
        .expect_ok();
    }
}

#[test]
fn ai_identities_are_judged_the_hpa_is_not_and_provenance_is_sticky() {
    let e2e = E2e::start();
    grant(&e2e);
    // A person's workloads: never sent.
    e2e.apply(&deployment("team", "x", 2, &[]), &[], None)
        .expect_ok();
    e2e.apply(&deployment("prod", "db", 40, &[]), &[], None)
        .expect_ok();
    assert_eq!(e2e.webhook.requests(), 0.0);
    let mut steps = Steps::default();

    steps.run("the agent's kubectl scale beyond the limit is denied, within it admitted", || {
        let err = e2e
            .kubectl_as(BOT, &["-n", "team", "scale", "deployment/x", "--replicas=40"])
            .expect_err();
        for part in [
            r#"admission webhook "validate.blastguard.io" denied the request: blastguard: this AI-assisted scale of Deployment team/x"#,
            "AI signal: requester system:serviceaccount:ai-agents:bot.",
            "pods affected 38 > 10 (maxPodsAffected)",
            r#""operation":"scale","replicas":40"#,
        ] {
            assert!(err.contains(part), "{part:?} not in:\n{err}");
        }
        assert_eq!(e2e.jsonpath("team", "deployment/x", "{.spec.replicas}"), "2");
        let sent = e2e.webhook.requests();
        e2e.kubectl_as(BOT, &["-n", "team", "scale", "deployment/x", "--replicas=5"])
            .expect_ok();
        assert_eq!(e2e.webhook.requests(), sent + 1.0);
        assert_eq!(e2e.jsonpath("team", "deployment/x", "{.spec.replicas}"), "5");
    });

    steps.run(
        "the HPA's identity makes the same scale without being sent",
        || {
            let sent = e2e.webhook.requests();
            e2e.kubectl_as(
                HPA,
                &["-n", "team", "scale", "deployment/x", "--replicas=40"],
            )
            .expect_ok();
            assert_eq!(
                e2e.jsonpath("team", "deployment/x", "{.spec.replicas}"),
                "40"
            );
            assert_eq!(
                e2e.webhook.requests(),
                sent,
                "{:#?}",
                e2e.webhook.decisions()
            );
            e2e.wait_for_replicaset("team", "x", 40);
        },
    );

    steps.run(
        "the agent's delete of a 40-replica Deployment in prod is denied",
        || {
            let err = e2e
                .kubectl_as(BOT, &["-n", "prod", "delete", "deployment/db"])
                .expect_err();
            for part in [
                "blastguard: this AI-assisted delete of Deployment prod/db",
                "AI signal: requester system:serviceaccount:ai-agents:bot.",
                "pods affected 40 > 0 (maxPodsAffected)",
                r#""operation":"delete""#,
            ] {
                assert!(err.contains(part), "{part:?} not in:\n{err}");
            }
            assert!(e2e.get("prod", "deployment/db").is_some());
            // The same delete by a person is not the webhook's business.
            let sent = e2e.webhook.requests();
            e2e.kubectl(&["-n", "prod", "delete", "deployment/db"])
                .expect_ok();
            assert_eq!(e2e.webhook.requests(), sent);
        },
    );

    // An AI-marked Deployment that grew to 40 replicas: created by the agent's tool
    // within the limits (sent, admitted), then scaled by a person (a scale carries no
    // annotations and a person's is never sent).
    steps.run("setup: an AI-marked Deployment with 40 replicas", || {
        let sent = e2e.webhook.requests();
        e2e.apply(
            &deployment("team", "y", 2, &[(AI_AGENT, "claude-code")]),
            &[],
            None,
        )
        .expect_ok();
        assert_eq!(e2e.webhook.requests(), sent + 1.0);
        e2e.kubectl(&["-n", "team", "scale", "deployment/y", "--replicas=40"])
            .expect_ok();
        assert_eq!(e2e.webhook.requests(), sent + 1.0);
        e2e.apply(&deployment("team", "z", 40, &[]), &[], None)
            .expect_ok();
    });

    steps.run("a template change that strips the marker is still AI-assisted (sticky)", || {
        // One request: the marker removed and every pod replaced.
        let strip_and_change = json!({
            "metadata": {"annotations": {AI_AGENT: null}},
            "spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.28"}]}}}
        })
        .to_string();
        let err = e2e
            .kubectl(&["-n", "team", "patch", "deployment/y", "-p", &strip_and_change])
            .expect_err();
        for part in [
            "blastguard: this AI-assisted update of Deployment team/y",
            r#"AI signal: annotation blastguard.io/ai-agent="claude-code" on the current object (removing it does not make a change human)."#,
            "pods affected 40 > 10 (maxPodsAffected)",
        ] {
            assert!(err.contains(part), "{part:?} not in:\n{err}");
        }
        let y = e2e.get("team", "deployment/y").unwrap();
        assert_eq!(y["metadata"]["annotations"][AI_AGENT], "claude-code");
        assert_eq!(y["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.27");
        // The same patch by the agent's identity: denied as well.
        let err = e2e
            .kubectl_as(BOT, &["-n", "team", "patch", "deployment/y", "-p", &strip_and_change])
            .expect_err();
        assert!(err.contains("this AI-assisted update of Deployment team/y"), "{err}");
        // The control: on a Deployment that was never marked, the same patch by a
        // person is not sent and goes through.
        let sent = e2e.webhook.requests();
        e2e.kubectl(&["-n", "team", "patch", "deployment/z", "-p", &strip_and_change])
            .expect_ok();
        assert_eq!(e2e.webhook.requests(), sent);
    });

    steps.run(
        "removing the marker alone takes an approval: a hand-back is a change too",
        || {
            // Without this, an agent marked only by its annotation would drop the
            // marker in an update that replaces no pod, and every later change of the
            // object would be a person's (docs/security.md).
            let sent = e2e.webhook.requests();
            let err = e2e
                .kubectl(&[
                    "-n",
                    "team",
                    "annotate",
                    "deployment/y",
                    &format!("{AI_AGENT}-"),
                ])
                .expect_err();
            assert!(
                err.contains("removes the AI marker blastguard.io/ai-agent"),
                "{err}"
            );
            assert!(
                err.contains(r#""kind":"Approval""#),
                "the payload to sign: {err}"
            );
            assert_eq!(e2e.webhook.requests(), sent + 1.0);
            let y = e2e.get("team", "deployment/y").unwrap();
            assert_eq!(y["metadata"]["annotations"][AI_AGENT], "claude-code");
        },
    );

    steps.finish();
}
