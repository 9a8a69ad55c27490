//! The approver's side on the real control plane (tests/common/cluster.rs: pinned etcd
//! and kube-apiserver, the chart installed with helm, `blastguard serve` registered
//! through `webhook.url`, every change made with the real kubectl). Nothing here
//! stands in for the API server.
//!
//! Issue 22: `check` judges with the policy the cluster runs and names it (finding 3),
//! an approver shown one manifest cannot sign a payload built from another, with
//! the cluster's own payload (finding 1), and an approver reads the diff of an AI
//! change to an AI-marked object (finding 4).

mod common;

use common::cluster::{AI_AGENT, E2e, Steps};
use common::objects::ai_deployment;
use serde_json::{Value, json};

/// The chart's policy with a `dev` rule before the default one: 50 pods in `dev-*`.
fn policy_with_dev_rule(e2e: &E2e) -> String {
    let policy = std::fs::read_to_string(e2e.work.join("policy.yaml")).unwrap();
    if policy.contains("- name: dev\n") {
        return policy;
    }
    let marker = "  rules:\n";
    assert!(policy.contains(marker), "{policy}");
    policy.replacen(
        marker,
        "  rules:\n    - name: dev\n      namespaces: [\"dev-*\"]\n      limits: {maxPodsAffected: 50}\n",
        1,
    )
}

