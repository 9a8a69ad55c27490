//! The webhook's matchConditions never send the cluster's controllers because of an
//! annotation they copied (a ReplicaSet of an AI-made Deployment, a Job of an AI-made
//! CronJob), evaluated with the `cel` crate as the API server evaluates them.
//!
//! The chart's helpers (`helm template`, the rendered objects, matchConditions in CEL) are
//! in tests/common/chart.rs; helm and kubernetes-validate come from `.tools/bin`
//! (`scripts/install-tools.sh`, which `scripts/test.sh` runs), kubectl, openssl and
//! promtool from PATH.

mod common;

use common::chart::*;
use common::review::Request;
use serde_json::{Value, json};

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
