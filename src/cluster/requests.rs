//! The approval inbox in the cluster: `ApprovalRequest` objects (group
//! `blastguard.io`, the chart's CRD) in the release namespace, one per target,
//! operation and digest ([`crate::approval::request::record_name`]).
//!
//! - On a retry the engine reads the record by name, within the decision's time
//!   budget ([`ClusterRequests::find`]), and judges its payload and signatures with
//!   the verifier that judges annotations.
//! - A real denial is recorded off the decision's path: the engine queues it
//!   ([`ClusterRequests::record`], a bounded queue that drops when full) and one task
//!   creates or updates the record, within a bound per requester and in total.
//! - A sweep lists the records every `interval`: it exports
//!   `blastguard_approval_requests{state}` and the age of the oldest open request,
//!   marks requests past their payload's notAfter `Expired`, notifies each decision
//!   once (the replica whose status write wins notifies), and deletes records an hour
//!   after they expired.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::bridge::Bridge;
use super::change_sets::record::{GROUP, VERSION};
use crate::approval::ApprovalSubject;
use crate::approval::payload::rfc3339;
use crate::approval::request::{
    ApprovalRequests, Denied, Event, EventKind, Found, KIND, Notify, PLURAL, Recorded, RequestSpec,
    RequestState, RequestStatus,
};
use crate::budget;

/// An `ApprovalRequest` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRequest {
    /// `blastguard.io/v1alpha1`.
    pub api_version: String,
    /// `ApprovalRequest`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// What was asked for.
    pub spec: RequestSpec,
    /// What approvers did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RequestStatus>,
}

record_resource!(ApprovalRequest, KIND, PLURAL);

impl ApprovalRequest {
    /// A new record.
    pub fn new(name: &str, spec: RequestSpec) -> Self {
        Self {
            api_version: format!("{GROUP}/{VERSION}"),
            kind: KIND.to_string(),
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    /// The status, or the empty one of a record nobody acted on.
    pub fn status(&self) -> RequestStatus {
        self.status.clone().unwrap_or_default()
    }
}

/// Bounds of the inbox (`serve --requests-per-requester`, `--requests-max`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open requests one requester may have.
    pub per_requester: usize,
    /// Records in all.
    pub total: usize,
    /// Denials waiting to be recorded; more are dropped.
    pub queue: usize,
    /// How often the sweep runs.
    pub sweep: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_requester: 20,
            total: 500,
            queue: 256,
            sweep: Duration::from_secs(15),
        }
    }
}

/// How long a record stays after its payload expired, for people to see what
/// happened to it.
const RETENTION: Duration = Duration::from_secs(3600);

/// The inbox's metrics.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: IntGaugeVec,
    oldest_open: IntGauge,
    dropped: IntCounterVec,
}

impl RequestMetrics {
    /// Registers them in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let requests = IntGaugeVec::new(
            Opts::new(
                "blastguard_approval_requests",
                "ApprovalRequest records in the release namespace, by state (as of the last sweep).",
            ),
            &["state"],
        )
        .expect("a valid metric");
        let oldest_open = IntGauge::new(
            "blastguard_approval_request_oldest_open_seconds",
            "Seconds the oldest Pending or Approved request has waited (0: none waits).",
        )
        .expect("a valid metric");
        let dropped = IntCounterVec::new(
            Opts::new(
                "blastguard_approval_requests_dropped_total",
                "Denials not recorded as requests: the queue was full, or a bound was reached (requester, total), or the write failed.",
            ),
            &["reason"],
        )
        .expect("a valid metric");
        let _ = registry.register(Box::new(requests.clone()));
        let _ = registry.register(Box::new(oldest_open.clone()));
        let _ = registry.register(Box::new(dropped.clone()));
        for state in RequestState::ALL {
            requests.with_label_values(&[state.as_str()]);
        }
        for reason in [
            "queue_full",
            "requester_limit",
            "total_limit",
            "write_failed",
        ] {
            dropped.with_label_values(&[reason]);
        }
        Self {
            requests,
            oldest_open,
            dropped,
        }
    }
}

enum Job {
    Denied(Box<Denied>),
    Spent { name: String, uid: String },
}