fn check(e2e: &E2e, file: &std::path::Path, extra: &[&str]) -> (Option<i32>, Value, String) {
    let out = common::blastguard()
        .args(["check", "-f", file.to_str().unwrap(), "-o", "json"])
        .args(extra)
        .args(["--kubectl"])
        .arg(common::repo().join(".tools/bin/kubectl"))
        .env("KUBECONFIG", &e2e.cluster.kubeconfig)
        .env_remove("BLASTGUARD_POLICY")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code(),
        report,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn the_approvers_loop_on_a_real_cluster() {
    let e2e = E2e::start();
    let mut steps = Steps::default();

    steps.run(
        "check judges with the cluster's policy and names it",
        || {
            // The cluster's ConfigMap gains a `dev` rule (50 pods in dev-*); the embedded
            // default policy does not have it.
            let cm = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "blastguard-policy", "namespace": "blastguard"},
                "data": {"policy.yaml": policy_with_dev_rule(&e2e)}
            });
            e2e.kubectl_with(&["apply", "-f", "-"], Some(&cm.to_string()))
                .expect_ok();
            e2e.kubectl(&["create", "namespace", "dev-team1"])
                .expect_ok();
            let file = e2e.work.join("dev.json");
            std::fs::write(
                &file,
                ai_deployment("dev-team1", "web", 30, "nginx:1.27").to_string(),
            )
            .unwrap();

            // Issue 22 finding 3: without a policy, `check` used the embedded one and
            // said nothing about it.
            let (code, report, _) = check(&e2e, &file, &[]);
            assert_eq!(code, Some(1), "{report}");
            assert_eq!(report["policy"]["source"], "embedded default", "{report}");
            assert_eq!(report["results"][0]["rule"]["name"], "default");

            for flags in [&["--policy-from-cluster"][..], &["--server"][..]] {
                let (code, report, stderr) = check(&e2e, &file, flags);
                assert_eq!(code, Some(0), "{flags:?}: {report}\n{stderr}");
                assert_eq!(
                    report["policy"]["source"], "cluster ConfigMap blastguard/blastguard-policy",
                    "{flags:?}"
                );
                assert_eq!(report["results"][0]["rule"]["name"], "dev", "{flags:?}");
            }
            // The cluster agrees once the webhook runs that policy: this harness's
            // serve reads the ConfigMap's text from a file (as docs/install.md
            // "Development" does) and reloads it when it changes.
            std::fs::write(e2e.work.join("policy.yaml"), policy_with_dev_rule(&e2e)).unwrap();
            common::cluster::wait_for(
                "the webhook to reload the policy",
                common::cluster::WAIT,
                || {
                    e2e.kubectl(&["apply", "--dry-run=server", "-f", file.to_str().unwrap()])
                        .ok
                        .then_some(())
                },
            );

            // Asked for explicitly, an unreadable ConfigMap is an error, never a silent
            // fallback; with --server alone the fallback is said.
            let (code, _, stderr) = {
                let out = common::blastguard()
                    .args([
                        "check",
                        "-f",
                        file.to_str().unwrap(),
                        "--policy-from-cluster",
                    ])
                    .args(["--policy-configmap", "nothing-here", "--kubectl"])
                    .arg(common::repo().join(".tools/bin/kubectl"))
                    .env("KUBECONFIG", &e2e.cluster.kubeconfig)
                    .output()
                    .unwrap();
                (
                    out.status.code(),
                    (),
                    String::from_utf8_lossy(&out.stderr).to_string(),
                )
            };
            assert_eq!(code, Some(2), "{stderr}");
            assert!(stderr.contains("blastguard/nothing-here"), "{stderr}");
            let (_, report, stderr) = check(
                &e2e,
                &file,
                &["--server", "--policy-configmap", "nothing-here"],
            );
            assert_eq!(report["policy"]["source"], "embedded default");
            assert!(
                stderr.contains("judged with the embedded default policy, not the cluster's"),
                "{stderr}"
            );
        },
    );

    steps.run(
        "an approver shown another manifest refuses the cluster's payload",
        || {
            e2e.kubectl(&["create", "namespace", "prod"]).expect_ok();
            let evil = ai_deployment("prod", "api", 20, "evil:latest");
            let shown = ai_deployment("prod", "api", 20, "nginx:1.27");
            let denial = e2e
                .kubectl_with(
                    &["apply", "--dry-run=server", "-f", "-"],
                    Some(&evil.to_string()),
                )
                .expect_err();
            let payload = E2e::payload_in(&denial);
            let parsed: Value = serde_json::from_str(&payload).unwrap();
            assert!(
                parsed["summary"].as_str().is_some_and(
                    |s| s.contains("image evil:latest") && s.contains("20 pods affected")
                ),
                "{payload}"
            );
            let payload_file = e2e.work.join("payload.json");
            std::fs::write(&payload_file, &payload).unwrap();
            let shown_file = e2e.work.join("shown.json");
            std::fs::write(&shown_file, shown.to_string()).unwrap();
            // The approver's own key (whether the cluster trusts it is not the point).
            let key = e2e.work.join("approver_key");
            let keygen = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key)
                .status()
                .unwrap();
            assert!(keygen.success());
            let out = common::blastguard()
                .args(["approve", "-f", shown_file.to_str().unwrap(), "--payload"])
                .arg(&payload_file)
                .arg("--key")
                .arg(&key)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(
                stderr.contains(parsed["digest"].as_str().unwrap()),
                "the cluster's digest named: {stderr}"
            );
            // On the manifest the payload came from, the cluster's digest is the one
            // computed here, and the approver signs.
            let evil_file = e2e.work.join("evil.json");
            std::fs::write(&evil_file, evil.to_string()).unwrap();
            let out = common::blastguard()
                .args(["approve", "-f", evil_file.to_str().unwrap(), "--payload"])
                .arg(&payload_file)
                .arg("--key")
                .arg(&key)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            assert!(
                stderr.contains("summary:   create, replicas 20, image evil:latest"),
                "{stderr}"
            );
        },
    );
    steps.run(
        "an AI's rollout restart, made exact, is approved and admitted once",
        || {
            // A person's Deployment of 20 pods; the agent's restart replaces all 20,
            // over the default rule's 10.
            e2e.kubectl(&["create", "namespace", "team-r"]).expect_ok();
            let mut web = ai_deployment("team-r", "web", 20, "nginx:1.27");
            web["metadata"]["annotations"] = json!({});
            e2e.kubectl_with(&["apply", "-f", "-"], Some(&web.to_string()))
                .expect_ok();
            let mut live = e2e.get("team-r", "deployment/web").unwrap();
            // As `--restart` drops it: the controller's status updates move it on.
            live["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
            // The agent's file: the live object, marked as its change.
            live["metadata"]["annotations"][AI_AGENT] = json!("claude-code");
            let file = e2e.work.join("restart.json");
            std::fs::write(&file, live.to_string()).unwrap();
            let at = "2026-12-06T11:30:00Z";

            // The payload for exactly this restart, offline; the server's dry run of
            // the same object asks for the same digest.
            let out = common::blastguard()
                .args(["digest", "-f", file.to_str().unwrap(), "--restart", at])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let payload = String::from_utf8(out.stdout).unwrap().trim().to_string();
            let parsed: Value = serde_json::from_str(&payload).unwrap();
            let mut restarted = live.clone();
            restarted["spec"]["template"]["metadata"]["annotations"]
                ["kubectl.kubernetes.io/restartedAt"] = json!(at);
            let denial = e2e
                .kubectl_with(
                    &["replace", "--dry-run=server", "-f", "-"],
                    Some(&restarted.to_string()),
                )
                .expect_err();
            let served: Value = serde_json::from_str(&E2e::payload_in(&denial)).unwrap();
            assert_eq!(served["digest"], parsed["digest"], "{denial}");
            assert!(
                served["summary"].as_str().is_some_and(|s| s.contains("20 pods affected")),
                "{served}"
            );

            // The approver signs (ssh-keygen), attaches, and the file carries restart
            // and approval; the agent replaces the object with it.
            let payload_file = e2e.work.join("restart-payload.json");
            std::fs::write(&payload_file, &payload).unwrap();
            let sig = e2e.work.join("restart-payload.json.sig");
            std::fs::write(&sig, e2e.approvers[0].sign(&payload)).unwrap();
            let out = common::blastguard()
                .args(["approve", "-f", file.to_str().unwrap(), "--restart", at, "--payload"])
                .arg(&payload_file)
                .arg("--signature")
                .arg(&sig)
                .arg("--annotate")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            e2e.kubectl(&["replace", "-f", file.to_str().unwrap()])
                .expect_ok();
            let now = e2e.get("team-r", "deployment/web").unwrap();
            assert_eq!(
                now["spec"]["template"]["metadata"]["annotations"]
                    ["kubectl.kubernetes.io/restartedAt"],
                at
            );
            // A second restart (a new time) is a new change: denied without approval.
            let mut again = now.clone();
            again["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
            again["spec"]["template"]["metadata"]["annotations"]
                ["kubectl.kubernetes.io/restartedAt"] = json!("2026-12-06T11:45:00Z");
            e2e.kubectl_with(&["replace", "-f", "-"], Some(&again.to_string()))
                .expect_err();
        },
    );
    steps.run(
        "an approver reads the diff of an AI change to an AI-marked object",
        || {
            // The agent's Deployment of 5 pods (within the default rule's 10).
            e2e.kubectl(&["create", "namespace", "payments"]).expect_ok();
            let web = ai_deployment("payments", "web", 5, "nginx:1.27");
            e2e.kubectl_with(&["apply", "-f", "-"], Some(&web.to_string()))
                .expect_ok();
            // Its change: 40 pods of a new image, over the limit.
            let file = e2e.work.join("web-40.json");
            std::fs::write(
                &file,
                ai_deployment("payments", "web", 40, "nginx:1.28").to_string(),
            )
            .unwrap();
            let denial = e2e
                .kubectl(&["apply", "--dry-run=server", "-f", file.to_str().unwrap()])
                .expect_err();
            let served: Value = serde_json::from_str(&E2e::payload_in(&denial)).unwrap();

            // Issue 22 finding 4: `check --server` retried the denied dry run without
            // the AI markers, sticky provenance denied that too, and check failed
            // (exit 2) dumping the patch. Now it judges the update offline: denied.
            let (code, report, stderr) = check(&e2e, &file, &["--server"]);
            assert_eq!(code, Some(1), "{report}\n{stderr}");
            assert_eq!(report["results"][0]["operation"], "UPDATE", "{report}");
            assert!(stderr.contains("judged as applied offline"), "{stderr}");

            let diff = |extra: &[&str]| {
                let out = common::blastguard()
                    .args(["diff", "-f", file.to_str().unwrap(), "--kubectl"])
                    .arg(common::repo().join(".tools/bin/kubectl"))
                    .args(extra)
                    .env("KUBECONFIG", &e2e.cluster.kubeconfig)
                    .env_remove("BLASTGUARD_POLICY")
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr).to_string();
                assert!(out.status.success(), "{stderr}");
                String::from_utf8(out.stdout).unwrap()
            };
            let shown: Value = serde_json::from_str(&diff(&["-o", "json"])).unwrap();
            let object = &shown["objects"][0];
            assert_eq!(object["request"], "UPDATE", "{shown}");
            assert_eq!(object["basis"], "offline", "{shown}");
            // The diff is of the object the cluster's approval binds.
            assert_eq!(object["digest"], served["digest"], "{shown}\n{denial}");
            assert_eq!(object["clusterDigest"], served["digest"], "{shown}");
            assert_eq!(object["summary"], served["summary"], "{shown}");
            let text = diff(&[]);
            assert!(
                text.contains(
                    "~ spec.replicas: 5 → 40\n~ spec.template.spec.containers[nginx].image: nginx:1.27 → nginx:1.28\n"
                ),
                "only the fields that change: {text}"
            );
            assert!(
                text.contains("(the cluster asks for this digest)"),
                "{text}"
            );
            assert!(!text.contains("resourceVersion"), "{text}");

            // A change the cluster admits is shown from the server's own dry run.
            std::fs::write(
                &file,
                ai_deployment("payments", "web", 6, "nginx:1.27").to_string(),
            )
            .unwrap();
            let shown: Value = serde_json::from_str(&diff(&["-o", "json"])).unwrap();
            let object = &shown["objects"][0];
            assert_eq!(object["basis"], "serverDryRun", "{shown}");
            assert_eq!(
                object["diff"]["changes"],
                json!([{"path": "spec.replicas", "old": 5, "new": 6}]),
                "{shown}"
            );
        },
    );
    steps.finish();
}
