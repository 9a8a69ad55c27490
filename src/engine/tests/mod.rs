//! Table-driven tests of the whole request path through `Engine::review`, with
//! AdmissionReviews shaped as the API server sends them. These stand in for the API
//! server, for speed; tests/e2e_*.rs send the same requests through a real one.
//! One builder ([`Req`]) for every engine test; `bypasses` holds the attacks closed.

mod bypasses;
mod inbox;
mod motion;

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Engine, Reviewed};
use crate::testing::{Req, admission_review};
use crate::approval::{ApprovalPayload, NoTrustedSigners};
use crate::policy::{DEFAULT_POLICY_YAML, Policy};
use crate::verdict::{Decision, Reason};

const AI_SA: &str = "system:serviceaccount:ai-agents:claude";
const HPA: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

/// A workload object as the API server presents it. `replicas: None` leaves the
/// field out (the kinds whose default is 1).
fn workload(kind: &str, replicas: Option<u64>, image: &str, annotations: Value) -> Value {
    let api_version = match kind {
        "Job" | "CronJob" => "batch/v1",
        "ReplicationController" | "Pod" => "v1",
        _ => "apps/v1",
    };
    let template = json!({
        "metadata": {"labels": {"app": "api"}},
        "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent"}],
                 "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"}
    });
    let mut spec = match kind {
        "Pod" => template["spec"].clone(),
        "CronJob" => {
            json!({"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}})
        }
        _ => json!({"selector": {"matchLabels": {"app": "api"}}, "template": template}),
    };
    if let Some(r) = replicas {
        let field = if kind == "Job" {
            "parallelism"
        } else {
            "replicas"
        };
        if kind == "CronJob" {
            spec["jobTemplate"]["spec"]["parallelism"] = json!(r);
        } else {
            spec[field] = json!(r);
        }
    }
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": "api", "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "annotations": annotations},
        "spec": spec, "status": {}
    })
}

fn ai() -> Value {
    json!({"blastguard.io/ai-agent": "claude-code"})
}
fn human() -> Value {
    json!({})
}
fn deploy(replicas: u64, image: &str, annotations: Value) -> Value {
    workload("Deployment", Some(replicas), image, annotations)
}

fn engine_with(yaml: &str) -> Engine {
    Engine::new(
        Policy::from_yaml(yaml, None).unwrap(),
        Arc::new(NoTrustedSigners),
    )
}

fn engine() -> Engine {
    engine_with(DEFAULT_POLICY_YAML)
}

fn verdict_of(r: &Reviewed) -> (Decision, Reason, u64) {
    let v = &r.judged().expect("judged").verdict;
    let pods = v.findings.radius.as_ref().map_or(0, |r| r.pods_affected);
    (v.decision, v.reason, pods)
}

fn response(r: &Reviewed) -> Value {
    let body: Value = serde_json::from_slice(r.body().expect("an answer")).unwrap();
    body["response"].clone()
}

use Decision::{Allow, Deny, Warn};
use Reason::{NotAiAssisted, OverLimits, WithinLimits};

