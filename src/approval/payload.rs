//! The approval payload (docs/design.md#approvals): what an approver signs, and what a
//! change must be approved as.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::digest::{DigestError, UnsignedLabels, object_digest, object_text_digest_without};
use super::summary::MAX_SUMMARY_CHARS;
use serde_json::Value;

use crate::change::{Change, Operation, Target};

/// `apiVersion` of an approval payload.
pub const API_VERSION: &str = "blastguard.io/v1";
/// `kind` of an approval payload.
pub const KIND: &str = "Approval";
/// The SSHSIG namespace approvals are signed under.
pub const SIGNATURE_NAMESPACE: &str = "approval@blastguard.io";
/// Largest approval payload read; a real one is about 400 bytes.
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024;

/// Why an approval annotation is not a payload blastguard accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Longer than [`MAX_PAYLOAD_BYTES`].
    #[error("it is {0} bytes long, more than the {MAX_PAYLOAD_BYTES} an approval may have")]
    TooLarge(usize),
    /// Not JSON of the payload's shape (unknown and duplicate fields included).
    #[error("it is not a valid approval payload: {0}")]
    Json(String),
    /// JSON of the right shape with a wrong value.
    #[error("{field}: {message}")]
    Field {
        /// The payload field, e.g. `notAfter`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// The object an approval is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalTarget {
    /// API group (`""` for core).
    pub group: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace (empty for cluster-scoped objects).
    #[serde(default)]
    pub namespace: String,
    /// `metadata.name`.
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
    /// Scaling the workload to exactly `replicas`.
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
    /// The exact approved replica count (scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    /// One human line of what the change does (docs/approvals.md#the-approval): signed with
    /// the rest, checked against nothing; the digest is what binds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
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
        Self::of_without(change, &UnsignedLabels::default())
    }

    /// [`Self::of`], the labels of `unsigned` left out of the digest (the policy's
    /// `spec.approvals.unsignedLabels`).
    pub fn of_without(change: &Change, unsigned: &UnsignedLabels) -> Result<Self, DigestError> {
        if change.is_scale() {
            return Ok(Self::bound(
                &change.target,
                ApprovalOperation::Scale,
                None,
                change.new_replicas,
            ));
        }
        let (operation, object) = if change.operation == Operation::Delete {
            (ApprovalOperation::Delete, change.old_object.as_ref())
        } else {
            (ApprovalOperation::Apply, change.object.as_ref())
        };
        // The object as the change keeps it, digested from its text.
        let digest = object
            .map(|o| object_text_digest_without(o.text(), unsigned))
            .transpose()?;
        Ok(Self::bound(&change.target, operation, digest, None))
    }

    /// The subject of an object given whole (the approver's commands): apply and
    /// delete bind the object's digest, scale the exact replica count, as
    /// [`Self::of`] does for a request.
    pub fn new(
        target: &Target,
        operation: ApprovalOperation,
        object: Option<&Value>,
        replicas: Option<u64>,
    ) -> Result<Self, DigestError> {
        Ok(match operation {
            ApprovalOperation::Scale => Self::bound(target, operation, None, replicas),
            ApprovalOperation::Apply | ApprovalOperation::Delete => {
                let digest = object.map(object_digest).transpose()?;
                Self::bound(target, operation, digest, None)
            }
        })
    }

    fn bound(
        target: &Target,
        operation: ApprovalOperation,
        digest: Option<String>,
        replicas: Option<u64>,
    ) -> Self {
        Self {
            target: ApprovalTarget {
                group: target.group.clone(),
                kind: target.kind.clone(),
                namespace: target.namespace.clone().unwrap_or_default(),
                name: target.name.clone(),
            },
            operation,
            digest,
            replicas,
        }
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
            summary: String::new(),
            not_before: rfc3339(now),
            not_after: rfc3339(now + ttl),
            reason: reason.to_string(),
        }
    }
}

impl ApprovalPayload {
    /// What this payload approves: its target, operation, digest and replica count.
    pub fn subject(&self) -> ApprovalSubject {
        ApprovalSubject {
            target: self.target.clone(),
            operation: self.operation,
            digest: self.digest.clone(),
            replicas: self.replicas,
        }
    }

