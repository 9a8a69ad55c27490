//! The cluster state's Prometheus series: cache sizes and sync, lookups, change-set
//! writes, the watched webhook configuration. The server registers them with its own.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// The caches of cluster state, as the `cache` label.
pub const CLUSTER_CACHES: &[&str] = &["namespaces", "workloads", "changesets"];

/// Results of a cluster-state lookup, as the `result` label: answered from the
/// watched cache, fetched with a GET on a miss, known not to exist, or not readable
/// within the decision's time budget.
pub const LOOKUP_RESULTS: &[&str] = &["hit", "fetched", "absent", "unavailable"];

/// Results of a change-set record write, as the `result` label: written within the
/// decision's budget, written later by the background retry, a resourceVersion
/// conflict (retried), deferred to the background when the budget ran out, dropped
/// when it could not be written before it expired.
pub const WRITE_RESULTS: &[&str] = &["written", "written_late", "conflict", "deferred", "dropped"];

/// The metrics of the cluster state: cache sizes and sync, lookups,
/// change-set writes. Clones share the series.
#[derive(Clone)]
pub struct ClusterMetrics {
    cache_objects: IntGaugeVec,
    cache_synced: IntGaugeVec,
    lookups: IntCounterVec,
    change_set_writes: IntCounterVec,
    change_set_holds: IntCounterVec,
    change_set_capped: IntCounterVec,
    webhook_configuration_present: IntGaugeVec,
    webhook_configuration_changes: IntCounterVec,
}

impl std::fmt::Debug for ClusterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMetrics").finish_non_exhaustive()
    }
}

impl Default for ClusterMetrics {
    /// Series registered nowhere: for tests and for code that runs without a server.
    fn default() -> Self {
        Self::register(&Registry::new())
    }
}

impl ClusterMetrics {
    /// The series, registered in `registry` (the server's, whose `/metrics` shows
    /// them). Panics if they are registered there already: one call per registry.
    pub fn register(registry: &Registry) -> Self {
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)
                .expect("metric definitions are static and valid");
            registry
                .register(Box::new(g.clone()))
                .expect("metric names are unique");
            g
        };
        let counters = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric definitions are static and valid");
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        };
        let m = Self {
            cache_objects: gauges(
                "blastguard_cluster_cache_objects",
                "Objects held in each cache of cluster state (namespaces, workloads, change-set records).",
                &["cache"],
            ),
            cache_synced: gauges(
                "blastguard_cluster_cache_synced",
                "Whether each cache of cluster state has completed its first list from the API server (1) or not yet (0).",
                &["cache"],
            ),
            lookups: counters(
                "blastguard_cluster_lookups_total",
                "Lookups of cluster state by admission decisions, by cache and result (hit, fetched, absent, unavailable).",
                &["cache", "result"],
            ),
            change_set_writes: counters(
                "blastguard_change_set_writes_total",
                "Writes of change-set records to the API server, by result.",
                &["result"],
            ),
            change_set_holds: counters(
                "blastguard_change_set_holds_total",
                "Admitted AI changes looked for in the cluster before they count for the window, by result: confirmed (seen), lapsed (never seen: a review the API server did not send), unchecked (not readable: counted).",
                &["result"],
            ),
            change_set_capped: counters(
                "blastguard_change_set_records_capped_total",
                "AI decisions whose change set needed a new record past a cap, by cap (total, requester): one replica alone counts that set, so a change within its limits is denied change_set_capped.",
                &["cap"],
            ),
            // Series only once `serve --webhook-configuration` watches one, so an
            // install without the watch raises no alert on them.
            webhook_configuration_present: gauges(
                "blastguard_webhook_configuration_present",
                "Whether the webhook's ValidatingWebhookConfiguration exists with at least one webhook (1) or is deleted or empty, so the API server sends nothing (0).",
                &["name"],
            ),
            webhook_configuration_changes: counters(
                "blastguard_webhook_configuration_changes_total",
                "Changes to the webhook's ValidatingWebhookConfiguration seen by the watch, by change: created, modified, ca_bundle, deleted.",
                &["name", "change"],
            ),
        };
        for cache in CLUSTER_CACHES {
            m.cache_objects.with_label_values(&[cache]);
            m.cache_synced.with_label_values(&[cache]);
            for result in LOOKUP_RESULTS {
                m.lookups.with_label_values(&[cache, result]);
            }
        }
        for result in WRITE_RESULTS {
            m.change_set_writes.with_label_values(&[result]);
        }
        for result in ["confirmed", "lapsed", "unchecked"] {
            m.change_set_holds.with_label_values(&[result]);
        }
        for cap in ["total", "requester"] {
            m.change_set_capped.with_label_values(&[cap]);
        }
        m
    }

    /// Sets the number of objects in a cache.
    pub fn set_cache_objects(&self, cache: &str, objects: usize) {
        self.cache_objects
            .with_label_values(&[cache])
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }

    /// Sets whether a cache has completed its first list.
    pub fn set_cache_synced(&self, cache: &str, synced: bool) {
        self.cache_synced
            .with_label_values(&[cache])
            .set(i64::from(synced));
    }

    /// Counts one lookup (`result` is one of [`LOOKUP_RESULTS`]).
    pub fn lookup(&self, cache: &str, result: &str) {
        self.lookups.with_label_values(&[cache, result]).inc();
    }

    /// Starts the series of a watched webhook configuration: each change at 0.
    pub fn webhook_configuration_watched(&self, name: &str, changes: &[&str]) {
        for change in changes {
            self.webhook_configuration_changes
                .with_label_values(&[name, change]);
        }
    }

    /// Sets whether the watched webhook configuration exists with a webhook.
    pub fn set_webhook_configuration_present(&self, name: &str, present: bool) {
        self.webhook_configuration_present
            .with_label_values(&[name])
            .set(i64::from(present));
    }

    /// Counts one change of the watched webhook configuration.
    pub fn webhook_configuration_changed(&self, name: &str, change: &str) {
        self.webhook_configuration_changes
            .with_label_values(&[name, change])
            .inc();
    }

    /// Counts one change-set write outcome (one of [`WRITE_RESULTS`]).
    pub fn change_set_write(&self, result: &str) {
        self.change_set_writes.with_label_values(&[result]).inc();
    }

    /// Counts one admitted change settled by looking for it (confirmed, lapsed,
    /// unchecked).
    pub fn change_set_hold(&self, result: &str) {
        self.change_set_holds.with_label_values(&[result]).inc();
    }

    /// Counts one decision whose change set needed a new record past a cap (total,
    /// requester).
    pub fn change_set_capped(&self, cap: &str) {
        self.change_set_capped.with_label_values(&[cap]).inc();
    }
}
