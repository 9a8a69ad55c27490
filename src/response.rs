//! Turning a Verdict into the AdmissionResponse: the message a person reads in kubectl,
//! warnings, and audit annotations.

use std::collections::HashMap;
use std::fmt::Write as _;

use kube::core::admission::AdmissionResponse;

use crate::approval::{ApprovalOperation, ApprovalOutcome, payload::SIGNATURE_NAMESPACE};
use crate::change::Change;
use crate::policy::Mode;
use crate::verdict::{Decision, Reason, Unavailable, Verdict};

/// How an approver signs into a manifest. `--agent` is named beside `--key` because a
/// passphrase-protected key (the usual kind) can only sign through ssh-agent.
pub const APPROVE_HINT: &str = "blastguard approve -f <manifest> --annotate --key ~/.ssh/id_ed25519 \
     (passphrase-protected key: --agent --key ~/.ssh/id_ed25519.pub)";

/// Signing with plain OpenSSH, for approvers without blastguard.
pub const SSH_KEYGEN_HINT: &str =
    "ssh-keygen -Y sign -n approval@blastguard.io -f ~/.ssh/id_ed25519 payload.json";

/// Longest warning line; the API server's guidance for warnings.
pub const MAX_WARNING_CHARS: usize = 120;

/// The response to the request with `uid`, from its verdict. `change` is the
/// normalized change, which every AI-assisted verdict has; a person's change is
/// allowed without one.
pub fn respond(uid: &str, change: Option<&Change>, verdict: &Verdict) -> AdmissionResponse {
    let mut response = crate::review::response_for(uid);
    response.audit_annotations = audit_annotations(verdict);
    let Some(change) = change else {
        return response;
    };
    match verdict.decision {
        Decision::Deny => {
            response = response.deny(denial_message(change, verdict));
            // AdmissionResponse::deny sets no code; 403 makes kubectl say "Forbidden".
            response.result.code = 403;
            response.result.reason = "Forbidden".to_string();
            response.result.status = Some(kube::core::response::StatusSummary::Failure);
        }
        Decision::Warn => response.warnings = Some(warnings(change, verdict)),
        Decision::Allow => {}
    }
    // An admission that rests on what this replica knew, not on what the cluster
    // knows, says so to the person applying the change.
    if let Some(u) = &verdict.findings.unavailable
        && verdict.decision.allowed()
    {
        response
            .warnings
            .get_or_insert_with(Vec::new)
            .push(truncate(unavailable_warning(u), MAX_WARNING_CHARS));
    }
    response
}

/// The warning on a change admitted without the cluster state it needed.
fn unavailable_warning(u: &Unavailable) -> String {
    format!(
        "blastguard: decided without the cluster's state: {} not read in time",
        u.what
    )
}

/// The audit annotations recorded with every decision (the API server prefixes the
/// webhook's name).
pub fn audit_annotations(v: &Verdict) -> HashMap<String, String> {
    let mut a = HashMap::new();
    a.insert("decision".to_string(), v.decision.as_str().to_string());
    a.insert("reason".to_string(), v.reason.as_str().to_string());
    let f = &v.findings;
    if let Some((rule, mode)) = &f.rule {
        a.insert("rule".to_string(), rule.clone());
        a.insert("mode".to_string(), mode.as_str().to_string());
    }
    if let Some(signal) = &f.signal {
        a.insert("ai-signal".to_string(), signal.to_string());
    }
    if let Some(r) = &f.radius {
        a.insert("pods-affected".to_string(), r.pods_affected.to_string());
    }
    if !f.violations.is_empty() {
        let names: Vec<_> = f.violations.iter().map(|v| v.limit_name()).collect();
        a.insert("limits-exceeded".to_string(), names.join(","));
    }
    if let Some(approval) = &f.approval {
        a.insert("approval".to_string(), approval.metric_label().to_string());
    }
    if let Some(d) = &v.digest {
        a.insert("digest".to_string(), d.clone());
    }
    if let Some(u) = &f.unavailable {
        a.insert("cluster-state-unavailable".to_string(), u.what.clone());
    }
    a
}

fn rule_name(v: &Verdict) -> (&str, Mode) {
    v.findings
        .rule
        .as_ref()
        .map(|(n, m)| (n.as_str(), *m))
        .unwrap_or(("", Mode::Enforce))
}

