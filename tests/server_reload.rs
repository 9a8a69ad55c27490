//! `blastguard serve` reloads what it reads while serving (docs/reliability.md): the
//! certificate rotated by the kubelet's symlink swap without a failed request, the policy
//! (a bad file keeps the last good one; a bad one at startup is fatal), the
//! allowed_signers file appearing later, and readiness waiting for the certificate.
//!
//! The clients stand in for the Kubernetes API server (there is none here): they send
//! AdmissionReview v1 bodies shaped as it sends them (tests/common/mod.rs), over TLS
//! verified against the CA bundle, to `POST /validate?timeout=10s`, using HTTP/2 when
//! ALPN negotiates it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;

/// Runs requests until `stop`, counting successes and recording failures. With
/// `fresh_connections` every request does a new TLS handshake, so handshakes run
/// while the certificate is swapped.
fn request_loop(
    server: &Server,
    client: reqwest::Client,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let url = server.webhook_url("/validate?timeout=10s");
    tokio::spawn(async move {
        let mut failures = Vec::new();
        let mut n = 0u32;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let id = uid(1000 + n);
            let request = client
                .post(&url)
                .header("content-type", "application/json")
                .body(plain_deployment_in_prod(&id));
            match send(request).await {
                Ok(a) if a.status == 200 && a.json()["response"]["uid"] == id.as_str() => {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
                Ok(a) => failures.push(format!("{} {}", a.status, a.text)),
                Err(e) => failures.push(format!("{e:?}")),
            }
        }
        failures
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotates_by_symlink_swap_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let (old, new) = (pki.leaf(1001, 2030), pki.leaf(1002, 2031));
    let mut secret = KubeletDir::new(&dir.path().join("certs"));
    secret.write_leaf(&old);
    let server = Server::start(&[
        "--tls-cert",
        secret.path("tls.crt").to_str().unwrap(),
        "--tls-key",
        secret.path("tls.key").to_str().unwrap(),
        "--reload-interval",
        "100ms",
    ]);
    assert_eq!(
        served_certificate(&server, &pki.ca_pem).await.unwrap(),
        old.der
    );
    assert_eq!(
        server_metric(&server, "blastguard_tls_cert_not_after_seconds").await,
        Some(old.not_after as f64)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let loops = [
        // New handshake per request, over HTTP/1.1.
        webhook_client_builder(&pki.ca_pem, Http::One)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
        // One long-lived HTTP/2 connection.
        webhook_client(&pki.ca_pem, Http::Two),
    ]
    .map(|client| request_loop(&server, client, stop.clone(), ok.clone()));

    eventually("requests before the swap", || async {
        (ok.load(Ordering::SeqCst) >= 20).then_some(())
    })
    .await;
    secret.write_leaf(&new);
    eventually("the new certificate to be served", || async {
        (served_certificate(&server, &pki.ca_pem).await.ok()? == new.der).then_some(())
    })
    .await;
    let after_swap = ok.load(Ordering::SeqCst);
    eventually("requests after the swap", || async {
        (ok.load(Ordering::SeqCst) >= after_swap + 20).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for handle in loops {
        let failures = handle.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:#?}");
    }

    let (_, metrics) = admin_get(&server, "/metrics").await.unwrap();
    let series = |s: &str| metric(&metrics, s);
    assert_eq!(
        series("blastguard_tls_cert_reloads_total{result=\"success\"}"),
        Some(2.0)
    );
    assert_eq!(
        series("blastguard_tls_cert_reloads_total{result=\"failure\"}"),
        Some(0.0)
    );
    assert_eq!(
        series("blastguard_tls_cert_not_after_seconds"),
        Some(new.not_after as f64)
    );

    // A pair whose key does not belong to its certificate never replaces a good one.
    let other = pki.leaf(1003, 2032);
    secret.write(&[
        ("tls.crt", other.cert_pem.as_bytes()),
        ("tls.key", new.key_pem.as_bytes()),
    ]);
    eventually("the failed reload to show in /metrics", || async {
        let failures = server_metric(
            &server,
            "blastguard_tls_cert_reloads_total{result=\"failure\"}",
        );
        (failures.await? == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        served_certificate(&server, &pki.ca_pem).await.unwrap(),
        new.der
    );
    let client = webhook_client_builder(&pki.ca_pem, Http::One)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let id = uid(1004);
    let r = response(
        &post_review(&client, &server, plain_deployment_in_prod(&id))
            .await
            .unwrap(),
    );
    assert_eq!(r["uid"], id.as_str());
    assert!(
        server
            .stderr()
            .contains("keeping the certificate being served"),
        "{}",
        server.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reload_applies_a_good_file_and_keeps_the_last_good_on_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let mut config_map = KubeletDir::new(&dir.path().join("policy"));
    let default = blastguard::policy::DEFAULT_POLICY_YAML;
    config_map.write(&[("policy.yaml", default.as_bytes())]);
    let policy_path = config_map.path("policy.yaml");
    let server = Server::start_with_leaf(
        dir.path(),
        &pki.leaf(1, 2030),
        &[
            "--policy",
            policy_path.to_str().unwrap(),
            "--reload-interval",
            "100ms",
        ],
    );
    let client = webhook_client(&pki.ca_pem, Http::Two);
    let allowed = || async {
        let id = uid(42);
        let answer = post_review(&client, &server, ai_deployment_in_prod(&id))
            .await
            .unwrap();
        let r = response(&answer);
        assert_eq!(r["uid"], id.as_str());
        r["allowed"].as_bool().unwrap()
    };
    assert!(!allowed().await, "the default policy protects prod");

    // prod is no longer protected, and the default rule allows 50 pods a change, and
    // enough per change set for every probe below to be admitted.
    let relaxed = default
        .replace("kube-node-lease, prod, \"prod-*\"", "kube-node-lease")
        .replace("maxPodsAffected: 10", "maxPodsAffected: 50")
        .replace("maxPodsPerChangeSet: 50", "maxPodsPerChangeSet: 1000000");
    assert_ne!(relaxed, default);
    config_map.write(&[("policy.yaml", relaxed.as_bytes())]);
    eventually("the relaxed policy to take effect", || async {
        allowed().await.then_some(())
    })
    .await;
    assert_eq!(
        server_metric(
            &server,
            "blastguard_policy_reloads_total{result=\"success\"}"
        )
        .await,
        Some(2.0)
    );

    let broken = relaxed.replace("# maxPercentAffected: 50", "maxPercentAffected: 150");
    assert_ne!(broken, relaxed);
    config_map.write(&[("policy.yaml", broken.as_bytes())]);
    eventually("the failed reload to show in /metrics", || async {
        let (_, text) = admin_get(&server, "/metrics").await.ok()?;
        (metric(&text, "blastguard_policy_reloads_total{result=\"failure\"}") == Some(1.0)
            && metric(&text, "blastguard_policy_last_reload_success") == Some(0.0))
        .then_some(())
    })
    .await;
    assert!(allowed().await, "the last good policy stays in force");
    let log = server.stderr();
    assert!(
        log.contains("keeping the last good policy")
            && log.contains("spec.rules[1].limits.maxPercentAffected"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let mut secret = KubeletDir::new(&dir.path().join("certs"));
    let server = Server::start(&[
        "--tls-cert",
        secret.path("tls.crt").to_str().unwrap(),
        "--tls-key",
        secret.path("tls.key").to_str().unwrap(),
        "--reload-interval",
        "100ms",
    ]);
    let (status, text) = admin_get(&server, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("no valid TLS certificate"), "{text}");
    assert_eq!(admin_get(&server, "/livez").await.unwrap().0, 200);
    let client = webhook_client(&pki.ca_pem, Http::Two);
    assert!(
        post_review(&client, &server, plain_deployment_in_prod(&uid(1)))
            .await
            .is_err(),
        "no handshake succeeds without a certificate"
    );

    let leaf = pki.leaf(77, 2030);
    secret.write_leaf(&leaf);
    eventually("/readyz to turn 200", || async {
        (admin_get(&server, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    let id = uid(2);
    let r = response(
        &post_review(&client, &server, plain_deployment_in_prod(&id))
            .await
            .unwrap(),
    );
    assert_eq!(r["uid"], id.as_str());
    assert_eq!(
        served_certificate(&server, &pki.ca_pem).await.unwrap(),
        leaf.der
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_signers_missing_then_loaded_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let signers = dir.path().join("allowed_signers");
    let server = Server::start_with_leaf(
        dir.path(),
        &pki.leaf(1, 2030),
        &[
            "--allowed-signers",
            signers.to_str().unwrap(),
            "--reload-interval",
            "100ms",
        ],
    );
    let series = |r: &str| format!("blastguard_allowed_signers_reloads_total{{result=\"{r}\"}}");
    assert_eq!(server_metric(&server, &series("failure")).await, Some(1.0));
    assert!(
        server.stderr().contains("no approval can be valid"),
        "{}",
        server.stderr()
    );
    let client = webhook_client(&pki.ca_pem, Http::One);
    let r = response(
        &post_review(&client, &server, ai_deployment_in_prod(&uid(5)))
            .await
            .unwrap(),
    );
    assert_eq!(r["allowed"], false, "the webhook serves without signers");

    let key = dir.path().join("approver");
    let keygen = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "alice@example.com",
            "-f",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(keygen.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    std::fs::write(
        &signers,
        format!("alice@example.com namespaces=\"approval@blastguard.io\" {public}"),
    )
    .unwrap();
    eventually("the signers file to load", || async {
        (server_metric(&server, &series("success")).await? == 1.0).then_some(())
    })
    .await;
}
