//! The API server's defaulting, offline: a manifest turned into the object the API
//! server would present, so `check`, `digest` and `approve` digest what it digests.
//!
//! The approval digest is taken over the object after the API server has defaulted it
//! (`imagePullPolicy`, `strategy`, probe timings, ...) and written it out in its own
//! canonical form (resource quantities such as `1024Mi` become `1Gi`). A digest of the
//! manifest as written never matches. This module repeats, for the kinds blastguard
//! judges (charts/blastguard/files/kinds.yaml), what Kubernetes v1.35 does on CREATE
//! and UPDATE before validating admission:
//! - the `SetDefaults_*` functions of `pkg/apis/{core,apps,batch,autoscaling/v2}` and
//!   their generated callers (which fields get defaults, at which depth);
//! - the defaults the built-in admission plugins that every cluster enables add to
//!   bare Pods (ServiceAccount, Priority, DefaultTolerationSeconds);
//! - the registry strategies' fixed fields (a Namespace's `kubernetes` finalizer).
//!
//! tests/e2e_digest_agreement.rs holds this to a real API server.
//!
//! What cannot be known offline is returned as [`Unforeseeable`]: a cluster's own
//! mutating webhooks, a Job's selector (it carries the uid the API server gives the
//! Job at creation), a Pod's service-account token volume (its name is random).
//!
//! Objects are defaulted in place and only where a field is unset, so defaulting an
//! object the API server already defaulted changes nothing.

use serde_json::{Map, Value, json};

/// A part of the server's object that no offline tool can predict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unforeseeable(pub String);

impl std::fmt::Display for Unforeseeable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What every offline digest must say: the one thing defaulting cannot repeat.
pub const MUTATING_WEBHOOKS_NOTE: &str = "offline, the API server's defaults are applied but a cluster's mutating admission \
     webhooks cannot be foreseen: if one changes the object, the cluster's digest differs \
     (`kubectl blastguard check --server` asks the cluster itself)";

/// Applies the API server's defaults to `object` (a manifest of a built-in kind
/// blastguard judges; other kinds are left as they are) and returns what could not be
/// predicted.
pub fn apply(object: &mut Value) -> Vec<Unforeseeable> {
    let mut unforeseeable = Vec::new();
    let api_version = str_at(object, "apiVersion").unwrap_or_default().to_string();
    let kind = str_at(object, "kind").unwrap_or_default().to_string();
    let Some(root) = object.as_object_mut() else {
        return unforeseeable;
    };
    match (api_version.as_str(), kind.as_str()) {
        ("apps/v1", "Deployment") => deployment(root),
        ("apps/v1", "StatefulSet") => stateful_set(root),
        ("apps/v1", "ReplicaSet") => {
            let spec = child(root, "spec");
            fill(spec, "replicas", json!(1));
            template(spec);
        }
        ("apps/v1", "DaemonSet") => daemon_set(root),
        ("v1", "ReplicationController") => replication_controller(root),
        ("batch/v1", "Job") => {
            job(root, &mut unforeseeable);
        }
        ("batch/v1", "CronJob") => cron_job(root),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => hpa(root),
        ("v1", "Pod") => pod(root, &mut unforeseeable),
        ("v1", "Namespace") => namespace(root),
        _ => {}
    }
    unforeseeable
}

/// A clone of `object` with the API server's defaults.
pub fn defaulted(object: &Value) -> (Value, Vec<Unforeseeable>) {
    let mut object = object.clone();
    let notes = apply(&mut object);
    (object, notes)
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The mapping under `key`, created empty when absent or null (Go's non-pointer
/// structs are always written out, as `{}` when empty).
fn child<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = map.entry(key).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("just made an object")
}

/// The mapping under `key` when it is one (Go's pointer structs: absent stays absent).
fn child_if<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    map.get_mut(key).and_then(Value::as_object_mut)
}

/// The mappings of the list under `key`.
fn items<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// A Go pointer field: set when absent or null (an explicit `0` or `false` stays).
fn fill(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

/// A Go value field: its zero value (`""`, `0`) counts as unset too.
fn fill_zero(map: &mut Map<String, Value>, key: &str, value: Value) {
    let unset = match map.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(_) => false,
    };
    if unset {
        map.insert(key.to_string(), value);
    }
}

