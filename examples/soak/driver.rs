//! The soak driver, shared by `examples/soak` (any duration, `scripts/soak.sh`) and
//! `tests/soak.rs` (two minutes in the test suite).
//!
//! It runs the real `blastguard serve` on 127.0.0.1 only, with files laid out as the
//! kubelet lays out Secret and ConfigMap volumes, and for the whole run:
//!
//! - sends reviews as the API server does (AdmissionReview v1 over TLS verified against
//!   the CA, `POST /validate?timeout=10s`, HTTP/2 and HTTP/1.1, some on fresh
//!   connections): people's changes, AI changes allowed, denied and approved (signed
//!   with `blastguard approve` by a key in allowed_signers), and malformed bodies,
//!   each answer checked against what it must be;
//! - rotates the certificate (a new leaf, swapped in by symlink) and checks the new one
//!   is served; rewrites the policy between two versions that judge a probe namespace
//!   differently (and now and then an invalid one, which must be refused) and checks
//!   the right one is in force; rewrites allowed_signers (also now and then invalid)
//!   and checks approvals still verify;
//! - reads the server's RSS and open file descriptors after a warm-up and at the end.
//!
//! The request bodies start from `tests/fixtures`, reviews made from real `kubectl`
//! objects.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `blastguard` binary.
    pub blastguard: PathBuf,
    /// How long the load runs.
    pub duration: Duration,
    /// Reviews per second, in all (the workers pace themselves to it).
    pub rate: f64,
    /// Concurrent senders.
    pub workers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            blastguard: PathBuf::from(
                std::env::var("BLASTGUARD_BIN")
                    .unwrap_or_else(|_| "target/release/blastguard".into()),
            ),
            duration: Duration::from_secs(120),
            rate: 200.0,
            workers: 8,
        }
    }
}

/// Everything the soak saw.
#[derive(Debug, Default)]
pub struct Report {
    pub duration: Duration,
    pub rate: f64,
    pub workers: usize,
    /// Well-formed reviews sent, by kind.
    pub sent: BTreeMap<&'static str, u64>,
    /// Well-formed reviews not answered exactly as they must be.
    pub errors: u64,
    pub error_examples: Vec<String>,
    /// Malformed bodies sent, and those not answered with a 400 (or a 200 denial with
    /// code 400 when the uid could be read).
    pub malformed: u64,
    pub malformed_unexpected: u64,
    pub http2: u64,
    pub http1: u64,
    pub fresh_connections: u64,
    /// Latency of well-formed reviews, measured around each call.
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub cert_rotations: u64,
    pub cert_checks_failed: u64,
    pub policy_writes: u64,
    pub policy_invalid_writes: u64,
    pub policy_checks_failed: u64,
    pub signers_writes: u64,
    pub signers_invalid_writes: u64,
    pub signers_checks_failed: u64,
    pub check_failures: Vec<String>,
    pub rss_start_kb: u64,
    pub rss_end_kb: u64,
    pub rss_peak_kb: u64,
    pub fds_start: u64,
    pub fds_end: u64,
    pub panics: f64,
    pub server_exit: Option<i32>,
}

impl Report {
    /// Well-formed reviews sent.
    pub fn well_formed(&self) -> u64 {
        self.sent.values().sum()
    }

