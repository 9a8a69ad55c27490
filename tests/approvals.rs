//! Signed approvals end to end (DESIGN.md section 3), with the real `ssh-keygen`,
//! `ssh-agent` and `kubectl`: keys are generated when the tests start, signatures made
//! by `ssh-keygen -Y sign` must lift the limits, signatures made by `blastguard
//! approve` must pass `ssh-keygen -Y verify`, and every way an agent might sneak a
//! change past an approval must be denied with a message that says why.
//!
//! The AdmissionReview bodies stand in for the Kubernetes API server: they are built
//! the way it builds them (object JSON from `kubectl ... -o json`, the request's kind,
//! resource, subresource, userInfo and options) and fed to `Engine::review`, the same
//! entry point the HTTPS server calls; one test sends them to `blastguard serve` over
//! TLS verified against the CA bundle, as the API server does.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use blastguard::approval::payload::{SIGNATURE_NAMESPACE, rfc3339};
use blastguard::approval::{ApprovalOutcome, ApprovalPayload, load_verifier, reason};
use blastguard::engine::{Engine, Reviewed};
use blastguard::policy::Policy;
use serde_json::{Value, json};

use common::reviewed::{message, outcome, payload_from_denial, response};

const AI: &str = "system:serviceaccount:ai-agents:claude";
const HOUR: Duration = Duration::from_secs(3600);

/// Keys made with ssh-keygen for this run, and the allowed_signers file naming them.
struct Keys {
    dir: tempfile::TempDir,
}

/// (file name, ssh-keygen arguments, principal or None when not trusted, options).
const KEYS: &[(&str, &[&str], Option<&str>, &str)] = &[
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

fn keys() -> &'static Keys {
    static KEYS_ONCE: OnceLock<Keys> = OnceLock::new();
    KEYS_ONCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut allowed = String::from("# approvers, as ssh-keygen reads them\n\n");
        for (name, args, principal, options) in KEYS {
            let path = dir.path().join(name);
            let status = Command::new("ssh-keygen")
                .args(*args)
                .args(["-q", "-N", "", "-C", name, "-f"])
                .arg(&path)
                .status()
                .expect("ssh-keygen is installed");
            assert!(status.success(), "ssh-keygen {name}");
            if let Some(principal) = principal {
                let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
                allowed.push_str(&format!("{principal} {options}{public}"));
            }
        }
        std::fs::write(dir.path().join("allowed_signers"), allowed).unwrap();
        Keys { dir }
    })
}

impl Keys {
    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn allowed_signers(&self) -> PathBuf {
        self.dir.path().join("allowed_signers")
    }
}

fn engine() -> Engine {
    Engine::new(
        Policy::embedded(),
        load_verifier(&keys().allowed_signers()).unwrap(),
    )
}

/// `ssh-keygen -Y sign` over exactly `payload` (plus `suffix`), in `namespace`.
fn ssh_keygen_sign(key: &str, payload: &str, suffix: &str, namespace: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.json");
    std::fs::write(&file, format!("{payload}{suffix}")).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", namespace, "-f"])
        .arg(keys().key(key))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.path().join("payload.json.sig")).unwrap()
}

fn sign_all(signers: &[&str], payload: &str) -> String {
    signers
        .iter()
        .map(|k| ssh_keygen_sign(k, payload, "", SIGNATURE_NAMESPACE))
        .collect()
}

/// A Deployment as `kubectl` writes it.
fn deployment(namespace: &str, name: &str, replicas: u32, image: &str) -> Value {
    let out = Command::new("kubectl")
        .args([
            "create",
            "deployment",
            name,
            "--image",
            image,
            "-n",
            namespace,
        ])
        .arg(format!("--replicas={replicas}"))
        .args(["--dry-run=client", "-o", "json"])
        .output()
        .expect("kubectl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn annotate(mut object: Value, annotations: &[(&str, &str)]) -> Value {
    let map = object["metadata"]
        .as_object_mut()
        .unwrap()
        .entry("annotations")
        .or_insert_with(|| json!({}));
    for (k, v) in annotations {
        map[*k] = json!(v);
    }
    object
}

fn with_approval(object: Value, payload: &str, signatures: &str) -> Value {
    annotate(
        object,
        &[
            ("blastguard.io/approval", payload),
            ("blastguard.io/approval-signature", signatures),
        ],
    )
}

fn uid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "705ab4f5-6393-11e8-b7cc-{:012x}",
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn user(username: &str) -> Value {
    json!({"username": username, "uid": "4f2e8c1a", "groups": ["system:authenticated"]})
}

/// An AdmissionReview for a CREATE, UPDATE or DELETE of a Deployment, as the API
/// server sends it.
fn workload_review(
    operation: &str,
    object: Option<&Value>,
    old: Option<&Value>,
    username: &str,
) -> Vec<u8> {
    let any = object.or(old).unwrap();
    let (options_kind, field_manager) = match operation {
        "CREATE" => ("CreateOptions", Some("kubectl-client-side-apply")),
        "UPDATE" => ("UpdateOptions", Some("kubectl-client-side-apply")),
        _ => ("DeleteOptions", None),
    };
    let mut options = json!({"apiVersion": "meta.k8s.io/v1", "kind": options_kind});
    if let Some(fm) = field_manager {
        options["fieldManager"] = json!(fm);
    }
    let kind = json!({"group": "apps", "version": "v1", "kind": any["kind"]});
    let resource = json!({"group": "apps", "version": "v1", "resource": "deployments"});
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid(),
            "kind": kind, "resource": resource,
            "requestKind": kind, "requestResource": resource,
            "name": any["metadata"]["name"],
            "namespace": any["metadata"]["namespace"],
            "operation": operation,
            "userInfo": user(username),
            "object": object,
            "oldObject": old,
            "dryRun": false,
            "options": options
        }
    }))
    .unwrap()
}

