//! `kubectl blastguard request -f FILE` on the real control plane (tests/common/cluster.rs:
//! pinned etcd and kube-apiserver, the chart installed with helm, `blastguard serve`
//! with its state in the cluster). The agent records a request with the real plugin,
//! then makes the very same change with a real `kubectl apply`; the webhook's own
//! record of that denial must be the request the plugin wrote: same name, rule, limits
//! exceeded, pods, digest and object. Nothing here stands in for the API server.
//!
//! The namespaces tell the rule apart only by their labels (one unlabeled, one with
//! the label the chart's policy selects `protected` by), so a request that judges
//! without the namespace's labels, or without the engine, records another rule or no
//! limits.

mod common;

use common::cluster::{BOT, E2e, WAIT, wait_for};
use common::objects::deployment;
use common::users::Users;
use serde_json::{Value, json};

/// What the agent may do: change Deployments anywhere, read Namespaces, and record
/// requests (the chart's requester role).
fn grant(e2e: &E2e) {
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "e2e-request-agent"},
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"],
             "verbs": ["get", "list", "create", "update", "patch"]},
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]});
    e2e.apply(&role, &[], None).expect_ok();
    e2e.kubectl(&[
        "create",
        "clusterrolebinding",
        "e2e-request-agent",
        "--clusterrole",
        "e2e-request-agent",
        "--user",
        BOT,
    ])
    .expect_ok();
    e2e.kubectl(&[
        "create",
        "rolebinding",
        "bot-requests",
        "-n",
        "blastguard",
        "--clusterrole",
        "blastguard-requester",
        "--user",
        BOT,
    ])
    .expect_ok();
}

fn get_request(e2e: &E2e, name: &str) -> Option<Value> {
    e2e.get(
        "blastguard",
        &format!("approvalrequests.blastguard.io/{name}"),
    )
}

/// The fields of a record that say what is asked and why: everything but the times,
/// the attempts and who wrote it.
fn asked(record: &Value) -> Value {
    let spec = &record["spec"];
    json!({
        "display": spec["display"], "target": spec["target"], "operation": spec["operation"],
        "digest": spec["digest"], "summary": spec["summary"], "requester": spec["requester"],
        "rule": spec["rule"], "requiredApprovals": spec["requiredApprovals"],
        "approvers": spec["approvers"], "podsAffected": spec["podsAffected"],
        "exceeded": spec["exceeded"], "object.spec": spec["object"]["spec"],
    })
}

#[test]
fn a_request_records_what_the_webhook_records_for_the_same_change() {
    let e2e = E2e::start_with_cluster_state();
    e2e.namespaces(&["dev", "critical-team"]);
    e2e.kubectl(&[
        "label",
        "namespace",
        "critical-team",
        "blastguard.io/tier=critical",
    ])
    .expect_ok();
    grant(&e2e);
    let users = Users::new(&e2e, &[BOT]);
    // 20 new pods: over the default rule's 10, and over protected's 0.
    for (namespace, rule, approvals) in [("dev", "default", 1), ("critical-team", "protected", 2)] {
        let manifest = deployment(namespace, "api", 20, "nginx:1.27");
        let file = e2e.work.join(format!("{namespace}.json"));
        std::fs::write(&file, manifest.to_string()).unwrap();
        let made = users.plugin(&e2e, BOT, &["request", "-f", file.to_str().unwrap()]);
        assert!(made.stderr.contains("Recorded request"), "{}", made.stderr);
        made.expect_ok();
        let name = e2e
            .list("blastguard", "approvalrequests.blastguard.io")
            .into_iter()
            .find(|r| r["spec"]["target"]["namespace"] == namespace)
            .map(|r| r["metadata"]["name"].as_str().unwrap().to_string())
            .expect("the plugin's record");
        let requested = get_request(&e2e, &name).unwrap();
        assert_eq!(requested["spec"]["source"], "plugin");
        assert_eq!(requested["spec"]["rule"], rule, "{requested}");
        assert_eq!(requested["spec"]["requiredApprovals"], approvals);
        assert!(
            requested["spec"]["exceeded"].as_array().is_some_and(|e| e
                .iter()
                .any(|l| l.as_str().unwrap().contains("maxPodsAffected"))),
            "{requested}"
        );
        assert_eq!(requested["spec"]["podsAffected"], 20, "{requested}");

        // The webhook records its own once the plugin's is gone.
        e2e.kubectl(&[
            "delete",
            "-n",
            "blastguard",
            &format!("approvalrequests.blastguard.io/{name}"),
        ])
        .expect_ok();
        let denied = users
            .kubectl(&e2e, BOT, &["apply", "-f", file.to_str().unwrap()], None)
            .expect_err();
        // The denial names the request, so the agent can tell its approvers.
        assert!(
            denied.contains(&format!("ApprovalRequest {name}")),
            "{name} not in: {denied}"
        );
        let recorded = wait_for(&format!("the webhook's record {name}"), WAIT, || {
            get_request(&e2e, &name).filter(|r| r["spec"]["source"] == "webhook")
        });
        assert_eq!(asked(&requested), asked(&recorded), "{namespace}");
    }
}