fn deployment(root: &mut Map<String, Value>) {
    let spec = child(root, "spec");
    fill(spec, "replicas", json!(1));
    let strategy = child(spec, "strategy");
    fill_zero(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type") == Some(&json!("RollingUpdate")) {
        let rolling = child(strategy, "rollingUpdate");
        fill(rolling, "maxUnavailable", json!("25%"));
        fill(rolling, "maxSurge", json!("25%"));
    }
    fill(spec, "revisionHistoryLimit", json!(10));
    fill(spec, "progressDeadlineSeconds", json!(600));
    template(spec);
}

fn stateful_set(root: &mut Map<String, Value>) {
    let spec = child(root, "spec");
    fill_zero(spec, "podManagementPolicy", json!("OrderedReady"));
    let strategy = child(spec, "updateStrategy");
    if strategy.get("type").is_none_or(|t| t.is_null() || t == "") {
        strategy.insert("type".into(), json!("RollingUpdate"));
        child(strategy, "rollingUpdate");
    }
    if strategy.get("type") == Some(&json!("RollingUpdate")) {
        // maxUnavailable is defaulted only under the MaxUnavailableStatefulSet gate,
        // off by default in v1.35.
        if let Some(rolling) = child_if(strategy, "rollingUpdate") {
            fill(rolling, "partition", json!(0));
        }
    }
    let retention = child(spec, "persistentVolumeClaimRetentionPolicy");
    fill_zero(retention, "whenDeleted", json!("Retain"));
    fill_zero(retention, "whenScaled", json!("Retain"));
    fill(spec, "replicas", json!(1));
    fill(spec, "revisionHistoryLimit", json!(10));
    for claim in items(spec, "volumeClaimTemplates") {
        // The templates are written out as whole PersistentVolumeClaims.
        fill_zero(claim, "apiVersion", json!("v1"));
        fill_zero(claim, "kind", json!("PersistentVolumeClaim"));
        let status = child(claim, "status");
        fill_zero(status, "phase", json!("Pending"));
        claim_spec(child(claim, "spec"));
    }
    template(spec);
}

fn claim_spec(spec: &mut Map<String, Value>) {
    fill(spec, "volumeMode", json!("Filesystem"));
    if let Some(resources) = child_if(spec, "resources") {
        resource_lists(resources);
    }
}

fn daemon_set(root: &mut Map<String, Value>) {
    let spec = child(root, "spec");
    let strategy = child(spec, "updateStrategy");
    fill_zero(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type") == Some(&json!("RollingUpdate")) {
        let rolling = child(strategy, "rollingUpdate");
        fill(rolling, "maxUnavailable", json!(1));
        fill(rolling, "maxSurge", json!(0));
    }
    fill(spec, "revisionHistoryLimit", json!(10));
    template(spec);
}

fn replication_controller(root: &mut Map<String, Value>) {
    let labels = template_labels(root);
    let spec = child(root, "spec");
    fill(spec, "replicas", json!(1));
    if let Some(labels) = &labels {
        fill_empty_map(spec, "selector", labels);
    }
    // The template is a pointer here: only an existing one is defaulted.
    if spec.get("template").is_some_and(Value::is_object) {
        template(spec);
    }
    if let Some(labels) = &labels {
        fill_empty_map(child(root, "metadata"), "labels", labels);
    }
}

fn job(root: &mut Map<String, Value>, unforeseeable: &mut Vec<Unforeseeable>) {
    let labels = template_labels(root);
    job_spec(child(root, "spec"), unforeseeable);
    if let Some(labels) = &labels {
        fill_empty_map(child(root, "metadata"), "labels", labels);
    }
}

/// The pod template's labels, which a ReplicationController and a Job take as their
/// own (and a ReplicationController as its selector) when they have none.
fn template_labels(root: &Map<String, Value>) -> Option<Value> {
    root.get("spec")
        .and_then(|s| s.pointer("/template/metadata/labels"))
        .filter(|l| l.is_object())
        .cloned()
}

/// Sets `key` to `value` where it is absent, not a map, or an empty map.
fn fill_empty_map(map: &mut Map<String, Value>, key: &str, value: &Value) {
    if map
        .get(key)
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty)
    {
        map.insert(key.into(), value.clone());
    }
}

