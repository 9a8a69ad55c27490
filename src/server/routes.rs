//! `POST /validate`: the body read ([`super::body`]), judged by the engine, answered,
//! counted and logged; a panic costs that one request a 500, never the process.
//!
//! Every other path or method gets a plain message saying what is served.

use std::any::Any;
use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::Semaphore;
use tracing::{error, warn};

use super::body::{BODY_MEMORY_BYTES, BodyMemory, BodyReader};
use super::listener::Client;
use crate::engine::{Engine, Reviewed};
use crate::server::metrics::{Metrics, Unjudged};

/// Bodies above this size are judged on a blocking thread so one large review does not
/// stall the other requests on the same async worker, and one at a time: parsing takes
/// about 13 times the body in memory (measured: 73 MB peak RSS for one 5.5 MB review,
/// 329 MB for eight at once), so concurrent large reviews would outgrow the pod's
/// memory limit while the API server's everyday reviews are a few kilobytes.
const INLINE_REVIEW_BYTES: usize = 256 * 1024;

/// Shortest body deadline taken from the API server's `?timeout=`, so a tiny or zero
/// value does not fail every request.
const MIN_API_TIMEOUT: Duration = Duration::from_secs(1);

/// What `/validate` needs.
#[derive(Clone)]
pub struct Webhook {
    /// Judges each review.
    pub engine: Arc<Engine>,
    /// Where each answer is counted.
    pub metrics: Arc<Metrics>,
    /// Time allowed to receive a request body.
    pub body_timeout: Duration,
    /// Memory for request bodies, shared fairly by all requests.
    pub body_memory: Arc<BodyMemory>,
    /// One permit: large reviews are judged one at a time.
    pub large_reviews: Arc<Semaphore>,
}

impl Webhook {
    /// The webhook over an engine, with the standard body memory budget.
    pub fn new(engine: Arc<Engine>, metrics: Arc<Metrics>, body_timeout: Duration) -> Self {
        Self {
            engine,
            metrics,
            body_timeout,
            body_memory: Arc::new(BodyMemory::new(BODY_MEMORY_BYTES)),
            large_reviews: Arc::new(Semaphore::new(1)),
        }
    }
}

/// The webhook's routes.
pub fn router(webhook: Webhook) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(webhook)
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: blastguard serves AdmissionReview v1 at POST /validate\n".to_string(),
    )
}

async fn method_not_allowed() -> Response {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: /validate takes POST with an AdmissionReview v1 body\n".to_string(),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// Answers one review; a panic anywhere below answers this request with a 500,
/// counts it in `blastguard_panics_total` and leaves the server serving.
///
/// Unwinding is safe to continue from here: what requests share (the engine's
/// swapped policy and verifier, the metrics, the body memory and the state caches)
/// is behind atomics or locks whose users recover from poisoning, and every permit a
/// request holds is given back as its stack unwinds.
async fn validate(State(webhook): State<Webhook>, request: Request) -> Response {
    let metrics = webhook.metrics.clone();
    match CatchUnwind(std::pin::pin!(answer(webhook, request))).await {
        Ok(response) => response,
        Err(payload) => panicked(&metrics, payload.as_ref()),
    }
}

/// The 500 for a request whose handling panicked, logged and counted.
fn panicked(metrics: &Metrics, payload: &(dyn Any + Send)) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    metrics.server().panicked();
    error!(
        panic = %message,
        "a panic while answering an admission request; answered 500 and kept serving (a bug: please report it)"
    );
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error while judging the review; see the blastguard logs\n".to_string(),
    )
}

