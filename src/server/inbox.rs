//! `serve`'s side of the approval inbox (docs/approvals.md, "The inbox"): its flags,
//! and starting it with the cluster state. Without the cluster state there is no
//! inbox: nobody but this process could read or sign its records.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::metrics::Metrics;
use super::notify::{self, Notifier, NotifyError, NotifyMetrics};
use crate::cluster::Cluster;
use crate::cluster::requests::{Limits, RequestMetrics};
use crate::engine::Engine;

/// The inbox's flags.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Approval inbox")]
pub struct InboxArgs {
    /// Record denied changes as ApprovalRequest objects in the state namespace, and
    /// admit a retry whose request is signed (needs the cluster state).
    #[arg(
        long,
        env = "BLASTGUARD_INBOX",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub inbox: bool,
    /// POST a JSON notification (Slack-compatible `text`) to URL on each new,
    /// approved, rejected and expired request.
    #[arg(long, env = "BLASTGUARD_NOTIFY_URL", value_name = "URL")]
    pub notify_url: Option<String>,
    /// Open requests one requester may have; further denials are not recorded.
    #[arg(
        long,
        env = "BLASTGUARD_REQUESTS_PER_REQUESTER",
        value_name = "N",
        default_value_t = 20
    )]
    pub requests_per_requester: usize,
    /// Requests in all; further denials are not recorded.
    #[arg(
        long,
        env = "BLASTGUARD_REQUESTS_MAX",
        value_name = "N",
        default_value_t = 500
    )]
    pub requests_max: usize,
    /// How often requests are swept: metrics, expiry, notifications of decisions.
    #[arg(
        long,
        env = "BLASTGUARD_REQUESTS_SWEEP",
        value_name = "DURATION",
        default_value = "15s",
        value_parser = humantime::parse_duration
    )]
    pub requests_sweep: Duration,
    /// The wait before a failed notification's first retry (doubled for each next).
    #[arg(
        long,
        env = "BLASTGUARD_NOTIFY_BACKOFF",
        value_name = "DURATION",
        default_value = "1s",
        value_parser = humantime::parse_duration
    )]
    pub notify_backoff: Duration,
}

/// Starts the inbox and its notifications, when asked and possible.
pub fn start(
    args: &InboxArgs,
    cluster: Option<&Cluster>,
    engine: &Engine,
    metrics: &Metrics,
) -> Result<(), NotifyError> {
    let Some(cluster) = cluster.filter(|_| args.inbox) else {
        if args.notify_url.is_some() {
            warn!(
                "--notify-url is ignored: the approval inbox needs the cluster state (--state cluster) and --inbox"
            );
        }
        return Ok(());
    };
    let notifier = args
        .notify_url
        .as_ref()
        .map(|url| {
            let mut options = notify::Options::new(url.clone());
            options.backoff = args.notify_backoff;
            Notifier::start(options, NotifyMetrics::new(metrics.registry()))
                .map(|n| Arc::new(n) as Arc<dyn notify::Notify>)
        })
        .transpose()?;
    let requests = cluster.requests(
        Limits {
            per_requester: args.requests_per_requester,
            total: args.requests_max,
            sweep: args.requests_sweep,
            ..Limits::default()
        },
        notifier,
        RequestMetrics::new(metrics.registry()),
    );
    engine.set_requests(requests);
    info!(
        namespace = %cluster.namespace,
        notify = args.notify_url.is_some(),
        "approval inbox: denied changes are recorded as ApprovalRequest objects"
    );
    Ok(())
}
