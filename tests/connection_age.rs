//! `serve --max-connection-age`: a webhook connection is closed gracefully once it has
//! lived its age, so the API server dials the Service again and its calls spread over
//! the replicas (tests/e2e_node.rs shows that part with two pods); no request fails for
//! it.
//!
//! What stands in for the API server: the clients here, which call as it does (TLS
//! verified against the CA bundle, `POST /validate?timeout=10s`, HTTP/2 where ALPN
//! negotiates it, HTTP/1.1 otherwise). The server is `blastguard serve` as shipped.
//!
//! Each case fails without the bound (the connection is never closed: no GOAWAY, no
//! `Connection: close`, no `max_age` in the metrics), and with an abrupt close (a
//! request in flight at the age would get no answer).

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The age in these tests: short, so each case takes seconds.
const AGE: &str = "1s";
/// Longer than the age: a request whose body is still arriving when the age passes.
const SLOW_BODY: Duration = Duration::from_millis(1600);

fn start(dir: &std::path::Path, pki: &Pki, age: &str) -> Server {
    Server::start_with_leaf(dir, &pki.leaf(1, 2030), &["--max-connection-age", age])
}

async fn closed_for_age(server: &Server) -> f64 {
    let series = r#"blastguard_connections_closed_total{endpoint="webhook",reason="max_age"}"#;
    server_metric(server, series).await.unwrap_or(0.0)
}

/// The answer to [`ai_deployment_in_prod`] is a denial of that very request.
#[track_caller]
fn assert_denied(body: &[u8], uid: &str) {
    let review: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    assert_eq!(review["response"]["uid"], uid, "{review}");
    assert_eq!(review["response"]["allowed"], false, "{review}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_a_stream_open_at_the_age_is_answered_then_goaway_ends_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = start(dir.path(), &pki, AGE);
    let tls = tls_connect(&server, &pki.ca_pem, &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let opened = Instant::now();
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(async move {
        let ended = connection.await;
        (opened.elapsed(), ended)
    });

    // Streams before the age are answered as usual.
    let mut client = client.ready().await.unwrap();
    for i in 0..3 {
        let id = uid(1 + i);
        let (status, body) = h2_review(&mut client, &id, Duration::ZERO).await;
        assert_eq!(status, 200);
        assert_denied(&body, &id);
    }
    // A stream opened before the age, whose body is still arriving after it.
    let id = uid(10);
    let (status, body) = h2_review(&mut client, &id, SLOW_BODY).await;
    assert_eq!(status, 200, "the stream in flight at the age was cut");
    assert_denied(&body, &id);

    // The server said GOAWAY, and the connection ended cleanly, not reset, while the
    // client still held it (a client with no stream open keeps its connection).
    let (lasted, ended) = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the connection outlived its age")
        .unwrap();
    drop(client);
    assert!(
        ended.is_ok(),
        "the connection ended with an error: {ended:?}"
    );
    assert!(lasted >= Duration::from_millis(900), "{lasted:?}");
    assert_eq!(closed_for_age(&server).await, 1.0);
}

/// Sends one review on an HTTP/2 stream, its body after `hold`; (status, body).
async fn h2_review(
    client: &mut h2::client::SendRequest<axum::body::Bytes>,
    id: &str,
    hold: Duration,
) -> (u16, Vec<u8>) {
    let request = axum::http::Request::post("https://127.0.0.1/validate?timeout=10s")
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    let body = ai_deployment_in_prod(id);
    let (head, tail) = body.split_at(body.len() / 2);
    stream.send_data(head.to_vec().into(), false).unwrap();
    tokio::time::sleep(hold).await;
    stream.send_data(tail.to_vec().into(), true).unwrap();
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_the_response_after_the_age_says_connection_close_and_the_server_closes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = start(dir.path(), &pki, AGE);
    let mut tls = tls_connect(&server, &pki.ca_pem, &[b"http/1.1"])
        .await
        .unwrap();

    // Before the age: kept alive.
    let id = uid(20);
    let head = h1_send(&mut tls, &id, Duration::ZERO).await;
    let (head, body) = h1_read(&mut tls, &head).await;
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_denied(&body, &id);

    // In flight at the age (the body arrives after it): answered, then closed.
    let id = uid(21);
    let sent = h1_send(&mut tls, &id, SLOW_BODY).await;
    let (head, body) = h1_read(&mut tls, &sent).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_denied(&body, &id);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the server did not close after Connection: close: {read:?}"
    );
    assert_eq!(closed_for_age(&server).await, 1.0);
}

/// Writes one review request, the second half of its body after `hold`.
async fn h1_send<S: tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
    id: &str,
    hold: Duration,
) -> String {
    let body = ai_deployment_in_prod(id);
    let head = format!(
        "POST /validate?timeout=10s HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (first, second) = body.split_at(body.len() / 2);
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(first).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(hold).await;
    tls.write_all(second).await.unwrap();
    tls.flush().await.unwrap();
    id.to_string()
}

/// Reads one response with a Content-Length: (head, body).
async fn h1_read<S: tokio::io::AsyncRead + Unpin>(tls: &mut S, id: &str) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, tls.read(&mut byte))
            .await
            .unwrap_or_else(|_| panic!("no answer for {id}"))
            .unwrap();
        assert_eq!(n, 1, "the connection closed before answering {id}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body).await.unwrap();
    (head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_over_many_ages_none_fails_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = start(dir.path(), &pki, AGE);
    let run_for = Duration::from_secs(4);
    for http in [Http::Two, Http::One] {
        let before = closed_for_age(&server).await;
        // One client, as the API server keeps one per webhook; four callers at once.
        let client = webhook_client(&pki.ca_pem, http);
        let mut callers = tokio::task::JoinSet::new();
        for caller in 0..4u32 {
            let client = client.clone();
            let url = server.webhook_url("/validate?timeout=10s");
            callers.spawn(async move {
                let started = Instant::now();
                let mut answered = 0u32;
                while started.elapsed() < run_for {
                    let id = uid(1000 * (caller + 1) + answered);
                    let answer = send(
                        client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(ai_deployment_in_prod(&id)),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{http:?}: a request failed: {e:?}"));
                    assert_eq!(answer.status, 200, "{http:?}: {}", answer.text);
                    assert_eq!(answer.version, http.version());
                    assert_denied(answer.text.as_bytes(), &id);
                    answered += 1;
                }
                answered
            });
        }
        let mut answered = 0;
        while let Some(n) = callers.join_next().await {
            answered += n.unwrap();
        }
        let closed = closed_for_age(&server).await - before;
        eprintln!("{http:?}: {answered} answered, {closed} connections closed for their age");
        assert!(answered >= 20, "{http:?}: only {answered} answered");
        // Four seconds of 1 s connections: several ended under the callers.
        assert!(
            closed >= 2.0,
            "{http:?}: {closed} connections closed for age"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_zero_keeps_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = start(dir.path(), &pki, "0s");
    let mut tls = tls_connect(&server, &pki.ca_pem, &[b"http/1.1"])
        .await
        .unwrap();
    for i in 0..2 {
        let id = uid(30 + i);
        let sent = h1_send(&mut tls, &id, SLOW_BODY).await;
        let (head, body) = h1_read(&mut tls, &sent).await;
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        assert_denied(&body, &id);
    }
    assert_eq!(closed_for_age(&server).await, 0.0);
}
