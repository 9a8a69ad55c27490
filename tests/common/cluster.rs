//! The end-to-end harness: a real control plane, the real `kubectl` and `helm`, and
//! `blastguard serve` as a local process registered through the chart's `webhook.url`.
//!
//! Nothing here stands in for the API server. `scripts/control-plane.sh up` starts the
//! pinned etcd, kube-apiserver and kube-controller-manager on 127.0.0.1; the chart is
//! installed into that API server with `helm install`; every change is made with
//! `kubectl` (`.tools/bin`, v1.35), so the AdmissionReviews blastguard judges are the
//! ones the API server builds (defaulting, matchConditions in CEL, RBAC, impersonation,
//! dry-run, the scale subresource, the controllers' own requests). No kubelet or
//! scheduler runs: Pods are created and stay Pending.
//!
//! One control plane per test binary, owned by the binary's single `#[test]`, which
//! runs its scenarios as [`Steps`] in sequence. Why not one `#[test]` per scenario
//! sharing a static cluster: libtest ends the process without dropping statics, so
//! nothing would run `control-plane.sh down`. Here the [`ControlPlane`] is a local of
//! the test: its `Drop` runs `down` when the test ends, passed or failed. A watchdog
//! process (started with the cluster) brings it down as well if the test process dies
//! without unwinding (abort, SIGKILL, Ctrl-C), so no etcd or kube-apiserver outlives
//! `cargo test`.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{KubeletDir, Leaf, Pki, Server, admin_get, metric, repo};

/// Bound for one wait on the cluster (a ReplicaSet to appear, the webhook to be ready).
pub const WAIT: Duration = Duration::from_secs(30);

/// The AI marker of the chart's default policy.
pub const AI_AGENT: &str = "blastguard.io/ai-agent";

/// The identity the chart's default policy names as an AI agent
/// (`system:serviceaccount:ai-agents:*`).
pub const BOT: &str = "system:serviceaccount:ai-agents:bot";

/// The HorizontalPodAutoscaler controller's identity in a cluster whose controller
/// manager runs with `--use-service-account-credentials` (as control-plane.sh does).
pub const HPA: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

/// The metric every answered AdmissionReview increments.
pub const REQUESTS: &str = "blastguard_admission_requests_total";

/// What a finished command printed.
#[derive(Debug)]
pub struct Run {
    /// Whether it exited 0.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The command, for messages.
    pub what: String,
}

impl Run {
    /// Standard output, failing the test with everything printed unless it exited 0.
    #[track_caller]
    pub fn expect_ok(self) -> String {
        assert!(
            self.ok,
            "{} failed:\n{}\n{}",
            self.what, self.stdout, self.stderr
        );
        self.stdout
    }

    /// Standard error, failing the test unless the command failed.
    #[track_caller]
    pub fn expect_err(self) -> String {
        assert!(
            !self.ok,
            "{} succeeded, expected a failure:\n{}",
            self.what, self.stdout
        );
        self.stderr
    }
}

/// Runs `cmd` to completion, with `stdin` when given.
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Run {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e} (run scripts/install-tools.sh)"));
    if let Some(input) = stdin {
        // Manifests are small (far under a pipe buffer): written whole before any output
        // is read, without a deadlock.
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what,
    }
}

/// Polls `probe` every 200 ms until it returns `Some`, failing with `what` after
/// `timeout`.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs an async helper of `common` (the admin-port client) from these synchronous tests.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// The control plane (tests/common/control_plane.rs), where the e2e tests have always
/// found it.
pub use super::control_plane::{ControlPlane, script};

/// An approver with an ed25519 key made by `ssh-keygen` (tests/common/signers.rs).
#[allow(unused_imports)]
pub use super::signers::Approver;

// ---------------------------------------------------------------------------------
// The webhook process

