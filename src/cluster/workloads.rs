//! The governed workloads as the cluster has them, for scale approvals: a Scale has no
//! annotations, so its approval is read from the parent (docs/design.md#annotations).
//!
//! One watch per kind that has a `scale` subresource (Deployment, StatefulSet,
//! ReplicaSet, ReplicationController, and the policy's custom workloads), keeping of
//! each object only its labels, its `blastguard.io/*` annotations and its replicas; a
//! GET within the decision's budget for one the watch has not delivered.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::core::{ApiResource, DynamicResourceScope};
use serde::Deserialize;

use super::bridge::Bridge;
use super::cache::{Cache, Event, version_number};
use super::metrics::ClusterMetrics;
use crate::approval::WorkloadAnnotations;
use crate::budget;
use crate::change::Target;
use crate::kinds::{self, Reach};
use crate::policy::WorkloadSpec;

/// The `cache` label of these metrics.
pub const CACHE: &str = "workloads";

/// The prefix of the annotations kept.
const KEPT_ANNOTATIONS: &str = "blastguard.io/";

/// A workload as the API server sends it, read only as far as it is kept: serde skips
/// everything else (the pod template, the status) while parsing.
#[derive(Debug, Clone, Deserialize)]
pub struct SlimWorkload {
    /// Its metadata (managedFields and all; reduced before it is kept).
    pub metadata: ObjectMeta,
    /// Its spec, only `replicas`.
    #[serde(default)]
    pub spec: Option<SlimSpec>,
}

/// The part of a spec that is kept.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlimSpec {
    /// `spec.replicas`, any JSON (a custom kind may hold anything there).
    #[serde(default)]
    pub replicas: Option<serde_json::Value>,
}

impl kube::Resource for SlimWorkload {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What is kept of one workload: boxed slices, no spare capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadFacts {
    /// Its labels.
    pub labels: Box<[(Box<str>, Box<str>)]>,
    /// Its `blastguard.io/*` annotations (AI markers, change-id, approval).
    pub annotations: Box<[(Box<str>, Box<str>)]>,
    /// `spec.replicas`, when an int32.
    pub replicas: Option<i32>,
    /// `metadata.uid` and `metadata.creationTimestamp`: a replica sees a create it
    /// admitted here, without a GET (docs/security.md, "Forged reviews on a default
    /// install").
    pub created: Option<(Box<str>, std::time::SystemTime)>,
}

impl WorkloadFacts {
    /// The facts of one object.
    pub fn of(object: SlimWorkload) -> Self {
        let pairs = |map: Option<BTreeMap<String, String>>, keep: &dyn Fn(&str) -> bool| {
            map.unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                .collect::<Vec<_>>()
                .into_boxed_slice()
        };
        let replicas = object
            .spec
            .and_then(|s| s.replicas)
            .and_then(|r| r.as_i64())
            .and_then(|r| i32::try_from(r).ok());
        let created = match (&object.metadata.uid, &object.metadata.creation_timestamp) {
            (Some(uid), Some(at)) => Some((uid.clone().into_boxed_str(), at.0.into())),
            _ => None,
        };
        Self {
            created,
            labels: pairs(object.metadata.labels, &|_| true),
            annotations: pairs(object.metadata.annotations, &|k| {
                k.starts_with(KEPT_ANNOTATIONS)
            }),
            replicas,
        }
    }

