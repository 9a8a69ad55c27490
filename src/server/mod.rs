//! `blastguard serve`: the HTTPS webhook and its admin port (docs/design.md#commands).
//!
//! Startup order: policy (an invalid one is fatal), the cluster state (watches start;
//! readiness waits for their first lists, up to `--cluster-sync-timeout`),
//! allowed_signers (a missing one only makes approvals impossible), both ports bound,
//! the certificate (readiness waits for it), then serving until SIGTERM or SIGINT
//! drains the webhook.

pub mod admin;
pub mod dev;
pub mod inbox;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod reload;
pub mod reloaders;
pub mod tls;

// The listener and the request handler are on the request path (see the crate root).
request_path!(body, connection_age, listener, routes);

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

use self::logging::LogFormat;
use crate::approval::NoTrustedSigners;
use crate::cluster::{self, Cluster, StateMode};
use crate::engine::{Engine, State};
use crate::policy::Policy;
use crate::server::metrics::{Metrics, Reloaded};
use listener::{Drained, Endpoint, Limits};
use reloaders::{CertFiles, LoadError, PolicyFile, SignersFile};

/// Exit code when the server cannot start (invalid policy, port in use).
pub const EXIT_FATAL: u8 = 1;

/// Exit code when the drain timeout cut off requests in flight at shutdown (their
/// clients got no answer): an orchestrator sees the shutdown was not clean.
pub const EXIT_REQUESTS_CUT: u8 = 3;

/// How long the admin port keeps answering probes after the webhook has drained.
const ADMIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Shortest `--reload-interval`: each tick reads the watched files.
const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(50);

/// Arguments of `blastguard serve`. Every flag can also be set by an environment
/// variable `BLASTGUARD_<FLAG>`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    blastguard serve --tls-cert /certs/tls.crt --tls-key /certs/tls.key --policy /etc/blastguard/policy.yaml\n  \
    blastguard serve --dev")]
pub struct ServeArgs {
    /// Address of the HTTPS webhook [default: 0.0.0.0:8443; 127.0.0.1:8443 with --dev].
    #[arg(long, env = "BLASTGUARD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the plain-HTTP admin port (/livez, /readyz, /metrics)
    /// [default: 0.0.0.0:8080; 127.0.0.1:8080 with --dev].
    #[arg(long, env = "BLASTGUARD_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// PEM certificate chain served by the webhook; reloaded when it changes.
    #[arg(
        long,
        env = "BLASTGUARD_TLS_CERT",
        value_name = "FILE",
        required_unless_present = "dev",
        conflicts_with = "dev",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate; reloaded when it changes.
    #[arg(
        long,
        env = "BLASTGUARD_TLS_KEY",
        value_name = "FILE",
        required_unless_present = "dev",
        conflicts_with = "dev",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: when set, only clients with a certificate chaining to it are
    /// served (the API server, given one by its AdmissionConfiguration's
    /// kubeConfigFile); others fail the TLS handshake. Reloaded with the certificate.
    #[arg(long, env = "BLASTGUARD_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Policy file (YAML); reloaded when it changes [default: the embedded policy].
    #[arg(long, env = "BLASTGUARD_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// OpenSSH allowed_signers file of the approvers; overrides the policy's
    /// spec.approvals.allowedSigners; reloaded when it changes.
    #[arg(long, env = "BLASTGUARD_ALLOWED_SIGNERS", value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// Log format (logs go to stderr; RUST_LOG filters).
    #[arg(long, env = "BLASTGUARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Run without a cluster: self-signed certificate for localhost, loopback
    /// addresses, and instructions on how to reach the server.
    #[arg(long, env = "BLASTGUARD_DEV")]
    pub dev: bool,
    /// How often the certificate, policy and allowed_signers files are read for changes.
    #[arg(
        long,
        env = "BLASTGUARD_RELOAD_INTERVAL",
        value_name = "DURATION",
        default_value = "2s",
        value_parser = parse_reload_interval
    )]
    pub reload_interval: Duration,
    /// Connection limits and timeouts.
    #[command(flatten)]
    pub limits: Box<LimitArgs>,
    /// Where change sets, namespace labels and workload annotations come from.
    #[command(flatten)]
    pub cluster: Box<ClusterArgs>,
    /// The approval inbox and its notifications.
    #[command(flatten)]
    pub inbox: Box<inbox::InboxArgs>,
}

