//! The approval inbox (docs/approvals.md, "The inbox"): a change denied for want of an
//! approval waits in the cluster as an `ApprovalRequest` record; approvers list,
//! inspect and sign it there, and the requester just retries.
//!
//! This module is the pure part: what a record holds, its name, and how a record is
//! judged. The record carries signatures, never trust: on the retry the webhook hands
//! the record's payload and signatures to the same [`super::ApprovalVerifier`] that
//! judges the annotations ([`annotations_of`]), so an identity that can write records
//! can delay a change, never admit one. The cluster side is `cluster::requests`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::digest::object_digest;
use super::payload::ApprovalTarget;
use super::verifier::binds_to;
use super::{ApprovalOperation, ApprovalPayload, ApprovalSubject};
use crate::annotations::{APPROVAL, APPROVAL_SIGNATURE};
use crate::policy::ApproverTerm;

/// The kind of the record.
pub const KIND: &str = "ApprovalRequest";
/// The resource (plural).
pub const PLURAL: &str = "approvalrequests";
/// Most signatures a record may carry: beyond it, the verifier refuses it anyway
/// (`too_large`), so the tools refuse to add more.
pub const MAX_SIGNATURES: usize = 20;

/// Where a request stands. Only [`RequestState::Rejected`] and
/// [`RequestState::Spent`] change what the webhook does, and both only deny: an
/// `Approved` state admits nothing by itself, the signatures do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestState {
    /// Waiting for signatures.
    #[default]
    Pending,
    /// Signed by as many approvers as the rule requires (as the approver's tool
    /// counted; the webhook verifies every signature on the retry).
    Approved,
    /// Closed by an approver: it is never admitted.
    Rejected,
    /// It admitted its change once (single use).
    Spent,
    /// Its payload's `notAfter` passed before it admitted anything.
    Expired,
}

impl RequestState {
    /// Every state, for metrics that start each series at zero.
    pub const ALL: [RequestState; 5] = [
        RequestState::Pending,
        RequestState::Approved,
        RequestState::Rejected,
        RequestState::Spent,
        RequestState::Expired,
    ];

    /// The name, as in the record and the `state` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "Pending",
            RequestState::Approved => "Approved",
            RequestState::Rejected => "Rejected",
            RequestState::Spent => "Spent",
            RequestState::Expired => "Expired",
        }
    }

    /// Whether it still waits for approvers.
    pub fn open(self) -> bool {
        matches!(self, RequestState::Pending | RequestState::Approved)
    }
}

/// What was asked for: written by the webhook (or `kubectl blastguard request`), read
/// by approvers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestSpec {
    /// `Kind namespace/name`, for people and printer columns.
    pub display: String,
    /// The object.
    pub target: RequestTarget,
    /// `apply`, `delete` or `scale`.
    pub operation: String,
    /// The digest of the requested object (apply, delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The replica count requested (scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    /// The exact payload to sign (compact JSON, as in the `blastguard.io/approval`
    /// annotation).
    pub payload: String,
    /// One human line of what the change does.
    #[serde(default)]
    pub summary: String,
    /// The requesting user, as the API server named it.
    #[serde(default)]
    pub requester: String,
    /// The policy rule that judged the change.
    #[serde(default)]
    pub rule: String,
    /// Distinct approvers the rule requires.
    #[serde(default)]
    pub required_approvals: u32,
    /// Signers the rule asks of approver groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<ApproverTerm>,
    /// Pods the change affects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_affected: Option<u64>,
    /// The limits it exceeds, one sentence each.
    #[serde(default)]
    pub exceeded: Vec<String>,
    /// The requested object as the decision read it (what the digest binds: the
    /// spec and the labels). Absent for scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    /// The payload's notAfter: the request expires with it (RFC 3339).
    pub expires_at: String,
    /// Who wrote it: `webhook` (a denied request) or `plugin` (`request -f`).
    #[serde(default)]
    pub source: String,
    /// Denied requests that matched it.
    #[serde(default)]
    pub attempts: u64,
    /// The last of them (RFC 3339).
    #[serde(default)]
    pub last_seen: String,
}

/// The object of a request, as in the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTarget {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace (empty for cluster-scoped objects).
    #[serde(default)]
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

/// What approvers did: the status subresource, which AI identities may not write.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    /// Where it stands.
    #[serde(default)]
    pub state: RequestState,
    /// Armored SSH signatures over `spec.payload`, one per approver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<String>,
    /// Who signed, as their tools named them (informative; the webhook trusts
    /// allowed_signers, never this list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signed_by: Vec<String>,
    /// `n/N`: signatures and the approvers required, for printer columns.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signed: String,
    /// Who rejected it, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// When it admitted its change (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub spent_at: String,
    /// The events already notified (`new`, `approved`, `rejected`, `expired`), so
    /// that one replica notifies each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notified: Vec<String>,
}

