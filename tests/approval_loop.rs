//! The approval loop as its users live it (issue 12, Deliver 2): a denial, a first
//! approver, a denial that asks for the rest on the same payload, a second approver
//! with plain `ssh-keygen -Y sign`, and the retry that goes through; and a render of
//! several objects approved in one command.
//!
//! Keys and signatures are real (ssh-keygen); the API server is stood in for by
//! AdmissionReviews built as it sends them, with the manifest as the object (no
//! defaulting: the digest agreement with a real API server is issue 12, Deliver 1).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use blastguard::approval::{ApprovalOutcome, ApprovalPayload, load_verifier, reason};
use blastguard::engine::Engine;
use blastguard::policy::Policy;
use serde_json::{Value, json};

use common::reviewed::{message, outcome, payload_from_denial};

const AI: &str = "system:serviceaccount:ai-agents:claude";

/// alice and bob, trusted in `allowed_signers` (bob's line with a date in the form
/// install.md shows, no `Z`).
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut allowed = String::new();
        for (name, options) in [("alice", ""), ("bob", "valid-before=\"29990101\" ")] {
            let path = dir.path().join(name);
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&path)
                .status()
                .expect("ssh-keygen is installed")
                .success();
            assert!(ok, "ssh-keygen {name}");
            let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
            allowed.push_str(&format!("{name}@corp.example {options}{public}"));
        }
        std::fs::write(dir.path().join("allowed_signers"), allowed).unwrap();
        Self { dir }
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn engine(&self) -> Engine {
        Engine::new(
            Policy::embedded(),
            load_verifier(&self.dir.path().join("allowed_signers")).unwrap(),
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A Deployment with every field the API server defaults already set (as in
/// tests/fixtures/deployment-create-ai-prod.json), so the manifest an approver signs
/// and the object the stand-in API server sends are the same object.
fn deployment(name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "prod", "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{
                        "name": "app", "image": "nginx:1.27", "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"
                    }],
                    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst", "securityContext": {},
                    "schedulerName": "default-scheduler"
                }
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600
        }
    })
}

/// A CREATE of `object` by the AI agent, as the API server sends it.
fn create(object: &Value) -> Vec<u8> {
    let kind = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let resource = json!({"group": "apps", "version": "v1", "resource": "deployments"});
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
            "name": object["metadata"]["name"], "namespace": "prod", "operation": "CREATE",
            "userInfo": {"username": AI, "groups": ["system:authenticated"]},
            "object": object, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "kubectl-client-side-apply"}
        }
    }))
    .unwrap()
}

fn blastguard(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_blastguard"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// `ssh-keygen -Y sign` of `file` (writes `file.sig`), as an approver without
/// blastguard would.
fn ssh_keygen_sign(key: &Path, file: &Path) -> PathBuf {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "approval@blastguard.io", "-f"])
        .arg(key)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sig = file.as_os_str().to_owned();
    sig.push(".sig");
    PathBuf::from(sig)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_partial_approval_is_completed_on_the_same_payload_with_plain_ssh_keygen() {
    let keys = Keys::new();
    let engine = keys.engine();
    let manifest = keys.path("api.json");
    std::fs::write(&manifest, deployment("api", 40).to_string()).unwrap();

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
    let sig = ssh_keygen_sign(&keys.key("bob"), &payload_file);
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
    let keys = Keys::new();
    let manifest = keys.path("api.json");
    std::fs::write(&manifest, deployment("api", 40).to_string()).unwrap();
    let denied = keys.engine().review(&create(&read_json(&manifest)));
    let payload = ApprovalPayload::parse(&payload_from_denial(&denied)).unwrap();
    let payload_file = keys.path("payload.json");
    std::fs::write(&payload_file, payload.to_json()).unwrap();
    let mut other = payload.clone();
    other.reason = "something else".into();
    let other_file = keys.path("other.json");
    std::fs::write(&other_file, other.to_json()).unwrap();
    let sig = ssh_keygen_sign(&keys.key("alice"), &other_file);
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
    let keys = Keys::new();
    let engine = keys.engine();
    let render = keys.path("render.yaml");
    // As `helm template` writes it: a comment line per document, and a document
    // that is only a comment.
    let text = format!(
        "---\n# Source: app/templates/api.yaml\n{}---\n# Source: app/templates/empty.yaml\n---\n# Source: app/templates/web.yaml\n{}",
        serde_yaml::to_string(&deployment("api", 40)).unwrap(),
        serde_yaml::to_string(&deployment("web", 30)).unwrap()
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
    let keys = Keys::new();
    let manifest = keys.path("api.json");
    std::fs::write(&manifest, deployment("api", 40).to_string()).unwrap();
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
