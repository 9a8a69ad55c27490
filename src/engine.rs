//! The engine: AdmissionReview in, AdmissionReview out (docs/design.md#request-path).
//!
//! One engine serves the webhook, `check` and the kubectl plugin. It holds the current
//! policy (swapped atomically on reload), the change-set tracker and the approval
//! verifier; the stages it calls are pure.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::approval::request::{ApprovalRequests, Denied, Found, Recorded, RequestState};
use crate::approval::spent::{InMemorySpent, Spend, Spending, SpentApprovals};
use crate::approval::{
    ApprovalContext, ApprovalOutcome, ApprovalPayload, ApprovalSubject, ApprovalVerifier,
    InMemoryWorkloads, WorkloadAnnotations,
};
use crate::change::{Change, Operation};
use crate::kinds::Workload;
use crate::policy::{KnownNamespaces, NamespaceLabels, OnClusterUnavailable, Policy};
use crate::provenance::{Facts, Signal};
use crate::radius::{Surroundings, Violation};
use crate::change_sets::{ChangeSets, Entry, InMemoryChangeSets};
use crate::sizes::{InMemorySizes, Sizes};
use crate::review::ReviewError;
use crate::verdict::{Findings, Reason, Unavailable, Verdict, decide};
use crate::{approval, provenance, radius, response, review};

/// The engine shared by every request.
pub struct Engine {
    policy: ArcSwap<Policy>,
    verifier: ArcSwap<Arc<dyn ApprovalVerifier>>,
    state: State,
    /// The approval inbox, when the server keeps one (docs/approvals.md, "The
    /// inbox"): denials are recorded there, and a retry finds its signed record.
    requests: std::sync::OnceLock<Arc<dyn ApprovalRequests>>,
}

/// Where the state that spans requests lives (docs/design.md#radius): in process memory
/// without a cluster (`--dev`, `check`), in the cluster with one. The rules only ask
/// these traits.
#[derive(Clone)]
pub struct State {
    /// Change sets: namespaces and pods per change-id and per requester.
    pub change_sets: Arc<dyn ChangeSets>,
    /// The parent workload's annotations, for scale approvals.
    pub workloads: Arc<dyn WorkloadAnnotations>,
    /// Current sizes a change's consequences depend on (an autoscaler's target, a
    /// Service's endpoints).
    pub sizes: Arc<dyn Sizes>,
    /// Namespace labels, for `namespaceSelector`.
    pub namespaces: Arc<dyn NamespaceLabels>,
    /// Approvals that admitted their change already (single use).
    pub spent: Arc<dyn SpentApprovals>,
}

impl State {
    /// Everything in process memory; no namespace labels known.
    pub fn in_memory() -> Self {
        Self {
            change_sets: Arc::new(InMemoryChangeSets::default()),
            workloads: Arc::new(InMemoryWorkloads::default()),
            sizes: Arc::new(InMemorySizes::default()),
            namespaces: Arc::new(KnownNamespaces::default()),
            spent: Arc::new(InMemorySpent::default()),
        }
    }
}

/// The result of one review: typed, so the server maps it to HTTP and the engine
/// knows nothing of status codes.
#[derive(Debug)]
pub enum Reviewed {
    /// Judged: the AdmissionReview to answer with, and what decided it.
    Judged(Box<Judged>),
    /// A review that cannot be judged but whose uid is known: answered with an
    /// AdmissionReview that refuses it (code 400), so the API server shows why.
    Rejected {
        /// The request's uid.
        uid: String,
        /// The AdmissionReview refusing it.
        body: Vec<u8>,
        /// Why it could not be judged.
        error: ReviewError,
    },
    /// Not a review at all: there is no uid to answer to.
    Unreadable {
        /// What made it unreadable, for the 400's message.
        error: ReviewError,
    },
}

/// A judged review.
#[derive(Debug)]
pub struct Judged {
    /// The request's uid.
    pub uid: String,
    /// The AdmissionReview to answer with.
    pub body: Vec<u8>,
    /// What the request was, for logs and metrics.
    pub summary: Summary,
    /// The decision and everything the rules found.
    pub verdict: Verdict,
    /// The normalized change; `None` on the fast path (not AI-assisted), where the
    /// objects are never parsed.
    pub change: Option<Change>,
}

