//! Approval: is there a valid signed approval for exactly this change (docs/design.md#approvals)?
//!
//! The rules ask an [`ApprovalVerifier`]; the verdict never looks at signatures itself.
//! The real one is [`verifier::SignedApprovals`], over an OpenSSH allowed_signers file
//! ([`allowed_signers`]) and SSHSIG signatures ([`sshsig`]); approvers sign with
//! [`signing`].

pub mod allowed_signers;
pub mod digest;
pub mod payload;
pub mod request;
pub mod signing;
pub mod spent;
pub mod sshsig;
pub mod summary;
pub mod verifier;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use payload::{ApprovalOperation, ApprovalPayload, ApprovalSubject, ApprovalTarget};

use crate::change::{Change, Target};
use crate::policy::{Approvals, Rule};

/// What the verifier needs to judge one change.
#[derive(Debug)]
pub struct ApprovalContext<'a> {
    /// The change.
    pub change: &'a Change,
    /// What it must be approved as.
    pub subject: &'a ApprovalSubject,
    /// The annotations the approval is read from: the new object's for apply, the
    /// deleted object's for delete, the parent workload's for scale (`None` when the
    /// parent is unknown).
    pub annotations: Option<&'a BTreeMap<String, String>>,
    /// The matched rule (for `requiredApprovals`).
    pub rule: &'a Rule,
    /// The policy's approval settings (max TTL, clock skew).
    pub settings: &'a Approvals,
    /// The time to judge validity at.
    pub now: SystemTime,
}

/// The verifier's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// No approval annotation where one would be read.
    Missing,
    /// A valid approval signed by these principals.
    Valid {
        /// The distinct principals that signed.
        signers: Vec<String>,
    },
    /// An approval is present but does not lift the limits.
    Rejected {
        /// A short, stable reason (a metric label), e.g. `expired`.
        reason: &'static str,
        /// What exactly is wrong, for the person reading kubectl output.
        detail: String,
    },
}

/// Whether `change` restores a state an approval signed (docs/gitops.md, "Drift"):
/// an UPDATE by one of the policy's `restorers` (the GitOps controllers) whose
/// old and new object carry the same approval and signatures, as a manifest from
/// git does after a person changed the live object by hand. Such an approval is
/// not held to its window nor spent: git keeps declaring the state it signed.
/// The verifier still binds it to the new object's digest and checks every
/// signature against today's allowed_signers and the rule's approvers.
pub fn restores(change: &Change, settings: &Approvals) -> bool {
    use crate::annotations::{APPROVAL, APPROVAL_SIGNATURE};
    let same = |key: &str| {
        change
            .new_annotations
            .get(key)
            .is_some_and(|v| change.old_annotations.get(key) == Some(v))
    };
    change.operation == crate::change::Operation::Update
        && !change.is_scale()
        && settings
            .restorers
            .iter()
            .any(|r| r.matches(&change.requester.username))
        && same(APPROVAL)
        && same(APPROVAL_SIGNATURE)
}

