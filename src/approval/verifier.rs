//! The rules of docs/design.md#approvals: is the approval on a change valid for exactly
//! this change, now?
//!
//! Checks run cheapest first, and no signature is verified before the payload is
//! known to bind to this change and the signing key is known to be trusted, so an
//! untrusted annotation costs at most a bounded parse.

use super::allowed_signers::{
    AllowedSigners, KeyTrust, PatternMatch, fingerprint, match_pattern_list, may_overlap,
};
use super::payload::{ApprovalPayload, PayloadError, SIGNATURE_NAMESPACE, rfc3339};
use super::sshsig::{self, ArmorError, VerifyError};
use super::{
    ApprovalContext, ApprovalOperation, ApprovalOutcome, ApprovalSubject, ApprovalVerifier, reason,
};
use crate::annotations::{APPROVAL, APPROVAL_SIGNATURE};
use crate::identity::fold_case;

/// Largest `blastguard.io/approval-signature` annotation read: 20 RSA-4096
/// signatures fit in 32 KiB.
pub const MAX_SIGNATURE_ANNOTATION_BYTES: usize = 64 * 1024;

/// Verifies approvals against an allowed_signers file.
#[derive(Debug, Clone, Default)]
pub struct SignedApprovals {
    signers: AllowedSigners,
}

/// Why an approval does not count: the metric label and the sentence for kubectl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A [`reason`] constant.
    pub reason: &'static str,
    /// What exactly is wrong.
    pub detail: String,
}

fn refuse(reason: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
    }
}

/// A signature that verified, by a trusted key.
struct Signer {
    /// 1-based position in the annotation.
    index: usize,
    /// The principals of every allowed_signers line that trusts the key.
    principals: String,
    /// Whether a principal of the key is the requesting user.
    is_requester: bool,
}

impl SignedApprovals {
    /// A verifier trusting the keys of `signers`.
    pub fn new(signers: AllowedSigners) -> Self {
        Self { signers }
    }

    /// The trusted keys.
    pub fn signers(&self) -> &AllowedSigners {
        &self.signers
    }

    fn judge(
        &self,
        ctx: &ApprovalContext<'_>,
        payload_text: &str,
        signature_text: &str,
    ) -> Result<Vec<String>, Refusal> {
        if signature_text.len() > MAX_SIGNATURE_ANNOTATION_BYTES {
            return Err(refuse(
                reason::TOO_LARGE,
                format!(
                    "{APPROVAL_SIGNATURE} is {} bytes long, more than the {MAX_SIGNATURE_ANNOTATION_BYTES} allowed",
                    signature_text.len()
                ),
            ));
        }
        let payload = ApprovalPayload::parse(payload_text).map_err(|e| {
            let label = match e {
                PayloadError::TooLarge(_) => reason::TOO_LARGE,
                _ => reason::MALFORMED,
            };
            refuse(label, format!("{APPROVAL}: {e}"))
        })?;
        binds_to(ctx.subject, &payload)?;
        match within_window(ctx, &payload) {
            // A GitOps controller restoring the signed state (super::restores).
            Err(r) if r.reason == reason::EXPIRED && super::restores(ctx.change, ctx.settings) => {}
            other => other?,
        }
        let signers = self.verified_signers(ctx, payload_text, signature_text)?;
        count_approvers(ctx, &signers)
    }