/// [`ApprovalRequests`] over `ApprovalRequest` records.
pub struct ClusterRequests {
    api: Api<ApprovalRequest>,
    bridge: Arc<Bridge>,
    queue: mpsc::Sender<Job>,
    metrics: RequestMetrics,
}

impl ClusterRequests {
    /// Starts the recording task and the sweep on the current runtime.
    pub fn start(
        api: Api<ApprovalRequest>,
        namespace: String,
        bridge: Arc<Bridge>,
        limits: Limits,
        notifier: Option<Arc<dyn Notify>>,
        metrics: RequestMetrics,
    ) -> Arc<Self> {
        let (queue, jobs) = mpsc::channel(limits.queue.max(1));
        let writer = Writer {
            api: api.clone(),
            namespace,
            limits,
            notifier,
            metrics: metrics.clone(),
            counts: None,
        };
        tokio::spawn(writer.run(jobs));
        Arc::new(Self {
            api,
            bridge,
            queue,
            metrics,
        })
    }

    fn queue(&self, job: Job) {
        if self.queue.try_send(job).is_err() {
            self.metrics
                .dropped
                .with_label_values(&["queue_full"])
                .inc();
            tracing::warn!("approval-request queue full: a denial is not recorded");
        }
    }
}

impl ApprovalRequests for ClusterRequests {
    fn find(&self, subject: &ApprovalSubject) -> Found {
        let api = self.api.clone();
        let name = crate::approval::request::record_name(subject);
        let key = name.clone();
        let get = async move { api.get_opt(&key).await };
        match self.bridge.call(budget::deadline(), get) {
            Ok(Ok(Some(record))) => {
                let status = record.status();
                Found::Record(Box::new(Recorded {
                    name,
                    payload: record.spec.payload,
                    signatures: status.signatures,
                    state: status.state,
                    rejection: status.rejection,
                }))
            }
            Ok(Ok(None)) => Found::Nothing,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read an approval request");
                budget::note_unavailable("the approval requests".to_string());
                Found::Unknown(e.to_string())
            }
            Err(late) => {
                budget::note_unavailable("the approval requests".to_string());
                Found::Unknown(late.to_string())
            }
        }
    }

    fn record(&self, denied: Denied) {
        self.queue(Job::Denied(Box::new(denied)));
    }

    fn spent(&self, name: &str, uid: &str) {
        self.queue(Job::Spent {
            name: name.to_string(),
            uid: uid.to_string(),
        });
    }
}

/// Open records per requester and in all, as of a recent list.
struct Counts {
    at: Instant,
    total: usize,
    open: HashMap<String, usize>,
}

/// The task that writes records, one job at a time.
struct Writer {
    api: Api<ApprovalRequest>,
    namespace: String,
    limits: Limits,
    notifier: Option<Arc<dyn Notify>>,
    metrics: RequestMetrics,
    counts: Option<Counts>,
}

