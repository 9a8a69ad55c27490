//! The plain-HTTP admin port: `/livez`, `/readyz` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder as _, TextEncoder};

use super::tls::CertResolver;
use crate::server::metrics::Metrics;

/// Whether the webhook should receive traffic. The policy is loaded before the admin
/// port opens, so what remains is the certificate, the cluster state's first lists
/// (until a start-up deadline) and the drain.
pub struct Readiness {
    certificate: Arc<CertResolver>,
    certificate_source: String,
    draining: AtomicBool,
    cluster_sync: Option<ClusterSync>,
}

/// The caches of cluster state still waiting for their first list, by name.
pub type PendingSync = Box<dyn Fn() -> Vec<&'static str> + Send + Sync>;

struct ClusterSync {
    pending: PendingSync,
    deadline: Instant,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("certificate_source", &self.certificate_source)
            .field("draining", &self.draining)
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// Readiness over the certificate resolver; `certificate_source` names the files
    /// in the reason given while they are missing.
    pub fn new(certificate: Arc<CertResolver>, certificate_source: String) -> Self {
        Self {
            certificate,
            certificate_source,
            draining: AtomicBool::new(false),
            cluster_sync: None,
        }
    }

    /// Also waits for the cluster state's first lists, but not past `deadline`: a
    /// replica that cannot list is better serving with GETs and what it knows than
    /// unready, and an API server that fails every replica's lists would otherwise
    /// take admission down with it.
    pub fn with_cluster_sync(mut self, pending: PendingSync, deadline: Instant) -> Self {
        self.cluster_sync = Some(ClusterSync { pending, deadline });
        self
    }

    /// Marks the server as draining: not ready from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// `Ok` when ready, else the reason.
    pub fn check(&self) -> Result<(), String> {
        if self.draining.load(Ordering::SeqCst) {
            return Err("draining: shutting down, finishing requests in flight".to_string());
        }
        if !self.certificate.is_loaded() {
            return Err(format!(
                "no valid TLS certificate loaded yet (waiting for {})",
                self.certificate_source
            ));
        }
        if let Some(sync) = &self.cluster_sync
            && Instant::now() < sync.deadline
        {
            let pending = (sync.pending)();
            if !pending.is_empty() {
                return Err(format!(
                    "waiting for the first list of {} from the API server (at most {}s more)",
                    pending.join(", "),
                    sync.deadline
                        .saturating_duration_since(Instant::now())
                        .as_secs()
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Admin {
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

/// The admin routes.
pub fn router(readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .with_state(Admin { readiness, metrics })
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(admin): State<Admin>) -> Response {
    match admin.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn metrics_text(State(admin): State<Admin>) -> Response {
    (
        [(header::CONTENT_TYPE, TextEncoder::new().format_type())],
        admin.metrics.encode(),
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: the admin port serves GET /livez, /readyz and /metrics\n",
    )
        .into_response()
}
