//! The approver's side (docs/approvals.md "Approving a change", issue 22): what an
//! approver signs is what they saw. `blastguard approve` and `blastguard digest` run as
//! the approver runs them, with keys made by the real `ssh-keygen` and manifests written
//! by the real `kubectl create --dry-run=client`.
//!
//! The AdmissionReview bodies stand in for the Kubernetes API server: the object is the
//! manifest with the API server's defaults (crate::defaults, which
//! tests/e2e_digest_agreement.rs holds to a real API server), fed to `Engine::review`,
//! the entry point the HTTPS server calls.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use blastguard::approval::digest::object_digest;
use blastguard::approval::{ApprovalPayload, load_verifier};
use blastguard::engine::{Engine, Reviewed};
use blastguard::policy::Policy;
use serde_json::{Value, json};

use common::chart::{NAMESPACE, chart_dir, helm_template, text};
use common::objects::ai_deployment;
use common::review::Request;
use common::reviewed::{outcome, payload_from_denial};
use common::signers::{KeySpec, Signers};

const AI: &str = "system:serviceaccount:ai-agents:claude";

/// The approvers, their principals and the groups they belong to in group tests.
const APPROVERS: &[(&str, &str)] = &[
    ("alice", "alice@corp.example"),
    ("bob", "bob@corp.example"),
    ("carol", "carol@corp.example"),
    ("dave", "dave@corp.example"),
];

/// The approvers' ed25519 keys (tests/common/signers.rs), made once for the file.
fn keys() -> &'static Signers {
    static KEYS: OnceLock<Signers> = OnceLock::new();
    KEYS.get_or_init(|| {
        let specs: Vec<KeySpec> = APPROVERS
            .iter()
            .map(|(name, principal)| (*name, &["-t", "ed25519"][..], Some(*principal), ""))
            .collect();
        Signers::new(&specs)
    })
}

/// The private key file of `name`, as the command line takes it.
fn key(name: &str) -> String {
    keys().key(name).to_str().unwrap().to_string()
}

fn engine_with(policy: Policy) -> Engine {
    Engine::new(policy, load_verifier(&keys().allowed_signers()).unwrap())
}

/// The AdmissionReview of a CREATE of `manifest` by the AI agent, with the API
/// server's defaults.
fn create(manifest: &Value) -> Vec<u8> {
    let object = blastguard::defaults::defaulted(manifest).0;
    Request::on("CREATE", Some(&object), None)
        .by(AI)
        .in_groups(&["system:authenticated"])
        .review()
}

/// The digest the webhook computes for a CREATE of `manifest`.
fn served_digest(manifest: &Value) -> String {
    object_digest(&blastguard::defaults::defaulted(manifest).0).unwrap()
}

/// Runs the blastguard binary: exit code, stdout, stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let (status, stdout, stderr) = common::run_to_exit(args);
    (status.code().unwrap_or(-1), stdout, stderr)
}

/// `blastguard approve -f FILE --payload PAYLOAD --key KEY`, then `extra`.
fn approve(file: &str, payload: &str, key: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["approve", "-f", file, "--payload", payload, "--key", key];
    args.extend_from_slice(extra);
    run(&args)
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
    let evil = ai_deployment("prod", "api", 40, "evil:latest");
    let shown = ai_deployment("prod", "api", 40, "nginx:1.27");
    let (evil_file, shown_file) = (dir.path().join("evil.yaml"), dir.path().join("shown.yaml"));
    write_yaml(&evil_file, &evil);
    write_yaml(&shown_file, &shown);
    let payload = payload_from_denial(&engine.review(&create(&evil)));
    let payload_file = dir.path().join("payload.json");
    std::fs::write(&payload_file, format!("{payload}\n")).unwrap();
    let (evil_digest, shown_digest) = (served_digest(&evil), served_digest(&shown));
    assert_ne!(evil_digest, shown_digest);

    let (code, _, stderr) = approve(
        shown_file.to_str().unwrap(),
        payload_file.to_str().unwrap(),
        &key("alice"),
        &["--annotate"],
    );
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
    let (code, _, stderr) = approve(
        evil_file.to_str().unwrap(),
        payload_file.to_str().unwrap(),
        &key("alice"),
        &["--annotate"],
    );
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
        &key("bob"),
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
        &key("bob"),
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
    let other = ai_deployment("prod", "web", 40, "nginx:1.27");
    let mine = ai_deployment("prod", "api", 40, "nginx:1.27");
    let file = dir.path().join("api.yaml");
    write_yaml(&file, &mine);
    let payload = payload_from_denial(&engine.review(&create(&other)));
    let payload_file = dir.path().join("payload.json");
    std::fs::write(&payload_file, &payload).unwrap();
    let (code, _, stderr) = approve(
        file.to_str().unwrap(),
        payload_file.to_str().unwrap(),
        &key("alice"),
        &[],
    );
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
        &key("alice"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("scale") && stderr.contains(&served_digest(&mine)),
        "{stderr}"
    );
    // Issue 22 finding 7: the scale payload names its replicas; no --replicas needed.
    let (code, _, stderr) = approve(
        file.to_str().unwrap(),
        payload_file.to_str().unwrap(),
        &key("alice"),
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("replicas:  exactly 45"), "{stderr}");
}