/// A loopback address whose port was free a moment ago, for a server that must come
/// back on the same port (a webhook registered by URL: its URL must be known before
/// `helm install` renders it and before the server, which reads the policy the install
/// made, starts). Chosen below Linux's ephemeral range (32768 and up): a port the
/// kernel handed out for `bind(0)` and that was then released can go to the next
/// outgoing connection of any test running beside this one (e2e_inbox's server once
/// found its port taken so). 20000-25999: the control plane's servers take theirs
/// from 26000-31999 (scripts/control-plane.sh).
fn free_address() -> SocketAddr {
    use std::hash::{BuildHasher, RandomState};
    let random = RandomState::new();
    for attempt in 0u32..1000 {
        let port = 20_000 + (random.hash_one(attempt) % 6_000) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free port on 127.0.0.1 between 20000 and 25999");
}

/// `blastguard serve` registered with the cluster by URL, its certificates in a
/// directory updated the way kubelet updates a Secret volume.
pub struct Webhook {
    server: Option<Server>,
    /// The test CA; its bundle is in the webhook configuration.
    pub pki: Pki,
    /// The serving certificate's volume (tls.crt, tls.key). Behind a lock so a test
    /// can rotate it while other threads send requests.
    certs: Mutex<KubeletDir>,
    /// The certificate on disk now.
    leaf: Mutex<Leaf>,
    /// The webhook's address, as in `webhook.url`.
    pub listen: SocketAddr,
    admin: SocketAddr,
    policy: PathBuf,
    signers: PathBuf,
    pid_file: PathBuf,
    /// stderr of the processes stopped so far.
    past_logs: Arc<Mutex<String>>,
    /// The cluster's kubeconfig when the server keeps its state in the cluster, as
    /// the chart's pods do (`--state cluster` in the release namespace); `None`: in
    /// its memory.
    cluster_state: Option<PathBuf>,
    /// More `serve` flags, used from the next [`Webhook::start`] on (e.g. the inbox's
    /// `--notify-url`).
    pub extra_args: Vec<String>,
}

impl Webhook {
    /// Starts the server (again) on its address with the same files.
    pub fn start(&mut self) {
        assert!(self.server.is_none(), "the webhook is already running");
        let (cert, key) = {
            let certs = self.certs.lock().unwrap();
            (certs.path("tls.crt"), certs.path("tls.key"))
        };
        let mut state = vec![];
        let mut env = vec![];
        if let Some(kubeconfig) = &self.cluster_state {
            state.extend(["--state", "cluster", "--state-namespace", "blastguard"]);
            env.push(("KUBECONFIG", kubeconfig.as_path()));
        }
        let server = Server::start_with_env(
            self.listen,
            self.admin,
            &[
                state.as_slice(),
                &[
                    "--tls-cert",
                    cert.to_str().unwrap(),
                    "--tls-key",
                    key.to_str().unwrap(),
                    "--policy",
                    self.policy.to_str().unwrap(),
                    "--allowed-signers",
                    self.signers.to_str().unwrap(),
                    // Certificate rotation is seen within 100 ms instead of 2 s.
                    "--reload-interval",
                    "100ms",
                ],
                &self
                    .extra_args
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            ]
            .concat(),
            &env,
        );
        std::fs::write(&self.pid_file, server.pid().to_string()).unwrap();
        let ready = server.admin_url("/readyz");
        wait_for(&format!("{ready} to answer 200"), WAIT, || {
            let (status, _) = block_on(admin_get(&server, "/readyz")).ok()?;
            (status == 200).then_some(())
        });
        self.server = Some(server);
    }

    /// Stops the server with SIGTERM (it drains) and waits for it to exit.
    pub fn stop(&mut self) {
        let mut server = self.server.take().expect("the webhook is not running");
        server.signal("TERM");
        let status = server.wait_exit();
        assert!(
            status.success(),
            "serve exited with {status}:\n{}",
            server.stderr()
        );
        self.past_logs.lock().unwrap().push_str(&server.stderr());
        let _ = std::fs::remove_file(&self.pid_file);
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the webhook is not running")
    }

    /// Everything the server processes logged so far.
    pub fn log(&self) -> String {
        let mut all = self.past_logs.lock().unwrap().clone();
        if let Some(server) = &self.server {
            all.push_str(&server.stderr());
        }
        all
    }

    /// The decision log lines (target `blastguard::decision`), one per review judged.
    pub fn decisions(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("blastguard::decision"))
            .map(str::to_string)
            .collect()
    }

    /// The server's /metrics text.
    pub fn metrics(&self) -> String {
        let (status, text) = block_on(admin_get(self.server(), "/metrics")).unwrap();
        assert_eq!(status, 200, "/metrics answered {status}");
        text
    }

    /// The value of one exact series (`name{labels}`), 0 when not exported yet.
    pub fn metric(&self, series: &str) -> f64 {
        metric(&self.metrics(), series).unwrap_or(0.0)
    }

    /// The sum of every series of the metric `name`, whatever their labels.
    pub fn metric_sum(&self, name: &str) -> f64 {
        metric_sum(&self.metrics(), name)
    }

    /// AdmissionReviews answered so far (`blastguard_admission_requests_total`, all labels).
    pub fn requests(&self) -> f64 {
        self.metric_sum(REQUESTS)
    }

    /// Replaces the serving certificate with a new leaf of the same CA by symlink swap,
    /// as kubelet updates a renewed Secret.
    pub fn rotate(&self, serial: u64) {
        let leaf = self.pki.leaf(serial, 2031);
        self.certs.lock().unwrap().write_leaf(&leaf);
        *self.leaf.lock().unwrap() = leaf;
    }

    /// notAfter (unix seconds) of the certificate on disk now.
    pub fn leaf_not_after(&self) -> i64 {
        self.leaf.lock().unwrap().not_after
    }

    /// The DER of the certificate on disk now.
    pub fn leaf_der(&self) -> Vec<u8> {
        self.leaf.lock().unwrap().der.clone()
    }

    /// The DER of the certificate a verifying client is served now.
    pub fn served_certificate(&self) -> Vec<u8> {
        block_on(super::served_certificate(self.server(), &self.pki.ca_pem)).unwrap()
    }
}

