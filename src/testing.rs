//! Builders the unit tests share: AdmissionReviews as the API server sends them
//! ([`Req`], [`admission_review`]). The integration tests have theirs in tests/common.

use serde_json::{Value, json};

/// The AdmissionReview (admission.k8s.io/v1) the API server sends with `request`: the
/// one place a unit test wraps a request.
pub(crate) fn admission_review(request: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// Builds an AdmissionReview as the API server would send it.
#[derive(Clone)]
pub(crate) struct Req {
    pub(crate) op: &'static str,
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) kind: &'static str,
    /// The group of `resource`: the object's, also where `group` and `kind` are a
    /// subresource's (a Scale, an Eviction).
    pub(crate) resource_group: &'static str,
    pub(crate) resource_version: &'static str,
    pub(crate) resource: &'static str,
    pub(crate) namespace: Option<&'static str>,
    pub(crate) name: &'static str,
    pub(crate) user: &'static str,
    pub(crate) groups: Vec<&'static str>,
    pub(crate) object: Option<Value>,
    pub(crate) old: Option<Value>,
    pub(crate) sub: Option<&'static str>,
    pub(crate) field_manager: Option<&'static str>,
    pub(crate) dry_run: bool,
}

impl Req {
    pub(crate) fn new(
        op: &'static str,
        kind: &'static str,
        namespace: Option<&'static str>,
    ) -> Self {
        let (group, version, resource) = coordinates(kind);
        Self {
            op,
            group,
            version,
            kind,
            resource_group: group,
            resource_version: version,
            resource,
            namespace,
            name: "api",
            user: "alice@example.com",
            groups: vec!["system:authenticated"],
            object: None,
            old: None,
            sub: None,
            field_manager: None,
            dry_run: false,
        }
    }

    pub(crate) fn create(kind: &'static str, ns: &'static str, object: Value) -> Self {
        Self::new("CREATE", kind, Some(ns)).object(object)
    }

    pub(crate) fn update(kind: &'static str, ns: &'static str, old: Value, new: Value) -> Self {
        Self::new("UPDATE", kind, Some(ns)).object(new).old(old)
    }

    pub(crate) fn delete(kind: &'static str, ns: &'static str, old: Value) -> Self {
        Self::new("DELETE", kind, Some(ns)).old(old)
    }

    /// A request to the `scale` subresource of a Deployment.
    pub(crate) fn scale(ns: &'static str, old: u64, new: u64) -> Self {
        let scale = |r: u64| {
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                   "metadata": {"name": "api", "namespace": ns},
                   "spec": {"replicas": r}, "status": {"replicas": old}})
        };
        let mut req = Self::new("UPDATE", "Deployment", Some(ns))
            .object(scale(new))
            .old(scale(old));
        req.group = "autoscaling";
        req.kind = "Scale";
        req.sub = Some("scale");
        req
    }

    pub(crate) fn object(mut self, o: Value) -> Self {
        self.object = Some(o);
        self
    }
    pub(crate) fn old(mut self, o: Value) -> Self {
        self.old = Some(o);
        self
    }
    pub(crate) fn user(mut self, u: &'static str) -> Self {
        self.user = u;
        self
    }
    pub(crate) fn group_of_user(mut self, g: &'static str) -> Self {
        self.groups.push(g);
        self
    }
    pub(crate) fn field_manager(mut self, m: &'static str) -> Self {
        self.field_manager = Some(m);
        self
    }
    pub(crate) fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    pub(crate) fn body(&self) -> Vec<u8> {
        let options_kind = match self.op {
            "CREATE" => "CreateOptions",
            "UPDATE" => "UpdateOptions",
            _ => "DeleteOptions",
        };
        let mut options = json!({"kind": options_kind, "apiVersion": "meta.k8s.io/v1"});
        if let Some(m) = self.field_manager {
            options["fieldManager"] = json!(m);
        }
        let mut request = json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": self.group, "version": self.version, "kind": self.kind},
            "resource": {"group": self.resource_group, "version": self.resource_version, "resource": self.resource},
            "name": self.name,
            "operation": self.op,
            "userInfo": {"username": self.user, "groups": self.groups},
            "object": self.object,
            "oldObject": self.old,
            "dryRun": self.dry_run,
            "options": options,
        });
        if let Some(ns) = self.namespace {
            request["namespace"] = json!(ns);
        }
        if let Some(sub) = self.sub {
            request["subResource"] = json!(sub);
        }
        serde_json::to_vec(&admission_review(request)).unwrap()
    }
}

/// (group, version, resource) of `kind`, from the one list of kinds
/// (charts/blastguard/files/kinds.yaml); two kinds it does not hold are named here: a
/// ConfigMap (judged by namespace reach) and the embedded policy's custom workload.
pub(crate) fn coordinates(kind: &str) -> (&'static str, &'static str, &'static str) {
    if let Some(k) = crate::kinds::built_in().iter().find(|k| k.kind == kind) {
        return (&k.group, &k.version, &k.resource);
    }
    match kind {
        "ConfigMap" => ("", "v1", "configmaps"),
        "Rollout" => ("argoproj.io", "v1alpha1", "rollouts"),
        other => panic!("{other} is neither in kinds.yaml nor named here"),
    }
}