    /// The kept annotations as a map.
    pub fn annotation_map(&self) -> BTreeMap<String, String> {
        self.annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// The cache key of a namespaced object.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The watch event for one workload.
pub fn reduce(object: SlimWorkload) -> Option<(String, u64, WorkloadFacts)> {
    let key = key(
        object.metadata.namespace.as_deref()?,
        object.metadata.name.as_deref()?,
    );
    let version = version_number(object.metadata.resource_version.as_deref());
    Some((key, version, WorkloadFacts::of(object)))
}

/// One watched kind.
pub struct WatchedKind {
    /// API group (`""` for core).
    pub group: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// How to reach it: known for the built-in kinds, discovered for custom ones
    /// (`None` until the API server serves it).
    pub resource: RwLock<Option<ApiResource>>,
    /// Its objects.
    pub cache: Arc<Cache<WorkloadFacts>>,
}

impl WatchedKind {
    fn resource(&self) -> Option<ApiResource> {
        self.resource
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The kinds whose Scale is judged: the built-in kinds with a `scale` subresource,
/// then the policy's custom workloads (their version is discovered).
pub fn watched_kinds(custom: &[WorkloadSpec]) -> Vec<Arc<WatchedKind>> {
    let built_in = kinds::built_in()
        .iter()
        .filter(|k| k.reach == Reach::Replicas && k.subresources.iter().any(|s| s == "scale"))
        .map(|k| {
            let api_version = if k.group.is_empty() {
                k.version.clone()
            } else {
                format!("{}/{}", k.group, k.version)
            };
            (
                k.group.clone(),
                k.kind.clone(),
                Some(ApiResource {
                    group: k.group.clone(),
                    version: k.version.clone(),
                    api_version,
                    kind: k.kind.clone(),
                    plural: k.resource.clone(),
                }),
            )
        });
    let custom = custom
        .iter()
        .map(|w| (w.group.clone(), w.kind.clone(), None));
    built_in
        .chain(custom)
        .map(|(group, kind, resource)| {
            Arc::new(WatchedKind {
                group,
                kind,
                resource: RwLock::new(resource),
                cache: Arc::new(Cache::default()),
            })
        })
        .collect()
}

/// A GET of one workload: `Ok(None)` when it does not exist.
pub type Fetch = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<WorkloadFacts>, kube::Error>> + Send>,
>;

/// How a miss is fetched: (kind's resource, namespace, name) to a GET.
pub type Fetcher = Box<dyn Fn(ApiResource, String, String) -> Fetch + Send + Sync>;

/// [`WorkloadAnnotations`] from the cluster.
pub struct ClusterWorkloads {
    kinds: Vec<Arc<WatchedKind>>,
    fetch: Fetcher,
    bridge: Arc<Bridge>,
    metrics: ClusterMetrics,
}

impl ClusterWorkloads {
    /// Annotations from the watched kinds, and from the API server on a miss.
    pub fn new(
        kinds: Vec<Arc<WatchedKind>>,
        client: kube::Client,
        bridge: Arc<Bridge>,
        metrics: ClusterMetrics,
    ) -> Self {
        let fetch = move |resource: ApiResource, namespace: String, name: String| -> Fetch {
            let api: Api<SlimWorkload> =
                Api::namespaced_with(client.clone(), &namespace, &resource);
            Box::pin(async move { Ok(api.get_opt(&name).await?.map(WorkloadFacts::of)) })
        };
        Self::with_fetch(kinds, Box::new(fetch), bridge, metrics)
    }

    /// Annotations from the watched kinds, and from `fetch` on a miss (tests).
    pub fn with_fetch(
        kinds: Vec<Arc<WatchedKind>>,
        fetch: Fetcher,
        bridge: Arc<Bridge>,
        metrics: ClusterMetrics,
    ) -> Self {
        Self {
            kinds,
            fetch,
            bridge,
            metrics,
        }
    }

    /// The watched kinds.
    pub fn kinds(&self) -> &[Arc<WatchedKind>] {
        &self.kinds
    }

    /// Applies a watch event of one kind (the watch task calls this).
    pub fn apply(&self, kind: &WatchedKind, event: Event<WorkloadFacts>) {
        kind.cache.apply(event);
        self.publish();
    }

    /// Updates the cache metrics: objects over all kinds; synced when every kind is.
    pub fn publish(&self) {
        let objects = self.kinds.iter().map(|k| k.cache.len()).sum();
        self.metrics.set_cache_objects(CACHE, objects);
        self.metrics.set_cache_synced(CACHE, self.is_synced());
    }

    /// The uid and creation time of a watched object as the watch last showed it, by
    /// its resource (`group`, plural): `None` when the kind is not watched or the
    /// watch has not shown the object.
    pub fn created(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<(String, std::time::SystemTime)> {
        let kind = self
            .kinds
            .iter()
            .find(|k| k.group == group && k.resource().is_some_and(|r| r.plural == plural))?;
        kind.cache
            .read(&key(namespace, name), |f| {
                f.created.as_ref().map(|(uid, at)| (uid.to_string(), *at))
            })
            .flatten()
    }

    /// Whether every kind has completed its first list (or is not served).
    pub fn is_synced(&self) -> bool {
        self.kinds.iter().all(|k| k.cache.is_synced())
    }

    /// The facts of one workload: from the watch, else a GET within the decision's
    /// budget. `what` names the lookup in logs and in the decision's note of what
    /// could not be read.
    fn lookup<T>(
        &self,
        target: &Target,
        what: &str,
        keep: impl Fn(&WorkloadFacts) -> T,
    ) -> Lookup<T> {
        let Some(kind) = self
            .kinds
            .iter()
            .find(|k| k.group == target.group && k.kind == target.kind)
        else {
            return Lookup::NotWatched;
        };
        let Some(namespace) = target.namespace.as_deref() else {
            return Lookup::NotWatched;
        };
        let key = key(namespace, &target.name);
        if let Some(found) = kind.cache.read(&key, &keep) {
            self.metrics.lookup(CACHE, "hit");
            return Lookup::Found(found);
        }
        let unavailable = |error: &dyn std::fmt::Display| {
            tracing::warn!(%target, error = %error, "cannot read {what}");
            self.metrics.lookup(CACHE, "unavailable");
            budget::note_unavailable(format!("{what} of {target}"));
            Lookup::Unavailable
        };
        let Some(resource) = kind.resource() else {
            // A custom kind the API server did not serve when last asked.
            return unavailable(&"the kind is not served");
        };
        let fetch = (self.fetch)(resource, namespace.to_string(), target.name.clone());
        match self.bridge.call(budget::deadline(), fetch) {
            Ok(Ok(Some(facts))) => {
                self.metrics.lookup(CACHE, "fetched");
                Lookup::Found(keep(&facts))
            }
            Ok(Ok(None)) => {
                self.metrics.lookup(CACHE, "absent");
                Lookup::Absent
            }
            Ok(Err(e)) => unavailable(&e),
            Err(late) => unavailable(&late),
        }
    }

    /// The current `spec.replicas` of a workload (an autoscaler's target): `Ok(0)`
    /// when it does not exist, `Err` saying why when it cannot be known.
    pub fn replicas(&self, target: &Target) -> Result<u64, String> {
        match self.lookup(target, "the replicas", |f| f.replicas) {
            Lookup::Found(Some(n)) => Ok(u64::try_from(n).unwrap_or(0)),
            Lookup::Found(None) => Err(format!("the replicas of {target} are not an int32")),
            Lookup::Absent => Ok(0),
            Lookup::NotWatched => Err(format!(
                "the size of {target} is not known: its kind is not a workload blastguard watches"
            )),
            Lookup::Unavailable => Err(format!(
                "the size of {target} could not be read from the API server in time"
            )),
        }
    }
}

/// What a lookup of one workload found.
enum Lookup<T> {
    /// Kept facts of it.
    Found(T),
    /// It does not exist.
    Absent,
    /// Its kind is not watched (or it has no namespace).
    NotWatched,
    /// The API server did not answer in time; noted in the decision's scope.
    Unavailable,
}

impl WorkloadAnnotations for ClusterWorkloads {
    fn annotations(&self, target: &Target) -> Option<BTreeMap<String, String>> {
        match self.lookup(target, "the annotations", WorkloadFacts::annotation_map) {
            Lookup::Found(annotations) => Some(annotations),
            Lookup::Absent | Lookup::NotWatched | Lookup::Unavailable => None,
        }
    }

    fn observe(&self, _target: &Target, _annotations: Option<&BTreeMap<String, String>>) {
        // The watch is the truth: an admitted change can still be refused further
        // down the API server's admission chain, and annotations noted here would
        // then approve scales from an object that never was.
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn deployment(ns: &str, name: &str, rv: &str, annotations: serde_json::Value) -> SlimWorkload {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": ns,
                "resourceVersion": rv,
                "labels": {"app": name},
                "annotations": annotations,
                "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
            },
            "status": {"replicas": 3}
        }))
        .unwrap()
    }

    fn target(kind: &str, ns: &str, name: &str) -> Target {
        Target {
            group: "apps".into(),
            kind: kind.into(),
            namespace: Some(ns.into()),
            name: name.into(),
        }
    }

    fn workloads(
        fetch: impl Fn(&str, &str) -> Result<Option<WorkloadFacts>, kube::Error> + Send + Sync + 'static,
        delay: Duration,
    ) -> (tokio::runtime::Runtime, ClusterWorkloads) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let bridge = Arc::new(Bridge::new(rt.handle().clone()));
        let fetch = Arc::new(fetch);
        let fetcher: Fetcher = Box::new(move |_, ns, name| -> Fetch {
            let fetch = fetch.clone();
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                fetch(&ns, &name)
            })
        });
        let w = ClusterWorkloads::with_fetch(
            watched_kinds(&[]),
            fetcher,
            bridge,
            ClusterMetrics::default(),
        );
        (rt, w)
    }

