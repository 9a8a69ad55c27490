//! The engine: AdmissionReview in, AdmissionReview out (DESIGN.md section 1).
//!
//! One engine serves the webhook, `check` and the kubectl plugin. It holds the current
//! policy (swapped atomically on reload), the change-set tracker and the approval
//! verifier; the stages it calls are pure.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use kube::core::admission::AdmissionResponse;

use crate::approval::{
    ApprovalContext, ApprovalOutcome, ApprovalSubject, ApprovalVerifier, InMemoryWorkloads,
    WorkloadAnnotations,
};
use crate::change::{Change, Operation, Workload};
use crate::policy::{KnownNamespaces, NamespaceLabels, Policy};
use crate::radius::Violation;
use crate::reach::{ChangeSetReach, Entry, InMemoryReach, Usage};
use crate::review::ReviewError;
use crate::verdict::{Findings, Reason, Verdict, decide};
use crate::{approval, provenance, radius, response, review};

/// The engine shared by every request.
pub struct Engine {
    policy: ArcSwap<Policy>,
    verifier: ArcSwap<Arc<dyn ApprovalVerifier>>,
    state: State,
}

/// Where the state that spans requests lives (DESIGN.md section 5): in process memory
/// without a cluster (`--dev`, `check`), in the cluster with one. The rules only ask
/// these traits.
#[derive(Clone)]
pub struct State {
    /// Change sets: namespaces and pods per change-id and per requester.
    pub reach: Arc<dyn ChangeSetReach>,
    /// The parent workload's annotations, for scale approvals.
    pub workloads: Arc<dyn WorkloadAnnotations>,
    /// Namespace labels, for `namespaceSelector`.
    pub namespaces: Arc<dyn NamespaceLabels>,
}

impl State {
    /// Everything in process memory; no namespace labels known.
    pub fn in_memory() -> Self {
        Self {
            reach: Arc::new(InMemoryReach::default()),
            workloads: Arc::new(InMemoryWorkloads::default()),
            namespaces: Arc::new(KnownNamespaces::default()),
        }
    }
}

/// The result of one review.
#[derive(Debug)]
pub struct Reviewed {
    /// The HTTP status to answer with: 200, or 400 for a body that is not a review.
    pub http_status: u16,
    /// The response body (an AdmissionReview, or a plain message for 400).
    pub body: Vec<u8>,
    /// The request uid, when it could be read.
    pub uid: Option<String>,
    /// The change and its verdict, when the review could be judged.
    pub judged: Option<(Change, Verdict)>,
    /// Why the review could not be judged.
    pub error: Option<ReviewError>,
}

impl Reviewed {
    /// Whether the API server would admit the request.
    pub fn allowed(&self) -> bool {
        self.judged
            .as_ref()
            .is_some_and(|(_, v)| v.decision.allowed())
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
    pub fn review(&self, body: &[u8]) -> Reviewed {
        let request = match review::decode(body) {
            Ok(r) => r,
            Err(rejected) => {
                let message = rejected.error.to_string();
                let error = Some(rejected.error);
                return match rejected.uid {
                    Some(uid) => Reviewed {
                        http_status: 200,
                        body: review::encode_rejection(&uid, &message),
                        uid: Some(uid),
                        judged: None,
                        error,
                    },
                    None => Reviewed {
                        http_status: 400,
                        body: message.into_bytes(),
                        uid: None,
                        judged: None,
                        error,
                    },
                };
            }
        };
        let base = AdmissionResponse::from(&request);
        let change = Change::from_request(request, &self.policy.load());
        let verdict = self.evaluate(&change, SystemTime::now(), Instant::now());
        let response = response::respond(base, &change, &verdict);
        Reviewed {
            http_status: 200,
            body: review::encode(response),
            uid: Some(change.uid.clone()),
            judged: Some((change, verdict)),
            error: None,
        }
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
            signal: provenance::detect(change, &policy.provenance),
            ..Findings::default()
        };
        if findings.signal.is_none() || change.operation == Operation::Connect {
            return finish(findings, None, 1, None);
        }
        let namespace = change.target.namespace.as_deref();
        // Cluster-scoped objects have no namespace labels; they match as "".
        let labels = match namespace {
            Some(ns) => self.state.namespaces.labels(ns),
            None => Some(Default::default()),
        };
        let Some(rule) = policy.rule_for_labels(namespace.unwrap_or(""), labels.as_ref()) else {
            return finish(findings, None, 1, None);
        };
        findings.rule = Some((rule.name.clone(), rule.mode));

        let mut radius = radius::measure(change);
        let entry = Entry {
            namespace,
            pods: radius.pods_affected,
        };
        let window = policy.change_set_window;
        let set_keys = change.change_set_keys();
        // Counted by change-id and by requester: the larger decides, so neither a
        // fresh change-id per object nor one shared id hides a change set's size.
        let usage = set_keys
            .iter()
            .map(|key| self.state.reach.usage_with(key, entry, window, instant))
            .fold(Usage::default(), |a, u| Usage {
                namespaces: a.namespaces.max(u.namespaces),
                pods: a.pods.max(u.pods),
            });
        radius.namespaces_in_change_set = namespace.map(|_| usage.namespaces);
        radius.pods_in_change_set = Some(usage.pods);
        findings.violations = radius::violations(&radius, &rule.limits);
        findings.radius = Some(radius);
        let measurable = !findings
            .violations
            .iter()
            .any(|v| matches!(v, Violation::Unmeasurable(_)));

        let mut payload = None;
        let mut digest = None;
        // An approval binds a measured change: one that cannot be measured has no
        // subject an approver could sign.
        if !findings.violations.is_empty() && measurable {
            match ApprovalSubject::of(change) {
                Ok(subject) => {
                    let parent;
                    let annotations = match change.approval_annotations() {
                        Some(own) => Some(own),
                        None => {
                            parent = self.state.workloads.annotations(&change.target);
                            parent.as_ref()
                        }
                    };
                    findings.approval = Some(self.verifier.load().verify(&ApprovalContext {
                        change,
                        subject: &subject,
                        annotations,
                        rule,
                        settings: &policy.approvals,
                        now,
                    }));
                    digest = subject.digest.clone();
                    payload = Some(subject.payload(now, policy.approvals.offered_ttl(), ""));
                }
                Err(e) => {
                    findings.approval = Some(ApprovalOutcome::Rejected {
                        reason: "digest_error",
                        detail: e.to_string(),
                    })
                }
            }
        }
        let verdict = finish(findings, payload, rule.required_approvals, digest);
        if verdict.decision.allowed() && !change.dry_run {
            for key in &set_keys {
                self.state.reach.record(key, entry, window, instant);
            }
        }
        verdict
    }

    /// Keeps the parent-workload view used by scale approvals current.
    fn observe_workload(&self, change: &Change) {
        if change.workload != Workload::Replicated || change.subresource.is_some() {
            return;
        }
        match change.operation {
            Operation::Create | Operation::Update => self
                .state
                .workloads
                .observe(&change.target, Some(&change.new_annotations)),
            Operation::Delete => self.state.workloads.observe(&change.target, None),
            Operation::Connect => {}
        }
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
        digest,
    }
}

#[cfg(test)]
mod tests;
