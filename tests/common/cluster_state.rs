//! Replicas of `blastguard serve --state cluster` run as the chart's ServiceAccount
//! (tests/e2e_cluster_state.rs): the chart's RBAC from `helm template`, a bound token
//! of that account, each replica on its own port with a certificate of a test CA, the
//! AdmissionReviews posted to a chosen replica as the API server posts them, and the
//! ChangeSet records read back with kubectl.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::chart::helm_template;
use super::cluster::{ControlPlane, chart, wait_for};
use super::{Http, address_after, metric, spawn_captured, webhook_client};

/// Bound for a change to reach every replica through a watch.
pub const SECONDS: Duration = Duration::from_secs(10);

/// The chart's release namespace and ServiceAccount.
pub const NAMESPACE: &str = "blastguard";
/// The chart's ServiceAccount as the API server names it.
pub const SERVICE_ACCOUNT: &str = "system:serviceaccount:blastguard:blastguard";

/// The chart's CRD and cluster-state RBAC (and its ServiceAccount), as `helm template`
/// renders them with the default values.
pub fn chart_rbac() -> String {
    let out = helm_template(chart(), NAMESPACE, "", &["--include-crds"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keep = [
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ];
    String::from_utf8_lossy(&out.stdout)
        .split("\n---")
        .filter(|doc| {
            doc.lines()
                .any(|l| keep.iter().any(|k| l == format!("kind: {k}")))
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// A kubeconfig that authenticates as the chart's ServiceAccount with a bound token.
pub fn service_account_kubeconfig(cp: &ControlPlane, dir: &Path) -> PathBuf {
    let token = cp.kubectl_ok(
        &[
            "create",
            "token",
            "blastguard",
            "-n",
            NAMESPACE,
            "--duration=2h",
        ],
        None,
    );
    let admin = std::fs::read_to_string(&cp.kubeconfig).unwrap();
    let server = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("server in the kubeconfig");
    let ca = cp.dir.path().join("pki/ca.crt");
    let file = dir.join("service-account.kubeconfig");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster: {{server: \"{server}\", certificate-authority: \"{}\"}}\nusers:\n- name: sa\n  user: {{token: \"{}\"}}\ncontexts:\n- name: sa\n  context: {{cluster: e2e, user: sa, namespace: {NAMESPACE}}}\ncurrent-context: sa\n",
            ca.display(),
            token.trim()
        ),
    )
    .unwrap();
    file
}

/// One `blastguard serve` process.
pub struct Replica {
    /// Its name in messages.
    pub name: &'static str,
    child: Child,
    /// The webhook's address.
    pub webhook: SocketAddr,
    /// The admin port's address.
    pub admin: SocketAddr,
    stderr: Arc<Mutex<String>>,
    client: reqwest::Client,
    rt: Arc<tokio::runtime::Runtime>,
}

/// How a replica is started.
#[derive(Clone)]
pub struct Setup {
    /// The directory of tls.crt and tls.key.
    pub certs: PathBuf,
    /// The CA that issued them.
    pub ca_pem: String,
    /// The runtime the clients run on.
    pub rt: Arc<tokio::runtime::Runtime>,
}

impl Replica {
    /// Starts a replica with `kubeconfig` (the cluster state) or none, and waits until
    /// /readyz says ready.
    pub fn start(
        name: &'static str,
        setup: &Setup,
        kubeconfig: Option<&Path>,
        args: &[&str],
    ) -> Replica {
        let mut cmd = super::blastguard();
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            // The test's client keeps its connection open: a short drain.
            .args(["--drain-timeout", "1s"])
            .arg("--tls-cert")
            .arg(setup.certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(setup.certs.join("tls.key"))
            .args(args)
            .env_remove("KUBECONFIG")
            // No ~/.kube/config of the machine's: the state is exactly what is given.
            .env("HOME", setup.certs.as_os_str())
            .env("RUST_LOG", "info");
        if let Some(k) = kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        let (mut child, stdout, stderr) = spawn_captured(&mut cmd);
        let (webhook, admin) = wait_for(&format!("{name} to print its addresses"), SECONDS, || {
            let out = stdout.lock().unwrap().clone();
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited: {status}\n{}", stderr.lock().unwrap());
            }
            Some((
                address_after(&out, "webhook listening on https://")?,
                address_after(&out, "admin listening on http://")?,
            ))
        });
        let replica = Replica {
            name,
            child,
            webhook,
            admin,
            stderr,
            client: webhook_client(&setup.ca_pem, Http::Two),
            rt: setup.rt.clone(),
        };
        wait_for(
            &format!("{name} to be ready"),
            Duration::from_secs(40),
            || (replica.admin_get("/readyz").0 == 200).then_some(()),
        );
        replica
    }

    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.admin);
        self.rt.block_on(async {
            match reqwest::get(&url).await {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(_) => (0, String::new()),
            }
        })
    }

    pub fn metrics(&self) -> String {
        self.admin_get("/metrics").1
    }

    pub fn metric(&self, series: &str) -> f64 {
        metric(&self.metrics(), series).unwrap_or(0.0)
    }

    /// Posts a review as the API server does; the response and how long it took.
    pub fn judge(&self, review: &Value) -> (Answer, Duration) {
        let url = format!("https://{}/validate?timeout=10s", self.webhook);
        let body = serde_json::to_vec(review).unwrap();
        let started = Instant::now();
        let text = self.rt.block_on(async {
            let r = self
                .client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", self.name));
            assert_eq!(r.status().as_u16(), 200, "{}", self.name);
            r.text().await.unwrap()
        });
        let took = started.elapsed();
        let v: Value = serde_json::from_str(&text).unwrap();
        (Answer(v["response"].clone()), took)
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, and the wait for the drain.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        wait_for(
            &format!("{} to exit", self.name),
            Duration::from_secs(20),
            || self.child.try_wait().unwrap(),
        );
        self.log()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as the API server reads it.
#[derive(Debug, Clone)]
pub struct Answer(pub Value);

impl Answer {
    /// Whether the request was admitted.
    pub fn allowed(&self) -> bool {
        self.0["allowed"] == true
    }
    /// The message a person reads in kubectl.
    pub fn message(&self) -> String {
        self.0["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    /// The rule that judged the request.
    pub fn rule(&self) -> String {
        self.0["auditAnnotations"]["rule"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    /// The warnings kubectl prints.
    pub fn warnings(&self) -> Vec<String> {
        self.0["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The ChangeSet record of a change-set key, as kubectl reads it.
pub fn record(cp: &ControlPlane, namespace: &str, key: &str) -> Option<Value> {
    let list: Value = serde_json::from_str(
        &cp.kubectl_ok(&["get", "changesets", "-n", namespace, "-o", "json"], None),
    )
    .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["spec"]["key"] == key)
        .cloned()
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// p50 and p99 of `n` sequential decisions of `review()` by `replica`.
pub fn latencies(
    replica: &Replica,
    n: usize,
    mut review: impl FnMut(usize) -> Value,
) -> (Duration, Duration) {
    let mut took: Vec<Duration> = (0..n)
        .map(|i| {
            let (answer, t) = replica.judge(&review(i));
            assert!(answer.allowed(), "{}", answer.message());
            t
        })
        .collect();
    took.sort();
    (percentile(&took, 0.5), percentile(&took, 0.99))
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}
