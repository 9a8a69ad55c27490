//! The write timeout holds for every connection and every answer (issue 19, finding
//! 7), against the real binary over TLS.
//!
//! Before: a pipelining HTTP/1.1 client with a 4 KB receive buffer that never read its
//! answers was dropped after about 10 s when the answers were denials, and was still
//! open after 40 to 90 s in 9 of 14 runs when they were warnings; tests/fairness.rs
//! sent denials only. Here every kind of answer (denial, warning, allow) and two
//! request sizes are sent by clients that never read, over HTTP/1.1 (pipelined) and
//! HTTP/2 (a window kept shut), each case several times, one after another against one
//! server, each from its own loopback address (Linux routes all of 127/8 to the
//! loopback interface), and each connection must be dropped within a bound.
//!
//! Investigation: on this machine none of these cases kept a connection past its
//! bound (in memory, whose serving path issue 19's changes leave as it was, repeated
//! with the issue's 10 s write timeout and 40-replica warnings too, and once with the
//! state in the cluster), so the hang the issue saw was not reproduced here; these
//! tests stand guard over every kind of answer and both protocols. With the state in
//! the cluster each AI decision waits for a write, and filling a non-reading client's
//! buffers takes thousands of them (minutes here), so that case is not in the suite.
//!
//! Looked at again (issue 19's last pass) in src/server/listener.rs, for an answer
//! written while the timer is not armed: the timer wraps the TCP socket *under* TLS,
//! so rustls taking plaintext into its own buffer (a ready write at the TLS layer while
//! the socket is full) never disarms it; only bytes the kernel takes do, and a flush
//! reaches the socket's (always ready) flush only once rustls has nothing left to
//! send. HTTP/1.1 keep-alive: an answer the kernel took whole leaves nothing queued in
//! the process, so there is nothing to time out; the next answer that cannot be
//! written arms the timer. HTTP/2: flow control holds the body in the response, whose
//! age the connection's check bounds; the pings wait behind the same full socket.
//! Both tests passed again on that branch (6 min on the loaded two-core machine): no
//! path where the timeout never fires was found.
//!
//! What stands in for the API server: nothing; these clients are the attackers, and
//! the server is `blastguard serve` as shipped, with a policy file.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};

/// The server's write timeout in these tests.
const WRITE_TIMEOUT: &str = "2s";
/// How long a client that never reads may stay connected once the server has stopped
/// taking its requests (HTTP/1.1) or since it opened (HTTP/2): the write timeout, with
/// room for a two-core machine loaded by all the cases at once.
const DROPPED_WITHIN: Duration = Duration::from_secs(12);
/// Each case this many times.
const REPEATS: usize = 3;

/// Denials outside `prod`, warnings in `prod`, allows for changes without AI markers.
const POLICY: &str = r#"apiVersion: blastguard.io/v1alpha1
kind: BlastRadiusPolicy
metadata: {name: write-timeout}
spec:
  mode: enforce
  provenance:
    annotations: [blastguard.io/ai-agent]
  rules:
    - name: warned
      namespaces: [prod]
      mode: warn
      limits: {maxPodsAffected: 0}
    - name: enforced
      namespaces: ["*"]
      limits: {maxPodsAffected: 0}
"#;

/// What the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Denial,
    Warning,
    Allow,
}

/// A review that gets `kind` as its answer, padded to about `pad` bytes more.
fn review(kind: Kind, pad: usize, tag: u32) -> Vec<u8> {
    let padding = "x".repeat(pad);
    let mut annotations: Vec<(&str, &str)> = vec![("example.com/padding", &padding)];
    if kind != Kind::Allow {
        annotations.push(AI[0]);
    }
    DeploymentCreate {
        uid: &uid(tag),
        namespace: if kind == Kind::Denial { "shop" } else { "prod" },
        name: "api",
        replicas: 3,
        annotations: &annotations,
        user: "alice@example.com",
    }
    .body()
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

async fn connect(from: IpAddr, to: SocketAddr, receive_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

async fn tls(
    from: IpAddr,
    webhook: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
    receive_buffer: Option<u32>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = connect(from, webhook, receive_buffer).await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(ca_pem, alpn)));
    let name = rustls_pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    connector.connect(name, tcp).await.unwrap()
}

/// Checks the answer is the kind expected, over a connection that does read.
async fn check_answer(server: &Server, ca_pem: &str, kind: Kind, pad: usize) {
    let client = webhook_client(ca_pem, Http::Two);
    let text = client
        .post(server.webhook_url("/validate?timeout=10s"))
        .header("content-type", "application/json")
        .body(review(kind, pad, 1))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let allowed = text.contains("\"allowed\":true");
    let warned = text.contains("\"warnings\"");
    let got = match (allowed, warned) {
        (false, _) => Kind::Denial,
        (true, true) => Kind::Warning,
        (true, false) => Kind::Allow,
    };
    assert_eq!(got, kind, "pad {pad}: {text}");
}

