//! Two replicas behind the Service, on a real node (tests/common/node.rs), with the
//! chart's other way to get certificates: `certificates.mode=secret`, a
//! kubernetes.io/tls Secret made with `openssl` and its CA given as `caBundle`.
//! (`generate` is tests/e2e_node.rs; `cert-manager` cannot run here: its images are in
//! a registry this machine cannot reach, docs/development.md.)
//!
//! The API server keeps one connection per webhook and sends every review over it;
//! `webhook.maxConnectionAge` (`serve --max-connection-age`) ends each connection
//! gracefully, so it dials the Service again and its calls land on both replicas
//! (tests/connection_age.rs holds that no request fails for it). Both replicas count
//! change sets in the same ChangeSet records, so a budget spent through one is seen
//! by the other.
//!
//! Nothing stands in for the API server, the kubelet or the container runtime: every
//! change goes through `kubectl` and `helm`, and which pod answered is read from each
//! pod's own `/metrics` over the node's bridge.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{AI_AGENT, REQUESTS, Run, Steps, base64, deployment, run};
use common::node::{
    DENIED, MachineState, NodeCluster, RELEASE, image, metric_with, pod_metrics, requests_on,
};
use serde_json::{Value, json};

/// The chart's `webhook.maxConnectionAge` here: short, so the spreading shows in
/// seconds (the default is 1m).
const AGE: &str = "2s";
/// A pause between calls longer than the age, so each may find a new connection.
const PAUSE: Duration = Duration::from_millis(2500);
/// How long the calls may take to land on both pods. Each new connection goes to
/// either endpoint at random, so 20 calls all land on one with chance 2^-19.
const SPREAD_WITHIN: Duration = Duration::from_secs(90);
/// The Secret the user makes.
const OWN_SECRET: &str = "own-tls";

