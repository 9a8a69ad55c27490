//! Prometheus metrics of the webhook (docs/design.md#commands), in base units.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::cluster::metrics::ClusterMetrics;
use crate::engine::Reviewed;

/// Label value for requests that could not be judged.
pub const UNKNOWN: &str = "unknown";

/// Most distinct `kind` label values kept; further kinds count as `other`. The API
/// server only sends the kinds the webhook registers, but anyone who reaches the port
/// could invent kinds, and every label value is a new time series held forever.
const MAX_KIND_LABELS: usize = 64;

/// Buckets of the admission duration: a judgement takes tens of microseconds, a large
/// review with a signature check some milliseconds, and the API server gives up at
/// its timeout (at most 30s, usually a few).
const DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Why a request body never reached the engine, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unjudged {
    /// The body is not an AdmissionReview blastguard can judge; the label says why.
    Review(&'static str),
    /// The body exceeds the size limit.
    TooLarge,
    /// The body did not arrive in time.
    Timeout,
    /// The body arrived slower than the minimum rate.
    TooSlow,
    /// Other requests held all the memory for bodies.
    Busy,
    /// The client's connection or address already held its share of that memory.
    OverShare,
    /// The connection failed while the body was read.
    BodyError,
}

impl Unjudged {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Unjudged::Review(why) => why,
            Unjudged::TooLarge => "body_too_large",
            Unjudged::Timeout => "body_timeout",
            Unjudged::TooSlow => "body_too_slow",
            Unjudged::Busy => "server_busy",
            Unjudged::OverShare => "client_over_share",
            Unjudged::BodyError => "body_error",
        }
    }
}

/// A file the server reloads, as in the metric names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The policy file.
    Policy,
    /// The allowed_signers file.
    AllowedSigners,
    /// The serving certificate and key.
    TlsCert,
}

/// Every metric the server exports, in one registry of its own.
pub struct Metrics {
    registry: Registry,
    admission_requests: IntCounterVec,
    admission_duration: Histogram,
    approvals: IntCounterVec,
    policy_reloads: IntCounterVec,
    policy_last_reload_success: IntGauge,
    allowed_signers_reloads: IntCounterVec,
    tls_cert_reloads: IntCounterVec,
    tls_cert_not_after: IntGauge,
    allowed_signers_loaded: IntGauge,
    allowed_signers_entries: IntGauge,
    inflight: IntGauge,
    cluster_unavailable_decisions: IntCounterVec,
    /// Dry runs among the judged reviews, so a dashboard can tell `kubectl apply
    /// --dry-run=server` (an approver looking, `check --server`) from real changes.
    dry_runs: IntCounterVec,
    cluster: ClusterMetrics,
    server: ServerMetrics,
    kinds: Mutex<HashSet<String>>,
}

/// Registers the standard `process_*` series (resident memory, open and maximum file
/// descriptors, CPU seconds, start time, threads; read from /proc/self at each scrape),
/// so memory growth and descriptor leaks show on the same scrape as the webhook's own
/// metrics, under the names every Prometheus dashboard and alert already uses.
#[cfg(target_os = "linux")]
fn register_process_metrics(registry: &Registry) {
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("the process metric names are unique");
}

/// Elsewhere (the kubectl plugin on a Mac builds this module too) the prometheus crate
/// has no process collector: /proc is Linux's. The server is only run on Linux.
#[cfg(not(target_os = "linux"))]
fn register_process_metrics(_registry: &Registry) {}

/// Why the server closed a connection itself, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// An idle connection, closed to make room for a new one at the connection cap.
    ShedIdle,
    /// A new connection from an address that already holds its share of connections.
    PeerLimit,
    /// A client that did not read its responses within the write timeout.
    WriteTimeout,
    /// A connection that reached `--max-connection-age`, closed gracefully (HTTP/2
    /// GOAWAY, HTTP/1.1 `Connection: close`) so clients spread over replicas.
    MaxAge,
}