/// docs/design.md#radius, row by row, on the embedded default policy (staging → rule
/// `default`: 10 pods, 100 replicas; prod → rule `protected`: 0 pods).
#[test]
fn radius_table() {
    let v1 = "app:1";
    let v2 = "app:2";
    let rows: Vec<(&str, Req, (Decision, Reason, u64))> = vec![
        ("create deployment 40", Req::create("Deployment", "staging", deploy(40, v1, ai())), (Deny, OverLimits, 40)),
        ("create deployment 5", Req::create("Deployment", "staging", deploy(5, v1, ai())), (Allow, WithinLimits, 5)),
        (
            "create statefulset default replicas",
            Req::create("StatefulSet", "staging", workload("StatefulSet", None, v1, ai())),
            (Allow, WithinLimits, 1),
        ),
        (
            "create replicaset 11",
            Req::create("ReplicaSet", "staging", workload("ReplicaSet", Some(11), v1, ai())),
            (Deny, OverLimits, 11),
        ),
        (
            "create replicationcontroller 3",
            Req::create("ReplicationController", "staging", workload("ReplicationController", Some(3), v1, ai())),
            (Allow, WithinLimits, 3),
        ),
        (
            "template change replaces every pod: max(old,new)",
            Req::update("Deployment", "staging", deploy(8, v1, ai()), deploy(12, v2, ai())),
            (Deny, OverLimits, 12),
        ),
        (
            "template change within limit",
            Req::update("Deployment", "staging", deploy(8, v1, ai()), deploy(8, v2, ai())),
            (Allow, WithinLimits, 8),
        ),
        (
            "replicas only: abs(new - old) up",
            Req::update("Deployment", "staging", deploy(5, v1, ai()), deploy(30, v1, ai())),
            (Deny, OverLimits, 25),
        ),
        (
            "replicas only: abs(new - old) down",
            Req::update("Deployment", "staging", deploy(30, v1, ai()), deploy(25, v1, ai())),
            (Allow, WithinLimits, 5),
        ),
        (
            "metadata-only update affects no pods",
            Req::update(
                "Deployment",
                "staging",
                deploy(50, v1, ai()),
                deploy(50, v1, json!({"blastguard.io/ai-agent": "claude-code", "owner": "team-a"})),
            ),
            (Allow, WithinLimits, 0),
        ),
        (
            "scale subresource by an AI identity",
            Req::scale("staging", 5, 30).user(AI_SA),
            (Deny, OverLimits, 25),
        ),
        ("scale subresource by the HPA is not AI", Req::scale("staging", 5, 30).user(HPA), (Allow, NotAiAssisted, 0)),
        (
            "delete of a workload: old replicas",
            Req::delete("Deployment", "staging", deploy(40, v1, ai())).user(AI_SA),
            (Deny, OverLimits, 40),
        ),
        (
            "delete of a small workload",
            Req::delete("Deployment", "staging", deploy(4, v1, ai())).user(AI_SA),
            (Allow, WithinLimits, 4),
        ),
        (
            "daemonset: node-wide reach",
            Req::create("DaemonSet", "staging", workload("DaemonSet", None, v1, ai())),
            (Deny, OverLimits, 0),
        ),
        (
            "job: parallelism",
            Req::create("Job", "staging", workload("Job", Some(20), v1, ai())),
            (Deny, OverLimits, 20),
        ),
        ("job: small parallelism", Req::create("Job", "staging", workload("Job", Some(3), v1, ai())), (Allow, WithinLimits, 3)),
        (
            "cronjob: parallelism per run, x the 12 runs of */5 in the 1h window",
            Req::create("CronJob", "staging", workload("CronJob", Some(12), v1, ai())),
            (Deny, OverLimits, 144),
        ),
        (
            "cronjob: default parallelism 1, 12 runs",
            Req::create("CronJob", "staging", workload("CronJob", None, v1, ai())),
            (Deny, OverLimits, 12),
        ),
        ("bare pod: 1", Req::create("Pod", "staging", workload("Pod", None, v1, ai())), (Allow, WithinLimits, 1)),
        ("bare pod in a protected namespace", Req::create("Pod", "prod", workload("Pod", None, v1, ai())), (Deny, OverLimits, 1)),
        (
            "namespace: cluster reach",
            Req::new("CREATE", "Namespace", Some("team-x"))
                .object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-x", "annotations": ai()}})),
            (Deny, OverLimits, 0),
        ),
        (
            "cluster-scoped object",
            Req::new("CREATE", "ClusterRole", None).object(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                       "metadata": {"name": "api", "annotations": ai()}, "rules": []}),
            ),
            (Deny, OverLimits, 0),
        ),
        (
            "configmap counts 0 pods",
            Req::create(
                "ConfigMap",
                "staging",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "api", "annotations": ai()}, "data": {"k": "v"}}),
            ),
            (Allow, WithinLimits, 0),
        ),
        (
            "over maxReplicas with few pods affected",
            Req::update("Deployment", "staging", deploy(95, v1, ai()), deploy(101, v1, ai())),
            (Deny, OverLimits, 6),
        ),
        (
            "protected namespace: any pod needs approval",
            Req::update("Deployment", "prod", deploy(3, v1, ai()), deploy(4, v1, ai())),
            (Deny, OverLimits, 1),
        ),
    ];
    for (name, req, want) in rows {
        let got = engine().review(&req.body());
        assert_eq!(verdict_of(&got), want, "{name}");
    }
}

/// The template comparison is semantic: the same template with its keys in another
/// order and different whitespace is no change.
#[test]
fn template_change_is_semantic_not_bytewise() {
    let old = deploy(20, "app:1", ai());
    let reordered: Value = serde_json::from_str(
        &serde_json::to_string_pretty(&old)
            .unwrap()
            .replace("\"app\": \"api\"", "\"app\":\"api\""),
    )
    .unwrap();
    let mut new = reordered.clone();
    new["spec"]["template"] = serde_json::from_str(
        r#"{"spec": {"dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
            "containers": [{"imagePullPolicy": "IfNotPresent", "image": "app:1", "name": "app"}]},
            "metadata": {"labels": {"app": "api"}}}"#,
    )
    .unwrap();
    let got = engine().review(&Req::update("Deployment", "staging", old, new).body());
    assert_eq!(verdict_of(&got), (Allow, WithinLimits, 0));
}