    /// Every signature must verify over the payload with a key trusted for the
    /// approval namespace now; returns who signed.
    fn verified_signers(
        &self,
        ctx: &ApprovalContext<'_>,
        payload_text: &str,
        signature_text: &str,
    ) -> Result<Vec<Signer>, Refusal> {
        let signatures = sshsig::parse_signatures(signature_text).map_err(|e| {
            let label = match e {
                ArmorError::TooMany | ArmorError::TooLong { .. } => reason::TOO_LARGE,
                ArmorError::WeakAlgorithm { .. } => reason::WEAK_ALGORITHM,
                _ => reason::MALFORMED,
            };
            refuse(label, format!("{APPROVAL_SIGNATURE}: {e}"))
        })?;
        let count = signatures.len();
        let mut signers = Vec::with_capacity(count);
        for (i, sig) in signatures.iter().enumerate() {
            let index = i + 1;
            let which = format!("signature {index} of {count}");
            if sig.namespace() != SIGNATURE_NAMESPACE {
                return Err(refuse(
                    reason::WRONG_NAMESPACE,
                    format!(
                        "{which} was made for signature namespace {:?}, not {SIGNATURE_NAMESPACE:?} (sign with ssh-keygen -Y sign -n {SIGNATURE_NAMESPACE})",
                        sig.namespace()
                    ),
                ));
            }
            let key = sig.public_key();
            let lines = match self.signers.trust(key, SIGNATURE_NAMESPACE, ctx.now) {
                KeyTrust::Trusted(lines) => lines,
                KeyTrust::NotListed => {
                    return Err(refuse(
                        reason::UNTRUSTED_KEY,
                        format!(
                            "{which} is by {} key {}, which is not in allowed_signers",
                            key.algorithm(),
                            fingerprint(key)
                        ),
                    ));
                }
                KeyTrust::Restricted(why) => {
                    return Err(refuse(
                        reason::UNTRUSTED_KEY,
                        format!(
                            "{which} is by key {}, which allowed_signers does not trust for approvals now: {}",
                            fingerprint(key),
                            why.join("; ")
                        ),
                    ));
                }
            };
            let principals = lines
                .iter()
                .map(|l| l.principals.as_str())
                .collect::<Vec<_>>()
                .join(",");
            sshsig::verify(sig, payload_text.as_bytes()).map_err(|e| {
                let detail = match e {
                    VerifyError::Invalid => format!(
                        "{which} (by {principals}) does not verify over the payload in {APPROVAL}: the payload was changed after it was signed, or the signature is for another payload"
                    ),
                    other => format!("{which} (by {principals}): {other}"),
                };
                refuse(reason::BAD_SIGNATURE, detail)
            })?;
            // Case-folded on both sides: `Dave@corp` may not approve `dave@corp`'s change.
            let username = fold_case(&ctx.change.requester.username);
            let is_requester = lines.iter().any(|l| {
                match_pattern_list(&username, &fold_case(&l.principals)) == PatternMatch::Yes
            });
            signers.push(Signer {
                index,
                principals,
                is_requester,
            });
        }
        Ok(signers)
    }
}

impl ApprovalVerifier for SignedApprovals {
    fn verify(&self, ctx: &ApprovalContext<'_>) -> ApprovalOutcome {
        let Some(annotations) = ctx.annotations else {
            return ApprovalOutcome::Missing;
        };
        let outcome = match (
            annotations.get(APPROVAL),
            annotations.get(APPROVAL_SIGNATURE),
        ) {
            (None, None) => return ApprovalOutcome::Missing,
            (None, Some(_)) => Err(refuse(
                reason::MALFORMED,
                format!("{APPROVAL_SIGNATURE} is set but {APPROVAL} (the signed payload) is not"),
            )),
            (Some(_), None) => Err(refuse(
                reason::UNSIGNED,
                format!("{APPROVAL} is set but has no {APPROVAL_SIGNATURE}"),
            )),
            (Some(payload), Some(signatures)) => self.judge(ctx, payload, signatures),
        };
        match outcome {
            Ok(signers) => ApprovalOutcome::Valid { signers },
            Err(Refusal { reason, detail }) => ApprovalOutcome::Rejected { reason, detail },
        }
    }
}

/// Target, operation and digest (or, for scale, exactly the replica count requested)
/// must be those of the change. A scale approval names one count: an approval to
/// scale to 45 never admits a scale to 0 (docs/approvals.md).
pub fn binds_to(subject: &ApprovalSubject, payload: &ApprovalPayload) -> Result<(), Refusal> {
    if payload.operation != subject.operation {
        return Err(refuse(
            reason::OPERATION_MISMATCH,
            format!(
                "it approves operation {:?}, but this request is a{} {:?}",
                payload.operation.as_str(),
                if subject.operation == ApprovalOperation::Apply {
                    "n"
                } else {
                    ""
                },
                subject.operation.as_str()
            ),
        ));
    }
    if payload.target != subject.target {
        return Err(refuse(
            reason::TARGET_MISMATCH,
            format!(
                "it approves {}, but this request is for {}",
                payload.target, subject.target
            ),
        ));
    }
    match subject.operation {
        ApprovalOperation::Apply | ApprovalOperation::Delete => {
            let approved = payload.digest.as_deref().unwrap_or_default();
            match subject.digest.as_deref() {
                Some(actual) if actual == approved => Ok(()),
                Some(actual) => Err(refuse(
                    reason::DIGEST_MISMATCH,
                    format!(
                        "it approves spec digest {approved}, but the object's spec has digest {actual}: the object was changed after it was approved"
                    ),
                )),
                None => Err(refuse(
                    reason::DIGEST_MISMATCH,
                    "the request carries no object whose digest could be compared",
                )),
            }
        }
        ApprovalOperation::Scale => {
            let approved = payload.replicas.unwrap_or(0);
            match subject.replicas {
                Some(requested) if requested == approved => Ok(()),
                Some(requested) => Err(refuse(
                    reason::REPLICAS_EXCEEDED,
                    format!("it approves scaling to exactly {approved} replicas, not {requested}"),
                )),
                None => Err(refuse(
                    reason::REPLICAS_EXCEEDED,
                    "the scale request carries no replica count to compare",
                )),
            }
        }
    }
}