    /// What went wrong, if anything.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.errors > 0 {
            out.push(format!(
                "{} well-formed reviews answered wrongly, e.g. {:?}",
                self.errors, self.error_examples
            ));
        }
        if self.malformed_unexpected > 0 {
            out.push(format!(
                "{} malformed bodies answered unexpectedly",
                self.malformed_unexpected
            ));
        }
        let checks =
            self.cert_checks_failed + self.policy_checks_failed + self.signers_checks_failed;
        if checks > 0 {
            out.push(format!(
                "{checks} reload checks failed: {:?}",
                self.check_failures
            ));
        }
        if self.panics > 0.0 {
            out.push(format!("{} panics", self.panics));
        }
        if self.server_exit != Some(0) {
            out.push(format!(
                "the server exited with {:?} after SIGTERM",
                self.server_exit
            ));
        }
        out
    }

    /// Whether the soak passed.
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        json!({
            "durationSeconds": self.duration.as_secs_f64(),
            "rate": self.rate,
            "workers": self.workers,
            "wellFormed": self.well_formed(),
            "sent": self.sent,
            "errors": self.errors,
            "errorExamples": self.error_examples,
            "malformed": self.malformed,
            "malformedUnexpected": self.malformed_unexpected,
            "http2": self.http2,
            "http1": self.http1,
            "freshConnections": self.fresh_connections,
            "p50Ms": ms(self.p50),
            "p99Ms": ms(self.p99),
            "maxMs": ms(self.max),
            "certRotations": self.cert_rotations,
            "certChecksFailed": self.cert_checks_failed,
            "policyWrites": self.policy_writes,
            "policyInvalidWrites": self.policy_invalid_writes,
            "policyChecksFailed": self.policy_checks_failed,
            "signersWrites": self.signers_writes,
            "signersInvalidWrites": self.signers_invalid_writes,
            "signersChecksFailed": self.signers_checks_failed,
            "checkFailures": self.check_failures,
            "rssStartKb": self.rss_start_kb,
            "rssEndKb": self.rss_end_kb,
            "rssPeakKb": self.rss_peak_kb,
            "fdsStart": self.fds_start,
            "fdsEnd": self.fds_end,
            "panics": self.panics,
            "serverExit": self.server_exit,
        })
        .to_string()
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = |kb: u64| kb as f64 / 1024.0;
        writeln!(
            f,
            "soak: {} on 127.0.0.1, {} workers, {} reviews/s asked",
            humantime::format_duration(Duration::from_secs(self.duration.as_secs())),
            self.workers,
            self.rate
        )?;
        writeln!(
            f,
            "requests: {} ({} well-formed: {}; {} malformed)",
            self.well_formed() + self.malformed,
            self.well_formed(),
            self.sent
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.malformed
        )?;
        writeln!(
            f,
            "errors: {} among well-formed requests; malformed answered otherwise than 400: {}",
            self.errors, self.malformed_unexpected
        )?;
        writeln!(
            f,
            "protocols: HTTP/2 {}, HTTP/1.1 {} ({} on a fresh TLS connection)",
            self.http2, self.http1, self.fresh_connections
        )?;
        writeln!(
            f,
            "latency (well-formed, client side): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )?;
        writeln!(
            f,
            "underneath: certificate rotated {} times (new one served every time: {}), policy rewritten {} times ({} invalid, refused; right policy in force every time: {}), allowed_signers rewritten {} times ({} invalid, refused; approvals verified after each: {})",
            self.cert_rotations,
            yes(self.cert_checks_failed),
            self.policy_writes,
            self.policy_invalid_writes,
            yes(self.policy_checks_failed),
            self.signers_writes,
            self.signers_invalid_writes,
            yes(self.signers_checks_failed),
        )?;
        writeln!(
            f,
            "server: RSS {:.1} MB -> {:.1} MB (peak {:.1} MB), open fds {} -> {}, panics {}, exit after SIGTERM {:?}",
            mb(self.rss_start_kb),
            mb(self.rss_end_kb),
            mb(self.rss_peak_kb),
            self.fds_start,
            self.fds_end,
            self.panics,
            self.server_exit
        )?;
        write!(
            f,
            "result: {}",
            if self.passed() {
                "PASS".to_string()
            } else {
                format!("FAIL: {}", self.failures().join("; "))
            }
        )
    }
}

fn yes(failed: u64) -> String {
    if failed == 0 {
        "yes".into()
    } else {
        format!("no, {failed} failed")
    }
}

// ---------------------------------------------------------------------------------
// Files as the kubelet writes them

/// A Secret or ConfigMap volume: files in a timestamped directory behind `..data`,
/// each visible name a symlink through it; an update swaps `..data` atomically.
struct Volume {
    dir: PathBuf,
    generation: u64,
    current: Option<String>,
}

