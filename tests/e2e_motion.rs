//! End to end, through a real API server and kube-controller-manager
//! (tests/common/cluster.rs): what an AI change sets in motion is counted at admission
//! (docs/security.md, "What an AI change sets in motion"). Each step is one of the
//! paths of issue 18 that the cluster admitted before, made by the agent's own
//! identity through real `kubectl --as`, with the chart's webhook rules and
//! matchConditions deciding what is sent.

mod common;

use common::cluster::{AI_AGENT, BOT, E2e, Steps, WAIT, deployment, wait_for};
use serde_json::{Value, json};

/// Agents of their own (each its own change set, so one step's admitted changes do
/// not spend another's budget): all match the default policy's
/// `system:serviceaccount:ai-agents:*`.
const SCALER: &str = "system:serviceaccount:ai-agents:scaler";
const SHOPPER: &str = "system:serviceaccount:ai-agents:shopper";
const SPREADER: &str = "system:serviceaccount:ai-agents:spreader";

/// The agents may change anything (the RBAC is not what these steps test: the
/// webhook is).
fn grant(e2e: &E2e) {
    e2e.namespaces(&["ai-agents", "prod", "team", "t1", "t2", "t3", "t4"]);
    let subjects: Vec<Value> = [BOT, SCALER, SHOPPER, SPREADER]
        .iter()
        .map(|user| {
            let name = user.rsplit(':').next().unwrap();
            json!({"kind": "ServiceAccount", "name": name, "namespace": "ai-agents"})
        })
        .collect();
    e2e.apply(
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "e2e-motion-agents"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": subjects}),
        &[],
        None,
    )
    .expect_ok();
}

fn hpa(namespace: &str, name: &str, target: &str, min: u64, max: u64) -> Value {
    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": name, "namespace": namespace},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                    "minReplicas": min, "maxReplicas": max,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                 "target": {"type": "Utilization", "averageUtilization": 80}}}]}})
}

/// Asserts that the agent's command is denied by blastguard, saying `says`.
fn denied(e2e: &E2e, args: &[&str], says: &str) -> String {
    denied_as(e2e, BOT, args, says)
}

/// [`denied`] as another agent.
fn denied_as(e2e: &E2e, agent: &str, args: &[&str], says: &str) -> String {
    let err = e2e.kubectl_as(agent, args).expect_err();
    assert!(
        err.contains("admission webhook \"validate.blastguard.io\" denied the request"),
        "not denied by blastguard:\n{err}"
    );
    assert!(err.contains(says), "{says:?} not in:\n{err}");
    err
}

/// A person puts an approval and its signatures on `object` (`["-n", NS, KIND/NAME]`).
fn annotate_approval(e2e: &E2e, object: &[&str], payload: &str, signatures: &str) {
    let (approval, signature) = (
        format!("blastguard.io/approval={payload}"),
        format!("blastguard.io/approval-signature={signatures}"),
    );
    let mut args = vec!["annotate"];
    args.extend_from_slice(object);
    args.extend([approval.as_str(), signature.as_str()]);
    e2e.kubectl(&args).expect_ok();
}

fn patch<'a>(namespace: &'a str, object: &'a str, patch: &'a str) -> Vec<&'a str> {
    vec![
        "-n", namespace, "patch", object, "--type", "merge", "-p", patch,
    ]
}