/// The AdmissionReview of an UPDATE from `old` to `new` by the AI agent (both with
/// the API server's defaults).
fn update(old: &Value, new: &Value) -> Vec<u8> {
    let (old, new) = (
        blastguard::defaults::defaulted(old).0,
        blastguard::defaults::defaulted(new).0,
    );
    Request::on("UPDATE", Some(&new), Some(&old))
        .by(AI)
        .in_groups(&["system:authenticated"])
        .review()
}

/// Issue 22 finding 1, the payload shows nothing readable: the server's payload says
/// what the change does, `approve` shows it before signing, and a payload built by
/// `digest` from a manifest says what the manifest sets.
#[test]
fn payloads_carry_a_summary_that_approvers_are_shown() {
    let engine = engine_with(Policy::embedded());
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        ai_deployment("prod", "api", 3, "nginx:1.27"),
        ai_deployment("prod", "api", 40, "nginx:1.28"),
    );
    let payload =
        ApprovalPayload::parse(&payload_from_denial(&engine.review(&update(&old, &new)))).unwrap();
    assert_eq!(
        payload.summary,
        "replicas 3 → 40, image nginx:1.27 → nginx:1.28, 40 pods affected"
    );
    let created =
        ApprovalPayload::parse(&payload_from_denial(&engine.review(&create(&new)))).unwrap();
    assert_eq!(
        created.summary,
        "create, replicas 40, image nginx:1.28, 40 pods affected"
    );

    let file = dir.path().join("deploy.yaml");
    write_yaml(&file, &new);
    let payload_file = dir.path().join("payload.json");
    std::fs::write(&payload_file, payload.to_json()).unwrap();
    let (code, _, stderr) = approve(
        file.to_str().unwrap(),
        payload_file.to_str().unwrap(),
        &key("alice"),
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "summary:   replicas 3 → 40, image nginx:1.27 → nginx:1.28, 40 pods affected"
        ),
        "{stderr}"
    );
    let (code, stdout, stderr) = run(&["digest", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        ApprovalPayload::parse(stdout.trim()).unwrap().summary,
        "replicas 40, image nginx:1.28"
    );
}

const GROUPS_POLICY: &str = "apiVersion: blastguard.io/v1alpha1
kind: BlastRadiusPolicy
metadata: {name: groups}
spec:
  rules:
    - name: payments
      namespaces: [payments]
      limits: {maxPodsAffected: 10}
      requiredApprovals: 2
      approvers: [{group: sre, count: 1}, {group: payments-owners, count: 1}]
    - name: default
      namespaces: ['*']
      limits: {maxPodsAffected: 10}
  approvals:
    groups:
      sre: [alice@corp.example, bob@corp.example]
      payments-owners: [carol@corp.example]
";

/// Issue 22 finding 5: "2 approvers, 1 from SRE and 1 payments owner". Two SREs
/// are not enough; the denial names the group still missing; an SRE and the owner
/// are.
#[test]
fn approver_groups_through_ssh_keygen_keys() {
    let engine = engine_with(Policy::from_yaml(GROUPS_POLICY, None).unwrap());
    let change = ai_deployment("payments", "api", 20, "nginx:1.27");
    let denied = engine.review(&create(&change));
    let text = common::reviewed::message(&denied);
    assert!(
        text.contains("2 distinct approvers (among them, each a different signer: 1 from sre, 1 from payments-owners)"),
        "{text}"
    );
    let payload = payload_from_denial(&denied);
    let signed = |who: &[&str]| {
        let signatures: String = who.iter().map(|k| keys().sign(k, &payload)).collect();
        let mut object = change.clone();
        object["metadata"]["annotations"]["blastguard.io/approval"] = json!(payload);
        object["metadata"]["annotations"]["blastguard.io/approval-signature"] = json!(signatures);
        engine.review(&create(&object))
    };
    let two_sres = signed(&["alice", "bob"]);
    assert!(!two_sres.allowed());
    assert_eq!(
        outcome(&two_sres).metric_label(),
        blastguard::approval::reason::APPROVER_GROUPS_UNMET
    );
    let text = common::reviewed::message(&two_sres);
    assert!(
        text.contains("rule \"payments\" needs 1 more from payments-owners"),
        "{text}"
    );
    // dave is in allowed_signers but in no group: still short.
    assert!(!signed(&["alice", "dave"]).allowed());
    // Either SRE with the owner, in any order (an approval admits its change once, so
    // this is the first admission; the next is refused as spent).
    assert!(approved_by(&signed(&["carol", "bob"])));
    assert_eq!(
        outcome(&signed(&["alice", "carol"])).metric_label(),
        blastguard::approval::reason::SPENT
    );
}

