//! Helpers for the server tests: certificates, the server process, clients that stand
//! in for the Kubernetes API server, AdmissionReview bodies, and polling.
//!
//! The tests that use these clients stand in for the API server (they say so in their
//! headers): the clients behave as it does when it calls a webhook, AdmissionReview v1
//! over TLS verified against the CA bundle, `POST /validate?timeout=10s`, HTTP/2 where
//! ALPN negotiates it. The end-to-end tests (`cluster`, tests/e2e_*.rs) run a real
//! kube-apiserver instead.

#![allow(dead_code)]

/// The approval tests' keys, engine and reviews (tests/approvals_*.rs).
pub mod approvals;
/// The Helm chart: `helm template`, the rendered objects, matchConditions in CEL.
pub mod chart;
/// The end-to-end harness: a real control plane, kubectl and helm (tests/e2e_*.rs).
pub mod cluster;
/// Replicas run as the chart's ServiceAccount (tests/e2e_cluster_state.rs).
pub mod cluster_state;
/// The control plane itself: start, kubectl, helm, stop.
pub mod control_plane;
/// The same with a node: the chart's pods run blastguard's image (tests/e2e_node.rs).
pub mod node;
/// Kubernetes objects: one Deployment builder, annotations, approvals.
pub mod objects;
/// The kubectl plugin through the real kubectl.
pub mod plugin;
/// A local HTTP receiver of notifications (tests/notify.rs, tests/e2e_inbox.rs).
pub mod receiver;
/// An OCI registry on loopback (tests/release.rs pushes, tests/e2e_node.rs pulls).
pub mod registry;
/// `blastguard serve --state cluster` replicas on the local control plane.
pub mod replica;
/// AdmissionReviews as the API server sends them.
pub mod review;
/// Reading the engine's answers.
pub mod reviewed;
/// Approvers' keys and signatures with the real ssh-keygen.
pub mod signers;
/// People and AI agents, each with a kubeconfig, on the real control plane.
pub mod users;

use std::ffi::OsStr;
use std::fmt::Debug;
use std::io::{BufRead as _, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use serde_json::Value;

/// Generous bound for anything a loaded 2-core machine should finish.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The checkout (scripts, chart, `.tools/bin`).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A command for a tool, `.tools/bin` (scripts/install-tools.sh) first on its PATH:
/// the machine's own kubectl is too old for the v1.35 API server, and helm, promtool
/// and kubernetes-validate are installed there.
pub fn tool(program: &str) -> Command {
    tool_with(program, &[])
}

/// [`tool`] with the directories `extra` ahead of `.tools/bin` on its PATH.
pub fn tool_with(program: &str, extra: &[&Path]) -> Command {
    let mut paths: Vec<PathBuf> = extra.iter().map(|p| p.to_path_buf()).collect();
    paths.push(repo().join(".tools/bin"));
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path = std::env::join_paths(paths).expect("PATH entries are valid");
    // Resolved here, so a missing tool fails with its name and the fix, not with a
    // bare "No such file or directory".
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed: run scripts/install-tools.sh"));
    let mut cmd = Command::new(found);
    cmd.env("PATH", path);
    cmd
}

/// The ring provider for every client in the tests, as the server uses.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

// ---------------------------------------------------------------------------------
// Certificates

/// A test CA that issues serving certificates for 127.0.0.1 and localhost.
pub struct Pki {
    /// The CA certificate (the API server's caBundle).
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A serving certificate and its key.
pub struct Leaf {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: String,
    /// DER of the certificate, to recognise it when served.
    pub der: Vec<u8>,
    /// notAfter as unix seconds.
    pub not_after: i64,
}

impl Pki {
    /// A fresh CA.
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "blastguard test CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for 127.0.0.1 and localhost with the given serial, valid until Jan 1st
    /// of `expiry_year`.
    pub fn leaf(&self, serial: u64, expiry_year: i32) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("blastguard test leaf {serial}"));
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_after = rcgen::date_time_ymd(expiry_year, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            not_after: params.not_after.unix_timestamp(),
        }
    }
}

/// A directory updated the way the kubelet updates Secret and ConfigMap volumes:
/// files live in a timestamped directory, `..data` points at it, and each visible
/// name is a symlink through `..data`. An update writes a new directory and renames a
/// new `..data` symlink over the old one, then removes the old directory.
pub struct KubeletDir {
    dir: PathBuf,
    generation: u32,
    current: Option<String>,
}

