//! Every way an agent might sneak a change past an approval (docs/approvals.md, "what a
//! forged approval can do") is denied with a message that names the reason; the
//! signatures are real (`ssh-keygen -Y sign`).
//!
//! The AdmissionReview bodies stand in for the Kubernetes API server: they are built the
//! way it builds them (object JSON from `kubectl ... -o json`, the request's kind,
//! resource, subresource, userInfo and options; tests/common/review.rs) and fed to
//! `Engine::review`, the same entry point the HTTPS server calls. Keys, the engine and the
//! reviews are in tests/common/approvals.rs.

mod common;

use std::time::SystemTime;

use blastguard::approval::payload::{SIGNATURE_NAMESPACE, rfc3339};
use blastguard::approval::{ApprovalOutcome, reason};
use serde_json::{Value, json};

use common::approvals::*;
use common::objects::{annotate, deployment, with_approval};
use common::reviewed::{message, outcome, payload_from_denial, response};

/// One way of getting an over-limit change through without the approval it needs.
struct Attack {
    name: &'static str,
    reason: &'static str,
    says: &'static str,
    /// Builds the review from the approved prod Deployment (40 replicas) and the
    /// payload the webhook asked for.
    build: fn(&Value, &str) -> Vec<u8>,
}

fn rfc(t: SystemTime) -> String {
    rfc3339(t)
}

/// Edits the payload's JSON and signs the edited payload properly.
fn resign(payload: &str, edit: impl Fn(&mut Value)) -> (String, String) {
    let mut value: Value = serde_json::from_str(payload).unwrap();
    edit(&mut value);
    let text = value.to_string();
    let sigs = sign_all(&["alice", "bob"], &text);
    (text, sigs)
}

