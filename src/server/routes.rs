//! `POST /validate`: the body read under a size cap and a deadline, judged by the
//! engine, answered, counted and logged. Every other path or method gets a plain
//! message saying what is served.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{error, info, warn};

use crate::engine::{Engine, Reviewed};
use crate::metrics::{Metrics, Unjudged};

/// Largest AdmissionReview body read: the API server caps objects at about 3 MiB and
/// a review carries the old and the new object.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// After an oversized body, up to this much more is read and discarded so an HTTP/1
/// client that is still sending receives the 413 instead of a reset connection.
const OVERSIZE_DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// Bodies above this size are judged on a blocking thread so one large review does not
/// stall the other requests on the same async worker, and one at a time: parsing takes
/// about 13 times the body in memory (measured: 73 MB peak RSS for one 5.5 MB review,
/// 329 MB for eight at once), so concurrent large reviews would outgrow the pod's
/// memory limit while the API server's everyday reviews are a few kilobytes.
const INLINE_REVIEW_BYTES: usize = 256 * 1024;

/// Request bodies held in memory at once, across all requests: connections times
/// HTTP/2 streams times the size cap would otherwise allow gigabytes. Room for four
/// bodies at the cap; the API server's reviews are a few kilobytes.
pub const BODY_MEMORY_BYTES: usize = 4 * MAX_BODY_BYTES;

/// Unit of the body memory budget.
const BUDGET_UNIT: usize = 1024;

/// Shortest body deadline taken from the API server's `?timeout=`, so a tiny or zero
/// value does not fail every request.
const MIN_API_TIMEOUT: Duration = Duration::from_secs(1);

/// What `/validate` needs.
#[derive(Clone)]
pub struct Webhook {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Time allowed to receive a request body.
    pub body_timeout: Duration,
    /// Memory for request bodies shared by all requests, in [`BUDGET_UNIT`]s.
    pub body_memory: Arc<Semaphore>,
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
            body_memory: body_memory(BODY_MEMORY_BYTES),
            large_reviews: Arc::new(Semaphore::new(1)),
        }
    }
}

/// A body memory budget of `bytes`.
fn body_memory(bytes: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(bytes / BUDGET_UNIT))
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

async fn validate(State(webhook): State<Webhook>, request: Request) -> Response {
    let started = Instant::now();
    let _inflight = webhook.metrics.inflight();
    let time_allowed = api_server_timeout(request.uri().query())
        .map_or(webhook.body_timeout, |t| {
            t.max(MIN_API_TIMEOUT).min(webhook.body_timeout)
        });
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let reader = BodyReader {
        memory: &webhook.body_memory,
        declared,
        deadline: started + time_allowed,
    };
    let (body, _memory) = match reader.read(request.into_body()).await {
        Ok(read) => read,
        Err(e) => {
            let elapsed = started.elapsed();
            webhook.metrics.record_unjudged(e.metric(), elapsed);
            warn!(
                error = %e.message(time_allowed),
                duration_seconds = elapsed.as_secs_f64(),
                "admission request body not read"
            );
            return text(e.status(), format!("{}\n", e.message(time_allowed)));
        }
    };
    let deadline = started + time_allowed;
    let reviewed = match review(&webhook, body, deadline).await {
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
        Err(ReviewFailure::Panicked) => {
            error!("the engine panicked on a review; answered 500");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error while judging the review; see the blastguard logs\n".to_string(),
            );
        }
    };
    let elapsed = started.elapsed();
    webhook.metrics.record_review(&reviewed, elapsed);
    log_review(&reviewed, elapsed);
    match reviewed {
        Reviewed::Judged(judged) => json(judged.body),
        Reviewed::Rejected { body, .. } => json(body),
        // No uid to answer to: an AdmissionReview would reach no request.
        Reviewed::Unreadable { error } => text(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

/// Why a body was read but not judged.
enum ReviewFailure {
    /// Large reviews ahead of it held the server past the deadline.
    Busy,
    /// The engine panicked; the request still gets an answer.
    Panicked,
}

/// Judges the body; a large one off the async worker and one at a time (see
/// [`INLINE_REVIEW_BYTES`]).
async fn review(
    webhook: &Webhook,
    body: Vec<u8>,
    deadline: Instant,
) -> Result<Reviewed, ReviewFailure> {
    if body.len() <= INLINE_REVIEW_BYTES {
        return std::panic::catch_unwind(AssertUnwindSafe(|| webhook.engine.review(&body)))
            .map_err(|_| ReviewFailure::Panicked);
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
        engine.review(&body)
    })
    .await
    .map_err(|_| ReviewFailure::Panicked)
}

/// The `timeout` query parameter the API server appends (`?timeout=10s`).
fn api_server_timeout(query: Option<&str>) -> Option<Duration> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(|v| humantime::parse_duration(v).ok())
}