    #[test]
    fn only_what_decisions_use_is_kept() {
        let object = deployment(
            "team-a",
            "api",
            "42",
            json!({
                "blastguard.io/approval": "{\"kind\":\"Approval\"}",
                "blastguard.io/ai-agent": "claude-code",
                "kubectl.kubernetes.io/last-applied-configuration": "{...big...}",
                "deployment.kubernetes.io/revision": "3"
            }),
        );
        let (key, version, facts) = reduce(object).unwrap();
        assert_eq!(key, "team-a/api");
        assert_eq!(version, 42);
        assert_eq!(facts.replicas, Some(3));
        assert_eq!(facts.labels.len(), 1);
        let kept: Vec<_> = facts.annotations.iter().map(|(k, _)| &**k).collect();
        assert_eq!(kept, ["blastguard.io/ai-agent", "blastguard.io/approval"]);
    }

    #[test]
    fn the_scaled_kinds_are_watched() {
        let kinds: Vec<_> = watched_kinds(&[WorkloadSpec {
            group: "argoproj.io".into(),
            kind: "Rollout".into(),
            replicas: "/spec/replicas".into(),
            template: "/spec/template".into(),
            resource: None,
        }])
        .iter()
        .map(|k| format!("{}/{}", k.group, k.kind))
        .collect();
        assert_eq!(
            kinds,
            [
                "apps/Deployment",
                "apps/StatefulSet",
                "apps/ReplicaSet",
                "/ReplicationController",
                "argoproj.io/Rollout"
            ]
        );
    }

