//! The accept loop shared by the webhook (TLS) and the admin port (plain HTTP), and
//! what keeps one client from holding the server: connections counted per address and
//! in total, idle ones shed to make room for new ones (the API server reconnects; an
//! attacker's idle flood does not lock it out), writes bounded in time (a client that
//! does not read its responses is dropped), handshake and header timeouts, HTTP/2
//! stream and window limits, and a drain bounded in time that reports what it cut.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::connection_age::Lifetime;
use super::tls::ALPN_H2;
use crate::server::metrics::{Closed, ServerMetrics};

/// Most headers in one HTTP/1 request; the API server sends about ten.
const MAX_HTTP1_HEADERS: usize = 64;
/// Largest HTTP/2 header list accepted.
const MAX_HTTP2_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// Interval of HTTP/2 keep-alive pings, which find peers that vanished.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keep-alive ping may go unanswered before the connection is closed.
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 flow-control windows. Data a client sends before the handler reads it sits
/// in these windows, outside the body memory budget (routes.rs), so they are set
/// rather than left to defaults: at most 1 MiB per connection, 256 KiB per stream.
const HTTP2_CONNECTION_WINDOW: u32 = 1024 * 1024;
const HTTP2_STREAM_WINDOW: u32 = 256 * 1024;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// How long a shed connection may take to close by itself (an HTTP/2 GOAWAY
/// exchange) before it is dropped.
const SHED_GRACE: Duration = Duration::from_secs(1);
/// Longest pause between checks for responses a client does not take.
const MAX_STALL_CHECK: Duration = Duration::from_secs(1);

/// The limits every connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once. At the cap an idle connection is closed to make
    /// room; when none is idle, further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections served at once for one client address. Past it the client's own
    /// idle connections are closed to make room, or else the new one is refused.
    pub max_connections_per_peer: usize,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for an HTTP/1 request head (also how long an idle keep-alive
    /// connection is kept).
    pub header_read_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Time a response may wait for the client to take it: a write to the socket that
    /// makes no progress, or an HTTP/2 response held back by a window the client keeps
    /// shut. The connection is dropped when it passes.
    pub write_timeout: Duration,
    /// How long a connection is served before it is closed gracefully, so clients
    /// spread over replicas (src/server/connection_age.rs); `None`: no bound.
    pub max_connection_age: Option<Duration>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished its requests and closed.
    Complete,
    /// The drain timeout passed with connections still open; they were dropped, with
    /// this many requests still unanswered (or answered but not yet sent).
    TimedOut {
        /// Requests cut off.
        requests_cut: usize,
    },
}

/// Which client sent a request: added to every request's extensions, so the routes
/// can share memory fairly between clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client {
    /// The peer address (IPv4-mapped IPv6 addresses as IPv4).
    pub ip: IpAddr,
    /// The connection, unique in the process.
    pub connection: u64,
}

