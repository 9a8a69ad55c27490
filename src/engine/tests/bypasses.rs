//! The ways a large AI change got through, each closed (docs/security.md lists them
//! with these tests' names), and the controllers' work that must never be stopped.

use serde_json::{Value, json};

use super::*;
use crate::verdict::Reason::Unmeasurable;

const CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";

fn statefulset(replicas: u64, extra: Value) -> Value {
    let mut o = workload("StatefulSet", Some(replicas), "app:1", ai());
    for (k, v) in extra.as_object().unwrap() {
        o["spec"][k] = v.clone();
    }
    o
}

fn rollout(replicas: Value, image: &str) -> Value {
    let mut o = deploy(1, image, ai());
    o["apiVersion"] = json!("argoproj.io/v1alpha1");
    o["kind"] = json!("Rollout");
    o["spec"]["replicas"] = replicas;
    o
}

fn message(r: &Reviewed) -> String {
    response(r)["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The deployment controller copies a Deployment's annotations onto the ReplicaSet it
/// creates; the CronJob controller creates Jobs from an annotated template. Neither is
/// a new AI change, so neither may wait on an approval.
#[test]
fn controllers_copying_ai_annotations_are_not_ai_assisted() {
    let mut rs = workload("ReplicaSet", Some(40), "app:1", ai());
    rs["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
        "name": "api", "uid": "u", "controller": true, "blockOwnerDeletion": true}]);
    let mut job = workload("Job", Some(20), "app:1", ai());
    job["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "CronJob",
        "name": "api", "uid": "u", "controller": true}]);
    let cases = [
        (
            "replicaset controller",
            Req::create("ReplicaSet", "prod", rs.clone()).user(CONTROLLER),
        ),
        (
            "deployment controller scaling it",
            Req::update("ReplicaSet", "prod", rs.clone(), rs.clone())
                .user("system:serviceaccount:kube-system:deployment-controller"),
        ),
        (
            "controller manager's own identity",
            Req::create("ReplicaSet", "prod", rs.clone()).user("system:kube-controller-manager"),
        ),
        (
            "cronjob controller",
            Req::create("Job", "prod", job)
                .user("system:serviceaccount:kube-system:cronjob-controller"),
        ),
        (
            "a kubelet",
            Req::create("Pod", "prod", workload("Pod", None, "a", ai()))
                .user("system:node:worker-1"),
        ),
    ];
    for (name, req) in cases {
        assert_eq!(
            verdict_of(&engine().review(&req.body())).1,
            NotAiAssisted,
            "{name}"
        );
    }
    // The same ReplicaSet created by an AI agent itself is judged.
    let by_ai = Req::create("ReplicaSet", "prod", rs).user(AI_SA);
    assert_eq!(
        verdict_of(&engine().review(&by_ai.body())),
        (Deny, OverLimits, 40)
    );
}

/// An identity signal still applies to a controller identity a policy names.
#[test]
fn an_identity_signal_applies_to_controller_identities_too() {
    let yaml = DEFAULT_POLICY_YAML.replace(
        "users: [\"system:serviceaccount:ai-agents:*\"]",
        "users: [\"system:serviceaccount:kube-system:ai-operator\"]",
    );
    let req = Req::create("Deployment", "prod", deploy(3, "a", human()))
        .user("system:serviceaccount:kube-system:ai-operator");
    assert_eq!(
        verdict_of(&engine_with(&yaml).review(&req.body())),
        (Deny, OverLimits, 3)
    );
}

/// Bypass 2: spec changes that replace pods without touching the template.
#[test]
fn spec_changes_outside_the_template_replace_every_pod() {
    let sts = |extra: Value| statefulset(40, extra);
    let rows = [
        (
            "ordinals.start 0 -> 1000",
            sts(json!({"ordinals": {"start": 0}})),
            sts(json!({"ordinals": {"start": 1000}})),
            40,
        ),
        (
            "volumeClaimTemplates",
            sts(json!({})),
            sts(json!({"volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}]})),
            40,
        ),
        (
            "selector",
            sts(json!({})),
            sts(json!({"selector": {"matchLabels": {"app": "other"}}})),
            40,
        ),
        (
            "revisionHistoryLimit is harmless",
            sts(json!({"revisionHistoryLimit": 10})),
            sts(json!({"revisionHistoryLimit": 3})),
            0,
        ),
        (
            "minReadySeconds is harmless",
            sts(json!({})),
            sts(json!({"minReadySeconds": 30})),
            0,
        ),
        (
            "the rollout strategy's numbers are harmless",
            sts(
                json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}}),
            ),
            sts(
                json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 39}}}),
            ),
            0,
        ),
        (
            "the strategy's type is not a number",
            sts(json!({"updateStrategy": {"type": "RollingUpdate"}})),
            sts(json!({"updateStrategy": {"type": "OnDelete"}})),
            40,
        ),
    ];
    for (name, old, new, pods) in rows {
        let got = engine().review(&Req::update("StatefulSet", "staging", old, new).body());
        assert_eq!(verdict_of(&got).2, pods, "{name}");
    }
}

