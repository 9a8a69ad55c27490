//! The approver's side (DESIGN.md section 11, issue 22): what an approver signs is what
//! they saw. `blastguard approve` and `blastguard digest` run as the approver runs them,
//! with keys made by the real `ssh-keygen` and manifests written by the real `kubectl
//! create --dry-run=client`.
//!
//! The AdmissionReview bodies stand in for the Kubernetes API server: the object is the
//! manifest with the API server's defaults (crate::defaults, which
//! tests/e2e_digest_agreement.rs holds to a real API server), fed to `Engine::review`,
//! the entry point the HTTPS server calls.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use blastguard::approval::digest::object_digest;
use blastguard::approval::{ApprovalPayload, load_verifier};
use blastguard::engine::{Engine, Reviewed};
use blastguard::policy::Policy;
use serde_json::{Value, json};

use common::reviewed::{outcome, payload_from_denial};

const AI: &str = "system:serviceaccount:ai-agents:claude";

/// Keys made by `ssh-keygen`, and an allowed_signers file trusting them.
pub struct Keys {
    dir: tempfile::TempDir,
}

/// The approvers, their principals and the groups they belong to in group tests.
const APPROVERS: &[(&str, &str)] = &[
    ("alice", "alice@corp.example"),
    ("bob", "bob@corp.example"),
    ("carol", "carol@corp.example"),
    ("dave", "dave@corp.example"),
];

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut allowed = String::new();
        for (name, principal) in APPROVERS {
            let path = dir.path().join(name);
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&path)
                .status()
                .expect("ssh-keygen is installed");
            assert!(status.success(), "ssh-keygen {name}");
            let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
            allowed.push_str(&format!("{principal} {public}"));
        }
        std::fs::write(dir.path().join("allowed_signers"), allowed).unwrap();
        Keys { dir }
    })
}