/// The stable reasons of [`ApprovalOutcome::Rejected`] (the `result` labels of
/// `blastguard_approvals_total` besides `valid` and `missing`).
pub mod reason {
    /// No allowed_signers file is loaded.
    pub const NO_TRUSTED_SIGNERS: &str = "no_trusted_signers";
    /// An annotation is over its size bound, or there are too many signatures.
    pub const TOO_LARGE: &str = "too_large";
    /// The payload, armor, base64 or SSHSIG structure does not parse.
    pub const MALFORMED: &str = "malformed";
    /// A payload without a signature annotation.
    pub const UNSIGNED: &str = "unsigned";
    /// The payload approves another operation (apply, delete, scale).
    pub const OPERATION_MISMATCH: &str = "operation_mismatch";
    /// The payload approves another object (group, kind, namespace, name).
    pub const TARGET_MISMATCH: &str = "target_mismatch";
    /// The object's spec is not the approved one.
    pub const DIGEST_MISMATCH: &str = "digest_mismatch";
    /// A scale beyond the approved replica count.
    pub const REPLICAS_EXCEEDED: &str = "replicas_exceeded";
    /// notAfter − notBefore is longer than the policy's maxTTL.
    pub const TTL_TOO_LONG: &str = "ttl_too_long";
    /// Before notBefore (beyond the clock skew).
    pub const NOT_YET_VALID: &str = "not_yet_valid";
    /// After notAfter (beyond the clock skew).
    pub const EXPIRED: &str = "expired";
    /// A signature made for another SSHSIG namespace.
    pub const WRONG_NAMESPACE: &str = "wrong_namespace";
    /// An RSA signature with SHA-1 (`ssh-rsa`).
    pub const WEAK_ALGORITHM: &str = "weak_algorithm";
    /// A key not in allowed_signers, or not trusted for approvals now.
    pub const UNTRUSTED_KEY: &str = "untrusted_key";
    /// A signature that does not verify over the payload.
    pub const BAD_SIGNATURE: &str = "bad_signature";
    /// Too few approvers because one of them is the requester.
    pub const SELF_APPROVAL: &str = "self_approval";
    /// Fewer distinct approvers than the rule's requiredApprovals.
    pub const NOT_ENOUGH_APPROVERS: &str = "not_enough_approvers";
    /// Enough approvers, but not the signers the rule's `approvers` terms ask of
    /// approver groups (docs/design.md#policy).
    pub const APPROVER_GROUPS_UNMET: &str = "approver_groups_unmet";
    /// The change's digest could not be computed (set by the engine).
    pub const DIGEST_ERROR: &str = "digest_error";
    /// The approval admitted a change before: it admits its change once (set by the
    /// engine).
    pub const SPENT: &str = "spent";
    /// Whether the approval was spent could not be learned or recorded in time (set
    /// by the engine).
    pub const SPEND_UNAVAILABLE: &str = "spend_unavailable";
    /// The change's `ApprovalRequest` was rejected by an approver: it is never
    /// admitted on it (set by the engine; docs/approvals.md, "The inbox").
    pub const REQUEST_REJECTED: &str = "request_rejected";
}

impl ApprovalOutcome {
    /// Every value [`ApprovalOutcome::metric_label`] can return, so a metric can
    /// start each series at zero.
    pub const LABELS: &'static [&'static str] = &[
        "missing",
        "valid",
        reason::NO_TRUSTED_SIGNERS,
        reason::TOO_LARGE,
        reason::MALFORMED,
        reason::UNSIGNED,
        reason::OPERATION_MISMATCH,
        reason::TARGET_MISMATCH,
        reason::DIGEST_MISMATCH,
        reason::REPLICAS_EXCEEDED,
        reason::TTL_TOO_LONG,
        reason::NOT_YET_VALID,
        reason::EXPIRED,
        reason::WRONG_NAMESPACE,
        reason::WEAK_ALGORITHM,
        reason::UNTRUSTED_KEY,
        reason::BAD_SIGNATURE,
        reason::SELF_APPROVAL,
        reason::NOT_ENOUGH_APPROVERS,
        reason::APPROVER_GROUPS_UNMET,
        reason::DIGEST_ERROR,
        reason::SPENT,
        reason::SPEND_UNAVAILABLE,
        reason::REQUEST_REJECTED,
    ];

    /// The `result` label of `blastguard_approvals_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ApprovalOutcome::Missing => "missing",
            ApprovalOutcome::Valid { .. } => "valid",
            ApprovalOutcome::Rejected { reason, .. } => reason,
        }
    }
}

/// Whether `outcome` is an approval that binds to the change and verifies, but has
/// fewer approvers than the rule requires: more signatures on the same payload lift it.
pub fn insufficient(outcome: &ApprovalOutcome) -> bool {
    matches!(
        outcome,
        ApprovalOutcome::Rejected { reason, .. }
            if *reason == reason::NOT_ENOUGH_APPROVERS
                || *reason == reason::SELF_APPROVAL
                || *reason == reason::APPROVER_GROUPS_UNMET
    )
}