impl KubeletDir {
    /// An empty volume directory at `dir` (created).
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        Self {
            dir: dir.to_path_buf(),
            generation: 0,
            current: None,
        }
    }

    /// The visible path of a file.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Atomically replaces the whole volume content.
    pub fn write(&mut self, files: &[(&str, &[u8])]) {
        self.generation += 1;
        let data_dir = format!("..2026_11_22_10_00_{:02}.{:09}", self.generation, 1);
        std::fs::create_dir(self.dir.join(&data_dir)).unwrap();
        for (name, bytes) in files {
            std::fs::write(self.dir.join(&data_dir).join(name), bytes).unwrap();
        }
        symlink(&data_dir, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        for (name, _) in files {
            let link = self.dir.join(name);
            if link.symlink_metadata().is_err() {
                symlink(Path::new("..data").join(name), link).unwrap();
            }
        }
        if let Some(old) = self.current.replace(data_dir) {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }

    /// Writes a certificate pair as `tls.crt` and `tls.key`.
    pub fn write_leaf(&mut self, leaf: &Leaf) {
        self.write(&[
            ("tls.crt", leaf.cert_pem.as_bytes()),
            ("tls.key", leaf.key_pem.as_bytes()),
        ]);
    }
}

// ---------------------------------------------------------------------------------
// The server process

/// A running `blastguard serve`, killed when dropped if still running.
pub struct Server {
    child: Child,
    /// The HTTPS webhook address.
    pub webhook: SocketAddr,
    /// The admin port address.
    pub admin: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

/// Collects a child's output on a thread, so the child never blocks on a full pipe.
/// Collects a child's output stream, line by line, on a thread of its own.
pub fn capture(stream: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut t = sink.lock().unwrap();
            t.push_str(&line);
            t.push('\n');
        }
    });
    text
}

/// Spawns `cmd` with its standard output and error piped and collected by
/// [`capture`]: the child, what it printed on each so far.
pub fn spawn_captured(cmd: &mut Command) -> (Child, Arc<Mutex<String>>, Arc<Mutex<String>>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = capture(child.stdout.take().unwrap());
    let stderr = capture(child.stderr.take().unwrap());
    (child, stdout, stderr)
}

/// The `blastguard` binary under test.
pub fn blastguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blastguard"))
}

/// Runs `blastguard` to completion (with a bound) and returns status, stdout, stderr.
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    run_to_exit_with(args, &[])
}

/// Runs `blastguard ARGS` with `envs` set to completion: (exited 0, stdout, stderr).
pub fn run_blastguard<S: AsRef<OsStr> + Debug>(
    args: &[S],
    envs: &[(&str, &Path)],
) -> (bool, String, String) {
    let (status, stdout, stderr) = run_to_exit_with(args, envs);
    (status.success(), stdout, stderr)
}