/// What a request was, as logs and metrics name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The `operation` label.
    pub operation: Operation,
    /// The kind (the subresource's for a subresource request, e.g. `Scale`).
    pub kind: String,
    /// The namespace, if any.
    pub namespace: Option<String>,
    /// The object's name; empty for a CREATE with `generateName`.
    pub name: String,
    /// The subresource, if any.
    pub subresource: Option<String>,
    /// The requesting user.
    pub user: String,
    /// A dry run.
    pub dry_run: bool,
}

impl Reviewed {
    /// Whether the API server would admit the request.
    pub fn allowed(&self) -> bool {
        self.judged().is_some_and(|j| j.verdict.decision.allowed())
    }

    /// The judged review, if it was judged.
    pub fn judged(&self) -> Option<&Judged> {
        match self {
            Reviewed::Judged(j) => Some(j),
            _ => None,
        }
    }

    /// The request's uid, when it could be read.
    pub fn uid(&self) -> Option<&str> {
        match self {
            Reviewed::Judged(j) => Some(&j.uid),
            Reviewed::Rejected { uid, .. } => Some(uid),
            Reviewed::Unreadable { .. } => None,
        }
    }

    /// The AdmissionReview to answer with; `None` when there is no uid to answer to.
    pub fn body(&self) -> Option<&[u8]> {
        match self {
            Reviewed::Judged(j) => Some(&j.body),
            Reviewed::Rejected { body, .. } => Some(body),
            Reviewed::Unreadable { .. } => None,
        }
    }

    /// Why the review could not be judged.
    pub fn error(&self) -> Option<&ReviewError> {
        match self {
            Reviewed::Judged(_) => None,
            Reviewed::Rejected { error, .. } | Reviewed::Unreadable { error } => Some(error),
        }
    }
}

impl Engine {
    /// An engine over a policy and an approval verifier, keeping change sets and
    /// workload annotations in process memory.
    pub fn new(policy: Policy, verifier: Arc<dyn ApprovalVerifier>) -> Self {
        Self::with_state(policy, verifier, State::in_memory())
    }