async fn answer(webhook: Webhook, request: Request) -> Response {
    let started = Instant::now();
    let _inflight = webhook.metrics.inflight();
    let panic_in_engine = test_panic(&request);
    let time_allowed = api_server_timeout(request.uri().query())
        .map_or(webhook.body_timeout, |t| {
            t.max(MIN_API_TIMEOUT).min(webhook.body_timeout)
        });
    let deadline = started.checked_add(time_allowed).unwrap_or(started);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let reader = BodyReader {
        memory: webhook.body_memory.clone(),
        client: request.extensions().get::<Client>().copied(),
        declared,
        deadline,
    };
    let (body, _memory) = match reader.read(request.into_body()).await {
        Ok(read) => read,
        Err(e) => {
            let elapsed = started.elapsed();
            webhook.metrics.record_unjudged(e.metric(), elapsed);
            warn!(
                error = %e.message(time_allowed),
                client = %reader.client.map_or("unknown".to_string(), |c| c.ip.to_string()),
                duration_seconds = elapsed.as_secs_f64(),
                "admission request body not read"
            );
            return text(e.status(), format!("{}\n", e.message(time_allowed)));
        }
    };
    let peer = reader.client.map(|c| c.ip);
    let reviewed = match review(&webhook, body, peer, deadline, panic_in_engine).await {
        Ok(reviewed) => reviewed,
        Err(ReviewFailure::Busy) => {
            let elapsed = started.elapsed();
            webhook.metrics.record_unjudged(Unjudged::Busy, elapsed);
            warn!(
                duration_seconds = elapsed.as_secs_f64(),
                "large admission review not judged: other large reviews held the server until the deadline"
            );
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "blastguard is busy judging other large reviews; retry\n".to_string(),
            );
        }
        Err(ReviewFailure::Panicked(payload)) => {
            return panicked(&webhook.metrics, payload.as_ref());
        }
    };
    let elapsed = started.elapsed();
    webhook.metrics.record_review(&reviewed, elapsed);
    super::logging::log_review(&reviewed, elapsed);
    match reviewed {
        Reviewed::Judged(judged) => json(judged.body),
        Reviewed::Rejected { body, .. } => json(body),
        // No uid to answer to: an AdmissionReview would reach no request.
        Reviewed::Unreadable { error } => text(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

/// The test-only way to make a request panic: the `x-blastguard-test-panic` header,
/// honoured only in this crate's unit tests (never in a build anyone runs), `handler`
/// panics here, `engine` inside the engine's call.
#[cfg(test)]
fn test_panic(request: &Request) -> bool {
    match request
        .headers()
        .get("x-blastguard-test-panic")
        .map(|v| v.as_bytes())
    {
        Some(b"handler") => panic!("test panic in the handler"),
        Some(b"engine") => true,
        _ => false,
    }
}

#[cfg(not(test))]
fn test_panic(_: &Request) -> bool {
    false
}

/// A future that turns a panic while polling into an `Err` with the panic's payload.
struct CatchUnwind<'a, F>(Pin<&'a mut F>);

impl<F: Future> Future for CatchUnwind<'_, F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        // After an `Err` the future is never polled again: it resolved.
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Why a body was read but not judged.
enum ReviewFailure {
    /// Large reviews ahead of it held the server past the deadline.
    Busy,
    /// The engine panicked; the request still gets an answer.
    Panicked(Box<dyn Any + Send>),
}

/// Judges the body; a large one off the async worker and one at a time (see
/// [`INLINE_REVIEW_BYTES`]). `peer`: the client's address, for the records the
/// judgement asks the cluster to create ([`crate::cluster::peer`]).
async fn review(
    webhook: &Webhook,
    body: Bytes,
    peer: Option<IpAddr>,
    deadline: Instant,
    panic_in_engine: bool,
) -> Result<Reviewed, ReviewFailure> {
    let judge = move |engine: &Engine, body: &[u8]| {
        if panic_in_engine {
            panic!("test panic in the engine");
        }
        crate::cluster::peer::within(peer, || engine.review(body))
    };
    if body.len() <= INLINE_REVIEW_BYTES {
        return std::panic::catch_unwind(AssertUnwindSafe(|| judge(&webhook.engine, &body)))
            .map_err(ReviewFailure::Panicked);
    }
    let turn = tokio::time::timeout_at(
        deadline.into(),
        webhook.large_reviews.clone().acquire_owned(),
    )
    .await
    .map_err(|_| ReviewFailure::Busy)?
    .map_err(|_| ReviewFailure::Busy)?;
    let engine = webhook.engine.clone();
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        judge(&engine, &body)
    })
    .await
    .map_err(|e| match e.try_into_panic() {
        Ok(payload) => ReviewFailure::Panicked(payload),
        Err(e) => ReviewFailure::Panicked(Box::new(e.to_string())),
    })
}

