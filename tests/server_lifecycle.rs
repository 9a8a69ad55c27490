//! `blastguard serve` starts and stops as docs/reliability.md says: SIGTERM finishes the
//! request in flight then exits 0, a second signal exits at once, and `--dev` prints a
//! curl command that works.
//!
//! The clients stand in for the Kubernetes API server (there is none here): they send
//! AdmissionReview v1 bodies shaped as it sends them (tests/common/mod.rs), over TLS
//! verified against the CA bundle, to `POST /validate?timeout=10s`, using HTTP/2 when
//! ALPN negotiates it.

mod common;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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