/// [`run_to_exit`] with environment variables set; standard input is empty.
pub fn run_to_exit_with<S: AsRef<OsStr> + Debug>(
    args: &[S],
    envs: &[(&str, &Path)],
) -> (ExitStatus, String, String) {
    let (mut child, stdout, stderr) = spawn_captured(
        blastguard()
            .args(args)
            .envs(envs.iter().map(|(k, v)| (*k, *v)))
            .stdin(Stdio::null()),
    );
    let status = wait_child(&mut child, PATIENCE).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("blastguard {args:?} did not exit");
    });
    // The capture threads end at EOF, which follows the exit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&stdout) > 1 || Arc::strong_count(&stderr) > 1 {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = stdout.lock().unwrap().clone();
    let err = stderr.lock().unwrap().clone();
    (status, out, err)
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address after `prefix` on a line of `text`, up to the next `/`, space or end.
/// The address printed after `prefix` on some line of `text`.
pub fn address_after(text: &str, prefix: &str) -> Option<SocketAddr> {
    text.lines().find_map(|line| {
        let rest = line.split(prefix).nth(1)?;
        let end = rest.find(['/', ' ']).unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

impl Server {
    /// Starts `blastguard serve` on loopback ports chosen by the kernel, with `args`
    /// added, and waits until it printed both addresses.
    pub fn start(args: &[&str]) -> Server {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Server::start_at(any, any, args)
    }

    /// Starts `blastguard serve` on the given addresses (port 0: one the kernel
    /// chooses), and waits until it printed both. A webhook registered by URL must
    /// come back on its own port.
    pub fn start_at(listen: SocketAddr, admin: SocketAddr, args: &[&str]) -> Server {
        Server::start_with_env(listen, admin, args, &[])
    }

    /// [`Server::start_at`] with environment variables set for the process.
    pub fn start_with_env(
        listen: SocketAddr,
        admin: SocketAddr,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Server {
        let (mut child, stdout, stderr) = spawn_captured(
            blastguard()
                .envs(env.iter().map(|(k, v)| (*k, *v)))
                .arg("serve")
                .args([
                    "--listen",
                    &listen.to_string(),
                    "--admin-listen",
                    &admin.to_string(),
                ])
                .args(args),
        );
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = stdout.lock().unwrap().clone();
            let webhook = address_after(&out, "webhook listening on https://");
            let admin = address_after(&out, "admin listening on http://");
            if let (Some(webhook), Some(admin)) = (webhook, admin) {
                return Server {
                    child,
                    webhook,
                    admin,
                    stdout,
                    stderr,
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "server exited early with {status}\nstdout:\n{out}\nstderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "server printed no addresses\nstdout:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a server serving `leaf` from plain files in `dir`.
    pub fn start_with_leaf(dir: &Path, leaf: &Leaf, args: &[&str]) -> Server {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, &leaf.cert_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        let mut all = vec![
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        Server::start(&all)
    }

    /// What the server printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// What the server logged on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends a signal (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_child(&mut self.child, PATIENCE).unwrap_or_else(|| {
            panic!("server did not exit\nstderr:\n{}", self.stderr());
        })
    }

    /// The `https://127.0.0.1:PORT` base of the webhook.
    pub fn webhook_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.webhook)
    }

    /// The admin URL of `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------
// Clients

/// The HTTP version a client stands in for the API server with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    /// HTTP/1.1 only (ALPN offers only http/1.1).
    One,
    /// HTTP/2, negotiated by ALPN.
    Two,
}

impl Http {
    /// The version a response must have come with.
    pub fn version(self) -> reqwest::Version {
        match self {
            Http::One => reqwest::Version::HTTP_11,
            Http::Two => reqwest::Version::HTTP_2,
        }
    }
}

/// An HTTPS client that trusts only `ca_pem`, as the API server trusts only the
/// webhook's caBundle.
pub fn webhook_client(ca_pem: &str, http: Http) -> reqwest::Client {
    webhook_client_builder(ca_pem, http).build().unwrap()
}

/// The builder of [`webhook_client`], for tweaks.
pub fn webhook_client_builder(ca_pem: &str, http: Http) -> reqwest::ClientBuilder {
    install_crypto();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(30));
    match http {
        Http::One => builder.http1_only(),
        Http::Two => builder,
    }
}

/// A plain HTTP client for the admin port.
pub fn admin_client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A response as read by a test.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Negotiated HTTP version.
    pub version: reqwest::Version,
    /// Content-Type, if any.
    pub content_type: String,
    /// The body as text.
    pub text: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// The `response` of an AdmissionReview answered with 200 and JSON, as the API server
/// reads it; the test fails on anything else.
pub fn response(answer: &Answer) -> Value {
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.content_type, "application/json");
    let review = answer.json();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    review["response"].clone()
}

/// Sends `body` as the API server does: `POST /validate?timeout=10s`.
pub async fn post_review(
    client: &reqwest::Client,
    server: &Server,
    body: Vec<u8>,
) -> Result<Answer, reqwest::Error> {
    post_review_at(client, &server.webhook_url("/validate?timeout=10s"), body).await
}

/// Sends `body` to the webhook at `url` (a replica's `/validate`): whether it
/// allowed the request, and its message ("allowed" when it gives none).
pub async fn verdict_at(client: &reqwest::Client, url: &str, body: Vec<u8>) -> (bool, String) {
    let answer = post_review_at(client, url, body).await.expect("an answer");
    let response = response(&answer);
    (
        response["allowed"] == true,
        response["status"]["message"]
            .as_str()
            .unwrap_or("allowed")
            .to_string(),
    )
}

/// POSTs an AdmissionReview `body` to `url` (a webhook's `/validate`) as the API
/// server does, and reads the answer.
pub async fn post_review_at(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> Result<Answer, reqwest::Error> {
    send(
        client
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, */*")
            .body(body),
    )
    .await
}

/// Sends any request and reads the answer.
pub async fn send(request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let version = response.version();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await?;
    Ok(Answer {
        status,
        version,
        content_type,
        text,
    })
}

/// GETs an admin path: (status, body).
pub async fn admin_get(server: &Server, path: &str) -> Result<(u16, String), reqwest::Error> {
    let response = admin_client().get(server.admin_url(path)).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// The value of one exact series (`name{labels}`) in a Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The current value of a series on the server's /metrics.
pub async fn server_metric(server: &Server, series: &str) -> Option<f64> {
    let (_, text) = admin_get(server, "/metrics").await.ok()?;
    metric(&text, series)
}

/// A TLS client config trusting only `ca_pem`, offering the given ALPN protocols.
pub fn tls_client_config(ca_pem: &str, alpn: &[&[u8]]) -> rustls::ClientConfig {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Opens a verified TLS connection to the webhook as 127.0.0.1.
pub async fn tls_connect(
    server: &Server,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(ca_pem, alpn)));
    let tcp = tokio::net::TcpStream::connect(server.webhook).await?;
    let name = rustls_pki_types::ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    connector.connect(name, tcp).await
}

/// The DER of the certificate the webhook serves now, read by a verifying TLS client.
pub async fn served_certificate(server: &Server, ca_pem: &str) -> std::io::Result<Vec<u8>> {
    let stream = tls_connect(server, ca_pem, &[b"http/1.1"]).await?;
    let (_, connection) = stream.get_ref();
    connection
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| std::io::Error::other("no peer certificate"))
}

// ---------------------------------------------------------------------------------
// AdmissionReview bodies (tests/common/review.rs), under the names the tests use.

// Each test binary uses some of them.
#[allow(unused_imports)]
pub use review::{AI, DeploymentCreate, ai_deployment_in_prod, plain_deployment_in_prod, uid};

// ---------------------------------------------------------------------------------
// Polling

/// Polls `probe` until it returns `Some`, panicking with `what` after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