impl Drop for Webhook {
    /// A failing test shows what the server warned of, which its assertion cannot:
    /// CI keeps nothing but the test's output.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let log = self.log();
        let warned: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        let shown = &warned[warned.len().saturating_sub(40)..];
        eprintln!(
            "e2e: the webhook's last {} of {} warnings and errors:\n{}",
            shown.len(),
            warned.len(),
            shown.join("\n")
        );
    }
}

/// The sum of the samples of metric `name` (every label set) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = if rest.starts_with('{') {
                &rest[rest.find('}')? + 1..]
            } else {
                rest
            };
            rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
        })
        .sum()
}

// ---------------------------------------------------------------------------------
// The whole setup

/// A control plane with blastguard installed by the chart (release `blastguard` in
/// namespace `blastguard`, `webhook.url` at the local server) and two approvers in its
/// allowed_signers.
pub struct E2e {
    // Field order is drop order: the server stops before the cluster.
    /// The webhook process.
    pub webhook: Webhook,
    /// Approvers listed in allowed_signers.
    pub approvers: Vec<Approver>,
    /// A key that is not listed.
    pub outsider: Approver,
    /// Scratch directory (keys, certificates, policy, caches), inside the cluster's
    /// directory so that one removal (by the cluster's drop, or its watchdog) takes all.
    pub work: PathBuf,
    /// The cluster.
    pub cluster: ControlPlane,
}

/// The chart.
pub fn chart() -> PathBuf {
    repo().join("charts/blastguard")
}

impl E2e {
    /// Brings everything up: the control plane, then `helm install` of the chart with
    /// `webhook.url`, `certificates.mode=secret` and the approvers, then `blastguard
    /// serve` with the policy and allowed_signers read back from the ConfigMaps the
    /// chart made (the sequence of docs/install.md, "Development"), so the process
    /// enforces exactly the release's policy.
    pub fn start() -> E2e {
        Self::start_with(false)
    }

    /// [`E2e::start`] with the server's state (change sets, workload sizes, spent
    /// approvals) in the cluster, as the chart's pods keep it.
    pub fn start_with_cluster_state() -> E2e {
        Self::start_with(true)
    }