/// Why a body could not be read.
#[derive(Debug)]
enum BodyError {
    TooLarge,
    Timeout,
    Busy,
    Read(String),
}

impl BodyError {
    fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
            BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn metric(&self) -> Unjudged {
        match self {
            BodyError::TooLarge => Unjudged::TooLarge,
            BodyError::Timeout => Unjudged::Timeout,
            BodyError::Busy => Unjudged::Busy,
            BodyError::Read(_) => Unjudged::BodyError,
        }
    }

    fn message(&self, time_allowed: Duration) -> String {
        match self {
            BodyError::TooLarge => format!(
                "request body too large: an AdmissionReview may be at most {} MiB ({MAX_BODY_BYTES} bytes)",
                MAX_BODY_BYTES / (1024 * 1024)
            ),
            BodyError::Timeout => format!(
                "request body not received within {}",
                humantime::format_duration(time_allowed)
            ),
            BodyError::Busy => format!(
                "server busy: other requests hold all {} MiB of body memory; retry",
                BODY_MEMORY_BYTES / (1024 * 1024)
            ),
            BodyError::Read(e) => format!("could not read the request body: {e}"),
        }
    }
}

/// Reads one request body within the size cap, the deadline and the shared memory
/// budget.
struct BodyReader<'a> {
    memory: &'a Arc<Semaphore>,
    declared: Option<usize>,
    deadline: Instant,
}

impl BodyReader<'_> {
    /// Reads at most [`MAX_BODY_BYTES`] before the deadline; the cap is enforced while
    /// reading, whatever Content-Length claims. The permit returned holds the body's
    /// share of the memory budget until dropped.
    async fn read(
        &self,
        mut body: Body,
    ) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), BodyError> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        // Content-Length only sizes the first allocation, and only up to 64 KiB: a
        // client may claim 8 MiB and send nothing.
        let mut buf = Vec::with_capacity(self.declared.unwrap_or(0).min(64 * 1024));
        let mut held: Option<OwnedSemaphorePermit> = None;
        let mut too_large = self.declared.is_some_and(|n| n > MAX_BODY_BYTES);
        let mut discarded = 0usize;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) if too_large => return Err(BodyError::TooLarge),
                Err(_) => return Err(BodyError::Timeout),
                Ok(None) => break,
                Ok(Some(Err(_))) if too_large => return Err(BodyError::TooLarge),
                Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if too_large || buf.len() + data.len() > MAX_BODY_BYTES {
                too_large = true;
                buf = Vec::new();
                held = None;
                discarded += data.len();
                if discarded > OVERSIZE_DRAIN_BYTES {
                    return Err(BodyError::TooLarge);
                }
                continue;
            }
            let units = (buf.len() + data.len()).div_ceil(BUDGET_UNIT);
            let more = units - held.as_ref().map_or(0, |p| p.num_permits());
            if more > 0 {
                let permit = tokio::time::timeout_at(
                    deadline,
                    self.memory.clone().acquire_many_owned(more as u32),
                )
                .await
                .map_err(|_| BodyError::Busy)?
                .map_err(|_| BodyError::Busy)?;
                match &mut held {
                    Some(h) => h.merge(permit),
                    None => held = Some(permit),
                }
            }
            buf.extend_from_slice(&data);
        }
        if too_large {
            return Err(BodyError::TooLarge);
        }
        Ok((buf, held))
    }
}