    /// This payload with `summary` (see [`super::summary`]).
    pub fn with_summary(mut self, summary: String) -> Self {
        self.summary = summary;
        self
    }

    /// The exact bytes to sign and to put in the annotation (compact JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an approval payload always serializes")
    }

    /// Reads an approval annotation strictly: bounded in size, no unknown or duplicate
    /// field, the right apiVersion and kind, the fields its operation needs and no
    /// others, and a validity window that parses and is not reversed.
    pub fn parse(text: &str) -> Result<Self, PayloadError> {
        if text.len() > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::TooLarge(text.len()));
        }
        let payload: Self =
            serde_json::from_str(text).map_err(|e| PayloadError::Json(e.to_string()))?;
        let field = |field, message: String| Err(PayloadError::Field { field, message });
        if payload.api_version != API_VERSION {
            return field(
                "apiVersion",
                format!("must be {API_VERSION:?}, got {:?}", payload.api_version),
            );
        }
        if payload.kind != KIND {
            return field("kind", format!("must be {KIND:?}, got {:?}", payload.kind));
        }
        if payload.target.kind.is_empty() || payload.target.name.is_empty() {
            return field("target", "kind and name must be set".to_string());
        }
        match (payload.operation, &payload.digest, payload.replicas) {
            (ApprovalOperation::Scale, None, Some(_)) => {}
            (ApprovalOperation::Scale, _, _) => {
                return field(
                    "replicas",
                    "a scale approval has replicas (the exact approved count) and no digest"
                        .to_string(),
                );
            }
            (_, Some(digest), None) if is_digest(digest) => {}
            (op, _, _) => {
                return field(
                    "digest",
                    format!(
                        "an {} approval has a digest (sha256: and 64 lowercase hex digits) and no replicas",
                        op.as_str()
                    ),
                );
            }
        }
        // Shown on one terminal line: a newline or escape sequence in it could
        // draw lines the approver would take for the tool's own.
        if payload.summary.chars().count() > MAX_SUMMARY_CHARS
            || payload.summary.chars().any(char::is_control)
        {
            return field(
                "summary",
                format!("must be one line of at most {MAX_SUMMARY_CHARS} characters"),
            );
        }
        payload.window()?;
        Ok(payload)
    }

    /// `notBefore` and `notAfter` as times.
    pub fn window(&self) -> Result<(SystemTime, SystemTime), PayloadError> {
        let time = |field, value: &str| {
            humantime::parse_rfc3339(value).map_err(|_| PayloadError::Field {
                field,
                message: format!("{value:?} is not an RFC 3339 UTC time like 2026-11-22T10:00:00Z"),
            })
        };
        let not_before = time("notBefore", &self.not_before)?;
        let not_after = time("notAfter", &self.not_after)?;
        if not_after <= not_before {
            return Err(PayloadError::Field {
                field: "notAfter",
                message: format!(
                    "{} is not after notBefore {}",
                    self.not_after, self.not_before
                ),
            });
        }
        Ok((not_before, not_after))
    }
}

fn is_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

impl std::fmt::Display for ApprovalTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        if self.namespace.is_empty() {
            write!(f, "{} {} (group {group})", self.kind, self.name)
        } else {
            write!(
                f,
                "{} {}/{} (group {group})",
                self.kind, self.namespace, self.name
            )
        }
    }
}

