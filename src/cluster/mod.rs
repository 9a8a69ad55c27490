//! The engine's state from the cluster: every replica gives the same answer because
//! each reads what the cluster knows, and none makes the API server's health its own.
//!
//! - [`namespaces::ClusterNamespaces`]: namespace labels for `namespaceSelector`, from
//!   a metadata-only watch of Namespaces, with a GET for one not watched yet.
//! - [`workloads::ClusterWorkloads`]: the parent workload's approval for a scale, from
//!   watches of the scaled kinds that keep only labels, `blastguard.io/*` annotations
//!   and replicas, with a GET on a miss.
//! - [`change_sets::ClusterChangeSets`]: change sets in `ChangeSet` records
//!   ([`change_sets::record`]) in the release namespace, read per decision, written with
//!   resourceVersion preconditions, expiring with the window.
//!
//! Every API-server call of a decision shares one time budget ([`crate::budget`]; `serve
//! --api-budget`, 200 ms by default) and is made through [`bridge`], which never waits
//! past it. What could not be read in time is noted, and the engine follows the
//! policy's `onClusterUnavailable` for a change that would otherwise be admitted.
//!
//! Without a cluster (`--dev`, `check`, or no configuration found) the engine keeps
//! its state in memory.

/// `kube::Resource` for a namespaced `blastguard.io/v1alpha1` record type with a
/// `metadata` field: the chart's CRDs (`ChangeSet`, `SpentApproval`).
macro_rules! record_resource {
    ($ty:ty, $kind:expr, $plural:expr) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                $crate::cluster::change_sets::record::GROUP.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                $crate::cluster::change_sets::record::VERSION.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

pub mod bridge;
pub mod cache;
pub mod change_sets;
pub mod metrics;
pub mod namespaces;
pub mod peer;
pub mod pending;
pub mod requests;
pub mod sighting;
pub mod sizes;
pub mod spent;
mod watch;
pub mod webhook_config;
pub mod workloads;

use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use kube::Client;

use crate::policy::WorkloadSpec;
use metrics::ClusterMetrics;

/// Where the state that spans requests lives (`serve --state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateMode {
    /// The cluster when kube's usual inference finds one (in-cluster service account,
    /// KUBECONFIG, ~/.kube/config), else this process's memory.
    Auto,
    /// The cluster; the server does not start without one.
    Cluster,
    /// This process's memory: each replica counts alone.
    Memory,
}