#[test]
fn what_controllers_do_after_admission_is_counted() {
    let e2e = E2e::start_with_cluster_state();
    grant(&e2e);
    // A person's workloads (never sent).
    for (ns, name, replicas) in [
        ("prod", "api", 40),
        ("prod", "small", 1),
        ("prod", "front", 2),
        ("team", "big", 30),
    ] {
        e2e.apply(&deployment(ns, name, replicas, &[]), &[], None)
            .expect_ok();
    }
    let mut steps = Steps::default();

    steps.run(
        "path 1: hpa range lowered under a 40-replica target",
        || {
            e2e.apply(&hpa("prod", "api", "api", 40, 40), &[], None)
                .expect_ok();
            denied(
                &e2e,
                &patch(
                    "prod",
                    "hpa/api",
                    r#"{"spec":{"minReplicas":1,"maxReplicas":1}}"#,
                ),
                "pods affected 39 > 0 (maxPodsAffected)",
            );
            assert_eq!(e2e.jsonpath("prod", "hpa/api", "{.spec.minReplicas}"), "40");
        },
    );

    steps.run("path 2: hpa retargeted at a 40-replica workload", || {
        e2e.apply(&hpa("prod", "small", "small", 1, 1), &[], None)
            .expect_ok();
        denied(
            &e2e,
            &patch(
                "prod",
                "hpa/small",
                r#"{"spec":{"scaleTargetRef":{"name":"api"}}}"#,
            ),
            "pods affected 39 > 0 (maxPodsAffected)",
        );
    });

    steps.run("path 3: hpa created below the target's size", || {
        let manifest = hpa("team", "big", "big", 1, 1);
        let err = e2e.apply(&manifest, &[], Some(BOT)).expect_err();
        assert!(err.contains("pods affected 29 > 10"), "{err}");
    });

    steps.run("path 4: owner references to an owner that does not exist", || {
        let owners = r#"{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"gone","uid":"0d3f4a62-0000-4000-8000-000000000001"}]}}"#;
        denied(
            &e2e,
            &patch("prod", "deployment/api", owners),
            "pods affected 40 > 0 (maxPodsAffected)",
        );
        assert_eq!(
            e2e.jsonpath("prod", "deployment/api", "{.metadata.ownerReferences}"),
            ""
        );
    });

    steps.run("path 5: pods relabeled out of their selector", || {
        wait_for("the front pods", WAIT, || {
            let pods = e2e.list("prod", "pods");
            let front = pods
                .iter()
                .filter(|p| p["metadata"]["labels"]["app"] == "front")
                .count();
            (front == 2).then_some(())
        });
        denied(
            &e2e,
            &[
                "-n",
                "prod",
                "label",
                "pods",
                "-l",
                "app=front",
                "app=front-orphaned",
                "--overwrite",
            ],
            "pods affected 1 > 0 (maxPodsAffected)",
        );
    });

    steps.run("path 6: pod resize is judged like the pod", || {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": "sized", "namespace": "prod"},
                         "spec": {"containers": [{"name": "app", "image": "nginx:1.27",
                                  "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                                                "limits": {"cpu": "200m", "memory": "256Mi"}}}]}});
        e2e.apply(&pod, &[], None).expect_ok();
        denied(
            &e2e,
            &[
                "-n",
                "prod",
                "patch",
                "pod/sized",
                "--subresource=resize",
                "-p",
                r#"{"spec":{"containers":[{"name":"app","resources":{"requests":{"cpu":"150m"}}}]}}"#,
            ],
            "pods affected 1 > 0 (maxPodsAffected)",
        );
    });

    steps.run("path 7: rollout resume over a staged image change", || {
        e2e.apply(&deployment("prod", "staged", 40, &[]), &[], None)
            .expect_ok();
        e2e.kubectl(&["-n", "prod", "rollout", "pause", "deployment/staged"])
            .expect_ok();
        e2e.kubectl(&[
            "-n",
            "prod",
            "set",
            "image",
            "deployment/staged",
            "nginx=nginx:1.28",
        ])
        .expect_ok();
        // The deployment controller has seen the paused template change.
        wait_for("the staged rollout's status", WAIT, || {
            let d = e2e.get("prod", "deployment/staged")?;
            (d["status"]["observedGeneration"] == d["metadata"]["generation"]).then_some(())
        });
        denied(
            &e2e,
            &["-n", "prod", "rollout", "resume", "deployment/staged"],
            "pods affected 40 > 0 (maxPodsAffected)",
        );
        assert_eq!(
            e2e.jsonpath("prod", "deployment/staged", "{.spec.paused}"),
            "true"
        );
    });

    steps.run("path 9: a marker stripped through /status", || {
        e2e.apply(
            &deployment("team", "marked", 2, &[(AI_AGENT, "claude-code")]),
            &[],
            Some(BOT),
        )
        .expect_ok();
        // Even a person's status patch: sticky provenance holds through /status.
        let err = e2e
            .kubectl(&[
                "-n",
                "team",
                "patch",
                "deployment/marked",
                "--subresource=status",
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"annotations":{"blastguard.io/ai-agent":null}}}"#,
            ])
            .expect_err();
        assert!(err.contains("removes the AI marker"), "{err}");
        assert_eq!(
            e2e.jsonpath(
                "team",
                "deployment/marked",
                "{.metadata.annotations.blastguard\\.io/ai-agent}"
            ),
            "claude-code"
        );
    });

    steps.run("path 10: a monthly cronjob made to run every minute", || {
        let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob",
                          "metadata": {"name": "report", "namespace": "team"},
                          "spec": {"schedule": "0 0 1 * *",
                                   "jobTemplate": {"spec": {"parallelism": 10, "template": {"spec": {
                                       "restartPolicy": "Never",
                                       "containers": [{"name": "r", "image": "busybox:1.36"}]}}}}}});
        e2e.apply(&cron, &[], None).expect_ok();
        denied(
            &e2e,
            &patch("team", "cronjob/report", r#"{"spec":{"schedule":"* * * * *"}}"#),
            "pods affected 600 > 10 (maxPodsAffected)",
        );
    });

    steps.run(
        "path 11: configmaps in many namespaces under one change-id",
        || {
            for (i, ns) in ["t1", "t2", "t3", "t4"].iter().enumerate() {
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "cfg", "namespace": ns,
                                         "annotations": {"blastguard.io/change-id": "spread"}},
                            "data": {"k": "v"}});
                let run = e2e.apply(&cm, &[], Some(SPREADER));
                if i < 3 {
                    run.expect_ok();
                } else {
                    let err = run.expect_err();
                    assert!(err.contains("namespaces in this change set 4 > 3"), "{err}");
                }
            }
        },
    );

    steps.run("path 11: a prod Service's selector changed to match nothing", || {
        let svc = json!({"apiVersion": "v1", "kind": "Service",
                         "metadata": {"name": "front", "namespace": "prod"},
                         "spec": {"selector": {"app": "front"}, "ports": [{"port": 80}]}});
        e2e.apply(&svc, &[], None).expect_ok();
        // Pods get no address without a node: the person publishes 20 endpoints
        // by hand, in a slice the endpoint controller leaves alone.
        let endpoints: Vec<Value> = (1..=20)
            .map(|i| json!({"addresses": [format!("10.0.0.{i}")], "conditions": {"ready": true}}))
            .collect();
        let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                           "metadata": {"name": "front-manual", "namespace": "prod",
                                        "labels": {"kubernetes.io/service-name": "front",
                                                   "endpointslice.kubernetes.io/managed-by": "e2e"}},
                           "addressType": "IPv4", "ports": [{"port": 80}], "endpoints": endpoints});
        e2e.apply(&slice, &[], None).expect_ok();
        denied(
            &e2e,
            &patch("prod", "service/front", r#"{"spec":{"selector":{"app":"nothing"}}}"#),
            "pods affected 20 > 0 (maxPodsAffected)",
        );
    });

    steps.run("path 8: a scale approval admits exactly its count", || {
        e2e.apply(&deployment("team", "web", 5, &[]), &[], None)
            .expect_ok();
        let err = e2e
            .kubectl_as(
                SCALER,
                &["-n", "team", "scale", "deployment/web", "--replicas=45"],
            )
            .expect_err();
        let payload = E2e::payload_in(&err);
        assert!(
            payload.contains(r#""operation":"scale","replicas":45"#),
            "{payload}"
        );
        let sig = e2e.approvers[0].sign(&payload);
        annotate_approval(&e2e, &["-n", "team", "deployment/web"], &payload, &sig);
        // Not to 46, nor to 30: exactly 45 (once the webhook's watch has the
        // annotation).
        for other in ["--replicas=46", "--replicas=30"] {
            wait_for("the scale approval on the workload", WAIT, || {
                let run = e2e.kubectl_as(SCALER, &["-n", "team", "scale", "deployment/web", other]);
                assert!(!run.ok, "a scale {other} was admitted");
                run.stderr
                    .contains("it approves scaling to exactly 45 replicas")
                    .then_some(())
            });
        }
        e2e.kubectl_as(
            SCALER,
            &["-n", "team", "scale", "deployment/web", "--replicas=45"],
        )
        .expect_ok();
        // A person scales back; the spent approval does not scale it up again.
        e2e.kubectl(&["-n", "team", "scale", "deployment/web", "--replicas=5"])
            .expect_ok();
        let err = e2e
            .kubectl_as(
                SCALER,
                &["-n", "team", "scale", "deployment/web", "--replicas=45"],
            )
            .expect_err();
        assert!(err.contains("admits its change once"), "{err}");
    });

    steps.run(
        "path 12: an approved manifest re-applied after a rollback",
        || {
            // Marked by identity alone, so a person's later change is the person's.
            let manifest = deployment("team", "shop", 20, &[]);
            let err = e2e.apply(&manifest, &[], Some(SHOPPER)).expect_err();
            let payload = E2e::payload_in(&err);
            let sig = e2e.approvers[1].sign(&payload);
            let mut approved = manifest.clone();
            approved["metadata"]["annotations"]["blastguard.io/approval"] = json!(payload);
            approved["metadata"]["annotations"]["blastguard.io/approval-signature"] = json!(sig);
            e2e.apply(&approved, &[], Some(SHOPPER)).expect_ok();
            // A person rolls the image forward by hand (a person's change is not sent)...
            e2e.kubectl(&[
                "-n",
                "team",
                "set",
                "image",
                "deployment/shop",
                "nginx=nginx:1.26",
            ])
            .expect_ok();
            // ...and the agent's re-apply of the approved manifest is not admitted again.
            let err = e2e.apply(&approved, &[], Some(SHOPPER)).expect_err();
            assert!(err.contains("admits its change once"), "{err}");
            let records = e2e.list("blastguard", "spentapprovals");
            assert!(
                records.iter().any(|r| r["spec"]["approved"]
                    .as_str()
                    .is_some_and(|a| a.contains("team/shop"))
                    && r["spec"]["requester"] == SHOPPER),
                "the spent approval is recorded in the cluster: {records:#?}"
            );
        },
    );

    steps.run("path 13: a Namespace delete approved offline", || {
        e2e.namespaces(&["scratch2"]);
        let live = e2e.get("", "namespace/scratch2").expect("the namespace");
        let file = e2e.work.join("scratch2.json");
        std::fs::write(&file, live.to_string()).unwrap();
        let (status, out, err) = common::run_to_exit(&[
            "digest",
            "-f",
            file.to_str().unwrap(),
            "--operation",
            "delete",
        ]);
        assert!(status.success(), "{out}\n{err}");
        let payload = out.lines().next().unwrap().to_string();
        assert!(
            payload.contains(r#""namespace":"","name":"scratch2""#),
            "{payload}"
        );
        let sigs = format!(
            "{}{}",
            e2e.approvers[0].sign(&payload),
            e2e.approvers[1].sign(&payload)
        );
        annotate_approval(&e2e, &["namespace/scratch2"], &payload, &sigs);
        e2e.kubectl_as(BOT, &["delete", "namespace", "scratch2", "--wait=false"])
            .expect_ok();
    });

    steps.run("what held before still holds", || {
        // A deletecollection is judged item by item: the first workload denies it.
        denied(
            &e2e,
            &["delete", "--raw", "/apis/apps/v1/namespaces/prod/deployments"],
            "pods affected",
        );
        assert_eq!(e2e.jsonpath("prod", "deployment/api", "{.spec.replicas}"), "40");
        // Deleting a Namespace, and cordoning a Node, reach the whole cluster.
        denied(&e2e, &["delete", "namespace", "prod", "--wait=false"], "cluster-scoped object");
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "e2e-node"}});
        e2e.apply(&node, &[], None).expect_ok();
        // The patch `kubectl cordon` sends (kubectl 1.35 printed cordon's denial here
        // but exited 0, so the patch is what the test can hold).
        denied(
            &e2e,
            &["patch", "node/e2e-node", "-p", r#"{"spec":{"unschedulable":true}}"#],
            "cluster-scoped object",
        );
        assert_eq!(e2e.jsonpath("", "node/e2e-node", "{.spec.unschedulable}"), "");
        // A Pod's spec changed in prod, and a CronJob's schedule in prod.
        denied(
            &e2e,
            &["-n", "prod", "set", "image", "pod/sized", "app=nginx:1.28"],
            "pods affected 1 > 0",
        );
        let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob",
                          "metadata": {"name": "nightly", "namespace": "prod"},
                          "spec": {"schedule": "0 3 * * *",
                                   "jobTemplate": {"spec": {"template": {"spec": {
                                       "restartPolicy": "Never",
                                       "containers": [{"name": "r", "image": "busybox:1.36"}]}}}}}});
        e2e.apply(&cron, &[], None).expect_ok();
        denied(
            &e2e,
            &patch("prod", "cronjob/nightly", r#"{"spec":{"schedule":"0 4 * * *"}}"#),
            "pods affected 1 > 0",
        );
    });

    steps.finish();
}