#[test]
fn two_replicas_behind_the_service_share_the_calls_and_the_budget() {
    let image = image();
    let before = MachineState::now();
    let node = NodeCluster::up();
    let pki = node.work.join("pki");
    let mut steps = Steps::default();

    steps.run(
        "certificates.mode=secret: an openssl-made kubernetes.io/tls Secret, its CA as caBundle",
        || {
            let ca = openssl_pki(&pki);
            node.kubectl(&["create", "namespace", RELEASE]).expect_ok();
            node.kubectl(&[
                "-n",
                RELEASE,
                "create",
                "secret",
                "tls",
                OWN_SECRET,
                &format!("--cert={}", pki.join("tls.crt").display()),
                &format!("--key={}", pki.join("tls.key").display()),
            ])
            .expect_ok();
            node.load(&image.archive);
            let t = Instant::now();
            node.install(
                &image.tag,
                &[
                    "certificates.mode=secret",
                    &format!("certificates.secret.name={OWN_SECRET}"),
                    &format!("certificates.secret.caBundle={}", base64(ca.as_bytes())),
                    &format!("webhook.maxConnectionAge={AGE}"),
                ],
            )
            .expect_ok();
            eprintln!(
                "e2e figure: helm install --wait (secret mode) {:.1}s",
                t.elapsed().as_secs_f64()
            );
            assert_eq!(node.ready_pods().len(), 2);
            // The chart made no certificate of its own, and registered the user's CA.
            assert!(node.get(RELEASE, "secret/blastguard-tls").is_none());
            let vwc = node
                .get("", "validatingwebhookconfiguration/blastguard")
                .unwrap();
            let client = &vwc["webhooks"][0]["clientConfig"];
            assert_eq!(client["caBundle"], base64(ca.as_bytes()), "{client}");
            assert_eq!(client["service"]["name"], "blastguard", "{client}");
            // A verifying TLS client (openssl) accepts what each pod serves, under the
            // name the API server dials.
            for pod in node.ready_pods() {
                let ip = pod["status"]["podIP"].as_str().unwrap();
                let said = s_client(&pki.join("ca.crt"), ip);
                assert!(said.contains("Verify return code: 0 (ok)"), "{said}");
                let served = s_client(&pki.join("other-ca.crt"), ip);
                assert!(!served.contains("Verify return code: 0 (ok)"), "{served}");
            }
            // And the API server, which trusts only caBundle, calls it.
            node.kubectl(&["create", "namespace", "prod"]).expect_ok();
            let ai = deployment("prod", "api", 40, &[(AI_AGENT, "claude-code")]);
            let err = node
                .kubectl_with(&["apply", "-f", "-"], Some(&ai.to_string()))
                .expect_err();
            assert!(err.contains(DENIED), "{err}");
        },
    );

    steps.run(
        "the API server's calls land on both replicas (each connection ends at its age)",
        || {
            let start = requests_on(&node);
            assert_eq!(start.len(), 2, "{start:?}");
            let ai = deployment("prod", "api", 40, &[(AI_AGENT, "claude-code")]).to_string();
            let t = Instant::now();
            let mut calls = 0;
            let spread = loop {
                let err = node
                    .kubectl_with(&["apply", "--dry-run=server", "-f", "-"], Some(&ai))
                    .expect_err();
                assert!(err.contains(DENIED), "{err}");
                calls += 1;
                let now = requests_on(&node);
                let grown = |n: &String| now[n] > start[n];
                if start.keys().all(grown) {
                    break now;
                }
                assert!(
                    t.elapsed() < SPREAD_WITHIN,
                    "after {calls} calls only one pod answered: {start:?} -> {now:?}"
                );
                std::thread::sleep(PAUSE);
            };
            let total = |m: &BTreeMap<String, f64>| m.values().sum::<f64>();
            assert_eq!(total(&spread) - total(&start), calls as f64);
            let aged: f64 = pod_metrics(&node)
                .values()
                .map(|m| {
                    metric_with(
                        m,
                        "blastguard_connections_closed_total",
                        r#"reason="max_age""#,
                    )
                })
                .sum();
            assert!(aged >= 1.0, "no connection was closed for its age");
            eprintln!(
                "e2e figure: both replicas answered after {calls} calls in {:.1}s ({start:?} -> {spread:?}); {aged} connections closed for their age",
                t.elapsed().as_secs_f64()
            );
        },
    );

    steps.run(
        "a budget spent through one replica is seen by the other: both deny the 51st pod",
        || {
            node.kubectl(&["create", "namespace", "team-a"]).expect_ok();
            // The default rule: 10 pods a change, 50 a change set (one requester).
            let mut allowed_by: BTreeMap<String, u32> = BTreeMap::new();
            for i in 0..5 {
                let spend = nowhere(deployment("team-a", &format!("spend-{i}"), 10, &[(AI_AGENT, "claude-code")]));
                let (out, pod) = answered_by(&node, "allow", || {
                    node.kubectl_with(&["apply", "-f", "-"], Some(&spend.to_string()))
                });
                assert!(out.ok, "spend-{i}: {}", out.stderr);
                *allowed_by.entry(pod).or_default() += 1;
                std::thread::sleep(PAUSE);
            }
            let over = nowhere(deployment("team-a", "over", 10, &[(AI_AGENT, "claude-code")])).to_string();
            let mut denied_by: BTreeMap<String, u32> = BTreeMap::new();
            let t = Instant::now();
            while denied_by.len() < 2 {
                let (out, pod) = answered_by(&node, "deny", || {
                    node.kubectl_with(&["apply", "-f", "-"], Some(&over))
                });
                let err = out.expect_err();
                assert!(err.contains(DENIED), "{err}");
                assert!(
                    err.contains("pods affected by this change set 60 > 50 (maxPodsPerChangeSet)"),
                    "{err}"
                );
                *denied_by.entry(pod).or_default() += 1;
                assert!(
                    t.elapsed() < SPREAD_WITHIN,
                    "only {denied_by:?} denied (allowed by {allowed_by:?})"
                );
                std::thread::sleep(PAUSE);
            }
            // Neither pod admitted all 50 pods itself unless the other admitted none:
            // either way one of the two denied on pods the other admitted.
            eprintln!(
                "e2e figure: budget: admitted by {allowed_by:?}, the 51st pod denied by {denied_by:?}"
            );
            assert_eq!(allowed_by.values().sum::<u32>(), 5);
            assert!(node.get("team-a", "deployment/over").is_none());
        },
    );

    steps.run(
        "helm uninstall leaves the user's Secret, and nothing of the chart's",
        || {
            node.helm(&[
                "uninstall",
                RELEASE,
                "-n",
                RELEASE,
                "--wait",
                "--timeout=2m",
            ])
            .expect_ok();
            assert!(node.get(RELEASE, &format!("secret/{OWN_SECRET}")).is_some());
            assert!(
                node.get("", "validatingwebhookconfiguration/blastguard")
                    .is_none()
            );
            common::cluster::wait_for("the release's pods to go", common::node::POD_WAIT, || {
                node.pods().is_empty().then_some(())
            });
        },
    );

    drop(node);
    steps.run("down leaves the machine as it found it", || {
        assert_eq!(MachineState::now(), before);
    });
    steps.finish();
}