/// A rejection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The rejecting user.
    #[serde(default)]
    pub by: String,
    /// Their reason.
    #[serde(default)]
    pub reason: String,
    /// When (RFC 3339).
    #[serde(default)]
    pub at: String,
}

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A denied change now waits for approvers.
    New,
    /// It is signed by as many approvers as its rule requires.
    Approved,
    /// An approver rejected it.
    Rejected,
    /// It expired unapproved.
    Expired,
}

impl EventKind {
    /// Every kind, for metrics that start each series at zero.
    pub const ALL: [EventKind; 4] = [
        EventKind::New,
        EventKind::Approved,
        EventKind::Rejected,
        EventKind::Expired,
    ];

    /// The name, as in the JSON body and the `event` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::New => "new",
            EventKind::Approved => "approved",
            EventKind::Rejected => "rejected",
            EventKind::Expired => "expired",
        }
    }
}

/// One notification: the JSON body posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The line chat tools show (Slack's `text`).
    pub text: String,
    /// What happened.
    pub event: EventKind,
    /// The `ApprovalRequest`'s name.
    pub request: String,
    /// Its namespace (the release's).
    pub namespace: String,
    /// `Kind namespace/name`.
    pub target: String,
    /// `apply`, `delete` or `scale`.
    pub operation: String,
    /// Who asked.
    pub requester: String,
    /// The rule that judged it.
    pub rule: String,
    /// What the change does.
    pub summary: String,
    /// `n/N` signatures.
    pub signed: String,
    /// The rejection's reason, when rejected.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl Event {
    /// An event about a request, its `text` written from the rest.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        event: EventKind,
        request: &str,
        namespace: &str,
        spec: &RequestSpec,
        signed: &str,
        reason: &str,
    ) -> Self {
        let what = match event {
            EventKind::New => "waits for approval",
            EventKind::Approved => "is approved: the requester may retry",
            EventKind::Rejected => "was rejected",
            EventKind::Expired => "expired unapproved",
        };
        let mut text = format!(
            "blastguard: {} {} of {} by {} {what} (rule {}, {signed} signed)",
            request, spec.operation, spec.display, spec.requester, spec.rule
        );
        if !spec.summary.is_empty() {
            text.push_str(&format!(": {}", spec.summary));
        }
        if !reason.is_empty() {
            text.push_str(&format!(" (reason: {reason})"));
        }
        if event == EventKind::New {
            text.push_str(&format!(
                "\nReview: kubectl blastguard show {request} --release-namespace {namespace}"
            ));
        }
        Self {
            text,
            event,
            request: request.to_string(),
            namespace: namespace.to_string(),
            target: spec.display.clone(),
            operation: spec.operation.clone(),
            requester: spec.requester.clone(),
            rule: spec.rule.clone(),
            summary: spec.summary.clone(),
            signed: signed.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Where the inbox's events go (`serve --notify-url`: the server's notifier). Sending
/// never waits.
pub trait Notify: Send + Sync {
    /// Queues one event.
    fn send(&self, event: Event);
}

/// The record name of a subject: readable (`deployment-prod-api-…`) and unique per
/// target, operation and digest (or replica count), so a retry finds the record and
/// never makes a second one.
pub fn record_name(subject: &ApprovalSubject) -> String {
    let t = &subject.target;
    let identity = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n{}",
        subject.operation.as_str(),
        t.group,
        t.kind,
        t.namespace,
        t.name,
        subject.digest.as_deref().unwrap_or_default(),
        subject.replicas.map(|r| r.to_string()).unwrap_or_default()
    );
    let hash = hex::encode(Sha256::digest(identity.as_bytes()));
    let mut readable = String::new();
    for part in [
        t.kind.as_str(),
        t.namespace.as_str(),
        t.name.as_str(),
        subject.operation.as_str(),
    ] {
        if part.is_empty() {
            continue;
        }
        if !readable.is_empty() {
            readable.push('-');
        }
        readable.extend(part.chars().map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        }));
    }
    let readable: String = readable.chars().take(40).collect();
    let readable = readable.trim_matches('-');
    format!("{readable}-{}", hash.get(..16).unwrap_or(&hash))
}

