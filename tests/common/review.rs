//! AdmissionReviews as the API server sends them to a validating webhook: one
//! [`Request`] builder (from objects, for any operation, the scale and eviction
//! subresources, any requester) and [`admission_review`], the one place a test wraps
//! an AdmissionRequest into an AdmissionReview.

use serde_json::{Value, json};

/// The AdmissionReview (admission.k8s.io/v1) the API server sends with `request`.
pub fn admission_review(request: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    })
}

/// An AdmissionRequest (admission.k8s.io/v1) as the API server builds it.
#[derive(Clone)]
pub struct Request(pub Value);

/// An AdmissionReview without its request: malformed, the server must say so.
pub fn without_request() -> Vec<u8> {
    let mut review = admission_review(Value::Null);
    review.as_object_mut().unwrap().remove("request");
    serde_json::to_vec(&review).unwrap()
}

/// The plural the API server puts in `request.resource`: from the engine's list of
/// kinds, else the API server's rule for the built-in kinds it does not list
/// (ConfigMap: configmaps, Ingress: ingresses, NetworkPolicy: networkpolicies).
pub fn plural(group: &str, kind: &str) -> String {
    if let Some(k) = blastguard::kinds::find(group, kind) {
        return k.resource.clone();
    }
    let lower = kind.to_lowercase();
    if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else if lower.ends_with('s') || lower.ends_with('x') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

impl Request {
    /// `operation` on an object: `new` for CREATE and UPDATE, `old` for UPDATE and
    /// DELETE. Requested by a person (alice) through kubectl.
    pub fn on(operation: &str, new: Option<&Value>, old: Option<&Value>) -> Self {
        let subject = new.or(old).expect("a request has an object");
        let api_version = subject["apiVersion"].as_str().expect("apiVersion");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind = subject["kind"].as_str().expect("kind");
        let gvk = json!({"group": group, "version": version, "kind": kind});
        let gvr = json!({"group": group, "version": version, "resource": plural(group, kind)});
        let options = match operation {
            "CREATE" => {
                json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"})
            }
            "UPDATE" => {
                json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"})
            }
            _ => {
                json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Background"})
            }
        };
        let mut req = json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": subject["metadata"]["name"],
            "operation": operation,
            "userInfo": {"username": "alice@example.com", "uid": "1f2e", "groups": ["developers", "system:authenticated"]},
            "dryRun": false,
            "options": options,
        });
        if let Some(ns) = subject["metadata"]["namespace"].as_str() {
            req["namespace"] = json!(ns);
        }
        if let Some(o) = new {
            req["object"] = o.clone();
        }
        if let Some(o) = old {
            req["oldObject"] = o.clone();
        }
        Self(req)
    }

    /// An UPDATE of a Deployment's scale subresource (`kubectl scale`, the HPA): the
    /// objects are autoscaling/v1 Scales, which carry no annotations of the workload.
    pub fn scale(deployment: &Value, from: u64, to: u64) -> Self {
        let meta = &deployment["metadata"];
        Self::scale_of(
            meta["namespace"].as_str().expect("a namespace"),
            meta["name"].as_str().expect("a name"),
            from,
            to,
        )
    }

    /// [`Request::scale`] of the Deployment `namespace/name`.
    pub fn scale_of(namespace: &str, name: &str, from: u64, to: u64) -> Self {
        let scale = |replicas: u64| {
            json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": "9a1c", "resourceVersion": "4711",
                    "creationTimestamp": "2026-11-20T10:00:00Z"
                },
                "spec": {"replicas": replicas},
                "status": {"replicas": from, "selector": format!("app={name}")}
            })
        };
        let gvk = json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
        let gvr = json!({"group": "apps", "version": "v1", "resource": "deployments"});
        Self(json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800003",
            "kind": gvk, "resource": gvr, "subResource": "scale",
            "requestKind": gvk, "requestResource": gvr, "requestSubResource": "scale",
            "name": name,
            "namespace": namespace,
            "operation": "UPDATE",
            "userInfo": {"username": "alice@example.com", "groups": ["developers", "system:authenticated"]},
            "object": scale(to), "oldObject": scale(from),
            "dryRun": false,
            "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-scale"},
        }))
    }

    /// A CREATE of a Pod's eviction subresource (`kubectl drain`, an agent evicting a
    /// pod): the object is the policy/v1 Eviction, which names the pod and carries none
    /// of its annotations; there is no oldObject.
    pub fn eviction(pod: &Value) -> Self {
        let gvk = json!({"group": "policy", "version": "v1", "kind": "Eviction"});
        let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
        Self(json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800004",
            "kind": gvk, "resource": gvr, "subResource": "eviction",
            "requestKind": gvk, "requestResource": gvr, "requestSubResource": "eviction",
            "name": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "alice@example.com", "groups": ["developers", "system:authenticated"]},
            "object": {
                "apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {
                    "name": pod["metadata"]["name"],
                    "namespace": pod["metadata"]["namespace"],
                    "creationTimestamp": null
                }
            },
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        }))
    }

    /// By one of the cluster's controllers, with the groups the API server gives a
    /// service account in kube-system, or a core component's certificate.
    pub fn by_controller(self, user: &str) -> Self {
        let groups: &[&str] = if user.starts_with("system:serviceaccount:kube-system:") {
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ]
        } else if user.starts_with("system:node:") {
            &["system:nodes", "system:authenticated"]
        } else {
            &["system:authenticated"]
        };
        let mut r = self.by(user).in_groups(groups);
        // Controllers name no field manager (the API server records their user agent
        // instead), so their options carry none.
        if let Some(options) = r.0["options"].as_object_mut() {
            options.remove("fieldManager");
        }
        r
    }

    /// With `uid` as `request.uid` (the API server's is distinct per request).
    pub fn uid(mut self, uid: &str) -> Self {
        self.0["uid"] = json!(uid);
        self
    }

    /// By `user` (`userInfo.username`).
    pub fn by(mut self, user: &str) -> Self {
        self.0["userInfo"]["username"] = json!(user);
        self
    }

    /// With these `userInfo.groups`.
    pub fn in_groups(mut self, groups: &[&str]) -> Self {
        self.0["userInfo"]["groups"] = json!(groups);
        self
    }

    /// With this field manager in the request's options.
    pub fn field_manager(mut self, manager: &str) -> Self {
        self.0["options"]["fieldManager"] = json!(manager);
        self
    }

    /// Without username, groups and options, as the API server omits them when unset.
    pub fn without_identity(mut self) -> Self {
        self.0["userInfo"] = json!({});
        if let Some(fields) = self.0.as_object_mut() {
            fields.remove("options");
        }
        self
    }

    /// Annotations on the objects themselves (for a Scale: what a client may send).
    pub fn objects_annotated(mut self, annotations: &[(&str, &str)]) -> Self {
        for key in ["object", "oldObject"] {
            if self.0[key].is_object() {
                for (k, v) in annotations {
                    self.0[key]["metadata"]["annotations"][*k] = json!(v);
                }
            }
        }
        self
    }

    /// The AdmissionReview that carries this request, as JSON.
    pub fn json(&self) -> Value {
        admission_review(self.0.clone())
    }

    /// The AdmissionReview that carries this request, as the bytes the API server
    /// sends.
    pub fn review(&self) -> Vec<u8> {
        serde_json::to_vec(&self.json()).expect("JSON")
    }
}

