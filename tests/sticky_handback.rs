//! Sticky provenance through `blastguard check` (issue 12, item 4): an object an AI
//! marked stays AI-assisted for everyone's changes until it is handed back to people,
//! and the hand-back is one approved change that removes the marker (docs/policy.md
//! "Provenance", docs/approvals.md "Handing an object back to people").
//!
//! The current object is given as the cluster stores it (`kubectl get -o json`: uid,
//! resourceVersion, and the last-applied configuration of the AI's `kubectl apply`),
//! the signatures are made by the real `ssh-keygen -Y sign`.

mod common;

use std::path::{Path, PathBuf};

use common::objects::deployment;
use common::plugin::Run;
use common::signers::Approver;
use serde_json::{Value, json};

/// A person, not an AI identity of the embedded policy.
const PERSON: &str = "dana@corp.example";
const MARKER: &str = "blastguard.io/ai-agent";

/// The Deployment as a manifest: `annotations` and the image vary.
fn manifest(annotations: Value, image: &str) -> Value {
    let mut object = deployment("shop", "api", 40, image);
    object["metadata"]["annotations"] = annotations;
    object
}

/// The object as the cluster stores it after the AI's `kubectl apply` of `applied`.
fn stored(applied: &Value) -> Value {
    let mut live = applied.clone();
    // The API server stores the object with its defaults filled in (what
    // tests/e2e_digest_agreement.rs holds blastguard's defaulting equal to).
    blastguard::defaults::apply(&mut live);
    let metadata = &mut live["metadata"];
    metadata["uid"] = json!("5c6b1bb4-2f59-4e0a-9d3e-6f1f6f2d0a11");
    metadata["resourceVersion"] = json!("4711");
    metadata["generation"] = json!(1);
    metadata["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!(format!("{applied}\n"));
    live
}

fn check(dir: &Path, args: &[&str]) -> (Run, Value) {
    let out = common::blastguard()
        .arg("check")
        .args(args)
        .args([
            "--as",
            PERSON,
            "--allowed-signers",
            "allowed_signers",
            "-o",
            "json",
        ])
        .current_dir(dir)
        .env_remove("BLASTGUARD_POLICY")
        .env_remove("BLASTGUARD_ALLOWED_SIGNERS")
        .output()
        .expect("run blastguard check");
    let run = Run::from(out);
    let result = run.json()["results"][0].clone();
    (run, result)
}

fn write(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value).expect("json")).expect("write");
    path
}

/// `dir/allowed_signers`, trusting these approvers.
fn trust(dir: &Path, approvers: &[&Approver]) {
    let lines: Vec<String> = approvers.iter().map(|a| a.allowed_signers_line()).collect();
    std::fs::write(dir.join("allowed_signers"), lines.join("\n") + "\n").expect("allowed_signers");
}

/// The payload line the denial prints ("sign this exact payload").
fn printed_payload(message: &str) -> String {
    message
        .lines()
        .find(|l| l.starts_with("{\"apiVersion\":\"blastguard.io/v1\",\"kind\":\"Approval\""))
        .unwrap_or_else(|| panic!("no payload in the denial:\n{message}"))
        .to_string()
}

#[test]
fn a_marked_object_is_handed_back_to_people_by_one_approved_change() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let bob = Approver::new(d, "bob@corp.example");
    let carol = Approver::new(d, "carol@corp.example");
    trust(d, &[&bob, &carol]);

    // The AI created the Deployment with its marker, through `kubectl apply`.
    let ai_applied = manifest(json!({MARKER: "claude-code"}), "nginx:1.27");
    write(d, "current.json", &stored(&ai_applied));

    // A person's image bump that keeps the marker is judged as AI-assisted: it
    // replaces all 40 pods, over the default rule's maxPodsAffected (10).
    write(
        d,
        "bump.json",
        &manifest(json!({MARKER: "claude-code"}), "nginx:1.28"),
    );
    let (run, r) = check(d, &["-f", "bump.json", "--old", "current.json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(r["aiSignal"]["type"], "annotation");
    assert_eq!(r["violations"][0]["limit"], "maxPodsAffected");

    // Dropping the marker in the same breath is no way out: sticky provenance still
    // sees the AI's marker on the current object, and removing it takes an approval.
    write(d, "bump-unmarked.json", &manifest(json!({}), "nginx:1.28"));
    let (run, r) = check(d, &["-f", "bump-unmarked.json", "--old", "current.json"]);
    assert_eq!(run.code, 1);
    assert_eq!(r["aiSignal"]["type"], "sticky-annotation");

    // The hand-back: the manifest without the marker, nothing else changed. Denied,
    // with the payload to sign.
    let handback = manifest(json!({}), "nginx:1.27");
    write(d, "handback.json", &handback);
    let (run, r) = check(d, &["-f", "handback.json", "--old", "current.json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        (&r["operation"], &r["verdict"]),
        (&json!("UPDATE"), &json!("deny"))
    );
    assert_eq!(r["aiSignal"]["type"], "sticky-annotation");
    assert_eq!(r["radius"]["podsAffected"], 0, "no pod is replaced");
    let limits: Vec<_> = r["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| v["limit"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(limits, ["stickyProvenance"]);
    let message = r["message"].as_str().expect("a denial message");
    assert!(
        message.contains("removes the AI marker blastguard.io/ai-agent: handing an object back to people takes an approval"),
        "{message}"
    );
    let payload = printed_payload(message);
    let parsed: Value = serde_json::from_str(&payload).expect("payload JSON");
    assert_eq!(parsed["operation"], "apply");
    assert_eq!(parsed["digest"], r["digest"]);

    // An approver signs exactly that payload with plain ssh-keygen; the manifest
    // carries the payload and the signature as the two approval annotations.
    let signature = bob.sign(&payload);
    let approved = manifest(
        json!({
            "blastguard.io/approval": payload,
            "blastguard.io/approval-signature": signature,
        }),
        "nginx:1.27",
    );
    write(d, "handback-approved.json", &approved);
    let (run, r) = check(
        d,
        &["-f", "handback-approved.json", "--old", "current.json"],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        (&r["verdict"], &r["reason"]),
        (&json!("allow"), &json!("approved"))
    );
    assert_eq!(r["approval"]["signers"], json!(["bob@corp.example"]));

    // A signature from someone allowed_signers does not trust changes nothing.
    let stranger = Approver::new(d, "stranger@elsewhere.example");
    let forged = manifest(
        json!({
            "blastguard.io/approval": payload,
            "blastguard.io/approval-signature": stranger.sign(&payload),
        }),
        "nginx:1.27",
    );
    write(d, "handback-forged.json", &forged);
    let (run, r) = check(d, &["-f", "handback-forged.json", "--old", "current.json"]);
    assert_eq!(run.code, 1);
    assert_ne!(r["approval"]["result"], "valid");

    // Handed back: the object as stored after that apply has no marker, and a
    // person's image bump is a person's change again.
    write(d, "current-handed-back.json", &stored(&approved));
    write(d, "bump-after.json", &manifest(json!({}), "nginx:1.28"));
    let (run, r) = check(
        d,
        &["-f", "bump-after.json", "--old", "current-handed-back.json"],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        (&r["verdict"], &r["reason"], &r["aiSignal"]),
        (&json!("allow"), &json!("not_ai_assisted"), &Value::Null)
    );
}