#[test]
fn percent_limit_applies_to_update_scale_and_delete_never_to_create() {
    let yaml = DEFAULT_POLICY_YAML.replace("# maxPercentAffected: 50", "maxPercentAffected: 50");
    let rows: Vec<(&str, Req, Decision)> = vec![
        (
            "create is never a percentage",
            Req::create("Deployment", "staging", deploy(8, "a", ai())),
            Allow,
        ),
        (
            "10 -> 16 is 60%",
            Req::update(
                "Deployment",
                "staging",
                deploy(10, "a", ai()),
                deploy(16, "a", ai()),
            ),
            Deny,
        ),
        (
            "10 -> 14 is 40%",
            Req::update(
                "Deployment",
                "staging",
                deploy(10, "a", ai()),
                deploy(14, "a", ai()),
            ),
            Allow,
        ),
        (
            "scale 6 -> 0 is 100%",
            Req::scale("staging", 6, 0).user(AI_SA),
            Deny,
        ),
        (
            "scale 8 -> 11 is 37.5%",
            Req::scale("staging", 8, 11).user(AI_SA),
            Allow,
        ),
        (
            "delete is 100%",
            Req::delete("Deployment", "staging", deploy(4, "a", ai())).user(AI_SA),
            Deny,
        ),
    ];
    for (name, req, want) in rows {
        let got = engine_with(&yaml).review(&req.body());
        let (decision, ..) = verdict_of(&got);
        assert_eq!(decision, want, "{name}");
        if want == Deny {
            let msg = response(&got)["status"]["message"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(msg.contains("> 50% (maxPercentAffected)"), "{name}: {msg}");
        }
    }
}

/// Every provenance signal, and the ways an agent might try to hide one.
#[test]
fn provenance_table() {
    let big = |a: Value| deploy(40, "a", a);
    let groups_policy = DEFAULT_POLICY_YAML.replace("groups: []", "groups: [\"ai-bots*\"]");
    let no_sticky = DEFAULT_POLICY_YAML.replace("sticky: true", "sticky: false");
    let rows: Vec<(&str, &str, Req, Reason)> = vec![
        (
            "ai-agent annotation",
            DEFAULT_POLICY_YAML,
            Req::create("Deployment", "staging", big(ai())),
            OverLimits,
        ),
        (
            "ai-agent with any value",
            DEFAULT_POLICY_YAML,
            Req::create(
                "Deployment",
                "staging",
                big(json!({"blastguard.io/ai-agent": ""})),
            ),
            OverLimits,
        ),
        (
            "ai-agent false is not AI",
            DEFAULT_POLICY_YAML,
            Req::create(
                "Deployment",
                "staging",
                big(json!({"blastguard.io/ai-agent": "false"})),
            ),
            NotAiAssisted,
        ),
        (
            "ai-assisted true",
            DEFAULT_POLICY_YAML,
            Req::create(
                "Deployment",
                "staging",
                big(json!({"blastguard.io/ai-assisted": "true"})),
            ),
            OverLimits,
        ),
        (
            "ai-assisted false is not AI",
            DEFAULT_POLICY_YAML,
            Req::create(
                "Deployment",
                "staging",
                big(json!({"blastguard.io/ai-assisted": "false"})),
            ),
            NotAiAssisted,
        ),
        (
            "no marker, a person",
            DEFAULT_POLICY_YAML,
            Req::create("Deployment", "staging", big(human())),
            NotAiAssisted,
        ),
        (
            "requester glob",
            DEFAULT_POLICY_YAML,
            Req::create("Deployment", "staging", big(human())).user(AI_SA),
            OverLimits,
        ),
        (
            "another service account",
            DEFAULT_POLICY_YAML,
            Req::create("Deployment", "staging", big(human()))
                .user("system:serviceaccount:ci:deployer"),
            NotAiAssisted,
        ),
        (
            "group glob",
            &groups_policy,
            Req::create("Deployment", "staging", big(human())).group_of_user("ai-bots-eu"),
            OverLimits,
        ),
        (
            "field manager glob",
            DEFAULT_POLICY_YAML,
            Req::create("Deployment", "staging", big(human())).field_manager("kubectl-ai-0.4"),
            OverLimits,
        ),
        (
            "kubectl's own field manager",
            DEFAULT_POLICY_YAML,
            Req::create("Deployment", "staging", big(human()))
                .field_manager("kubectl-client-side-apply"),
            NotAiAssisted,
        ),
        (
            "sticky: marker stripped on update",
            DEFAULT_POLICY_YAML,
            Req::update(
                "Deployment",
                "staging",
                deploy(40, "a", ai()),
                deploy(40, "b", human()),
            ),
            OverLimits,
        ),
        (
            "sticky: marker flipped to false on update",
            DEFAULT_POLICY_YAML,
            Req::update(
                "Deployment",
                "staging",
                deploy(40, "a", json!({"blastguard.io/ai-assisted": "true"})),
                deploy(40, "b", json!({"blastguard.io/ai-assisted": "false"})),
            ),
            OverLimits,
        ),
        (
            "not sticky when the policy says so",
            &no_sticky,
            Req::update(
                "Deployment",
                "staging",
                deploy(40, "a", ai()),
                deploy(40, "b", human()),
            ),
            NotAiAssisted,
        ),
        (
            "delete by a person of an AI-made object: identity decides",
            DEFAULT_POLICY_YAML,
            Req::delete("Deployment", "staging", deploy(40, "a", ai())),
            NotAiAssisted,
        ),
        (
            "delete by an AI identity",
            DEFAULT_POLICY_YAML,
            Req::delete("Deployment", "staging", deploy(40, "a", human())).user(AI_SA),
            OverLimits,
        ),
        (
            "scale by a person",
            DEFAULT_POLICY_YAML,
            Req::scale("staging", 5, 40),
            NotAiAssisted,
        ),
        (
            "scale through an AI field manager",
            DEFAULT_POLICY_YAML,
            Req::scale("staging", 5, 40).field_manager("kubectl-ai"),
            OverLimits,
        ),
    ];
    for (name, yaml, req, want) in rows {
        let got = engine_with(yaml).review(&req.body());
        assert_eq!(verdict_of(&got).1, want, "{name}");
    }
}

#[test]
fn denial_tells_the_person_what_and_how() {
    let got = engine().review(&Req::create("Deployment", "staging", deploy(40, "a", ai())).body());
    assert!(matches!(got, Reviewed::Judged(_)));
    let r = response(&got);
    assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 403);
    let msg = r["status"]["message"].as_str().unwrap();
    for want in [
        "AI-assisted create of Deployment staging/api",
        "rule \"default\"",
        "AI signal: annotation blastguard.io/ai-agent=\"claude-code\"",
        "pods affected 40 > 10 (maxPodsAffected)",
        "1 approver listed in allowed_signers",
        "blastguard approve",
    ] {
        assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
    }
    // The payload line parses as an approval bound to this object and its digest.
    let payload_line = msg
        .lines()
        .find(|l| l.starts_with("{\"apiVersion\""))
        .expect("payload line");
    let payload: ApprovalPayload = serde_json::from_str(payload_line).unwrap();
    assert_eq!(payload.target.kind, "Deployment");
    assert_eq!(payload.target.namespace, "staging");
    assert_eq!(payload.target.name, "api");
    assert_eq!(payload.operation.as_str(), "apply");
    let digest = payload.digest.clone().unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 7 + 64,
        "{digest}"
    );
    assert_eq!(r["auditAnnotations"]["digest"], digest);
    assert_eq!(r["auditAnnotations"]["decision"], "deny");
    assert_eq!(r["auditAnnotations"]["pods-affected"], "40");
    assert_eq!(r["auditAnnotations"]["rule"], "default");
    assert_eq!(r["auditAnnotations"]["limits-exceeded"], "maxPodsAffected");
}