/// The denial message: signal, each limit with measured value, the rule, and how to
/// get approval. Written to be understood in one read of kubectl output.
pub fn denial_message(change: &Change, v: &Verdict) -> String {
    let (rule, mode) = rule_name(v);
    let f = &v.findings;
    if v.reason == Reason::ClusterUnavailable {
        return unavailable_message(change, v);
    }
    let mut m = String::new();
    let _ = write!(
        m,
        "blastguard: this AI-assisted {} of {} exceeds the blast-radius limits of rule {rule:?} (mode {}).",
        verb(change),
        change.target,
        mode.as_str()
    );
    if let Some(signal) = &f.signal {
        let _ = write!(m, "\nAI signal: {signal}.");
    }
    m.push_str("\nOver the limits:");
    for violation in &f.violations {
        let _ = write!(m, "\n  - {violation}");
    }
    let insufficient = f
        .approval
        .as_ref()
        .is_some_and(crate::approval::insufficient);
    match &f.approval {
        Some(ApprovalOutcome::Rejected { detail, .. }) if insufficient => {
            let _ = write!(
                m,
                "\nThe approval on the object is valid but not yet enough: {detail}."
            );
        }
        Some(ApprovalOutcome::Rejected { detail, .. }) => {
            let _ = write!(
                m,
                "\nThe approval on the object was not accepted: {detail}."
            );
        }
        _ => {}
    }
    if let Some(u) = &f.unavailable {
        let _ = write!(
            m,
            "\nNote: {} could not be read from the API server in time; this decision used what blastguard knew.",
            u.what
        );
    }
    match &v.payload {
        Some(payload) => {
            let n = v.required_approvals;
            let mut approvers = if n == 1 {
                "1 approver".to_string()
            } else {
                format!("{n} distinct approvers")
            };
            if !v.approver_groups.is_empty() {
                let terms: Vec<String> = v
                    .approver_groups
                    .iter()
                    .map(|t| format!("{} from {}", t.count, t.group))
                    .collect();
                approvers.push_str(&format!(
                    " (among them, each a different signer: {})",
                    terms.join(", ")
                ));
            }
            let on = match payload.operation {
                ApprovalOperation::Apply => "to this object".to_string(),
                ApprovalOperation::Delete => {
                    "to the object before deleting it".to_string()
                }
                ApprovalOperation::Scale => format!("to {} (the scaled workload)", change.target),
            };
            if insufficient {
                // The signatures already made are over these exact bytes: print the
                // annotation as it is on the object, not a re-serialization of it.
                let text = change
                    .approval_annotations()
                    .and_then(|a| a.get(crate::annotations::APPROVAL))
                    .cloned()
                    .unwrap_or_else(|| payload.to_json());
                let _ = write!(
                    m,
                    "\nTo proceed, more approvers listed in allowed_signers (not the requester) sign the payload already \
                     on the object (annotation blastguard.io/approval, repeated here) and append their signatures to \
                     blastguard.io/approval-signature {on}, keeping the signatures there, then retry:\n{text}\n\
                     Each next approver runs, on the manifest that carries the approval: {APPROVE_HINT} \
                     (or signs payload.json with: {SSH_KEYGEN_HINT}, then attaches it with \
                     blastguard approve -f <manifest> --signature payload.json.sig --annotate)"
                );
            } else {
                let _ = write!(
                    m,
                    "\nTo proceed, {approvers} listed in allowed_signers (not the requester) must sign this exact payload \
                     (SSH signature namespace {SIGNATURE_NAMESPACE}); add it as annotation blastguard.io/approval and the \
                     signatures as blastguard.io/approval-signature {on}, then retry:\n{}\n\
                     Save that line as payload.json; each approver signs it into the manifest with: \
                     {APPROVE_HINT} --payload payload.json \
                     (or: {SSH_KEYGEN_HINT}, then blastguard approve -f <manifest> --payload payload.json \
                     --signature payload.json.sig --annotate)",
                    payload.to_json()
                );
            }
        }
        None if v.reason == Reason::Unmeasurable => m.push_str(
            "\nNo approval lifts a change that cannot be measured: make what could not be read readable (or ask a cluster administrator), then retry.",
        ),
        None => m.push_str(
            "\nThis change cannot be bound to an approval (its digest could not be computed); ask a cluster administrator.",
        ),
    }
    m
}

/// The denial of a change that fits its limits as far as they could be checked, held
/// because the cluster state they depend on could not be read (`onClusterUnavailable:
/// deny`).
fn unavailable_message(change: &Change, v: &Verdict) -> String {
    let (rule, mode) = rule_name(v);
    let what = v
        .findings
        .unavailable
        .as_ref()
        .map_or("cluster state", |u| u.what.as_str());
    format!(
        "blastguard: this AI-assisted {} of {} fits the limits of rule {rule:?} (mode {}) as far as they \
         could be checked, but {what} could not be read from the API server in time, and the policy holds \
         AI-assisted changes until it can (onClusterUnavailable: deny).\n\
         Retry in a moment. If this persists, blastguard cannot reach the API server: see its logs and the \
         metric blastguard_cluster_unavailable_decisions_total.",
        verb(change),
        change.target,
        mode.as_str()
    )
}

fn verb(change: &Change) -> &'static str {
    if change.is_scale() {
        return "scale";
    }
    match change.operation {
        crate::change::Operation::Create => "create",
        crate::change::Operation::Update => "update",
        crate::change::Operation::Delete => "delete",
        crate::change::Operation::Connect => "connect",
    }
}

/// Warn-mode warnings, each at most [`MAX_WARNING_CHARS`] characters.
pub fn warnings(change: &Change, v: &Verdict) -> Vec<String> {
    let (rule, _) = rule_name(v);
    if v.reason == Reason::ClusterUnavailable {
        // Only the unavailability warning that respond() adds applies.
        return vec![truncate(
            format!(
                "blastguard: AI-assisted {} of {} would be held in enforce mode (rule {rule:?})",
                verb(change),
                change.target
            ),
            MAX_WARNING_CHARS,
        )];
    }
    let mut out = vec![format!(
        "blastguard: AI-assisted {} of {} is over the limits of rule {rule:?} (warn mode)",
        verb(change),
        change.target
    )];
    for violation in &v.findings.violations {
        out.push(format!("blastguard: {violation}"));
    }
    out.push(format!(
        "blastguard: in enforce mode this needs {} signed approval(s); see `blastguard digest`",
        v.required_approvals
    ));
    out.into_iter()
        .map(|w| truncate(w, MAX_WARNING_CHARS))
        .collect()
}

fn truncate(mut s: String, max: usize) -> String {
    if s.chars().count() > max {
        let cut = s
            .char_indices()
            .nth(max.saturating_sub(1))
            .map_or(s.len(), |(i, _)| i);
        s.truncate(cut);
        s.push('…');
    }
    s
}
