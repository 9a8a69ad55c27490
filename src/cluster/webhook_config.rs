//! The webhook's own ValidatingWebhookConfiguration, watched (`serve
//! --webhook-configuration NAME`, docs/design.md#install).
//!
//! The API server never sends webhook configurations to webhooks, and the chart's
//! ValidatingAdmissionPolicy keeps only the AI identities it knows away from them: an
//! identity with the rights to delete the configuration, or to empty its rules, switches
//! blastguard off without blastguard ever being asked. So a running server watches the
//! one configuration it is registered by and says so when it changes or disappears: a
//! warning in its log, `blastguard_webhook_configuration_present` and
//! `blastguard_webhook_configuration_changes_total`, and the chart's alerts on them
//! (docs/runbook.md).
//!
//! A list and watch selected by `metadata.name` is what the chart's RBAC allows
//! (`resourceNames` of that one object): nothing else is read.

use futures::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client};
use serde_json::Value;

use super::metrics::ClusterMetrics;

/// How the configuration changed, as the `change` label of
/// `blastguard_webhook_configuration_changes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It appeared after having been seen missing.
    Created,
    /// Its webhooks changed (rules, selectors, matchConditions, failure policy, the
    /// service it calls...), or it lost every webhook.
    Modified,
    /// Only the CA bundle changed: a certificate rotation (cert-manager's injector,
    /// `helm upgrade`), expected now and then.
    CaBundle,
    /// It was deleted: the API server no longer calls blastguard.
    Deleted,
}

impl Change {
    /// Every change, so each series exists from the start.
    pub const ALL: [Change; 4] = [
        Change::Created,
        Change::Modified,
        Change::CaBundle,
        Change::Deleted,
    ];

    /// The `change` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Modified => "modified",
            Change::CaBundle => "ca_bundle",
            Change::Deleted => "deleted",
        }
    }
}

/// What is compared of the configuration: its webhooks without their CA bundles, and
/// the CA bundles apart. Metadata (labels, annotations, managedFields) does not change
/// what the API server sends, so it is not compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// `webhooks`, each without `clientConfig.caBundle`.
    pub webhooks: Vec<Value>,
    /// Each webhook's `clientConfig.caBundle` (base64 as served), in order.
    pub ca_bundles: Vec<Option<Value>>,
}

impl Seen {
    /// Reads the compared parts of a configuration.
    pub fn of(config: &ValidatingWebhookConfiguration) -> Seen {
        let mut webhooks = Vec::new();
        let mut ca_bundles = Vec::new();
        for webhook in config.webhooks.iter().flatten() {
            // A typed webhook always serializes; Null would only compare equal to
            // another Null, never hide a change between two real ones.
            let mut value = serde_json::to_value(webhook).unwrap_or(Value::Null);
            let bundle = value
                .get_mut("clientConfig")
                .and_then(Value::as_object_mut)
                .and_then(|c| c.remove("caBundle"));
            webhooks.push(value);
            ca_bundles.push(bundle);
        }
        Seen {
            webhooks,
            ca_bundles,
        }
    }

    /// Whether the API server calls anything through it: a configuration without
    /// webhooks is as good as deleted.
    pub fn calls_a_webhook(&self) -> bool {
        !self.webhooks.is_empty()
    }

    /// The fields that differ from `before`, e.g. `webhooks[0].rules`, for the log.
    pub fn differences(&self, before: &Seen) -> Vec<String> {
        let mut out = Vec::new();
        if self.webhooks.len() != before.webhooks.len() {
            out.push(format!(
                "webhooks: {} -> {} entries",
                before.webhooks.len(),
                self.webhooks.len()
            ));
        }
        for (i, (now, then)) in self.webhooks.iter().zip(&before.webhooks).enumerate() {
            let (Some(now), Some(then)) = (now.as_object(), then.as_object()) else {
                continue;
            };
            let mut keys: Vec<&String> = now.keys().chain(then.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                if now.get(key) != then.get(key) {
                    out.push(format!("webhooks[{i}].{key}"));
                }
            }
        }
        out
    }
}

/// The change from what was last known to what is seen now (`None`: absent), if any.
pub fn change(before: Option<&Seen>, now: Option<&Seen>) -> Option<Change> {
    match (before, now) {
        (None, None) => None,
        (None, Some(_)) => Some(Change::Created),
        (Some(_), None) => Some(Change::Deleted),
        (Some(b), Some(n)) if b.webhooks != n.webhooks => Some(Change::Modified),
        (Some(b), Some(n)) if b.ca_bundles != n.ca_bundles => Some(Change::CaBundle),
        (Some(_), Some(_)) => None,
    }
}