fn job_spec(spec: &mut Map<String, Value>, unforeseeable: &mut Vec<Unforeseeable>) {
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec.insert("completions".into(), json!(1));
    }
    fill(spec, "parallelism", json!(1));
    let per_index = spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    fill(
        spec,
        "backoffLimit",
        json!(if per_index { i32::MAX } else { 6 }),
    );
    fill(spec, "completionMode", json!("NonIndexed"));
    fill(spec, "suspend", json!(false));
    let failure_policy = spec.get("podFailurePolicy").is_some_and(|v| !v.is_null());
    fill(
        spec,
        "podReplacementPolicy",
        json!(if failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    if let Some(policy) = child_if(spec, "podFailurePolicy") {
        for rule in items(policy, "rules") {
            for pattern in items(rule, "onPodConditions") {
                fill_zero(pattern, "status", json!("True"));
            }
        }
    }
    fill(spec, "manualSelector", json!(false));
    if spec.get("manualSelector") != Some(&json!(true)) {
        unforeseeable.push(Unforeseeable(
            "a Job's spec.selector and pod template labels carry the uid the API server gives the Job \
             when it is created, so the digest of a new Job is known only to the server (set \
             spec.manualSelector: true with your own selector to make it predictable)"
                .into(),
        ));
    }
    template(spec);
}

fn cron_job(root: &mut Map<String, Value>) {
    let spec = child(root, "spec");
    fill_zero(spec, "concurrencyPolicy", json!("Allow"));
    fill(spec, "suspend", json!(false));
    fill(spec, "successfulJobsHistoryLimit", json!(3));
    fill(spec, "failedJobsHistoryLimit", json!(1));
    // The Job template is not a Job: only its pod template is defaulted, and its
    // selector is made when each Job is created.
    let job_template = child(spec, "jobTemplate");
    child(job_template, "metadata");
    template(child(job_template, "spec"));
}

fn hpa(root: &mut Map<String, Value>) {
    let spec = child(root, "spec");
    fill(spec, "minReplicas", json!(1));
    let metrics_empty = spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if metrics_empty {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    for metric in items(spec, "metrics") {
        for source in [
            "resource",
            "containerResource",
            "pods",
            "object",
            "external",
        ] {
            if let Some(target) = child_if(metric, source).and_then(|s| child_if(s, "target")) {
                for field in ["value", "averageValue"] {
                    if let Some(q) = target.get_mut(field) {
                        canonical_quantity_in_place(q, false);
                    }
                }
            }
        }
    }
    if let Some(behavior) = child_if(spec, "behavior") {
        // Each direction is the default rules with what the manifest sets laid over.
        let up = json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15}]});
        let down = json!({"selectPolicy": "Max", "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15}]});
        for (direction, defaults) in [("scaleUp", up), ("scaleDown", down)] {
            let mut rules = defaults.as_object().cloned().unwrap_or_default();
            if let Some(given) = behavior.get(direction).and_then(Value::as_object) {
                for field in [
                    "selectPolicy",
                    "stabilizationWindowSeconds",
                    "policies",
                    "tolerance",
                ] {
                    if let Some(v) = given.get(field).filter(|v| !v.is_null()) {
                        rules.insert(field.into(), v.clone());
                    }
                }
            }
            for rule in rules.iter_mut() {
                if rule.0 == "tolerance" {
                    canonical_quantity_in_place(rule.1, false);
                }
            }
            behavior.insert(direction.into(), Value::Object(rules));
        }
    }
}

fn namespace(root: &mut Map<String, Value>) {
    let name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    if let Some(name) = name {
        let labels = child(child(root, "metadata"), "labels");
        labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
    }
    // The registry strategy sets the finalizer on create, whatever the manifest says.
    child(root, "spec").insert("finalizers".into(), json!(["kubernetes"]));
}

/// A workload's `spec.template` (always written out, as a Go non-pointer struct).
fn template(spec: &mut Map<String, Value>) {
    let template = child(spec, "template");
    child(template, "metadata");
    pod_spec(child(template, "spec"));
}

