//! Logs: `tracing` events to stderr, as text or one JSON object per line (`RUST_LOG`
//! filters, default `info`), and the one line each admission decision writes.

use std::io::IsTerminal as _;
use std::time::Duration;

use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::engine::Reviewed;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, event fields at the top level.
    Json,
}

/// A message on one line, for a log: an error that lists its parts on lines of their
/// own (every problem of a policy) has them joined with `; ` after its first line, so
/// each event stays one line in text logs, greppable and whole in log shippers.
pub fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    let rest: Vec<&str> = lines.collect();
    if rest.is_empty() {
        first
    } else {
        format!("{first} {}", rest.join("; "))
    }
}

/// Installs the global subscriber. A second call (tests, embedding) keeps the first.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; in files they are noise.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// One structured line per decision: who changed what, how far it reached, and why
/// it was admitted or not. Decisions log under the target `blastguard::decision`, so
/// `RUST_LOG=warn,blastguard::decision=info` keeps them and little else.
pub fn log_review(reviewed: &Reviewed, elapsed: Duration) {
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
        // Which cap on change-set records kept this change set off the shared
        // records (`total`, `requester`); with reason change_set_capped.
        change_set_capped = findings.capped.as_ref().map_or("", |c| c.cap),
        dry_run = request.dry_run,
        duration_seconds = elapsed.as_secs_f64(),
        "admission decision"
    );
}
