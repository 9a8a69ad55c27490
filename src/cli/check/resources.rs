//! Which API resource a manifest's kind is: the plural the API server puts in
//! `request.resource`, and whether the kind is namespaced.
//!
//! Built-in kinds come from k8s-openapi's resource types (their group, kind, URL path
//! segment and scope), so nothing here spells a plural by hand. Custom resources are
//! known when their CustomResourceDefinition is among the inputs (`-f` or `--old`);
//! any other kind cannot be mapped and is reported as skipped.

use std::any::TypeId;
use std::collections::HashMap;

use k8s_openapi::{NamespaceResourceScope, Resource};
use serde_json::Value;

/// Where a kind lives in the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// The resource name, e.g. `deployments`.
    pub plural: String,
    /// Namespaced (`true`) or cluster-scoped (`false`).
    pub namespaced: bool,
}

/// The kinds `check` can turn into admission requests.
#[derive(Debug, Clone)]
pub struct Resources {
    by_group_kind: HashMap<(String, String), ResourceInfo>,
}

/// Registers k8s-openapi resource types by their group and kind.
macro_rules! builtin {
    ($map:ident: $($ty:ty),+ $(,)?) => {
        $( insert::<$ty>(&mut $map); )+
    };
}

fn insert<T: Resource + 'static>(map: &mut HashMap<(String, String), ResourceInfo>) {
    map.insert(
        (T::GROUP.to_string(), T::KIND.to_string()),
        ResourceInfo {
            plural: T::URL_PATH_SEGMENT.to_string(),
            namespaced: TypeId::of::<T::Scope>() == TypeId::of::<NamespaceResourceScope>(),
        },
    );
}

impl Resources {
    /// The kinds a Kubernetes 1.35 API server serves (GA, plus beta where a kind has
    /// no GA version). The webhook's own kinds (workloads, Namespace) are among them.
    pub fn builtin() -> Self {
        use k8s_openapi::api::{
            admissionregistration::{v1 as admreg, v1beta1 as admreg_beta},
            apps::v1 as apps,
            autoscaling::v2 as autoscaling,
            batch::v1 as batch,
            certificates::{v1 as certificates, v1beta1 as certificates_beta},
            coordination::v1 as coordination,
            core::v1 as core,
            discovery::v1 as discovery,
            events::v1 as events,
            flowcontrol::v1 as flowcontrol,
            networking::v1 as networking,
            node::v1 as node,
            policy::v1 as policy,
            rbac::v1 as rbac,
            resource::v1 as resource,
            scheduling::v1 as scheduling,
            storage::v1 as storage,
        };
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
        use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;

        let mut map = HashMap::new();
        builtin!(map:
            core::Pod, core::ReplicationController, core::Service, core::ConfigMap,
            core::Secret, core::ServiceAccount, core::PersistentVolumeClaim,
            core::Endpoints, core::Event, core::LimitRange, core::ResourceQuota,
            core::PodTemplate, core::Namespace, core::Node, core::PersistentVolume,
            apps::Deployment, apps::StatefulSet, apps::ReplicaSet, apps::DaemonSet,
            apps::ControllerRevision,
            batch::Job, batch::CronJob,
            autoscaling::HorizontalPodAutoscaler,
            policy::PodDisruptionBudget,
            networking::Ingress, networking::IngressClass, networking::NetworkPolicy,
            networking::IPAddress, networking::ServiceCIDR,
            discovery::EndpointSlice,
            events::Event,
            rbac::Role, rbac::RoleBinding, rbac::ClusterRole, rbac::ClusterRoleBinding,
            apiextensions::CustomResourceDefinition,
            apiregistration::APIService,
            admreg::ValidatingWebhookConfiguration, admreg::MutatingWebhookConfiguration,
            admreg::ValidatingAdmissionPolicy, admreg::ValidatingAdmissionPolicyBinding,
            admreg_beta::MutatingAdmissionPolicy, admreg_beta::MutatingAdmissionPolicyBinding,
            storage::StorageClass, storage::CSIDriver, storage::CSINode,
            storage::VolumeAttachment, storage::VolumeAttributesClass,
            storage::CSIStorageCapacity,
            scheduling::PriorityClass,
            node::RuntimeClass,
            coordination::Lease,
            certificates::CertificateSigningRequest, certificates_beta::ClusterTrustBundle,
            flowcontrol::FlowSchema, flowcontrol::PriorityLevelConfiguration,
            resource::DeviceClass, resource::ResourceClaim, resource::ResourceClaimTemplate,
            resource::ResourceSlice,
        );
        Self { by_group_kind: map }
    }

