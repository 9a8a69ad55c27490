//! Namespace labels from the cluster, for `namespaceSelector` (docs/design.md#policy).
//!
//! The watched Namespaces (metadata only), and a GET within the decision's budget for
//! one the watch has not delivered yet.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::core::PartialObjectMeta;

use super::bridge::Bridge;
use super::cache::{Cache, Event, version_number};
use super::metrics::ClusterMetrics;
use crate::budget;
use crate::policy::NamespaceLabels;

/// The `cache` label of these metrics.
pub const CACHE: &str = "namespaces";

/// A namespace's labels, as kept.
pub type Labels = BTreeMap<String, String>;

/// The watch event for one Namespace: its name and labels, nothing else.
pub fn reduce(meta: PartialObjectMeta<Namespace>) -> Option<(String, u64, Labels)> {
    let m = meta.metadata;
    Some((
        m.name?,
        version_number(m.resource_version.as_deref()),
        m.labels.unwrap_or_default(),
    ))
}

/// [`NamespaceLabels`] from the cluster.
pub struct ClusterNamespaces {
    cache: Arc<Cache<Labels>>,
    fetch: Box<dyn Fn(String) -> Fetch + Send + Sync>,
    bridge: Arc<Bridge>,
    metrics: ClusterMetrics,
}

/// A GET of one Namespace's labels: `Ok(None)` when it does not exist.
pub type Fetch = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<Labels>, kube::Error>> + Send>,
>;

impl ClusterNamespaces {
    /// Labels from `cache`, and from the API server on a miss.
    pub fn new(
        cache: Arc<Cache<Labels>>,
        api: Api<PartialObjectMeta<Namespace>>,
        bridge: Arc<Bridge>,
        metrics: ClusterMetrics,
    ) -> Self {
        let fetch = move |name: String| -> Fetch {
            let api = api.clone();
            Box::pin(async move {
                Ok(api
                    .get_opt(&name)
                    .await?
                    .map(|m| m.metadata.labels.unwrap_or_default()))
            })
        };
        Self::with_fetch(cache, Box::new(fetch), bridge, metrics)
    }

    /// Labels from `cache`, and from `fetch` on a miss (tests feed both directly).
    pub fn with_fetch(
        cache: Arc<Cache<Labels>>,
        fetch: Box<dyn Fn(String) -> Fetch + Send + Sync>,
        bridge: Arc<Bridge>,
        metrics: ClusterMetrics,
    ) -> Self {
        Self {
            cache,
            fetch,
            bridge,
            metrics,
        }
    }

    /// Whether the watch has delivered its first list.
    pub fn is_synced(&self) -> bool {
        self.cache.is_synced()
    }

    /// Applies a watch event (the watch task calls this).
    pub fn apply(&self, event: Event<Labels>) {
        self.cache.apply(event);
        self.metrics.set_cache_objects(CACHE, self.cache.len());
        self.metrics.set_cache_synced(CACHE, self.cache.is_synced());
    }
}

impl NamespaceLabels for ClusterNamespaces {
    fn labels(&self, namespace: &str) -> Option<Labels> {
        if let Some(labels) = self.cache.read(namespace, Clone::clone) {
            self.metrics.lookup(CACHE, "hit");
            return Some(labels);
        }
        // Not watched yet: a namespace created moments ago, or the first list still
        // on its way. The watch will bring it; this decision asks now.
        match self
            .bridge
            .call(budget::deadline(), (self.fetch)(namespace.to_string()))
        {
            Ok(Ok(Some(labels))) => {
                self.metrics.lookup(CACHE, "fetched");
                Some(labels)
            }
            // A namespace that does not exist has no labels; the API server refuses
            // objects in it anyway.
            Ok(Ok(None)) => {
                self.metrics.lookup(CACHE, "absent");
                Some(Labels::new())
            }
            Ok(Err(e)) => {
                tracing::warn!(namespace, error = %e, "cannot read the labels of a namespace");
                self.unavailable(namespace)
            }
            Err(late) => {
                tracing::warn!(namespace, error = %late, "cannot read the labels of a namespace");
                self.unavailable(namespace)
            }
        }
    }
}

