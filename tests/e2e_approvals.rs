//! End to end, through a real API server (tests/common/cluster.rs): the approval
//! workflow of README.md and docs/approvals.md, with the real `kubectl` and
//! `ssh-keygen`.
//!
//! An AI-marked 40-replica Deployment in `prod` (the `protected` rule: no pod may be
//! affected without two approvals). `kubectl apply --dry-run=server` is denied and
//! prints the payload; two approvers sign it with `ssh-keygen -Y sign`; the annotated
//! manifest is applied for real and admitted. That admission is the proof that the
//! digest the server printed on the dry-run is the digest of the object the API server
//! presents on the real request (after its defaulting): the approval binds it. The
//! deployment controller then makes its ReplicaSet, carrying the copied annotations,
//! and the replicaset controller makes 40 Pods: the controllers are not held up.

mod common;

use common::cluster::{AI_AGENT, E2e, Steps, WAIT, deployment, wait_for};
use serde_json::Value;

const APPROVAL: &str = "blastguard.io/approval";
const SIGNATURES: &str = "blastguard.io/approval-signature";

fn ai_api(replicas: u64, extra: &[(&str, &str)]) -> Value {
    let mut annotations = vec![(AI_AGENT, "claude-code")];
    annotations.extend_from_slice(extra);
    deployment("prod", "api", replicas, &annotations)
}

