//! How long verifying an approval takes on the request path.
//!
//! `cargo bench --bench approval` prints, for keys made with ssh-keygen:
//! - the digest alone (JCS + SHA-256 of a Deployment's spec): the floor every
//!   over-limit request pays;
//! - one approval verification with 1 and with 2 signatures (ed25519, and an
//!   ECDSA-P256 + RSA-3072 pair), with their ratio to the digest and to each other;
//! - a whole `Engine::review` of an approved request, against the same request
//!   without an approval (denied);
//!
//! and the process's peak RSS.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use blastguard::annotations::{APPROVAL, APPROVAL_SIGNATURE};
use blastguard::approval::allowed_signers::AllowedSigners;
use blastguard::approval::digest::object_text_digest;
use blastguard::approval::verifier::SignedApprovals;
use blastguard::approval::{
    ApprovalContext, ApprovalOutcome, ApprovalSubject, ApprovalVerifier, signing, sshsig,
};
use blastguard::change::Change;
use blastguard::engine::Engine;
use blastguard::policy::Policy;
use serde_json::{Value, json};

/// Time per call of `f`: the median of 7 rounds of at least 200 ms each.
fn measure(mut f: impl FnMut()) -> Duration {
    for _ in 0..10 {
        f();
    }
    let mut per_round = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < Duration::from_millis(200) {
            f();
            n += 1;
        }
        per_round.push(start.elapsed() / n);
    }
    per_round.sort();
    per_round[per_round.len() / 2]
}

fn deployment(annotations: &BTreeMap<String, String>) -> Value {
    let containers: Vec<Value> = (0..3)
        .map(|i| {
            json!({
                "name": format!("c{i}"), "image": format!("registry.example/app-{i}:1.4.{i}"),
                "ports": [{"containerPort": 8080 + i, "protocol": "TCP"}],
                "env": (0..10).map(|e| json!({"name": format!("VAR_{e}"), "value": format!("value-{e}")})).collect::<Vec<_>>(),
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080 + i}, "periodSeconds": 10},
                "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"
            })
        })
        .collect();
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "prod", "annotations": annotations},
        "spec": {
            "replicas": 40, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": "api"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": containers, "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                         "schedulerName": "default-scheduler", "terminationGracePeriodSeconds": 30}
            }
        }
    })
}

fn review(object: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "8d7e1f0a-0000-4000-8000-000000000001",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "api", "namespace": "prod", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:ai-agents:claude"},
            "object": object, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .expect("JSON")
}

fn keygen(dir: &Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(args)
        .args(["-q", "-N", "", "-f"])
        .arg(&path)
        .status()
        .expect("the benchmark needs ssh-keygen");
    assert!(status.success());
    path
}

