//! The offline approval digest against a real API server (tests/common/cluster.rs).
//!
//! For a corpus of manifests (every kind blastguard judges with a pod template or a
//! spec the API server defaults; images with and without tags, ports, every kind of
//! probe, init containers, volumes of many sources, resource quantities in several
//! spellings, env), three digests must be one:
//! - offline: `blastguard digest -f FILE` of the manifest as written;
//! - the server's object: `kubectl apply --dry-run=server -o json` (the manifest
//!   without its AI marker, which is outside the digest, so the webhook lets it by),
//!   digested by `blastguard digest -f -` (an object from a server is not defaulted);
//! - the webhook's own: the payload in the denial of the AI-marked manifest.
//!
//! A difference fails the test naming every field where the offline object and the
//! server's differ. What the API server makes up (a Job's uid in its selector) is
//! asserted to be flagged instead. `check --server` is tested on the same cluster,
//! with a LimitRange as the server-side mutation no offline tool can see.

mod common;

use std::path::Path;

use common::cluster::{AI_AGENT, E2e};
use serde_json::{Value, json};

fn ai(mut manifest: Value) -> Value {
    manifest["metadata"]["annotations"] = json!({AI_AGENT: "claude-code"});
    manifest
}

fn pod_spec() -> Value {
    json!({
        "initContainers": [{"name": "init", "image": "busybox:1.36", "command": ["true"],
            "resources": {"requests": {"cpu": "0.1", "memory": "64Mi"}}}],
        "containers": [
            {"name": "web", "image": "nginx",
                "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 53, "protocol": "UDP"}],
                "livenessProbe": {"httpGet": {"port": "http"}},
                "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5},
                "startupProbe": {"exec": {"command": ["true"]}, "failureThreshold": 30},
                "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/stop"}}},
                "resources": {"limits": {"cpu": "1.5", "memory": "1024Mi", "ephemeral-storage": "2Gi"},
                    "requests": {"cpu": "250m", "memory": "0.5Gi"}},
                "env": [{"name": "A", "value": "1"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}],
                "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]},
            {"name": "side", "image": "registry.local:5000/team/side:latest",
                "readinessProbe": {"grpc": {"port": 9090}},
                "resources": {"limits": {"cpu": 2, "memory": "1G"}}},
            {"name": "pinned", "image": "ghcr.io/x/y@sha256:0000000000000000000000000000000000000000000000000000000000000000"}
        ],
        "volumes": [
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "sec", "secret": {"secretName": "s", "defaultMode": 256}},
            {"name": "scratch"},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1024Mi"}},
            {"name": "host", "hostPath": {"path": "/tmp"}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
            {"name": "all", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "audience": "x"}},
                {"configMap": {"name": "cfg"}},
                {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}
        ]
    })
}

fn template(app: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}}, "spec": pod_spec()})
}

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "prod", "labels": {"team": "shop"}})
}