/// notAfter − notBefore within maxTTL, and now within the window give or take the
/// policy's clock skew.
fn within_window(ctx: &ApprovalContext<'_>, payload: &ApprovalPayload) -> Result<(), Refusal> {
    let (not_before, not_after) = payload
        .window()
        .map_err(|e| refuse(reason::MALFORMED, format!("{APPROVAL}: {e}")))?;
    let settings = ctx.settings;
    let ttl = not_after.duration_since(not_before).unwrap_or_default();
    if ttl > settings.max_ttl {
        return Err(refuse(
            reason::TTL_TOO_LONG,
            format!(
                "it is valid for {}, longer than the policy's maxTTL of {}",
                humantime::format_duration(ttl),
                humantime::format_duration(settings.max_ttl)
            ),
        ));
    }
    let skew = settings.clock_skew;
    if ctx.now + skew < not_before {
        return Err(refuse(
            reason::NOT_YET_VALID,
            format!(
                "it is valid only from {} (now is {})",
                payload.not_before,
                rfc3339(ctx.now)
            ),
        ));
    }
    if ctx
        .now
        .checked_sub(skew)
        .is_some_and(|earliest| earliest > not_after)
    {
        return Err(refuse(
            reason::EXPIRED,
            format!(
                "it expired at {} (now is {})",
                payload.not_after,
                rfc3339(ctx.now)
            ),
        ));
    }
    Ok(())
}

/// Distinct principals, the requester left out, must reach `requiredApprovals`.
fn count_approvers(ctx: &ApprovalContext<'_>, signers: &[Signer]) -> Result<Vec<String>, Refusal> {
    let required = ctx.rule.required_approvals as usize;
    let candidates: Vec<&Signer> = signers.iter().filter(|s| !s.is_requester).collect();
    // Group signers who could be the same person; each group is one approver.
    let mut groups: Vec<Vec<&Signer>> = Vec::new();
    for signer in candidates {
        let joined: Vec<usize> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| {
                g.iter()
                    .any(|o| may_overlap(&o.principals, &signer.principals))
            })
            .map(|(i, _)| i)
            .collect();
        let mut merged = vec![signer];
        for i in joined.into_iter().rev() {
            merged.extend(groups.remove(i));
        }
        merged.sort_by_key(|s| s.index);
        groups.push(merged);
    }
    groups.sort_by_key(|g| g[0].index);
    let missing = missing_from_groups(ctx, &groups);
    let from_groups = missing_text(&missing);
    if groups.len() >= required && missing.is_empty() {
        return Ok(groups.iter().map(|g| g[0].principals.clone()).collect());
    }
    if groups.len() >= required {
        return Err(refuse(
            reason::APPROVER_GROUPS_UNMET,
            format!(
                "signed by {} distinct approvers, but rule {:?} {from_groups}",
                groups.len(),
                ctx.rule.name
            ),
        ));
    }
    // The approver reading the denial needs the number still missing, not a sum to do.
    let more = required.saturating_sub(groups.len());
    let mut tally = format!(
        "{} of the {required} distinct approvers rule {:?} requires; {more} more {} needed",
        groups.len(),
        ctx.rule.name,
        if more == 1 { "is" } else { "are" }
    );
    if !missing.is_empty() {
        tally.push_str(&format!("; the rule {from_groups}"));
    }
    if let Some(own) = signers.iter().find(|s| s.is_requester) {
        return Err(refuse(
            reason::SELF_APPROVAL,
            format!(
                "signature {} is by {}, which is the requesting user {:?}: a requester cannot approve their own change ({tally})",
                own.index, own.principals, ctx.change.requester.username
            ),
        ));
    }
    if let Some(group) = groups.iter().find(|g| g.len() > 1) {
        let indexes: Vec<String> = group.iter().map(|s| s.index.to_string()).collect();
        return Err(refuse(
            reason::NOT_ENOUGH_APPROVERS,
            format!(
                "signatures {} are all by {}, counted once ({tally})",
                indexes.join(", "),
                group[0].principals
            ),
        ));
    }
    Err(refuse(
        reason::NOT_ENOUGH_APPROVERS,
        format!("signed by {tally}"),
    ))
}