#[test]
fn scale_and_delete_denials_offer_the_matching_operation() {
    let scale = engine().review(&Req::scale("prod", 5, 9).user(AI_SA).body());
    let msg = response(&scale)["status"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("\"operation\":\"scale\",\"replicas\":9"),
        "{msg}"
    );
    assert!(msg.contains("2 distinct approvers"), "{msg}");
    assert!(
        msg.contains("to Deployment prod/api (the scaled workload)"),
        "{msg}"
    );

    let delete = engine().review(
        &Req::delete("Deployment", "prod", deploy(3, "a", human()))
            .user(AI_SA)
            .body(),
    );
    let msg = response(&delete)["status"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("\"operation\":\"delete\",\"digest\":\"sha256:"),
        "{msg}"
    );
}

#[test]
fn modes_enforce_warn_audit() {
    let req = Req::create("Deployment", "staging", deploy(40, "a", ai()));
    let warn = engine_with(&DEFAULT_POLICY_YAML.replace("mode: enforce ", "mode: warn "))
        .review(&req.body());
    assert_eq!(verdict_of(&warn).0, Warn);
    let r = response(&warn);
    assert_eq!(r["allowed"], true);
    let warnings: Vec<String> = serde_json::from_value(r["warnings"].clone()).unwrap();
    assert!(warnings.len() >= 2, "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains("pods affected 40 > 10")),
        "{warnings:?}"
    );
    for w in &warnings {
        assert!(w.chars().count() <= 120, "warning over 120 characters: {w}");
    }

    let audit = engine_with(&DEFAULT_POLICY_YAML.replace("mode: enforce ", "mode: audit "))
        .review(&req.body());
    assert_eq!(verdict_of(&audit), (Allow, OverLimits, 40));
    let r = response(&audit);
    assert_eq!(r["allowed"], true);
    assert!(
        r.get("warnings").is_none_or(Value::is_null),
        "audit is silent: {r}"
    );
    assert_eq!(r["auditAnnotations"]["reason"], "over_limits");
    assert_eq!(r["auditAnnotations"]["mode"], "audit");

    // A rule's mode overrides the policy's.
    let rule_warn =
        DEFAULT_POLICY_YAML.replace("- name: default", "- name: default\n      mode: warn");
    assert_eq!(
        verdict_of(&engine_with(&rule_warn).review(&req.body())).0,
        Warn
    );
}