    /// An engine with explicit sources of cross-request state.
    pub fn with_state(policy: Policy, verifier: Arc<dyn ApprovalVerifier>, state: State) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            verifier: ArcSwap::from_pointee(verifier),
            state,
            requests: std::sync::OnceLock::new(),
        }
    }

    /// Gives the engine an approval inbox; set once, before serving.
    pub fn set_requests(&self, requests: Arc<dyn ApprovalRequests>) {
        if self.requests.set(requests).is_err() {
            tracing::warn!("the approval inbox was already set; keeping the first");
        }
    }

    /// Replaces the approval verifier (after the allowed_signers file changed).
    pub fn set_verifier(&self, verifier: Arc<dyn ApprovalVerifier>) {
        self.verifier.store(Arc::new(verifier));
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Replaces the policy; requests in flight finish with the one they started with.
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// Judges a raw AdmissionReview body.
    ///
    /// A person's change (no AI signal in the requester, field manager or the objects'
    /// markers) is answered from the borrowed view alone: its objects are never
    /// parsed. Only an AI-assisted change is normalized into a [`Change`] and measured.
    pub fn review(&self, body: &[u8]) -> Reviewed {
        let view = match stage::read(|| review::decode(body)) {
            Ok(view) => view,
            Err(rejected) => return reject(rejected.uid, rejected.error),
        };
        let uid = view.uid.to_string();
        let policy = self.policy.load();
        // A scale request is about its parent workload: count it under the parent's kind.
        let kind = match view.subresource() {
            Some("scale") => {
                crate::change::parent_of(&view.resource.group, &view.resource.resource, &policy)
                    .unwrap_or_else(|| view.kind.kind.to_string())
            }
            _ => view.kind.kind.to_string(),
        };
        let summary = Summary {
            operation: view.operation,
            kind,
            namespace: view.namespace().map(str::to_string),
            name: view.name.to_string(),
            subresource: view.subresource().map(str::to_string),
            user: view
                .user_info
                .username
                .as_deref()
                .unwrap_or_default()
                .to_string(),
            dry_run: view.dry_run.unwrap_or(false),
        };
        let (new, old) = view.annotations();
        let signal = stage::provenance(|| {
            provenance::detect(&Facts::of_view(&view, new, old), &policy.provenance)
        });
        if signal.is_none() {
            let verdict = finish(Findings::default(), None, 1, None);
            let body = stage::response(|| response::write_review(&uid, None, &verdict));
            return Reviewed::Judged(Box::new(Judged {
                uid,
                body,
                summary,
                verdict,
                change: None,
            }));
        }
        let change = match stage::change(|| Change::from_view(&view, &policy)) {
            Ok(change) => change,
            Err(error) => return reject(Some(uid), error),
        };
        let verdict = self.evaluate(&change, SystemTime::now(), Instant::now());
        let body = stage::response(|| response::write_review(&uid, Some(&change), &verdict));
        Reviewed::Judged(Box::new(Judged {
            uid,
            body,
            summary,
            verdict,
            change: Some(change),
        }))
    }

    /// Evaluates one change at the given time. An admitted change that is not a dry
    /// run is recorded: its namespace in its change set, its approval annotations for
    /// later scale requests.
    pub fn evaluate(&self, change: &Change, now: SystemTime, instant: Instant) -> Verdict {
        let verdict = self.judge(change, now, instant);
        if verdict.decision.allowed() && !change.dry_run {
            self.observe_workload(change);
        }
        verdict
    }

    fn judge(&self, change: &Change, now: SystemTime, instant: Instant) -> Verdict {
        let policy = self.policy.load();
        let mut findings = Findings {
            signal: stage::provenance(|| {
                provenance::detect(&Facts::of_change(change), &policy.provenance)
            }),
            ..Findings::default()
        };
        if findings.signal.is_none() || change.operation == Operation::Connect {
            return finish(findings, None, 1, None);
        }
        // One time budget for every API-server call of this decision (cluster state
        // only; in memory nothing waits), and a note of what could not be read in it.
        let scope = crate::budget::Scope::begin();
        let namespace = change.namespace.as_deref();
        // Cluster-scoped objects have no namespace labels; they match as "".
        let labels = match namespace {
            Some(ns) => self.state.namespaces.labels(ns),
            None => Some(Default::default()),
        };
        let Some(rule) = policy.rule_for_labels(namespace.unwrap_or(""), labels.as_ref()) else {
            return finish(findings, None, 1, None);
        };
        findings.rule = Some((rule.name.clone(), rule.mode));

        let window = policy.change_set_window;
        let (radius, reservation) = stage::radius(|| {
            let mut radius = radius::measure(change, &self.surroundings(change, now, window));
            let entry = Entry {
                namespace,
                pods: radius.pods_affected,
                dry_run: change.dry_run,
            };
            // Counted by change-id and by requester: the larger decides, so neither a
            // fresh change-id per object nor one shared id hides a change set's size.
            // Reserved, not just read: decisions judged at the same time each count
            // the others, so together they never pass the budget.
            let reservation =
                self.state
                    .change_sets
                    .reserve(&change.change_set_keys(), entry, window, instant);
            let usage = reservation.usage();
            // A set only this replica counts (a cap on shared records bit) binds no
            // other replica: what rests on it is held (docs/security.md).
            findings.capped = reservation.capped().cloned();
            radius.namespaces_in_change_set = namespace.map(|_| usage.namespaces);
            radius.pods_in_change_set = Some(usage.pods);
            findings.violations = radius::violations(&radius, &rule.limits);
            (radius, reservation)
        });
        // Without this, an agent whose only signal is its marker could drop the marker
        // in an update that replaces no pod, and make every later change human.
        if let Some(Signal::StickyAnnotation { key, .. }) = &findings.signal {
            findings
                .violations
                .push(Violation::MarkerRemoved { key: key.clone() });
        }
        findings.radius = Some(radius);
        let measurable = !findings
            .violations
            .iter()
            .any(|v| matches!(v, Violation::Unmeasurable(_)));

        let mut payload = None;
        let mut digest = None;
        // The inbox record this change was judged on, if any.
        let mut inbox: Option<String> = None;
        let mut subject_of_denial = None;
        // A valid approval, and the payload a denial offers instead once it is spent.
        let mut approved: Option<(ApprovalPayload, ApprovalPayload)> = None;
        // An approval binds a measured change: one that cannot be measured has no
        // subject an approver could sign.
        if !findings.violations.is_empty() && measurable {
            match stage::digest(|| {
                ApprovalSubject::of_without(change, &policy.approvals.unsigned_labels)
            }) {
                Ok(subject) => stage::payload(|| {
                    let parent;
                    let annotations = match change.approval_annotations() {
                        Some(own) => Some(own),
                        None => {
                            parent = self.state.workloads.annotations(&change.target);
                            parent.as_ref()
                        }
                    };
                    let verifier = self.verifier.load();
                    let verify = |annotations| {
                        verifier.verify(&ApprovalContext {
                            change,
                            subject: &subject,
                            annotations,
                            rule,
                            settings: &policy.approvals,
                            now,
                        })
                    };
                    let mut outcome = verify(annotations);
                    // Annotations first (the GitOps path); without them, the inbox's
                    // record of exactly this change, judged by the same verifier as
                    // if its payload and signatures were annotations.
                    let recorded = match (&outcome, self.requests.get()) {
                        (ApprovalOutcome::Missing, Some(requests)) => match requests.find(&subject) {
                            Found::Record(record) => Some(*record),
                            Found::Nothing | Found::Unknown(_) => None,
                        },
                        _ => None,
                    };
                    let inbox_annotations = recorded.as_ref().map(Recorded::annotations);
                    if let Some(record) = &recorded {
                        outcome = match (record.state, &inbox_annotations) {
                            (RequestState::Rejected, _) => ApprovalOutcome::Rejected {
                                reason: approval::reason::REQUEST_REJECTED,
                                detail: rejected_detail(record),
                            },
                            (_, Some(recorded)) if !record.signatures.is_empty() => {
                                verify(Some(recorded))
                            }
                            _ => ApprovalOutcome::Missing,
                        };
                    }
                    inbox = recorded.map(|r| r.name);
                    let annotations = inbox_annotations.as_ref().or(annotations);
                    digest = subject.digest.clone();
                    let pods = findings.radius.as_ref().map(|r| r.pods_affected);
                    let fresh = subject
                        .payload(now, policy.approvals.offered_ttl(), "")
                        .with_summary(approval::summary::of_change(change, pods));
                    let valid = matches!(outcome, ApprovalOutcome::Valid { .. });
                    let waits = inbox.is_some() && outcome == ApprovalOutcome::Missing;
                    let insufficient = approval::insufficient(&outcome);
                    // The payload the approvers signed, parsed once and only when one
                    // of the three uses below needs it (never on a plain denial).
                    let mut signed = (valid || waits || insufficient)
                        .then(|| annotations.and_then(|a| a.get(crate::annotations::APPROVAL)))
                        .flatten()
                        .and_then(|text| ApprovalPayload::parse(text).ok());
                    if valid {
                        approved = signed.take().map(|valid| (valid, fresh.clone()));
                    }
                    // A waiting record's payload is the one its approvers sign, so
                    // the denial repeats it while it is valid.
                    let waiting = waits.then(|| signed.clone()).flatten().filter(|p| {
                        approval::verifier::binds_to(&subject, p).is_ok()
                            && p.window().is_ok_and(|(_, until)| until > now)
                    });
                    // An approval that is valid but short of approvers is collected
                    // further, not restarted: the next approver must sign the payload
                    // the first one signed, so the denial repeats it instead of
                    // offering one with new times.
                    payload = insufficient
                        .then_some(signed)
                        .flatten()
                        .or(waiting)
                        .or(Some(fresh));
                    findings.approval = Some(outcome);
                    subject_of_denial = Some(subject);
                }),
                Err(e) => {
                    findings.approval = Some(ApprovalOutcome::Rejected {
                        reason: "digest_error",
                        detail: e.to_string(),
                    })
                }
            }
        }
        findings.unavailable = scope.unavailable().map(|what| Unavailable {
            what,
            deny: policy.document.spec.on_cluster_unavailable == OnClusterUnavailable::Deny,
        });
        let mut verdict = finish(findings, payload, rule.required_approvals, digest);
        verdict.approver_groups.clone_from(&rule.approvers);
        // A GitOps controller restoring a signed state neither needs an unspent
        // approval nor spends it (approval::restores, docs/gitops.md).
        if verdict.reason == Reason::Approved
            && !approval::restores(change, &policy.approvals)
            && let Some((approval, fresh)) = approved
            && let Some(refusal) = self.spend(change, &approval, now)
        {
            verdict.findings.approval = Some(refusal);
            let (decision, reason) = decide(&verdict.findings);
            verdict.decision = decision;
            verdict.reason = reason;
            verdict.payload = (reason == Reason::OverLimits).then_some(fresh);
        }
        if verdict.decision.allowed() && !change.dry_run {
            // Counted for good only once the cluster shows the change: a review posted
            // by anyone but the API server never happens there.
            reservation.confirm_when_seen(change.sighting.clone());
        } else {
            reservation.release();
        }
        if let Some(requests) = self.requests.get()
            && !change.dry_run
        {
            if verdict.reason == Reason::Approved
                && let Some(name) = &inbox
            {
                requests.spent(name, &change.uid);
            }
            if verdict.reason == Reason::OverLimits
                && let (Some(offered), Some(subject)) = (&verdict.payload, subject_of_denial)
            {
                requests.record(denial(change, subject, offered, rule, &verdict, now));
            }
        }
        verdict
    }

    /// Spends the approval a change is admitted on (a dry run only asks whether it
    /// was spent). `Some` is why the change is not admitted on it after all.
    fn spend(
        &self,
        change: &Change,
        approval: &ApprovalPayload,
        now: SystemTime,
    ) -> Option<ApprovalOutcome> {
        let spending = if change.dry_run {
            self.state
                .spent
                .is_spent(&crate::approval::spent::key(approval), now)
        } else {
            let not_after = approval.window().map_or(now, |(_, until)| until);
            let spend = Spend::of(approval, not_after, &change.requester.username, &change.uid);
            self.state.spent.spend(&spend, now)
        };
        match spending {
            Spending::Spent | Spending::Unspent => None,
            Spending::AlreadySpent => Some(ApprovalOutcome::Rejected {
                reason: approval::reason::SPENT,
                detail: "this approval has admitted its change once already, and an approval admits its change once: a new change (or the same change again, after a rollback) needs a new approval".into(),
            }),
            Spending::Unknown(why) => Some(ApprovalOutcome::Rejected {
                reason: approval::reason::SPEND_UNAVAILABLE,
                detail: format!(
                    "the approval could not be recorded as spent, so it is not used: {why}"
                ),
            }),
        }
    }

    /// The sizes this change's consequences depend on, read from the state: an
    /// autoscaler's target's replicas, a rewired Service's endpoints.
    fn surroundings(&self, change: &Change, now: SystemTime, window: Duration) -> Surroundings {
        let mut around = Surroundings::at(now, window);
        let motion = &change.motion;
        if let Some(hpa) = &motion.autoscaler {
            let target = crate::change::Target {
                group: hpa.target.group.clone(),
                kind: hpa.target.kind.clone(),
                namespace: change.namespace.clone(),
                name: hpa.target.name.clone(),
            };
            around.target_replicas = Some(self.state.sizes.replicas(&target));
        }
        if change.workload == Workload::Service
            && (motion.service_rewired || motion.owners_changed)
            && let Some(namespace) = change.namespace.as_deref()
        {
            around.endpoints = Some(self.state.sizes.endpoints(namespace, &change.target.name));
        }
        around
    }

    /// Keeps the parent-workload view used by scale approvals, and the sizes an
    /// autoscaler's target is measured by, current.
    fn observe_workload(&self, change: &Change) {
        if change.workload != Workload::Replicated {
            return;
        }
        if change.is_scale() {
            self.state.sizes.observe(&change.target, change.new_replicas);
            return;
        }
        if change.subresource.is_some() {
            return;
        }
        match change.operation {
            Operation::Create | Operation::Update => {
                self.state
                    .workloads
                    .observe(&change.target, Some(&change.new_annotations));
                self.state.sizes.observe(&change.target, change.new_replicas);
            }
            Operation::Delete => {
                self.state.workloads.observe(&change.target, None);
                self.state.sizes.observe(&change.target, None);
            }
            Operation::Connect => {}
        }
    }
}