/// Judges the approval attached to a change.
pub trait ApprovalVerifier: Send + Sync {
    /// Whether the change carries a valid approval for exactly itself.
    fn verify(&self, ctx: &ApprovalContext<'_>) -> ApprovalOutcome;
}

/// A verifier that knows no trusted signers: any approval present is rejected.
/// Used until an allowed_signers file is loaded.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTrustedSigners;

impl ApprovalVerifier for NoTrustedSigners {
    fn verify(&self, ctx: &ApprovalContext<'_>) -> ApprovalOutcome {
        match ctx.annotations {
            Some(a) if a.contains_key(crate::annotations::APPROVAL) => ApprovalOutcome::Rejected {
                reason: reason::NO_TRUSTED_SIGNERS,
                detail: "no allowed_signers file is loaded, so no signature can be trusted"
                    .to_string(),
            },
            _ => ApprovalOutcome::Missing,
        }
    }
}

pub use allowed_signers::LoadError as SignersError;

/// Loads an OpenSSH allowed_signers file into a verifier. An error names the file and,
/// for a line it cannot use, the line; the caller keeps the verifier it had.
pub fn load_verifier(path: &Path) -> Result<Arc<dyn ApprovalVerifier>, SignersError> {
    let signers = allowed_signers::AllowedSigners::load(path)?;
    Ok(Arc::new(verifier::SignedApprovals::new(signers)))
}

/// Where a scale approval is read from: the current annotations of the parent workload.
pub trait WorkloadAnnotations: Send + Sync {
    /// The current annotations of the workload, if known.
    fn annotations(&self, target: &Target) -> Option<BTreeMap<String, String>>;
    /// Notes the annotations of a workload the API server is about to store (`None`
    /// when it is deleted).
    fn observe(&self, target: &Target, annotations: Option<&BTreeMap<String, String>>);
}

/// Most workloads remembered by [`InMemoryWorkloads`].
const MAX_REMEMBERED_WORKLOADS: usize = 10_000;

/// Remembers the approval annotations of workloads this process has admitted. Without
/// a cluster it is the only source of a parent's annotations for scale approvals.
#[derive(Debug, Default)]
pub struct InMemoryWorkloads {
    known: Mutex<HashMap<Target, BTreeMap<String, String>>>,
}

impl WorkloadAnnotations for InMemoryWorkloads {
    fn annotations(&self, target: &Target) -> Option<BTreeMap<String, String>> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.get(target).cloned()
    }

    fn observe(&self, target: &Target, annotations: Option<&BTreeMap<String, String>>) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        // Only approval annotations matter here; keep nothing else.
        let approval: BTreeMap<String, String> = annotations
            .into_iter()
            .flatten()
            .filter(|(k, _)| {
                k.as_str() == crate::annotations::APPROVAL
                    || k.as_str() == crate::annotations::APPROVAL_SIGNATURE
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if approval.is_empty() {
            known.remove(target);
        } else if known.len() < MAX_REMEMBERED_WORKLOADS || known.contains_key(target) {
            known.insert(target.clone(), approval);
        }
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;
    use crate::policy::Policy;
    use serde_json::json;

    const FLUX: &str = "system:serviceaccount:flux-system:kustomize-controller";

    /// An UPDATE of a Deployment whose old and new object carry these annotations.
    fn change(
        user: &str,
        operation: &str,
        old: serde_json::Value,
        new: serde_json::Value,
    ) -> Change {
        let object = |annotations: serde_json::Value| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
                "spec": {"replicas": 20}})
        };
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "name": "web", "namespace": "shop", "operation": operation,
                "userInfo": {"username": user},
                "object": object(new), "oldObject": object(old), "dryRun": false
            }
        });
        let body = review.to_string();
        let request = crate::review::decode(body.as_bytes()).unwrap();
        Change::from_view(&request, &Policy::embedded()).unwrap()
    }

    #[test]
    fn only_a_named_restorer_restores_the_approval_the_object_already_carries() {
        let mut settings = Policy::embedded().approvals;
        let approval =
            json!({"blastguard.io/approval": "P", "blastguard.io/approval-signature": "S"});
        let restoring = change(FLUX, "UPDATE", approval.clone(), approval.clone());
        // Nobody is a restorer by default.
        assert!(!restores(&restoring, &settings));
        settings.restorers = vec![wildmatch::WildMatch::new(
            "system:serviceaccount:flux-system:*",
        )];
        assert!(restores(&restoring, &settings));
        // Not another identity, not a new approval, not a creation.
        let bot = "system:serviceaccount:ai-agents:bot";
        assert!(!restores(
            &change(bot, "UPDATE", approval.clone(), approval.clone()),
            &settings
        ));
        let other =
            json!({"blastguard.io/approval": "P2", "blastguard.io/approval-signature": "S"});
        assert!(!restores(
            &change(FLUX, "UPDATE", other, approval.clone()),
            &settings
        ));
        let resigned =
            json!({"blastguard.io/approval": "P", "blastguard.io/approval-signature": "S2"});
        assert!(!restores(
            &change(FLUX, "UPDATE", approval.clone(), resigned),
            &settings
        ));
        assert!(!restores(
            &change(FLUX, "UPDATE", json!({}), approval.clone()),
            &settings
        ));
        assert!(!restores(
            &change(FLUX, "UPDATE", json!({}), json!({})),
            &settings
        ));
    }
}
