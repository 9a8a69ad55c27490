//! The approval tests' fixture (tests/approvals_*.rs): keys of every type
//! `ssh-keygen` makes, trusted or not, the engine that trusts them, and the reviews
//! and commands those tests send.
//!
//! The AdmissionReview bodies stand in for the Kubernetes API server: they are built
//! the way it builds them (tests/common/review.rs) and fed to `Engine::review`, the
//! same entry point the HTTPS server calls.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use blastguard::approval::ApprovalOutcome;
use blastguard::approval::payload::SIGNATURE_NAMESPACE;
use blastguard::engine::{Engine, Reviewed};
use serde_json::Value;

use super::review::Request;
use super::reviewed::{message, outcome, response};
use super::signers::{KeySpec, Signers, ssh_keygen_sign};

/// The AI agent's identity in the embedded policy.
pub const AI: &str = "system:serviceaccount:ai-agents:claude";
/// An hour, for approval lifetimes.
pub const HOUR: Duration = Duration::from_secs(3600);

/// (file name, ssh-keygen arguments, principal or None when not trusted, options).
pub const KEYS: &[KeySpec] = &[
    ("alice", &["-t", "ed25519"], Some("alice@corp.example"), ""),
    (
        "alice-laptop",
        &["-t", "ecdsa", "-b", "256"],
        Some("alice@corp.example"),
        "",
    ),
    (
        "bob",
        &["-t", "ecdsa", "-b", "384"],
        Some("bob@corp.example"),
        "",
    ),
    (
        "carol",
        &["-t", "rsa", "-b", "3072"],
        Some("carol@corp.example"),
        "",
    ),
    (
        "dave",
        &["-t", "ed25519"],
        Some("dave@corp.example"),
        "namespaces=\"git\" ",
    ),
    (
        "erin",
        &["-t", "ed25519"],
        Some("erin@corp.example"),
        "valid-before=\"20200101Z\" ",
    ),
    ("mallory", &["-t", "ed25519"], None, ""),
];

/// The keys of [`KEYS`], made once for the test binary.
pub fn keys() -> &'static Signers {
    static KEYS_ONCE: OnceLock<Signers> = OnceLock::new();
    KEYS_ONCE.get_or_init(|| Signers::new(KEYS))
}

/// The embedded policy, trusting [`keys`].
pub fn engine() -> Engine {
    keys().engine()
}

/// `ssh-keygen -Y sign` by the key `key` over exactly `payload` (plus `suffix`), in
/// `namespace`.
pub fn sign(key: &str, payload: &str, suffix: &str, namespace: &str) -> String {
    ssh_keygen_sign(&keys().key(key), &format!("{payload}{suffix}"), namespace)
}

/// The signatures of `payload` by each of `signers`, concatenated as the annotation
/// holds them.
pub fn sign_all(signers: &[&str], payload: &str) -> String {
    keys().sign_all(signers, payload)
}

/// A request uid in the API server's format, distinct per call.
pub fn uid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "705ab4f5-6393-11e8-b7cc-{:012x}",
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An AdmissionReview for a CREATE, UPDATE or DELETE of a Deployment by `username`,
/// as the API server sends it.
pub fn workload_review(
    operation: &str,
    object: Option<&Value>,
    old: Option<&Value>,
    username: &str,
) -> Vec<u8> {
    Request::on(operation, object, old)
        .by(username)
        .in_groups(&["system:authenticated"])
        .uid(&uid())
        .review()
}

/// An AdmissionReview for `kubectl scale` (the `scale` subresource of a Deployment)
/// by the AI agent.
pub fn scale_review(namespace: &str, name: &str, from: u32, to: u32) -> Vec<u8> {
    Request::scale_of(namespace, name, from.into(), to.into())
        .by(AI)
        .in_groups(&["system:authenticated"])
        .field_manager("kubectl")
        .uid(&uid())
        .review()
}

/// A CREATE of `object` by the AI agent.
pub fn create(object: &Value) -> Vec<u8> {
    workload_review("CREATE", Some(object), None, AI)
}

/// The request passed on the approval of exactly `signers`.
pub fn assert_approved(reviewed: &Reviewed, signers: &[&str]) {
    assert!(reviewed.allowed(), "denied: {}", message(reviewed));
    assert_eq!(
        outcome(reviewed),
        ApprovalOutcome::Valid {
            signers: signers.iter().map(|s| s.to_string()).collect()
        }
    );
    assert_eq!(response(reviewed)["auditAnnotations"]["reason"], "approved");
}

/// The two annotations `blastguard approve` printed (YAML).
pub fn printed_annotations(stdout: &str) -> (String, String) {
    let map: BTreeMap<String, String> = serde_yaml::from_str(stdout).unwrap();
    (
        map["blastguard.io/approval"].clone(),
        map["blastguard.io/approval-signature"].clone(),
    )
}

/// `ssh-keygen -Y verify` of a signature over the payload, as principal, in
/// blastguard's namespace.
pub fn ssh_keygen_verify(payload: &str, signature: &str, principal: &str) -> Result<(), String> {
    keys().verify(payload, signature, principal, SIGNATURE_NAMESPACE)
}

/// The armored signatures of an approval-signature annotation, one by one.
pub fn split_signatures(annotation: &str) -> Vec<String> {
    annotation
        .split_inclusive("-----END SSH SIGNATURE-----")
        .filter(|b| b.contains("BEGIN"))
        .map(|b| format!("{}\n", b.trim()))
        .collect()
}

/// What the API server adds to a Deployment before admission webhooks see it.
pub fn with_server_defaults(manifest: &Value) -> Value {
    // The API server's defaulting, as tests/e2e_digest_agreement.rs holds it to a
    // real API server.
    blastguard::defaults::defaulted(manifest).0
}

/// `blastguard approve -f FILE --key KEY EXTRA...` with the test key `key`:
/// (exited 0, stdout, stderr).
pub fn approve_with(key: &str, file: &str, extra: &[&str]) -> (bool, String, String) {
    let key = keys().key(key);
    let mut args = vec!["approve", "-f", file, "--key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    super::run_blastguard(&args, &[])
}