/// `deployment` with pods no node selects: they stay Pending, so the node never tries
/// to pull their image from a registry (nothing is sent beyond this machine).
fn nowhere(mut deployment: Value) -> Value {
    deployment["spec"]["template"]["spec"]["nodeSelector"] =
        json!({"blastguard.io/nowhere": "true"});
    deployment
}

/// Runs `call` (one admission) and names the pod whose count of `decision` grew.
fn answered_by(node: &NodeCluster, decision: &str, call: impl FnOnce() -> Run) -> (Run, String) {
    let label = format!("decision=\"{decision}\"");
    let count = |node: &NodeCluster| -> BTreeMap<String, f64> {
        pod_metrics(node)
            .into_iter()
            .map(|(name, text)| (name, metric_with(&text, REQUESTS, &label)))
            .collect()
    };
    let before = count(node);
    let out = call();
    let after = count(node);
    let grew: Vec<&String> = after
        .keys()
        .filter(|n| after[*n] > before.get(*n).copied().unwrap_or(0.0))
        .collect();
    assert_eq!(
        grew.len(),
        1,
        "{decision}: {before:?} -> {after:?}\n{}",
        out.stderr
    );
    let pod = grew[0].clone();
    (out, pod)
}

/// A CA and a serving certificate for the Service's names, made with openssl as a
/// user would (tls.crt, tls.key, ca.crt in `dir`), and an unrelated CA
/// (other-ca.crt); returns the CA's PEM.
fn openssl_pki(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let names = format!(
        "subjectAltName=DNS:blastguard.{RELEASE}.svc,DNS:blastguard.{RELEASE}.svc.cluster.local"
    );
    let steps: Vec<Vec<String>> = vec![
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=own-ca -keyout ca.key -out ca.crt",
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=other-ca -keyout other-ca.key -out other-ca.crt",
        "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=blastguard -keyout tls.key -out tls.csr",
    ]
    .into_iter()
    .map(|s| s.split(' ').map(str::to_string).collect())
    .chain([[
        "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "30", "-out", "tls.crt", "-extfile", "ext.cnf",
    ]
    .map(str::to_string)
    .to_vec()])
    .collect();
    std::fs::write(
        dir.join("ext.cnf"),
        format!("{names}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    for args in steps {
        let mut cmd = Command::new("openssl");
        cmd.args(&args).current_dir(dir);
        let out = run(cmd, None);
        assert!(out.ok, "openssl {args:?}: {}", out.stderr);
    }
    std::fs::read_to_string(dir.join("ca.crt")).unwrap()
}

/// What `openssl s_client` says of the webhook at `ip`, verifying against `ca` under the
/// Service's name (the name the API server dials and checks).
fn s_client(ca: &Path, ip: &str) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("{ip}:8443")])
        .arg("-CAfile")
        .arg(ca)
        .args([
            "-servername",
            &format!("blastguard.{RELEASE}.svc"),
            "-verify_hostname",
            &format!("blastguard.{RELEASE}.svc"),
        ]);
    let out = run(cmd, Some(""));
    format!("{}{}", out.stdout, out.stderr)
}