/// A Deployment CREATE as the API server sends it to a validating webhook: defaults
/// applied, uid and creationTimestamp set, managedFields recorded, CreateOptions.
pub struct DeploymentCreate<'a> {
    /// request.uid
    pub uid: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// spec.replicas
    pub replicas: u64,
    /// Annotations of the object.
    pub annotations: &'a [(&'a str, &'a str)],
    /// request.userInfo.username
    pub user: &'a str,
}

impl DeploymentCreate<'_> {
    /// The request as JSON.
    pub fn review(&self) -> Value {
        let annotations: serde_json::Map<String, Value> = self
            .annotations
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let mut metadata = json!({
            "name": self.name,
            "namespace": self.namespace,
            "uid": "6a3e7f1c-9d2b-4e8a-b5c4-2f1d0e9c8b7a",
            "generation": 1,
            "creationTimestamp": "2026-11-22T10:00:00Z",
            "labels": {"app": self.name},
            "managedFields": [{
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "apps/v1",
                "time": "2026-11-22T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}
            }]
        });
        if !annotations.is_empty() {
            metadata["annotations"] = Value::Object(annotations);
        }
        admission_review(json!({
                "uid": self.uid,
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "name": self.name,
                "namespace": self.namespace,
                "operation": "CREATE",
                "userInfo": {
                    "username": self.user,
                    "uid": "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
                    "groups": ["system:authenticated", "developers"]
                },
                "object": {
                    "kind": "Deployment",
                    "apiVersion": "apps/v1",
                    "metadata": metadata,
                    "spec": {
                        "replicas": self.replicas,
                        "selector": {"matchLabels": {"app": self.name}},
                        "template": {
                            "metadata": {"creationTimestamp": null, "labels": {"app": self.name}},
                            "spec": {
                                "containers": [{
                                    "name": "nginx",
                                    "image": "nginx:1.27",
                                    "resources": {},
                                    "terminationMessagePath": "/dev/termination-log",
                                    "terminationMessagePolicy": "File",
                                    "imagePullPolicy": "IfNotPresent"
                                }],
                                "restartPolicy": "Always",
                                "terminationGracePeriodSeconds": 30,
                                "dnsPolicy": "ClusterFirst",
                                "securityContext": {},
                                "schedulerName": "default-scheduler"
                            }
                        },
                        "strategy": {
                            "type": "RollingUpdate",
                            "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}
                        },
                        "revisionHistoryLimit": 10,
                        "progressDeadlineSeconds": 600
                    },
                    "status": {}
                },
                "oldObject": null,
                "dryRun": false,
                "options": {
                    "kind": "CreateOptions",
                    "apiVersion": "meta.k8s.io/v1",
                    "fieldManager": "kubectl-client-side-apply",
                    "fieldValidation": "Strict"
                }
        }))
    }

    /// The request as bytes.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.review()).unwrap()
    }
}

/// The AI marker the embedded policy looks for.
pub const AI: &[(&str, &str)] = &[("blastguard.io/ai-agent", "claude-code")];

/// An AI-assisted 40-replica Deployment CREATE in `prod`: over `maxPodsAffected: 0`
/// of the embedded policy's `protected` rule.
pub fn ai_deployment_in_prod(uid: &str) -> Vec<u8> {
    DeploymentCreate {
        uid,
        namespace: "prod",
        name: "api",
        replicas: 40,
        annotations: AI,
        user: "alice@example.com",
    }
    .body()
}

/// The same Deployment without AI markers.
pub fn plain_deployment_in_prod(uid: &str) -> Vec<u8> {
    DeploymentCreate {
        uid,
        namespace: "prod",
        name: "api",
        replicas: 40,
        annotations: &[],
        user: "alice@example.com",
    }
    .body()
}

/// A request uid in the API server's format, distinct per call in a process.
pub fn uid(tag: u32) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{tag:08x}-{:04x}-4000-8000-{:012x}",
        n & 0xffff,
        std::process::id()
    )
}