/// The `timeout` query parameter the API server appends (`?timeout=10s`).
fn api_server_timeout(query: Option<&str>) -> Option<Duration> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(|v| {
            // Go writes whole seconds as `10s`: read those without the general parser,
            // which costs more than the rest of a person's decision outside the body.
            v.strip_suffix('s')
                .and_then(|secs| secs.parse().ok())
                .map(Duration::from_secs)
                .or_else(|| humantime::parse_duration(v).ok())
        })
}

fn json(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    #[test]
    fn reads_the_api_servers_timeout_parameter() {
        let cases = [
            (Some("timeout=10s"), Some(Duration::from_secs(10))),
            (Some("a=b&timeout=2s"), Some(Duration::from_secs(2))),
            // Go's other forms of a duration: minutes, fractions, milliseconds.
            (Some("timeout=1m30s"), Some(Duration::from_secs(90))),
            (Some("timeout=1.5s"), Some(Duration::from_millis(1500))),
            (Some("timeout=500ms"), Some(Duration::from_millis(500))),
            (Some("timeout=s"), None),
            (Some("timeout=soon"), None),
            (Some("other=1"), None),
            (None, None),
        ];
        for (query, want) in cases {
            assert_eq!(api_server_timeout(query), want, "{query:?}");
        }
    }

    fn webhook() -> Webhook {
        let engine = Engine::new(
            crate::policy::Policy::embedded(),
            Arc::new(crate::approval::NoTrustedSigners),
        );
        Webhook::new(
            Arc::new(engine),
            Arc::new(Metrics::new()),
            Duration::from_secs(10),
        )
    }

    fn post(panic: Option<&str>, body: Vec<u8>) -> axum::http::Request<Body> {
        let mut request = axum::http::Request::post("/validate?timeout=10s")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(at) = panic {
            request = request.header("x-blastguard-test-panic", at);
        }
        request.body(Body::from(body)).unwrap()
    }

    fn panics(webhook: &Webhook) -> String {
        webhook
            .metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("blastguard_panics_total "))
            .unwrap_or_default()
            .to_string()
    }

    /// A panic that slips through, in the handler or in the engine (inline or on the
    /// blocking pool for a large body), answers that request 500 and counts it; the
    /// next request is served as usual. The trigger is a header honoured only in unit
    /// tests ([`test_panic`]).
    #[tokio::test]
    async fn a_panic_answers_500_counts_and_the_next_request_is_served() {
        let webhook = webhook();
        let router = router(webhook.clone());
        let review = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1"}}"#.to_vec();
        let large = {
            let mut r = review.clone();
            r.truncate(r.len() - 2);
            let mut padded = r;
            padded.extend_from_slice(
                format!(",\"pad\":\"{}\"}}}}", "x".repeat(INLINE_REVIEW_BYTES)).as_bytes(),
            );
            padded
        };
        for (i, (at, body)) in [
            ("handler", review.clone()),
            ("engine", review.clone()),
            ("engine", large),
        ]
        .into_iter()
        .enumerate()
        {
            let response = router.clone().oneshot(post(Some(at), body)).await.unwrap();
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR, "{at}");
            assert_eq!(
                panics(&webhook),
                format!("blastguard_panics_total {}", i + 1)
            );
        }
        let response = router.oneshot(post(None, review)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(webhook.body_memory.available_bytes(), BODY_MEMORY_BYTES);
    }
}
