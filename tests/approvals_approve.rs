//! `blastguard approve` as approvers use it (docs/approvals.md): its signatures pass
//! `ssh-keygen -Y verify`, two approvers annotate a manifest one after the other, and it
//! signs through a real `ssh-agent`.
//!
//! The AdmissionReview bodies stand in for the Kubernetes API server: they are built the
//! way it builds them (object JSON from `kubectl ... -o json`, the request's kind,
//! resource, subresource, userInfo and options; tests/common/review.rs) and fed to
//! `Engine::review`, the same entry point the HTTPS server calls. Keys, the engine and the
//! reviews are in tests/common/approvals.rs.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use blastguard::approval::reason;
use serde_json::{Value, json};

use common::approvals::*;
use common::objects::deployment;
use common::reviewed::outcome;
use common::run_blastguard;

#[test]
fn blastguard_approve_signatures_pass_ssh_keygen_verify() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("deploy.json");
    std::fs::write(
        &manifest,
        deployment("prod", "api", 40, "nginx:1.27").to_string(),
    )
    .unwrap();
    let file = manifest.to_str().unwrap();
    for (key, principal) in [
        ("alice", "alice@corp.example"),
        ("alice-laptop", "alice@corp.example"),
        ("bob", "bob@corp.example"),
        ("carol", "carol@corp.example"),
    ] {
        let key_path = keys().key(key);
        let (ok, stdout, stderr) = run_blastguard(
            &["approve", "-f", file, "--key", key_path.to_str().unwrap()],
            &[],
        );
        assert!(ok, "{stderr}");
        let (payload, signature) = printed_annotations(&stdout);
        ssh_keygen_verify(&payload, &signature, principal).unwrap_or_else(|e| panic!("{key}: {e}"));
        // ssh-keygen agrees on what must fail too: another namespace, another
        // principal, another payload.
        assert!(
            keys()
                .verify(&payload, &signature, principal, "file")
                .is_err()
        );
        assert!(ssh_keygen_verify(&payload, &signature, "mallory@corp.example").is_err());
        assert!(ssh_keygen_verify(&format!("{payload} "), &signature, principal).is_err());
    }
}

