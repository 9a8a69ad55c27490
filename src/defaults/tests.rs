//! Tables of manifests and the objects a v1.35 API server made of them
//! (`kubectl apply --dry-run=server -o json`, spec and labels only).

use super::*;
use serde_json::json;

fn spec_and_labels(object: &Value) -> Value {
    json!({"labels": object.pointer("/metadata/labels"), "spec": object.get("spec")})
}

#[test]
fn deployment_as_the_server_wrote_it() {
    let manifest = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}}, "spec": {
                "containers": [{"name": "a", "image": "nginx",
                    "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"cpu": "1.5", "memory": "1024Mi"},
                        "requests": {"cpu": "1000m", "memory": "1e3"}},
                    "livenessProbe": {"httpGet": {"port": 80}},
                    "readinessProbe": {"grpc": {"port": 9}},
                    "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}],
                "volumes": [{"name": "c", "configMap": {"name": "x"}}, {"name": "e"},
                    {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}}}
    });
    let server = json!({"progressDeadlineSeconds": 600, "replicas": 1, "revisionHistoryLimit": 10,
        "selector": {"matchLabels": {"app": "api"}},
        "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"},
        "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{
            "env": [{"name": "X", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
            "image": "nginx", "imagePullPolicy": "Always",
            "livenessProbe": {"failureThreshold": 3, "httpGet": {"path": "/", "port": 80, "scheme": "HTTP"},
                "periodSeconds": 10, "successThreshold": 1, "timeoutSeconds": 1},
            "name": "a", "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "readinessProbe": {"failureThreshold": 3, "grpc": {"port": 9, "service": ""},
                "periodSeconds": 10, "successThreshold": 1, "timeoutSeconds": 1},
            "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1e3"}},
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
            "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
            "securityContext": {}, "terminationGracePeriodSeconds": 30,
            "volumes": [{"configMap": {"defaultMode": 420, "name": "x"}, "name": "c"},
                {"emptyDir": {}, "name": "e"},
                {"name": "p", "projected": {"defaultMode": 420,
                    "sources": [{"serviceAccountToken": {"expirationSeconds": 3600, "path": "t"}}]}}]}}});
    let (got, unforeseeable) = defaulted(&manifest);
    assert_eq!(got["spec"], server);
    assert!(unforeseeable.is_empty());
    // Idempotent: the server's object is left as it is.
    assert_eq!(defaulted(&got).0, got);
}

#[test]
fn namespace_label_and_finalizer() {
    let (got, _) = defaulted(&json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "n1"}}));
    assert_eq!(
        spec_and_labels(&got),
        json!({"labels": {"kubernetes.io/metadata.name": "n1"}, "spec": {"finalizers": ["kubernetes"]}})
    );
}

#[test]
fn job_defaults_and_its_unforeseeable_selector() {
    let (got, unforeseeable) = defaulted(&json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "a", "image": "busybox"}]}}}}));
    let spec = &got["spec"];
    for (field, want) in [
        ("backoffLimit", json!(6)),
        ("completionMode", json!("NonIndexed")),
        ("completions", json!(1)),
        ("manualSelector", json!(false)),
        ("parallelism", json!(1)),
        ("podReplacementPolicy", json!("TerminatingOrFailed")),
        ("suspend", json!(false)),
    ] {
        assert_eq!(spec[field], want, "{field}");
    }
    assert_eq!(
        spec.pointer("/template/spec/containers/0/resources"),
        Some(&json!({}))
    );
    assert_eq!(unforeseeable.len(), 1);
    // Parallelism alone leaves completions unset.
    let (got, _) = defaulted(&json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "j"}, "spec": {"parallelism": 3, "template": {}}}));
    assert_eq!(got["spec"].get("completions"), None);
}

#[test]
fn bare_pod_gets_the_admission_plugins_defaults() {
    let (got, unforeseeable) = defaulted(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p"}, "spec": {"automountServiceAccountToken": false,
            "containers": [{"name": "a", "image": "nginx:1.2", "resources": {"limits": {"cpu": 1}}}]}}));
    let spec = &got["spec"];
    assert_eq!(
        spec.pointer("/containers/0/resources"),
        Some(&json!({"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}))
    );
    assert_eq!(
        spec.pointer("/containers/0/imagePullPolicy"),
        Some(&json!("IfNotPresent"))
    );
    for (field, want) in [
        ("enableServiceLinks", json!(true)),
        ("priority", json!(0)),
        ("preemptionPolicy", json!("PreemptLowerPriority")),
        ("serviceAccountName", json!("default")),
        ("serviceAccount", json!("default")),
    ] {
        assert_eq!(spec[field], want, "{field}");
    }
    assert_eq!(spec["tolerations"].as_array().map(Vec::len), Some(2));
    assert!(unforeseeable.is_empty());
}

#[test]
fn image_pull_policy_follows_the_tag() {
    for (image, want) in [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.27", "IfNotPresent"),
        ("registry:5000/nginx", "Always"),
        ("registry:5000/nginx:1.2", "IfNotPresent"),
        ("nginx@sha256:abc", "IfNotPresent"),
        ("nginx:latest@sha256:abc", "Always"),
    ] {
        let mut c = json!({"name": "a", "image": image});
        container(c.as_object_mut().unwrap());
        assert_eq!(c["imagePullPolicy"], json!(want), "{image}");
    }
}

#[test]
fn hpa_behavior_is_laid_over_the_defaults() {
    let (got, _) = defaulted(
        &json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "h"}, "spec": {"maxReplicas": 5,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}),
    );
    assert_eq!(got["spec"]["minReplicas"], json!(1));
    assert_eq!(
        got["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}])
    );
    assert_eq!(
        got["spec"]["behavior"]["scaleDown"],
        json!({"stabilizationWindowSeconds": 60, "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]})
    );
    assert_eq!(
        got["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"],
        json!(0)
    );
}

#[test]
fn quantities_in_canonical_form() {
    for (given, want) in [
        ("1.5", "1500m"),
        ("0.5", "500m"),
        ("1000m", "1"),
        ("1024Mi", "1Gi"),
        ("1e3", "1e3"),
        ("1000", "1k"),
        ("1200", "1200"),
        ("512Ki", "512Ki"),
        ("0.5Ki", "512"),
        ("1.5Gi", "1536Mi"),
        ("100m", "100m"),
        ("0.0001", "1m"),
        ("2", "2"),
        ("128974848", "128974848"),
        ("129e6", "129e6"),
        ("123Mi", "123Mi"),
        ("0", "0"),
    ] {
        assert_eq!(
            canonical_quantity(given, true).as_deref(),
            Some(want),
            "{given}"
        );
    }
    assert_eq!(canonical_quantity("abc", true), None);
}