impl ClusterNamespaces {
    fn unavailable(&self, namespace: &str) -> Option<Labels> {
        self.metrics.lookup(CACHE, "unavailable");
        budget::note_unavailable(format!("the labels of namespace {namespace}"));
        // None: the engine applies the strictest rule that could match.
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    struct Fixture {
        _rt: tokio::runtime::Runtime,
        namespaces: ClusterNamespaces,
        fetched: Arc<AtomicUsize>,
    }

    /// Namespaces over a cache fed directly; a miss asks `answer` (after `delay`).
    fn fixture(
        answer: impl Fn(&str) -> Result<Option<Labels>, kube::Error> + Send + Sync + 'static,
        delay: Duration,
    ) -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let bridge = Arc::new(Bridge::new(rt.handle().clone()));
        let fetched = Arc::new(AtomicUsize::new(0));
        let counter = fetched.clone();
        let answer = Arc::new(answer);
        let fetch = move |name: String| -> Fetch {
            counter.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                answer(&name)
            })
        };
        let namespaces = ClusterNamespaces::with_fetch(
            Arc::new(Cache::default()),
            Box::new(fetch),
            bridge,
            ClusterMetrics::default(),
        );
        Fixture {
            _rt: rt,
            namespaces,
            fetched,
        }
    }

    #[test]
    fn watched_labels_answer_and_follow_changes() {
        let f = fixture(|_| Ok(None), Duration::ZERO);
        let ns = &f.namespaces;
        ns.apply(Event::Init);
        ns.apply(Event::InitApply(
            "payments".into(),
            1,
            labels(&[("blastguard.io/tier", "critical")]),
        ));
        ns.apply(Event::InitDone);
        assert_eq!(
            ns.labels("payments"),
            Some(labels(&[("blastguard.io/tier", "critical")]))
        );
        ns.apply(Event::Apply("payments".into(), 2, labels(&[])));
        assert_eq!(ns.labels("payments"), Some(labels(&[])));
        assert_eq!(f.fetched.load(Ordering::SeqCst), 0, "hits never ask");
    }

    #[test]
    fn a_miss_asks_the_api_server() {
        let f = fixture(
            |name| Ok((name == "new").then(|| labels(&[("blastguard.io/tier", "critical")]))),
            Duration::ZERO,
        );
        let scope = budget::Scope::begin();
        assert_eq!(
            f.namespaces.labels("new"),
            Some(labels(&[("blastguard.io/tier", "critical")]))
        );
        assert_eq!(
            f.namespaces.labels("gone"),
            Some(Labels::new()),
            "a namespace that does not exist has no labels"
        );
        assert_eq!(f.fetched.load(Ordering::SeqCst), 2);
        assert_eq!(scope.unavailable(), None);
    }

    #[test]
    fn an_unreadable_namespace_has_unknown_labels_and_says_so() {
        let f = fixture(|_| Ok(None), Duration::from_secs(5));
        let scope = budget::Scope::begin();
        let started = std::time::Instant::now();
        assert_eq!(f.namespaces.labels("slow"), None);
        assert!(started.elapsed() < budget::per_decision() + Duration::from_millis(150));
        assert_eq!(
            scope.unavailable().as_deref(),
            Some("the labels of namespace slow")
        );
        let f = fixture(
            |_| {
                Err(kube::Error::Api(Box::new(kube::core::Status::failure(
                    "forbidden",
                    "Forbidden",
                ))))
            },
            Duration::ZERO,
        );
        let scope = budget::Scope::begin();
        assert_eq!(f.namespaces.labels("secret"), None);
        assert!(scope.unavailable().is_some());
    }
}