impl Writer {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut sweep = tokio::time::interval(self.limits.sweep);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(Job::Denied(denied)) => self.record(&denied).await,
                    Some(Job::Spent { name, uid }) => self.spend(&name, &uid).await,
                    None => return,
                },
                _ = sweep.tick() => self.sweep(SystemTime::now()).await,
            }
        }
    }

    fn notify(&self, kind: EventKind, name: &str, spec: &RequestSpec, status: &RequestStatus) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        let reason = status
            .rejection
            .as_ref()
            .map(|r| r.reason.as_str())
            .unwrap_or_default();
        notifier.send(Event::new(
            kind,
            name,
            &self.namespace,
            spec,
            &signed(spec, status),
            reason,
        ));
    }

    /// Creates the record of a denial, or counts a retry on the one there.
    async fn record(&mut self, denied: &Denied) {
        let name = denied.name();
        let existing = match self.api.get_opt(&name).await {
            Ok(existing) => existing,
            Err(e) => return self.failed(&name, &e),
        };
        match existing {
            Some(record) => self.retry(record, denied).await,
            None => {
                if let Some(full) = self.over_limits(&denied.requester).await {
                    self.metrics.dropped.with_label_values(&[full]).inc();
                    tracing::warn!(request = %name, requester = %denied.requester, bound = full, "approval request not recorded: the inbox is full");
                    return;
                }
                let record = ApprovalRequest::new(&name, denied.spec("webhook"));
                match self.api.create(&PostParams::default(), &record).await {
                    Ok(created) => {
                        if let Some(counts) = &mut self.counts {
                            counts.total += 1;
                            *counts.open.entry(denied.requester.clone()).or_default() += 1;
                        }
                        tracing::info!(request = %name, target = %created.spec.display, requester = %denied.requester, "approval request recorded");
                        self.open(created).await;
                    }
                    // Another replica recorded it a moment ago.
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        if let Ok(Some(record)) = self.api.get_opt(&name).await {
                            self.retry(record, denied).await;
                        }
                    }
                    Err(e) => self.failed(&name, &e),
                }
            }
        }
    }

    fn failed(&self, name: &str, error: &kube::Error) {
        self.metrics
            .dropped
            .with_label_values(&["write_failed"])
            .inc();
        tracing::warn!(request = %name, error = %error, "cannot write an approval request");
    }

    /// Sets a new (or renewed) record's status to Pending and notifies it.
    async fn open(&self, record: ApprovalRequest) {
        let name = record.metadata.name.clone().unwrap_or_default();
        let status = RequestStatus {
            state: RequestState::Pending,
            signed: format!("0/{}", record.spec.required_approvals),
            notified: vec![EventKind::New.as_str().to_string()],
            ..RequestStatus::default()
        };
        let mut next = record.clone();
        next.status = Some(status.clone());
        match self.write_status(&next).await {
            Ok(()) => self.notify(EventKind::New, &name, &record.spec, &status),
            Err(e) => {
                tracing::warn!(request = %name, error = %e, "cannot open an approval request")
            }
        }
    }

    /// A denial matching a record there: a renewed request when the old one can admit
    /// nothing any more (spent, expired), else one more attempt counted. A rejected
    /// request stays rejected.
    async fn retry(&self, record: ApprovalRequest, denied: &Denied) {
        let name = record.metadata.name.clone().unwrap_or_default();
        let spec = denied.spec("webhook");
        // A record at this name for another change (written by hand): it is not ours
        // to change, and it binds nothing the verifier would accept for this change.
        if record.spec.target != spec.target
            || record.spec.operation != spec.operation
            || record.spec.digest != spec.digest
            || record.spec.replicas != spec.replicas
        {
            tracing::warn!(request = %name, "an approval request of that name is for another change; not updated");
            return;
        }
        let status = record.status();
        let expired = expired(&record.spec, denied.at);
        let renew = matches!(status.state, RequestState::Spent | RequestState::Expired)
            || (status.state.open() && expired);
        if renew {
            let mut renewed = record.clone();
            renewed.spec = spec;
            renewed.spec.attempts = record.spec.attempts.saturating_add(1);
            renewed.status = None;
            match self
                .api
                .replace(&name, &PostParams::default(), &renewed)
                .await
            {
                Ok(replaced) => {
                    tracing::info!(request = %name, "approval request renewed");
                    self.open(replaced).await;
                }
                Err(e) => self.failed(&name, &e),
            }
            return;
        }
        let patch = serde_json::json!({"spec": {
            "attempts": record.spec.attempts.saturating_add(1),
            "lastSeen": rfc3339(denied.at),
        }});
        if let Err(e) = self
            .api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            self.failed(&name, &e);
        }
    }

    /// The bound a new record would pass, if any.
    async fn over_limits(&mut self, requester: &str) -> Option<&'static str> {
        let stale = self
            .counts
            .as_ref()
            .is_none_or(|c| c.at.elapsed() > Duration::from_secs(10));
        if stale && let Ok(list) = self.api.list(&ListParams::default()).await {
            let mut open: HashMap<String, usize> = HashMap::new();
            for record in &list.items {
                if record.status().state.open() {
                    *open.entry(record.spec.requester.clone()).or_default() += 1;
                }
            }
            self.counts = Some(Counts {
                at: Instant::now(),
                total: list.items.len(),
                open,
            });
        }
        let counts = self.counts.as_ref()?;
        if counts.total >= self.limits.total {
            return Some("total_limit");
        }
        if counts.open.get(requester).copied().unwrap_or(0) >= self.limits.per_requester {
            return Some("requester_limit");
        }
        None
    }

    /// Marks a record spent: it admitted its change.
    async fn spend(&self, name: &str, uid: &str) {
        for _ in 0..3 {
            let Ok(Some(mut record)) = self.api.get_opt(name).await else {
                return;
            };
            let mut status = record.status();
            status.state = RequestState::Spent;
            status.spent_at = rfc3339(SystemTime::now());
            // Spent before a sweep saw it approved: the approval is notified now.
            let approved = !status
                .notified
                .iter()
                .any(|n| n == EventKind::Approved.as_str());
            if approved {
                status
                    .notified
                    .push(EventKind::Approved.as_str().to_string());
            }
            record.status = Some(status.clone());
            match self.write_status(&record).await {
                Ok(()) => {
                    tracing::info!(request = %name, uid = %uid, "approval request spent");
                    if approved {
                        self.notify(EventKind::Approved, name, &record.spec, &status);
                    }
                    return;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    tracing::warn!(request = %name, error = %e, "cannot mark an approval request spent");
                    return;
                }
            }
        }
    }

    /// Replaces the status, with the record's resourceVersion as precondition.
    async fn write_status(&self, record: &ApprovalRequest) -> Result<(), kube::Error> {
        let name = record.metadata.name.clone().unwrap_or_default();
        self.api
            .replace_status(&name, &PostParams::default(), record)
            .await
            .map(|_| ())
    }

    /// Lists the records: metrics, expiry, notifications of decisions, collection.
    async fn sweep(&mut self, now: SystemTime) {
        let list = match self.api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list approval requests");
                return;
            }
        };
        let mut states: HashMap<RequestState, i64> = HashMap::new();
        let mut oldest = 0u64;
        let mut open: HashMap<String, usize> = HashMap::new();
        for record in &list.items {
            let name = record.metadata.name.clone().unwrap_or_default();
            let mut status = record.status();
            if status.state.open() {
                *open.entry(record.spec.requester.clone()).or_default() += 1;
                if let Some(created) = &record.metadata.creation_timestamp {
                    let created = SystemTime::UNIX_EPOCH
                        + Duration::from_secs(created.0.as_second().max(0) as u64);
                    oldest = oldest.max(now.duration_since(created).unwrap_or_default().as_secs());
                }
            }
            let new = !status.notified.iter().any(|n| n == EventKind::New.as_str());
            let event = if status.state.open() && expired(&record.spec, now) {
                status.state = RequestState::Expired;
                Some(EventKind::Expired)
            } else if new && status.state.open() {
                // Recorded by `kubectl blastguard request`, or opened by a replica
                // that could not write its status.
                Some(EventKind::New)
            } else {
                match status.state {
                    RequestState::Approved => Some(EventKind::Approved),
                    RequestState::Rejected => Some(EventKind::Rejected),
                    _ => None,
                }
            }
            .filter(|e| !status.notified.iter().any(|n| n == e.as_str()));
            *states.entry(status.state).or_default() += 1;
            if let Some(event) = event {
                status.notified.push(event.as_str().to_string());
                let mut next = record.clone();
                next.status = Some(status.clone());
                // The replica whose write wins notifies; a conflict means another
                // replica (or an approver) changed it first, and the next sweep
                // looks again.
                if self.write_status(&next).await.is_ok() {
                    self.notify(event, &name, &record.spec, &status);
                }
            }
            let gone = humantime::parse_rfc3339_weak(&record.spec.expires_at)
                .is_ok_and(|until| until + RETENTION < now);
            if gone {
                let _ = self.api.delete(&name, &DeleteParams::default()).await;
            }
        }
        for state in RequestState::ALL {
            self.metrics
                .requests
                .with_label_values(&[state.as_str()])
                .set(states.get(&state).copied().unwrap_or(0));
        }
        self.metrics
            .oldest_open
            .set(i64::try_from(oldest).unwrap_or(i64::MAX));
        self.counts = Some(Counts {
            at: Instant::now(),
            total: list.items.len(),
            open,
        });
    }
}

/// Whether the request's payload is past its notAfter.
fn expired(spec: &RequestSpec, now: SystemTime) -> bool {
    humantime::parse_rfc3339_weak(&spec.expires_at).is_ok_and(|until| until < now)
}

/// `n/N`.
pub fn signed(spec: &RequestSpec, status: &RequestStatus) -> String {
    format!("{}/{}", status.signatures.len(), spec.required_approvals)
}