/// The cluster state of `blastguard serve` (docs/design.md#radius).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Cluster state")]
pub struct ClusterArgs {
    /// Where change sets, namespace labels and parent workloads' annotations come
    /// from: the cluster's API server, shared by every replica (cluster); this
    /// process's memory (memory); the cluster when one is configured, in-cluster or by
    /// KUBECONFIG, else memory (auto). --dev always uses memory.
    #[arg(
        long,
        env = "BLASTGUARD_STATE",
        value_enum,
        default_value_t = StateMode::Auto
    )]
    pub state: StateMode,
    /// Namespace of the ChangeSet records [default: the configuration's namespace; in
    /// a pod, its own].
    #[arg(long, env = "BLASTGUARD_STATE_NAMESPACE", value_name = "NAMESPACE")]
    pub state_namespace: Option<String>,
    /// The ValidatingWebhookConfiguration this server is registered by: watched (with
    /// the cluster state), and a change or deletion is logged and counted in
    /// blastguard_webhook_configuration_* (the chart sets it).
    #[arg(long, env = "BLASTGUARD_WEBHOOK_CONFIGURATION", value_name = "NAME")]
    pub webhook_configuration: Option<String>,
    /// Longest time one admission decision waits on the API server, for all its
    /// reads and writes together; past it, it decides with what is known.
    #[arg(
        long,
        env = "BLASTGUARD_API_BUDGET",
        value_name = "DURATION",
        default_value = "200ms",
        value_parser = humantime::parse_duration
    )]
    pub api_budget: Duration,
    /// How long /readyz waits for the first lists of namespaces, workloads and
    /// change sets; past it the server is ready without them (and says so in its log),
    /// so a broken API server cannot keep every replica unready.
    #[arg(
        long,
        env = "BLASTGUARD_CLUSTER_SYNC_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub cluster_sync_timeout: Duration,
    /// Count an admitted AI change for the window at once, without looking for it in
    /// the cluster first (as before issue 19). Only for tests that post reviews
    /// themselves in place of the API server: with it, a forged review spends the
    /// budget of the identity it names (docs/security.md).
    #[arg(long, env = "BLASTGUARD_COUNT_UNSEEN", hide = true)]
    pub count_unseen: bool,
    /// Most ChangeSet records in all; past it a new AI change set within its limits
    /// is held (docs/security.md, "Records without bound"). Hidden: for tests that
    /// make the cap bite with a few records.
    #[arg(
        long,
        env = "BLASTGUARD_MAX_CHANGE_SET_RECORDS",
        value_name = "N",
        default_value_t = cluster::change_sets::Caps::default().total,
        hide = true
    )]
    pub max_change_set_records: usize,
    /// Most ChangeSet records made for one requester's decisions. Hidden, as above.
    #[arg(
        long,
        env = "BLASTGUARD_MAX_CHANGE_SET_RECORDS_PER_REQUESTER",
        value_name = "N",
        default_value_t = cluster::change_sets::Caps::default().per_requester,
        hide = true
    )]
    pub max_change_set_records_per_requester: usize,
}