/// One listening socket with what it serves.
pub struct Endpoint {
    /// A name for logs and metrics: `webhook` or `admin`.
    pub name: &'static str,
    /// The bound socket.
    pub listener: TcpListener,
    /// TLS for the webhook; `None` for the plain admin port.
    pub tls: Option<TlsAcceptor>,
    /// The routes.
    pub router: Router,
    /// Connection limits.
    pub limits: Limits,
    /// Where connections are counted.
    pub metrics: ServerMetrics,
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
        metrics,
    } = endpoint;
    let (http1, http2) = builders(&limits);
    let shared = Arc::new(Shared {
        name,
        tls,
        http1,
        http2,
        service: TowerToHyperService::new(router),
        limits,
        metrics,
        registry: Registry::new(limits),
        stop: stop.clone(),
    });
    let mut tasks = JoinSet::new();

    'accept: loop {
        let (tcp, peer) = tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(endpoint = name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let ip = peer.ip().to_canonical();
        // At the cap with nothing idle to shed, this client waits (as further ones
        // wait in the backlog) until a connection closes or goes idle.
        let connection = loop {
            let changed = shared.registry.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match shared.registry.admit(ip) {
                Admission::Admitted { connection, shed } => {
                    if let Some(victim) = shed {
                        debug!(endpoint = name, peer = %victim.client.ip, "shedding an idle connection to make room");
                        shared.metrics.closed(name, Closed::ShedIdle);
                        victim.shed.notify_one();
                    }
                    break connection;
                }
                Admission::PeerOverShare => {
                    debug!(endpoint = name, %peer, "refused: this address holds its share of connections, none idle");
                    shared.metrics.closed(name, Closed::PeerLimit);
                    drop(tcp);
                    continue 'accept;
                }
                Admission::Full => {
                    tokio::select! {
                        _ = stopped(&mut stop) => break 'accept,
                        Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                        _ = changed => {}
                    }
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        tasks.spawn(async move {
            let _counted = shared.metrics.connection(shared.name);
            let _registered = Registered {
                registry: &shared.registry,
                connection: &connection,
            };
            shared.run(tcp, &connection).await;
        });
    }
    drop(listener);
    info!(
        endpoint = name,
        connections = tasks.len(),
        "stopped accepting; draining open connections"
    );
    let deadline = tokio::time::sleep(drain_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            joined = tasks.join_next() => if joined.is_none() {
                return Drained::Complete;
            },
        }
    }
    let requests_cut = shared.registry.requests_in_flight();
    tasks.shutdown().await;
    Drained::TimedOut { requests_cut }
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
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
    (builder.clone().http1_only(), builder.http2_only())
}

/// What every connection task of an endpoint shares.
struct Shared {
    name: &'static str,
    tls: Option<TlsAcceptor>,
    http1: Builder<TokioExecutor>,
    http2: Builder<TokioExecutor>,
    service: TowerToHyperService<Router>,
    limits: Limits,
    metrics: ServerMetrics,
    registry: Registry,
    stop: watch::Receiver<bool>,
}

impl Shared {
    /// Serves one accepted connection to its end.
    async fn run(&self, tcp: TcpStream, connection: &Arc<Connection>) {
        let timed_out = Arc::new(AtomicBool::new(false));
        let io = WriteTimeout::new(tcp, self.limits.write_timeout, timed_out.clone());
        let Some(acceptor) = &self.tls else {
            self.serve_http(io, &self.http1, connection, &timed_out)
                .await;
            return;
        };
        let peer = connection.client.ip;
        let mut stop = self.stop.clone();
        // A connection being shed or drained before its handshake ends has no request
        // to finish: it is dropped.
        let stream = tokio::select! {
            handshake = tokio::time::timeout(self.limits.handshake_timeout, acceptor.accept(io)) => match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    debug!(endpoint = self.name, %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(endpoint = self.name, %peer, "TLS handshake timed out");
                    return;
                }
            },
            _ = connection.shed.notified() => return,
            _ = stopped(&mut stop) => return,
        };
        // ALPN decides the protocol, so no connection waits on sniffing a preface
        // (which no timeout covers).
        let builder = if stream.get_ref().1.alpn_protocol() == Some(ALPN_H2) {
            &self.http2
        } else {
            &self.http1
        };
        self.serve_http(stream, builder, connection, &timed_out)
            .await;
    }

    /// Runs HTTP over `io` until the connection ends, is shed, drained, or found
    /// holding responses its client does not take.
    async fn serve_http<I>(
        &self,
        io: I,
        builder: &Builder<TokioExecutor>,
        connection: &Arc<Connection>,
        timed_out: &AtomicBool,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = Tracked {
            inner: self.service.clone(),
            connection: connection.clone(),
            changed: self.registry.changed.clone(),
        };
        // HTTP/1 connections past their age end with a response instead (Tracked).
        let http2 = std::ptr::eq(builder, &self.http2);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut stop = self.stop.clone();
        let mut closing = false;
        let mut shed_deadline: Option<Pin<Box<Sleep>>> = None;
        let check_every = self
            .limits
            .write_timeout
            .checked_div(4)
            .unwrap_or_default()
            .min(MAX_STALL_CHECK);
        let mut check = tokio::time::interval(check_every.max(Duration::from_millis(10)));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if connection.lifetime.told_close() {
                        self.metrics.closed(self.name, Closed::MaxAge);
                    }
                    if timed_out.load(Ordering::Relaxed) {
                        self.write_timed_out(connection);
                    } else if let Err(e) = ended {
                        debug!(endpoint = self.name, peer = %connection.client.ip, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stopped(&mut stop), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = connection.shed.notified(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    shed_deadline = Some(Box::pin(tokio::time::sleep(SHED_GRACE)));
                }
                _ = async { if let Some(d) = shed_deadline.as_mut() { d.await } }, if shed_deadline.is_some() => {
                    // A request that arrived after the shed decision still finishes.
                    if connection.requests_in_flight() == 0 {
                        return;
                    }
                    shed_deadline = None;
                }
                _ = connection.lifetime.ended(), if !closing && http2 => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    self.metrics.closed(self.name, Closed::MaxAge);
                }
                _ = check.tick() => {
                    if connection.oldest_unsent().is_some_and(|t| t.elapsed() >= self.limits.write_timeout) {
                        self.write_timed_out(connection);
                        return;
                    }
                }
            }
        }
    }

    fn write_timed_out(&self, connection: &Connection) {
        info!(
            endpoint = self.name,
            peer = %connection.client.ip,
            write_timeout = %humantime::format_duration(self.limits.write_timeout),
            "closed a connection whose client did not read its responses"
        );
        self.metrics.closed(self.name, Closed::WriteTimeout);
    }
}