/// Follows one configuration through the watcher's events and reports each change.
pub struct Tracker {
    name: String,
    metrics: ClusterMetrics,
    /// What was last known; `None` while absent. Meaningful once `listed`.
    known: Option<Seen>,
    /// Whether a first list has completed.
    listed: bool,
    /// What the list in progress has delivered.
    listing: Option<Seen>,
}

impl Tracker {
    /// A tracker for the configuration `name`; its series start at zero.
    pub fn new(name: String, metrics: ClusterMetrics) -> Tracker {
        metrics.webhook_configuration_watched(&name, &Change::ALL.map(Change::as_str));
        Tracker {
            name,
            metrics,
            known: None,
            listed: false,
            listing: None,
        }
    }

    /// Takes one watcher event (already filtered to the one name).
    pub fn apply(&mut self, event: watcher::Event<ValidatingWebhookConfiguration>) {
        match event {
            watcher::Event::Init => self.listing = None,
            watcher::Event::InitApply(config) => self.listing = Some(Seen::of(&config)),
            watcher::Event::InitDone => {
                let now = self.listing.take();
                if self.listed {
                    // A relist after the watch was lost: whatever happened meanwhile.
                    self.see(now);
                } else {
                    self.first(now);
                }
            }
            watcher::Event::Apply(config) => self.see(Some(Seen::of(&config))),
            watcher::Event::Delete(_) => self.see(None),
        }
    }

    /// The first list: nothing to compare with yet, but a missing or empty
    /// configuration is said at once.
    fn first(&mut self, now: Option<Seen>) {
        self.listed = true;
        match &now {
            Some(seen) if seen.calls_a_webhook() => tracing::info!(
                webhook_configuration = %self.name,
                webhooks = seen.webhooks.len(),
                "watching the webhook configuration; a change or deletion will be logged"
            ),
            Some(_) => tracing::warn!(
                webhook_configuration = %self.name,
                "the webhook configuration has no webhooks: the API server sends blastguard nothing, AI-assisted changes are not judged"
            ),
            None => tracing::warn!(
                webhook_configuration = %self.name,
                "the webhook configuration does not exist: the API server sends blastguard nothing, AI-assisted changes are not judged (reinstall the chart)"
            ),
        }
        self.set_present(now.as_ref());
        self.known = now;
    }

    fn see(&mut self, now: Option<Seen>) {
        if !self.listed {
            // Events before the first list completes are part of it.
            self.listing = now;
            return;
        }
        let Some(change) = change(self.known.as_ref(), now.as_ref()) else {
            return;
        };
        self.metrics
            .webhook_configuration_changed(&self.name, change.as_str());
        self.set_present(now.as_ref());
        match (change, &self.known, &now) {
            (Change::Deleted, _, _) => tracing::warn!(
                webhook_configuration = %self.name,
                "the webhook configuration was deleted: the API server no longer sends AI-assisted changes to blastguard, they are not judged; if nobody meant to, restore it (helm upgrade) and find who deleted it in the audit log"
            ),
            (Change::Created, _, Some(now)) => tracing::warn!(
                webhook_configuration = %self.name,
                webhooks = now.webhooks.len(),
                "the webhook configuration was created again after it was missing"
            ),
            (Change::Modified, Some(before), Some(now)) => tracing::warn!(
                webhook_configuration = %self.name,
                changed = %now.differences(before).join(", "),
                webhooks = now.webhooks.len(),
                "the webhook configuration was changed: what the API server sends blastguard may differ from what the chart installed; if it was not an upgrade, compare it with `helm get manifest` and find who changed it in the audit log"
            ),
            (Change::CaBundle, _, _) => tracing::info!(
                webhook_configuration = %self.name,
                "the webhook configuration's CA bundle changed (a certificate rotation)"
            ),
            _ => {}
        }
        self.known = now;
    }

    fn set_present(&self, now: Option<&Seen>) {
        self.metrics
            .set_webhook_configuration_present(&self.name, now.is_some_and(Seen::calls_a_webhook));
    }
}

