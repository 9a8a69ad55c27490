//! The approval loop as its users live it (issue 12, Deliver 2): a denial, a first
//! approver, a denial that asks for the rest on the same payload, a second approver
//! with plain `ssh-keygen -Y sign`, and the retry that goes through; and a render of
//! several objects approved in one command.
//!
//! Keys and signatures are real (ssh-keygen); the API server is stood in for by
//! AdmissionReviews built as it sends them, with the manifest as the object (no
//! defaulting: the digest agreement with a real API server is issue 12, Deliver 1).

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use blastguard::approval::payload::SIGNATURE_NAMESPACE;
use blastguard::approval::{ApprovalOutcome, ApprovalPayload, reason};
use serde_json::Value;

use common::approvals::{AI, with_server_defaults};
use common::objects;
use common::review::Request;
use common::reviewed::{message, outcome, payload_from_denial};
use common::run_blastguard;
use common::signers::{KeySpec, Signers, ssh_keygen_sign_file};

/// alice and bob, trusted in `allowed_signers` (bob's line with a date in the form
/// install.md shows, no `Z`).
const KEYS: &[KeySpec] = &[
    ("alice", &["-t", "ed25519"], Some("alice@corp.example"), ""),
    (
        "bob",
        &["-t", "ed25519"],
        Some("bob@corp.example"),
        "valid-before=\"29990101\" ",
    ),
];

/// A Deployment in prod with every field the API server defaults already set, so the
/// manifest an approver signs and the object the stand-in API server sends are the
/// same object.
fn prod_deployment(name: &str, replicas: u32) -> Value {
    with_server_defaults(&objects::deployment("prod", name, replicas, "nginx:1.27"))
}

/// A CREATE of `object` by the AI agent, as the API server sends it.
fn create(object: &Value) -> Vec<u8> {
    Request::on("CREATE", Some(object), None)
        .by(AI)
        .in_groups(&["system:authenticated"])
        .review()
}

/// `blastguard ARGS`: whether it exited 0, and all it printed.
fn blastguard(args: &[&OsStr]) -> (bool, String) {
    let (ok, out, err) = run_blastguard(args, &[]);
    (ok, format!("{out}{err}"))
}

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_partial_approval_is_completed_on_the_same_payload_with_plain_ssh_keygen() {
    let keys = Signers::new(KEYS);
    let engine = keys.engine();
    let manifest = keys.path("api.json");
    std::fs::write(&manifest, prod_deployment("api", 40).to_string()).unwrap();

    // 1. The developer's change is denied; the denial names --agent for
    //    passphrase-protected keys.
    let denied = engine.review(&create(&read_json(&manifest)));
    assert!(!denied.allowed());
    let first = payload_from_denial(&denied);
    let text = message(&denied);
    assert!(text.contains("--agent"), "{text}");
    assert!(text.contains("--signature payload.json.sig"), "{text}");
    let payload_file = keys.path("payload.json");
    std::fs::write(&payload_file, format!("{first}\n")).unwrap();

    // 2. alice signs it into the manifest.
    let (ok, out) = blastguard(&[
        os("approve"),
        os("-f"),
        os(&manifest),
        os("--payload"),
        os(&payload_file),
        os("--key"),
        os(&keys.key("alice")),
        os("--annotate"),
    ]);
    assert!(ok, "{out}");

    // 3. One of two: the denial says one more is needed and repeats the payload on
    //    the object, even a second later (a new one would have new times).
    std::thread::sleep(Duration::from_millis(1100));
    let partial = engine.review(&create(&read_json(&manifest)));
    assert!(!partial.allowed());
    assert_eq!(
        outcome(&partial).metric_label(),
        reason::NOT_ENOUGH_APPROVERS
    );
    let text = message(&partial);
    assert!(text.contains("1 more is needed"), "{text}");
    assert!(text.contains("valid but not yet enough"), "{text}");
    assert!(text.contains("--agent"), "{text}");
    assert_eq!(payload_from_denial(&partial), first, "{text}");

    // 4. bob signs the repeated line with plain ssh-keygen (the file ends with a
    //    newline, as editors write it) and attaches the .sig.
    std::fs::write(
        &payload_file,
        format!("{}\n", payload_from_denial(&partial)),
    )
    .unwrap();
    // As an approver without blastguard would.
    let sig = ssh_keygen_sign_file(&keys.key("bob"), &payload_file, SIGNATURE_NAMESPACE);
    let (ok, out) = blastguard(&[
        os("approve"),
        os("-f"),
        os(&manifest),
        os("--signature"),
        os(&sig),
        os("--annotate"),
    ]);
    assert!(ok, "{out}");

    // Attaching it again is refused: one key counts once.
    let (ok, out) = blastguard(&[
        os("approve"),
        os("-f"),
        os(&manifest),
        os("--signature"),
        os(&sig),
        os("--annotate"),
    ]);
    assert!(!ok && out.contains("already signed"), "{out}");

    // 5. The retry goes through.
    let approved = engine.review(&create(&read_json(&manifest)));
    assert!(approved.allowed(), "{}", message(&approved));
    assert_eq!(
        outcome(&approved),
        ApprovalOutcome::Valid {
            signers: vec!["alice@corp.example".into(), "bob@corp.example".into()]
        }
    );
}