/// Bypass 3: the digest binds labels, so an approval for a Namespace is no approval
/// for the same Namespace relabelled.
#[test]
fn the_digest_an_approval_binds_changes_with_the_labels() {
    let ns = |labels: Value| {
        Req::new("CREATE", "Namespace", None).object(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "payments", "labels": labels, "annotations": ai()}, "spec": {"finalizers": ["kubernetes"]}}))
    };
    let digest = |labels: Value| {
        let r = engine().review(&ns(labels).body());
        r.judged()
            .unwrap()
            .verdict
            .digest
            .clone()
            .expect("a digest to approve")
    };
    let critical = digest(json!({"blastguard.io/tier": "critical"}));
    assert_ne!(critical, digest(json!({})));
    assert_ne!(
        critical,
        digest(
            json!({"blastguard.io/tier": "critical", "pod-security.kubernetes.io/enforce": "privileged"})
        )
    );
}

/// Bypass 4: a fresh change-id on every object still meets the requester's count.
#[test]
fn fresh_change_ids_do_not_reset_namespace_reach() {
    let e = engine();
    let ids = ["c1", "c2", "c3", "c4", "c5", "c6"];
    let namespaces = ["n1", "n2", "n3", "n4", "n5", "n6"];
    let verdicts: Vec<_> = ids
        .iter()
        .zip(namespaces)
        .map(|(id, ns)| {
            let mut annotations = ai();
            annotations["blastguard.io/change-id"] = json!(id);
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "annotations": annotations}});
            verdict_of(&e.review(&Req::create("ConfigMap", ns, cm).body())).0
        })
        .collect();
    assert_eq!(verdicts, [Allow, Allow, Allow, Deny, Deny, Deny]);
}

/// Bypass 5: fifty changes of ten pods are five hundred pods.
#[test]
fn a_change_set_has_a_pod_budget() {
    let e = engine();
    let mut admitted = 0;
    for ns in ["t1", "t1", "t2", "t2", "t3", "t3"] {
        let r = e.review(&Req::create("Deployment", ns, deploy(10, "a", ai())).body());
        if verdict_of(&r).0 == Allow {
            admitted += 1;
        } else {
            assert!(
                message(&r)
                    .contains("pods affected by this change set 60 > 50 (maxPodsPerChangeSet)"),
                "{}",
                message(&r)
            );
        }
    }
    assert_eq!(
        admitted, 5,
        "10 + 10 + 10 + 10 + 10 = 50 pods fit; the sixth is over"
    );
    // A dry run is judged alike and never spends the budget.
    let dry = e.review(
        &Req::create("Deployment", "t1", deploy(10, "a", ai()))
            .dry_run()
            .body(),
    );
    assert_eq!(verdict_of(&dry).0, Deny);
    // The window is the policy's: a short one forgets.
    let short = engine_with(&DEFAULT_POLICY_YAML.replace("window: 1h", "window: 1ns"));
    for _ in 0..6 {
        let r = short.review(&Req::create("Deployment", "t1", deploy(10, "a", ai())).body());
        assert_eq!(verdict_of(&r).0, Allow);
    }
}

/// Bypass 6: a custom workload counted like a Deployment.
#[test]
fn custom_workloads_are_counted_through_their_pointers() {
    let rows = [
        (
            "create 500",
            Req::create("Rollout", "staging", rollout(json!(500), "a")),
            (Deny, OverLimits, 500),
        ),
        (
            "create 3",
            Req::create("Rollout", "staging", rollout(json!(3), "a")),
            (Allow, WithinLimits, 3),
        ),
        (
            "template change: max(old, new)",
            Req::update(
                "Rollout",
                "staging",
                rollout(json!(8), "a"),
                rollout(json!(9), "b"),
            ),
            (Allow, WithinLimits, 9),
        ),
        (
            "replicas only",
            Req::update(
                "Rollout",
                "staging",
                rollout(json!(8), "a"),
                rollout(json!(30), "a"),
            ),
            (Deny, OverLimits, 22),
        ),
        (
            "replicas not an int32",
            Req::create("Rollout", "staging", rollout(json!(4.5), "a")),
            (Deny, Unmeasurable, 0),
        ),
    ];
    for (name, req, want) in rows {
        assert_eq!(verdict_of(&engine().review(&req.body())), want, "{name}");
    }
}