fn attacks() -> Vec<Attack> {
    vec![
        Attack {
            name: "signature by a key not in allowed_signers",
            reason: reason::UNTRUSTED_KEY,
            says: "which is not in allowed_signers",
            build: |o, p| {
                create(&with_approval(
                    o.clone(),
                    p,
                    &sign_all(&["alice", "mallory"], p),
                ))
            },
        },
        Attack {
            name: "principal not allowed to sign approvals (key listed only for namespaces=\"git\")",
            reason: reason::UNTRUSTED_KEY,
            says: "only for signature namespaces \"git\"",
            build: |o, p| {
                create(&with_approval(
                    o.clone(),
                    p,
                    &sign_all(&["alice", "dave"], p),
                ))
            },
        },
        Attack {
            name: "principal whose allowed_signers entry expired (valid-before)",
            reason: reason::UNTRUSTED_KEY,
            says: "valid only until 2020-01-01T00:00:00Z",
            build: |o, p| {
                create(&with_approval(
                    o.clone(),
                    p,
                    &sign_all(&["alice", "erin"], p),
                ))
            },
        },
        Attack {
            name: "signature made for another namespace",
            reason: reason::WRONG_NAMESPACE,
            says: "signature namespace \"file\"",
            build: |o, p| {
                let sigs = format!(
                    "{}{}",
                    sign("alice", p, "", SIGNATURE_NAMESPACE),
                    sign("bob", p, "", "file")
                );
                create(&with_approval(o.clone(), p, &sigs))
            },
        },
        Attack {
            name: "payload edited after signing (validity stretched)",
            reason: reason::BAD_SIGNATURE,
            says: "does not verify over the payload",
            build: |o, p| {
                let sigs = sign_all(&["alice", "bob"], p);
                let mut value: Value = serde_json::from_str(p).unwrap();
                value["notAfter"] = json!(rfc(SystemTime::now() + 20 * HOUR));
                create(&with_approval(o.clone(), &value.to_string(), &sigs))
            },
        },
        Attack {
            name: "object edited after approval (another image)",
            reason: reason::DIGEST_MISMATCH,
            says: "the object was changed after it was approved",
            build: |o, p| {
                let mut edited = with_approval(o.clone(), p, &sign_all(&["alice", "bob"], p));
                edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:latest");
                create(&edited)
            },
        },
        Attack {
            name: "object edited after approval (more replicas)",
            reason: reason::DIGEST_MISMATCH,
            says: "the object was changed after it was approved",
            build: |o, p| {
                let mut edited = with_approval(o.clone(), p, &sign_all(&["alice", "bob"], p));
                edited["spec"]["replicas"] = json!(400);
                create(&edited)
            },
        },
        Attack {
            name: "approval copied to another name",
            reason: reason::TARGET_MISMATCH,
            says: "but this request is for Deployment prod/api-copy",
            build: |o, p| {
                let mut copy = with_approval(o.clone(), p, &sign_all(&["alice", "bob"], p));
                copy["metadata"]["name"] = json!("api-copy");
                create(&copy)
            },
        },
        Attack {
            name: "approval copied to another namespace",
            reason: reason::TARGET_MISMATCH,
            says: "but this request is for Deployment prod-eu/api",
            build: |o, p| {
                let mut copy = with_approval(o.clone(), p, &sign_all(&["alice", "bob"], p));
                copy["metadata"]["namespace"] = json!("prod-eu");
                create(&copy)
            },
        },
        Attack {
            name: "approval copied to another kind",
            reason: reason::TARGET_MISMATCH,
            says: "but this request is for StatefulSet prod/api",
            build: |o, p| {
                let mut copy = with_approval(o.clone(), p, &sign_all(&["alice", "bob"], p));
                copy["kind"] = json!("StatefulSet");
                copy["spec"]["serviceName"] = json!("api");
                create(&copy)
            },
        },
        Attack {
            name: "expired approval",
            reason: reason::EXPIRED,
            says: "it expired at",
            build: |o, p| {
                let (text, sigs) = resign(p, |v| {
                    v["notBefore"] = json!(rfc(SystemTime::now() - 3 * HOUR));
                    v["notAfter"] = json!(rfc(SystemTime::now() - HOUR));
                });
                create(&with_approval(o.clone(), &text, &sigs))
            },
        },
        Attack {
            name: "approval not yet valid",
            reason: reason::NOT_YET_VALID,
            says: "it is valid only from",
            build: |o, p| {
                let (text, sigs) = resign(p, |v| {
                    v["notBefore"] = json!(rfc(SystemTime::now() + HOUR));
                    v["notAfter"] = json!(rfc(SystemTime::now() + 2 * HOUR));
                });
                create(&with_approval(o.clone(), &text, &sigs))
            },
        },
        Attack {
            name: "validity longer than maxTTL",
            reason: reason::TTL_TOO_LONG,
            says: "longer than the policy's maxTTL of 1day",
            build: |o, p| {
                let (text, sigs) = resign(p, |v| {
                    v["notAfter"] = json!(rfc(SystemTime::now() + 30 * 24 * HOUR))
                });
                create(&with_approval(o.clone(), &text, &sigs))
            },
        },
        Attack {
            name: "the requester signs their own change",
            reason: reason::SELF_APPROVAL,
            says: "which is the requesting user \"alice@corp.example\"",
            build: |o, p| {
                let approved = annotate(
                    with_approval(o.clone(), p, &sign_all(&["alice", "bob"], p)),
                    &[("blastguard.io/ai-agent", "claude-code")],
                );
                workload_review("CREATE", Some(&approved), None, "alice@corp.example")
            },
        },
        Attack {
            name: "one principal signs twice with two keys toward two required",
            reason: reason::NOT_ENOUGH_APPROVERS,
            says: "signatures 1, 2 are all by alice@corp.example, counted once",
            build: |o, p| {
                create(&with_approval(
                    o.clone(),
                    p,
                    &sign_all(&["alice", "alice-laptop"], p),
                ))
            },
        },
        Attack {
            name: "one signature where two are required",
            reason: reason::NOT_ENOUGH_APPROVERS,
            says: "1 of the 2 distinct approvers rule \"protected\" requires",
            build: |o, p| create(&with_approval(o.clone(), p, &sign_all(&["bob"], p))),
        },
        Attack {
            name: "a scale approval used for an apply",
            reason: reason::OPERATION_MISMATCH,
            says: "it approves operation \"scale\", but this request is an \"apply\"",
            build: |o, p| {
                let (text, sigs) = resign(p, |v| {
                    v["operation"] = json!("scale");
                    v["replicas"] = json!(40);
                    v.as_object_mut().unwrap().remove("digest");
                });
                create(&with_approval(o.clone(), &text, &sigs))
            },
        },
        Attack {
            name: "a delete approval used for an apply",
            reason: reason::OPERATION_MISMATCH,
            says: "it approves operation \"delete\", but this request is an \"apply\"",
            build: |o, p| {
                let (text, sigs) = resign(p, |v| v["operation"] = json!("delete"));
                create(&with_approval(o.clone(), &text, &sigs))
            },
        },
        Attack {
            name: "payload with a field the schema does not know",
            reason: reason::MALFORMED,
            says: "unknown field `approvedBy`",
            build: |o, p| {
                let (text, sigs) = resign(p, |v| v["approvedBy"] = json!("cto"));
                create(&with_approval(o.clone(), &text, &sigs))
            },
        },
        Attack {
            name: "payload that is not JSON",
            reason: reason::MALFORMED,
            says: "not a valid approval payload",
            build: |o, _| {
                let text = "approved by everyone";
                create(&with_approval(
                    o.clone(),
                    text,
                    &sign_all(&["alice", "bob"], text),
                ))
            },
        },
        Attack {
            name: "armor without its end line",
            reason: reason::MALFORMED,
            says: "signature 1 has no -----END SSH SIGNATURE----- line",
            build: |o, p| {
                let sig = sign_all(&["alice"], p);
                let cut = sig.replace("-----END SSH SIGNATURE-----", "");
                create(&with_approval(o.clone(), p, &cut))
            },
        },
        Attack {
            name: "signature body that is not base64",
            reason: reason::MALFORMED,
            says: "signature 2 is not valid base64",
            build: |o, p| {
                let sigs = format!(
                    "{}-----BEGIN SSH SIGNATURE-----\nnot*base64*at*all\n-----END SSH SIGNATURE-----\n",
                    sign_all(&["alice"], p)
                );
                create(&with_approval(o.clone(), p, &sigs))
            },
        },
        Attack {
            name: "base64 of something that is not an SSH signature",
            reason: reason::MALFORMED,
            says: "signature 1 is not an SSH signature",
            build: |o, p| {
                let sigs = "-----BEGIN SSH SIGNATURE-----\naGVsbG8gd29ybGQ=\n-----END SSH SIGNATURE-----\n";
                create(&with_approval(o.clone(), p, sigs))
            },
        },
        Attack {
            name: "a 1 MiB payload annotation",
            reason: reason::TOO_LARGE,
            says: "more than the 8192 an approval may have",
            build: |o, p| {
                let huge = format!("{}{}", p, " ".repeat(1 << 20));
                create(&with_approval(
                    o.clone(),
                    &huge,
                    &sign_all(&["alice", "bob"], p),
                ))
            },
        },
        Attack {
            name: "a 1 MiB signature annotation",
            reason: reason::TOO_LARGE,
            says: "more than the 65536 allowed",
            build: |o, p| {
                let sig = sign_all(&["alice"], p);
                create(&with_approval(
                    o.clone(),
                    p,
                    &sig.repeat((1 << 20) / sig.len() + 1),
                ))
            },
        },
        Attack {
            name: "more signatures than any rule needs",
            reason: reason::TOO_LARGE,
            says: "more than 20 signatures",
            build: |o, p| {
                create(&with_approval(
                    o.clone(),
                    p,
                    &sign_all(&["alice"], p).repeat(21),
                ))
            },
        },
        Attack {
            name: "payload without signatures",
            reason: reason::UNSIGNED,
            says: "has no blastguard.io/approval-signature",
            build: |o, p| create(&annotate(o.clone(), &[("blastguard.io/approval", p)])),
        },
    ]
}