    /// Where `kind` of `group` lives, if known.
    pub fn lookup(&self, group: &str, kind: &str) -> Option<&ResourceInfo> {
        self.by_group_kind
            .get(&(group.to_string(), kind.to_string()))
    }

    /// Learns a kind no definition was read for: a policy's custom workload, or a
    /// custom kind whose scope the manifest says. Its plural is the lowercased kind
    /// plus `s` unless given, as the policy's `workloads` name it.
    pub fn learn_kind(
        &mut self,
        group: &str,
        kind: &str,
        plural: Option<String>,
        namespaced: bool,
    ) {
        self.by_group_kind.insert(
            (group.to_string(), kind.to_string()),
            ResourceInfo {
                plural: plural.unwrap_or_else(|| format!("{}s", kind.to_lowercase())),
                namespaced,
            },
        );
    }

    /// Learns the policy's custom workloads not known yet: the webhook is sent them
    /// whether or not their definition is in the input (the policy names their
    /// resource), and they are namespaced like Deployments.
    pub fn learn_workloads(&mut self, workloads: &[crate::policy::WorkloadSpec]) {
        for w in workloads {
            if self.lookup(&w.group, &w.kind).is_none() {
                self.learn_kind(&w.group, &w.kind, Some(w.resource_name()), true);
            }
        }
    }

    /// Learns the custom resource a CustomResourceDefinition object defines. Returns
    /// whether `object` was such a definition with the fields needed.
    pub fn learn_definition(&mut self, object: &Value) -> bool {
        let is_crd = object.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
            && object
                .get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| v.starts_with("apiextensions.k8s.io/"));
        if !is_crd {
            return false;
        }
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
        let (Some(group), Some(kind), Some(plural), Some(scope)) = (
            text("/spec/group"),
            text("/spec/names/kind"),
            text("/spec/names/plural"),
            text("/spec/scope"),
        ) else {
            return false;
        };
        self.by_group_kind.insert(
            (group.to_string(), kind.to_string()),
            ResourceInfo {
                plural: plural.to_string(),
                namespaced: scope == "Namespaced",
            },
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_kinds_have_plural_and_scope() {
        let kinds = Resources::builtin();
        let cases = [
            ("apps", "Deployment", "deployments", true),
            ("apps", "DaemonSet", "daemonsets", true),
            ("", "ReplicationController", "replicationcontrollers", true),
            ("batch", "CronJob", "cronjobs", true),
            ("", "Pod", "pods", true),
            ("", "ConfigMap", "configmaps", true),
            ("", "Namespace", "namespaces", false),
            ("", "Node", "nodes", false),
            ("", "PersistentVolume", "persistentvolumes", false),
            (
                "rbac.authorization.k8s.io",
                "ClusterRole",
                "clusterroles",
                false,
            ),
            (
                "rbac.authorization.k8s.io",
                "RoleBinding",
                "rolebindings",
                true,
            ),
            (
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            ),
            ("storage.k8s.io", "StorageClass", "storageclasses", false),
            (
                "scheduling.k8s.io",
                "PriorityClass",
                "priorityclasses",
                false,
            ),
            (
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
                "validatingwebhookconfigurations",
                false,
            ),
            (
                "policy",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
                true,
            ),
        ];
        for (group, kind, plural, namespaced) in cases {
            let info = kinds
                .lookup(group, kind)
                .unwrap_or_else(|| panic!("{group}/{kind} unknown"));
            assert_eq!(info.plural, plural, "{group}/{kind}");
            assert_eq!(info.namespaced, namespaced, "{group}/{kind}");
        }
        assert!(kinds.lookup("example.com", "Widget").is_none());
        assert!(kinds.lookup("apps", "Widget").is_none());
    }

    #[test]
    fn a_definition_teaches_its_kind() {
        let mut kinds = Resources::builtin();
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "names": {"kind": "Widget", "plural": "widgets"},
                "scope": "Cluster"
            }
        });
        assert!(kinds.learn_definition(&crd));
        let info = kinds.lookup("example.com", "Widget").expect("learned");
        assert_eq!(info.plural, "widgets");
        assert!(!info.namespaced);
        // Not a definition, or one without names: nothing learned.
        assert!(!kinds.learn_definition(&json!({"apiVersion": "v1", "kind": "ConfigMap"})));
        let mut incomplete = crd.clone();
        incomplete["spec"]["names"] = json!({"kind": "Gadget"});
        assert!(!kinds.learn_definition(&incomplete));
        assert!(kinds.lookup("example.com", "Gadget").is_none());
    }
}
