//! What the caches of cluster state hold in memory for 10,000 workloads in 1,000
//! namespaces: a figure for the docs, not a pass/fail test (ignored by default).
//!
//! `cargo test --release --test cluster_cache_memory -- --ignored --nocapture`
//!
//! The objects are what the API server lists: Deployments as `kubectl apply` leaves
//! them (the last-applied-configuration annotation, managedFields, a status), one in
//! ten with a signed approval, each parsed as the watch parses it and reduced to what
//! is kept; Namespaces with the labels the API server sets plus two of their own. A
//! counting allocator measures the bytes still allocated once the caches are filled
//! and everything else is dropped.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use blastguard::cluster::cache::{Cache, Event};
use blastguard::cluster::namespaces::Labels;
use blastguard::cluster::workloads::{self, SlimWorkload, WorkloadFacts};
use serde_json::{Value, json};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NAMESPACES: usize = 1_000;
const WORKLOADS: usize = 10_000;

fn deployment(ns: &str, name: &str, i: usize) -> Value {
    let spec = json!({
        "replicas": 3,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name, "tier": "backend"}},
            "spec": {"containers": [{
                "name": "app", "image": format!("registry.example.com/team/{name}:1.2.{i}"),
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst", "securityContext": {}, "schedulerName": "default-scheduler"}
        },
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
        "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600
    });
    let last_applied = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": spec
    })
    .to_string();
    let mut annotations = json!({
        "kubectl.kubernetes.io/last-applied-configuration": last_applied,
        "deployment.kubernetes.io/revision": "4",
        "blastguard.io/ai-agent": "claude-code",
        "blastguard.io/change-id": format!("CHG-{}", i % 500),
    });
    if i.is_multiple_of(10) {
        // A signed approval: the payload and two armored ed25519 signatures.
        annotations["blastguard.io/approval"] = json!(format!(
            "{{\"apiVersion\":\"blastguard.io/v1\",\"kind\":\"Approval\",\"target\":{{\"group\":\"apps\",\"kind\":\"Deployment\",\"namespace\":\"{ns}\",\"name\":\"{name}\"}},\"operation\":\"scale\",\"replicas\":20,\"notBefore\":\"2026-11-22T10:00:00Z\",\"notAfter\":\"2026-11-22T12:00:00Z\",\"reason\":\"CHG-1234: canary passed\"}}"
        ));
        let signature = format!(
            "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n",
            "U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAg".repeat(6)
        );
        annotations["blastguard.io/approval-signature"] = json!(signature.repeat(2));
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": ns, "uid": format!("6a3e7f1c-9d2b-4e8a-b5c4-{i:012}"),
            "resourceVersion": format!("{}", 100_000 + i), "generation": 4,
            "creationTimestamp": "2026-11-22T10:00:00Z",
            "labels": {"app": name, "team": "payments"},
            "annotations": annotations,
            "managedFields": [
                {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "apps/v1",
                 "time": "2026-11-22T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}, "f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:replicas": {}, "f:template": {}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
                 "time": "2026-11-22T10:00:05Z", "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:availableReplicas": {}, "f:conditions": {}, "f:replicas": {}}}}
            ]
        },
        "spec": spec,
        "status": {
            "observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
            "conditions": [
                {"type": "Available", "status": "True", "lastUpdateTime": "2026-11-22T10:00:05Z", "lastTransitionTime": "2026-11-22T10:00:05Z", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "True", "lastUpdateTime": "2026-11-22T10:00:05Z", "lastTransitionTime": "2026-11-22T10:00:00Z", "reason": "NewReplicaSetAvailable", "message": "ReplicaSet has successfully progressed."}
            ]
        }
    })
}

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[test]
#[ignore = "prints a measurement; run with --ignored --nocapture"]
fn cache_memory_for_ten_thousand_workloads_in_a_thousand_namespaces() {
    let namespaces = Cache::<Labels>::default();
    let workloads = Cache::<WorkloadFacts>::default();
    let before = LIVE.load(Ordering::Relaxed);
    let mut listed_json = 0usize;

    namespaces.apply(Event::Init);
    for n in 0..NAMESPACES {
        let name = format!("team-{n:04}");
        let labels: Labels = [
            ("kubernetes.io/metadata.name", name.as_str()),
            ("team", "payments"),
            (
                "blastguard.io/tier",
                if n.is_multiple_of(50) {
                    "critical"
                } else {
                    "standard"
                },
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        namespaces.apply(Event::InitApply(name, n as u64, labels));
    }
    namespaces.apply(Event::InitDone);
    let after_namespaces = LIVE.load(Ordering::Relaxed);

    workloads.apply(Event::Init);
    for i in 0..WORKLOADS {
        let ns = format!("team-{:04}", i % NAMESPACES);
        let object = deployment(&ns, &format!("service-{i:05}"), i);
        let text = serde_json::to_string(&object).unwrap();
        listed_json += text.len();
        drop(object);
        // As the watch does: parse what the API server sent, keep only the facts.
        let slim: SlimWorkload = serde_json::from_str(&text).unwrap();
        let (key, version, facts) = workloads::reduce(slim).unwrap();
        workloads.apply(Event::InitApply(key, version, facts));
    }
    workloads.apply(Event::InitDone);
    let after = LIVE.load(Ordering::Relaxed);

    let ns_bytes = after_namespaces - before;
    let wl_bytes = after - after_namespaces;
    println!("cache memory (heap bytes still allocated once filled):");
    println!(
        "  {NAMESPACES} namespaces (3 labels each):            {} ({} bytes each)",
        mib(ns_bytes),
        ns_bytes / NAMESPACES
    );
    println!(
        "  {WORKLOADS} Deployments (labels, blastguard.io/*, replicas; 1 in 10 approved): {} ({} bytes each)",
        mib(wl_bytes),
        wl_bytes / WORKLOADS
    );
    println!(
        "  total:                                    {}",
        mib(after - before)
    );
    println!(
        "  for comparison, the objects as listed (JSON): {} ({} bytes each)",
        mib(listed_json),
        listed_json / WORKLOADS
    );
    println!(
        "  peak heap during the fill: {}",
        mib(PEAK.load(Ordering::Relaxed))
    );
    assert_eq!(namespaces.len(), NAMESPACES);
    assert_eq!(workloads.len(), WORKLOADS);
}