/// (what, manifest) for every kind with a defaulted spec.
fn corpus() -> Vec<(&'static str, Value)> {
    let mut job_template = template("job");
    job_template["spec"]["restartPolicy"] = json!("Never");
    vec![
        (
            "Deployment, every container feature",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta("web"), "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": template("web")}}),
        ),
        (
            "Deployment, Recreate, minimal",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta("mini"), "spec": {"strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app": "mini"}},
                "template": {"metadata": {"labels": {"app": "mini"}},
                    "spec": {"containers": [{"name": "a", "image": "nginx:1.27"}]}}}}),
        ),
        (
            "StatefulSet with a claim template",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": meta("db"), "spec": {"serviceName": "db", "replicas": 2,
                "selector": {"matchLabels": {"app": "db"}}, "template": template("db"),
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1024Mi"}}}}]}}),
        ),
        (
            "ReplicaSet",
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": meta("rs"), "spec": {"selector": {"matchLabels": {"app": "rs"}}, "template": template("rs")}}),
        ),
        (
            "ReplicationController, selector and labels from the template",
            json!({"apiVersion": "v1",
            "kind": "ReplicationController", "metadata": {"name": "rc", "namespace": "prod"},
            "spec": {"replicas": 2, "template": template("rc")}}),
        ),
        (
            "DaemonSet",
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": meta("agent"), "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": template("agent")}}),
        ),
        (
            "Job with its own selector",
            json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": meta("job"), "spec": {"manualSelector": true, "parallelism": 4,
                "selector": {"matchLabels": {"app": "job"}}, "template": job_template.clone()}}),
        ),
        (
            "CronJob",
            json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": meta("cron"), "spec": {"schedule": "*/5 * * * *",
                "jobTemplate": {"spec": {"template": job_template}}}}),
        ),
        (
            "HorizontalPodAutoscaler, partial behavior",
            json!({"apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler", "metadata": meta("hpa"), "spec": {"maxReplicas": 10,
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled"},
                "metrics": [{"type": "Resource", "resource": {"name": "memory",
                    "target": {"type": "AverageValue", "averageValue": "1024Mi"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}),
        ),
        (
            "HorizontalPodAutoscaler, no metrics",
            json!({"apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler", "metadata": meta("hpa2"), "spec": {"maxReplicas": 3,
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled"}}}),
        ),
        (
            "Pod on the host network, no token",
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": meta("pod"), "spec": {"automountServiceAccountToken": false,
                "hostNetwork": true, "containers": [{"name": "a", "image": "nginx:1.27",
                    "ports": [{"containerPort": 8080}], "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}]}}),
        ),
        (
            "Namespace",
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "digest-ns", "labels": {"blastguard.io/tier": "critical"}}}),
        ),
    ]
}

/// The `digest` of the payload `blastguard ARGS` prints on its first line.
fn digest_cmd(args: &[&str]) -> String {
    let (status, out, err) = common::run_to_exit(args);
    assert!(
        status.success(),
        "blastguard {args:?} failed:\n{out}\n{err}"
    );
    let payload: Value = serde_json::from_str(out.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    payload["digest"].as_str().unwrap().to_string()
}

fn offline_digest(dir: &Path, name: &str, manifest: &Value) -> String {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, manifest.to_string()).unwrap();
    let mut args = vec!["digest", "-f", file.to_str().unwrap()];
    if manifest["kind"] == "Namespace" {
        args.push("--cluster-scoped");
    }
    digest_cmd(&args)
}

/// What the digest binds, for naming the fields that differ.
fn bound(object: &Value) -> Value {
    let mut out = object.clone();
    let labels = object.pointer("/metadata/labels").cloned();
    let map = out.as_object_mut().unwrap();
    for key in ["apiVersion", "kind", "status", "metadata"] {
        map.remove(key);
    }
    map.insert("labels".into(), labels.unwrap_or(Value::Null));
    out
}

/// Every path where `a` and `b` differ.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                differences(
                    &format!("{path}.{k}"),
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}[{i}]"), p, q, out);
            }
        }
        // Numbers compare as JSON numbers (the digest's JCS form does too).
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => {}
        _ if a != b => out.push(format!("{path}: offline {a}, server {b}")),
        _ => {}
    }
}