impl Volume {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).expect("volume dir");
        Self {
            dir,
            generation: 0,
            current: None,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&mut self, files: &[(&str, &[u8])]) {
        self.generation += 1;
        let data_dir = format!("..2026_12_01_00_00_00.{:09}", self.generation);
        std::fs::create_dir(self.dir.join(&data_dir)).expect("data dir");
        for (name, bytes) in files {
            std::fs::write(self.dir.join(&data_dir).join(name), bytes).expect("write");
        }
        symlink(&data_dir, self.dir.join("..data_tmp")).expect("symlink");
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).expect("swap");
        for (name, _) in files {
            let link = self.dir.join(name);
            if link.symlink_metadata().is_err() {
                symlink(Path::new("..data").join(name), link).expect("link");
            }
        }
        if let Some(old) = self.current.replace(data_dir) {
            let _ = std::fs::remove_dir_all(self.dir.join(old));
        }
    }
}

// ---------------------------------------------------------------------------------
// Certificates

struct Pki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "blastguard soak CA");
        params.distinguished_name = dn;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).expect("CA");
        Self {
            ca_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A serving certificate for 127.0.0.1: (cert PEM, key PEM, DER).
    fn leaf(&self, serial: u64) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

fn tls_config(ca_pem: &str) -> rustls::ClientConfig {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The DER of the certificate the webhook serves now, read by a verifying client.
async fn served_certificate(addr: SocketAddr, ca_pem: &str) -> Option<Vec<u8>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(ca_pem)));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let stream = connector.connect(name, tcp).await.ok()?;
    stream
        .get_ref()
        .1
        .peer_certificates()?
        .first()
        .map(|c| c.to_vec())
}

// ---------------------------------------------------------------------------------
// The server

struct Server {
    child: Child,
    webhook: SocketAddr,
    admin: SocketAddr,
}

impl Server {
    fn start(blastguard: &Path, args: &[String], log: &Path) -> Server {
        let log = std::fs::File::create(log).expect("log file");
        let mut child = Command::new(blastguard)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", blastguard.display()));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut webhook, mut admin) = (None, None);
        let address = |line: &str, prefix: &str| -> Option<SocketAddr> {
            let rest = line.split(prefix).nth(1)?;
            rest.split(['/', ' ']).next()?.parse().ok()
        };
        while webhook.is_none() || admin.is_none() {
            let line = lines
                .next()
                .expect("the server printed its addresses")
                .expect("stdout");
            webhook = webhook.or(address(&line, "webhook listening on https://"));
            admin = admin.or(address(&line, "admin listening on http://"));
        }
        // Keeps reading stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            webhook: webhook.expect("webhook"),
            admin: admin.expect("admin"),
        }
    }

    /// (RSS kB, peak RSS kB, open fds).
    fn resources(&self) -> (u64, u64, u64) {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
        (field("VmRSS:"), field("VmHWM:"), fds)
    }

    fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