impl Closed {
    /// Every reason, so each series exists from the start.
    pub const ALL: [Closed; 4] = [
        Closed::ShedIdle,
        Closed::PeerLimit,
        Closed::WriteTimeout,
        Closed::MaxAge,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::ShedIdle => "shed_idle",
            Closed::PeerLimit => "peer_limit",
            Closed::WriteTimeout => "write_timeout",
            Closed::MaxAge => "max_age",
        }
    }
}

/// The metrics of the listeners and the request path's failures (src/server): open
/// connections, connections the server closed and why, panics caught. Clones share
/// the series.
#[derive(Clone)]
pub struct ServerMetrics {
    connections: IntGaugeVec,
    closed: IntCounterVec,
    panics: IntCounter,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics").finish_non_exhaustive()
    }
}

impl Default for ServerMetrics {
    /// Series registered nowhere: for tests.
    fn default() -> Self {
        Self::in_registry(&Registry::new())
    }
}

impl ServerMetrics {
    fn in_registry(registry: &Registry) -> Self {
        let connections = IntGaugeVec::new(
            Opts::new(
                "blastguard_connections",
                "Connections open now, by endpoint (webhook, admin).",
            ),
            &["endpoint"],
        )
        .expect("metric definitions are static and valid");
        let closed = IntCounterVec::new(
            Opts::new(
                "blastguard_connections_closed_total",
                "Connections the server closed itself, by endpoint and reason: shed_idle (idle, to make room at the connection cap), peer_limit (the address held its share of connections), write_timeout (the client did not read its responses), max_age (reached --max-connection-age, closed gracefully so clients spread over replicas).",
            ),
            &["endpoint", "reason"],
        )
        .expect("metric definitions are static and valid");
        let panics = IntCounter::new(
            "blastguard_panics_total",
            "Panics caught while answering a request: the request got a 500, the server kept serving. Any is a bug; please report it.",
        )
        .expect("metric definitions are static and valid");
        for c in [
            Box::new(connections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(closed.clone()),
            Box::new(panics.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        for endpoint in ["webhook", "admin"] {
            connections.with_label_values(&[endpoint]);
            for why in Closed::ALL {
                closed.with_label_values(&[endpoint, why.as_str()]);
            }
        }
        Self {
            connections,
            closed,
            panics,
        }
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn connection(&self, endpoint: &str) -> ConnectionGuard {
        let gauge = self.connections.with_label_values(&[endpoint]);
        gauge.inc();
        ConnectionGuard(gauge)
    }

    /// Counts a connection the server closed itself.
    pub fn closed(&self, endpoint: &str, why: Closed) {
        self.closed
            .with_label_values(&[endpoint, why.as_str()])
            .inc();
    }

    /// Counts a panic caught on the request path.
    pub fn panicked(&self) {
        self.panics.inc();
    }
}

/// Keeps a connection counted in `blastguard_connections` while alive.
#[derive(Debug)]
pub struct ConnectionGuard(IntGauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric; reload counters start at zero for both
    /// results so dashboards and alerts see the series before the first failure.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric definitions are static and valid");
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric definitions are static and valid");
            registry
                .register(Box::new(g.clone()))
                .expect("metric names are unique");
            g
        };
        let admission_requests = counter(
            "blastguard_admission_requests_total",
            "Admission reviews answered, by operation, kind, decision and reason.",
            &["operation", "kind", "decision", "reason"],
        );
        let approvals = counter(
            "blastguard_approvals_total",
            "Approvals checked for changes over a limit, by result.",
            &["result"],
        );
        let policy_reloads = counter(
            "blastguard_policy_reloads_total",
            "Loads of the policy file (at startup and on each change), by result.",
            &["result"],
        );
        let allowed_signers_reloads = counter(
            "blastguard_allowed_signers_reloads_total",
            "Loads of the allowed_signers file (at startup and on each change), by result.",
            &["result"],
        );
        let tls_cert_reloads = counter(
            "blastguard_tls_cert_reloads_total",
            "Loads of the serving certificate and key (at startup and on each change), by result.",
            &["result"],
        );
        for c in [&policy_reloads, &allowed_signers_reloads, &tls_cert_reloads] {
            for result in ["success", "failure"] {
                c.with_label_values(&[result]);
            }
        }
        // Which build answers: the version and, when CI or the Dockerfile sets
        // BLASTGUARD_COMMIT at build time, its commit (`unknown` otherwise), so a
        // rollout is visible on a dashboard.
        let build_info = IntGaugeVec::new(
            Opts::new(
                "blastguard_build_info",
                "Always 1; the labels name the running build (commit from BLASTGUARD_COMMIT at build time, else unknown).",
            ),
            &["version", "commit"],
        )
        .expect("metric definitions are static and valid");
        registry
            .register(Box::new(build_info.clone()))
            .expect("metric names are unique");
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("BLASTGUARD_COMMIT").unwrap_or("unknown"),
            ])
            .set(1);
        register_process_metrics(&registry);
        let admission_duration = Histogram::with_opts(
            HistogramOpts::new(
                "blastguard_admission_duration_seconds",
                "Time from receiving an admission request to having its answer, body read included.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
        )
        .expect("metric definitions are static and valid");
        registry
            .register(Box::new(admission_duration.clone()))
            .expect("metric names are unique");
        Self {
            admission_requests,
            admission_duration,
            approvals,
            policy_reloads,
            policy_last_reload_success: gauge(
                "blastguard_policy_last_reload_success",
                "Whether the last load of the policy file succeeded (1) or the last good policy is kept (0).",
            ),
            allowed_signers_reloads,
            tls_cert_reloads,
            tls_cert_not_after: gauge(
                "blastguard_tls_cert_not_after_seconds",
                "Expiry (notAfter, unix time) of the certificate being served.",
            ),
            // A missing or broken allowed_signers file makes every approval fail
            // while the webhook stays ready: these make it visible (alert
            // BlastguardNoApprovers).
            allowed_signers_loaded: gauge(
                "blastguard_allowed_signers_loaded",
                "Whether an allowed_signers file is loaded (1) or none is, so no approval can be valid (0).",
            ),
            allowed_signers_entries: gauge(
                "blastguard_allowed_signers_entries",
                "Key lines in the allowed_signers file in use (0 when none is loaded: nobody can approve).",
            ),
            inflight: gauge(
                "blastguard_inflight_requests",
                "Admission requests being handled now.",
            ),
            cluster_unavailable_decisions: {
                let c = counter(
                    "blastguard_cluster_unavailable_decisions_total",
                    "AI-assisted decisions made without cluster state they needed (the API server was slow or unreachable), by decision.",
                    &["decision"],
                );
                for decision in ["allow", "warn", "deny"] {
                    c.with_label_values(&[decision]);
                }
                c
            },
            dry_runs: {
                let c = counter(
                    "blastguard_admission_dry_runs_total",
                    "Admission reviews of dry-run requests answered (also counted in blastguard_admission_requests_total), by decision.",
                    &["decision"],
                );
                for decision in ["allow", "warn", "deny"] {
                    c.with_label_values(&[decision]);
                }
                c
            },
            cluster: ClusterMetrics::register(&registry),
            server: ServerMetrics::in_registry(&registry),
            kinds: Mutex::new(HashSet::new()),
            registry,
        }
    }

    /// Notes the allowed_signers file in use: `Some(key lines)` after a load, `None`
    /// while none is loaded. A failed reload keeps the last good file, and its count.
    pub fn set_allowed_signers(&self, entries: Option<usize>) {
        self.allowed_signers_loaded
            .set(i64::from(entries.is_some()));
        self.allowed_signers_entries
            .set(entries.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)));
    }

    /// Counts a review the engine answered: its decision when it was judged, else why
    /// it could not be.
    pub fn record_review(&self, reviewed: &Reviewed, elapsed: Duration) {
        match reviewed.judged() {
            Some(judged) => {
                let verdict = &judged.verdict;
                let kind = self.kind_label(&judged.summary.kind);
                self.admission_requests
                    .with_label_values(&[
                        judged.summary.operation.as_str(),
                        kind.as_ref(),
                        verdict.decision.as_str(),
                        verdict.reason.as_str(),
                    ])
                    .inc();
                if let Some(approval) = &verdict.findings.approval {
                    self.approvals
                        .with_label_values(&[approval.metric_label()])
                        .inc();
                }
                if judged.summary.dry_run {
                    self.dry_runs
                        .with_label_values(&[verdict.decision.as_str()])
                        .inc();
                }
                if verdict.findings.unavailable.is_some() {
                    self.cluster_unavailable_decisions
                        .with_label_values(&[verdict.decision.as_str()])
                        .inc();
                }
            }
            None => self.count_unjudged(Unjudged::Review(
                reviewed.error().map_or("malformed", |e| e.label()),
            )),
        }
        self.admission_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a request whose body never reached the engine.
    pub fn record_unjudged(&self, why: Unjudged, elapsed: Duration) {
        self.count_unjudged(why);
        self.admission_duration.observe(elapsed.as_secs_f64());
    }

    fn count_unjudged(&self, why: Unjudged) {
        self.admission_requests
            .with_label_values(&[UNKNOWN, UNKNOWN, "error", why.as_str()])
            .inc();
    }

    /// Counts one load of a reloaded file.
    pub fn record_reload(&self, what: Reloaded, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        match what {
            Reloaded::Policy => {
                self.policy_reloads.with_label_values(&[result]).inc();
                self.policy_last_reload_success.set(i64::from(ok));
            }
            Reloaded::AllowedSigners => self
                .allowed_signers_reloads
                .with_label_values(&[result])
                .inc(),
            Reloaded::TlsCert => self.tls_cert_reloads.with_label_values(&[result]).inc(),
        }
    }

    /// The metrics of the listeners and of panics on the request path.
    pub fn server(&self) -> ServerMetrics {
        self.server.clone()
    }

    /// The cluster-state metrics, to hand to the caches and writers.
    pub fn cluster(&self) -> ClusterMetrics {
        self.cluster.clone()
    }

    /// Sets the expiry of the certificate now served.
    pub fn set_tls_cert_not_after(&self, unix_seconds: i64) {
        self.tls_cert_not_after.set(unix_seconds);
    }

    /// Counts a request as in flight until the guard is dropped (also on panic or
    /// cancellation, so the gauge never drifts).
    pub fn inflight(&self) -> InflightGuard {
        self.inflight.inc();
        InflightGuard(self.inflight.clone())
    }

    /// The Prometheus text exposition of every metric.
    /// The registry, for metrics registered by the modules that own them (the
    /// approval inbox's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Encodes every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which the
        // definitions above cannot produce.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The `kind` label for a kind named in a request, bounded in number and shape.
    fn kind_label<'k>(&self, kind: &'k str) -> std::borrow::Cow<'k, str> {
        // The kinds blastguard judges are labels as they are, without the lock.
        if crate::kinds::built_in().iter().any(|k| k.kind == kind) {
            return std::borrow::Cow::Borrowed(kind);
        }
        std::borrow::Cow::Owned(self.other_kind_label(kind))
    }

    fn other_kind_label(&self, kind: &str) -> String {
        let plausible =
            !kind.is_empty() && kind.len() <= 63 && kind.bytes().all(|b| b.is_ascii_alphanumeric());
        if !plausible {
            return if kind.is_empty() { UNKNOWN } else { "invalid" }.to_string();
        }
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        if kinds.contains(kind) {
            return kind.to_string();
        }
        if kinds.len() < MAX_KIND_LABELS {
            kinds.insert(kind.to_string());
            return kind.to_string();
        }
        "other".to_string()
    }
}

