//! The benchmark's baseline: what blastguard's own stack costs without blastguard.
//!
//! hyper + rustls + tokio, with blastguard's TLS configuration taken from its library
//! (`server::tls::server_config`: TLS 1.3 and 1.2, ALPN h2 then http/1.1, the ring
//! provider, the certificate through `CertResolver`), the same runtime (tokio's
//! multi-threaded scheduler, one worker per core) and the same protocol choice by
//! ALPN. Each request's body is read in full, then a fixed AdmissionReview that allows
//! is sent back: no parsing, no judging. `GET /readyz` answers 200 so the benchmark
//! can wait for it as for blastguard.
//!
//! With `--scan` it also reads each body with serde_json into `IgnoredAny` before
//! answering: the floor of any server that validates the JSON it judges, measured
//! beside blastguard to show how much of blastguard's cost that reading alone is.
//!
//! `--default-tls` and `--default-http` put back rustls's defaults (its
//! `ServerConfig::builder()` with one certificate, instead of blastguard's resolver and
//! explicit versions) or hyper's (one automatic connection builder without timers,
//! timeouts or limits, instead of blastguard's listener settings and the builder
//! chosen by ALPN): `scripts/bench/server_instructions.py` counts what each costs.
//!
//! Run by `scripts/bench.sh`; by hand:
//!
//! ```sh
//! cargo run --release --example baseline_server -- 127.0.0.1:8443 tls.crt tls.key \
//!     [--scan] [--default-tls] [--default-http]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use blastguard::server::tls::{ALPN_H2, CertResolver, parse_pair, server_config};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// blastguard's body cap (`server::routes::MAX_BODY_BYTES`), so the baseline reads
/// everything blastguard would.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The fixed answer: an allowed AdmissionReview response of the size blastguard sends
/// for an allowed request.
const ALLOWED: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-4000-8000-000000000000","allowed":true}}"#;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    fn usage() -> ! {
        eprintln!(
            "usage: baseline_server LISTEN_ADDR TLS_CERT TLS_KEY [--scan] [--default-tls] [--default-http]"
        );
        std::process::exit(2)
    }
    let [listen, cert, key, flags @ ..] = args.as_slice() else {
        usage()
    };
    let flag = |name: &str| flags.iter().any(|f| f == name);
    if flags
        .iter()
        .any(|f| !["--scan", "--default-tls", "--default-http"].contains(&f.as_str()))
    {
        usage()
    }
    let (scan, default_tls, default_http) = (
        flag("--scan"),
        flag("--default-tls"),
        flag("--default-http"),
    );
    let listen: SocketAddr = listen
        .parse()
        .expect("LISTEN_ADDR: an address like 127.0.0.1:0");
    let cert_pem = std::fs::read(cert).expect("read TLS_CERT");
    let key_pem = std::fs::read(key).expect("read TLS_KEY");
    let config = if default_tls {
        use rustls::pki_types::pem::PemObject as _;
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .expect("TLS_CERT: PEM certificates");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem).expect("TLS_KEY");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("certificate pair");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    } else {
        let resolver = Arc::new(CertResolver::default());
        resolver.set(parse_pair(&cert_pem, &key_pem, cert, key).expect("certificate pair"));
        server_config(resolver, None).expect("TLS config")
    };
    let tls = TlsAcceptor::from(Arc::new(config));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(serve(listen, tls, scan, default_http));
}

async fn serve(listen: SocketAddr, tls: TlsAcceptor, scan: bool, default_http: bool) {
    let listener = TcpListener::bind(listen).await.expect("bind");
    // The same line shape as blastguard's, so the benchmark reads both alike.
    println!(
        "baseline{}: webhook listening on https://{}/validate",
        if scan { "+scan" } else { "" },
        listener.local_addr().expect("local address")
    );
    // The protocol settings of blastguard's listener (`server::listener`, its
    // defaults): timeouts and limits that cost a timer or a comparison per request.
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_headers(64);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let (http1, http2) = (builder.clone().http1_only(), builder.http2_only());
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !default_http {
            let _ = tcp.set_nodelay(true);
        }
        let (tls, http1, http2) = (tls.clone(), http1.clone(), http2.clone());
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            if default_http {
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |request| answer(request, scan)),
                    )
                    .await;
                return;
            }
            let builder = if stream.get_ref().1.alpn_protocol() == Some(ALPN_H2) {
                http2
            } else {
                http1
            };
            let _ = builder
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |request| answer(request, scan)),
                )
                .await;
        });
    }
}

/// Reads the body and answers the fixed review; with `scan`, reads the body as JSON
/// first (serde_json into `IgnoredAny`: every byte parsed and validated, nothing
/// kept), the floor of any server that judges what it reads.
async fn answer(
    request: Request<Incoming>,
    scan: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() == Method::GET && request.uri().path() == "/readyz" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))));
    }
    let read = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await;
    let mut response = match read {
        Ok(body) => {
            let body = body.to_bytes();
            let json = !scan
                || serde_json::from_slice::<serde::de::IgnoredAny>(std::hint::black_box(&body))
                    .is_ok();
            if json {
                Response::new(Full::new(Bytes::from_static(ALLOWED)))
            } else {
                let mut r = Response::new(Full::new(Bytes::from_static(b"not JSON\n")));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                r
            }
        }
        Err(_) => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"body not read\n")));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        }
    };
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