async fn metric(client: &reqwest::Client, admin: SocketAddr, series: &str) -> Option<f64> {
    let text = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits (at most 10 s) until `series` on /metrics exceeds `above`.
async fn metric_above(
    client: &reqwest::Client,
    admin: SocketAddr,
    series: &str,
    above: f64,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if metric(client, admin, series)
            .await
            .is_some_and(|v| v > above)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

// ---------------------------------------------------------------------------------
// Requests

/// What a request must be answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allowed,
    Denied,
    /// HTTP 400, or a 200 denial with status code 400 when the uid could be read.
    Malformed,
}

/// A kind of request: a review to send (its uid replaced each time) and its answer.
struct Template {
    kind: &'static str,
    review: Value,
    expect: Expect,
    /// A different requester each time, so change sets do not add up across requests.
    fresh_user: bool,
}

/// A CronJob review run once a day: one run within the change-set window, so one pod
/// (the fixture's `*/5` starts 12 runs an hour, over the default limit).
fn daily(mut review: Value) -> Value {
    review["request"]["object"]["spec"]["schedule"] = Value::from("0 3 * * *");
    review
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture JSON")
}

fn dry_run(mut review: Value) -> Value {
    review["request"]["dryRun"] = json!(true);
    review
}

/// A review with the approval `blastguard approve --review` signs for it, as its
/// annotations (on the old object for a DELETE), signed by each key in turn: the
/// first signs a new approval, the others add their signatures to it (the protected
/// rule wants two approvers).
fn approved(
    blastguard: &Path,
    review: &Value,
    keys: &[PathBuf],
    ttl: Duration,
    dir: &Path,
) -> Value {
    let mut review = review.clone();
    let on = if review["request"]["operation"] == "DELETE" {
        "oldObject"
    } else {
        "object"
    };
    for key in keys {
        let file = dir.join("to-approve.json");
        std::fs::write(&file, review.to_string()).expect("write review");
        let out = Command::new(blastguard)
            .args(["approve", "--review", "-f"])
            .arg(&file)
            .arg("--key")
            .arg(key)
            .args(["--ttl", &format!("{}s", ttl.as_secs()), "--reason", "soak"])
            .output()
            .expect("blastguard approve");
        assert!(
            out.status.success(),
            "approve: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let annotations: BTreeMap<String, String> =
            serde_yaml::from_slice(&out.stdout).expect("approve prints the annotations as YAML");
        let meta = &mut review["request"][on]["metadata"];
        if meta.get("annotations").is_none_or(Value::is_null) {
            meta["annotations"] = json!({});
        }
        for (k, v) in annotations {
            meta["annotations"][k] = json!(v);
        }
    }
    review
}

/// The probe of the policy in force: an AI Deployment of 5 replicas in `soak-probe`,
/// which one policy version allows and the other denies.
fn policy_probe() -> Value {
    let mut review = dry_run(fixture("deployment-create-ai-prod.json"));
    let request = &mut review["request"];
    request["namespace"] = json!("soak-probe");
    request["object"]["metadata"]["namespace"] = json!("soak-probe");
    request["object"]["spec"]["replicas"] = json!(5);
    review
}

fn policy_version(base: &str, max_pods: u32) -> String {
    let rule = format!(
        "    - name: soak-probe\n      namespaces: [soak-probe]\n      limits: {{maxPodsAffected: {max_pods}}}\n"
    );
    let mut out = String::new();
    for line in base.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("  rules:") {
            out.push_str(&rule);
        }
    }
    assert!(
        out.contains("soak-probe"),
        "the default policy has a rules list"
    );
    out
}

/// Malformed bodies: not JSON, JSON that is no review, a review of another version
/// (uid readable), a review without a request, and nothing at all.
fn malformed(n: u64) -> Vec<u8> {
    match n % 5 {
        0 => b"{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": ".to_vec(),
        1 => b"[1, 2, 3]".to_vec(),
        2 => json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                    "request": {"uid": format!("malformed-{n}")}})
        .to_string()
        .into_bytes(),
        3 => json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})
            .to_string()
            .into_bytes(),
        _ => Vec::new(),
    }
}