/// Limits and timeouts of `blastguard serve`: every connection and request is bounded.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Limits and timeouts")]
pub struct LimitArgs {
    /// Most webhook connections served at once. At the cap an idle connection is
    /// closed to make room for a new one; when none is idle, new ones wait.
    #[arg(
        long,
        env = "BLASTGUARD_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 1024
    )]
    pub max_connections: usize,
    /// Most webhook connections from one client address [default: half of
    /// --max-connections]. Past it the client's idle connections make room, or the new
    /// one is refused.
    #[arg(long, env = "BLASTGUARD_MAX_CONNECTIONS_PER_PEER", value_name = "N")]
    pub max_connections_per_peer: Option<usize>,
    /// Concurrent HTTP/2 streams per connection.
    #[arg(
        long,
        env = "BLASTGUARD_MAX_CONCURRENT_STREAMS",
        value_name = "N",
        default_value_t = 100
    )]
    pub max_concurrent_streams: u32,
    /// Time allowed for a TLS handshake.
    #[arg(
        long,
        env = "BLASTGUARD_HANDSHAKE_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub handshake_timeout: Duration,
    /// Time allowed for an HTTP/1 request head, and for an idle keep-alive connection.
    #[arg(
        long,
        env = "BLASTGUARD_HEADER_READ_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub header_read_timeout: Duration,
    /// Time allowed to receive a request body (capped by the API server's ?timeout=).
    #[arg(
        long,
        env = "BLASTGUARD_BODY_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub body_timeout: Duration,
    /// How long a response may wait for its client to read it (a full socket, or an
    /// HTTP/2 window kept shut) before the connection is dropped.
    #[arg(
        long,
        env = "BLASTGUARD_WRITE_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub write_timeout: Duration,
    /// How long a webhook connection is served before it is closed gracefully (HTTP/2
    /// GOAWAY, HTTP/1.1 `Connection: close`; no request is cut), each between 90% and
    /// 100% of it: the API server then dials the Service again, so its calls spread
    /// over the replicas. 0 keeps connections for as long as the client does.
    #[arg(
        long,
        env = "BLASTGUARD_MAX_CONNECTION_AGE",
        value_name = "DURATION",
        default_value = "1m",
        value_parser = humantime::parse_duration
    )]
    pub max_connection_age: Duration,
    /// On SIGTERM, how long requests in flight may take to finish before exit (exit
    /// code 3 when it cut any off).
    #[arg(
        long,
        env = "BLASTGUARD_DRAIN_TIMEOUT",
        value_name = "DURATION",
        default_value = "20s",
        value_parser = humantime::parse_duration
    )]
    pub drain_timeout: Duration,
}

