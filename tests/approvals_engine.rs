//! Signed approvals as the engine reads them (docs/approvals.md), with keys and
//! signatures from the real `ssh-keygen`: a denial carries the exact payload to sign,
//! signatures of every key type lift the limits, a SHA-1 RSA signature is refused, a key
//! removed from allowed_signers stops counting, scale approvals are read from the parent
//! workload, delete approvals from the object deleted, and an approval admits its change
//! once.
//!
//! The AdmissionReview bodies stand in for the Kubernetes API server: they are built the
//! way it builds them (object JSON from `kubectl ... -o json`, the request's kind,
//! resource, subresource, userInfo and options; tests/common/review.rs) and fed to
//! `Engine::review`, the same entry point the HTTPS server calls. Keys, the engine and the
//! reviews are in tests/common/approvals.rs.

mod common;

use std::time::{Duration, SystemTime};

use blastguard::approval::payload::SIGNATURE_NAMESPACE;
use blastguard::approval::{ApprovalOutcome, ApprovalPayload, load_verifier, reason};
use serde_json::{Value, json};

use common::approvals::*;
use common::objects::{deployment, with_approval};
use common::reviewed::{message, outcome, payload_from_denial, response};

#[test]
fn a_denial_carries_the_exact_payload_to_sign_and_the_digest() {
    let engine = engine();
    let object = deployment("prod", "api", 40, "nginx:1.27");
    let before = SystemTime::now();
    let denied = engine.review(&workload_review("CREATE", Some(&object), None, AI));
    assert!(!denied.allowed());
    let response = response(&denied);
    assert_eq!(response["status"]["code"], 403);
    let text = payload_from_denial(&denied);
    let payload = ApprovalPayload::parse(&text).unwrap();
    assert_eq!(
        payload.target.to_string(),
        "Deployment prod/api (group apps)"
    );
    assert_eq!(payload.operation.as_str(), "apply");
    let (not_before, not_after) = payload.window().unwrap();
    assert!(not_before <= SystemTime::now() && not_before + Duration::from_secs(1) >= before);
    assert_eq!(not_after.duration_since(not_before).unwrap(), 2 * HOUR);
    assert_eq!(
        response["auditAnnotations"]["digest"].as_str(),
        payload.digest.as_deref()
    );
    let message = message(&denied);
    assert!(message.contains("2 distinct approvers"), "{message}");
    assert!(message.contains("blastguard approve -f"), "{message}");
    assert!(
        message.contains("ssh-keygen -Y sign -n approval@blastguard.io"),
        "{message}"
    );

    // The approvers sign exactly that line and the retry goes through.
    let approved = with_approval(object, &text, &sign_all(&["alice", "bob"], &text));
    let retry = engine.review(&workload_review("CREATE", Some(&approved), None, AI));
    assert_approved(&retry, &["alice@corp.example", "bob@corp.example"]);
}

#[test]
fn ssh_keygen_signatures_of_every_key_type_are_accepted() {
    let engine = engine();
    // staging: the default rule, one approver.
    for key in ["alice", "alice-laptop", "bob", "carol"] {
        // An editor's trailing newline in the signed file is accepted too. Each its
        // own change: an approval admits its change once.
        for suffix in ["", "\n"] {
            let name = format!("api-{key}{}", suffix.len());
            let object = deployment("staging", &name, 40, "nginx:1.27");
            let denied = engine.review(&workload_review("CREATE", Some(&object), None, AI));
            assert!(!denied.allowed(), "{key}");
            let payload = payload_from_denial(&denied);
            let sig = sign(key, &payload, suffix, SIGNATURE_NAMESPACE);
            let approved = with_approval(object.clone(), &payload, &sig);
            let retry = engine.review(&workload_review("CREATE", Some(&approved), None, AI));
            let principal = if key.starts_with("alice") {
                "alice@corp.example"
            } else {
                &format!("{key}@corp.example")
            };
            assert_approved(&retry, &[principal]);
        }
    }
    // prod: two approvers of three, RSA among them.
    let object = deployment("prod", "web", 12, "nginx:1.27");
    let payload =
        payload_from_denial(&engine.review(&workload_review("CREATE", Some(&object), None, AI)));
    let approved = with_approval(
        object,
        &payload,
        &sign_all(&["carol", "bob", "alice"], &payload),
    );
    let retry = engine.review(&workload_review("CREATE", Some(&approved), None, AI));
    assert_approved(
        &retry,
        &[
            "carol@corp.example",
            "bob@corp.example",
            "alice@corp.example",
        ],
    );
}

