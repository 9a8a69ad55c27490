//! Verdict: allow, warn or deny, from what the earlier stages found. Pure: no I/O, no
//! clock.

use crate::approval::{ApprovalOutcome, ApprovalPayload};
use crate::change_sets::Capped;
use crate::policy::Mode;
use crate::provenance::Signal;
use crate::radius::{Radius, Violation};

/// The decision sent to the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted without a word to the client.
    Allow,
    /// Admitted, with warnings shown to the client.
    Warn,
    /// Rejected with code 403 and a message saying how to get an approval.
    Deny,
}

impl Decision {
    /// Lowercase name for logs, metrics and audit annotations.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Warn => "warn",
            Decision::Deny => "deny",
        }
    }

    /// Whether the API server admits the request.
    pub fn allowed(self) -> bool {
        self != Decision::Deny
    }
}

/// Why the decision was reached (a stable metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No AI signal: the fast path.
    NotAiAssisted,
    /// No rule matches the namespace.
    NoMatchingRule,
    /// AI-assisted and within every limit.
    WithinLimits,
    /// Over a limit, with a valid approval.
    Approved,
    /// Over a limit without a valid approval.
    OverLimits,
    /// A field the pod count depends on could not be read; no approval lifts it.
    Unmeasurable,
    /// Within the limits as far as they could be checked, but cluster state the
    /// decision needs could not be read in time, and the policy says
    /// `onClusterUnavailable: deny`.
    ClusterUnavailable,
    /// Within the limits, but one of its change sets is new and the cap on shared
    /// change-set records bit, so the count could not bind the other replicas (which
    /// could then admit up to twice its budget between them). Whatever the policy's
    /// `onClusterUnavailable`: the cap is a forger's lever (docs/security.md).
    ChangeSetCapped,
}

impl Reason {
    /// snake_case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotAiAssisted => "not_ai_assisted",
            Reason::NoMatchingRule => "no_matching_rule",
            Reason::WithinLimits => "within_limits",
            Reason::Approved => "approved",
            Reason::OverLimits => "over_limits",
            Reason::Unmeasurable => "unmeasurable",
            Reason::ClusterUnavailable => "cluster_unavailable",
            Reason::ChangeSetCapped => "change_set_capped",
        }
    }
}

/// What the rules found for one change: the input of [`decide`].
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// The AI signal, if any.
    pub signal: Option<Signal>,
    /// The matched rule's name and effective mode.
    pub rule: Option<(String, Mode)>,
    /// How far the change reaches (only measured for AI-assisted changes).
    pub radius: Option<Radius>,
    /// Limits exceeded.
    pub violations: Vec<Violation>,
    /// The approval verifier's answer (only asked when over a limit).
    pub approval: Option<ApprovalOutcome>,
    /// Cluster state the decision needed but could not read in time.
    pub unavailable: Option<Unavailable>,
    /// A change set of the change that only this replica could count (a cap on
    /// shared records bit).
    pub capped: Option<Capped>,
}

/// Cluster state one decision needed (namespace labels, change-set counts, a parent's
/// approval) but could not read from the API server within its time budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// What could not be read, for the person reading kubectl output.
    pub what: String,
    /// The policy's `onClusterUnavailable` is `deny`.
    pub deny: bool,
}

/// The full result of evaluating one change.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Allow, warn or deny.
    pub decision: Decision,
    /// The rule that decided, as the `reason` label and audit annotation name it.
    pub reason: Reason,
    /// What the rules found.
    pub findings: Findings,
    /// The payload an approver would sign to lift the limits (when over a limit and
    /// not approved).
    pub payload: Option<ApprovalPayload>,
    /// `requiredApprovals` of the matched rule.
    pub required_approvals: u32,
    /// The matched rule's `approvers` terms (signers needed from approver groups).
    pub approver_groups: Vec<crate::policy::ApproverTerm>,
    /// The digest the change is bound to, if computed.
    pub digest: Option<String>,
}

