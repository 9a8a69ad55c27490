//! Spent approvals: an approval admits its change once (docs/approvals.md, "Single
//! use").
//!
//! When a real request over the limits is admitted on an approval, the approval is
//! spent: recorded until its `notAfter`, after which it could admit nothing anyway. It
//! then never admits another request, so re-applying an approved manifest cannot undo
//! a person's rollback. Dry runs only ask.
//!
//! [`InMemorySpent`] serves `--dev` and `check`; in a cluster every replica must
//! agree, so `cluster::spent` records them as objects created in the API server, whose
//! create-if-absent is the one arbiter between replicas.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use super::ApprovalPayload;

/// One approval being spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spend {
    /// The approval's identity: the hash of its payload as parsed, so two texts of
    /// one payload (a trailing newline, say) are one approval.
    pub key: String,
    /// Until when it must be remembered: the payload's `notAfter`.
    pub not_after: SystemTime,
    /// What it approved, for people reading the record.
    pub target: String,
    /// Who spent it.
    pub requester: String,
    /// The admission request that spent it.
    pub uid: String,
}

impl Spend {
    /// The spending of `payload` by one request.
    pub fn of(
        payload: &ApprovalPayload,
        not_after: SystemTime,
        requester: &str,
        uid: &str,
    ) -> Self {
        Self {
            key: key(payload),
            not_after,
            target: format!(
                "{} {} {}",
                payload.operation.as_str(),
                payload.target,
                payload
                    .digest
                    .clone()
                    .or_else(|| payload.replicas.map(|r| format!("replicas={r}")))
                    .unwrap_or_default()
            ),
            requester: requester.to_string(),
            uid: uid.to_string(),
        }
    }
}

/// The identity of an approval: hex SHA-256 of its payload in its compact form.
pub fn key(payload: &ApprovalPayload) -> String {
    hex::encode(Sha256::digest(payload.to_json().as_bytes()))
}

/// Whether an approval could be spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spending {
    /// Spent now, by this request.
    Spent,
    /// Not spent yet (the answer to a dry run's question).
    Unspent,
    /// It had admitted a change before.
    AlreadySpent,
    /// Whether it was spent could not be learned or recorded; the change is not
    /// admitted on it (an approval that might be reused is no single-use approval).
    Unknown(String),
}

/// Where spent approvals are remembered.
pub trait SpentApprovals: Send + Sync {
    /// Whether the approval with `key` has admitted a change (for dry runs).
    fn is_spent(&self, key: &str, now: SystemTime) -> Spending;
    /// Spends the approval, unless it was spent before.
    fn spend(&self, spend: &Spend, now: SystemTime) -> Spending;
}

/// Most unexpired spent approvals remembered in memory. Every one took real
/// signatures, so this bounds nothing an attacker controls; past it, spending fails
/// closed rather than forgetting one.
const MAX_REMEMBERED: usize = 100_000;

/// Spent approvals in this process's memory.
#[derive(Debug, Default)]
pub struct InMemorySpent {
    spent: Mutex<HashMap<String, SystemTime>>,
}

impl SpentApprovals for InMemorySpent {
    fn is_spent(&self, key: &str, now: SystemTime) -> Spending {
        let spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        match spent.get(key) {
            Some(until) if *until >= now => Spending::AlreadySpent,
            _ => Spending::Unspent,
        }
    }

    fn spend(&self, spend: &Spend, now: SystemTime) -> Spending {
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        if spent.get(&spend.key).is_some_and(|until| *until >= now) {
            return Spending::AlreadySpent;
        }
        if spent.len() >= MAX_REMEMBERED {
            spent.retain(|_, until| *until >= now);
            if spent.len() >= MAX_REMEMBERED {
                return Spending::Unknown(format!(
                    "{MAX_REMEMBERED} unexpired approvals are already remembered as spent"
                ));
            }
        }
        spent.insert(spend.key.clone(), spend.not_after);
        Spending::Spent
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn payload(reason: &str) -> ApprovalPayload {
        ApprovalPayload::parse(&format!(
            r#"{{"apiVersion":"blastguard.io/v1","kind":"Approval","target":{{"group":"apps","kind":"Deployment","namespace":"prod","name":"api"}},"operation":"scale","replicas":45,"notBefore":"2026-11-22T10:00:00Z","notAfter":"2026-11-22T12:00:00Z","reason":"{reason}"}}"#
        ))
        .unwrap()
    }

    #[test]
    fn an_approval_is_spent_once_and_remembered_until_its_not_after() {
        let spent = InMemorySpent::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let until = now + Duration::from_secs(60);
        let one = Spend::of(&payload("a"), until, "agent", "uid-1");
        assert_eq!(spent.is_spent(&one.key, now), Spending::Unspent);
        assert_eq!(spent.spend(&one, now), Spending::Spent);
        assert_eq!(spent.is_spent(&one.key, now), Spending::AlreadySpent);
        assert_eq!(spent.spend(&one, now), Spending::AlreadySpent);
        // Another approval of the same change is another approval.
        let other = Spend::of(&payload("b"), until, "agent", "uid-2");
        assert_ne!(one.key, other.key);
        assert_eq!(spent.spend(&other, now), Spending::Spent);
        // Past notAfter it could admit nothing anyway; it may be forgotten.
        let later = until + Duration::from_secs(1);
        assert_eq!(spent.is_spent(&one.key, later), Spending::Unspent);
    }

    #[test]
    fn the_key_is_the_payload_not_its_text() {
        let text = payload("a").to_json();
        let with_newline = ApprovalPayload::parse(&format!("{text}\n")).unwrap();
        assert_eq!(key(&payload("a")), key(&with_newline));
        assert!(
            Spend::of(&payload("a"), SystemTime::UNIX_EPOCH, "u", "1")
                .target
                .contains("replicas=45")
        );
    }
}
