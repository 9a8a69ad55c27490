//! Notifications of the approval inbox (`serve --notify-url`, chart value
//! `notify.url`; docs/approvals.md, "Notifications"): a JSON POST on each new request
//! and on each decision about it (approved, rejected, expired), with a
//! Slack-compatible `text` field, so an incoming-webhook URL of Slack, Mattermost or
//! Teams' Slack adapter works as it is.
//!
//! Never on the admission path: events go to a bounded queue that one task drains;
//! a full queue drops the event (counted) rather than wait. A delivery that fails
//! with a connection error, a 429 or a 5xx is retried with exponential backoff; every
//! failure is counted in `blastguard_notification_failures_total`.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::mpsc;

pub use crate::approval::request::{Event, EventKind, Notify};

/// How notifications are delivered.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to POST.
    pub url: String,
    /// Events waiting at most; more are dropped.
    pub queue: usize,
    /// Tries per event.
    pub attempts: u32,
    /// The wait before the first retry; doubled for each next one, at most a minute.
    pub backoff: Duration,
    /// How long one POST may take.
    pub timeout: Duration,
}

impl Options {
    /// The defaults for `url`.
    pub fn new(url: String) -> Self {
        Self {
            url,
            queue: 256,
            attempts: 5,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why notifications cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The URL does not parse or is not http(s).
    #[error("--notify-url {url:?} is not an http:// or https:// URL: {message}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The system's root certificates cannot be read.
    #[error("cannot load the system's root certificates for --notify-url: {0}")]
    Roots(std::io::Error),
}

/// The notification counters.
#[derive(Clone)]
pub struct NotifyMetrics {
    sent: IntCounterVec,
    failures: IntCounterVec,
}

impl NotifyMetrics {
    /// Registers the counters in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let sent = IntCounterVec::new(
            Opts::new(
                "blastguard_notifications_total",
                "Inbox notifications delivered, by event.",
            ),
            &["event"],
        )
        .expect("a valid metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "blastguard_notification_failures_total",
                "Inbox notification failures, by reason: a failed try (`http_status`, `unreachable`), an event given up after every retry (`given_up`), or dropped because the queue was full (`queue_full`).",
            ),
            &["reason"],
        )
        .expect("a valid metric");
        for c in [&sent, &failures] {
            // Registered once per process; a second registration is a programming error
            // that only a test could make, and it keeps the first.
            let _ = registry.register(Box::new(c.clone()));
        }
        for kind in EventKind::ALL {
            sent.with_label_values(&[kind.as_str()]);
        }
        for reason in ["http_status", "unreachable", "given_up", "queue_full"] {
            failures.with_label_values(&[reason]);
        }
        Self { sent, failures }
    }
}

/// The queue's sending side; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    queue: mpsc::Sender<Event>,
    metrics: NotifyMetrics,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// Starts the delivering task on the current runtime.
    pub fn start(options: Options, metrics: NotifyMetrics) -> Result<Notifier, NotifyError> {
        let uri: hyper::Uri = options
            .url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| NotifyError::Url {
                url: options.url.clone(),
                message: e.to_string(),
            })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(NotifyError::Url {
                url: options.url.clone(),
                message: "it needs a scheme (http or https) and a host".into(),
            });
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(options.timeout));
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(builder) => builder,
            // An image without a CA bundle can still notify over http://; an
            // https:// receiver then fails its handshake, counted and logged.
            Err(e) => {
                tracing::warn!(error = %e, "no system root certificates: https notifications will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| NotifyError::Roots(std::io::Error::other(e)))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let https = builder.https_or_http().enable_http1().wrap_connector(http);
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
        let (queue, mut events) = mpsc::channel::<Event>(options.queue.max(1));
        let delivery = metrics.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                deliver(&client, &uri, &options, &delivery, &event).await;
            }
        });
        Ok(Notifier { queue, metrics })
    }

    /// Queues an event; never waits (a full queue drops it, counted).
    pub fn send(&self, event: Event) {
        Notify::send(self, event)
    }
}

impl Notify for Notifier {
    fn send(&self, event: Event) {
        if let Err(e) = self.queue.try_send(event) {
            self.metrics
                .failures
                .with_label_values(&["queue_full"])
                .inc();
            tracing::warn!(error = %e, "notification queue full: event dropped");
        }
    }
}

/// What one try came to.
enum Try {
    Delivered,
    /// Worth retrying (unreachable, 429, 5xx).
    Again(&'static str, String),
    /// Not worth retrying (another 4xx: the URL or body is wrong).
    Never(String),
}

async fn deliver<C>(
    client: &Client<C, Full<Bytes>>,
    uri: &hyper::Uri,
    options: &Options,
    metrics: &NotifyMetrics,
    event: &Event,
) where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let body = match serde_json::to_vec(event) {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a notification");
            return;
        }
    };
    let mut wait = options.backoff;
    for attempt in 1..=options.attempts.max(1) {
        let request = hyper::Request::post(uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("blastguard/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body.clone()));
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                tracing::error!(error = %e, "cannot build a notification request");
                return;
            }
        };
        let outcome = match tokio::time::timeout(options.timeout, client.request(request)).await {
            Err(_) => Try::Again("unreachable", "timed out".into()),
            Ok(Err(e)) => Try::Again("unreachable", e.to_string()),
            Ok(Ok(response)) => {
                let status = response.status();
                // Read the body so the connection can be reused.
                let _ = response.into_body().collect().await;
                if status.is_success() {
                    Try::Delivered
                } else if status.is_server_error() || status.as_u16() == 429 {
                    Try::Again("http_status", format!("HTTP {status}"))
                } else {
                    Try::Never(format!("HTTP {status}"))
                }
            }
        };
        match outcome {
            Try::Delivered => {
                metrics
                    .sent
                    .with_label_values(&[event.event.as_str()])
                    .inc();
                tracing::debug!(request = %event.request, event = event.event.as_str(), "notified");
                return;
            }
            Try::Never(why) => {
                metrics.failures.with_label_values(&["http_status"]).inc();
                metrics.failures.with_label_values(&["given_up"]).inc();
                tracing::warn!(request = %event.request, error = %why, "notification refused; not retried");
                return;
            }
            Try::Again(reason, why) => {
                metrics.failures.with_label_values(&[reason]).inc();
                tracing::warn!(request = %event.request, attempt, error = %why, "notification failed");
                if attempt < options.attempts {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
    metrics.failures.with_label_values(&["given_up"]).inc();
    tracing::warn!(request = %event.request, event = event.event.as_str(), "notification given up after every retry");
}