// ---------------------------------------------------------------------------------
// Connection accounting

/// One open connection, as the registry and the request path see it.
struct Connection {
    client: Client,
    /// Signalled to close the connection (an idle one shed at the cap).
    shed: Notify,
    activity: Mutex<Activity>,
    lifetime: Lifetime,
}

#[derive(Debug)]
struct Activity {
    /// Requests begun whose responses are not yet fully handed to the connection.
    in_flight: usize,
    /// When `in_flight` last became 0 (or the connection opened).
    idle_since: Instant,
    /// When each response that is ready but not yet taken by the client was ready.
    unsent: Vec<(u64, Instant)>,
    next_request: u64,
    /// Marked for shedding: no longer counted against the caps.
    shedding: bool,
}

impl Connection {
    fn activity(&self) -> MutexGuard<'_, Activity> {
        // The data stays consistent whatever panicked while holding the lock.
        self.activity.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn requests_in_flight(&self) -> usize {
        self.activity().in_flight
    }

    /// When the oldest response still waiting for its client was ready.
    fn oldest_unsent(&self) -> Option<Instant> {
        self.activity().unsent.iter().map(|(_, t)| *t).min()
    }

    /// When the connection went idle, or `None` while it has requests (or is already
    /// being shed).
    fn idle_since(&self) -> Option<Instant> {
        let a = self.activity();
        (a.in_flight == 0 && !a.shedding).then_some(a.idle_since)
    }
}

/// A request on a connection, from its head to its response's end.
struct RequestGuard {
    connection: Arc<Connection>,
    registry_changed: Arc<Notify>,
    id: u64,
}

impl RequestGuard {
    fn begin(connection: &Arc<Connection>, registry_changed: &Arc<Notify>) -> Self {
        let mut a = connection.activity();
        a.in_flight = a.in_flight.saturating_add(1);
        let id = a.next_request;
        a.next_request = a.next_request.wrapping_add(1);
        drop(a);
        Self {
            connection: connection.clone(),
            registry_changed: registry_changed.clone(),
            id,
        }
    }

    /// The response is ready; from now on it waits for the client to take it.
    fn responded(&self) {
        self.connection
            .activity()
            .unsent
            .push((self.id, Instant::now()));
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut a = self.connection.activity();
        a.unsent.retain(|(id, _)| *id != self.id);
        a.in_flight = a.in_flight.saturating_sub(1);
        let idle = a.in_flight == 0;
        if idle {
            a.idle_since = Instant::now();
        }
        drop(a);
        if idle {
            // An idle connection can be shed: an accept waiting at the cap may go on.
            self.registry_changed.notify_waiters();
        }
    }
}

/// Every open connection of an endpoint, counted in total and per address.
struct Registry {
    limits: Limits,
    state: Mutex<Connections>,
    /// Notified when a connection closes or goes idle.
    changed: Arc<Notify>,
}

#[derive(Default)]
struct Connections {
    next_id: u64,
    open: HashMap<u64, Arc<Connection>>,
    /// Open connections per address, those being shed not counted.
    per_peer: HashMap<IpAddr, usize>,
    /// Open connections being shed (closing, not counted against the caps).
    shedding: usize,
}

enum Admission {
    /// Serve it; `shed` is the idle connection that makes room for it.
    Admitted {
        connection: Arc<Connection>,
        shed: Option<Arc<Connection>>,
    },
    /// The address holds its share of connections and none of them is idle.
    PeerOverShare,
    /// The endpoint holds its cap of connections and none is idle.
    Full,
}