    fn start_with(cluster_state: bool) -> E2e {
        let cluster = ControlPlane::up();
        let work = cluster.dir.path().join("work");
        let keys = work.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let approvers = vec![
            Approver::new(&keys, "alice@example.com"),
            Approver::new(&keys, "bob@example.com"),
        ];
        let outsider = Approver::new(&keys, "mallory@example.com");

        let pki = Pki::new();
        let leaf = pki.leaf(1, 2030);
        let mut certs = KubeletDir::new(&work.join("tls"));
        certs.write_leaf(&leaf);
        let listen = free_address();

        let values = json!({
            "webhook": {"url": format!("https://{listen}/validate")},
            "certificates": {"mode": "secret", "secret": {"caBundle": base64(pki.ca_pem.as_bytes())}},
            "allowedSigners": {
                "entries": approvers.iter().map(Approver::allowed_signers_line).collect::<Vec<_>>()
            },
        });
        // JSON is YAML: helm reads it as a values file.
        let values_file = work.join("values.json");
        std::fs::write(&values_file, values.to_string()).unwrap();

        let mut e2e = E2e {
            webhook: Webhook {
                server: None,
                pki,
                certs: Mutex::new(certs),
                leaf: Mutex::new(leaf),
                listen,
                // Nothing registers the admin port: the kernel picks one at each start.
                admin: SocketAddr::from(([127, 0, 0, 1], 0)),
                policy: work.join("policy.yaml"),
                signers: work.join("allowed_signers"),
                pid_file: cluster.dir.path().join("serve.pid"),
                past_logs: Arc::default(),
                cluster_state: cluster_state.then(|| cluster.kubeconfig.clone()),
                extra_args: Vec::new(),
            },
            approvers,
            outsider,
            work,
            cluster,
        };
        e2e.helm(&[
            "install",
            "blastguard",
            chart().to_str().unwrap(),
            "--namespace",
            "blastguard",
            "--create-namespace",
            "-f",
            values_file.to_str().unwrap(),
        ])
        .expect_ok();
        let policy = e2e
            .kubectl(&[
                "-n",
                "blastguard",
                "get",
                "configmap",
                "blastguard-policy",
                "-o",
                "jsonpath={.data.policy\\.yaml}",
            ])
            .expect_ok();
        let signers = e2e
            .kubectl(&[
                "-n",
                "blastguard",
                "get",
                "configmap",
                "blastguard-allowed-signers",
                "-o",
                "jsonpath={.data.allowed_signers}",
            ])
            .expect_ok();
        std::fs::write(&e2e.webhook.policy, policy).unwrap();
        std::fs::write(&e2e.webhook.signers, signers).unwrap();
        e2e.webhook.start();
        e2e
    }

