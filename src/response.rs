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

/// The AdmissionReview answering the request with `uid`, from its verdict: the JSON
/// that `review::encode(respond(uid, change, verdict))` writes (a test holds the two
/// equal), written straight into the body. Nothing is built first: no
/// AdmissionResponse and its map of audit annotations, and the denial message is
/// escaped into the body as it is composed instead of built as a String and copied.
pub fn write_review(uid: &str, change: Option<&Change>, verdict: &Verdict) -> Vec<u8> {
    let deny = change.is_some() && verdict.decision == Decision::Deny;
    // A denial carries its message (a few KB with the payload); an allowed answer
    // fits in 512 bytes with its audit annotations.
    let mut out = Vec::with_capacity(if deny { 4096 } else { 512 });
    out.extend_from_slice(b"{\"apiVersion\":\"");
    out.extend_from_slice(crate::review::API_VERSION.as_bytes());
    out.extend_from_slice(b"\",\"kind\":\"");
    out.extend_from_slice(crate::review::KIND.as_bytes());
    out.extend_from_slice(b"\",\"response\":{\"uid\":");
    push_json_string(&mut out, uid);
    match change {
        Some(change) if deny => {
            out.extend_from_slice(b",\"allowed\":false,\"status\":{\"status\":\"Failure\",\"code\":403");
            const MESSAGE: &[u8] = b",\"message\":\"";
            let start = out.len();
            out.extend_from_slice(MESSAGE);
            let _ = write_denial(change, verdict, &mut JsonText(&mut out));
            if out.len() == start.saturating_add(MESSAGE.len()) {
                // An empty message is left out, as kube-rs's Status leaves it.
                out.truncate(start);
            } else {
                out.push(b'"');
            }
            out.extend_from_slice(b",\"reason\":\"Forbidden\"}");
        }
        _ => out.extend_from_slice(b",\"allowed\":true,\"status\":{}"),
    }
    out.extend_from_slice(b",\"auditAnnotations\":{");
    let mut first = true;
    each_audit_annotation(verdict, |key, value| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        push_json_string(&mut out, key);
        out.push(b':');
        push_json_string(&mut out, value);
    });
    out.push(b'}');
    if let Some(change) = change {
        let mut warnings = match verdict.decision {
            Decision::Warn => warnings(change, verdict),
            _ => Vec::new(),
        };
        if let Some(u) = &verdict.findings.unavailable
            && verdict.decision.allowed()
        {
            warnings.push(truncate(unavailable_warning(u), MAX_WARNING_CHARS));
        }
        if verdict.decision == Decision::Warn || !warnings.is_empty() {
            out.extend_from_slice(b",\"warnings\":[");
            for (i, w) in warnings.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_string(&mut out, w);
            }
            out.push(b']');
        }
    }
    out.extend_from_slice(b"}}");
    out
}

/// `text` as a JSON string literal.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let _ = JsonText(out).write_str(text);
    out.push(b'"');
}

/// Text written into a JSON string literal (between its quotes), escaped as
/// serde_json escapes: the quote, the backslash and the control characters.
struct JsonText<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for JsonText<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let hex = |n: u8| char::from_digit(u32::from(n), 16).map_or(b'0', |c| c as u8);
        let mut rest = text;
        while let Some(at) = rest.bytes().position(|b| b == b'"' || b == b'\\' || b < 0x20) {
            let (plain, tail) = rest.split_at(at);
            self.0.extend_from_slice(plain.as_bytes());
            let Some(b) = tail.bytes().next() else { break };
            match b {
                b'"' => self.0.extend_from_slice(b"\\\""),
                b'\\' => self.0.extend_from_slice(b"\\\\"),
                b'\n' => self.0.extend_from_slice(b"\\n"),
                b'\r' => self.0.extend_from_slice(b"\\r"),
                b'\t' => self.0.extend_from_slice(b"\\t"),
                0x08 => self.0.extend_from_slice(b"\\b"),
                0x0c => self.0.extend_from_slice(b"\\f"),
                _ => {
                    self.0.extend_from_slice(b"\\u00");
                    self.0.extend_from_slice(&[hex(b.wrapping_shr(4)), hex(b & 0x0f)]);
                }
            }
            // The escaped byte is ASCII, so what follows it starts a character.
            rest = tail.get(1..).unwrap_or_default();
        }
        self.0.extend_from_slice(rest.as_bytes());
        Ok(())
    }
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
    each_audit_annotation(v, |key, value| {
        a.insert(key.to_string(), value.to_string());
    });
    a
}