    #[test]
    fn a_parent_is_read_from_the_watch_and_fetched_on_a_miss() {
        let (_rt, w) = workloads(
            |ns, name| {
                Ok((ns == "team-a" && name == "new").then(|| {
                    WorkloadFacts::of(deployment(
                        ns,
                        name,
                        "7",
                        json!({"blastguard.io/approval": "fetched"}),
                    ))
                }))
            },
            Duration::ZERO,
        );
        let deployments = w.kinds()[0].clone();
        w.apply(&deployments, Event::Init);
        let (k, v, f) = reduce(deployment(
            "team-a",
            "api",
            "5",
            json!({"blastguard.io/approval": "watched"}),
        ))
        .unwrap();
        w.apply(&deployments, Event::InitApply(k, v, f));
        w.apply(&deployments, Event::InitDone);
        let scope = budget::Scope::begin();
        let got = w
            .annotations(&target("Deployment", "team-a", "api"))
            .unwrap();
        assert_eq!(got["blastguard.io/approval"], "watched");
        let got = w
            .annotations(&target("Deployment", "team-a", "new"))
            .unwrap();
        assert_eq!(got["blastguard.io/approval"], "fetched");
        assert_eq!(w.annotations(&target("Deployment", "team-a", "gone")), None);
        assert_eq!(
            w.annotations(&target("Pod", "team-a", "api")),
            None,
            "not a scaled kind"
        );
        assert_eq!(scope.unavailable(), None);
    }

    #[test]
    fn a_parent_that_cannot_be_read_in_time_is_unknown_and_noted() {
        let (_rt, w) = workloads(|_, _| Ok(None), Duration::from_secs(5));
        let scope = budget::Scope::begin();
        let started = std::time::Instant::now();
        assert_eq!(w.annotations(&target("StatefulSet", "db", "pg")), None);
        assert!(started.elapsed() < budget::per_decision() + Duration::from_millis(150));
        assert_eq!(
            scope.unavailable().as_deref(),
            Some("the annotations of StatefulSet db/pg")
        );
    }
}