/// An HTTP/1.1 client with a 4 KB receive buffer that pipelines `body` without ever
/// reading: how long the server kept it after the last request it could send (the
/// server stops reading once its buffers of answers are full), and how many it sent.
async fn pipelining_client(
    webhook: SocketAddr,
    ca_pem: &str,
    from: IpAddr,
    body: Vec<u8>,
) -> (Duration, usize) {
    let stream = tls(from, webhook, ca_pem, &[b"http/1.1"], Some(4096)).await;
    let (_never_read, mut write) = tokio::io::split(stream);
    let mut request = format!(
        "POST /validate?timeout=10s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let mut last_sent = Instant::now();
    let mut sent = 0;
    loop {
        match tokio::time::timeout(PATIENCE, write.write_all(&request)).await {
            Ok(Ok(())) => {
                sent += 1;
                last_sent = Instant::now();
            }
            // Dropped (or neither reading nor dropped for PATIENCE): how long the
            // server held the connection after it stopped taking requests.
            Ok(Err(_)) | Err(_) => return (last_sent.elapsed(), sent),
        }
    }
}

/// An HTTP/2 client with a shut window that sends 50 reviews of `body` and answers
/// pings: how long the server kept it.
async fn shut_window_client(
    server: &Server,
    ca_pem: &str,
    from: IpAddr,
    body: Vec<u8>,
) -> Duration {
    let stream = tls(from, server.webhook, ca_pem, &[b"h2"], None).await;
    let (mut client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, axum::body::Bytes>(stream)
        .await
        .unwrap();
    let started = Instant::now();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
        started.elapsed()
    });
    let mut held = Vec::new();
    for _ in 0..50 {
        let Ok(ready) = client.ready().await else {
            break;
        };
        client = ready;
        let request = axum::http::Request::post("https://127.0.0.1/validate?timeout=10s")
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let Ok((response, mut stream)) = client.send_request(request, false) else {
            break;
        };
        let _ = stream.send_data(body.clone().into(), true);
        held.push((response, stream));
    }
    match tokio::time::timeout(PATIENCE, driver).await {
        Ok(lasted) => lasted.unwrap(),
        Err(_) => PATIENCE,
    }
}

fn start(dir: &std::path::Path, pki: &Pki) -> Server {
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    Server::start_with_leaf(
        dir,
        &pki.leaf(1, 2030),
        &[
            "--write-timeout",
            WRITE_TIMEOUT,
            "--policy",
            policy.to_str().unwrap(),
        ],
    )
}

const KINDS: [Kind; 3] = [Kind::Denial, Kind::Warning, Kind::Allow];
/// A review of about 2 KB, and one of about 40 KB.
const PADS: [usize; 2] = [0, 38 * 1024];

async fn webhook_metric(server: &Server, reason: &str) -> f64 {
    let series =
        format!("blastguard_connections_closed_total{{endpoint=\"webhook\",reason=\"{reason}\"}}");
    server_metric(server, &series).await.unwrap_or(0.0)
}

/// Runs `client` for every kind, size and repeat at once, each from its own address,
/// and checks each was dropped in time, as a write timeout.
async fn every_case<F, Fut>(protocol: &str, client: F)
where
    F: Fn(Arc<Server>, Arc<String>, IpAddr, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Duration> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = Arc::new(start(dir.path(), &pki));
    let ca = Arc::new(pki.ca_pem.clone());
    for kind in KINDS {
        for pad in PADS {
            check_answer(&server, &ca, kind, pad).await;
        }
    }
    // One case at a time: each meets a server that served the ones before (the issue
    // saw the hang on fresh servers and busy ones alike).
    let mut kept = Vec::new();
    let mut address = 10u8;
    let mut cases = Vec::new();
    for repeat in 0..REPEATS {
        for kind in KINDS {
            for pad in PADS {
                cases.push((kind, pad, repeat));
            }
        }
    }
    for (kind, pad, repeat) in cases {
        address += 1;
        let lasted = client(
            server.clone(),
            ca.clone(),
            loopback(address),
            review(kind, pad, u32::from(address)),
        )
        .await;
        eprintln!(
            "{protocol}: {kind:?}, {pad} bytes of padding, run {repeat}: dropped after {lasted:?}"
        );
        if lasted >= DROPPED_WITHIN {
            kept.push(format!("{kind:?} pad {pad} run {repeat}: {lasted:?}"));
        }
    }
    assert!(
        kept.is_empty(),
        "{protocol}: clients that never read kept past {DROPPED_WITHIN:?}: {kept:?}\n{}",
        server.stderr()
    );
    let closed = webhook_metric(&server, "write_timeout").await;
    let expected = (KINDS.len() * PADS.len() * REPEATS) as f64;
    assert!(
        closed >= expected,
        "{protocol}: {closed} connections closed by the write timeout, {expected} expected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelining_clients_that_never_read_are_dropped_whatever_the_answer() {
    every_case("HTTP/1.1", |server, ca, from, body| async move {
        pipelining_client(server.webhook, &ca, from, body).await.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_clients_with_a_shut_window_are_dropped_whatever_the_answer() {
    every_case("HTTP/2", |server, ca, from, body| async move {
        shut_window_client(&server, &ca, from, body).await
    })
    .await;
}