fn pod(root: &mut Map<String, Value>, unforeseeable: &mut Vec<Unforeseeable>) {
    let spec = child(root, "spec");
    // SetDefaults_Pod, for Pods only (not templates): requests default to limits.
    for list in ["initContainers", "containers"] {
        for container in items(spec, list) {
            let Some(resources) = child_if(container, "resources") else {
                continue;
            };
            let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
                continue;
            };
            let requests = child(resources, "requests");
            for (name, value) in limits {
                requests.entry(name).or_insert(value);
            }
        }
    }
    fill(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork") == Some(&json!(true)) {
        for list in ["initContainers", "containers"] {
            for container in items(spec, list) {
                for port in items(container, "ports") {
                    if let Some(p) = port.get("containerPort").cloned() {
                        fill_zero(port, "hostPort", p);
                    }
                }
            }
        }
    }
    pod_spec(spec);
    // The built-in admission plugins every cluster runs (they mutate Pods alone).
    // Priority: without a class (and no global default class), priority 0.
    if spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        fill(spec, "priority", json!(0));
        fill(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    } else {
        unforeseeable.push(Unforeseeable(
            "a Pod's spec.priority comes from its PriorityClass, which only the cluster knows"
                .into(),
        ));
    }
    // DefaultTolerationSeconds: tolerate not-ready and unreachable nodes for 300s.
    let tolerations = spec
        .entry("tolerations")
        .or_insert_with(|| json!([]))
        .as_array_mut();
    if let Some(tolerations) = tolerations {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let covered = tolerations.iter().any(|t| {
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or_default();
                let operator = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
                let t_key = t.get("key").and_then(Value::as_str).unwrap_or_default();
                (effect.is_empty() || effect == "NoExecute")
                    && (t_key == key || (t_key.is_empty() && operator == "Exists"))
            });
            if !covered {
                tolerations.push(json!({"key": key, "operator": "Exists",
                    "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    // ServiceAccount: the default account, and its token mounted unless opted out.
    fill_zero(spec, "serviceAccountName", json!("default"));
    let account = spec.get("serviceAccountName").cloned();
    if let Some(account) = account {
        fill_zero(spec, "serviceAccount", account);
    }
    if spec.get("automountServiceAccountToken") != Some(&json!(false)) {
        unforeseeable.push(Unforeseeable(
            "a Pod's service-account token volume (kube-api-access-<random>) is named by the API \
             server, so the digest of a new Pod is known only to the server (set \
             automountServiceAccountToken: false to make it predictable)"
                .into(),
        ));
    }
}

/// SetDefaults_PodSpec and everything the generated defaulters reach under a PodSpec.
fn pod_spec(spec: &mut Map<String, Value>) {
    fill_zero(spec, "dnsPolicy", json!("ClusterFirst"));
    fill_zero(spec, "restartPolicy", json!("Always"));
    fill(spec, "securityContext", json!({}));
    fill(spec, "terminationGracePeriodSeconds", json!(30));
    fill_zero(spec, "schedulerName", json!("default-scheduler"));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in items(spec, list) {
            container(c);
        }
    }
    for v in items(spec, "volumes") {
        volume(v);
    }
    if let Some(overhead) = spec.get_mut("overhead") {
        resource_list(overhead);
    }
    if let Some(resources) = child_if(spec, "resources") {
        resource_lists(resources);
    }
}

fn container(c: &mut Map<String, Value>) {
    let pull = match c.get("image").and_then(Value::as_str) {
        Some(image) if image_tag(image) == "latest" => "Always",
        _ => "IfNotPresent",
    };
    fill_zero(c, "imagePullPolicy", json!(pull));
    fill_zero(c, "terminationMessagePath", json!("/dev/termination-log"));
    fill_zero(c, "terminationMessagePolicy", json!("File"));
    for port in items(c, "ports") {
        fill_zero(port, "protocol", json!("TCP"));
    }
    for env in items(c, "env") {
        if let Some(from) = child_if(env, "valueFrom") {
            if let Some(field) = child_if(from, "fieldRef") {
                fill_zero(field, "apiVersion", json!("v1"));
            }
            if let Some(resource) = child_if(from, "resourceFieldRef") {
                resource_field_ref(resource);
            }
            if let Some(file) = child_if(from, "fileKeyRef") {
                fill(file, "optional", json!(false));
            }
        }
    }
    // `resources` is a non-pointer struct: always written out.
    resource_lists(child(c, "resources"));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = child_if(c, probe) {
            fill_zero(p, "timeoutSeconds", json!(1));
            fill_zero(p, "periodSeconds", json!(10));
            fill_zero(p, "successThreshold", json!(1));
            fill_zero(p, "failureThreshold", json!(3));
            handler(p);
            if let Some(grpc) = child_if(p, "grpc") {
                fill(grpc, "service", json!(""));
            }
        }
    }
    if let Some(lifecycle) = child_if(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = child_if(lifecycle, hook) {
                handler(h);
            }
        }
    }
}

fn handler(h: &mut Map<String, Value>) {
    if let Some(get) = child_if(h, "httpGet") {
        fill_zero(get, "path", json!("/"));
        fill_zero(get, "scheme", json!("HTTP"));
    }
}

/// The tag of an image reference as the kubelet's parser reads it: `latest` when
/// there is neither tag nor digest.
fn image_tag(image: &str) -> &str {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    // A colon after the last slash is the tag's (before it, a registry port's).
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => tag,
        None if digest.is_some() => "",
        None => "latest",
    }
}