/// Bypass 8: what cannot be measured is not admitted on a guess.
#[test]
fn unmeasurable_changes_fail_closed() {
    // 2^64+5: serde reads it as a float, which once fell back to the default of 1.
    let huge: Value = serde_json::from_str("18446744073709551621").unwrap();
    let mut scale_without_object = Req::scale("staging", 1, 2).user(AI_SA);
    scale_without_object.object = None;
    let rows = [
        (
            "delete without oldObject",
            Req::new("DELETE", "Deployment", Some("staging")).user(AI_SA),
            "carries no oldObject",
        ),
        (
            "replicas 2^64+5",
            Req::create("Deployment", "staging", deploy(1, "a", ai())).object({
                let mut o = deploy(1, "a", ai());
                o["spec"]["replicas"] = huge;
                o
            }),
            "spec.replicas is 1.8446744073709552e+19, not an int32",
        ),
        (
            "replicas as a string",
            Req::create("Deployment", "staging", {
                let mut o = deploy(1, "a", ai());
                o["spec"]["replicas"] = json!("40");
                o
            }),
            "spec.replicas is \"40\", not an int32",
        ),
        (
            "negative parallelism",
            Req::create("Job", "staging", {
                let mut o = workload("Job", Some(1), "a", ai());
                o["spec"]["parallelism"] = json!(-3);
                o
            }),
            "spec.parallelism is -3",
        ),
        (
            "scale without a Scale",
            scale_without_object,
            "carries no Scale object",
        ),
    ];
    for (name, req, want) in rows {
        let r = engine().review(&req.body());
        assert_eq!(verdict_of(&r).0, Deny, "{name}");
        assert_eq!(verdict_of(&r).1, Unmeasurable, "{name}");
        let msg = message(&r);
        assert!(msg.contains(want), "{name}: {msg}");
        assert!(
            !msg.contains("must sign"),
            "{name}: no payload for what cannot be measured: {msg}"
        );
    }
    // A person's change is never measured, so never refused for this.
    let mut person = deploy(1, "a", human());
    person["spec"]["replicas"] = json!("40");
    let r = engine().review(&Req::create("Deployment", "staging", person).body());
    assert_eq!(verdict_of(&r).1, NotAiAssisted);
}

/// An eviction takes one pod down; an AI identity's eviction in a protected namespace
/// needs approval, a person's never reaches the rules.
#[test]
fn evictions_count_one_pod_by_identity() {
    let eviction = |user: &'static str| {
        let mut r = Req::new("CREATE", "Pod", Some("prod"))
            .user(user)
            .object(json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "api-1", "namespace": "prod", "annotations": ai()}}));
        r.group = "policy";
        r.kind = "Eviction";
        r.sub = Some("eviction");
        r
    };
    assert_eq!(
        verdict_of(&engine().review(&eviction(AI_SA).body())),
        (Deny, OverLimits, 1)
    );
    assert_eq!(
        verdict_of(&engine().review(&eviction("alice@example.com").body())).1,
        NotAiAssisted
    );
}

/// Two steps around sticky provenance: drop the marker in an update that replaces no
/// pod, then make the large change as a "person". The first step is itself a change
/// that takes approval, and its denial carries the payload to sign.
#[test]
fn removing_the_marker_takes_an_approval() {
    let marked = deploy(40, "a", ai());
    for (name, new_annotations) in [
        ("removed", human()),
        ("set to false", json!({"blastguard.io/ai-agent": "false"})),
    ] {
        let r = engine().review(
            &Req::update(
                "Deployment",
                "staging",
                marked.clone(),
                deploy(40, "a", new_annotations),
            )
            .body(),
        );
        assert_eq!(verdict_of(&r), (Deny, OverLimits, 0), "{name}");
        let msg = message(&r);
        assert!(
            msg.contains("removes the AI marker blastguard.io/ai-agent"),
            "{name}: {msg}"
        );
        assert!(
            msg.contains("\"operation\":\"apply\""),
            "{name}: the payload to sign: {msg}"
        );
    }
    // Keeping the marker while changing nothing else is no hand-back.
    let kept =
        engine().review(&Req::update("Deployment", "staging", marked.clone(), marked).body());
    assert_eq!(verdict_of(&kept), (Allow, WithinLimits, 0));
}