/// Armored signatures, one after the other (the `approval-signature` annotation).
fn joined(signatures: &[String]) -> String {
    signatures
        .iter()
        .map(|s| s.trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn an_ai_change_over_the_limits_is_admitted_with_two_ssh_signatures() {
    let e2e = E2e::start();
    e2e.namespaces(&["prod"]);
    let mut steps = Steps::default();
    let mut payload = String::new();
    let approvals = |result: &str| {
        e2e.webhook.metric(&format!(
            "blastguard_approvals_total{{result=\"{result}\"}}"
        ))
    };

    steps.run("kubectl apply --dry-run=server is denied and prints the payload to sign", || {
        let err = e2e.apply(&ai_api(40, &[]), &["--dry-run=server"], None).expect_err();
        assert!(
            err.contains(r#"admission webhook "validate.blastguard.io" denied the request: blastguard: this AI-assisted create of Deployment prod/api"#)
                && err.contains("pods affected 40 > 0 (maxPodsAffected)")
                && err.contains("2 distinct approvers"),
            "{err}"
        );
        payload = E2e::payload_in(&err);
        let p: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(
            p["target"],
            serde_json::json!({"group": "apps", "kind": "Deployment", "namespace": "prod", "name": "api"})
        );
        assert_eq!(p["operation"], "apply");
        let digest = p["digest"].as_str().unwrap();
        assert!(digest.starts_with("sha256:") && digest.len() == 7 + 64, "{digest}");
        // A dry run stores nothing...
        assert!(e2e.get("prod", "deployment/api").is_none());
        // ...and the same change digests the same on the next request.
        let again = E2e::payload_in(&e2e.apply(&ai_api(40, &[]), &["--dry-run=server"], None).expect_err());
        let again: Value = serde_json::from_str(&again).unwrap();
        assert_eq!(again["digest"], p["digest"]);
        let last = e2e.webhook.decisions().pop().unwrap();
        assert!(last.contains(r#"decision="deny""#) && last.contains("dry_run=true"), "{last}");
    });

    steps.run(
        "one signature, or a key outside allowed_signers, is not enough",
        || {
            assert!(!payload.is_empty(), "needs the payload of the first step");
            let alice = e2e.approvers[0].sign(&payload);
            let mallory = e2e.outsider.sign(&payload);
            let before = approvals("not_enough_approvers");
            let one = ai_api(40, &[(APPROVAL, &payload), (SIGNATURES, &alice)]);
            let err = e2e.apply(&one, &["--dry-run=server"], None).expect_err();
            assert!(err.contains("blastguard: this AI-assisted create"), "{err}");
            assert_eq!(approvals("not_enough_approvers"), before + 1.0);

            let before = approvals("untrusted_key");
            let outsider = ai_api(
                40,
                &[
                    (APPROVAL, &payload),
                    (SIGNATURES, &joined(&[alice, mallory])),
                ],
            );
            let err = e2e
                .apply(&outsider, &["--dry-run=server"], None)
                .expect_err();
            assert!(err.contains("blastguard: this AI-assisted create"), "{err}");
            assert_eq!(approvals("untrusted_key"), before + 1.0);
            assert!(e2e.get("prod", "deployment/api").is_none());
        },
    );

    steps.run(
        "signed by two approvers with ssh-keygen -Y sign, the real apply is admitted",
        || {
            assert!(!payload.is_empty(), "needs the payload of the first step");
            let signatures: Vec<String> = e2e.approvers.iter().map(|a| a.sign(&payload)).collect();
            assert!(
                signatures
                    .iter()
                    .all(|s| s.starts_with("-----BEGIN SSH SIGNATURE-----"))
            );
            let before = approvals("valid");
            let approved = ai_api(
                40,
                &[(APPROVAL, &payload), (SIGNATURES, &joined(&signatures))],
            );
            let out = e2e.apply(&approved, &[], None).expect_ok();
            assert!(out.contains("deployment.apps/api created"), "{out}");
            assert_eq!(approvals("valid"), before + 1.0);
            let last = e2e.webhook.decisions().pop().unwrap();
            for field in [
                r#"operation="CREATE""#,
                r#"decision="allow""#,
                r#"reason="approved""#,
                r#"approval="valid""#,
                "dry_run=false",
                "pods_affected=40",
            ] {
                assert!(last.contains(field), "{field} not in {last}");
            }
        },
    );

    steps.run(
        "the digest printed on the dry run is the digest of the stored object",
        || {
            let stored = e2e
                .get("prod", "deployment/api")
                .expect("created in the previous step");
            let p: Value = serde_json::from_str(&payload).unwrap();
            assert_eq!(e2e.digest_of(&stored), p["digest"].as_str().unwrap());
            // The API server defaulted the object (strategy, probes of the container, ...):
            // the digest the approvers signed covers those defaults, not just the manifest.
            assert_eq!(stored["spec"]["strategy"]["type"], "RollingUpdate");
        },
    );

    steps.run(
        "the controllers make the ReplicaSet (annotations copied) and 40 Pods, unsent",
        || {
            let sent = e2e.webhook.requests();
            let rs = e2e.wait_for_replicaset("prod", "api", 40);
            let annotations = &rs["metadata"]["annotations"];
            assert_eq!(annotations[AI_AGENT], "claude-code", "{annotations}");
            assert_eq!(annotations[APPROVAL], payload.as_str());
            assert!(
                annotations[SIGNATURES]
                    .as_str()
                    .unwrap()
                    .contains("BEGIN SSH SIGNATURE")
            );
            let pods = wait_for("40 Pods of prod/api", WAIT, || {
                let pods = e2e.list("prod", "pods");
                (pods.len() == 40).then_some(pods)
            });
            // No kubelet or scheduler runs here: created, never scheduled.
            assert!(pods.iter().all(|p| p["status"]["phase"] == "Pending"));
            // The controllers' requests (ReplicaSet create, Pod creates) were not sent.
            assert_eq!(
                e2e.webhook.requests(),
                sent,
                "{:#?}",
                e2e.webhook.decisions()
            );
            assert!(
                !e2e.webhook
                    .decisions()
                    .iter()
                    .any(|d| d.contains("kind=ReplicaSet") || d.contains("kind=Pod")),
                "{:#?}",
                e2e.webhook.decisions()
            );
        },
    );

    steps.run(
        "the approval binds the spec: the same approval on 41 replicas is denied",
        || {
            let stored = e2e
                .get("prod", "deployment/api")
                .expect("created in an earlier step");
            let annotations = &stored["metadata"]["annotations"];
            let signatures = annotations[SIGNATURES].as_str().unwrap();
            let before = approvals("digest_mismatch");
            let more = ai_api(41, &[(APPROVAL, &payload), (SIGNATURES, signatures)]);
            let err = e2e.apply(&more, &["--dry-run=server"], None).expect_err();
            assert!(
                err.contains("blastguard: this AI-assisted update of Deployment prod/api")
                    && err.contains("pods affected 1 > 0 (maxPodsAffected)"),
                "{err}"
            );
            assert_eq!(approvals("digest_mismatch"), before + 1.0);
            // The denial offers a new payload, for the new spec.
            let new: Value = serde_json::from_str(&E2e::payload_in(&err)).unwrap();
            let old: Value = serde_json::from_str(&payload).unwrap();
            assert_ne!(new["digest"], old["digest"]);
            assert_eq!(
                e2e.jsonpath("prod", "deployment/api", "{.spec.replicas}"),
                "40"
            );
        },
    );

    steps.finish();
}