fn volume(v: &mut Map<String, Value>) {
    const SOURCES: &[&str] = &[
        "hostPath",
        "emptyDir",
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "gitRepo",
        "secret",
        "nfs",
        "iscsi",
        "glusterfs",
        "persistentVolumeClaim",
        "rbd",
        "flexVolume",
        "cinder",
        "cephfs",
        "flocker",
        "downwardAPI",
        "fc",
        "azureFile",
        "configMap",
        "vsphereVolume",
        "quobyte",
        "azureDisk",
        "photonPersistentDisk",
        "projected",
        "portworxVolume",
        "scaleIO",
        "storageos",
        "csi",
        "ephemeral",
        "image",
    ];
    if !SOURCES
        .iter()
        .any(|s| v.get(*s).is_some_and(|x| !x.is_null()))
    {
        v.insert("emptyDir".into(), json!({}));
    }
    if let Some(host) = child_if(v, "hostPath") {
        fill(host, "type", json!(""));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = child_if(v, source) {
            fill(s, "defaultMode", json!(420));
        }
    }
    if let Some(d) = child_if(v, "downwardAPI") {
        field_refs(d);
    }
    if let Some(p) = child_if(v, "projected") {
        for source in items(p, "sources") {
            if let Some(d) = child_if(source, "downwardAPI") {
                field_refs(d);
            }
            if let Some(t) = child_if(source, "serviceAccountToken") {
                fill(t, "expirationSeconds", json!(3600));
            }
        }
    }
    if let Some(limit) = child_if(v, "emptyDir").and_then(|e| e.get_mut("sizeLimit")) {
        canonical_quantity_in_place(limit, false);
    }
    if let Some(iscsi) = child_if(v, "iscsi") {
        fill_zero(iscsi, "iscsiInterface", json!("default"));
    }
    if let Some(rbd) = child_if(v, "rbd") {
        fill_zero(rbd, "pool", json!("rbd"));
        fill_zero(rbd, "user", json!("admin"));
        fill_zero(rbd, "keyring", json!("/etc/ceph/keyring"));
    }
    if let Some(disk) = child_if(v, "azureDisk") {
        fill(disk, "cachingMode", json!("ReadWrite"));
        fill(disk, "fsType", json!("ext4"));
        fill(disk, "readOnly", json!(false));
        fill(disk, "kind", json!("Shared"));
    }
    if let Some(s) = child_if(v, "scaleIO") {
        fill_zero(s, "storageMode", json!("ThinProvisioned"));
        fill_zero(s, "fsType", json!("xfs"));
    }
    if let Some(claim) = child_if(v, "ephemeral").and_then(|e| child_if(e, "volumeClaimTemplate")) {
        claim_spec(child(claim, "spec"));
    }
    if let Some(image) = child_if(v, "image") {
        let pull = match image.get("reference").and_then(Value::as_str) {
            Some(r) if image_tag(r) == "latest" => "Always",
            _ => "IfNotPresent",
        };
        fill_zero(image, "pullPolicy", json!(pull));
    }
}

fn field_refs(d: &mut Map<String, Value>) {
    for item in items(d, "items") {
        if let Some(field) = child_if(item, "fieldRef") {
            fill_zero(field, "apiVersion", json!("v1"));
        }
        if let Some(resource) = child_if(item, "resourceFieldRef") {
            resource_field_ref(resource);
        }
    }
}

/// `divisor` is a non-pointer Quantity: written out as `"0"` when unset.
fn resource_field_ref(r: &mut Map<String, Value>) {
    fill(r, "divisor", json!("0"));
    if let Some(divisor) = r.get_mut("divisor") {
        canonical_quantity_in_place(divisor, false);
    }
}