#[test]
fn attacks_are_denied_with_the_reason_named() {
    let engine = engine();
    let object = deployment("prod", "api", 40, "nginx:1.27");
    let payload = payload_from_denial(&engine.review(&create(&object)));
    // The honest approval passes: each attack below differs from it in one way.
    let honest = with_approval(
        object.clone(),
        &payload,
        &sign_all(&["alice", "bob"], &payload),
    );
    assert_approved(
        &engine.review(&create(&honest)),
        &["alice@corp.example", "bob@corp.example"],
    );

    for attack in attacks() {
        let reviewed = engine.review(&(attack.build)(&object, &payload));
        assert!(reviewed.judged().is_some(), "{}", attack.name);
        assert!(!reviewed.allowed(), "{} was admitted", attack.name);
        match outcome(&reviewed) {
            ApprovalOutcome::Rejected { reason, detail } => {
                assert_eq!(reason, attack.reason, "{}: {detail}", attack.name);
                assert!(
                    detail.contains(attack.says),
                    "{}: {detail:?} lacks {:?}",
                    attack.name,
                    attack.says
                );
            }
            other => panic!("{}: {other:?}", attack.name),
        }
        let message = message(&reviewed);
        assert!(
            message.contains(attack.says),
            "{}: the denial does not say why: {message}",
            attack.name
        );
        assert_eq!(
            response(&reviewed)["auditAnnotations"]["approval"],
            attack.reason,
            "{}",
            attack.name
        );
    }
}