#[test]
fn non_ai_requests_take_the_fast_path() {
    let got = engine().review(&Req::create("Deployment", "prod", deploy(400, "a", human())).body());
    let judged = got.judged().unwrap();
    let v = &judged.verdict;
    assert!(
        judged.change.is_none(),
        "the objects of a person's change are never parsed"
    );
    assert_eq!(v.reason, NotAiAssisted);
    assert!(
        v.findings.radius.is_none(),
        "limits are not evaluated for non-AI changes"
    );
    assert_eq!(response(&got)["auditAnnotations"]["decision"], "allow");
}

fn configmap(ns: &'static str, change_id: Option<&str>) -> Req {
    let mut annotations = ai();
    if let Some(id) = change_id {
        annotations["blastguard.io/change-id"] = json!(id);
    }
    Req::create(
        "ConfigMap",
        ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "annotations": annotations}}),
    )
}

#[test]
fn change_set_reach_counts_namespaces_and_dry_run_is_never_recorded() {
    let e = engine();
    for ns in ["a", "b"] {
        assert_eq!(
            verdict_of(&e.review(&configmap(ns, Some("chg-1")).body())).0,
            Allow
        );
    }
    // A dry run gets the verdict a real request gets, and is not recorded.
    let dry = e.review(&configmap("c", Some("chg-1")).dry_run().body());
    assert_eq!(verdict_of(&dry).0, Allow);
    assert_eq!(
        verdict_of(&e.review(&configmap("d", Some("chg-1")).body())).0,
        Allow,
        "a, b, d: 3"
    );
    let fourth = e.review(&configmap("e", Some("chg-1")).body());
    assert_eq!(verdict_of(&fourth).0, Deny, "a, b, d, e: 4 > 3");
    let msg = response(&fourth)["status"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("namespaces in this change set 4 > 3 (maxNamespacesPerChange)"),
        "{msg}"
    );
    // The dry run of the fourth namespace is denied exactly like the real one.
    let dry_fourth = e.review(&configmap("e", Some("chg-1")).dry_run().body());
    assert_eq!(verdict_of(&dry_fourth), verdict_of(&fourth));
    // Another change-id of the same requester meets the requester's count (a, b, d).
    let fresh_id = e.review(&configmap("e", Some("chg-2")).body());
    assert_eq!(
        verdict_of(&fresh_id).0,
        Deny,
        "a fresh change-id is no fresh start"
    );
    // Another requester starts afresh.
    let other = e.review(&configmap("e", Some("chg-2")).user("bob@example.com").body());
    assert_eq!(verdict_of(&other).0, Allow);
}