/// An AdmissionReview for `kubectl scale` (the `scale` subresource of a Deployment).
fn scale_review(namespace: &str, name: &str, from: u32, to: u32) -> Vec<u8> {
    let scale = |replicas: u32| {
        json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": name, "namespace": namespace, "uid": "b1c2", "resourceVersion": "4242"},
            "spec": {"replicas": replicas},
            "status": {"replicas": from, "selector": format!("app={name}")}
        })
    };
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid(),
            "kind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "subResource": "scale",
            "requestKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestSubResource": "scale",
            "name": name, "namespace": namespace, "operation": "UPDATE",
            "userInfo": user(AI),
            "object": scale(to), "oldObject": scale(from),
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions", "fieldManager": "kubectl"}
        }
    }))
    .unwrap()
}

fn assert_approved(reviewed: &Reviewed, signers: &[&str]) {
    assert!(reviewed.allowed(), "denied: {}", message(reviewed));
    assert_eq!(
        outcome(reviewed),
        ApprovalOutcome::Valid {
            signers: signers.iter().map(|s| s.to_string()).collect()
        }
    );
    assert_eq!(response(reviewed)["auditAnnotations"]["reason"], "approved");
}

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
            let sig = ssh_keygen_sign(key, &payload, suffix, SIGNATURE_NAMESPACE);
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

/// One way of getting an over-limit change through without the approval it needs.
struct Attack {
    name: &'static str,
    reason: &'static str,
    says: &'static str,
    /// Builds the review from the approved prod Deployment (40 replicas) and the
    /// payload the webhook asked for.
    build: fn(&Value, &str) -> Vec<u8>,
}