impl Registry {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: Mutex::new(Connections::default()),
            changed: Arc::new(Notify::new()),
        }
    }

    fn state(&self) -> MutexGuard<'_, Connections> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides on a new connection from `ip`. The API server comes first: an address
    /// past its share gives up its own idle connection or is refused, so one client
    /// cannot fill the cap; at the cap, the idle connection of the address holding
    /// the most connections (idle longest among equals) is shed, so a flood of idle
    /// connections from anywhere cannot keep a new client out.
    fn admit(&self, ip: IpAddr) -> Admission {
        let mut state = self.state();
        let per_peer_cap = self.limits.max_connections_per_peer.max(1);
        let cap = self.limits.max_connections.max(1);
        let mut shed = None;
        if state.per_peer.get(&ip).copied().unwrap_or(0) >= per_peer_cap {
            match state.idlest(|c| c.client.ip == ip) {
                Some(victim) => {
                    state.mark_shedding(&victim);
                    shed = Some(victim);
                }
                None => return Admission::PeerOverShare,
            }
        }
        let live = state.open.len().saturating_sub(state.shedding);
        if shed.is_none() && live >= cap {
            match state.idlest(|_| true) {
                Some(victim) => {
                    state.mark_shedding(&victim);
                    shed = Some(victim);
                }
                None => return Admission::Full,
            }
        }
        let id = state.next_id;
        state.next_id = state.next_id.wrapping_add(1);
        let connection = Arc::new(Connection {
            client: Client { ip, connection: id },
            shed: Notify::new(),
            activity: Mutex::new(Activity {
                in_flight: 0,
                idle_since: Instant::now(),
                unsent: Vec::new(),
                next_request: 0,
                shedding: false,
            }),
            lifetime: Lifetime::new(self.limits.max_connection_age),
        });
        state.open.insert(id, connection.clone());
        let count = state.per_peer.entry(ip).or_insert(0);
        *count = count.saturating_add(1);
        Admission::Admitted { connection, shed }
    }

    fn remove(&self, connection: &Connection) {
        let mut state = self.state();
        if state.open.remove(&connection.client.connection).is_none() {
            return;
        }
        if connection.activity().shedding {
            state.shedding = state.shedding.saturating_sub(1);
        } else {
            state.uncount(connection.client.ip);
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Requests in flight on every open connection.
    fn requests_in_flight(&self) -> usize {
        let state = self.state();
        state
            .open
            .values()
            .map(|c| c.requests_in_flight())
            .fold(0, usize::saturating_add)
    }
}

impl Connections {
    /// The idle connection to shed among those `eligible`: from the address with the
    /// most connections, then idle the longest.
    fn idlest(&self, eligible: impl Fn(&Connection) -> bool) -> Option<Arc<Connection>> {
        self.open
            .values()
            .filter(|c| eligible(c))
            .filter_map(|c| {
                let idle_since = c.idle_since()?;
                let peers = self.per_peer.get(&c.client.ip).copied().unwrap_or(0);
                Some((peers, std::cmp::Reverse(idle_since), c))
            })
            .max_by_key(|(peers, idle, _)| (*peers, *idle))
            .map(|(_, _, c)| c.clone())
    }

    fn mark_shedding(&mut self, victim: &Connection) {
        victim.activity().shedding = true;
        self.shedding = self.shedding.saturating_add(1);
        self.uncount(victim.client.ip);
    }

    fn uncount(&mut self, ip: IpAddr) {
        if let Some(count) = self.per_peer.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_peer.remove(&ip);
            }
        }
    }
}

/// Removes the connection from the registry when its task ends, however it ends
/// (closed, dropped at the drain deadline, or panicked).
struct Registered<'a> {
    registry: &'a Registry,
    connection: &'a Connection,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.remove(self.connection);
    }
}

// ---------------------------------------------------------------------------------
// Requests and responses of one connection

/// The router, with each request counted on its connection from its head until its
/// response has been handed over, and tagged with its [`Client`].
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    connection: Arc<Connection>,
    /// The registry's notifier: a connection going idle may let a waiting accept on.
    changed: Arc<Notify>,
}

type TrackedFuture =
    Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = TrackedFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let guard = RequestGuard::begin(&self.connection, &self.changed);
        request.extensions_mut().insert(self.connection.client);
        let version = request.version();
        let response = self.inner.call(request);
        let connection = self.connection.clone();
        Box::pin(async move {
            let mut response = response.await?;
            connection.lifetime.close_after(version, response.headers_mut());
            guard.responded();
            Ok(response.map(|body| TrackedBody {
                body,
                _request: guard,
            }))
        })
    }
}

/// A response body that keeps its request counted until the connection has taken
/// all of it (or the stream is reset): then it is dropped.
struct TrackedBody {
    body: Body,
    _request: RequestGuard,
}

impl hyper::body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

// ---------------------------------------------------------------------------------
// Writes bounded in time

/// A socket whose writes fail once one has waited `timeout` without progress: a
/// client that stops reading (an HTTP/1.1 pipeline it never drains, a TLS
/// close_notify it never takes) fills the socket's buffers and is then dropped,
/// instead of holding its connection and the responses queued on it for ever.
struct WriteTimeout<IO> {
    io: IO,
    timeout: Duration,
    /// Armed when a write first waits; any progress disarms it.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Set when the timeout fired, so the connection's end is counted as such.
    timed_out: Arc<AtomicBool>,
}

impl<IO> WriteTimeout<IO> {
    fn new(io: IO, timeout: Duration, timed_out: Arc<AtomicBool>) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
            timed_out,
        }
    }

    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        // Polled here so the timer wakes the connection even if the socket never
        // becomes writable again.
        if stalled.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read within the write timeout",
            )));
        }
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteTimeout<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}
