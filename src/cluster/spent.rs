//! Spent approvals shared by every replica, as `SpentApproval` records.
//!
//! One object (group `blastguard.io`, the chart's CRD) per spent approval, in the
//! release namespace, named by the approval's key. Creating it is the spending: the
//! API server's create-if-absent lets exactly one request, on any replica, spend an
//! approval; the others get a conflict and learn it was spent. A dry run only reads
//! it. Records whose approval has passed its `notAfter` admit nothing anyway and are
//! deleted by a periodic collection.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde::{Deserialize, Serialize};

use super::bridge::Bridge;
use super::change_sets::record::GROUP;
use crate::approval::payload::rfc3339;
use crate::approval::spent::{Spend, Spending, SpentApprovals};
use crate::budget;

/// The record's kind (the chart's CRD).
pub const KIND: &str = "SpentApproval";
/// The resource (plural).
pub const PLURAL: &str = "spentapprovals";

/// A `SpentApproval` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpentApproval {
    /// `blastguard.io/v1alpha1`.
    pub api_version: String,
    /// `SpentApproval`.
    pub kind: String,
    /// Name ([`record_name`]) and namespace.
    pub metadata: ObjectMeta,
    /// Which approval was spent, on what, by whom, until when.
    pub spec: SpentApprovalSpec,
}

/// What was spent, by whom, and until when it is remembered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpentApprovalSpec {
    /// The approval's key (hex SHA-256 of its payload).
    pub key: String,
    /// Operation, target and digest (or replicas) it approved.
    pub approved: String,
    /// The requester whose change spent it.
    pub requester: String,
    /// The admission request that spent it.
    pub uid: String,
    /// When it was spent (RFC 3339).
    pub spent_at: String,
    /// The approval's notAfter: the record may go after it (RFC 3339).
    pub not_after: String,
}

record_resource!(SpentApproval, KIND, PLURAL);

/// The object name of an approval's record.
pub fn record_name(key: &str) -> String {
    format!("approval-{}", key.get(..40).unwrap_or(key))
}

/// [`SpentApprovals`] over `SpentApproval` records.
pub struct ClusterSpent {
    api: Api<SpentApproval>,
    bridge: Arc<Bridge>,
}

impl ClusterSpent {
    /// Records in `api`'s namespace.
    pub fn new(api: Api<SpentApproval>, bridge: Arc<Bridge>) -> Self {
        Self { api, bridge }
    }

    /// Deletes the records whose approval has passed its notAfter (plus a margin for
    /// clock skew). Returns how many were deleted.
    pub async fn collect_expired(&self, now: SystemTime) -> usize {
        let Ok(list) = self.api.list(&ListParams::default()).await else {
            return 0;
        };
        let margin = Duration::from_secs(600);
        let mut deleted = 0;
        for record in list.items {
            let expired = humantime::parse_rfc3339(&record.spec.not_after)
                .is_ok_and(|until| until + margin < now);
            let Some(name) = record.metadata.name.as_deref() else {
                continue;
            };
            if expired
                && self
                    .api
                    .delete(name, &DeleteParams::default())
                    .await
                    .is_ok()
            {
                deleted += 1;
            }
        }
        deleted
    }
}

/// What was asked of the API server about a spent-approval record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// Whether the approval was spent (a dry run's question).
    Read,
    /// Recording it as spent.
    Write,
}

/// A call without an answer: whether the approval was spent is unknown, so it is not
/// used. A read that failed leaves the decision without a record it needed (noted as
/// such, as any unread cluster state); a write that failed says so, not that
/// something could not be read.
fn unknown(call: Call, error: &dyn std::fmt::Display) -> Spending {
    let done = match call {
        Call::Read => {
            tracing::warn!(error = %error, "cannot read a spent-approval record");
            budget::note_unavailable("the spent-approval records".to_string());
            "read from"
        }
        Call::Write => {
            tracing::warn!(error = %error, "cannot write a spent-approval record");
            "written to"
        }
    };
    Spending::Unknown(format!(
        "the spent-approval record could not be {done} the API server in time ({error})"
    ))
}

impl SpentApprovals for ClusterSpent {
    fn is_spent(&self, key: &str, _now: SystemTime) -> Spending {
        let api = self.api.clone();
        let name = record_name(key);
        let get = async move { api.get_opt(&name).await };
        match self.bridge.call(budget::deadline(), get) {
            Ok(Ok(Some(_))) => Spending::AlreadySpent,
            Ok(Ok(None)) => Spending::Unspent,
            Ok(Err(e)) => unknown(Call::Read, &e),
            Err(late) => unknown(Call::Read, &late),
        }
    }

    fn spend(&self, spend: &Spend, now: SystemTime) -> Spending {
        let record = SpentApproval {
            api_version: format!("{GROUP}/{}", super::change_sets::record::VERSION),
            kind: KIND.to_string(),
            metadata: ObjectMeta {
                name: Some(record_name(&spend.key)),
                ..ObjectMeta::default()
            },
            spec: SpentApprovalSpec {
                key: spend.key.clone(),
                approved: spend.target.clone(),
                requester: spend.requester.clone(),
                uid: spend.uid.clone(),
                spent_at: rfc3339(now),
                not_after: rfc3339(spend.not_after),
            },
        };
        let api = self.api.clone();
        let create = async move { api.create(&PostParams::default(), &record).await };
        // Detached: once sent, the create may land after the decision stopped
        // waiting; the approval is then spent without having admitted anything, which
        // fails closed.
        match self.bridge.call_detached(budget::deadline(), create) {
            Ok(Ok(_)) => Spending::Spent,
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => Spending::AlreadySpent,
            Ok(Err(e)) => unknown(Call::Write, &e),
            Err(late) => unknown(Call::Write, &late),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_are_valid_and_stable() {
        let key = "ab".repeat(32);
        let name = record_name(&key);
        assert_eq!(name, format!("approval-{}", &key[..40]));
        assert!(name.len() <= 63);
        assert_eq!(record_name("short"), "approval-short");
    }

    #[test]
    fn a_failed_write_is_reported_as_a_write() {
        let cases = [
            (Call::Read, "could not be read from the API server", true),
            (Call::Write, "could not be written to the API server", false),
        ];
        for (call, says, noted) in cases {
            let scope = budget::Scope::begin();
            let Spending::Unknown(why) = unknown(call, &"connection reset") else {
                panic!("{call:?}: not Unknown");
            };
            assert!(why.contains(says), "{call:?}: {why}");
            assert!(why.contains("connection reset"), "{call:?}: {why}");
            assert_eq!(scope.unavailable().is_some(), noted, "{call:?}");
        }
    }
}