/// Each audit annotation of a verdict, in a fixed order.
fn each_audit_annotation(v: &Verdict, mut annotate: impl FnMut(&str, &str)) {
    annotate("decision", v.decision.as_str());
    annotate("reason", v.reason.as_str());
    let f = &v.findings;
    if let Some((rule, mode)) = &f.rule {
        annotate("rule", rule);
        annotate("mode", mode.as_str());
    }
    if let Some(signal) = &f.signal {
        annotate("ai-signal", &signal.to_string());
    }
    if let Some(r) = &f.radius {
        annotate("pods-affected", &r.pods_affected.to_string());
    }
    if let Some((first, rest)) = f.violations.split_first() {
        let mut names = first.limit_name().to_string();
        for v in rest {
            names.push(',');
            names.push_str(v.limit_name());
        }
        annotate("limits-exceeded", &names);
    }
    if let Some(approval) = &f.approval {
        annotate("approval", approval.metric_label());
    }
    if let Some(d) = &v.digest {
        annotate("digest", d);
    }
    if let Some(u) = &f.unavailable {
        annotate("cluster-state-unavailable", &u.what);
    }
    if let Some(c) = &f.capped {
        annotate("change-set-capped", c.cap);
    }
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
    let mut m = String::new();
    let _ = write_denial(change, v, &mut m);
    m
}

/// Writes the [`denial_message`] into `m` as it is composed.
fn write_denial(change: &Change, v: &Verdict, m: &mut impl std::fmt::Write) -> std::fmt::Result {
    let (rule, mode) = rule_name(v);
    let f = &v.findings;
    if v.reason == Reason::ClusterUnavailable {
        return m.write_str(&unavailable_message(change, v));
    }
    if v.reason == Reason::ChangeSetCapped {
        return m.write_str(&capped_message(change, v));
    }
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
    m.write_str("\nOver the limits:")?;
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
                // The inbox's record is named by the subject alone, so the name is
                // known here without asking the inbox (docs/approvals.md, "The inbox").
                if !change.dry_run {
                    let name = crate::approval::request::record_name(&payload.subject());
                    let _ = write!(
                        m,
                        "\nWhere the cluster keeps the approval inbox, this change waits as ApprovalRequest {name}: \
                         approvers run kubectl blastguard show {name}, then kubectl blastguard approve {name}; \
                         then retry the very same change"
                    );
                }
            }
        }
        None if v.reason == Reason::Unmeasurable => m.write_str(
            "\nNo approval lifts a change that cannot be measured: make what could not be read readable (or ask a cluster administrator), then retry.",
        )?,
        None => m.write_str(
            "\nThis change cannot be bound to an approval (its digest could not be computed); ask a cluster administrator.",
        )?,
    }
    Ok(())
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