fn parse_reload_interval(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < MIN_RELOAD_INTERVAL {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(MIN_RELOAD_INTERVAL)
        ));
    }
    Ok(d)
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The policy given with `--policy` cannot be used.
    #[error("cannot start: {0}")]
    Policy(LoadError),
    /// A port could not be bound.
    #[error("cannot listen for the {what} on {addr}: {source}")]
    Bind {
        /// `webhook` or `admin port`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The dev certificate could not be made.
    #[error("cannot start in dev mode: {0}")]
    Dev(#[from] dev::DevError),
    /// TLS could not be configured.
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Threads, signal handlers or the runtime could not be set up.
    #[error("cannot start: {0}")]
    Runtime(#[from] std::io::Error),
    /// Neither certificate flags nor `--dev` were given.
    #[error("serve needs --tls-cert and --tls-key, or --dev")]
    NoCertificate,
    /// `--state cluster` without a usable cluster configuration.
    #[error("cannot use the cluster state (--state cluster): {0}")]
    Cluster(#[from] cluster::ClusterError),
    /// `--state cluster` with `--dev`, which runs without a cluster.
    #[error("--dev runs without a cluster; drop --state cluster, or --dev")]
    DevWithCluster,
    /// `--notify-url` cannot be used.
    #[error(transparent)]
    Notify(#[from] notify::NotifyError),
}

/// Runs the server until SIGTERM or SIGINT and the drain that follows.
pub fn run(args: ServeArgs) -> ExitCode {
    logging::init(args.log_format);
    fixed_mmap_threshold();
    // Anything else in the process that asks rustls for the default provider (the
    // kube client, for one) gets ring too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    let result = runtime.block_on(serve(args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_REQUESTS_CUT),
        Err(e) => {
            error!("{}", logging::one_line(&e.to_string()));
            ExitCode::from(EXIT_FATAL)
        }
    }
}

/// Keeps every allocation above 128 KiB in a mapping of its own, returned to the
/// system when freed. Request bodies of up to 8 MiB are allocated and freed all day;
/// glibc raises its mmap threshold to the largest block freed so far, after which such
/// buffers come from the heap and fragment it, and the process keeps the memory of its
/// largest burst (eight concurrent 3 MiB reviews: 66 MiB peak with the moving
/// threshold, 46 MiB with this; BENCHMARKS.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fixed_mmap_threshold() {
    // SAFETY: mallopt only sets an allocator parameter; called once, before any
    // thread of ours starts.
    let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    if set != 1 {
        tracing::warn!(
            "could not fix malloc's mmap threshold; large reviews may leave the heap fragmented"
        );
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fixed_mmap_threshold() {}

/// Serves until a signal and the drain that follows; `Ok` with the number of requests
/// the drain timeout cut off.
async fn serve(args: ServeArgs) -> Result<usize, ServeError> {
    let dev = args.dev.then(dev::DevSetup::create).transpose()?;
    let (cert_path, key_path) = match (&dev, &args.tls_cert, &args.tls_key) {
        (Some(d), _, _) => (d.cert.clone(), d.key.clone()),
        (None, Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => return Err(ServeError::NoCertificate),
    };
    let loopback = dev.is_some();
    let listen = args.listen.unwrap_or_else(|| default_addr(loopback, 8443));
    let admin_listen = args
        .admin_listen
        .unwrap_or_else(|| default_addr(loopback, 8080));

    let metrics = Arc::new(Metrics::new());
    let (policy, policy_file) = match &args.policy {
        Some(path) => {
            let (file, policy) = PolicyFile::load(path, &metrics).map_err(ServeError::Policy)?;
            (policy, Some(file))
        }
        None => {
            metrics.record_reload(Reloaded::Policy, true);
            (Policy::embedded(), None)
        }
    };
    info!(
        policy = %args.policy.as_ref().map_or("embedded".to_string(), |p| p.display().to_string()),
        name = %policy.document.metadata.name,
        rules = policy.rules.len(),
        "policy loaded"
    );
    crate::budget::set_per_decision(args.cluster.api_budget);
    let cluster = start_cluster(&args.cluster, dev.is_some(), &policy, &metrics).await?;
    let state = cluster
        .as_ref()
        .map_or_else(State::in_memory, |c| cluster_state(c));
    let engine = Arc::new(Engine::with_state(
        policy,
        Arc::new(NoTrustedSigners),
        state,
    ));
    inbox::start(&args.inbox, cluster.as_deref(), &engine, &metrics)?;
    let mut signers = SignersFile::new(args.allowed_signers.clone()).dev(args.dev);
    signers.tick(&engine, &metrics);

    // Signals are caught before the addresses are printed, so whoever reads them can
    // signal at once.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;

    let resolver = Arc::new(tls::CertResolver::default());
    let mut readiness = admin::Readiness::new(
        resolver.clone(),
        format!("{} and {}", cert_path.display(), key_path.display()),
    );
    if let Some(cluster) = &cluster {
        let deadline = Instant::now() + args.cluster.cluster_sync_timeout;
        let watched = cluster.clone();
        readiness = readiness.with_cluster_sync(Box::new(move || watched.pending_sync()), deadline);
        tokio::spawn(report_sync(
            cluster.clone(),
            args.cluster.cluster_sync_timeout,
        ));
    }
    let readiness = Arc::new(readiness);
    let admin_listener = bind("admin port", admin_listen).await?;
    let webhook_listener = bind("webhook", listen).await?;
    let admin_addr = admin_listener.local_addr()?;
    let webhook_addr = webhook_listener.local_addr()?;

    let client_ca = args
        .client_ca
        .as_ref()
        .map(|path| (path.clone(), Arc::new(tls::ClientCa::default())));
    let mut cert_files =
        CertFiles::new(cert_path, key_path, resolver.clone()).with_client_ca(client_ca.clone());
    cert_files.tick(&metrics);
    spawn_reloaders(&args, cert_files, policy_file, signers, &engine, &metrics)?;

    let limits = Limits {
        max_connections: args.limits.max_connections,
        handshake_timeout: args.limits.handshake_timeout,
        header_read_timeout: args.limits.header_read_timeout,
        max_concurrent_streams: args.limits.max_concurrent_streams,
        max_connections_per_peer: args
            .limits
            .max_connections_per_peer
            .unwrap_or(args.limits.max_connections / 2),
        write_timeout: args.limits.write_timeout,
        max_connection_age: Some(args.limits.max_connection_age),
    };
    let webhook = Endpoint {
        name: "webhook",
        listener: webhook_listener,
        tls: Some(TlsAcceptor::from(Arc::new(tls::server_config(
            resolver,
            client_ca.map(|(_, ca)| ca),
        )?))),
        router: routes::router(routes::Webhook::new(
            engine.clone(),
            metrics.clone(),
            args.limits.body_timeout,
        )),
        limits,
        metrics: metrics.server(),
    };
    let admin = Endpoint {
        name: "admin",
        listener: admin_listener,
        tls: None,
        router: admin::router(readiness.clone(), metrics.clone()),
        // Probes and scrapes need no spreading over replicas.
        limits: Limits {
            max_connection_age: None,
            ..limits
        },
        metrics: metrics.server(),
    };
    let (stop_webhook, webhook_stopped) = watch::channel(false);
    let (stop_admin, admin_stopped) = watch::channel(false);
    let admin_task = tokio::spawn(listener::serve(admin, admin_stopped, ADMIN_DRAIN_TIMEOUT));
    let webhook_task = tokio::spawn(listener::serve(
        webhook,
        webhook_stopped,
        args.limits.drain_timeout,
    ));

    info!(%webhook_addr, %admin_addr, "listening");
    println!("blastguard: webhook listening on https://{webhook_addr}/validate");
    println!("blastguard: admin listening on http://{admin_addr} (/livez /readyz /metrics)");
    if let Some(dev) = &dev {
        println!("{}", dev.instructions(webhook_addr, admin_addr));
    }

    let received = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    info!(
        signal = received,
        drain_timeout = %humantime::format_duration(args.limits.drain_timeout),
        "shutting down: not ready, no new connections, finishing requests in flight; a second signal exits at once"
    );
    readiness.start_draining();
    tokio::spawn(exit_on_second_signal(terminate, interrupt));
    let _ = stop_webhook.send(true);
    let requests_cut = match webhook_task.await {
        Ok(Drained::Complete) => {
            info!("all requests in flight finished");
            0
        }
        Ok(Drained::TimedOut { requests_cut: 0 }) => {
            info!("drain timeout passed with idle connections open; closed them");
            0
        }
        Ok(Drained::TimedOut { requests_cut }) => {
            error!(
                requests_cut,
                drain_timeout = %humantime::format_duration(args.limits.drain_timeout),
                "drain timeout cut off {requests_cut} request(s) in flight; exiting with code {EXIT_REQUESTS_CUT}"
            );
            requests_cut
        }
        Err(e) => {
            error!("webhook task failed: {e}");
            0
        }
    };
    if let Some(cluster) = &cluster {
        flush_change_sets(cluster).await;
    }
    let _ = stop_admin.send(true);
    let _ = admin_task.await;
    info!("stopped");
    // Keeps the dev files until the server is done with them.
    drop(dev);
    Ok(requests_cut)
}

/// Starts the cluster state when `--state` and the configuration call for it; logs
/// which state is in use either way.
/// The engine's state, backed by the cluster's stores.
fn cluster_state(cluster: &Cluster) -> State {
    State {
        change_sets: cluster.change_sets.clone(),
        workloads: cluster.workloads.clone(),
        sizes: cluster.sizes.clone(),
        namespaces: cluster.namespaces.clone(),
        spent: cluster.spent.clone(),
    }
}

async fn start_cluster(
    args: &ClusterArgs,
    dev: bool,
    policy: &Policy,
    metrics: &Metrics,
) -> Result<Option<Arc<Cluster>>, ServeError> {
    let memory = |why: &str| {
        if let Some(name) = &args.webhook_configuration {
            warn!(webhook_configuration = %name, "the webhook configuration is not watched without the cluster state");
        }
        info!(
            state = "memory",
            "state: change sets, namespace labels and workload annotations in this process's memory ({why}); each replica counts alone"
        );
        Ok(None)
    };
    let config = match (args.state, dev) {
        (StateMode::Cluster, true) => return Err(ServeError::DevWithCluster),
        (_, true) => return memory("--dev"),
        (StateMode::Memory, false) => return memory("--state memory"),
        (StateMode::Cluster, false) => Cluster::infer().await?,
        (StateMode::Auto, false) => match Cluster::infer().await {
            Ok(config) => config,
            Err(e) => return memory(&format!("no cluster configured: {e}")),
        },
    };
    let cluster = Cluster::start(
        config,
        cluster::Options {
            namespace: args.state_namespace.clone(),
            window: policy.change_set_window,
            workloads: policy.document.spec.workloads.clone(),
            webhook_configuration: args.webhook_configuration.clone(),
            look: !args.count_unseen,
            caps: cluster::change_sets::Caps {
                total: args.max_change_set_records,
                per_requester: args.max_change_set_records_per_requester,
            },
        },
        metrics.cluster(),
    )?;
    info!(
        state = "cluster",
        api_server = %cluster.server,
        namespace = %cluster.namespace,
        api_budget = %humantime::format_duration(args.api_budget),
        "state: in the cluster: namespaces and workloads watched, change sets in ChangeSet records shared by every replica"
    );
    Ok(Some(Arc::new(cluster)))
}

/// Logs when the cluster state has its first lists, or that the start-up deadline
/// passed without them (readiness stops waiting then).
async fn report_sync(cluster: Arc<Cluster>, timeout: Duration) {
    let started = Instant::now();
    let mut warned = false;
    loop {
        let pending = cluster.pending_sync();
        if pending.is_empty() {
            info!(
                seconds = started.elapsed().as_secs_f64(),
                "cluster state synced: namespaces, workloads and change sets listed"
            );
            return;
        }
        if !warned && started.elapsed() >= timeout {
            warn!(
                pending = %pending.join(", "),
                timeout = %humantime::format_duration(timeout),
                "cluster state not listed within the start-up deadline; ready anyway, deciding with GETs within the budget and what is known"
            );
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Gives change-set writes still going on in the background a moment to finish, so
/// a replica that stops does not take admitted changes out of the count.
async fn flush_change_sets(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while cluster.pending_writes() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = cluster.pending_writes();
    if left > 0 {
        warn!(
            writes = left,
            "stopping with change-set writes the API server has not taken"
        );
    }
}

fn default_addr(loopback: bool, port: u16) -> SocketAddr {
    let ip = if loopback {
        std::net::Ipv4Addr::LOCALHOST
    } else {
        std::net::Ipv4Addr::UNSPECIFIED
    };
    SocketAddr::from((ip, port))
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { what, addr, source })
}

/// Starts one polling thread per watched file.
fn spawn_reloaders(
    args: &ServeArgs,
    mut cert_files: CertFiles,
    policy_file: Option<PolicyFile>,
    mut signers: SignersFile,
    engine: &Arc<Engine>,
    metrics: &Arc<Metrics>,
) -> std::io::Result<()> {
    let interval = args.reload_interval;
    let m = metrics.clone();
    reload::spawn_poller("certificate", interval, move || cert_files.tick(&m))?;
    if let Some(mut policy_file) = policy_file {
        let (e, m) = (engine.clone(), metrics.clone());
        reload::spawn_poller("policy", interval, move || policy_file.tick(&e, &m))?;
    }
    let (e, m) = (engine.clone(), metrics.clone());
    reload::spawn_poller("allowed-signers", interval, move || signers.tick(&e, &m))?;
    Ok(())
}

/// During the drain, a second SIGTERM or SIGINT ends the process at once, with the
/// shell's code for death by that signal.
async fn exit_on_second_signal(mut terminate: Signal, mut interrupt: Signal) {
    let code = tokio::select! {
        _ = terminate.recv() => 128 + 15,
        _ = interrupt.recv() => 128 + 2,
    };
    warn!("second signal: exiting without finishing requests in flight");
    std::process::exit(code);
}