fn create(object: &Value) -> Vec<u8> {
    workload_review("CREATE", Some(object), None, AI)
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
                    ssh_keygen_sign("alice", p, "", SIGNATURE_NAMESPACE),
                    ssh_keygen_sign("bob", p, "", "file")
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

#[test]
fn a_sha1_rsa_signature_is_refused() {
    // ssh-keygen never makes an ssh-rsa (SHA-1) SSHSIG any more; rewrite the
    // algorithm name inside a real RSA signature the way an attacker would.
    use ssh_encoding::base64::{Base64, Encoding};
    let engine = engine();
    let object = deployment("staging", "legacy", 40, "nginx:1.27");
    let payload = payload_from_denial(&engine.review(&create(&object)));
    let armored = ssh_keygen_sign("carol", &payload, "", SIGNATURE_NAMESPACE);
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

// --- the approver's commands -------------------------------------------------------

fn blastguard(args: &[&str], envs: &[(&str, &Path)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_blastguard"));
    command.args(args).stdin(Stdio::null());
    for (k, v) in envs {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The two annotations `blastguard approve` printed (YAML).
fn printed_annotations(stdout: &str) -> (String, String) {
    let map: BTreeMap<String, String> = serde_yaml::from_str(stdout).unwrap();
    (
        map["blastguard.io/approval"].clone(),
        map["blastguard.io/approval-signature"].clone(),
    )
}

/// `ssh-keygen -Y verify` of a signature over the payload, as principal.
fn ssh_keygen_verify(payload: &str, signature: &str, principal: &str) -> Result<(), String> {
    ssh_keygen_verify_in(payload, signature, principal, SIGNATURE_NAMESPACE)
}

fn ssh_keygen_verify_in(
    payload: &str,
    signature: &str,
    principal: &str,
    namespace: &str,
) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let sig = dir.path().join("sig");
    std::fs::write(&sig, signature).unwrap();
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(keys().allowed_signers())
        .args(["-I", principal, "-n", namespace, "-s"])
        .arg(&sig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.contains(&format!("Good \"{namespace}\" signature")) {
        Ok(())
    } else {
        Err(text)
    }
}

fn split_signatures(annotation: &str) -> Vec<String> {
    annotation
        .split_inclusive("-----END SSH SIGNATURE-----")
        .filter(|b| b.contains("BEGIN"))
        .map(|b| format!("{}\n", b.trim()))
        .collect()
}

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
        let (ok, stdout, stderr) = blastguard(
            &["approve", "-f", file, "--key", key_path.to_str().unwrap()],
            &[],
        );
        assert!(ok, "{stderr}");
        let (payload, signature) = printed_annotations(&stdout);
        ssh_keygen_verify(&payload, &signature, principal).unwrap_or_else(|e| panic!("{key}: {e}"));
        // ssh-keygen agrees on what must fail too: another namespace, another
        // principal, another payload.
        assert!(ssh_keygen_verify_in(&payload, &signature, principal, "file").is_err());
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
    let (ok, _, stderr) = blastguard(
        &[
            "approve",
            "-f",
            file,
            "--key",
            keys().key("alice").to_str().unwrap(),
            "--reason",
            "CHG-1234: canary passed",
            "--annotate",
            "--allowed-signers",
            signers.to_str().unwrap(),
        ],
        &[],
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

    let (ok, _, stderr) = blastguard(
        &[
            "approve",
            "-f",
            file,
            "--key",
            keys().key("bob").to_str().unwrap(),
            "--annotate",
        ],
        &[],
    );
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
    let (ok, _, stderr) = blastguard(
        &[
            "approve",
            "-f",
            file,
            "--key",
            keys().key("bob").to_str().unwrap(),
            "--annotate",
        ],
        &[],
    );
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
    let (ok, _, stderr) = blastguard(
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
    let (ok, _, stderr) = blastguard(
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

    let (ok, _, stderr) = blastguard(&["approve", "-f", file, "--agent"], &env);
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
    let (ok, _, stderr) = blastguard(&["approve", "-f", file, "--agent"], &env);
    assert!(!ok && stderr.contains("the agent holds 2 keys"), "{stderr}");

    // Two approvers, each through the agent, one after the other on the manifest.
    for key in ["carol", "bob"] {
        let public = keys().key(key).with_extension("pub");
        let (ok, _, stderr) = blastguard(
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

#[test]
fn blastguard_digest_prints_what_the_webhook_asks_for() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let object = deployment("prod", "api", 40, "nginx:1.27");
    let review_body = create(&object);
    let review_file = dir.path().join("review.json");
    std::fs::write(&review_file, &review_body).unwrap();
    let asked = ApprovalPayload::parse(&payload_from_denial(&engine.review(&review_body))).unwrap();

    let (ok, stdout, stderr) = blastguard(
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
    let (ok, stdout, stderr) = blastguard(
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
    let (ok, stdout, stderr) = blastguard(&["digest", "-f", stored_file.to_str().unwrap()], &[]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim_end(), apply_payload);
    let (ok, stdout, stderr) = blastguard(
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
    let (ok, _, stderr) = blastguard(&["digest", "-f", m], &[]);
    // A manifest is digested with the API server's defaults, and the note says what
    // offline cannot foresee.
    assert!(
        ok && stderr.contains("the API server's defaults applied")
            && stderr.contains("mutating admission webhooks cannot be foreseen"),
        "{stderr}"
    );
    let (ok, _, stderr) = blastguard(&["digest", "-f", m, "--operation", "scale"], &[]);
    assert!(!ok && stderr.contains("--replicas N"), "{stderr}");
    let (ok, stdout, _) = blastguard(
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
    let (ok, _, stderr) = blastguard(&["digest", "-f", m, "--ttl", "48h"], &[]);
    assert!(
        !ok && stderr.contains("longer than the policy's maxTTL"),
        "{stderr}"
    );
    let (ok, _, stderr) = blastguard(
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
    let (ok, stdout, stderr) = blastguard(
        &[
            "approve",
            "-f",
            file.to_str().unwrap(),
            "--key",
            keys().key("alice").to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let (printed, signature) = printed_annotations(&stdout);
    assert_eq!(printed, payload);
    assert_approved(
        &engine.review(&create(&with_approval(object, &printed, &signature))),
        &["alice@corp.example"],
    );
    let (ok, _, stderr) = blastguard(
        &[
            "approve",
            "-f",
            file.to_str().unwrap(),
            "--key",
            keys().key("alice").to_str().unwrap(),
            "--annotate",
        ],
        &[],
    );
    assert!(
        !ok && stderr.contains("--annotate writes the approval into a manifest"),
        "{stderr}"
    );
}

/// What the API server adds to a Deployment before admission webhooks see it.
fn with_server_defaults(manifest: &Value) -> Value {
    // The API server's defaulting, as tests/e2e_digest_agreement.rs holds it to a
    // real API server.
    blastguard::defaults::defaulted(manifest).0
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
    let (ok, _, stderr) = blastguard(
        &[
            "approve",
            "-f",
            file,
            "--key",
            keys().key("alice").to_str().unwrap(),
            "--annotate",
        ],
        &[],
    );
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
    let (ok, _, stderr) = blastguard(
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
    let (ok, _, stderr) = blastguard(
        &[
            "approve",
            "-f",
            file,
            "--key",
            keys().key("carol").to_str().unwrap(),
            "--annotate",
        ],
        &[],
    );
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
    let (ok, _, stderr) = blastguard(
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