fn peak_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = [
        (
            "alice@corp",
            keygen(dir.path(), "alice", &["-t", "ed25519"]),
        ),
        ("bob@corp", keygen(dir.path(), "bob", &["-t", "ed25519"])),
        (
            "carol@corp",
            keygen(dir.path(), "carol", &["-t", "ecdsa", "-b", "256"]),
        ),
        (
            "dave@corp",
            keygen(dir.path(), "dave", &["-t", "rsa", "-b", "3072"]),
        ),
    ];
    let allowed: String = keys
        .iter()
        .map(|(who, path)| {
            let public = std::fs::read_to_string(path.with_extension("pub")).expect("pub");
            format!("{who} {public}")
        })
        .collect();
    let verifier = SignedApprovals::new(AllowedSigners::parse(&allowed).expect("signers"));
    let policy = Policy::embedded();

    let bare = deployment(&BTreeMap::new());
    let bare_review = review(&bare);
    let request = blastguard::review::decode(&bare_review).expect("review");
    let change = Change::from_view(&request, &policy).expect("change");
    let subject = ApprovalSubject::of(&change).expect("subject");
    let payload = subject
        .payload(SystemTime::now(), Duration::from_secs(7200), "bench")
        .to_json();
    let sign = |i: usize| {
        let sig = signing::sign_with_key_file(&keys[i].1, payload.as_bytes()).expect("sign");
        sshsig::armor(&sig).expect("armor")
    };
    let signatures: Vec<String> = (0..keys.len()).map(sign).collect();
    let annotations = |which: &[usize]| -> BTreeMap<String, String> {
        [
            (APPROVAL.to_string(), payload.clone()),
            (
                APPROVAL_SIGNATURE.to_string(),
                which.iter().map(|i| signatures[*i].as_str()).collect(),
            ),
        ]
        .into_iter()
        .collect()
    };
    let (verifier, policy, change, subject) = (&verifier, &policy, &change, &subject);
    let verify = |which: &[usize], rule: usize| {
        let annotations = annotations(which);
        let rule = &policy.rules[rule];
        move || {
            let outcome = verifier.verify(&ApprovalContext {
                change,
                subject,
                annotations: Some(&annotations),
                rule,
                settings: &policy.approvals,
                now: SystemTime::now(),
            });
            assert!(
                matches!(outcome, ApprovalOutcome::Valid { .. }),
                "{outcome:?}"
            );
            black_box(outcome);
        }
    };

    let kept = change.object.clone().expect("object");
    let kept_spec: serde_json::Value = serde_json::from_str(kept.text()).expect("parses");
    let digest = measure(|| {
        black_box(object_text_digest(black_box(kept.text())).expect("digest"));
    });
    let ed_one = measure(verify(&[0], 1));
    let ed_two = measure(verify(&[0, 1], 0));
    let mixed_one = measure(verify(&[3], 1));
    let mixed_two = measure(verify(&[2, 3], 0));

    let engine = Engine::new(Policy::embedded(), std::sync::Arc::new(verifier.clone()));
    let approved_body = review(&deployment(&annotations(&[0, 1])));
    let denied_body = review(&bare);
    assert!(engine.review(&approved_body).allowed());
    assert!(!engine.review(&denied_body).allowed());
    let review_approved = measure(|| {
        black_box(engine.review(black_box(&approved_body)));
    });
    let review_denied = measure(|| {
        black_box(engine.review(black_box(&denied_body)));
    });

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "approval verification (median of 7 rounds; spec of {} bytes canonical JSON)",
        blastguard::approval::digest::canonical_json(kept_spec.get("spec").expect("spec"))
            .expect("jcs")
            .len()
    );
    println!(
        "  digest alone (baseline)                     {:>9.1} µs",
        us(digest)
    );
    println!(
        "  1 signature,  ed25519                       {:>9.1} µs  ({:.1}× digest)",
        us(ed_one),
        ratio(ed_one, digest)
    );
    println!(
        "  2 signatures, ed25519 + ed25519             {:>9.1} µs  ({:.1}× digest, {:.2}× one signature)",
        us(ed_two),
        ratio(ed_two, digest),
        ratio(ed_two, ed_one)
    );
    println!(
        "  1 signature,  rsa-3072                      {:>9.1} µs  ({:.1}× digest)",
        us(mixed_one),
        ratio(mixed_one, digest)
    );
    println!(
        "  2 signatures, ecdsa-p256 + rsa-3072         {:>9.1} µs  ({:.1}× digest, {:.2}× rsa alone)",
        us(mixed_two),
        ratio(mixed_two, digest),
        ratio(mixed_two, mixed_one)
    );
    println!(
        "  Engine::review, approved (2 × ed25519)      {:>9.1} µs  ({:.2}× the denied request)",
        us(review_approved),
        ratio(review_approved, review_denied)
    );
    println!(
        "  Engine::review, no approval (denied)        {:>9.1} µs",
        us(review_denied)
    );
    match peak_rss_kib() {
        Some(kib) => println!("  peak RSS                                    {kib:>9} KiB"),
        None => println!("  peak RSS                                    unknown (no /proc)"),
    }
}