/// The chart carries approver groups into the policy and refuses, at `helm
/// template`/`install`, a rule naming a group it does not list or asking for more
/// signers than the group has.
#[test]
fn the_chart_carries_approver_groups_and_refuses_unknown_ones() {
    let render = |values: &str| {
        let out = helm_template(chart_dir(), NAMESPACE, values, &[]);
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let rules = "policy:\n  rules:\n    - name: payments\n      namespaces: [payments]\n      requiredApprovals: 2\n      approvers: [{group: sre, count: COUNT}]\n";
    let (ok, _, stderr) = render(&rules.replace("COUNT", "1"));
    assert!(
        !ok && stderr.contains("approvers[0].group: unknown approver group \"sre\""),
        "{stderr}"
    );
    let with_groups = |count: &str| {
        format!(
            "{}  approvals:\n    maxTTL: 24h\n    clockSkew: 60s\n    groups: {{sre: [alice@corp.example, bob@corp.example]}}\n",
            rules.replace("COUNT", count)
        )
    };
    let (ok, _, stderr) = render(&with_groups("3"));
    assert!(
        !ok && stderr.contains("3 is more than the 2 principal(s) of group \"sre\""),
        "{stderr}"
    );
    let (ok, _, stderr) = render(&with_groups("0"));
    assert!(!ok && stderr.contains("approvers/0/count"), "{stderr}");
    let (ok, stdout, stderr) = render(&with_groups("2"));
    assert!(ok, "{stderr}");
    // The rendered policy is one the server loads, groups and terms included.
    let policy_yaml = stdout
        .split("---")
        .find(|d| d.contains("name: blastguard-policy"))
        .and_then(|d| serde_yaml::from_str::<Value>(d).ok())
        .and_then(|cm| cm["data"]["policy.yaml"].as_str().map(String::from))
        .expect("the policy ConfigMap");
    let policy = Policy::from_yaml(&policy_yaml, None).unwrap();
    assert_eq!(policy.rules[0].approvers[0].count, 2);
    assert_eq!(policy.approvals.groups["sre"].len(), 2);
}

/// Issue 22 finding 7: `helm install` accepted an allowed_signers entry that only the
/// server refused later (no principal, no key type).
#[test]
fn the_chart_refuses_an_allowed_signers_entry_the_server_cannot_use() {
    let render = |entry: &str| {
        let values = format!("allowedSigners:\n  entries:\n    - {}\n", json!(entry));
        let out = helm_template(chart_dir(), NAMESPACE, &values, &[]);
        (out.status.success(), text(&out.stderr))
    };
    let public = std::fs::read_to_string(Path::new(&key("alice")).with_extension("pub")).unwrap();
    let public = public.trim();
    for good in [
        format!("alice@corp.example {public}"),
        format!(
            "alice@corp.example namespaces=\"approval@blastguard.io\",valid-before=\"20270101\" {public}"
        ),
    ] {
        let (ok, stderr) = render(&good);
        assert!(ok, "{good}: {stderr}");
        // The server reads it too.
        blastguard::approval::allowed_signers::AllowedSigners::parse(&good).unwrap();
    }
    for bad in [
        public.to_string(), // no principal
        format!(
            "alice@corp.example {}",
            public.split_whitespace().nth(1).unwrap()
        ), // no key type
        "alice@corp.example".to_string(),
    ] {
        let (ok, stderr) = render(&bad);
        assert!(
            !ok && stderr.contains("allowedSigners/entries/0"),
            "{bad}: {stderr}"
        );
        assert!(blastguard::approval::allowed_signers::AllowedSigners::parse(&bad).is_err());
    }
}

/// Issue 22 finding 7: the first run of `serve --dev` logged an ERROR about a missing
/// allowed_signers, which is expected there; it is a warning naming the flag.
#[test]
fn serve_dev_without_approvers_warns_instead_of_erring() {
    let server = common::Server::start(&["--dev"]);
    let log = server.stderr();
    assert!(log.contains("--dev: no allowed_signers"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

/// Issue 22 finding 7: the chart's notes told a `webhook.url` user to run `serve`
/// without the `--listen` port the URL names (and without the namespace for its
/// records).
#[test]
fn the_chart_notes_serve_line_listens_where_webhook_url_points() {
    let out = common::tool("helm")
        .args(["install", "blastguard"])
        .arg(common::repo().join("charts/blastguard"))
        .args(["--dry-run=client", "--namespace", "guard"])
        .args(["--set", "webhook.url=https://10.1.2.3:9443/validate"])
        .args(["--set", "certificates.mode=secret"])
        .args(["--set", "certificates.secret.caBundle=Zm9v"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let serve = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("blastguard serve"))
        .unwrap_or_else(|| panic!("no serve line in the notes:\n{stdout}"));
    assert!(
        serve.contains("--listen 0.0.0.0:9443") && serve.contains("--state-namespace guard"),
        "{serve}"
    );
}