/// The decision for a set of findings.
pub fn decide(f: &Findings) -> (Decision, Reason) {
    if f.signal.is_none() {
        return (Decision::Allow, Reason::NotAiAssisted);
    }
    let Some((_, mode)) = &f.rule else {
        return (Decision::Allow, Reason::NoMatchingRule);
    };
    let by_mode = match mode {
        Mode::Enforce => Decision::Deny,
        Mode::Warn => Decision::Warn,
        Mode::Audit => Decision::Allow,
    };
    if f.violations.is_empty() {
        // Only an admission can rest on a count that binds one replica alone, or on
        // state that was not read: a change over its limits is held anyway, and a
        // valid approval binds this very change.
        if f.capped.is_some() {
            return (by_mode, Reason::ChangeSetCapped);
        }
        if f.unavailable.as_ref().is_some_and(|u| u.deny) {
            return (by_mode, Reason::ClusterUnavailable);
        }
        return (Decision::Allow, Reason::WithinLimits);
    }
    if f.violations
        .iter()
        .any(|v| matches!(v, Violation::Unmeasurable(_)))
    {
        return (by_mode, Reason::Unmeasurable);
    }
    if matches!(f.approval, Some(ApprovalOutcome::Valid { .. })) {
        return (Decision::Allow, Reason::Approved);
    }
    (by_mode, Reason::OverLimits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(
        ai: bool,
        mode: Option<Mode>,
        over: bool,
        approval: Option<ApprovalOutcome>,
    ) -> Findings {
        Findings {
            signal: ai.then(|| Signal::User("bot".into())),
            rule: mode.map(|m| ("r".to_string(), m)),
            radius: None,
            violations: if over {
                vec![Violation::NodeWide]
            } else {
                vec![]
            },
            approval,
            unavailable: None,
            capped: None,
        }
    }

    #[test]
    fn decision_table() {
        let valid = || {
            Some(ApprovalOutcome::Valid {
                signers: vec!["alice".into()],
            })
        };
        let rejected = || {
            Some(ApprovalOutcome::Rejected {
                reason: "expired",
                detail: String::new(),
            })
        };
        use Decision::{Allow, Deny};
        use Mode::{Audit, Enforce};
        use Reason::*;
        let cases = [
            (
                findings(false, Some(Enforce), true, None),
                Allow,
                NotAiAssisted,
            ),
            (findings(true, None, true, None), Allow, NoMatchingRule),
            (
                findings(true, Some(Enforce), false, None),
                Allow,
                WithinLimits,
            ),
            (findings(true, Some(Enforce), true, None), Deny, OverLimits),
            (
                findings(true, Some(Enforce), true, rejected()),
                Deny,
                OverLimits,
            ),
            (
                findings(true, Some(Enforce), true, valid()),
                Allow,
                Approved,
            ),
            (
                findings(true, Some(Mode::Warn), true, None),
                Decision::Warn,
                OverLimits,
            ),
            (
                findings(true, Some(Mode::Warn), false, None),
                Allow,
                WithinLimits,
            ),
            (findings(true, Some(Audit), true, None), Allow, OverLimits),
            (findings(true, Some(Audit), true, valid()), Allow, Approved),
        ];
        for (i, (f, decision, reason)) in cases.iter().enumerate() {
            assert_eq!(decide(f), (*decision, *reason), "case {i}: {f:?}");
        }
    }

    #[test]
    fn unreadable_cluster_state_holds_only_what_would_be_admitted() {
        let unavailable = |deny| {
            Some(Unavailable {
                what: "change set user:bot".into(),
                deny,
            })
        };
        let with = |mut f: Findings, deny| {
            f.unavailable = unavailable(deny);
            f
        };
        use Decision::{Allow, Deny};
        use Mode::{Audit, Enforce};
        use Reason::*;
        let valid = Some(ApprovalOutcome::Valid {
            signers: vec!["alice".into()],
        });
        let cases = [
            (
                with(findings(true, Some(Enforce), false, None), true),
                Deny,
                ClusterUnavailable,
            ),
            (
                with(findings(true, Some(Enforce), false, None), false),
                Allow,
                WithinLimits,
            ),
            (
                with(findings(true, Some(Mode::Warn), false, None), true),
                Decision::Warn,
                ClusterUnavailable,
            ),
            (
                with(findings(true, Some(Audit), false, None), true),
                Allow,
                ClusterUnavailable,
            ),
            (
                with(findings(true, Some(Enforce), true, None), true),
                Deny,
                OverLimits,
            ),
            (
                with(findings(true, Some(Enforce), true, valid), true),
                Allow,
                Approved,
            ),
            (
                with(findings(false, Some(Enforce), false, None), true),
                Allow,
                NotAiAssisted,
            ),
        ];
        for (i, (f, decision, reason)) in cases.iter().enumerate() {
            assert_eq!(decide(f), (*decision, *reason), "case {i}: {f:?}");
        }
    }

    /// Issue 19: past a cap on change-set records a new set is counted by one replica
    /// alone, so two could admit twice its budget. What rests on that count is held,
    /// in every mode's way and whatever `onClusterUnavailable` says; what does not
    /// rest on it (over the limits anyway, approved, a person's change) is decided
    /// as before.
    #[test]
    fn a_change_set_past_the_record_cap_holds_only_what_would_be_admitted() {
        let capped = |mut f: Findings| {
            f.capped = Some(Capped {
                key: "user:bot".into(),
                cap: "total",
                limit: 5_000,
            });
            f
        };
        let unavailable_allowed = |mut f: Findings| {
            f.unavailable = Some(Unavailable {
                what: "change set user:bot".into(),
                deny: false,
            });
            f
        };
        use Decision::{Allow, Deny};
        use Mode::{Audit, Enforce};
        use Reason::*;
        let valid = Some(ApprovalOutcome::Valid {
            signers: vec!["alice".into()],
        });
        let cases = [
            (
                capped(findings(true, Some(Enforce), false, None)),
                Deny,
                ChangeSetCapped,
            ),
            (
                capped(unavailable_allowed(findings(
                    true,
                    Some(Enforce),
                    false,
                    None,
                ))),
                Deny,
                ChangeSetCapped,
            ),
            (
                capped(findings(true, Some(Mode::Warn), false, None)),
                Decision::Warn,
                ChangeSetCapped,
            ),
            (
                capped(findings(true, Some(Audit), false, None)),
                Allow,
                ChangeSetCapped,
            ),
            (
                capped(findings(true, Some(Enforce), true, None)),
                Deny,
                OverLimits,
            ),
            (
                capped(findings(true, Some(Enforce), true, valid)),
                Allow,
                Approved,
            ),
            (
                capped(findings(false, Some(Enforce), false, None)),
                Allow,
                NotAiAssisted,
            ),
            (
                capped(findings(true, None, false, None)),
                Allow,
                NoMatchingRule,
            ),
        ];
        for (i, (f, decision, reason)) in cases.iter().enumerate() {
            assert_eq!(decide(f), (*decision, *reason), "case {i}: {f:?}");
        }
    }
}
