//! The accept loop shared by the webhook (TLS) and the admin port (plain HTTP):
//! connection cap, handshake and header timeouts, HTTP/2 stream limits, and a graceful
//! drain bounded in time.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::tls::ALPN_H2;

/// Most headers in one HTTP/1 request; the API server sends about ten.
const MAX_HTTP1_HEADERS: usize = 64;
/// Largest HTTP/2 header list accepted.
const MAX_HTTP2_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// Interval of HTTP/2 keep-alive pings, which find peers that vanished.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keep-alive ping may go unanswered before the connection is closed.
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The limits every connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for an HTTP/1 request head (also how long an idle keep-alive
    /// connection is kept).
    pub header_read_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished its requests and closed.
    Complete,
    /// The drain timeout passed with connections still open; they are dropped.
    TimedOut,
}

/// One listening socket with what it serves.
pub struct Endpoint {
    /// A name for logs: `webhook` or `admin`.
    pub name: &'static str,
    /// The bound socket.
    pub listener: TcpListener,
    /// TLS for the webhook; `None` for the plain admin port.
    pub tls: Option<TlsAcceptor>,
    /// The routes.
    pub router: Router,
    /// Connection limits.
    pub limits: Limits,
}

/// Serves `endpoint` until `stop` turns true, then stops accepting and lets open
/// connections finish their requests for at most `drain_timeout`.
pub async fn serve(
    endpoint: Endpoint,
    mut stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) -> Drained {
    let Endpoint {
        name,
        listener,
        tls,
        router,
        limits,
    } = endpoint;
    let (http1, http2) = builders(&limits);
    let service = TowerToHyperService::new(router);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));

    loop {
        let permit = tokio::select! {
            _ = stopped(&mut stop) => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(endpoint = name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let watcher = graceful.watcher();
        let (http1, http2, service, tls) =
            (http1.clone(), http2.clone(), service.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Some(acceptor) = tls else {
                serve_io(tcp, &http1, service, watcher, name).await;
                return;
            };
            let stream =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        debug!(endpoint = name, %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(endpoint = name, %peer, "TLS handshake timed out");
                        return;
                    }
                };
            // ALPN decides the protocol, so no connection waits on sniffing a preface
            // (which no timeout covers).
            if stream.get_ref().1.alpn_protocol() == Some(ALPN_H2) {
                serve_io(stream, &http2, service, watcher, name).await;
            } else {
                serve_io(stream, &http1, service, watcher, name).await;
            }
        });
    }
    drop(listener);
    info!(
        endpoint = name,
        "stopped accepting; draining open connections"
    );
    match tokio::time::timeout(drain_timeout, graceful.shutdown()).await {
        Ok(()) => Drained::Complete,
        Err(_) => Drained::TimedOut,
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// HTTP/1-only and HTTP/2-only connection builders with the limits applied.
fn builders(limits: &Limits) -> (Builder<TokioExecutor>, Builder<TokioExecutor>) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(MAX_HTTP1_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(MAX_HTTP2_HEADER_LIST_BYTES)
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
    (builder.clone().http1_only(), builder.http2_only())
}

async fn serve_io<I>(
    io: I,
    builder: &Builder<TokioExecutor>,
    service: TowerToHyperService<Router>,
    watcher: Watcher,
    name: &'static str,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        debug!(endpoint = name, error = %e, "connection ended with an error");
    }
}
