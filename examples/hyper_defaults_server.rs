//! The benchmark's second baseline: hyper, rustls and tokio with their **default**
//! settings, and nothing of blastguard's.
//!
//! It shares no code with blastguard beyond the crates: rustls's
//! `ServerConfig::builder()` (the default protocol versions, TLS 1.3 and 1.2, and the
//! default session cache) with one certificate, hyper-util's automatic HTTP/1.1 or
//! HTTP/2 connection with hyper's default limits, no timer, no timeouts, and
//! `#[tokio::main]`'s runtime. Two choices are not defaults, and both are needed to be
//! measured at all: ALPN offers `h2` and `http/1.1` (without it no client speaks
//! HTTP/2 over TLS to it, the API server included), and the crypto provider is ring
//! (rustls's own default is aws-lc-rs, which this project does not build; blastguard
//! and the first baseline use ring too, so the comparison is not skewed by it).
//!
//! Each request's body is read in full, without a size limit (hyper's default), and a
//! fixed AdmissionReview that allows is sent back. `GET /readyz` answers 200.
//!
//! Run by `scripts/bench.sh`; by hand:
//!
//! ```sh
//! cargo run --release --example hyper_defaults_server -- 127.0.0.1:8443 tls.crt tls.key
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The fixed answer: an allowed AdmissionReview response.
const ALLOWED: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-4000-8000-000000000000","allowed":true}}"#;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, cert, key] = args.as_slice() else {
        eprintln!("usage: hyper_defaults_server LISTEN_ADDR TLS_CERT TLS_KEY");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen
        .parse()
        .expect("LISTEN_ADDR: an address like 127.0.0.1:0");
    let chain = CertificateDer::pem_file_iter(cert)
        .expect("read TLS_CERT")
        .collect::<Result<Vec<_>, _>>()
        .expect("TLS_CERT: PEM certificates");
    let key = PrivateKeyDer::from_pem_file(key).expect("TLS_KEY: a PEM private key");
    // ring, as the project builds it (see the module's comment); the rest default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate pair");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tls = TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind(listen).await.expect("bind");
    // The same line shape as blastguard's, so the benchmark reads both alike.
    println!(
        "hyper-defaults: webhook listening on https://{}/validate",
        listener.local_addr().expect("local address")
    );
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

/// Reads the body and answers the fixed review.
async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() == Method::GET && request.uri().path() == "/readyz" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))));
    }
    let mut response = match request.into_body().collect().await {
        Ok(body) => {
            std::hint::black_box(body.to_bytes());
            Response::new(Full::new(Bytes::from_static(ALLOWED)))
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
