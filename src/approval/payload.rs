//! The approval payload (DESIGN.md section 3): what an approver signs, and what a
//! change must be approved as.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::digest::{DigestError, object_digest};
use crate::change::{Change, Operation};

/// `apiVersion` of an approval payload.
pub const API_VERSION: &str = "blastguard.io/v1";
/// `kind` of an approval payload.
pub const KIND: &str = "Approval";
/// The SSHSIG namespace approvals are signed under.
pub const SIGNATURE_NAMESPACE: &str = "approval@blastguard.io";
/// Validity offered in the payload a denial prints, capped by the policy's maxTTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(2 * 3600);

/// The object an approval is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalTarget {
    /// API group (`""` for core).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace (empty for cluster-scoped objects).
    #[serde(default)]
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// What is approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalOperation {
    /// CREATE or UPDATE of exactly the digested spec.
    Apply,
    /// DELETE of the object with the digested spec.
    Delete,
    /// Scaling the workload up to `replicas`.
    Scale,
}

impl ApprovalOperation {
    /// Lowercase name, as in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalOperation::Apply => "apply",
            ApprovalOperation::Delete => "delete",
            ApprovalOperation::Scale => "scale",
        }
    }
}

/// The payload of `blastguard.io/approval`. Field order is the order printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalPayload {
    /// `blastguard.io/v1`.
    pub api_version: String,
    /// `Approval`.
    pub kind: String,
    /// The approved object.
    pub target: ApprovalTarget,
    /// The approved operation.
    pub operation: ApprovalOperation,
    /// Digest of the approved spec (apply, delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Highest approved replica count (scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Why, for the audit trail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// What a change must be approved as: the payload fields that bind to the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSubject {
    /// The object.
    pub target: ApprovalTarget,
    /// The operation.
    pub operation: ApprovalOperation,
    /// The digest (apply and delete).
    pub digest: Option<String>,
    /// Replicas requested (scale).
    pub replicas: Option<u64>,
}

impl ApprovalSubject {
    /// What `change` must be approved as.
    pub fn of(change: &Change) -> Result<Self, DigestError> {
        let t = &change.target;
        let target = ApprovalTarget {
            group: t.group.clone(),
            kind: t.kind.clone(),
            namespace: t.namespace.clone().unwrap_or_default(),
            name: t.name.clone(),
        };
        let (operation, digest, replicas) = if change.is_scale() {
            (ApprovalOperation::Scale, None, change.new_replicas)
        } else if change.operation == Operation::Delete {
            let digest = change.old_object.as_ref().map(object_digest).transpose()?;
            (ApprovalOperation::Delete, digest, None)
        } else {
            let digest = change.object.as_ref().map(object_digest).transpose()?;
            (ApprovalOperation::Apply, digest, None)
        };
        Ok(Self {
            target,
            operation,
            digest,
            replicas,
        })
    }

    /// The payload to sign for this subject, valid from `now` for `ttl`.
    pub fn payload(&self, now: SystemTime, ttl: Duration, reason: &str) -> ApprovalPayload {
        ApprovalPayload {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            target: self.target.clone(),
            operation: self.operation,
            digest: self.digest.clone(),
            replicas: self.replicas,
            not_before: rfc3339(now),
            not_after: rfc3339(now + ttl),
            reason: reason.to_string(),
        }
    }
}

impl ApprovalPayload {
    /// The exact bytes to sign and to put in the annotation (compact JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an approval payload always serializes")
    }
}

/// RFC 3339 in UTC with second precision, as approvals are written.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