    /// `kubectl` as cluster-admin against this cluster.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_with(args, None)
    }

    /// `kubectl` with `input` on standard input.
    pub fn kubectl_with(&self, args: &[&str], input: Option<&str>) -> Run {
        self.cluster.kubectl(&self.work, args, input)
    }

    /// `kubectl --as USER` (cluster-admin may impersonate anyone).
    pub fn kubectl_as(&self, user: &str, args: &[&str]) -> Run {
        let mut all = vec!["--as", user];
        all.extend_from_slice(args);
        self.kubectl(&all)
    }

    /// `kubectl apply -f -` of `manifest` with `args` added (e.g. `--dry-run=server`),
    /// optionally as another user.
    pub fn apply(&self, manifest: &Value, args: &[&str], user: Option<&str>) -> Run {
        let mut all = vec![];
        if let Some(user) = user {
            all.extend(["--as", user]);
        }
        all.extend(["apply", "-f", "-"]);
        all.extend_from_slice(args);
        self.kubectl_with(&all, Some(&manifest.to_string()))
    }

    /// `helm` against this cluster, with its caches in the scratch directory.
    pub fn helm(&self, args: &[&str]) -> Run {
        self.cluster.helm(&self.work, args)
    }

    /// Creates namespaces (ignoring ones that exist).
    pub fn namespaces(&self, names: &[&str]) {
        for name in names {
            let manifest =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            self.apply(&manifest, &[], None).expect_ok();
        }
    }

    /// One field of an object, by jsonpath (`""` when the object or field is missing).
    /// `namespace` is `""` for a cluster-scoped object.
    pub fn jsonpath(&self, namespace: &str, object: &str, path: &str) -> String {
        let r = self.kubectl(&in_namespace(
            namespace,
            &["get", object, "-o", &format!("jsonpath={path}")],
        ));
        if r.ok { r.stdout } else { String::new() }
    }

    /// An object as JSON, or None when it does not exist (`namespace` `""` for a
    /// cluster-scoped one).
    pub fn get(&self, namespace: &str, object: &str) -> Option<Value> {
        let r = self.kubectl(&in_namespace(namespace, &["get", object, "-o", "json"]));
        r.ok.then(|| serde_json::from_str(&r.stdout).unwrap())
    }

    /// The items of `kubectl get KIND -o json` in a namespace.
    pub fn list(&self, namespace: &str, kind: &str) -> Vec<Value> {
        let out = self
            .kubectl(&["-n", namespace, "get", kind, "-o", "json"])
            .expect_ok();
        let list: Value = serde_json::from_str(&out).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the Deployment's controller made a ReplicaSet with `replicas` for
    /// it, and returns that ReplicaSet.
    pub fn wait_for_replicaset(&self, namespace: &str, deployment: &str, replicas: u64) -> Value {
        wait_for(
            &format!("a ReplicaSet of {namespace}/{deployment} with {replicas} replicas"),
            WAIT,
            || {
                self.list(namespace, "replicasets").into_iter().find(|rs| {
                    rs["metadata"]["ownerReferences"][0]["name"] == deployment
                        && rs["spec"]["replicas"] == replicas
                })
            },
        )
    }

    /// Reads the first line of kubectl's stderr that is an approval payload
    /// (`{"apiVersion":"blastguard.io/v1","kind":"Approval",...`).
    pub fn payload_in(stderr: &str) -> String {
        stderr
            .lines()
            .find(|l| l.starts_with(r#"{"apiVersion":"blastguard.io/v1","kind":"Approval""#))
            .unwrap_or_else(|| panic!("no approval payload in:\n{stderr}"))
            .to_string()
    }

    /// `blastguard digest -f -` of an object as the API server returns it.
    pub fn digest_of(&self, object: &Value) -> String {
        let file = self.work.join("digest-input.json");
        std::fs::write(&file, object.to_string()).unwrap();
        let (status, out, err) = super::run_to_exit(&["digest", "-f", file.to_str().unwrap()]);
        assert!(status.success(), "blastguard digest failed:\n{out}\n{err}");
        let payload: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        payload["digest"].as_str().unwrap().to_string()
    }
}

/// `-n NAMESPACE` before `args`, unless the namespace is `""`.
fn in_namespace<'a>(namespace: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = if namespace.is_empty() {
        vec![]
    } else {
        vec!["-n", namespace]
    };
    all.extend_from_slice(args);
    all
}

/// A Deployment manifest (nginx:1.27, `app: NAME`), with annotations: the shared
/// builder ([`super::objects::deployment`]) in the e2e tests' argument order.
pub fn deployment(
    namespace: &str,
    name: &str,
    replicas: u64,
    annotations: &[(&str, &str)],
) -> Value {
    let replicas = u32::try_from(replicas).expect("a replica count");
    super::objects::annotate(
        super::objects::deployment(namespace, name, replicas, "nginx:1.27"),
        annotations,
    )
}

/// Standard base64 (the chart's caBundle).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// Scenarios as steps

/// The scenarios of one test binary, run in order against one cluster. A failing step
/// is recorded and the next one still runs (each sets up what it needs or says which
/// earlier step it depends on); the test fails at [`Steps::finish`] naming every
/// failed step.
#[derive(Default)]
pub struct Steps {
    failed: Vec<String>,
    passed: usize,
}

impl Steps {
    /// Runs one step, printing its name, result and time.
    pub fn run(&mut self, name: &str, step: impl FnOnce()) {
        let t0 = Instant::now();
        eprintln!("e2e step: {name} ...");
        let result = std::panic::catch_unwind(AssertUnwindSafe(step));
        let secs = t0.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                self.passed += 1;
                eprintln!("e2e step: {name}: ok ({secs:.1}s)");
            }
            Err(_) => {
                eprintln!("e2e step: {name}: FAILED ({secs:.1}s)");
                self.failed.push(name.to_string());
            }
        }
    }

    /// Fails the test if any step failed.
    pub fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{} of {} steps failed: {:#?}",
            self.failed.len(),
            self.failed.len() + self.passed,
            self.failed
        );
    }
}