/// Why the cluster state could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Neither an in-cluster service account nor a kubeconfig was found.
    #[error(
        "no cluster configuration found (in-cluster service account, KUBECONFIG or ~/.kube/config): {0}"
    )]
    NoConfig(#[from] kube::config::InferConfigError),
    /// A client could not be built from the configuration.
    #[error("cannot build a client for the API server: {0}")]
    Client(#[from] kube::Error),
}

/// What the cluster state needs to know of the policy and the install.
#[derive(Debug, Clone)]
pub struct Options {
    /// The namespace of the change-set records; the configuration's default
    /// namespace (in a pod: its own) when `None`.
    pub namespace: Option<String>,
    /// The policy's change-set window at start (the collector follows the longest
    /// window any decision used since).
    pub window: Duration,
    /// The policy's custom workload kinds, watched besides the built-in ones.
    pub workloads: Vec<WorkloadSpec>,
    /// The webhook's own ValidatingWebhookConfiguration, watched for changes
    /// ([`webhook_config`]), when named.
    pub webhook_configuration: Option<String>,
    /// Look for each admitted AI change in the cluster before it counts for the
    /// window ([`sighting`]); off only for tests that stand in for the API server.
    pub look: bool,
    /// How many change-set records may exist ([`change_sets::Caps`]).
    pub caps: change_sets::Caps,
}

/// The cluster state, running: its watches feed the caches of its stores, which the
/// server hands to the engine as its `State`.
pub struct Cluster {
    /// Namespace labels, for `namespaceSelector`.
    pub namespaces: Arc<namespaces::ClusterNamespaces>,
    /// The parent workload's approval, for scales.
    pub workloads: Arc<workloads::ClusterWorkloads>,
    /// Autoscaler targets' sizes and Services' endpoints.
    pub sizes: Arc<sizes::ClusterSizes>,
    /// Single-use approvals already spent, as `SpentApproval` records.
    pub spent: Arc<spent::ClusterSpent>,
    /// Change sets, as `ChangeSet` records.
    pub change_sets: Arc<change_sets::ClusterChangeSets>,
    client: Client,
    bridge: Arc<bridge::Bridge>,
    /// The API server's URL, for logs.
    pub server: String,
    /// The namespace of the change-set records.
    pub namespace: String,
}

impl Cluster {
    /// The configuration kube's usual inference finds: a kubeconfig (KUBECONFIG, else
    /// ~/.kube/config), else the in-cluster service account.
    pub async fn infer() -> Result<kube::Config, ClusterError> {
        Ok(kube::Config::infer().await?)
    }

    /// Starts the watches and the collector on the current runtime. Returns at once:
    /// the caches fill in the background ([`Cluster::pending_sync`]).
    pub fn start(
        config: kube::Config,
        options: Options,
        metrics: ClusterMetrics,
    ) -> Result<Cluster, ClusterError> {
        let server = config.cluster_url.to_string();
        let namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)?;
        let bridge = Arc::new(bridge::Bridge::new(tokio::runtime::Handle::current()));

        let namespaces = Arc::new(namespaces::ClusterNamespaces::new(
            Arc::new(cache::Cache::default()),
            Api::all(client.clone()),
            bridge.clone(),
            metrics.clone(),
        ));
        let workloads = Arc::new(workloads::ClusterWorkloads::new(
            workloads::watched_kinds(&options.workloads),
            client.clone(),
            bridge.clone(),
            metrics.clone(),
        ));
        let sizes = Arc::new(sizes::ClusterSizes::new(
            workloads.clone(),
            client.clone(),
            bridge.clone(),
        ));
        let spent = Arc::new(spent::ClusterSpent::new(
            Api::namespaced(client.clone(), &namespace),
            bridge.clone(),
        ));
        let mut change_sets = change_sets::ClusterChangeSets::new(
            Box::new(change_sets::ApiRecords(Api::namespaced(
                client.clone(),
                &namespace,
            ))),
            namespace.clone(),
            Arc::new(cache::Cache::default()),
            bridge.clone(),
            options.window,
            metrics.clone(),
        );
        change_sets = change_sets.with_caps(options.caps);
        if options.look {
            change_sets = change_sets.with_looks(Box::new(sighting::WatchedThenApi {
                workloads: workloads.clone(),
                api: sighting::ApiLooks(client.clone()),
            }));
        }
        let change_sets = Arc::new(change_sets);
        for cache in metrics::CLUSTER_CACHES {
            metrics.set_cache_synced(cache, false);
        }

        watch::namespaces(client.clone(), namespaces.clone());
        watch::workloads(client.clone(), workloads.clone());
        if let Some(name) = options.webhook_configuration.clone() {
            webhook_config::watch(client.clone(), name, metrics.clone());
        }
        watch::change_sets(client.clone(), &namespace, change_sets.clone());
        let spent_collector = spent.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(300)).await;
                let deleted = spent_collector
                    .collect_expired(std::time::SystemTime::now())
                    .await;
                if deleted > 0 {
                    tracing::debug!(deleted, "expired spent-approval records deleted");
                }
            }
        });
        let collector = change_sets.clone();
        tokio::spawn(async move {
            collector.warm_up().await;
            loop {
                tokio::time::sleep(collector.collect_interval()).await;
                let deleted = collector.collect_expired().await;
                if deleted > 0 {
                    tracing::debug!(deleted, "expired change-set records deleted");
                }
            }
        });
        Ok(Cluster {
            namespaces,
            workloads,
            sizes,
            spent,
            change_sets,
            client,
            bridge,
            server,
            namespace,
        })
    }

    /// Starts the approval inbox in the release namespace (docs/approvals.md, "The
    /// inbox").
    pub fn requests(
        &self,
        limits: requests::Limits,
        notifier: Option<Arc<dyn crate::approval::request::Notify>>,
        metrics: requests::RequestMetrics,
    ) -> Arc<requests::ClusterRequests> {
        requests::ClusterRequests::start(
            Api::namespaced(self.client.clone(), &self.namespace),
            self.namespace.clone(),
            self.bridge.clone(),
            limits,
            notifier,
            metrics,
        )
    }

    /// The caches still waiting for their first list, by name; empty once synced.
    pub fn pending_sync(&self) -> Vec<&'static str> {
        let mut pending = Vec::new();
        if !self.namespaces.is_synced() {
            pending.push(namespaces::CACHE);
        }
        if !self.workloads.is_synced() {
            pending.push(workloads::CACHE);
        }
        // Listed, and written once (a dry run): see ClusterChangeSets::warm_up.
        if !self.change_sets.is_synced() || !self.change_sets.is_warm() {
            pending.push(change_sets::CACHE);
        }
        pending
    }

    /// Admitted changes whose change-set writes have not succeeded yet.
    pub fn pending_writes(&self) -> usize {
        self.change_sets.pending()
    }
}