/// The denial of a change that fits its limits, held because one of its change sets
/// is new and the cap on shared change-set records bit: counted by this replica
/// alone, the budget would not bind the others (docs/security.md, "Records without
/// bound").
fn capped_message(change: &Change, v: &Verdict) -> String {
    let (rule, mode) = rule_name(v);
    let what = v
        .findings
        .capped
        .as_ref()
        .map_or_else(|| "a change set needs a new record".to_string(), ToString::to_string);
    format!(
        "blastguard: this AI-assisted {} of {} fits the limits of rule {rule:?} (mode {}), but {what}: \
         counted by this replica alone, its budget would not bind the other replicas, so blastguard holds \
         new AI change sets until there is room (reason change_set_capped).\n\
         Retry in a few seconds: records of changes that never happen (reviews the API server did not send) \
         go within seconds, and expired ones are collected. If this persists, see the metric \
         blastguard_change_set_records_capped_total and docs/security.md (\"Records without bound\").",
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
    if v.reason == Reason::ChangeSetCapped {
        return vec![truncate(
            format!(
                "blastguard: AI-assisted {} of {} would be held in enforce mode: change-set records at their cap",
                verb(change),
                change.target
            ),
            MAX_WARNING_CHARS,
        )];
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;
    use crate::approval::NoTrustedSigners;
    use crate::engine::Engine;
    use crate::policy::{ApproverTerm, Policy};
    use crate::verdict::Unavailable;

    /// What kube-rs writes for the same answer: the reference the direct writer is
    /// held to.
    fn through_kube(uid: &str, change: Option<&Change>, verdict: &Verdict) -> Value {
        serde_json::from_slice(&crate::review::encode(respond(uid, change, verdict))).unwrap()
    }

    /// The verdicts of every fixture's review, and each varied through every branch of
    /// the answer: warn, deny and allow, with and without the cluster's state, a
    /// payload, approver groups, an approval short of approvers, an unmeasurable or
    /// undigestable change.
    #[test]
    fn the_direct_answer_is_kube_rs_answer() {
        let engine = Engine::new(Policy::embedded(), Arc::new(NoTrustedSigners));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut checked = 0;
        let mut denials = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let reviewed = engine.review(&std::fs::read(&path).unwrap());
            let judged = reviewed.judged().unwrap();
            let written: Value = serde_json::from_slice(&judged.body).unwrap();
            let change = judged.change.as_ref();
            assert_eq!(
                written,
                through_kube(&judged.uid, change, &judged.verdict),
                "{}",
                path.display()
            );
            checked += 1;
            let Some(change) = change else { continue };
            let payload = judged.verdict.payload.clone().or_else(|| {
                crate::approval::ApprovalSubject::of(change)
                    .ok()
                    .map(|s| s.payload(std::time::SystemTime::now(), std::time::Duration::from_secs(60), ""))
            });
            for decision in [Decision::Allow, Decision::Warn, Decision::Deny] {
                for reason in [
                    Reason::OverLimits,
                    Reason::ClusterUnavailable,
                    Reason::ChangeSetCapped,
                    Reason::Unmeasurable,
                    Reason::WithinLimits,
                ] {
                    for variant in 0..6 {
                        let mut v = judged.verdict.clone();
                        v.decision = decision;
                        v.reason = reason;
                        match variant {
                            1 => v.payload = None,
                            2 => v.payload = payload.clone(),
                            3 => {
                                v.payload = payload.clone();
                                v.required_approvals = 2;
                                v.approver_groups = vec![ApproverTerm {
                                    group: "sre \"on call\"\n".into(),
                                    count: 1,
                                }];
                                v.findings.approval = Some(ApprovalOutcome::Rejected {
                                    reason: crate::approval::reason::NOT_ENOUGH_APPROVERS,
                                    detail: "1 of 2 \u{1}\t\\".into(),
                                });
                            }
                            4 => {
                                v.findings.unavailable = Some(Unavailable {
                                    what: "namespace labels".into(),
                                    deny: true,
                                });
                                v.findings.capped = Some(crate::change_sets::Capped {
                                    key: "change-id:\"x\"\n".into(),
                                    cap: "requester",
                                    limit: 100,
                                });
                                v.findings.approval = Some(ApprovalOutcome::Rejected {
                                    reason: crate::approval::reason::EXPIRED,
                                    detail: "expired at 2026-01-01T00:00:00Z".into(),
                                });
                            }
                            5 => {
                                v.digest = Some("sha256:00".into());
                                v.findings.violations.clear();
                                v.findings.rule = None;
                            }
                            _ => {}
                        }
                        let uid = "u\"id\u{7f}é";
                        let written: Value =
                            serde_json::from_slice(&write_review(uid, Some(change), &v)).unwrap();
                        assert_eq!(written, through_kube(uid, Some(change), &v), "{}", path.display());
                        if decision == Decision::Deny && reason == Reason::ChangeSetCapped {
                            // It names the cap and says what to do.
                            let message = denial_message(change, &v);
                            assert!(message.contains("reason change_set_capped"), "{message}");
                            assert!(message.contains("Retry in a few seconds"), "{message}");
                            if variant == 4 {
                                assert!(message.contains("(the cap per requester)"), "{message}");
                            }
                        }
                        denials += usize::from(decision == Decision::Deny);
                    }
                }
            }
        }
        assert!(checked >= 8, "only {checked} fixtures");
        assert!(denials >= 100, "only {denials} denials");
    }

    /// A real denial an approval could lift names the inbox's record of it, so the
    /// requester can tell the approvers (docs/approvals.md, "The inbox"); a dry run,
    /// which records nothing, does not.
    #[test]
    fn a_denial_names_the_approval_request_it_waits_as() {
        let engine = Engine::new(Policy::embedded(), Arc::new(NoTrustedSigners));
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/deployment-create-ai-prod.json");
        let mut review: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let reviewed = engine.review(review.to_string().as_bytes());
        let judged = reviewed.judged().unwrap();
        assert_eq!(judged.verdict.reason, Reason::OverLimits);
        let payload = judged.verdict.payload.as_ref().expect("a payload to sign");
        let name = crate::approval::request::record_name(&payload.subject());
        let message = |judged: &crate::engine::Judged| {
            let written: Value = serde_json::from_slice(&judged.body).unwrap();
            written["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let denied = message(judged);
        assert!(
            denied.contains(&format!(
                "this change waits as ApprovalRequest {name}: approvers run kubectl blastguard show {name}"
            )),
            "{denied}"
        );
        review["request"]["dryRun"] = Value::Bool(true);
        let dry = engine.review(review.to_string().as_bytes());
        let dry = message(dry.judged().unwrap());
        assert!(dry.contains("must sign this exact payload"), "{dry}");
        assert!(!dry.contains("ApprovalRequest"), "{dry}");
    }

}