/// Watches the configuration `name` for as long as the server runs, reconnecting
/// with the default backoff.
pub fn watch(client: Client, name: String, metrics: ClusterMetrics) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut tracker = Tracker::new(name.clone(), metrics);
        let stream = watcher(api, config).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if failing {
                        tracing::info!(webhook_configuration = %name, "watch of the webhook configuration restored");
                        failing = false;
                    }
                    tracker.apply(event);
                }
                Err(e) => {
                    // Once per outage, not on every retry.
                    if !failing {
                        tracing::warn!(webhook_configuration = %name, error = %e, "cannot watch the webhook configuration (the chart's ClusterRole <release>-webhook-configuration allows it); retrying with backoff");
                        failing = true;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(webhooks: Value) -> ValidatingWebhookConfiguration {
        serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "blastguard", "resourceVersion": "1"},
            "webhooks": webhooks,
        }))
        .unwrap()
    }

    fn webhook(failure: &str, ca: &str) -> Value {
        json!({
            "name": "validate.blastguard.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "NoneOnDryRun",
            "failurePolicy": failure,
            "clientConfig": {"url": "https://127.0.0.1:8443/validate", "caBundle": ca},
            "rules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["deployments"]}],
        })
    }

    fn seen(failure: &str, ca: &str) -> Seen {
        Seen::of(&config(json!([webhook(failure, ca)])))
    }

    #[test]
    fn changes_are_told_apart() {
        let a = seen("Fail", "Y2E=");
        assert_eq!(change(None, None), None);
        assert_eq!(change(Some(&a), Some(&a.clone())), None);
        assert_eq!(change(None, Some(&a)), Some(Change::Created));
        assert_eq!(change(Some(&a), None), Some(Change::Deleted));
        let ignored = seen("Ignore", "Y2E=");
        assert_eq!(change(Some(&a), Some(&ignored)), Some(Change::Modified));
        assert_eq!(ignored.differences(&a), ["webhooks[0].failurePolicy"]);
        let rotated = seen("Fail", "bmV3");
        assert_eq!(change(Some(&a), Some(&rotated)), Some(Change::CaBundle));
        let emptied = Seen::of(&config(json!([])));
        assert_eq!(change(Some(&a), Some(&emptied)), Some(Change::Modified));
        assert!(!emptied.calls_a_webhook());
        assert_eq!(emptied.differences(&a), ["webhooks: 1 -> 0 entries"]);
    }

    /// The metrics as a scrape shows them, from a registry like the server's.
    fn scrape(registry: &prometheus::Registry) -> String {
        use prometheus::Encoder as _;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_tracker_counts_changes_after_the_first_list_and_across_relists() {
        let registry = prometheus::Registry::new();
        let mut t = Tracker::new("blastguard".into(), ClusterMetrics::register(&registry));
        let present = "blastguard_webhook_configuration_present{name=\"blastguard\"}";
        let count = |change: &str| {
            format!(
                "blastguard_webhook_configuration_changes_total{{change=\"{change}\",name=\"blastguard\"}}"
            )
        };
        let value = |series: &str| -> Option<f64> {
            scrape(&registry)
                .lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        };
        // Every change series exists at 0 from the start; presence only once listed.
        assert_eq!(value(&count("deleted")), Some(0.0));
        assert_eq!(value(present), None);
        t.apply(watcher::Event::Init);
        t.apply(watcher::Event::InitApply(config(json!([webhook(
            "Fail", "Y2E="
        )]))));
        t.apply(watcher::Event::InitDone);
        assert_eq!(value(present), Some(1.0));
        assert_eq!(value(&count("modified")), Some(0.0));

        t.apply(watcher::Event::Apply(config(json!([webhook(
            "Ignore", "Y2E="
        )]))));
        assert_eq!(value(&count("modified")), Some(1.0));
        t.apply(watcher::Event::Apply(config(json!([webhook(
            "Ignore", "bmV3"
        )]))));
        assert_eq!(value(&count("ca_bundle")), Some(1.0));
        t.apply(watcher::Event::Delete(config(json!([]))));
        assert_eq!(value(present), Some(0.0));
        assert_eq!(value(&count("deleted")), Some(1.0));
        // Recreated while the watch was down: the relist finds it.
        t.apply(watcher::Event::Init);
        t.apply(watcher::Event::InitApply(config(json!([webhook(
            "Fail", "Y2E="
        )]))));
        t.apply(watcher::Event::InitDone);
        assert_eq!(value(present), Some(1.0));
        assert_eq!(value(&count("created")), Some(1.0));
        // Deleted while the watch was down: the relist does not find it.
        t.apply(watcher::Event::Init);
        t.apply(watcher::Event::InitDone);
        assert_eq!(value(present), Some(0.0));
        assert_eq!(value(&count("deleted")), Some(2.0));
        // Emptied: present no longer.
        t.apply(watcher::Event::Apply(config(json!([webhook(
            "Fail", "Y2E="
        )]))));
        t.apply(watcher::Event::Apply(config(json!([]))));
        assert_eq!(value(present), Some(0.0));
        assert_eq!(value(&count("modified")), Some(2.0));
    }

    #[test]
    fn a_missing_configuration_at_start_is_not_present_and_not_a_change() {
        let registry = prometheus::Registry::new();
        let mut t = Tracker::new("blastguard".into(), ClusterMetrics::register(&registry));
        t.apply(watcher::Event::Init);
        t.apply(watcher::Event::InitDone);
        let text = scrape(&registry);
        assert!(text.contains("blastguard_webhook_configuration_present{name=\"blastguard\"} 0"));
        assert!(text.contains(
            "blastguard_webhook_configuration_changes_total{change=\"deleted\",name=\"blastguard\"} 0"
        ));
    }
}
