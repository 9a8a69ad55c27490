//! Start-up and shutdown of `blastguard serve`, as an operator meets them: every file
//! the server cannot use is named, with what is wrong with it, on one log line (once,
//! not on every reload tick); and a shutdown whose drain deadline cut requests off
//! exits non-zero and says how many.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt as _;

/// The lines of `log` that mention `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn an_unusable_policy_stops_start_up_with_one_line_naming_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let leaf = pki.leaf(1, 2030);
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let invalid = dir.path().join("invalid.yaml");
    std::fs::write(
        &invalid,
        blastguard::policy::DEFAULT_POLICY_YAML.replace("mode: enforce", "mode: sometimes"),
    )
    .unwrap();
    let missing = dir.path().join("missing.yaml");
    let cases = [
        (&invalid, "spec.mode: unknown variant `sometimes`"),
        (&missing, "No such file"),
    ];
    for (policy, problem) in cases {
        let path = policy.to_str().unwrap();
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
            path,
            "--state",
            "memory",
        ]);
        assert_eq!(status.code(), Some(1), "{path}: {stderr}");
        assert!(
            !stdout.contains("listening"),
            "nothing was served: {stdout}"
        );
        let lines = lines_with(&stderr, path);
        assert_eq!(lines.len(), 1, "{path}: one line, got:\n{stderr}");
        assert!(
            lines[0].contains("ERROR") && lines[0].contains(problem),
            "{path}: {problem:?} in {:?}",
            lines[0]
        );
    }
}

/// Certificates and allowed_signers are reloaded, so at start-up a bad one leaves the
/// server up (not ready, or with no approval possible) and says so, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_certificates_and_allowed_signers_get_one_line_each_naming_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let leaf = pki.leaf(1, 2030);
    let good_cert = dir.path().join("good.crt");
    let good_key = dir.path().join("good.key");
    std::fs::write(&good_cert, &leaf.cert_pem).unwrap();
    std::fs::write(&good_key, &leaf.key_pem).unwrap();
    let not_pem = dir.path().join("not-pem.crt");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let a_directory = dir.path().join("a-directory.crt");
    std::fs::create_dir(&a_directory).unwrap();
    let bad_signers = dir.path().join("bad_signers");
    std::fs::write(
        &bad_signers,
        "# approvers\nalice@example.com ssh-ed25519 NOT-BASE64\n",
    )
    .unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let missing = dir.path().join("missing.crt");
    let missing_signers = dir.path().join("missing_signers");

    // (certificate, key, allowed_signers, the file named, the problem)
    let cases = [
        (
            path(&missing),
            path(&good_key),
            path(&bad_signers),
            path(&missing),
            "No such file",
        ),
        (
            path(&a_directory),
            path(&good_key),
            path(&bad_signers),
            path(&a_directory),
            "Is a directory",
        ),
        (
            path(&not_pem),
            path(&good_key),
            path(&bad_signers),
            path(&not_pem),
            "no PEM certificate",
        ),
        (
            path(&good_cert),
            path(&good_key),
            path(&bad_signers),
            path(&bad_signers),
            "line 2: invalid ssh-ed25519 key",
        ),
        (
            path(&good_cert),
            path(&good_key),
            path(&missing_signers),
            path(&missing_signers),
            "No such file",
        ),
    ];
    for (cert, key, signers, named, problem) in cases {
        let server = Server::start(&[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--allowed-signers",
            &signers,
            "--reload-interval",
            "100ms",
            "--state",
            "memory",
        ]);
        eventually(&format!("a line about {named}"), || async {
            server.stderr().contains(problem).then_some(())
        })
        .await;
        // Several reload ticks later, still one line: a bad file is reported when it
        // goes bad, not on every tick.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let log = server.stderr();
        let lines: Vec<&str> = lines_with(&log, problem)
            .into_iter()
            .filter(|l| l.contains(&named))
            .collect();
        assert_eq!(lines.len(), 1, "{named}: one line, got:\n{log}");
        // A certificate problem is a warning (the last good pair keeps serving); an
        // unusable allowed_signers is an error: no approval can be valid until fixed.
        assert!(
            lines[0].contains("WARN") || lines[0].contains("ERROR"),
            "{}",
            lines[0]
        );
    }
}

/// Starts a request over HTTP/1.1 and sends half its body, so it stays in flight.
async fn half_sent(
    server: &Server,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let body = ai_deployment_in_prod(&uid(1));
    let mut tls = tls_connect(server, ca_pem, &[b"http/1.1"]).await.unwrap();
    let head = format!(
        "POST /validate?timeout=30s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body[..body.len() / 2]).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

/// Issue 13: SIGTERM exited 0 even when the drain deadline cut requests off. Now the
/// exit code is 3 and the log says how many were cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_3_and_says_how_many_requests_the_drain_deadline_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let mut server = Server::start_with_leaf(
        dir.path(),
        &pki.leaf(1, 2030),
        &[
            "--body-timeout",
            "60s",
            "--drain-timeout",
            "1s",
            "--state",
            "memory",
        ],
    );
    // Two requests whose bodies never finish, and an idle connection, which is no
    // request and is not counted.
    let _held = [
        half_sent(&server, &pki.ca_pem).await,
        half_sent(&server, &pki.ca_pem).await,
    ];
    let _idle = tls_connect(&server, &pki.ca_pem, &[b"http/1.1"])
        .await
        .unwrap();
    eventually("both requests to be in flight", || async {
        (server_metric(&server, "blastguard_inflight_requests").await? == 2.0).then_some(())
    })
    .await;
    server.signal("TERM");
    let status = server.wait_exit();
    let log = server.stderr();
    assert_eq!(status.code(), Some(3), "{log}");
    let cut = lines_with(&log, "drain timeout cut off");
    assert_eq!(cut.len(), 1, "{log}");
    assert!(cut[0].contains("cut off 2 request(s)"), "{}", cut[0]);
}