/// Why a rejected inbox record admits nothing, for the denial.
fn rejected_detail(record: &Recorded) -> String {
    let (by, why) = record
        .rejection
        .as_ref()
        .map_or(("an approver", ""), |r| (r.by.as_str(), r.reason.as_str()));
    format!(
        "ApprovalRequest {} was rejected by {by}{}{why}: a rejected request is never admitted; change the object to ask anew",
        record.name,
        if why.is_empty() { "" } else { ": " }
    )
}

/// The inbox record of a real denial that an approval could lift.
fn denial(
    change: &Change,
    subject: ApprovalSubject,
    offered: &ApprovalPayload,
    rule: &crate::policy::Rule,
    verdict: &Verdict,
    now: SystemTime,
) -> Denied {
    let object = match subject.operation {
        approval::ApprovalOperation::Apply => change.object.as_ref(),
        approval::ApprovalOperation::Delete => change.old_object.as_ref(),
        approval::ApprovalOperation::Scale => None,
    };
    Denied {
        subject,
        payload: offered.clone(),
        requester: change.requester.username.clone(),
        rule: rule.name.clone(),
        required_approvals: rule.required_approvals,
        approvers: rule.approvers.clone(),
        pods_affected: verdict.findings.radius.as_ref().map(|r| r.pods_affected),
        exceeded: verdict
            .findings
            .violations
            .iter()
            .map(ToString::to_string)
            .collect(),
        object: object.map(|o| o.text().to_string()),
        at: now,
    }
}