#[test]
fn two_approvers_annotate_a_manifest_one_after_the_other() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("deploy.yaml");
    let object = deployment("prod", "api", 40, "nginx:1.27");
    std::fs::write(&manifest, serde_yaml::to_string(&object).unwrap()).unwrap();
    let file = manifest.to_str().unwrap();
    let signers = keys().allowed_signers();
    let (ok, _, stderr) = approve_with(
        "alice",
        file,
        &[
            "--reason",
            "CHG-1234: canary passed",
            "--annotate",
            "--allowed-signers",
            signers.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stderr.contains("Signing as alice@corp.example"), "{stderr}");
    let first: Value = serde_yaml::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    // One signature is not enough in prod.
    let reviewed = engine.review(&create(&with_server_defaults(&first)));
    assert_eq!(
        outcome(&reviewed).metric_label(),
        reason::NOT_ENOUGH_APPROVERS
    );

    let (ok, _, stderr) = approve_with("bob", file, &["--annotate"]);
    assert!(ok, "{stderr}");
    let second: Value = serde_yaml::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let annotations = &second["metadata"]["annotations"];
    assert_eq!(
        annotations["blastguard.io/approval"],
        first["metadata"]["annotations"]["blastguard.io/approval"],
        "the payload is kept"
    );
    let payload = annotations["blastguard.io/approval"].as_str().unwrap();
    assert!(payload.contains("\"reason\":\"CHG-1234: canary passed\""));
    let signatures = split_signatures(
        annotations["blastguard.io/approval-signature"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(signatures.len(), 2);
    ssh_keygen_verify(payload, &signatures[0], "alice@corp.example").unwrap();
    ssh_keygen_verify(payload, &signatures[1], "bob@corp.example").unwrap();
    assert_approved(
        &engine.review(&create(&with_server_defaults(&second))),
        &["alice@corp.example", "bob@corp.example"],
    );

    // The same key cannot sign twice, and an approval no longer matching the object
    // is not extended.
    let (ok, _, stderr) = approve_with("bob", file, &["--annotate"]);
    assert!(
        !ok && stderr.contains("has already signed this approval"),
        "{stderr}"
    );
    // The spec edited after the first signatures: the manifest's digest (with the API
    // server's defaults) is computed here and no longer matches, so nobody signs it.
    let mut edited = second.clone();
    edited["spec"]["replicas"] = json!(80);
    std::fs::write(&manifest, serde_yaml::to_string(&edited).unwrap()).unwrap();
    let carol = keys().key("carol");
    let (ok, _, stderr) = run_blastguard(
        &[
            "approve",
            "-f",
            file,
            "--key",
            carol.to_str().unwrap(),
            "--annotate",
        ],
        &[],
    );
    assert!(
        !ok && stderr.contains("the approval already on the object does not match")
            && stderr.contains("the object was changed after it was approved"),
        "{stderr}"
    );
    let third: Value = serde_yaml::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(third, edited, "nothing written");
    assert_eq!(
        outcome(&engine.review(&create(&with_server_defaults(&third)))).metric_label(),
        reason::DIGEST_MISMATCH
    );
    // The object as the server stores it is checked here, before anyone signs.
    edited["metadata"]["uid"] = json!("0b4f7a52-1d3e-4b0e-9a43-1f2e3d4c5b6a");
    let stored = dir.path().join("stored.json");
    std::fs::write(&stored, edited.to_string()).unwrap();
    let (ok, _, stderr) = run_blastguard(
        &[
            "approve",
            "-f",
            stored.to_str().unwrap(),
            "--key",
            carol.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        !ok && stderr.contains("the approval already on the object does not match")
            && stderr.contains("the object was changed after it was approved"),
        "{stderr}"
    );
}

#[test]
fn blastguard_approve_signs_through_ssh_agent() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    // Our own agent, in the foreground, stopped at the end of the test.
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh-agent is installed");
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "ssh-agent did not start"
        );
        if let Ok(Some(status)) = agent.try_wait() {
            panic!("ssh-agent exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _agent = Stop(agent);
    let manifest = dir.path().join("deploy.json");
    let object = deployment("prod", "api", 40, "nginx:1.27");
    std::fs::write(&manifest, object.to_string()).unwrap();
    let file = manifest.to_str().unwrap();
    let env = [("SSH_AUTH_SOCK", socket.as_path())];

    let (ok, _, stderr) = run_blastguard(&["approve", "-f", file, "--agent"], &env);
    assert!(
        !ok && stderr.contains("the agent holds no keys"),
        "{stderr}"
    );

    for key in ["carol", "bob"] {
        let status = Command::new("ssh-add")
            .arg("-q")
            .arg(keys().key(key))
            .env("SSH_AUTH_SOCK", &socket)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (ok, _, stderr) = run_blastguard(&["approve", "-f", file, "--agent"], &env);
    assert!(!ok && stderr.contains("the agent holds 2 keys"), "{stderr}");

    // Two approvers, each through the agent, one after the other on the manifest.
    for key in ["carol", "bob"] {
        let public = keys().key(key).with_extension("pub");
        let (ok, _, stderr) = run_blastguard(
            &[
                "approve",
                "-f",
                file,
                "--agent",
                "--key",
                public.to_str().unwrap(),
                "--annotate",
            ],
            &env,
        );
        assert!(ok, "{key}: {stderr}");
    }
    let annotated: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let annotations = &annotated["metadata"]["annotations"];
    let payload = annotations["blastguard.io/approval"].as_str().unwrap();
    let signatures = split_signatures(
        annotations["blastguard.io/approval-signature"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(signatures.len(), 2);
    // The RSA signature from the agent is rsa-sha2-512 (ssh-keygen refuses SHA-1).
    ssh_keygen_verify(payload, &signatures[0], "carol@corp.example").unwrap();
    ssh_keygen_verify(payload, &signatures[1], "bob@corp.example").unwrap();
    assert_approved(
        &engine().review(&create(&with_server_defaults(&annotated))),
        &["carol@corp.example", "bob@corp.example"],
    );
}