/// A denial the webhook records: everything a request's spec needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Denied {
    /// What it must be approved as.
    pub subject: ApprovalSubject,
    /// The payload the denial offered.
    pub payload: ApprovalPayload,
    /// The requesting user.
    pub requester: String,
    /// The rule.
    pub rule: String,
    /// Its requiredApprovals.
    pub required_approvals: u32,
    /// Its approver-group terms.
    pub approvers: Vec<ApproverTerm>,
    /// Pods affected.
    pub pods_affected: Option<u64>,
    /// The limits exceeded.
    pub exceeded: Vec<String>,
    /// The requested object as the decision kept it (JSON text).
    pub object: Option<String>,
    /// When.
    pub at: SystemTime,
}

impl Denied {
    /// The record's name.
    pub fn name(&self) -> String {
        record_name(&self.subject)
    }

    /// The spec of a new record for this denial.
    pub fn spec(&self, source: &str) -> RequestSpec {
        let t = &self.subject.target;
        RequestSpec {
            display: display(t),
            target: RequestTarget {
                group: t.group.clone(),
                kind: t.kind.clone(),
                namespace: t.namespace.clone(),
                name: t.name.clone(),
            },
            operation: self.subject.operation.as_str().to_string(),
            digest: self.subject.digest.clone(),
            replicas: self.subject.replicas,
            payload: self.payload.to_json(),
            summary: self.payload.summary.clone(),
            requester: self.requester.clone(),
            rule: self.rule.clone(),
            required_approvals: self.required_approvals,
            approvers: self.approvers.clone(),
            pods_affected: self.pods_affected,
            exceeded: self.exceeded.clone(),
            object: self
                .object
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            expires_at: self.payload.not_after.clone(),
            source: source.to_string(),
            attempts: 1,
            last_seen: super::payload::rfc3339(self.at),
        }
    }
}

/// `Kind namespace/name` (or `Kind name` for a cluster-scoped object).
pub fn display(target: &ApprovalTarget) -> String {
    if target.namespace.is_empty() {
        format!("{} {}", target.kind, target.name)
    } else {
        format!("{} {}/{}", target.kind, target.namespace, target.name)
    }
}

/// A record as the webhook reads it on a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Its name.
    pub name: String,
    /// `spec.payload`.
    pub payload: String,
    /// `status.signatures`.
    pub signatures: Vec<String>,
    /// Where it stands.
    pub state: RequestState,
    /// Why it was rejected, for the denial.
    pub rejection: Option<Rejection>,
}

impl Recorded {
    /// The record as the verifier reads an approval: the annotations it would have
    /// carried. The same verifier judges both, so a record is exactly as trusted as
    /// annotations are.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        annotations_of(&self.payload, &self.signatures)
    }
}

/// The approval annotations a payload and its signatures make.
pub fn annotations_of(payload: &str, signatures: &[String]) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    annotations.insert(APPROVAL.to_string(), payload.to_string());
    if !signatures.is_empty() {
        let joined: Vec<&str> = signatures.iter().map(|s| s.trim_end()).collect();
        annotations.insert(APPROVAL_SIGNATURE.to_string(), joined.join("\n"));
    }
    annotations
}

/// What looking a record up found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No record for this change.
    Nothing,
    /// The record.
    Record(Box<Recorded>),
    /// It could not be read in time.
    Unknown(String),
}

/// The inbox as the engine sees it. Recording never waits: the engine hands a denial
/// to a bounded queue and answers.
pub trait ApprovalRequests: Send + Sync {
    /// The record for exactly this subject, if any.
    fn find(&self, subject: &ApprovalSubject) -> Found;
    /// Queues a record (or an update of it) for a real denial; never blocks.
    fn record(&self, denied: Denied);
    /// Queues marking the record `name` spent by the admission request `uid`.
    fn spent(&self, name: &str, uid: &str);
}

/// Why a record's object is not the one its payload approves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The payload does not parse.
    #[error("the record's payload is not an approval payload: {0}")]
    Payload(String),
    /// The payload approves another target, operation or digest than the record
    /// names.
    #[error("the record's payload does not approve the change the record names: {0}")]
    Mismatch(String),
    /// The recorded object digests to another digest than the payload's.
    #[error(
        "the recorded object has digest {actual}, but the payload approves {approved}: the record was changed after the webhook wrote it; do not sign it"
    )]
    ObjectChanged {
        /// The payload's digest.
        approved: String,
        /// The object's.
        actual: String,
    },
    /// An apply or delete record without an object to check.
    #[error("the record carries no object, so what it approves cannot be checked")]
    NoObject,
    /// The object cannot be digested.
    #[error("the recorded object cannot be digested: {0}")]
    Digest(String),
}

