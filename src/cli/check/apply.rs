//! The object the API server would hold after `kubectl apply` of a manifest over the
//! current state, so that `check --old` compares what the webhook compares.
//!
//! When `--old` comes from the cluster (`kubectl get -o yaml`), it carries everything
//! the API server defaulted (`imagePullPolicy`, `strategy`, `dnsPolicy`, ...) while the
//! manifest does not. Compared as they are, every update would look like a pod-template
//! change. The API server instead sees the current object with the manifest applied,
//! which is what [`applied`] builds, the way `kubectl apply` does:
//! - mappings are merged key by key; `null` in the manifest removes the key, except
//!   where the stored object holds `null` too (kubectl writes `creationTimestamp: null`
//!   into every manifest, and the API server shows unset timestamps the same way);
//! - lists of mappings that all have a `name` (containers, volumes, env) are merged by
//!   name, other lists of mappings of equal length item by item, anything else is
//!   replaced by the manifest's value;
//! - a field the previous apply set (the `kubectl.kubernetes.io/last-applied-configuration`
//!   annotation) and the manifest no longer has is removed, as `kubectl apply` removes it.
//!
//! When `--old` is itself a manifest (no `metadata.resourceVersion`: for example the
//! same file on the base branch), both sides are compared as written: the API server
//! would default both alike.

use serde_json::{Map, Value};

/// The annotation `kubectl apply` records the applied manifest in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Whether `object` is a stored object read from a cluster, not a manifest.
pub fn is_live(object: &Value) -> bool {
    ["resourceVersion", "uid"].iter().any(|field| {
        object
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    })
}