/// RFC 3339 in UTC with second precision, as approvals are written.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn apply() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "blastguard.io/v1", "kind": "Approval",
            "target": {"group": "apps", "kind": "Deployment", "namespace": "prod", "name": "api"},
            "operation": "apply", "digest": DIGEST,
            "notBefore": "2026-11-22T10:00:00Z", "notAfter": "2026-11-22T12:00:00Z",
            "reason": "CHG-1234"
        })
    }

    #[test]
    fn the_documented_payload_parses_and_round_trips() {
        let text = apply().to_string();
        let payload = ApprovalPayload::parse(&text).unwrap();
        assert_eq!(
            payload.target.to_string(),
            "Deployment prod/api (group apps)"
        );
        assert_eq!(ApprovalPayload::parse(&payload.to_json()).unwrap(), payload);
        let (nb, na) = payload.window().unwrap();
        assert_eq!(na.duration_since(nb).unwrap(), Duration::from_secs(7200));
    }

    #[test]
    fn a_summary_is_signed_with_the_rest_and_printed_before_the_times() {
        let mut v = apply();
        v["summary"] = "replicas 3 → 40, image nginx:1.27 → nginx:1.28, 40 pods affected".into();
        let payload = ApprovalPayload::parse(&v.to_string()).unwrap();
        assert_eq!(
            payload.summary,
            "replicas 3 → 40, image nginx:1.27 → nginx:1.28, 40 pods affected"
        );
        let text = payload.to_json();
        assert!(text.find("\"summary\"").unwrap() < text.find("\"notBefore\"").unwrap());
        assert_eq!(ApprovalPayload::parse(&text).unwrap(), payload);
        // Without one, the payload is as before: old signatures still verify.
        assert!(
            !ApprovalPayload::parse(&apply().to_string())
                .unwrap()
                .to_json()
                .contains("summary")
        );
    }

    #[test]
    fn payloads_are_read_strictly() {
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = apply();
            f(&mut v);
            v.to_string()
        };
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "not a valid approval payload"),
            (edit(&|v| v["extra"] = 1.into()), "unknown field `extra`"),
            (
                edit(&|v| v["target"]["uid"] = "x".into()),
                "unknown field `uid`",
            ),
            (
                apply().to_string().replacen(
                    "\"kind\":\"Approval\"",
                    "\"kind\":\"Approval\",\"kind\":\"Approval\"",
                    1,
                ),
                "duplicate field `kind`",
            ),
            (
                edit(&|v| v["apiVersion"] = "blastguard.io/v2".into()),
                "apiVersion: must be",
            ),
            (edit(&|v| v["kind"] = "Approvals".into()), "kind: must be"),
            (
                edit(&|v| v["operation"] = "patch".into()),
                "unknown variant `patch`",
            ),
            (
                edit(&|v| v["digest"] = "sha256:abc".into()),
                "digest: an apply approval has a digest",
            ),
            (
                edit(&|v| v["digest"] = DIGEST.to_uppercase().into()),
                "digest:",
            ),
            (
                edit(&|v| {
                    v.as_object_mut().unwrap().remove("digest");
                }),
                "digest:",
            ),
            (edit(&|v| v["replicas"] = 3.into()), "no replicas"),
            (
                edit(&|v| v["operation"] = "scale".into()),
                "replicas: a scale approval",
            ),
            (
                edit(&|v| v["target"]["name"] = "".into()),
                "target: kind and name",
            ),
            (
                edit(&|v| v["notBefore"] = "2026-11-22 10:00".into()),
                "notBefore: ",
            ),
            (
                edit(&|v| v["notAfter"] = "2026-11-22T12:00:00+01:00".into()),
                "notAfter: ",
            ),
            (
                edit(&|v| v["notAfter"] = "2026-11-22T09:00:00Z".into()),
                "is not after notBefore",
            ),
            (
                edit(&|v| v["reason"] = "x".repeat(MAX_PAYLOAD_BYTES).into()),
                "bytes long",
            ),
            (
                edit(&|v| v["summary"] = "replicas 3 → 4\nsigned: yes".into()),
                "summary: must be one line",
            ),
            (
                edit(&|v| v["summary"] = "x".repeat(MAX_SUMMARY_CHARS + 1).into()),
                "summary: must be one line",
            ),
            (edit(&|v| v["summary"] = 3.into()), "invalid type"),
        ];
        for (text, want) in cases {
            let err = ApprovalPayload::parse(&text).expect_err(&text).to_string();
            assert!(err.contains(want), "{text:.120}: {err:?} lacks {want:?}");
        }
        let scale = edit(&|v| {
            v["operation"] = "scale".into();
            v["replicas"] = 30.into();
            v.as_object_mut().unwrap().remove("digest");
        });
        assert_eq!(ApprovalPayload::parse(&scale).unwrap().replicas, Some(30));
    }
}