/// Checks an answer; `Err` says what is wrong.
fn check(expect: Expect, uid: &str, status: u16, body: &[u8]) -> Result<(), String> {
    if expect == Expect::Malformed {
        if status == 400 {
            return Ok(());
        }
        let review: Value = serde_json::from_slice(body).map_err(|e| format!("{status}: {e}"))?;
        let r = &review["response"];
        return (status == 200 && r["allowed"] == false && r["status"]["code"] == 400)
            .then_some(())
            .ok_or_else(|| format!("malformed answered {status}: {review}"));
    }
    if status != 200 {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    let review: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let r = &review["response"];
    if r["uid"] != uid {
        return Err(format!("uid {} for {uid}", r["uid"]));
    }
    let allowed = r["allowed"] == true;
    match expect {
        Expect::Allowed if allowed => Ok(()),
        Expect::Denied if !allowed && r["status"]["code"] == 403 => Ok(()),
        _ => Err(format!("expected {expect:?}, got {}", r)),
    }
}

/// A small deterministic generator, so a run's mix can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Default)]
struct Tally {
    sent: BTreeMap<&'static str, u64>,
    errors: u64,
    error_examples: Vec<String>,
    malformed: u64,
    malformed_unexpected: u64,
    http2: u64,
    http1: u64,
    fresh: u64,
    micros: Vec<u32>,
}

struct Clients {
    http2: reqwest::Client,
    http1: reqwest::Client,
    fresh: reqwest::Client,
}

impl Clients {
    fn new(ca_pem: &str) -> Self {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA");
        let builder = || {
            reqwest::Client::builder()
                .tls_certs_only([ca.clone()])
                .timeout(Duration::from_secs(10))
        };
        Self {
            // ALPN offers h2 first; the server picks it.
            http2: builder().build().expect("client"),
            http1: builder().http1_only().build().expect("client"),
            fresh: builder()
                .http1_only()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client"),
        }
    }
}

/// One worker: sends paced requests until `stop`.
#[allow(clippy::too_many_arguments)]
async fn worker(
    id: u64,
    url: String,
    templates: Arc<Vec<Template>>,
    clients: Arc<Clients>,
    pace: Duration,
    stop: Arc<AtomicBool>,
    counter: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> Tally {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut tally = Tally::default();
    let mut tick = tokio::time::interval(pace);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let uid = format!("50a50a50-{:04x}-4000-8000-{n:012x}", id & 0xffff);
        // One request in 20 is malformed; the others pick a template.
        let (kind, expect, body) = if rng.next().is_multiple_of(20) {
            ("malformed", Expect::Malformed, malformed(n))
        } else {
            let t = &templates[(rng.next() % templates.len() as u64) as usize];
            let mut review = t.review.clone();
            review["request"]["uid"] = json!(uid);
            if t.fresh_user {
                review["request"]["userInfo"]["username"] =
                    json!(format!("soak-user-{n}@example.com"));
            }
            (t.kind, t.expect, serde_json::to_vec(&review).expect("JSON"))
        };
        let (client, label) = match rng.next() % 20 {
            0 => (&clients.fresh, "fresh"),
            1..=9 => (&clients.http2, "h2"),
            _ => (&clients.http1, "h1"),
        };
        let started = Instant::now();
        let answer = async {
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, */*")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = response.status().as_u16();
            let version = response.version();
            let body = response.bytes().await.map_err(|e| format!("{e:?}"))?;
            Ok::<_, String>((status, version, body))
        }
        .await;
        let took = started.elapsed();
        let verdict = answer.and_then(|(status, version, body)| {
            let want = if label == "h2" {
                reqwest::Version::HTTP_2
            } else {
                reqwest::Version::HTTP_11
            };
            if version != want {
                return Err(format!("{version:?} instead of {want:?}"));
            }
            check(expect, &uid, status, &body)
        });
        match label {
            "h2" => tally.http2 += 1,
            "fresh" => {
                tally.http1 += 1;
                tally.fresh += 1
            }
            _ => tally.http1 += 1,
        }
        if expect == Expect::Malformed {
            tally.malformed += 1;
            if verdict.is_err() {
                tally.malformed_unexpected += 1;
            }
            continue;
        }
        *tally.sent.entry(kind).or_default() += 1;
        tally
            .micros
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        if let Err(e) = verdict {
            tally.errors += 1;
            failed.fetch_add(1, Ordering::Relaxed);
            if tally.error_examples.len() < 5 {
                tally
                    .error_examples
                    .push(format!("{kind} over {label}: {e}"));
            }
        }
    }
    tally
}

/// Changes the certificate, the policy and allowed_signers underneath the server
/// until `stop`, checking after each change that it took effect (or, for an invalid
/// file, that the last good one stayed).
#[allow(clippy::too_many_arguments)]
async fn mutator(
    server: (SocketAddr, SocketAddr),
    pki: Arc<Pki>,
    certs: Arc<Mutex<Volume>>,
    policies: (Arc<Mutex<Volume>>, String),
    signers: (Arc<Mutex<Volume>>, String),
    approved_probe: Value,
    clients: Arc<Clients>,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<Report>>,
) {
    let (webhook, admin) = server;
    let plain = reqwest::Client::new();
    let url = format!("https://{webhook}/validate?timeout=10s");
    let failed = |what: &str, detail: String| {
        let mut r = report.lock().expect("report");
        if r.check_failures.len() < 10 {
            r.check_failures.push(format!("{what}: {detail}"));
        }
    };
    let probe = |review: Value, expect: Expect| {
        let (clients, url) = (clients.clone(), url.clone());
        async move {
            let uid = format!("7e57e57e-0000-4000-8000-{:012x}", rand_tag());
            let mut review = review;
            review["request"]["uid"] = json!(uid);
            let response = clients
                .http2
                .post(&url)
                .body(review.to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response.bytes().await.map_err(|e| e.to_string())?;
            check(expect, &uid, status, &body)
        }
    };
    let mut step = 0u64;
    let mut serial = 1u64;
    let mut policy_version_allows = true;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        step += 1;
        if step.is_multiple_of(2) {
            serial += 1;
            let (cert, key, der) = pki.leaf(serial);
            let before = metric(
                &plain,
                admin,
                "blastguard_tls_cert_reloads_total{result=\"success\"}",
            )
            .await
            .unwrap_or(0.0);
            certs
                .lock()
                .expect("certs")
                .write(&[("tls.crt", cert.as_bytes()), ("tls.key", key.as_bytes())]);
            report.lock().expect("report").cert_rotations += 1;
            let ok = metric_above(
                &plain,
                admin,
                "blastguard_tls_cert_reloads_total{result=\"success\"}",
                before,
            )
            .await
                && served_certificate(webhook, &pki.ca_pem)
                    .await
                    .is_some_and(|d| d == der);
            if !ok {
                report.lock().expect("report").cert_checks_failed += 1;
                failed(
                    "certificate",
                    format!("serial {serial} not served after its reload"),
                );
            }
        }
        if step.is_multiple_of(3) {
            let invalid = step.is_multiple_of(15);
            let (series, text) = if invalid {
                (
                    "blastguard_policy_reloads_total{result=\"failure\"}",
                    policies.1.replace("maxTTL: 24h", "maxTTL: forever"),
                )
            } else {
                policy_version_allows = !policy_version_allows;
                (
                    "blastguard_policy_reloads_total{result=\"success\"}",
                    policy_version(&policies.1, if policy_version_allows { 100 } else { 0 }),
                )
            };
            let before = metric(&plain, admin, series).await.unwrap_or(0.0);
            policies
                .0
                .lock()
                .expect("policies")
                .write(&[("policy.yaml", text.as_bytes())]);
            {
                let mut r = report.lock().expect("report");
                r.policy_writes += 1;
                r.policy_invalid_writes += u64::from(invalid);
            }
            let expect = if policy_version_allows {
                Expect::Allowed
            } else {
                Expect::Denied
            };
            let result = if metric_above(&plain, admin, series, before).await {
                probe(policy_probe(), expect).await
            } else {
                Err(format!("no reload counted in {series}"))
            };
            if let Err(e) = result {
                report.lock().expect("report").policy_checks_failed += 1;
                failed("policy", e);
            }
        }
        if step.is_multiple_of(5) {
            let invalid = step.is_multiple_of(25);
            let base = &signers.1;
            let text = if invalid {
                format!("{base}soak-broken@example.com ssh-ed25519 NOT-BASE64!\n")
            } else if step.is_multiple_of(10) {
                format!("# approvers, rewritten at step {step}\n\n{base}")
            } else {
                format!("{base}# a comment\n")
            };
            let series = if invalid {
                "blastguard_allowed_signers_reloads_total{result=\"failure\"}"
            } else {
                "blastguard_allowed_signers_reloads_total{result=\"success\"}"
            };
            let before = metric(&plain, admin, series).await.unwrap_or(0.0);
            signers
                .0
                .lock()
                .expect("signers")
                .write(&[("allowed_signers", text.as_bytes())]);
            {
                let mut r = report.lock().expect("report");
                r.signers_writes += 1;
                r.signers_invalid_writes += u64::from(invalid);
            }
            let result = if metric_above(&plain, admin, series, before).await {
                probe(approved_probe.clone(), Expect::Allowed).await
            } else {
                Err(format!("no reload counted in {series}"))
            };
            if let Err(e) = result {
                report.lock().expect("report").signers_checks_failed += 1;
                failed("allowed_signers", e);
            }
        }
    }
}

fn rand_tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs the soak and reports.
pub async fn run(options: Options) -> Report {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("temp dir");
    let blastguard = std::fs::canonicalize(&options.blastguard)
        .unwrap_or_else(|e| panic!("{}: {e} (build it first)", options.blastguard.display()));

    // Two approvers' keys (the protected rule wants two), and allowed_signers naming
    // them; neither is the requester of the reviews.
    let mut keys = Vec::new();
    let mut signers_base = String::new();
    for name in ["carol", "dave"] {
        let key = dir.path().join(name);
        let keygen = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen");
        assert!(keygen.success());
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
        signers_base.push_str(&format!("{name}@example.com {public}"));
        keys.push(key);
    }

    let default_policy = String::from_utf8(
        Command::new(&blastguard)
            .args(["policy", "default"])
            .output()
            .expect("policy default")
            .stdout,
    )
    .expect("UTF-8");
    let pki = Arc::new(Pki::new());
    let mut certs = Volume::new(dir.path().join("certs"));
    let (cert, key_pem, _) = pki.leaf(1);
    certs.write(&[
        ("tls.crt", cert.as_bytes()),
        ("tls.key", key_pem.as_bytes()),
    ]);
    let mut policies = Volume::new(dir.path().join("policy"));
    policies.write(&[(
        "policy.yaml",
        policy_version(&default_policy, 100).as_bytes(),
    )]);
    let mut signer_files = Volume::new(dir.path().join("signers"));
    signer_files.write(&[("allowed_signers", signers_base.as_bytes())]);

    // The templates; approvals valid for the whole run and then some.
    let ttl = options.duration + Duration::from_secs(900);
    let denied_create = fixture("deployment-create-ai-prod.json");
    let templates = vec![
        Template {
            kind: "person",
            review: fixture("deployment-update-image-person.json"),
            expect: Expect::Allowed,
            fresh_user: false,
        },
        Template {
            kind: "hpa-scale",
            review: fixture("scale-by-hpa.json"),
            expect: Expect::Allowed,
            fresh_user: false,
        },
        Template {
            kind: "ai-allowed",
            review: daily(fixture("cronjob-create-field-manager.json")),
            expect: Expect::Allowed,
            fresh_user: true,
        },
        Template {
            kind: "ai-denied",
            review: denied_create.clone(),
            expect: Expect::Denied,
            fresh_user: false,
        },
        Template {
            kind: "ai-denied",
            review: fixture("delete-by-ai-identity.json"),
            expect: Expect::Denied,
            fresh_user: false,
        },
        Template {
            kind: "ai-denied",
            review: fixture("namespace-create-ai.json"),
            expect: Expect::Denied,
            fresh_user: false,
        },
        Template {
            kind: "ai-denied",
            review: fixture("scale-by-ai-identity.json"),
            expect: Expect::Denied,
            fresh_user: false,
        },
        Template {
            kind: "ai-approved",
            review: approved(
                &blastguard,
                &dry_run(denied_create.clone()),
                &keys,
                ttl,
                dir.path(),
            ),
            expect: Expect::Allowed,
            fresh_user: false,
        },
        Template {
            kind: "ai-approved",
            review: approved(
                &blastguard,
                &dry_run(fixture("namespace-create-ai.json")),
                &keys,
                ttl,
                dir.path(),
            ),
            expect: Expect::Allowed,
            fresh_user: false,
        },
        Template {
            kind: "ai-approved",
            review: approved(
                &blastguard,
                &dry_run(fixture("delete-by-ai-identity.json")),
                &keys,
                ttl,
                dir.path(),
            ),
            expect: Expect::Allowed,
            fresh_user: false,
        },
    ];
    let approved_probe = templates[7].review.clone();

    let mut server = Server::start(
        &blastguard,
        &[
            "--tls-cert".into(),
            certs.path("tls.crt").display().to_string(),
            "--tls-key".into(),
            certs.path("tls.key").display().to_string(),
            "--policy".into(),
            policies.path("policy.yaml").display().to_string(),
            "--allowed-signers".into(),
            signer_files.path("allowed_signers").display().to_string(),
            "--reload-interval".into(),
            "200ms".into(),
            "--state".into(),
            "memory".into(),
        ],
        &dir.path().join("server.log"),
    );
    let clients = Arc::new(Clients::new(&pki.ca_pem));
    let url = format!("https://{}/validate?timeout=10s", server.webhook);
    let plain = reqwest::Client::new();
    // Ready: the certificate is loaded.
    let ready_by = Instant::now() + Duration::from_secs(30);
    while plain
        .get(format!("http://{}/readyz", server.admin))
        .send()
        .await
        .map_or(true, |r| r.status() != 200)
    {
        assert!(Instant::now() < ready_by, "the server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let report = Arc::new(Mutex::new(Report {
        duration: options.duration,
        rate: options.rate,
        workers: options.workers,
        ..Report::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let templates = Arc::new(templates);
    let workers = options.workers.max(1);
    let pace = Duration::from_secs_f64(workers as f64 / options.rate.max(0.1));
    let tasks: Vec<_> = (0..workers as u64)
        .map(|id| {
            tokio::spawn(worker(
                id,
                url.clone(),
                templates.clone(),
                clients.clone(),
                pace,
                stop.clone(),
                counter.clone(),
                failed.clone(),
            ))
        })
        .collect();
    let (certs, policies, signer_files) = (
        Arc::new(Mutex::new(certs)),
        Arc::new(Mutex::new(policies)),
        Arc::new(Mutex::new(signer_files)),
    );
    let mutation = tokio::spawn(mutator(
        (server.webhook, server.admin),
        pki.clone(),
        certs.clone(),
        (policies.clone(), default_policy.clone()),
        (signer_files.clone(), signers_base.clone()),
        approved_probe,
        clients.clone(),
        stop.clone(),
        report.clone(),
    ));

    // Start figures after a warm-up: the first connections, caches and allocations.
    let warm_up = (options.duration / 10).min(Duration::from_secs(10));
    tokio::time::sleep(warm_up).await;
    let (rss, _, fds) = server.resources();
    {
        let mut r = report.lock().expect("report");
        r.rss_start_kb = rss;
        r.fds_start = fds;
    }
    // A line a minute on stderr, so a long run that is cut short still says how far
    // it got and how it was doing.
    let started = Instant::now();
    let end = started + options.duration.saturating_sub(warm_up);
    while Instant::now() < end {
        let step = end
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(60));
        tokio::time::sleep(step).await;
        let (rss, _, fds) = server.resources();
        eprintln!(
            "soak: {} in: {} requests, {} wrong answers to well-formed ones, server RSS {:.1} MB, fds {}",
            humantime::format_duration(Duration::from_secs(
                (started.elapsed() + warm_up).as_secs()
            )),
            counter.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
            rss as f64 / 1024.0,
            fds
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for t in tasks {
        let t = t.await.expect("worker");
        for (k, n) in t.sent {
            *tally.sent.entry(k).or_default() += n;
        }
        tally.errors += t.errors;
        tally.error_examples.extend(t.error_examples);
        tally.malformed += t.malformed;
        tally.malformed_unexpected += t.malformed_unexpected;
        tally.http2 += t.http2;
        tally.http1 += t.http1;
        tally.fresh += t.fresh;
        tally.micros.extend(t.micros);
    }
    mutation.await.expect("mutator");
    // Idle connections of the clients close before the end figures.
    drop(clients);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss, peak, fds) = server.resources();
    let panics = metric(&plain, server.admin, "blastguard_panics_total")
        .await
        .unwrap_or(-1.0);
    let exit = server.terminate();

    let mut r = Arc::into_inner(report)
        .expect("the mutator is done with the report")
        .into_inner()
        .expect("report");
    tally.micros.sort_unstable();
    let at = |q: f64| {
        let n = tally.micros.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
        Duration::from_micros(u64::from(tally.micros[i]))
    };
    r.sent = tally.sent;
    r.errors = tally.errors;
    tally.error_examples.truncate(5);
    r.error_examples = tally.error_examples;
    r.malformed = tally.malformed;
    r.malformed_unexpected = tally.malformed_unexpected;
    r.http2 = tally.http2;
    r.http1 = tally.http1;
    r.fresh_connections = tally.fresh;
    r.p50 = at(0.50);
    r.p99 = at(0.99);
    r.max = at(1.0);
    r.rss_end_kb = rss;
    r.rss_peak_kb = peak;
    r.fds_end = fds;
    r.panics = panics;
    r.server_exit = exit;
    r
}
