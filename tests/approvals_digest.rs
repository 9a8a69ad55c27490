//! `blastguard digest` prints what the webhook asks for, a payload from a denial can be
//! signed as it is, approvers sign the server's payload into the manifest, and through the
//! HTTPS server (`blastguard serve`, TLS verified against the CA bundle as the API server
//! does) the approved request passes and the unapproved is denied.
//!
//! The AdmissionReview bodies stand in for the Kubernetes API server: they are built the
//! way it builds them (object JSON from `kubectl ... -o json`, the request's kind,
//! resource, subresource, userInfo and options; tests/common/review.rs) and fed to
//! `Engine::review`, the same entry point the HTTPS server calls. Keys, the engine and the
//! reviews are in tests/common/approvals.rs.

mod common;

use std::time::Duration;

use blastguard::approval::{ApprovalPayload, reason};
use serde_json::{Value, json};

use common::approvals::*;
use common::objects::{deployment, with_approval};
use common::reviewed::{outcome, payload_from_denial};
use common::run_blastguard;

#[test]
fn blastguard_digest_prints_what_the_webhook_asks_for() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let object = deployment("prod", "api", 40, "nginx:1.27");
    let review_body = create(&object);
    let review_file = dir.path().join("review.json");
    std::fs::write(&review_file, &review_body).unwrap();
    let asked = ApprovalPayload::parse(&payload_from_denial(&engine.review(&review_body))).unwrap();

    let (ok, stdout, stderr) = run_blastguard(
        &["digest", "--review", "-f", review_file.to_str().unwrap()],
        &[],
    );
    assert!(ok, "{stderr}");
    let printed = ApprovalPayload::parse(stdout.trim_end()).unwrap();
    assert_eq!(
        (&printed.target, printed.operation, &printed.digest),
        (&asked.target, asked.operation, &asked.digest)
    );

    // The object as the server stores it (kubectl get -o json) digests the same.
    let mut stored = object.clone();
    stored["metadata"]["uid"] = json!("0b4f7a52-1d3e-4b0e-9a43-1f2e3d4c5b6a");
    stored["metadata"]["resourceVersion"] = json!("123456");
    stored["status"] = json!({"replicas": 40, "readyReplicas": 40});
    let stored_file = dir.path().join("stored.json");
    std::fs::write(&stored_file, stored.to_string()).unwrap();
    let (ok, stdout, stderr) = run_blastguard(
        &[
            "digest",
            "-f",
            stored_file.to_str().unwrap(),
            "--operation",
            "delete",
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let printed = ApprovalPayload::parse(stdout.trim_end()).unwrap();
    assert_eq!(
        (printed.operation.as_str(), &printed.digest),
        ("delete", &asked.digest)
    );
    assert!(!stderr.contains("manifest as written"), "{stderr}");

    // An object that carries an apply approval: digest shows it while it fits, and a
    // delete approval replaces it.
    let apply_payload = serde_json::to_string(&asked).unwrap();
    let approved = with_approval(
        stored.clone(),
        &apply_payload,
        &sign_all(&["alice"], &apply_payload),
    );
    std::fs::write(&stored_file, approved.to_string()).unwrap();
    let (ok, stdout, stderr) =
        run_blastguard(&["digest", "-f", stored_file.to_str().unwrap()], &[]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim_end(), apply_payload);
    let (ok, stdout, stderr) = run_blastguard(
        &[
            "digest",
            "-f",
            stored_file.to_str().unwrap(),
            "--operation",
            "delete",
        ],
        &[],
    );
    assert!(
        ok && stderr.contains("this new \"delete\" approval replaces it"),
        "{stderr}"
    );
    assert_eq!(
        ApprovalPayload::parse(stdout.trim_end())
            .unwrap()
            .operation
            .as_str(),
        "delete"
    );

    // A plain manifest gets a warning about server-side defaults; scale needs --replicas.
    let manifest = dir.path().join("deploy.yaml");
    std::fs::write(
        &manifest,
        serde_yaml::to_string(&json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "prod"},
            "spec": {"replicas": 40}
        }))
        .unwrap(),
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    let (ok, _, stderr) = run_blastguard(&["digest", "-f", m], &[]);
    // A manifest is digested with the API server's defaults, and the note says what
    // offline cannot foresee.
    assert!(
        ok && stderr.contains("the API server's defaults applied")
            && stderr.contains("mutating admission webhooks cannot be foreseen"),
        "{stderr}"
    );
    let (ok, _, stderr) = run_blastguard(&["digest", "-f", m, "--operation", "scale"], &[]);
    assert!(!ok && stderr.contains("--replicas N"), "{stderr}");
    let (ok, stdout, _) = run_blastguard(
        &[
            "digest",
            "-f",
            m,
            "--operation",
            "scale",
            "--replicas",
            "60",
            "--ttl",
            "30m",
        ],
        &[],
    );
    assert!(ok);
    let scale = ApprovalPayload::parse(stdout.trim_end()).unwrap();
    assert_eq!((scale.replicas, scale.digest.as_deref()), (Some(60), None));
    let (nb, na) = scale.window().unwrap();
    assert_eq!(na.duration_since(nb).unwrap(), Duration::from_secs(1800));
    let (ok, _, stderr) = run_blastguard(&["digest", "-f", m, "--ttl", "48h"], &[]);
    assert!(
        !ok && stderr.contains("longer than the policy's maxTTL"),
        "{stderr}"
    );
    let (ok, _, stderr) = run_blastguard(
        &[
            "digest",
            "-f",
            dir.path().join("missing.yaml").to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok && stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn a_payload_from_a_denial_can_be_signed_as_it_is() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let object = deployment("staging", "copy-paste", 40, "nginx:1.27");
    let payload = payload_from_denial(&engine.review(&create(&object)));
    let file = dir.path().join("payload.json");
    std::fs::write(&file, format!("{payload}\n")).unwrap();
    let (ok, stdout, stderr) = approve_with("alice", file.to_str().unwrap(), &[]);
    assert!(ok, "{stderr}");
    let (printed, signature) = printed_annotations(&stdout);
    assert_eq!(printed, payload);
    assert_approved(
        &engine.review(&create(&with_approval(object, &printed, &signature))),
        &["alice@corp.example"],
    );
    let (ok, _, stderr) = approve_with("alice", file.to_str().unwrap(), &["--annotate"]);
    assert!(
        !ok && stderr.contains("--annotate writes the approval into a manifest"),
        "{stderr}"
    );
}

#[test]
fn approvers_sign_the_servers_payload_into_the_manifest() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("deploy.yaml");
    let written = deployment("prod", "api", 40, "nginx:1.27");
    std::fs::write(&manifest, serde_yaml::to_string(&written).unwrap()).unwrap();
    let file = manifest.to_str().unwrap();
    let annotated =
        || -> Value { serde_yaml::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap() };

    // Signing the manifest offline binds the approval to the object the webhook sees:
    // `approve` applies the API server's defaults before digesting.
    let (ok, _, stderr) = approve_with("alice", file, &["--annotate"]);
    assert!(
        ok && stderr.contains("the API server's defaults applied"),
        "{stderr}"
    );
    let reviewed = engine.review(&create(&with_server_defaults(&annotated())));
    assert_eq!(
        outcome(&reviewed).metric_label(),
        reason::NOT_ENOUGH_APPROVERS
    );
    std::fs::write(&manifest, serde_yaml::to_string(&written).unwrap()).unwrap();

    // The way that works: the payload from the server's denial (`kubectl apply
    // --dry-run=server`), signed into the manifest by each approver in turn.
    let denied = engine.review(&create(&with_server_defaults(&written)));
    let payload_file = dir.path().join("payload.json");
    std::fs::write(&payload_file, format!("{}\n", payload_from_denial(&denied))).unwrap();
    let payload_arg = payload_file.to_str().unwrap();
    let (ok, _, stderr) = run_blastguard(
        &[
            "approve",
            "-f",
            file,
            "--payload",
            payload_arg,
            "--key",
            keys().key("alice").to_str().unwrap(),
            "--annotate",
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(stderr.contains("(computed here from"), "{stderr}");
    let (ok, _, stderr) = approve_with("carol", file, &["--annotate"]);
    assert!(ok, "{stderr}");
    let reviewed = engine.review(&create(&with_server_defaults(&annotated())));
    assert_approved(&reviewed, &["alice@corp.example", "carol@corp.example"]);

    // A payload for another object is refused before signing.
    let other = dir.path().join("other.yaml");
    std::fs::write(
        &other,
        serde_yaml::to_string(&deployment("prod", "web", 40, "nginx:1.27")).unwrap(),
    )
    .unwrap();
    let (ok, _, stderr) = run_blastguard(
        &[
            "approve",
            "-f",
            other.to_str().unwrap(),
            "--payload",
            payload_arg,
            "--key",
            keys().key("bob").to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        !ok && stderr.contains("but this request is for Deployment prod/web"),
        "{stderr}"
    );
}

// --- through the HTTPS server ----------------------------------------------------------

/// Stands in for the API server calling the webhook: AdmissionReview v1 over TLS
/// verified against the CA bundle, `POST /validate?timeout=10s`, HTTP/1.1 and HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_https_server_the_approved_request_passes_and_the_unapproved_is_denied() {
    use common::{Http, Pki, Server, post_review, server_metric, webhook_client};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let signers = keys().allowed_signers();
    let server = Server::start_with_leaf(
        dir.path(),
        &pki.leaf(1, 2030),
        &["--allowed-signers", signers.to_str().unwrap()],
    );
    let answer = |http: Http, text: &str| -> Value {
        let review: Value = serde_json::from_str(text).unwrap();
        assert_eq!(review["kind"], "AdmissionReview", "{http:?}");
        review["response"].clone()
    };
    for (i, http) in [Http::One, Http::Two].into_iter().enumerate() {
        let client = webhook_client(&pki.ca_pem, http);
        let object = deployment("prod", &format!("api-{i}"), 40, "nginx:1.27");
        let unapproved = create(&object);

        let denied = post_review(&client, &server, unapproved.clone())
            .await
            .unwrap();
        assert_eq!((denied.status, denied.version), (200, http.version()));
        let response = answer(http, &denied.text);
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 403);
        let message = response["status"]["message"].as_str().unwrap();
        let payload = message
            .lines()
            .find(|l| l.starts_with("{\"apiVersion\":\"blastguard.io/v1\""))
            .unwrap_or_else(|| panic!("no payload in {message}"))
            .to_string();
        assert_eq!(
            response["auditAnnotations"]["digest"].as_str(),
            ApprovalPayload::parse(&payload).unwrap().digest.as_deref()
        );

        let signed = with_approval(
            object.clone(),
            &payload,
            &sign_all(&["alice", "bob"], &payload),
        );
        let approved = post_review(&client, &server, create(&signed))
            .await
            .unwrap();
        let response = answer(http, &approved.text);
        assert_eq!(response["allowed"], true, "{}", approved.text);
        assert_eq!(response["auditAnnotations"]["approval"], "valid");
        assert_eq!(response["auditAnnotations"]["reason"], "approved");

        // The same request without the approval is still denied, and one signed by an
        // untrusted key is denied with that reason.
        let again = answer(
            http,
            &post_review(&client, &server, unapproved)
                .await
                .unwrap()
                .text,
        );
        assert_eq!(again["allowed"], false);
        let forged = with_approval(object, &payload, &sign_all(&["alice", "mallory"], &payload));
        let forged = answer(
            http,
            &post_review(&client, &server, create(&forged))
                .await
                .unwrap()
                .text,
        );
        assert_eq!(forged["allowed"], false);
        assert_eq!(forged["auditAnnotations"]["approval"], "untrusted_key");
        assert!(
            forged["status"]["message"]
                .as_str()
                .unwrap()
                .contains("which is not in allowed_signers")
        );
    }
    let series = |result: &str| format!("blastguard_approvals_total{{result=\"{result}\"}}");
    assert_eq!(server_metric(&server, &series("valid")).await, Some(2.0));
    assert_eq!(server_metric(&server, &series("missing")).await, Some(4.0));
    assert_eq!(
        server_metric(&server, &series("untrusted_key")).await,
        Some(2.0)
    );
}