/// The rule's approver-group terms still unmet by these approvers (each a set of
/// signatures counted as one person): `(group, how many more)`. Each person fills at
/// most one place of one term, so the same signer never counts for two groups; the
/// places are filled by maximum bipartite matching, so the order of signatures never
/// makes an approval fail that some assignment would meet.
fn missing_from_groups(ctx: &ApprovalContext<'_>, people: &[Vec<&Signer>]) -> Vec<(String, u32)> {
    let terms = &ctx.rule.approvers;
    if terms.is_empty() {
        return Vec::new();
    }
    // Which terms each person may fill: a principal of one of their keys is listed
    // in the term's group (exactly, case-folded; a pattern principal is no member).
    let member_of = |person: &Vec<&Signer>, group: &str| {
        let Some(members) = ctx.settings.groups.get(group) else {
            return false;
        };
        person.iter().any(|s| {
            s.principals
                .split(',')
                .any(|p| members.contains(&fold_case(p.trim())))
        })
    };
    let slots: Vec<usize> = terms
        .iter()
        .enumerate()
        .flat_map(|(t, term)| std::iter::repeat_n(t, term.count as usize))
        .collect();
    let can: Vec<Vec<bool>> = people
        .iter()
        .map(|p| {
            slots
                .iter()
                .map(|&t| member_of(p, &terms[t].group))
                .collect()
        })
        .collect();
    // slot -> person
    let mut filled: Vec<Option<usize>> = vec![None; slots.len()];
    fn augment(
        person: usize,
        can: &[Vec<bool>],
        filled: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for slot in 0..filled.len() {
            if can[person][slot] && !seen[slot] {
                seen[slot] = true;
                if filled[slot].is_none_or(|other| augment(other, can, filled, seen)) {
                    filled[slot] = Some(person);
                    return true;
                }
            }
        }
        false
    }
    for person in 0..people.len() {
        let mut seen = vec![false; slots.len()];
        augment(person, &can, &mut filled, &mut seen);
    }
    let mut missing: Vec<(String, u32)> = Vec::new();
    for (slot, &t) in slots.iter().enumerate() {
        if filled[slot].is_none() {
            match missing.iter_mut().find(|(g, _)| *g == terms[t].group) {
                Some((_, n)) => *n += 1,
                None => missing.push((terms[t].group.clone(), 1)),
            }
        }
    }
    missing
}