#[test]
fn a_sha1_rsa_signature_is_refused() {
    // ssh-keygen never makes an ssh-rsa (SHA-1) SSHSIG any more; rewrite the
    // algorithm name inside a real RSA signature the way an attacker would.
    use ssh_encoding::base64::{Base64, Encoding};
    let engine = engine();
    let object = deployment("staging", "legacy", 40, "nginx:1.27");
    let payload = payload_from_denial(&engine.review(&create(&object)));
    let armored = sign("carol", &payload, "", SIGNATURE_NAMESPACE);
    let body: String = armored
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let blob = Base64::decode_vec(&body).unwrap();
    let needle = b"\x00\x00\x00\x0crsa-sha2-512";
    let at = blob
        .windows(needle.len())
        .rposition(|w| w == needle)
        .unwrap();
    let mut forged = blob[..at].to_vec();
    forged.extend_from_slice(b"\x00\x00\x00\x07ssh-rsa");
    forged.extend_from_slice(&blob[at + needle.len()..]);
    // Fix the length of the signature string that now is 5 bytes shorter.
    let sig_len_at = at - 4;
    let old = u32::from_be_bytes(forged[sig_len_at..at].try_into().unwrap());
    forged[sig_len_at..at].copy_from_slice(&(old - 5).to_be_bytes());
    let text = format!(
        "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n",
        Base64::encode_string(&forged)
    );
    let reviewed = engine.review(&create(&with_approval(object, &payload, &text)));
    assert!(!reviewed.allowed());
    match outcome(&reviewed) {
        ApprovalOutcome::Rejected { reason, detail } => {
            assert_eq!(reason, reason::WEAK_ALGORITHM, "{detail}");
            assert!(detail.contains("SHA-1 algorithm ssh-rsa"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_key_removed_from_allowed_signers_stops_counting_after_reload() {
    let engine = engine();
    let object = deployment("prod", "api", 40, "nginx:1.27");
    let payload = payload_from_denial(&engine.review(&create(&object)));
    let approved = with_approval(object, &payload, &sign_all(&["alice", "bob"], &payload));
    assert!(engine.review(&create(&approved)).allowed());

    let dir = tempfile::tempdir().unwrap();
    let without_bob: String = std::fs::read_to_string(keys().allowed_signers())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("bob@"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = dir.path().join("allowed_signers");
    std::fs::write(&path, &without_bob).unwrap();
    engine.set_verifier(load_verifier(&path).unwrap());
    let reviewed = engine.review(&create(&approved));
    assert!(!reviewed.allowed());
    assert_eq!(outcome(&reviewed).metric_label(), reason::UNTRUSTED_KEY);
    assert!(
        message(&reviewed).contains("ecdsa-sha2-nistp384 key SHA256:"),
        "{}",
        message(&reviewed)
    );

    // A broken file does not load; the caller keeps the verifier it had.
    std::fs::write(&path, format!("{without_bob}*@corp.example cert-authority ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti\n")).unwrap();
    let lines = without_bob.lines().count();
    let error = load_verifier(&path)
        .err()
        .expect("cert-authority is refused")
        .to_string();
    assert!(
        error.contains(&format!(
            "line {}: cert-authority is not supported",
            lines + 1
        )),
        "{error}"
    );
    assert!(error.contains(&path.display().to_string()), "{error}");
}

#[test]
fn scale_approvals_are_read_from_the_parent_workload() {
    let engine = engine();
    // The workload exists with 5 replicas (within the default rule's limits).
    let five = deployment("staging", "worker", 5, "busybox:1.36");
    assert!(engine.review(&create(&five)).allowed());
    // The agent scales it to 30: over the limit, and the denial says what to sign.
    let denied = engine.review(&scale_review("staging", "worker", 5, 30));
    assert!(!denied.allowed());
    let payload = payload_from_denial(&denied);
    let parsed = ApprovalPayload::parse(&payload).unwrap();
    assert_eq!(
        (parsed.operation.as_str(), parsed.replicas, parsed.digest),
        ("scale", Some(30), None)
    );
    assert!(message(&denied).contains("to Deployment staging/worker (the scaled workload)"));

    // The approval goes on the workload (an annotation-only update, within limits)...
    let annotated = with_approval(five.clone(), &payload, &sign_all(&["bob"], &payload));
    assert!(
        engine
            .review(&workload_review(
                "UPDATE",
                Some(&annotated),
                Some(&five),
                AI
            ))
            .allowed()
    );
    // ...and then a scale to exactly the approved count passes; no other count does,
    // neither beyond it nor below it.
    for other in [31, 29, 20] {
        let refused = engine.review(&scale_review("staging", "worker", 5, other));
        assert!(!refused.allowed(), "a scale to {other}");
        assert_eq!(outcome(&refused).metric_label(), reason::REPLICAS_EXCEEDED);
        assert!(
            message(&refused).contains(&format!(
                "it approves scaling to exactly 30 replicas, not {other}"
            )),
            "{}",
            message(&refused)
        );
    }
    assert_approved(
        &engine.review(&scale_review("staging", "worker", 5, 30)),
        &["bob@corp.example"],
    );

    // The scale approval does not lift an apply of the same workload to 30 replicas.
    let thirty = with_approval(
        deployment("staging", "worker", 30, "busybox:1.36"),
        &payload,
        &sign_all(&["bob"], &payload),
    );
    let apply = engine.review(&workload_review(
        "UPDATE",
        Some(&thirty),
        Some(&annotated),
        AI,
    ));
    assert!(!apply.allowed());
    assert_eq!(outcome(&apply).metric_label(), reason::OPERATION_MISMATCH);
}

/// An approval admits its change once (docs/approvals.md, "Single use"): after a
/// person rolls the change back, the same approved manifest is not admitted again.
/// Dry runs only ask.
#[test]
fn an_approval_admits_its_change_once() {
    let engine = engine();
    let object = deployment("staging", "api", 30, "nginx:1.27");
    let payload = payload_from_denial(&engine.review(&create(&object)));
    let approved = with_approval(object, &payload, &sign_all(&["bob"], &payload));
    let dry_run = |body: Vec<u8>| {
        let mut review: Value = serde_json::from_slice(&body).unwrap();
        review["request"]["dryRun"] = json!(true);
        serde_json::to_vec(&review).unwrap()
    };
    // A dry run is admitted on it, twice, and spends nothing.
    for _ in 0..2 {
        assert_approved(
            &engine.review(&dry_run(create(&approved))),
            &["bob@corp.example"],
        );
    }
    // The real request spends it...
    assert_approved(&engine.review(&create(&approved)), &["bob@corp.example"]);
    // ...and no later request, real or dry run, is admitted on it again.
    for body in [create(&approved), dry_run(create(&approved))] {
        let again = engine.review(&body);
        assert!(!again.allowed());
        assert_eq!(outcome(&again).metric_label(), reason::SPENT);
        assert!(
            message(&again).contains("admits its change once"),
            "{}",
            message(&again)
        );
        // The denial offers a payload to sign anew.
        let offered = ApprovalPayload::parse(&payload_from_denial(&again)).unwrap();
        assert_eq!(offered.operation.as_str(), "apply");
    }
}

#[test]
fn delete_approvals_are_read_from_the_object_being_deleted() {
    let engine = engine();
    let stored = deployment("staging", "batch", 40, "busybox:1.36");
    let denied = engine.review(&workload_review("DELETE", None, Some(&stored), AI));
    assert!(!denied.allowed());
    let payload = payload_from_denial(&denied);
    assert_eq!(
        ApprovalPayload::parse(&payload).unwrap().operation.as_str(),
        "delete"
    );

    let approved = with_approval(stored.clone(), &payload, &sign_all(&["carol"], &payload));
    assert_approved(
        &engine.review(&workload_review("DELETE", None, Some(&approved), AI)),
        &["carol@corp.example"],
    );

    // An apply approval on the object does not lift its deletion.
    let create_payload = payload_from_denial(&engine.review(&create(&stored)));
    let apply_approved = with_approval(
        stored,
        &create_payload,
        &sign_all(&["carol"], &create_payload),
    );
    let reviewed = engine.review(&workload_review("DELETE", None, Some(&apply_approved), AI));
    assert!(!reviewed.allowed());
    assert_eq!(
        outcome(&reviewed).metric_label(),
        reason::OPERATION_MISMATCH
    );
}