#[test]
fn offline_digests_equal_the_servers_and_the_webhooks() {
    // With the cluster's state, as the chart's pods run: an autoscaler's target's
    // size is read from the cluster (in memory it is unknown, and a change that
    // cannot be measured has no payload to compare).
    let e2e = E2e::start_with_cluster_state();
    e2e.namespaces(&["prod"]);
    // The autoscalers' target exists (a person's), so its size is in the webhook's
    // watch by the time they are judged.
    e2e.apply(
        &common::cluster::deployment("prod", "scaled", 1, &[]),
        &[],
        None,
    )
    .expect_ok();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut denied = 0;
    for (what, manifest) in corpus() {
        let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
        let offline = offline_digest(dir.path(), &name, &ai(manifest.clone()));
        // The server's object: the manifest as a person's change (the webhook lets it by).
        let server_object: Value = serde_json::from_str(
            &e2e.apply(&manifest, &["--dry-run=server", "-o", "json"], None)
                .expect_ok(),
        )
        .unwrap();
        // `blastguard digest` does not default an object that comes from a server.
        let server = offline_digest(dir.path(), &format!("{name}-server"), &server_object);
        if offline != server {
            let (defaulted, _) = blastguard::defaults::defaulted(&manifest);
            let mut fields = Vec::new();
            differences("", &bound(&defaulted), &bound(&server_object), &mut fields);
            // The library's own digest of its defaulted object, to tell a defaulting
            // gap (fields above) from one in reading the file.
            let library = blastguard::approval::digest::object_digest(&defaulted).unwrap();
            fields.push(format!(
                "(library digest of the defaulted manifest: {library})"
            ));
            failures.push(format!(
                "{what}: offline {offline} != server {server}; fields:\n    {}",
                fields.join("\n    ")
            ));
        }
        // The webhook's own digest, when it denies the AI-marked manifest.
        let run = e2e.apply(&ai(manifest.clone()), &["--dry-run=server"], None);
        if !run.ok && run.stderr.contains("validate.blastguard.io") {
            denied += 1;
            let payload: Value = serde_json::from_str(&E2e::payload_in(&run.stderr)).unwrap();
            if payload["digest"] != json!(server) {
                failures.push(format!(
                    "{what}: the webhook's digest {} != the server object's {server}",
                    payload["digest"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The pod-bearing kinds in prod are over the `protected` rule's limit.
    assert!(denied >= 8, "only {denied} manifests were denied");
}

/// A Job without its own selector: the API server puts the Job's new uid into it, so
/// no offline digest can match, and `digest` says so rather than mislead.
#[test]
fn a_jobs_generated_selector_is_flagged_not_guessed() {
    let e2e = E2e::start();
    e2e.namespaces(&["prod"]);
    let dir = tempfile::tempdir().unwrap();
    let mut job_template = template("gen");
    job_template["spec"]["restartPolicy"] = json!("Never");
    let manifest = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("gen"),
        "spec": {"template": job_template}});
    let file = dir.path().join("job.json");
    std::fs::write(&file, ai(manifest.clone()).to_string()).unwrap();
    let (status, _, err) = common::run_to_exit(&["digest", "-f", file.to_str().unwrap()]);
    assert!(status.success());
    assert!(
        err.contains("uid the API server gives the Job") && err.contains("mutating admission"),
        "{err}"
    );
    let one = e2e.digest_of(
        &serde_json::from_str(
            &e2e.apply(&manifest, &["--dry-run=server", "-o", "json"], None)
                .expect_ok(),
        )
        .unwrap(),
    );
    let two = e2e.digest_of(
        &serde_json::from_str(
            &e2e.apply(&manifest, &["--dry-run=server", "-o", "json"], None)
                .expect_ok(),
        )
        .unwrap(),
    );
    assert_ne!(one, two, "each create gets a new uid, so a new digest");
}

/// `check --server`: the cluster's own object, mutations included. A LimitRange in
/// `prod` gives a Pod's container resources it does not ask for (the LimitRanger
/// admission plugin); offline cannot know, the server-side answer does.
#[test]
fn check_server_takes_the_clusters_object_mutations_included() {
    let e2e = E2e::start();
    e2e.namespaces(&["prod"]);
    e2e.apply(
        &json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "defaults", "namespace": "prod"},
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "300m", "memory": "200Mi"}}]}}),
        &[],
        None,
    )
    .expect_ok();
    let dir = tempfile::tempdir().unwrap();
    let manifest = ai(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("limited"),
        "spec": {"automountServiceAccountToken": false,
            "containers": [{"name": "a", "image": "nginx:1.27"}]}}),
    );
    let file = dir.path().join("pod.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let denial = e2e
        .apply(&manifest, &["--dry-run=server"], None)
        .expect_err();
    let webhook: Value = serde_json::from_str(&E2e::payload_in(&denial)).unwrap();
    let webhook = webhook["digest"].as_str().unwrap().to_string();

    let check = |server: bool| {
        let mut cmd = common::blastguard();
        cmd.args([
            "check",
            "-f",
            file.to_str().unwrap(),
            "-o",
            "json",
            "--policy",
        ])
        .arg(e2e.work.join("policy.yaml"))
        .env("KUBECONFIG", &e2e.cluster.kubeconfig);
        if server {
            cmd.args(["--server", "--kubectl"])
                .arg(common::repo().join(".tools/bin/kubectl"));
        }
        let out = cmd.output().unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(out.status.code(), Some(1), "denied: {report}");
        report.to_string()
    };
    let offline = check(false);
    assert!(
        !offline.contains(&webhook),
        "offline cannot see the LimitRange"
    );
    let exact = check(true);
    assert!(exact.contains(&webhook), "{webhook} not in {exact}");
    // Nothing was stored.
    assert!(e2e.get("prod", "pod/limited").is_none());
}
