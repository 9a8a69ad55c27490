//! The plain-HTTP admin port: `/livez`, `/readyz` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder as _, TextEncoder};

use super::tls::CertResolver;
use crate::metrics::Metrics;

/// Whether the webhook should receive traffic. The policy is loaded before the admin
/// port opens, so what remains is the certificate and the drain.
#[derive(Debug)]
pub struct Readiness {
    certificate: Arc<CertResolver>,
    certificate_source: String,
    draining: AtomicBool,
}

impl Readiness {
    /// Readiness over the certificate resolver; `certificate_source` names the files
    /// in the reason given while they are missing.
    pub fn new(certificate: Arc<CertResolver>, certificate_source: String) -> Self {
        Self {
            certificate,
            certificate_source,
            draining: AtomicBool::new(false),
        }
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