#[test]
fn denied_changes_do_not_count_toward_reach() {
    let e = engine();
    let big = |ns| {
        Req::create(
            "Deployment",
            ns,
            deploy(
                40,
                "a",
                json!({"blastguard.io/ai-agent": "x", "blastguard.io/change-id": "c"}),
            ),
        )
    };
    for ns in ["a", "b", "c", "d"] {
        assert_eq!(verdict_of(&e.review(&big(ns).body())).0, Deny);
    }
    assert_eq!(
        verdict_of(&e.review(&configmap("a", Some("c")).body())).0,
        Allow,
        "nothing was recorded"
    );
}

#[test]
fn bad_reviews_get_a_clear_answer() {
    let e = engine();
    let not_json = e.review(b"{not json");
    assert!(matches!(not_json, Reviewed::Unreadable { .. }));
    assert!(
        not_json
            .error()
            .unwrap()
            .to_string()
            .contains("not a valid AdmissionReview")
    );

    let mut missing = admission_review(Value::Null);
    missing.as_object_mut().unwrap().remove("request");
    let missing = e.review(&serde_json::to_vec(&missing).unwrap());
    assert!(matches!(missing, Reviewed::Unreadable { .. }));
    assert!(
        missing
            .error()
            .unwrap()
            .to_string()
            .contains("has no request")
    );

    // With a readable uid, the answer is an AdmissionReview that echoes it.
    let mut v1beta1: Value =
        serde_json::from_slice(&Req::create("Deployment", "a", deploy(1, "a", ai())).body())
            .unwrap();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let got = e.review(&serde_json::to_vec(&v1beta1).unwrap());
    assert!(matches!(got, Reviewed::Rejected { .. }));
    let r = response(&got);
    assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 400);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("admission.k8s.io/v1beta1")
    );

    let mut bad_kind = v1beta1.clone();
    bad_kind["apiVersion"] = json!("admission.k8s.io/v1");
    bad_kind["kind"] = json!("Pod");
    assert!(
        response(&e.review(&serde_json::to_vec(&bad_kind).unwrap()))["status"]["message"]
            .as_str()
            .unwrap()
            .contains("expected kind AdmissionReview")
    );

    // A request whose object is not an object still echoes the uid.
    let mut broken = v1beta1;
    broken["apiVersion"] = json!("admission.k8s.io/v1");
    broken["request"]["object"] = json!("nope");
    let got = e.review(&serde_json::to_vec(&broken).unwrap());
    assert_eq!(
        response(&got)["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(response(&got)["allowed"], false);
}

/// The fixtures under tests/fixtures are real kubectl output with the API server's
/// defaults, wrapped as the API server wraps them (scripts/make-fixtures.py).
#[test]
fn kubectl_fixtures() {
    let rows: &[(&str, &str, (Decision, Reason, u64))] = &[
        (
            "deployment-create-ai-prod",
            include_str!("../../../tests/fixtures/deployment-create-ai-prod.json"),
            (Deny, OverLimits, 40),
        ),
        (
            "deployment-update-image-person",
            include_str!("../../../tests/fixtures/deployment-update-image-person.json"),
            (Allow, NotAiAssisted, 0),
        ),
        (
            "deployment-update-strip-marker",
            include_str!("../../../tests/fixtures/deployment-update-strip-marker.json"),
            // Stripping the marker is a hand-back to people: it takes an approval.
            (Deny, OverLimits, 5),
        ),
        (
            "scale-by-hpa",
            include_str!("../../../tests/fixtures/scale-by-hpa.json"),
            (Allow, NotAiAssisted, 0),
        ),
        (
            "scale-by-ai-identity",
            include_str!("../../../tests/fixtures/scale-by-ai-identity.json"),
            (Deny, OverLimits, 25),
        ),
        (
            "delete-by-ai-identity",
            include_str!("../../../tests/fixtures/delete-by-ai-identity.json"),
            (Deny, OverLimits, 40),
        ),
        (
            "namespace-create-ai",
            include_str!("../../../tests/fixtures/namespace-create-ai.json"),
            (Deny, OverLimits, 0),
        ),
        (
            "cronjob-create-field-manager",
            include_str!("../../../tests/fixtures/cronjob-create-field-manager.json"),
            // */5: 12 runs within the default one-hour window.
            (Deny, OverLimits, 12),
        ),
    ];
    for (name, body, want) in rows {
        let got = engine().review(body.as_bytes());
        assert_eq!(verdict_of(&got), *want, "{name}");
        let request: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            response(&got)["uid"],
            request["request"]["uid"],
            "{name}: uid echo"
        );
    }
}
