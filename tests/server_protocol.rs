//! `blastguard serve` answers what it is sent (docs/reliability.md): decisions and uids
//! over HTTP/1.1 and HTTP/2 with real TLS, a clear answer to each bad request, slow
//! clients cut off or answered, and concurrent large reviews each with its own answer.
//!
//! The clients stand in for the Kubernetes API server (there is none here): they send
//! AdmissionReview v1 bodies shaped as it sends them (tests/common/mod.rs), over TLS
//! verified against the CA bundle, to `POST /validate?timeout=10s`, using HTTP/2 when
//! ALPN negotiates it.

mod common;

use common::review::without_request;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PROTOCOLS: [Http; 2] = [Http::One, Http::Two];

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
    let no_request = without_request();
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
            let answer = post_review_at(&client, &url, body).await.unwrap();
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