/// One structured line per decision: who changed what, how far it reached, and why
/// it was admitted or not. Decisions log under the target `blastguard::decision`, so
/// `RUST_LOG=warn,blastguard::decision=info` keeps them and little else.
fn log_review(reviewed: &Reviewed, elapsed: Duration) {
    let Some(judged) = reviewed.judged() else {
        warn!(
            uid = reviewed.uid().unwrap_or(""),
            error = reviewed.error().map(|e| e.to_string()).unwrap_or_default(),
            duration_seconds = elapsed.as_secs_f64(),
            "admission request could not be judged"
        );
        return;
    };
    let (request, verdict) = (&judged.summary, &judged.verdict);
    let findings = &verdict.findings;
    let limits: Vec<&str> = findings.violations.iter().map(|v| v.limit_name()).collect();
    info!(
        target: "blastguard::decision",
        uid = %judged.uid,
        operation = request.operation.as_str(),
        kind = %request.kind,
        namespace = request.namespace.as_deref().unwrap_or(""),
        name = %request.name,
        subresource = request.subresource.as_deref().unwrap_or(""),
        user = %request.user,
        decision = verdict.decision.as_str(),
        reason = verdict.reason.as_str(),
        rule = findings.rule.as_ref().map_or("", |(name, _)| name.as_str()),
        signal = findings.signal.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        pods_affected = findings.radius.as_ref().map(|r| r.pods_affected),
        limits_exceeded = limits.join(","),
        approval = findings.approval.as_ref().map_or("", |a| a.metric_label()),
        dry_run = request.dry_run,
        duration_seconds = elapsed.as_secs_f64(),
        "admission decision"
    );
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

    #[test]
    fn reads_the_api_servers_timeout_parameter() {
        let cases = [
            (Some("timeout=10s"), Some(Duration::from_secs(10))),
            (Some("a=b&timeout=2s"), Some(Duration::from_secs(2))),
            (Some("timeout=soon"), None),
            (Some("other=1"), None),
            (None, None),
        ];
        for (query, want) in cases {
            assert_eq!(api_server_timeout(query), want, "{query:?}");
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    fn reader(
        memory: &Arc<Semaphore>,
        declared: Option<usize>,
        deadline: Instant,
    ) -> BodyReader<'_> {
        BodyReader {
            memory,
            declared,
            deadline,
        }
    }

    #[tokio::test]
    async fn the_size_cap_holds_whatever_content_length_says() {
        let memory = body_memory(BODY_MEMORY_BYTES);
        let at_cap = vec![b'x'; MAX_BODY_BYTES];
        let read = reader(&memory, None, far()).read(Body::from(at_cap)).await;
        assert_eq!(read.unwrap().0.len(), MAX_BODY_BYTES);

        let over = vec![b'x'; MAX_BODY_BYTES + 1];
        for declared in [None, Some(10), Some(MAX_BODY_BYTES + 1)] {
            let read = reader(&memory, declared, far())
                .read(Body::from(over.clone()))
                .await;
            assert!(
                matches!(read, Err(BodyError::TooLarge)),
                "declared {declared:?}"
            );
        }
        assert_eq!(
            memory.available_permits(),
            BODY_MEMORY_BYTES / BUDGET_UNIT,
            "every body's memory is given back"
        );
    }

    #[tokio::test]
    async fn bodies_wait_for_memory_held_by_others_and_give_up_at_the_deadline() {
        let memory = body_memory(MAX_BODY_BYTES);
        let first = reader(&memory, None, far())
            .read(Body::from(vec![b'x'; MAX_BODY_BYTES - 100]))
            .await
            .unwrap();
        assert_eq!(
            first.1.as_ref().map(|p| p.num_permits()),
            Some(MAX_BODY_BYTES / BUDGET_UNIT)
        );
        let soon = Instant::now() + Duration::from_millis(50);
        let second = reader(&memory, None, soon)
            .read(Body::from(vec![b'y'; 10]))
            .await;
        assert!(matches!(second, Err(BodyError::Busy)));
        drop(first);
        let third = reader(&memory, None, far())
            .read(Body::from(vec![b'z'; 10]))
            .await;
        assert_eq!(third.unwrap().0, b"zzzzzzzzzz");
    }

    /// A client that sent its headers and then nothing.
    struct NeverEnds;

    impl axum::body::HttpBody for NeverEnds {
        type Data = axum::body::Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out() {
        let memory = body_memory(BODY_MEMORY_BYTES);
        let deadline = Instant::now() + Duration::from_millis(50);
        let read = reader(&memory, Some(100), deadline)
            .read(Body::new(NeverEnds))
            .await;
        assert!(matches!(read, Err(BodyError::Timeout)));
    }
}