/// Keeps a request counted in `blastguard_inflight_requests` while alive.
#[derive(Debug)]
pub struct InflightGuard(IntGauge);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_labels_are_bounded_in_shape_and_number() {
        let m = Metrics::new();
        assert_eq!(m.kind_label("Deployment"), "Deployment");
        assert_eq!(m.kind_label(""), UNKNOWN);
        assert_eq!(m.kind_label("Deploy\"ment"), "invalid");
        assert_eq!(m.kind_label(&"K".repeat(64)), "invalid");
        for i in 0..MAX_KIND_LABELS {
            m.kind_label(&format!("Kind{i}"));
        }
        assert_eq!(m.kind_label("OneTooMany"), "other");
        assert_eq!(m.kind_label("Deployment"), "Deployment");
    }

    #[test]
    fn inflight_guard_decrements_on_drop() {
        let m = Metrics::new();
        let a = m.inflight();
        let b = m.inflight();
        assert!(m.encode().contains("blastguard_inflight_requests 2"));
        drop(a);
        drop(b);
        assert!(m.encode().contains("blastguard_inflight_requests 0"));
    }

    #[test]
    fn reload_results_start_at_zero_and_the_gauge_follows_the_last_policy_load() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(text.contains("blastguard_tls_cert_reloads_total{result=\"failure\"} 0"));
        m.record_reload(Reloaded::Policy, true);
        assert!(
            m.encode()
                .contains("blastguard_policy_last_reload_success 1")
        );
        m.record_reload(Reloaded::Policy, false);
        let text = m.encode();
        assert!(text.contains("blastguard_policy_last_reload_success 0"));
        assert!(text.contains("blastguard_policy_reloads_total{result=\"failure\"} 1"));
        assert!(text.contains("blastguard_policy_reloads_total{result=\"success\"} 1"));
    }

    #[test]
    fn build_info_and_allowed_signers_gauges() {
        let m = Metrics::new();
        let text = m.encode();
        let commit = option_env!("BLASTGUARD_COMMIT").unwrap_or("unknown");
        assert!(
            text.contains(&format!(
                "blastguard_build_info{{commit=\"{commit}\",version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        // Nothing loaded yet: nobody can approve.
        assert!(text.contains("blastguard_allowed_signers_loaded 0"));
        assert!(text.contains("blastguard_allowed_signers_entries 0"));
        m.set_allowed_signers(Some(3));
        let text = m.encode();
        assert!(text.contains("blastguard_allowed_signers_loaded 1"));
        assert!(text.contains("blastguard_allowed_signers_entries 3"));
        m.set_allowed_signers(None);
        assert!(m.encode().contains("blastguard_allowed_signers_loaded 0"));
    }

    /// Issue 22 finding 7: dashboards could not tell dry runs (an approver looking,
    /// `check --server`) from real changes.
    #[test]
    fn dry_runs_are_counted_apart() {
        let m = Metrics::new();
        let engine = crate::engine::Engine::new(
            crate::policy::Policy::embedded(),
            std::sync::Arc::new(crate::approval::NoTrustedSigners),
        );
        let review = |dry_run: bool| {
            let deployment = serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "api", "namespace": "prod"},
                "spec": {"replicas": 40, "template": {"spec": {"containers": [{"name": "a", "image": "a:1"}]}}}
            });
            let req = crate::testing::Req::create("Deployment", "prod", deployment)
                .user("system:serviceaccount:ai-agents:claude");
            let req = if dry_run { req.dry_run() } else { req };
            String::from_utf8(req.body()).unwrap()
        };
        assert!(
            m.encode()
                .contains("blastguard_admission_dry_runs_total{decision=\"deny\"} 0")
        );
        for dry_run in [true, false, true] {
            let reviewed = engine.review(review(dry_run).as_bytes());
            m.record_review(&reviewed, Duration::ZERO);
        }
        let text = m.encode();
        assert!(
            text.contains("blastguard_admission_dry_runs_total{decision=\"deny\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "blastguard_admission_requests_total{decision=\"deny\",kind=\"Deployment\",operation=\"CREATE\",reason=\"over_limits\"} 3"
        ), "{text}");
    }
}