/// `needs 1 more from sre and 2 more from payments-owners`.
fn missing_text(missing: &[(String, u32)]) -> String {
    let parts: Vec<String> = missing
        .iter()
        .map(|(group, n)| format!("{n} more from {group}"))
        .collect();
    format!("needs {}", parts.join(" and "))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use serde_json::json;
    use ssh_key::HashAlg;
    use ssh_key::private::{Ed25519Keypair, KeypairData, PrivateKey};

    use super::*;
    use crate::approval::{allowed_signers::AllowedSigners, sshsig::armor};
    use crate::change::Change;
    use crate::policy::Policy;
    use crate::testing::Req;

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::new(
            KeypairData::Ed25519(Ed25519Keypair::from_seed(&[seed; 32])),
            "",
        )
        .unwrap()
    }

    fn change(requester: &'static str) -> Change {
        let deployment = |image: &str| {
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "api", "namespace": "prod"},
                "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "a", "image": image}]}}}
            })
        };
        let body = Req::update("Deployment", "prod", deployment("a:1"), deployment("a:2"))
            .user(requester)
            .body();
        let request = crate::review::decode(&body).unwrap();
        Change::from_view(&request, &Policy::embedded()).unwrap()
    }

    struct Case {
        name: &'static str,
        requester: &'static str,
        /// Edits the payload the signers sign.
        edit: fn(&mut ApprovalPayload),
        /// (key seed, namespace) per signature.
        signatures: &'static [(u8, &'static str)],
        /// Edits the payload text after signing.
        tamper: fn(&mut String),
        /// Index of the rule in the embedded policy (0 protected: 2 approvers, 1 default: 1).
        rule: usize,
        want: Result<&'static [&'static str], &'static str>,
        want_detail: &'static str,
    }

    const NS: &str = SIGNATURE_NAMESPACE;
    const HOUR: Duration = Duration::from_secs(3600);

    fn run(case: &Case, verifier: &SignedApprovals, now: SystemTime) -> ApprovalOutcome {
        let change = change(case.requester);
        let subject = ApprovalSubject::of(&change).unwrap();
        let mut payload = subject.payload(now, 2 * HOUR, "test");
        (case.edit)(&mut payload);
        let text = payload.to_json();
        let signatures: String = case
            .signatures
            .iter()
            .map(|(seed, ns)| {
                armor(
                    &key(*seed)
                        .sign(ns, HashAlg::Sha512, text.as_bytes())
                        .unwrap(),
                )
                .unwrap()
            })
            .collect();
        let mut text = text;
        (case.tamper)(&mut text);
        let annotations: BTreeMap<String, String> = [
            (APPROVAL.to_string(), text),
            (APPROVAL_SIGNATURE.to_string(), signatures),
        ]
        .into_iter()
        .collect();
        let policy = Policy::embedded();
        verifier.verify(&ApprovalContext {
            change: &change,
            subject: &subject,
            annotations: Some(&annotations),
            rule: &policy.rules[case.rule],
            settings: &policy.approvals,
            now,
        })
    }

    fn rfc(t: SystemTime) -> String {
        rfc3339(t)
    }

    #[test]
    fn the_rules_of_design_section_3() {
        let now = SystemTime::now();
        let signers = AllowedSigners::parse(&format!(
            "alice@corp {}\nbob@corp {}\nalice@corp {}\ncarol@corp namespaces=\"file\" {}\n*@contractors {}\nstraße@corp {}\n",
            key(1).public_key().to_openssh().unwrap(),
            key(2).public_key().to_openssh().unwrap(),
            key(3).public_key().to_openssh().unwrap(),
            key(5).public_key().to_openssh().unwrap(),
            key(6).public_key().to_openssh().unwrap(),
            key(7).public_key().to_openssh().unwrap(),
        ))
        .unwrap();
        let verifier = SignedApprovals::new(signers);
        let none = |_: &mut ApprovalPayload| {};
        let keep = |_: &mut String| {};
        let ai = "system:serviceaccount:ai-agents:claude";
        let cases = [
            Case {
                name: "two distinct approvers",
                requester: ai,
                edit: none,
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Ok(&["alice@corp", "bob@corp"]),
                want_detail: "",
            },
            Case {
                name: "one approver where one is required",
                requester: ai,
                edit: none,
                signatures: &[(2, NS)],
                tamper: keep,
                rule: 1,
                want: Ok(&["bob@corp"]),
                want_detail: "",
            },
            Case {
                name: "too few approvers",
                requester: ai,
                edit: none,
                signatures: &[(1, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::NOT_ENOUGH_APPROVERS),
                want_detail: "1 of the 2 distinct approvers rule \"protected\" requires; 1 more is needed",
            },
            Case {
                name: "two keys of one principal count once",
                requester: ai,
                edit: none,
                signatures: &[(1, NS), (3, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::NOT_ENOUGH_APPROVERS),
                want_detail: "signatures 1, 2 are all by alice@corp, counted once",
            },
            Case {
                name: "the same signature twice counts once",
                requester: ai,
                edit: none,
                signatures: &[(2, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::NOT_ENOUGH_APPROVERS),
                want_detail: "counted once",
            },
            Case {
                name: "the requester does not count",
                requester: "alice@corp",
                edit: none,
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::SELF_APPROVAL),
                want_detail: "requesting user \"alice@corp\"",
            },
            Case {
                name: "the requester in another case does not count",
                requester: "Alice@Corp",
                edit: none,
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::SELF_APPROVAL),
                want_detail: "requesting user \"Alice@Corp\"",
            },
            Case {
                name: "Unicode case folding: sharp s folds to ss",
                requester: "STRASSE@CORP",
                edit: none,
                signatures: &[(7, NS)],
                tamper: keep,
                rule: 1,
                want: Err(reason::SELF_APPROVAL),
                want_detail: "requesting user \"STRASSE@CORP\"",
            },
            Case {
                name: "a wildcard principal matching the requester does not count",
                requester: "eve@contractors",
                edit: none,
                signatures: &[(6, NS)],
                tamper: keep,
                rule: 1,
                want: Err(reason::SELF_APPROVAL),
                want_detail: "*@contractors",
            },
            Case {
                name: "a wildcard principal not matching the requester counts",
                requester: ai,
                edit: none,
                signatures: &[(6, NS)],
                tamper: keep,
                rule: 1,
                want: Ok(&["*@contractors"]),
                want_detail: "",
            },
            Case {
                name: "untrusted key",
                requester: ai,
                edit: none,
                signatures: &[(1, NS), (4, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::UNTRUSTED_KEY),
                want_detail: "signature 2 of 2 is by ssh-ed25519 key SHA256:",
            },
            Case {
                name: "key listed only for another namespace",
                requester: ai,
                edit: none,
                signatures: &[(5, NS)],
                tamper: keep,
                rule: 1,
                want: Err(reason::UNTRUSTED_KEY),
                want_detail: "only for signature namespaces \"file\"",
            },
            Case {
                name: "signed in another namespace",
                requester: ai,
                edit: none,
                signatures: &[(1, NS), (2, "file")],
                tamper: keep,
                rule: 0,
                want: Err(reason::WRONG_NAMESPACE),
                want_detail: "namespace \"file\"",
            },
            Case {
                name: "payload edited after signing",
                requester: ai,
                edit: none,
                signatures: &[(1, NS), (2, NS)],
                tamper: |t| *t = t.replace("\"test\"", "\"tested\""),
                rule: 0,
                want: Err(reason::BAD_SIGNATURE),
                want_detail: "does not verify over the payload",
            },
            Case {
                name: "another object",
                requester: ai,
                edit: |p| p.target.name = "web".into(),
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::TARGET_MISMATCH),
                want_detail: "it approves Deployment prod/web (group apps), but this request is for Deployment prod/api",
            },
            Case {
                name: "another namespace",
                requester: ai,
                edit: |p| p.target.namespace = "staging".into(),
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::TARGET_MISMATCH),
                want_detail: "staging/api",
            },
            Case {
                name: "another kind",
                requester: ai,
                edit: |p| p.target.kind = "StatefulSet".into(),
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::TARGET_MISMATCH),
                want_detail: "StatefulSet",
            },
            Case {
                name: "another group",
                requester: ai,
                edit: |p| p.target.group = "extensions".into(),
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::TARGET_MISMATCH),
                want_detail: "group extensions",
            },
            Case {
                name: "another operation",
                requester: ai,
                edit: |p| p.operation = ApprovalOperation::Delete,
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::OPERATION_MISMATCH),
                want_detail: "it approves operation \"delete\", but this request is an \"apply\"",
            },
            Case {
                name: "another spec",
                requester: ai,
                edit: |p| p.digest = Some(format!("sha256:{}", "0".repeat(64))),
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::DIGEST_MISMATCH),
                want_detail: "changed after it was approved",
            },
            Case {
                name: "expired",
                requester: ai,
                edit: |p| {
                    let now = SystemTime::now();
                    p.not_before = rfc(now - 3 * HOUR);
                    p.not_after = rfc(now - 2 * HOUR)
                },
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::EXPIRED),
                want_detail: "it expired at",
            },
            Case {
                name: "expired within the clock skew",
                requester: ai,
                edit: |p| {
                    let now = SystemTime::now();
                    p.not_before = rfc(now - HOUR);
                    p.not_after = rfc(now - Duration::from_secs(30))
                },
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Ok(&["alice@corp", "bob@corp"]),
                want_detail: "",
            },
            Case {
                name: "not yet valid",
                requester: ai,
                edit: |p| {
                    let now = SystemTime::now();
                    p.not_before = rfc(now + HOUR);
                    p.not_after = rfc(now + 2 * HOUR)
                },
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::NOT_YET_VALID),
                want_detail: "valid only from",
            },
            Case {
                name: "not yet valid within the clock skew",
                requester: ai,
                edit: |p| {
                    let now = SystemTime::now();
                    p.not_before = rfc(now + Duration::from_secs(30));
                    p.not_after = rfc(now + HOUR)
                },
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Ok(&["alice@corp", "bob@corp"]),
                want_detail: "",
            },
            Case {
                name: "validity longer than maxTTL",
                requester: ai,
                edit: |p| {
                    let now = SystemTime::now();
                    p.not_before = rfc(now);
                    p.not_after = rfc(now + 25 * HOUR)
                },
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Err(reason::TTL_TOO_LONG),
                want_detail: "longer than the policy's maxTTL of 1day",
            },
            Case {
                name: "validity of exactly maxTTL",
                requester: ai,
                edit: |p| {
                    let now = SystemTime::now();
                    p.not_before = rfc(now);
                    p.not_after = rfc(now + 24 * HOUR)
                },
                signatures: &[(1, NS), (2, NS)],
                tamper: keep,
                rule: 0,
                want: Ok(&["alice@corp", "bob@corp"]),
                want_detail: "",
            },
            Case {
                name: "unknown field",
                requester: ai,
                edit: none,
                signatures: &[(1, NS), (2, NS)],
                tamper: |t| *t = t.replacen('{', "{\"approvedBy\":\"ceo\",", 1),
                rule: 0,
                want: Err(reason::MALFORMED),
                want_detail: "unknown field `approvedBy`",
            },
        ];
        for case in &cases {
            let outcome = run(case, &verifier, now);
            match (&outcome, case.want) {
                (ApprovalOutcome::Valid { signers }, Ok(want)) => {
                    assert_eq!(signers, want, "{}", case.name)
                }
                (ApprovalOutcome::Rejected { reason, detail }, Err(want)) => {
                    assert_eq!(*reason, want, "{}: {detail}", case.name);
                    assert!(
                        detail.contains(case.want_detail),
                        "{}: {detail:?} lacks {:?}",
                        case.name,
                        case.want_detail
                    );
                }
                _ => panic!("{}: got {outcome:?}, want {:?}", case.name, case.want),
            }
        }
    }

    #[test]
    fn annotations_missing_or_half_present() {
        let change = change("bot");
        let subject = ApprovalSubject::of(&change).unwrap();
        let policy = Policy::embedded();
        let verifier = SignedApprovals::default();
        let judge = |pairs: &[(&str, String)]| {
            let annotations: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            verifier.verify(&ApprovalContext {
                change: &change,
                subject: &subject,
                annotations: Some(&annotations),
                rule: &policy.rules[0],
                settings: &policy.approvals,
                now: SystemTime::now(),
            })
        };
        assert_eq!(judge(&[]), ApprovalOutcome::Missing);
        assert_eq!(
            judge(&[(APPROVAL, "{}".into())]).metric_label(),
            reason::UNSIGNED
        );
        assert_eq!(
            judge(&[(APPROVAL_SIGNATURE, "x".into())]).metric_label(),
            reason::MALFORMED
        );
        let huge = "A".repeat(1 << 20);
        assert_eq!(
            judge(&[(APPROVAL, huge.clone()), (APPROVAL_SIGNATURE, "x".into())]).metric_label(),
            reason::TOO_LARGE
        );
        assert_eq!(
            judge(&[(APPROVAL, "{}".into()), (APPROVAL_SIGNATURE, huge)]).metric_label(),
            reason::TOO_LARGE
        );
        let outcome = verifier.verify(&ApprovalContext {
            change: &change,
            subject: &subject,
            annotations: None,
            rule: &policy.rules[0],
            settings: &policy.approvals,
            now: SystemTime::now(),
        });
        assert_eq!(outcome, ApprovalOutcome::Missing);
    }

    /// docs/design.md#policy: approver groups. alice and bob are SRE, carol owns
    /// payments, dave is in both; "payments" needs 2 approvers, 1 from sre and 1 from
    /// payments-owners, each a different signer.
    #[test]
    fn approver_groups_of_design_section_4() {
        let now = SystemTime::now();
        let signers = AllowedSigners::parse(&format!(
            "alice@corp {}\nbob@corp {}\ncarol@corp {}\ndave@corp {}\n*@contractors {}\n",
            key(1).public_key().to_openssh().unwrap(),
            key(2).public_key().to_openssh().unwrap(),
            key(3).public_key().to_openssh().unwrap(),
            key(4).public_key().to_openssh().unwrap(),
            key(5).public_key().to_openssh().unwrap(),
        ))
        .unwrap();
        let verifier = SignedApprovals::new(signers);
        let policy = |required: u32, terms: &str| {
            Policy::from_yaml(
                &format!(
                    "apiVersion: blastguard.io/v1alpha1\nkind: BlastRadiusPolicy\nspec:\n  rules:\n  - name: payments\n    namespaces: [\"*\"]\n    limits: {{maxPodsAffected: 0}}\n    requiredApprovals: {required}\n    approvers: {terms}\n  approvals:\n    groups:\n      sre: [alice@corp, Bob@Corp, dave@corp]\n      payments-owners: [carol@corp, dave@corp]\n      contractors: [\"eve@contractors\"]\n"
                ),
                None,
            )
            .unwrap()
        };
        let both = "[{group: sre, count: 1}, {group: payments-owners, count: 1}]";
        /// (name, requiredApprovals, approvers terms, signing key seeds, valid signers
        /// or a part of the refusal).
        type GroupCase<'a> = (&'a str, u32, &'a str, &'a [u8], Result<usize, &'a str>);
        let cases: &[GroupCase] = &[
            ("one of each group", 2, both, &[1, 3], Ok(2)),
            (
                "alice and a non-member: payments-owners missing",
                2,
                both,
                &[1, 5],
                Err("needs 1 more from payments-owners"),
            ),
            (
                "two SREs: payments-owners missing",
                2,
                both,
                &[1, 2],
                Err("needs 1 more from payments-owners"),
            ),
            (
                "dave alone counts for one group only",
                1,
                both,
                &[4],
                Err("needs 1 more from"),
            ),
            (
                "dave and alice: dave fills payments-owners",
                2,
                both,
                &[1, 4],
                Ok(2),
            ),
            ("order does not matter: dave first", 2, both, &[4, 1], Ok(2)),
            ("principals match case-folded", 2, both, &[2, 3], Ok(2)),
            (
                "too few approvers names the groups too",
                3,
                both,
                &[1, 3],
                Err("1 more is needed"),
            ),
            (
                "two from sre",
                2,
                "[{group: sre, count: 2}]",
                &[1, 3],
                Err("needs 1 more from sre"),
            ),
            (
                "nothing but contractors: a pattern principal is no member",
                1,
                "[{group: contractors, count: 1}]",
                &[5],
                Err("needs 1 more from contractors"),
            ),
            ("no terms: the total alone", 2, "[]", &[1, 5], Ok(2)),
        ];
        let change = change("system:serviceaccount:ai-agents:claude");
        let subject = ApprovalSubject::of(&change).unwrap();
        let text = subject.payload(now, 2 * HOUR, "").to_json();
        for (name, required, terms, seeds, want) in cases {
            let policy = policy(*required, terms);
            let signatures: String = seeds
                .iter()
                .map(|seed| {
                    armor(
                        &key(*seed)
                            .sign(NS, HashAlg::Sha512, text.as_bytes())
                            .unwrap(),
                    )
                    .unwrap()
                })
                .collect();
            let annotations: BTreeMap<String, String> = [
                (APPROVAL.to_string(), text.clone()),
                (APPROVAL_SIGNATURE.to_string(), signatures),
            ]
            .into_iter()
            .collect();
            let outcome = verifier.verify(&ApprovalContext {
                change: &change,
                subject: &subject,
                annotations: Some(&annotations),
                rule: &policy.rules[0],
                settings: &policy.approvals,
                now,
            });
            match (want, &outcome) {
                (Ok(n), ApprovalOutcome::Valid { signers }) => {
                    assert_eq!(signers.len(), *n, "{name}")
                }
                (
                    Err(detail),
                    ApprovalOutcome::Rejected {
                        reason,
                        detail: got,
                    },
                ) => {
                    assert!(got.contains(detail), "{name}: {got}");
                    assert!(crate::approval::insufficient(&outcome), "{name}: {reason}");
                    if seeds.len() >= *required as usize {
                        assert_eq!(*reason, reason::APPROVER_GROUPS_UNMET, "{name}");
                    }
                }
                _ => panic!("{name}: {outcome:?}"),
            }
        }
    }
}