impl Keys {
    fn key(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
    fn allowed_signers(&self) -> PathBuf {
        self.dir.path().join("allowed_signers")
    }
}

fn engine_with(policy: Policy) -> Engine {
    Engine::new(policy, load_verifier(&keys().allowed_signers()).unwrap())
}

/// A Deployment as `kubectl create deployment --dry-run=client` writes it, marked as
/// an AI agent's.
fn deployment(namespace: &str, name: &str, replicas: u32, image: &str) -> Value {
    let out = common::tool("kubectl")
        .args(["create", "deployment", name, "--image", image, "-n"])
        .arg(namespace)
        .arg(format!("--replicas={replicas}"))
        .args(["--dry-run=client", "-o", "json"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut object: Value = serde_json::from_slice(&out.stdout).unwrap();
    object["metadata"]["annotations"] = json!({"blastguard.io/ai-agent": "claude-code"});
    object
}

/// The AdmissionReview of a CREATE of `manifest`, with the API server's defaults.
fn create(manifest: &Value) -> Vec<u8> {
    let object = blastguard::defaults::defaulted(manifest).0;
    let kind = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let resource = json!({"group": "apps", "version": "v1", "resource": "deployments"});
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
            "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": AI, "groups": ["system:authenticated"]},
            "object": object, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .unwrap()
}

/// The digest the webhook computes for a CREATE of `manifest`.
fn served_digest(manifest: &Value) -> String {
    object_digest(&blastguard::defaults::defaulted(manifest).0).unwrap()
}

/// Runs the blastguard binary: exit code, stdout, stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_blastguard"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn write_yaml(path: &Path, object: &Value) {
    std::fs::write(path, serde_yaml::to_string(object).unwrap()).unwrap();
}

fn read_yaml(path: &Path) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn approved_by(reviewed: &Reviewed) -> bool {
    matches!(
        outcome(reviewed),
        blastguard::approval::ApprovalOutcome::Valid { .. }
    ) && reviewed.allowed()
}

/// Issue 22, finding 1: the payload was built from evil.yaml, the approvers were shown
/// shown.yaml. `approve` refuses to sign, naming both digests; `digest` of a manifest
/// carrying the evil approval prints the manifest's own digest.
#[test]
fn an_approver_cannot_sign_a_payload_for_another_manifest() {
    let engine = engine_with(Policy::embedded());
    let dir = tempfile::tempdir().unwrap();
    let evil = deployment("prod", "api", 40, "evil:latest");
    let shown = deployment("prod", "api", 40, "nginx:1.27");
    let (evil_file, shown_file) = (dir.path().join("evil.yaml"), dir.path().join("shown.yaml"));
    write_yaml(&evil_file, &evil);
    write_yaml(&shown_file, &shown);
    let payload = payload_from_denial(&engine.review(&create(&evil)));
    let payload_file = dir.path().join("payload.json");
    std::fs::write(&payload_file, format!("{payload}\n")).unwrap();
    let (evil_digest, shown_digest) = (served_digest(&evil), served_digest(&shown));
    assert_ne!(evil_digest, shown_digest);

    let (code, _, stderr) = run(&[
        "approve",
        "-f",
        shown_file.to_str().unwrap(),
        "--payload",
        payload_file.to_str().unwrap(),
        "--key",
        &keys().key("alice"),
        "--annotate",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&evil_digest) && stderr.contains(&shown_digest),
        "both digests named: {stderr}"
    );
    assert!(
        read_yaml(&shown_file)["metadata"]["annotations"]
            .get("blastguard.io/approval")
            .is_none(),
        "nothing written"
    );

    // The attacker hands over shown.yaml carrying the evil payload and a signature:
    // `digest` computes shown.yaml's own digest, and the second approver refuses too.
    let (code, _, stderr) = run(&[
        "approve",
        "-f",
        evil_file.to_str().unwrap(),
        "--payload",
        payload_file.to_str().unwrap(),
        "--key",
        &keys().key("alice"),
        "--annotate",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let signed = read_yaml(&evil_file);
    let mut disguised = shown.clone();
    disguised["metadata"]["annotations"] = signed["metadata"]["annotations"].clone();
    write_yaml(&shown_file, &disguised);
    let (code, stdout, stderr) = run(&["digest", "-f", shown_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let printed = ApprovalPayload::parse(stdout.trim()).unwrap();
    assert_eq!(printed.digest.as_deref(), Some(shown_digest.as_str()));
    assert!(stderr.contains(&evil_digest), "{stderr}");
    let (code, _, stderr) = run(&[
        "approve",
        "-f",
        shown_file.to_str().unwrap(),
        "--key",
        &keys().key("bob"),
        "--annotate",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&evil_digest) && stderr.contains(&shown_digest),
        "{stderr}"
    );

    // On the manifest it was built from, the second approver signs, after reading what.
    let (code, _, stderr) = run(&[
        "approve",
        "-f",
        evil_file.to_str().unwrap(),
        "--key",
        &keys().key("bob"),
        "--annotate",
    ]);
    assert_eq!(code, 0, "{stderr}");
    for shown in [
        "target:    Deployment prod/api (group apps)",
        "operation: apply",
        &format!("digest:    {evil_digest} (computed here from"),
    ] {
        assert!(stderr.contains(shown), "{shown:?} in {stderr}");
    }
    assert!(approved_by(&engine.review(&create(&read_yaml(&evil_file)))));
}

/// A payload of another operation or target is refused too, with both named.
#[test]
fn approve_refuses_another_target_or_operation() {
    let engine = engine_with(Policy::embedded());
    let dir = tempfile::tempdir().unwrap();
    let other = deployment("prod", "web", 40, "nginx:1.27");
    let mine = deployment("prod", "api", 40, "nginx:1.27");
    let file = dir.path().join("api.yaml");
    write_yaml(&file, &mine);
    let payload = payload_from_denial(&engine.review(&create(&other)));
    let payload_file = dir.path().join("payload.json");
    std::fs::write(&payload_file, &payload).unwrap();
    let (code, _, stderr) = run(&[
        "approve",
        "-f",
        file.to_str().unwrap(),
        "--payload",
        payload_file.to_str().unwrap(),
        "--key",
        &keys().key("alice"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("prod/web") && stderr.contains("prod/api"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&served_digest(&other)) && stderr.contains(&served_digest(&mine)),
        "{stderr}"
    );
    // A scale payload for that object: the operation differs.
    let scale = run(&[
        "digest",
        "-f",
        file.to_str().unwrap(),
        "--operation",
        "scale",
        "--replicas",
        "45",
    ]);
    assert_eq!(scale.0, 0, "{}", scale.2);
    std::fs::write(&payload_file, scale.1.trim()).unwrap();
    let (code, _, stderr) = run(&[
        "approve",
        "-f",
        file.to_str().unwrap(),
        "--operation",
        "apply",
        "--payload",
        payload_file.to_str().unwrap(),
        "--key",
        &keys().key("alice"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("scale") && stderr.contains(&served_digest(&mine)),
        "{stderr}"
    );
    // Issue 22 finding 7: the scale payload names its replicas; no --replicas needed.
    let (code, _, stderr) = run(&[
        "approve",
        "-f",
        file.to_str().unwrap(),
        "--payload",
        payload_file.to_str().unwrap(),
        "--key",
        &keys().key("alice"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("replicas:  exactly 45"), "{stderr}");
}