/// Checks that a record is what it says: the payload approves the record's target,
/// operation and digest, and the recorded object has that digest. An approver signs
/// only a record that passes, so what they read (the object, its diff) is what their
/// signature approves.
pub fn check_record(spec: &RequestSpec) -> Result<ApprovalPayload, RecordError> {
    let payload =
        ApprovalPayload::parse(&spec.payload).map_err(|e| RecordError::Payload(e.to_string()))?;
    let subject = subject_of(spec)?;
    let operation = subject.operation;
    binds_to(&subject, &payload).map_err(|r| RecordError::Mismatch(r.detail))?;
    if operation == ApprovalOperation::Scale {
        return Ok(payload);
    }
    let object = spec.object.as_ref().ok_or(RecordError::NoObject)?;
    let actual = object_digest(object).map_err(|e| RecordError::Digest(e.to_string()))?;
    let approved = payload.digest.clone().unwrap_or_default();
    if actual != approved {
        return Err(RecordError::ObjectChanged { approved, actual });
    }
    Ok(payload)
}

/// The subject a record names.
pub fn subject_of(spec: &RequestSpec) -> Result<ApprovalSubject, RecordError> {
    let operation = match spec.operation.as_str() {
        "apply" => ApprovalOperation::Apply,
        "delete" => ApprovalOperation::Delete,
        "scale" => ApprovalOperation::Scale,
        other => {
            return Err(RecordError::Mismatch(format!(
                "unknown operation {other:?}"
            )));
        }
    };
    Ok(ApprovalSubject {
        target: ApprovalTarget {
            group: spec.target.group.clone(),
            kind: spec.target.kind.clone(),
            namespace: spec.target.namespace.clone(),
            name: spec.target.name.clone(),
        },
        operation,
        digest: spec.digest.clone(),
        replicas: spec.replicas,
    })
}

/// Judges a record's signatures as the webhook will on the retry (same verifier,
/// rule and requester), so the approvers' tools show what is still missing. `None`
/// when the policy has no rule of the record's name.
pub fn judge(
    verifier: &dyn super::ApprovalVerifier,
    policy: &crate::policy::Policy,
    spec: &RequestSpec,
    signatures: &[String],
    now: SystemTime,
) -> Option<super::ApprovalOutcome> {
    let subject = subject_of(spec).ok()?;
    let rule = policy.rules.iter().find(|r| r.name == spec.rule)?;
    let change = requester_change(&subject, &spec.requester);
    let annotations = annotations_of(&spec.payload, signatures);
    Some(verifier.verify(&super::ApprovalContext {
        change: &change,
        subject: &subject,
        annotations: Some(&annotations),
        rule,
        settings: &policy.approvals,
        now,
    }))
}

/// The part of a change the verifier reads besides the subject: who asked (a
/// requester may not approve their own change).
fn requester_change(subject: &ApprovalSubject, requester: &str) -> crate::change::Change {
    use crate::change::{Change, Operation, Requester, Target};
    use crate::kinds::Workload;
    let t = &subject.target;
    Change {
        uid: String::new(),
        operation: match subject.operation {
            ApprovalOperation::Delete => Operation::Delete,
            _ => Operation::Update,
        },
        target: Target {
            group: t.group.clone(),
            kind: t.kind.clone(),
            namespace: (!t.namespace.is_empty()).then(|| t.namespace.clone()),
            name: t.name.clone(),
        },
        namespace: (!t.namespace.is_empty()).then(|| t.namespace.clone()),
        subresource: None,
        workload: Workload::Other,
        old_replicas: None,
        new_replicas: subject.replicas,
        replaces_pods: false,
        spec_changed: false,
        autoscaler_max: None,
        motion: Default::default(),
        unmeasurable: None,
        requester: Requester {
            username: requester.to_string(),
            groups: Vec::new(),
        },
        field_manager: None,
        new_annotations: BTreeMap::new(),
        old_annotations: BTreeMap::new(),
        dry_run: false,
        object: None,
        old_object: None,
        // Never admitted: nothing to look for in the cluster afterwards.
        sighting: crate::change_sets::Sighting {
            group: t.group.clone(),
            version: String::new(),
            resource: String::new(),
            namespace: (!t.namespace.is_empty()).then(|| t.namespace.clone()),
            name: t.name.clone(),
            expect: crate::change_sets::Expect::Unchecked,
        },
    }
}

/// Records in this process's memory: the inbox of engine tests and of a server
/// without a cluster, where nobody else could reach the records anyway.
#[derive(Debug, Default)]
pub struct InMemoryRequests {
    records: Mutex<BTreeMap<String, (RequestSpec, RequestStatus)>>,
}