/// The answer to a review that cannot be judged.
fn reject(uid: Option<String>, error: ReviewError) -> Reviewed {
    match uid {
        Some(uid) => Reviewed::Rejected {
            body: review::encode_rejection(&uid, &error.to_string()),
            uid,
            error,
        },
        None => Reviewed::Unreadable { error },
    }
}

/// A named frame around each stage of a decision, never inlined, so that
/// `valgrind --tool=callgrind` counts each stage's instructions on its own
/// (scripts/bench.sh, BENCHMARKS.md). Each is one call, nothing more.
mod stage {
    #[inline(never)]
    pub(super) fn read<T>(f: impl FnOnce() -> T) -> T {
        f()
    }
    #[inline(never)]
    pub(super) fn provenance<T>(f: impl FnOnce() -> T) -> T {
        f()
    }
    #[inline(never)]
    pub(super) fn change<T>(f: impl FnOnce() -> T) -> T {
        f()
    }
    #[inline(never)]
    pub(super) fn radius<T>(f: impl FnOnce() -> T) -> T {
        f()
    }
    #[inline(never)]
    pub(super) fn digest<T>(f: impl FnOnce() -> T) -> T {
        f()
    }
    #[inline(never)]
    pub(super) fn payload<T>(f: impl FnOnce() -> T) -> T {
        f()
    }
    #[inline(never)]
    pub(super) fn response<T>(f: impl FnOnce() -> T) -> T {
        f()
    }
}

fn finish(
    findings: Findings,
    payload: Option<approval::ApprovalPayload>,
    required_approvals: u32,
    digest: Option<String>,
) -> Verdict {
    let (decision, reason) = decide(&findings);
    // A payload to sign only helps where an approval would lift the decision.
    let payload = payload.filter(|_| reason == Reason::OverLimits);
    Verdict {
        decision,
        reason,
        findings,
        payload,
        required_approvals,
        approver_groups: Vec::new(),
        digest,
    }
}

#[cfg(test)]
mod tests;
