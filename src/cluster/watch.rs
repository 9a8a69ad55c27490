//! The watch tasks that feed the caches: one kube-runtime watcher per kind, with the
//! default backoff, reconnecting and relisting for as long as the server runs.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client};
use serde::de::DeserializeOwned;

use super::cache::Event;
use super::change_sets::ClusterChangeSets;
use super::change_sets::record::ChangeSet;
use super::namespaces::{self, ClusterNamespaces};
use super::workloads::{self, ClusterWorkloads, SlimWorkload, WatchedKind};

/// How often a custom workload kind the API server does not serve is looked for again.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(60);

/// Reduces one watcher event to a cache event; objects `reduce` rejects (no name) are
/// skipped.
fn reduced<K, V>(
    event: watcher::Event<K>,
    reduce: impl Fn(K) -> Option<(String, u64, V)>,
) -> Option<Event<V>> {
    Some(match event {
        watcher::Event::Init => Event::Init,
        watcher::Event::InitDone => Event::InitDone,
        watcher::Event::InitApply(o) => {
            let (k, v, value) = reduce(o)?;
            Event::InitApply(k, v, value)
        }
        watcher::Event::Apply(o) => {
            let (k, v, value) = reduce(o)?;
            Event::Apply(k, v, value)
        }
        watcher::Event::Delete(o) => Event::Delete(reduce(o)?.0),
    })
}

/// Runs one watcher forever, handing each reduced event to `apply`.
async fn run<K, V>(
    what: String,
    api: Api<K>,
    reduce: impl Fn(K) -> Option<(String, u64, V)> + Send,
    apply: impl Fn(Event<V>) + Send,
) where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                if failing {
                    tracing::info!(watch = %what, "watch restored");
                    failing = false;
                }
                if let Some(event) = reduced(event, &reduce) {
                    apply(event);
                }
            }
            Err(e) => {
                // Logged once per outage, not on every retry of the backoff.
                if !failing {
                    tracing::warn!(watch = %what, error = %e, "watch failed; retrying with backoff (decisions use what is known and GETs on a miss)");
                    failing = true;
                }
            }
        }
    }
}

/// Watches Namespaces, metadata only.
pub fn namespaces(client: Client, namespaces: Arc<ClusterNamespaces>) {
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
    tokio::spawn(run(
        "namespaces".to_string(),
        api,
        namespaces::reduce,
        move |e| namespaces.apply(e),
    ));
}

/// Watches the change-set records of one namespace.
pub fn change_sets(client: Client, namespace: &str, change_sets: Arc<ClusterChangeSets>) {
    let api: Api<ChangeSet> = Api::namespaced(client, namespace);
    let what = format!("changesets.blastguard.io in {namespace}");
    tokio::spawn(run(
        what,
        api,
        |record: ChangeSet| {
            let name = record.metadata.name.clone()?;
            let version = super::cache::version_number(record.metadata.resource_version.as_deref());
            Some((name, version, record))
        },
        move |e| change_sets.apply(e),
    ));
    // Collection of expired records runs beside the watch that feeds it.
}

/// Watches each workload kind; a custom kind is first discovered.
pub fn workloads(client: Client, workloads: Arc<ClusterWorkloads>) {
    for kind in workloads.kinds().to_vec() {
        let client = client.clone();
        let workloads = workloads.clone();
        tokio::spawn(async move {
            let resource = match discover(&client, &kind).await {
                Some(resource) => resource,
                None => return,
            };
            let api: Api<SlimWorkload> = Api::all_with(client, &resource);
            let what = format!("{} ({})", resource.plural, resource.api_version);
            let watched = kind.clone();
            run(what, api, workloads::reduce, move |e| {
                workloads.apply(&watched, e)
            })
            .await;
        });
    }
}

/// The kind's resource: known for a built-in kind; for a custom kind, looked up from
/// the API server's discovery until it is served. While it is not, its cache counts
/// as synced: there is nothing of it to wait for.
async fn discover(client: &Client, kind: &WatchedKind) -> Option<kube::core::ApiResource> {
    if let Some(resource) = kind
        .resource
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        return Some(resource);
    }
    let mut told = false;
    loop {
        match kube::discovery::group(client, &kind.group).await {
            Ok(group) => {
                if let Some((resource, _)) = group.recommended_kind(&kind.kind) {
                    *kind.resource.write().unwrap_or_else(|p| p.into_inner()) =
                        Some(resource.clone());
                    tracing::info!(group = %kind.group, kind = %kind.kind, version = %resource.version, "custom workload kind found; watching it");
                    return Some(resource);
                }
            }
            Err(e) if !told => {
                tracing::info!(group = %kind.group, kind = %kind.kind, error = %e, "custom workload kind not served by the API server; looking again every minute");
                told = true;
            }
            Err(_) => {}
        }
        kind.cache.mark_synced();
        tokio::time::sleep(DISCOVERY_INTERVAL).await;
    }
}