/// Most records [`InMemoryRequests`] keeps.
const MAX_IN_MEMORY: usize = 1_000;

impl InMemoryRequests {
    /// A record, by name.
    pub fn get(&self, name: &str) -> Option<(RequestSpec, RequestStatus)> {
        self.lock().get(name).cloned()
    }

    /// Every record's name.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Changes a record in place (tests: sign, reject, tamper).
    pub fn edit(&self, name: &str, edit: impl FnOnce(&mut RequestSpec, &mut RequestStatus)) {
        if let Some((spec, status)) = self.lock().get_mut(name) {
            edit(spec, status);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (RequestSpec, RequestStatus)>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ApprovalRequests for InMemoryRequests {
    fn find(&self, subject: &ApprovalSubject) -> Found {
        let name = record_name(subject);
        match self.lock().get(&name) {
            None => Found::Nothing,
            Some((spec, status)) => Found::Record(Box::new(Recorded {
                name,
                payload: spec.payload.clone(),
                signatures: status.signatures.clone(),
                state: status.state,
                rejection: status.rejection.clone(),
            })),
        }
    }

    fn record(&self, denied: Denied) {
        let mut records = self.lock();
        let name = denied.name();
        let full = records.len() >= MAX_IN_MEMORY;
        match records.get_mut(&name) {
            Some((spec, _)) => {
                spec.attempts = spec.attempts.saturating_add(1);
                spec.last_seen = super::payload::rfc3339(denied.at);
            }
            None if !full => {
                records.insert(name, (denied.spec("webhook"), RequestStatus::default()));
            }
            None => {}
        }
    }

    fn spent(&self, name: &str, _uid: &str) {
        if let Some((_, status)) = self.lock().get_mut(name) {
            status.state = RequestState::Spent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(digest: &str) -> ApprovalSubject {
        ApprovalSubject {
            target: ApprovalTarget {
                group: "apps".into(),
                kind: "Deployment".into(),
                namespace: "prod".into(),
                name: "api".into(),
            },
            operation: ApprovalOperation::Apply,
            digest: Some(digest.into()),
            replicas: None,
        }
    }

    #[test]
    fn one_name_per_target_operation_and_digest() {
        let a = record_name(&subject("sha256:aa"));
        assert!(a.starts_with("deployment-prod-api-apply-"), "{a}");
        assert_eq!(a, record_name(&subject("sha256:aa")));
        assert_ne!(a, record_name(&subject("sha256:bb")));
        let mut delete = subject("sha256:aa");
        delete.operation = ApprovalOperation::Delete;
        assert_ne!(a, record_name(&delete));
        // DNS-1123: lowercase alphanumerics and dashes, within 63 characters.
        let mut long = subject("sha256:aa");
        long.target.name = "A.very_long.name".repeat(10);
        let name = record_name(&long);
        assert!(name.len() <= 63, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn a_record_is_checked_against_its_object() {
        let object: Value =
            serde_json::json!({"spec": {"replicas": 40}, "metadata": {"name": "api"}});
        let digest = object_digest(&object).unwrap();
        let subject = subject(&digest);
        let payload = subject.payload(SystemTime::now(), std::time::Duration::from_secs(60), "");
        let denied = Denied {
            subject,
            payload,
            requester: "bot".into(),
            rule: "protected".into(),
            required_approvals: 2,
            approvers: vec![],
            pods_affected: Some(40),
            exceeded: vec![],
            object: Some(object.to_string()),
            at: SystemTime::now(),
        };
        let spec = denied.spec("webhook");
        assert!(check_record(&spec).is_ok());
        let mut changed = spec.clone();
        changed.object =
            Some(serde_json::json!({"spec": {"replicas": 0}, "metadata": {"name": "api"}}));
        assert!(matches!(
            check_record(&changed),
            Err(RecordError::ObjectChanged { .. })
        ));
        let mut other = spec.clone();
        other.digest = Some(format!("sha256:{}", "0".repeat(64)));
        assert!(matches!(
            check_record(&other),
            Err(RecordError::Mismatch(_))
        ));
        let mut none = spec;
        none.object = None;
        assert_eq!(check_record(&none), Err(RecordError::NoObject));
    }

    #[test]
    fn signatures_are_joined_as_the_annotation_holds_them() {
        let a = annotations_of("{}", &["sig1\n".into(), "sig2".into()]);
        assert_eq!(a[APPROVAL_SIGNATURE], "sig1\nsig2");
        assert!(!annotations_of("{}", &[]).contains_key(APPROVAL_SIGNATURE));
    }
}
