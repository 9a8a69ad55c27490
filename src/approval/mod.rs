//! Approval: is there a valid signed approval for exactly this change (DESIGN.md
//! section 3)?
//!
//! The rules ask an [`ApprovalVerifier`]; the verdict never looks at signatures itself.

pub mod digest;
pub mod payload;

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

impl ApprovalOutcome {
    /// The `result` label of `blastguard_approvals_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ApprovalOutcome::Missing => "missing",
            ApprovalOutcome::Valid { .. } => "valid",
            ApprovalOutcome::Rejected { reason, .. } => reason,
        }
    }
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
                reason: "no_trusted_signers",
                detail: "no allowed_signers file is loaded, so no signature can be trusted"
                    .to_string(),
            },
            _ => ApprovalOutcome::Missing,
        }
    }
}

/// Why an allowed_signers file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SignersError {
    /// The file could not be read.
    #[error("cannot read allowed_signers file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Loads an OpenSSH allowed_signers file into a verifier.
pub fn load_verifier(path: &Path) -> Result<Arc<dyn ApprovalVerifier>, SignersError> {
    std::fs::read(path).map_err(|source| SignersError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Arc::new(NoTrustedSigners))
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