#[test]
fn a_signature_over_another_payload_is_not_attached() {
    let keys = Signers::new(KEYS);
    let manifest = keys.path("api.json");
    std::fs::write(&manifest, prod_deployment("api", 40).to_string()).unwrap();
    let denied = keys.engine().review(&create(&read_json(&manifest)));
    let payload = ApprovalPayload::parse(&payload_from_denial(&denied)).unwrap();
    let payload_file = keys.path("payload.json");
    std::fs::write(&payload_file, payload.to_json()).unwrap();
    let mut other = payload.clone();
    other.reason = "something else".into();
    let other_file = keys.path("other.json");
    std::fs::write(&other_file, other.to_json()).unwrap();
    let sig = ssh_keygen_sign_file(&keys.key("alice"), &other_file, SIGNATURE_NAMESPACE);
    let (ok, out) = blastguard(&[
        os("approve"),
        os("-f"),
        os(&manifest),
        os("--payload"),
        os(&payload_file),
        os("--signature"),
        os(&sig),
        os("--annotate"),
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("does not verify over the payload"), "{out}");
    // Nothing was written.
    assert!(
        read_json(&manifest)["metadata"]["annotations"].is_null(),
        "{out}"
    );
}

#[test]
fn a_render_of_several_objects_is_approved_in_one_command_per_approver() {
    let keys = Signers::new(KEYS);
    let engine = keys.engine();
    let render = keys.path("render.yaml");
    // As `helm template` writes it: a comment line per document, and a document
    // that is only a comment.
    let text = format!(
        "---\n# Source: app/templates/api.yaml\n{}---\n# Source: app/templates/empty.yaml\n---\n# Source: app/templates/web.yaml\n{}",
        serde_yaml::to_string(&prod_deployment("api", 40)).unwrap(),
        serde_yaml::to_string(&prod_deployment("web", 30)).unwrap()
    );
    std::fs::write(&render, &text).unwrap();
    for approver in ["alice", "bob"] {
        let (ok, out) = blastguard(&[
            os("approve"),
            os("-f"),
            os(&render),
            os("--key"),
            os(&keys.key(approver)),
            os("--annotate"),
        ]);
        assert!(ok, "{out}");
        assert!(out.contains("Deployment prod/api"), "{out}");
        assert!(out.contains("Deployment prod/web"), "{out}");
    }
    let written = std::fs::read_to_string(&render).unwrap();
    // The render is edited, not rewritten: its comments and the comment-only
    // document are still there.
    for line in text.lines().filter(|l| l.starts_with('#') || *l == "---") {
        assert!(
            written.lines().any(|w| w == line),
            "{line:?} lost:\n{written}"
        );
    }
    let objects: Vec<Value> = serde_yaml::Deserializer::from_str(&written)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect();
    assert_eq!(objects.len(), 2);
    for object in &objects {
        let reviewed = engine.review(&create(object));
        assert!(reviewed.allowed(), "{}", message(&reviewed));
    }
}

#[test]
fn digest_hints_name_agent_and_signature() {
    let keys = Signers::new(KEYS);
    let manifest = keys.path("api.json");
    std::fs::write(&manifest, prod_deployment("api", 40).to_string()).unwrap();
    let (ok, out) = blastguard(&[os("digest"), os("-f"), os(&manifest)]);
    assert!(ok, "{out}");
    assert!(out.contains("--agent"), "{out}");
    assert!(out.contains("--signature payload.json.sig"), "{out}");
    let (ok, out) = blastguard(&[os("approve"), os("--help")]);
    assert!(ok, "{out}");
    assert!(
        out.contains("--agent") && out.contains("--signature"),
        "{out}"
    );
}
