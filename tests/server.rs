//! `blastguard serve` end to end: the real binary, real TLS with certificate
//! verification, HTTP/1.1 and HTTP/2, reloads, signals, the admin port and promtool.
//!
//! The clients stand in for the Kubernetes API server (there is none here): they send
//! AdmissionReview v1 bodies shaped as it sends them, over TLS verified against the
//! CA bundle, to `POST /validate?timeout=10s`, using HTTP/2 when ALPN negotiates it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PROTOCOLS: [Http; 2] = [Http::One, Http::Two];

fn response(answer: &Answer) -> Value {
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.content_type, "application/json");
    let review = answer.json();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    review["response"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_uids_over_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = Server::start_with_leaf(dir.path(), &pki.leaf(1, 2030), &[]);
    for http in PROTOCOLS {
        let client = webhook_client(&pki.ca_pem, http);
        for round in 0..3 {
            let deny_uid = uid(round);
            let answer = post_review(&client, &server, ai_deployment_in_prod(&deny_uid))
                .await
                .unwrap();
            assert_eq!(answer.version, http.version(), "negotiated version");
            let r = response(&answer);
            assert_eq!(r["uid"], deny_uid.as_str());
            assert_eq!(r["allowed"], false, "{r}");
            assert_eq!(r["status"]["code"], 403, "{r}");
            let message = r["status"]["message"].as_str().unwrap();
            assert!(message.contains("maxPodsAffected"), "{message}");

            let allow_uid = uid(100 + round);
            let answer = post_review(&client, &server, plain_deployment_in_prod(&allow_uid))
                .await
                .unwrap();
            assert_eq!(answer.version, http.version());
            let r = response(&answer);
            assert_eq!(r["uid"], allow_uid.as_str());
            assert_eq!(r["allowed"], true, "{r}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_each_get_a_clear_answer() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = Server::start_with_leaf(dir.path(), &pki.leaf(1, 2030), &[]);

    let mut wrong_version: Value =
        serde_json::from_slice(&ai_deployment_in_prod("v1beta1-uid")).unwrap();
    wrong_version["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let no_request = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec();
    // A review whose object carries a 9 MiB annotation: over the 8 MiB cap.
    let huge = "x".repeat(9 * 1024 * 1024);
    let oversized = DeploymentCreate {
        uid: "oversized-uid",
        namespace: "prod",
        name: "api",
        replicas: 1,
        annotations: &[("example.com/blob", &huge)],
        user: "alice@example.com",
    }
    .body();

    for http in PROTOCOLS {
        let client = webhook_client(&pki.ca_pem, http);

        let a = post_review(&client, &server, b"{not json".to_vec())
            .await
            .unwrap();
        assert_eq!(a.status, 400, "{a:?}");
        assert!(a.text.contains("not a valid AdmissionReview"), "{}", a.text);

        let a = post_review(&client, &server, Vec::new()).await.unwrap();
        assert_eq!(a.status, 400, "{a:?}");
        assert!(a.text.contains("not a valid AdmissionReview"), "{}", a.text);

        let a = post_review(
            &client,
            &server,
            serde_json::to_vec(&wrong_version).unwrap(),
        )
        .await
        .unwrap();
        let r = response(&a);
        assert_eq!(
            r["uid"], "v1beta1-uid",
            "the uid is echoed even when rejected"
        );
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["code"], 400);
        let message = r["status"]["message"].as_str().unwrap();
        assert!(message.contains("admission.k8s.io/v1beta1"), "{message}");

        let a = post_review(&client, &server, no_request.clone())
            .await
            .unwrap();
        assert_eq!(a.status, 400, "{a:?}");
        assert!(a.text.contains("no request"), "{}", a.text);

        let a = post_review(&client, &server, oversized.clone())
            .await
            .unwrap();
        assert_eq!(a.status, 413, "{a:?}");
        assert!(a.text.contains("at most 8 MiB"), "{}", a.text);

        let a = send(client.get(server.webhook_url("/validate")))
            .await
            .unwrap();
        assert_eq!(a.status, 405, "{a:?}");
        assert!(a.text.contains("takes POST"), "{}", a.text);

        let a = send(client.post(server.webhook_url("/mutate")).body("{}"))
            .await
            .unwrap();
        assert_eq!(a.status, 404, "{a:?}");
        assert!(a.text.contains("POST /validate"), "{}", a.text);

        // The server is unharmed: a real review still gets its decision.
        let id = uid(7);
        let r = response(
            &post_review(&client, &server, ai_deployment_in_prod(&id))
                .await
                .unwrap(),
        );
        assert_eq!(r["uid"], id.as_str());
        assert_eq!(r["allowed"], false);
    }
}

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

#[test]
fn an_invalid_policy_at_startup_is_fatal_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let leaf = pki.leaf(1, 2030);
    let (cert, key, policy) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("policy.yaml"),
    );
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let broken =
        blastguard::policy::DEFAULT_POLICY_YAML.replace("mode: enforce", "mode: sometimes");
    std::fs::write(&policy, broken).unwrap();
    let (status, stdout, stderr) = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(
        status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("invalid policy"), "{stderr}");
    assert!(stderr.contains("spec.mode"), "{stderr}");
    assert!(
        !stdout.contains("listening"),
        "nothing was served: {stdout}"
    );
}

/// Sends the headers and the first half of a review over a raw HTTP/1.1 TLS
/// connection and returns the connection with the rest of the body to send.
async fn half_sent_request(
    server: &Server,
    ca_pem: &str,
    body: &[u8],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
) {
    let mut tls = tls_connect(server, ca_pem, &[b"http/1.1"]).await.unwrap();
    let head = format!(
        "POST /validate?timeout=30s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let half = body.len() / 2;
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body[..half]).await.unwrap();
    tls.flush().await.unwrap();
    eventually("the request to be in flight", || async {
        (server_metric(server, "blastguard_inflight_requests").await? == 1.0).then_some(())
    })
    .await;
    (tls, body[half..].to_vec())
}

async fn wait_until_draining(server: &Server) {
    eventually("/readyz to report draining", || async {
        let (status, text) = admin_get(server, "/readyz").await.ok()?;
        (status == 503 && text.contains("draining")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let mut server = Server::start_with_leaf(
        dir.path(),
        &pki.leaf(1, 2030),
        &["--body-timeout", "60s", "--drain-timeout", "60s"],
    );
    let id = uid(9);
    let (mut tls, rest) =
        half_sent_request(&server, &pki.ca_pem, &ai_deployment_in_prod(&id)).await;

    server.signal("TERM");
    wait_until_draining(&server).await;
    eventually("the webhook port to stop accepting", || async {
        tokio::net::TcpStream::connect(server.webhook)
            .await
            .is_err()
            .then_some(())
    })
    .await;

    tls.write_all(&rest).await.unwrap();
    tls.flush().await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, tls.read_to_end(&mut raw))
        .await
        .expect("the response arrives")
        .unwrap_or_else(|e| panic!("read failed after {} bytes: {e}", raw.len()));
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a full HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let review: Value = serde_json::from_str(body).unwrap();
    assert_eq!(review["response"]["uid"], id.as_str());
    assert_eq!(review["response"]["allowed"], false);

    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let mut server = Server::start_with_leaf(
        dir.path(),
        &pki.leaf(1, 2030),
        &["--body-timeout", "600s", "--drain-timeout", "600s"],
    );
    // Held open so the drain cannot finish on its own.
    let (_tls, _rest) =
        half_sent_request(&server, &pki.ca_pem, &ai_deployment_in_prod(&uid(3))).await;
    server.signal("TERM");
    wait_until_draining(&server).await;
    server.signal("TERM");
    let status = server.wait_exit();
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "stderr:\n{}",
        server.stderr()
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

/// The standard process metrics are on the real server's /metrics (and pass promtool
/// with the rest, in the test above), with the values /proc gives for that process: what
/// the runbook's memory and descriptor checks read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_the_process_metrics_of_the_server() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = Server::start_with_leaf(dir.path(), &pki.leaf(1, 2030), &[]);
    let client = webhook_client(&pki.ca_pem, Http::Two);
    post_review(&client, &server, ai_deployment_in_prod(&uid(1)))
        .await
        .unwrap();
    let (status, text) = admin_get(&server, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let value = |name: &str| metric(&text, name).unwrap_or_else(|| panic!("{name} in\n{text}"));

    let rss = value("process_resident_memory_bytes");
    assert!(
        rss > 1e6,
        "RSS {rss} bytes: a running server holds more than 1 MB"
    );
    // Within a factor of the kernel's own figure for that pid (VmRSS, in kB).
    let status_file = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let vm_rss_kb: f64 = status_file
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    assert!(
        (rss / (vm_rss_kb * 1024.0) - 1.0).abs() < 0.5,
        "process_resident_memory_bytes {rss} vs VmRSS {vm_rss_kb} kB"
    );

    let fds = value("process_open_fds");
    // At least stdin/out/err and the two listening sockets.
    assert!(fds >= 5.0, "open fds {fds}");
    assert!(value("process_max_fds") >= fds);
    assert!(value("process_threads") >= 1.0);
    let cpu = value("process_cpu_seconds_total");
    assert!((0.0..600.0).contains(&cpu), "cpu seconds {cpu}");
    // The process started after this test began (the clock's tick, 1/100 s, and the
    // whole seconds of the boot time /proc gives are the slack).
    let started = value("process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started >= before - 2.0 && started <= now + 1.0,
        "start time {started} outside [{before}, {now}]"
    );
    for typed in [
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_start_time_seconds gauge",
    ] {
        assert!(text.contains(typed), "{typed} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_counted_logged_and_metrics_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = Server::start_with_leaf(dir.path(), &pki.leaf(1, 2030), &["--log-format", "json"]);
    let client = webhook_client(&pki.ca_pem, Http::Two);
    let deny_uid = uid(11);
    for body in [
        ai_deployment_in_prod(&deny_uid),
        ai_deployment_in_prod(&uid(12)),
        plain_deployment_in_prod(&uid(13)),
        b"{not json".to_vec(),
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
    ] {
        post_review(&client, &server, body).await.unwrap();
    }

    let (status, text) = admin_get(&server, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let cases = [
        (
            r#"blastguard_admission_requests_total{decision="deny",kind="Deployment",operation="CREATE",reason="over_limits"}"#,
            2.0,
        ),
        (
            r#"blastguard_admission_requests_total{decision="allow",kind="Deployment",operation="CREATE",reason="not_ai_assisted"}"#,
            1.0,
        ),
        (
            r#"blastguard_admission_requests_total{decision="error",kind="unknown",operation="unknown",reason="malformed"}"#,
            1.0,
        ),
        (
            r#"blastguard_admission_requests_total{decision="error",kind="unknown",operation="unknown",reason="missing_request"}"#,
            1.0,
        ),
        (r#"blastguard_approvals_total{result="missing"}"#, 2.0),
        ("blastguard_admission_duration_seconds_count", 5.0),
        ("blastguard_inflight_requests", 0.0),
        ("blastguard_policy_last_reload_success", 1.0),
    ];
    for (series, want) in cases {
        assert_eq!(metric(&text, series), Some(want), "{series}\n{text}");
    }

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/install-tools.sh)");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let line: Value = eventually("the decision log line", || async {
        server.stderr().lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["uid"] == deny_uid.as_str()).then_some(v)
        })
    })
    .await;
    let expected = [
        ("operation", Value::from("CREATE")),
        ("kind", "Deployment".into()),
        ("namespace", "prod".into()),
        ("name", "api".into()),
        ("user", "alice@example.com".into()),
        ("decision", "deny".into()),
        ("reason", "over_limits".into()),
        ("rule", "protected".into()),
        ("pods_affected", 40.into()),
        ("dry_run", false.into()),
    ];
    for (field, want) in expected {
        assert_eq!(line[field], want, "{field} in {line}");
    }
    assert!(
        line["signal"]
            .as_str()
            .unwrap()
            .contains("blastguard.io/ai-agent"),
        "{line}"
    );
    assert!(line["duration_seconds"].as_f64().unwrap() > 0.0, "{line}");
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

#[test]
fn dev_mode_prints_a_curl_command_that_works() {
    let server = Server::start(&["--dev"]);
    let out = server.stdout();
    let curl = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("curl "))
        .unwrap_or_else(|| panic!("no curl example in:\n{out}"));
    assert!(out.contains("CA certificate:"), "{out}");
    let result = std::process::Command::new("sh")
        .args(["-c", &format!("{curl} --silent --show-error --max-time 30")])
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{curl}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let review: Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(review["response"]["allowed"], false, "{review}");
    assert_eq!(review["response"]["status"]["code"], 403);
}

/// Reads until the server closes the connection; `Err` when it stays open for
/// [`PATIENCE`].
async fn read_until_closed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<String, &'static str> {
    let mut seen = Vec::new();
    match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut seen)).await {
        // A reset after the answer also ends the connection.
        Ok(_) => Ok(String::from_utf8_lossy(&seen).into_owned()),
        Err(_) => Err("the server kept the connection open"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_or_answered() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = Server::start_with_leaf(
        dir.path(),
        &pki.leaf(1, 2030),
        &[
            "--handshake-timeout",
            "1s",
            "--header-read-timeout",
            "1s",
            "--body-timeout",
            "1s",
        ],
    );

    // Connects and never starts the TLS handshake.
    let mut tcp = tokio::net::TcpStream::connect(server.webhook)
        .await
        .unwrap();
    read_until_closed(&mut tcp).await.unwrap();

    // Completes the handshake, then sends half a request head.
    let mut tls = tls_connect(&server, &pki.ca_pem, &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"POST /validate?timeout=10s HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    read_until_closed(&mut tls).await.unwrap();

    // Sends the head and part of the body: answered 408 with the reason.
    let mut tls = tls_connect(&server, &pki.ca_pem, &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(
        b"POST /validate?timeout=10s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"apiVersion\":",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut tls).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("request body not received within 1s"),
        "{answer}"
    );

    let (_, metrics) = admin_get(&server, "/metrics").await.unwrap();
    let timeouts = r#"blastguard_admission_requests_total{decision="error",kind="unknown",operation="unknown",reason="body_timeout"}"#;
    assert_eq!(metric(&metrics, timeouts), Some(1.0), "{metrics}");
}

/// Large reviews are judged one at a time off the async workers (they take about 13
/// times their size in memory while parsed): several sent at once over one HTTP/2
/// connection and over separate HTTP/1.1 connections each still get their own answer,
/// and small reviews sent meanwhile are answered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_reviews_each_get_their_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = Server::start_with_leaf(dir.path(), &pki.leaf(1, 2030), &[]);
    // 1.4 MiB: the size of the largest object etcd stores, well over the inline limit.
    let blob = "y".repeat(1400 * 1024);
    let mut tasks = Vec::new();
    for (i, http) in [Http::Two, Http::Two, Http::One, Http::One]
        .into_iter()
        .enumerate()
    {
        let client = webhook_client(&pki.ca_pem, http);
        let uid = uid(500 + i as u32);
        let replicas = if i % 2 == 0 { 40 } else { 1 };
        let body = DeploymentCreate {
            uid: &uid,
            namespace: "staging",
            name: "api",
            replicas,
            annotations: &[
                ("blastguard.io/ai-agent", "claude-code"),
                ("example.com/blob", &blob),
            ],
            user: "alice@example.com",
        }
        .body();
        assert!(body.len() > 1024 * 1024);
        let url = server.webhook_url("/validate?timeout=10s");
        tasks.push(tokio::spawn(async move {
            let answer = send(
                client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await
            .unwrap();
            (uid, replicas, answer)
        }));
    }
    let small_client = webhook_client(&pki.ca_pem, Http::Two);
    let small = post_review(&small_client, &server, plain_deployment_in_prod(&uid(600)))
        .await
        .unwrap();
    assert_eq!(response(&small)["allowed"], true);
    for task in tasks {
        let (uid, replicas, answer) = task.await.unwrap();
        let r = response(&answer);
        assert_eq!(r["uid"], uid.as_str());
        assert_eq!(r["allowed"], replicas == 1, "replicas {replicas}: {r}");
    }
}
