#![allow(dead_code)] // Each fuzz target uses one of these functions.

//! What each fuzz target does with one input. Shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and by `tests/fuzz_regressions.rs`, which replays every
//! kept crash input through exactly these functions, so a fixed finding stays fixed.
//!
//! Beyond "does not panic", each function checks a property that must hold for every
//! input the parser accepts (a round trip, or that what was read is usable), so the
//! fuzzer also finds inputs that are read wrongly, not only inputs that crash.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use blastguard::approval::allowed_signers::{AllowedSigners, KeyTrust, match_pattern_list};
use blastguard::approval::payload::SIGNATURE_NAMESPACE;
use blastguard::approval::sshsig;
use blastguard::approval::verifier::SignedApprovals;
use blastguard::approval::{ApprovalPayload, ApprovalVerifier};
use blastguard::engine::Engine;
use blastguard::policy::Policy;

/// The key that signed the approvals in `fuzz/seeds/review` (made by
/// `fuzz/make-seeds.py`): trusted here, so seeded approvals verify and mutations of
/// them reach every check of the verifier.
const FUZZ_SIGNERS: &str = include_str!("seeds/allowed_signers/fuzz-approver");

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(Policy::embedded)
}

fn verifier() -> Arc<dyn ApprovalVerifier> {
    static VERIFIER: OnceLock<Arc<dyn ApprovalVerifier>> = OnceLock::new();
    VERIFIER
        .get_or_init(|| {
            let signers = AllowedSigners::parse(FUZZ_SIGNERS).expect("the fuzz key parses");
            Arc::new(SignedApprovals::new(signers))
        })
        .clone()
}

/// The whole engine on one request body, as the webhook hands it over: the
/// AdmissionReview reader, the change, provenance, radius, policy, approval and the
/// response. A fresh engine per input, so an input's outcome does not depend on the
/// inputs before it (change sets and remembered workloads live in the engine).
pub fn review(data: &[u8]) {
    let engine = Engine::new(policy().clone(), verifier());
    let _ = engine.review(data);
    // The same body again, now with the first one's change set and workload
    // remembered: the paths that read state across requests.
    let _ = engine.review(data);
}

/// An approval annotation: whatever parses must print back to the same payload, since
/// the printed form is what approvers sign.
pub fn approval_payload(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(payload) = ApprovalPayload::parse(text) else {
        return;
    };
    let printed = payload.to_json();
    let again = ApprovalPayload::parse(&printed)
        .unwrap_or_else(|e| panic!("printed payload {printed} does not parse: {e}"));
    assert_eq!(again, payload, "payload changes when printed and read back");
}

/// The `approval-signature` annotation: every signature read must armour back to one
/// that reads the same, and verifying it over any payload answers without panicking.
pub fn sshsig(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(signatures) = sshsig::parse_signatures(text) else {
        return;
    };
    for sig in &signatures {
        let armored = sshsig::armor(sig).expect("a parsed signature armours");
        let again = sshsig::parse_signatures(&armored)
            .unwrap_or_else(|e| panic!("armoured signature does not parse: {e}\n{armored}"));
        assert_eq!(again.as_slice(), std::slice::from_ref(sig));
        let _ = sshsig::verify(sig, data);
    }
}

/// An allowed_signers file: every key line read must trust its key for some use, and
/// the principal patterns must answer for any name.
pub fn allowed_signers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(signers) = AllowedSigners::parse(text) else {
        return;
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for signer in &signers.signers {
        let _ = signers.trust(&signer.key, SIGNATURE_NAMESPACE, now);
        // Every line names its key, so the key is at least listed.
        assert!(
            !matches!(
                signers.trust(&signer.key, SIGNATURE_NAMESPACE, now),
                KeyTrust::NotListed
            ),
            "line {} lists a key the file then does not know",
            signer.line
        );
        let _ = match_pattern_list(text, &signer.principals);
    }
}

/// A policy file: a policy that loads must load again from its own JSON form (JSON is
/// YAML, and a reader that disagrees with itself would make `check` and `serve` apply
/// different policies), and find a rule for any namespace without panicking.
pub fn policy_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::from_yaml(text, None) else {
        return;
    };
    let json = serde_json::to_string(&policy.document).expect("a policy document serializes");
    let again = Policy::from_yaml(&json, None)
        .unwrap_or_else(|e| panic!("the policy's JSON form does not load: {e}\n{json}"));
    assert_eq!(again.document, policy.document);
    let labels = BTreeMap::from([("tier".to_string(), "critical".to_string())]);
    for namespace in ["", "prod", "kube-system", text] {
        let _ = policy.rule_for_labels(namespace, None);
        let _ = policy.rule_for_labels(namespace, Some(&labels));
    }
}