/// The pair (old, new) the API server would present for applying `manifest` over
/// `old`.
pub fn update_pair(old: Value, manifest: Value) -> (Value, Value) {
    if !is_live(&old) {
        return (old, manifest);
    }
    let last = old
        .pointer(&format!(
            "/metadata/annotations/{}",
            LAST_APPLIED.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<Value>(text).ok());
    let new = applied(&old, last.as_ref(), &manifest);
    (old, new)
}

/// `manifest` applied over `live`, removing what `last` (the previous manifest) had
/// and `manifest` no longer has.
pub fn applied(live: &Value, last: Option<&Value>, manifest: &Value) -> Value {
    match (live, manifest) {
        (Value::Object(live), Value::Object(manifest)) => {
            let last = last.and_then(Value::as_object);
            Value::Object(merge_maps(live, last, manifest))
        }
        (Value::Array(live), Value::Array(manifest)) => {
            let last = last.and_then(Value::as_array);
            Value::Array(merge_lists(live, last, manifest))
        }
        _ => manifest.clone(),
    }
}

fn merge_maps(
    live: &Map<String, Value>,
    last: Option<&Map<String, Value>>,
    manifest: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = live.clone();
    for (key, value) in manifest {
        if value.is_null() {
            if !live.get(key).is_none_or(Value::is_null) {
                out.remove(key);
            }
            continue;
        }
        let merged = match live.get(key) {
            Some(current) => applied(current, last.and_then(|l| l.get(key)), value),
            None => value.clone(),
        };
        out.insert(key.clone(), merged);
    }
    if let Some(last) = last {
        for key in last.keys() {
            if !manifest.contains_key(key) {
                out.remove(key);
            }
        }
    }
    out
}

fn name_of(item: &Value) -> Option<&str> {
    item.get("name").and_then(Value::as_str)
}

fn all_named(items: &[Value]) -> bool {
    items.iter().all(|i| name_of(i).is_some())
}

fn merge_lists(live: &[Value], last: Option<&Vec<Value>>, manifest: &[Value]) -> Vec<Value> {
    if !manifest.is_empty() && all_named(manifest) && all_named(live) {
        let by_name = |items: &[Value], name: &str| -> Option<Value> {
            items.iter().find(|i| name_of(i) == Some(name)).cloned()
        };
        let mut out: Vec<Value> = manifest
            .iter()
            .map(|item| {
                let name = name_of(item).unwrap_or_default();
                let last_item = last.and_then(|l| by_name(l, name));
                match by_name(live, name) {
                    Some(current) => applied(&current, last_item.as_ref(), item),
                    None => item.clone(),
                }
            })
            .collect();
        // Items the server (or another client) added stay; items the previous apply
        // set and this manifest dropped go.
        for item in live {
            let name = name_of(item).unwrap_or_default();
            let in_manifest = by_name(manifest, name).is_some();
            let in_last = last.is_some_and(|l| by_name(l, name).is_some());
            if !in_manifest && !in_last {
                out.push(item.clone());
            }
        }
        return out;
    }
    let all_maps = |items: &[Value]| items.iter().all(Value::is_object);
    if live.len() == manifest.len() && all_maps(live) && all_maps(manifest) {
        let last = last.filter(|l| l.len() == manifest.len());
        return live
            .iter()
            .zip(manifest)
            .enumerate()
            .map(|(i, (current, item))| applied(current, last.map(|l| &l[i]), item))
            .collect();
    }
    manifest.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Deployment as `kubectl get -o json` shows it after the API server defaulted
    /// `kubectl create deployment api --image=nginx:1.27 --replicas=10` and a previous
    /// `kubectl apply` recorded its manifest.
    fn live() -> Value {
        let last = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"replicas": 10, "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27",
                        "env": [{"name": "MODE", "value": "a"}]}]}}}
        });
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "shop", "resourceVersion": "4711",
                "uid": "0b9c", "generation": 3,
                "annotations": {"deployment.kubernetes.io/revision": "3",
                    "kubectl.kubernetes.io/last-applied-configuration": last.to_string()}},
            "spec": {"replicas": 10, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                "selector": {"matchLabels": {"app": "api"}},
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"metadata": {"creationTimestamp": null, "labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27",
                        "env": [{"name": "MODE", "value": "a"}],
                        "imagePullPolicy": "IfNotPresent", "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"}],
                        "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
                        "schedulerName": "default-scheduler", "securityContext": {},
                        "terminationGracePeriodSeconds": 30}}},
            "status": {"replicas": 10}
        })
    }

    fn manifest(replicas: u64, image: &str, env: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "shop", "creationTimestamp": null,
                "annotations": {"blastguard.io/ai-agent": "claude-code"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "api"}},
                "strategy": {},
                "template": {"metadata": {"creationTimestamp": null, "labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "nginx", "image": image, "env": env,
                        "resources": {}}]}}},
            "status": {}
        })
    }

    fn template_changed(old: &Value, new: &Value) -> bool {
        old.pointer("/spec/template") != new.pointer("/spec/template")
    }

    #[test]
    fn live_state_against_manifest() {
        let env_a = json!([{"name": "MODE", "value": "a"}]);
        let cases = [
            // (what the manifest does, manifest, template changed?, replicas after)
            (
                "scale only",
                manifest(12, "nginx:1.27", env_a.clone()),
                false,
                12,
            ),
            (
                "new image",
                manifest(10, "nginx:1.28", env_a.clone()),
                true,
                10,
            ),
            (
                "env value",
                manifest(10, "nginx:1.27", json!([{"name": "MODE", "value": "b"}])),
                true,
                10,
            ),
            (
                "env added",
                manifest(
                    10,
                    "nginx:1.27",
                    json!([{"name": "MODE", "value": "a"}, {"name": "X", "value": "1"}]),
                ),
                true,
                10,
            ),
            // The previous apply set MODE; dropping it from the manifest removes it.
            (
                "env removed",
                manifest(10, "nginx:1.27", json!([])),
                true,
                10,
            ),
        ];
        for (what, manifest, changed, replicas) in cases {
            let (old, new) = update_pair(live(), manifest);
            assert_eq!(template_changed(&old, &new), changed, "{what}");
            assert_eq!(
                new.pointer("/spec/replicas"),
                Some(&json!(replicas)),
                "{what}"
            );
            // The API server's view keeps its defaults and the manifest's annotations.
            assert_eq!(
                new.pointer("/spec/strategy/type"),
                Some(&json!("RollingUpdate")),
                "{what}"
            );
            assert_eq!(
                new.pointer("/metadata/annotations/blastguard.io~1ai-agent"),
                Some(&json!("claude-code")),
                "{what}"
            );
        }
    }

    #[test]
    fn fields_added_by_others_stay_without_a_previous_apply() {
        let mut live = live();
        let annotations = live["metadata"]["annotations"]
            .as_object_mut()
            .expect("map");
        annotations.remove(LAST_APPLIED);
        // An injected sidecar (not in any manifest) stays.
        live["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("list")
            .push(json!({"name": "proxy", "image": "envoy"}));
        let (old, new) = update_pair(
            live,
            manifest(12, "nginx:1.27", json!([{"name": "MODE", "value": "a"}])),
        );
        assert!(!template_changed(&old, &new));
    }

    #[test]
    fn two_manifests_are_compared_as_written() {
        let old = manifest(10, "nginx:1.27", json!([{"name": "MODE", "value": "a"}]));
        let new = manifest(10, "nginx:1.27", json!([]));
        assert!(!is_live(&old));
        let (o, n) = update_pair(old.clone(), new.clone());
        assert_eq!((o, n), (old, new));
    }

    #[test]
    fn unnamed_lists_merge_by_position_or_are_replaced() {
        let live = json!({"ports": [{"containerPort": 80, "protocol": "TCP"}], "args": ["a", "b"]});
        let same = applied(
            &live,
            None,
            &json!({"ports": [{"containerPort": 80}], "args": ["a", "b"]}),
        );
        assert_eq!(same, live);
        let changed = applied(
            &live,
            None,
            &json!({"ports": [{"containerPort": 80}, {"containerPort": 81}], "args": ["a"]}),
        );
        assert_eq!(
            changed,
            json!({"ports": [{"containerPort": 80}, {"containerPort": 81}], "args": ["a"]})
        );
    }

    #[test]
    fn null_removes_a_field_unless_it_is_stored_as_null() {
        let live = json!({"a": 1, "t": null, "keep": 2});
        let got = applied(&live, None, &json!({"a": null, "t": null, "new": null}));
        assert_eq!(got, json!({"t": null, "keep": 2}));
    }
}