/// `limits` and `requests` of a ResourceRequirements, rounded up to milli-units and
/// written in canonical form (SetDefaults_ResourceList, then Quantity's encoding).
fn resource_lists(resources: &mut Map<String, Value>) {
    for list in ["limits", "requests"] {
        if let Some(list) = resources.get_mut(list) {
            resource_list(list);
        }
    }
}

fn resource_list(list: &mut Value) {
    if let Some(list) = list.as_object_mut() {
        for value in list.values_mut() {
            canonical_quantity_in_place(value, true);
        }
    }
}

fn canonical_quantity_in_place(value: &mut Value, round_to_milli: bool) {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return,
    };
    if let Some(canonical) = canonical_quantity(&text, round_to_milli) {
        *value = Value::String(canonical);
    }
}

/// How a quantity is written back: the family of the suffix it was written with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    BinarySi,
    DecimalSi,
    DecimalExponent,
}

/// The API server's canonical text of a resource quantity (`1024Mi` -> `1Gi`, `0.5`
/// -> `500m`, `1000m` -> `1`), or `None` when `text` is not one it would accept (the
/// server then rejects the object; the text is left alone).
pub fn canonical_quantity(text: &str, round_to_milli: bool) -> Option<String> {
    let text = text.trim();
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // value = digits * 10^exp10 * 2^exp2
    let digits = format!("{int_part}{frac_part}");
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut exp2: u32 = 0;
    let format = match suffix {
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            exp2 = 10
                * (1 + ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
                    .iter()
                    .position(|s| *s == suffix)? as u32);
            Format::BinarySi
        }
        "" => Format::DecimalSi,
        "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => {
            exp10 += match suffix {
                "n" => -9,
                "u" => -6,
                "m" => -3,
                "k" => 3,
                "M" => 6,
                "G" => 9,
                "T" => 12,
                "P" => 15,
                _ => 18,
            };
            Format::DecimalSi
        }
        s if s.starts_with(['e', 'E']) => {
            exp10 += s[1..].parse::<i32>().ok()?;
            Format::DecimalExponent
        }
        _ => return None,
    };
    // Exact arithmetic on a big enough integer for resource-sized values.
    let mut mantissa: u128 = digits.trim_start_matches('0').parse().unwrap_or(0);
    if mantissa != 0 && digits.trim_start_matches('0').len() > 30 {
        return None;
    }
    if exp2 > 0 {
        mantissa = mantissa.checked_mul(1u128 << exp2)?;
    }
    // Normalize: no trailing zeros in the mantissa.
    while mantissa != 0 && mantissa.is_multiple_of(10) {
        mantissa /= 10;
        exp10 += 1;
    }
    if mantissa == 0 {
        return Some("0".into());
    }
    let min_exp = if round_to_milli { -3 } else { -9 };
    if exp10 < min_exp {
        // Round up (away from zero for positives, as Quantity.RoundUp does).
        let shift = (min_exp - exp10) as u32;
        let divisor = 10u128.checked_pow(shift)?;
        let rounded_up = mantissa / divisor + u128::from(!mantissa.is_multiple_of(divisor));
        mantissa = if negative {
            mantissa / divisor
        } else {
            rounded_up
        };
        exp10 = min_exp;
        if mantissa == 0 {
            return Some("0".into());
        }
        while mantissa.is_multiple_of(10) {
            mantissa /= 10;
            exp10 += 1;
        }
    }
    let sign = if negative { "-" } else { "" };
    // Binary output only for whole numbers of at least 1Ki.
    if format == Format::BinarySi && exp10 >= 0 {
        let value = mantissa.checked_mul(10u128.checked_pow(exp10 as u32)?)?;
        if value >= 1024 {
            let mut v = value;
            let mut power = 0usize;
            while v % 1024 == 0 && power < 6 {
                v /= 1024;
                power += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
            return Some(format!("{sign}{v}{suffix}"));
        }
    }
    // Decimal: the largest exponent that is a multiple of 3 and keeps the mantissa whole.
    let exp3 = exp10.div_euclid(3) * 3;
    let mantissa = mantissa.checked_mul(10u128.checked_pow((exp10 - exp3) as u32)?)?;
    let suffix = if format == Format::DecimalExponent {
        if exp3 == 0 {
            String::new()
        } else {
            format!("e{exp3}")
        }
    } else {
        match exp3 {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            _ => return None,
        }
        .to_string()
    };
    Some(format!("{sign}{mantissa}{suffix}"))
}

#[cfg(test)]
mod tests;
