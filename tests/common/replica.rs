//! `blastguard serve --state cluster` replicas on the local control plane, for the
//! tests of shared state under load (tests/e2e_exact_budget.rs,
//! tests/e2e_state_load.rs, tests/e2e_record_caps.rs; `Replicas` starts them on a
//! fresh control plane). They run as cluster-admin: RBAC is not what those tests
//! are about (tests/e2e_cluster_state.rs runs replicas with the chart's).

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cluster::{ControlPlane, wait_for};
use super::{Pki, address_after};

/// Runs kubectl as cluster-admin; panics with its output unless it succeeds.
pub fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    cp.kubectl_ok(args, None)
}

/// Whether `/readyz` on the admin port answers 200 (plain HTTP/1.0, no client needed).
fn ready(admin: SocketAddr) -> bool {
    use std::io::Write as _;
    let Ok(mut tcp) = std::net::TcpStream::connect(admin) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
    if tcp.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// One `blastguard serve --state cluster` process.
pub struct Replica {
    child: Child,
    /// The webhook's address.
    pub webhook: SocketAddr,
    /// What it logged so far.
    pub stderr: Arc<Mutex<String>>,
}

impl Replica {
    /// Starts a replica serving the certificate in `certs` (tls.crt, tls.key) with
    /// `args` added, and waits until /readyz says ready.
    pub fn start(name: &str, cp: &ControlPlane, certs: &Path, args: &[&str]) -> Replica {
        let (mut child, stdout, stderr) = super::spawn_captured(
            super::blastguard()
                .arg("serve")
                .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
                .args(["--drain-timeout", "1s"])
                .arg("--tls-cert")
                .arg(certs.join("tls.crt"))
                .arg("--tls-key")
                .arg(certs.join("tls.key"))
                .args(args)
                .env("KUBECONFIG", &cp.kubeconfig)
                .env("HOME", certs)
                .env("RUST_LOG", "info"),
        );
        let webhook = wait_for(
            &format!("{name} to print its address"),
            Duration::from_secs(20),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{name} exited: {status}\n{}", stderr.lock().unwrap());
                }
                let admin = address_after(&stdout.lock().unwrap(), "admin listening on http://")?;
                let webhook =
                    address_after(&stdout.lock().unwrap(), "webhook listening on https://")?;
                ready(admin).then_some(webhook)
            },
        );
        Replica {
            child,
            webhook,
            stderr,
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The namespaces `blastguard` (the records') and `team-a`, and the `ChangeSet` CRD.
pub fn prepare(cp: &ControlPlane) {
    kubectl(cp, &["create", "namespace", "blastguard"]);
    kubectl(cp, &["create", "namespace", "team-a"]);
    let crd = super::repo().join("charts/blastguard/crds/changesets.blastguard.io.yaml");
    kubectl(cp, &["apply", "-f", crd.to_str().unwrap()]);
    kubectl(
        cp,
        &[
            "wait",
            "--for=condition=Established",
            "crd/changesets.blastguard.io",
            "--timeout=30s",
        ],
    );
}

/// A serving certificate of `pki` written to `dir`/certs; the directory.
pub fn certificates(pki: &Pki, dir: &Path) -> PathBuf {
    let leaf = pki.leaf(1, 2030);
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(certs.join("tls.key"), &leaf.key_pem).unwrap();
    certs
}

/// The arguments that put a replica's state in the cluster, for tests that post the
/// reviews themselves: the objects they name are never made, so each admitted change
/// counts at once (`--count-unseen`) instead of lapsing unseen.
pub const CLUSTER_STATE: [&str; 5] = [
    "--state",
    "cluster",
    "--state-namespace",
    "blastguard",
    "--count-unseen",
];

/// The cluster state as an install runs it: an admitted change counts for the window
/// once the cluster shows it (docs/security.md, "Forged reviews on a default install").
pub const CLUSTER_STATE_LOOKING: [&str; 4] =
    ["--state", "cluster", "--state-namespace", "blastguard"];

/// Replicas on their own control plane, as the shared-state tests run them: the
/// control plane prepared for the records, a test CA, the serving certificate and
/// one `serve` per `(name, args)`, with an HTTP/2 client per replica and a runtime to
/// send from. Fields drop in order: the replicas stop before the control plane.
pub struct Replicas {
    /// The replicas, in the order given.
    pub replicas: Vec<Replica>,
    /// `(url, HTTP/2 client)` per replica, in the same order.
    pub clients: Vec<(String, reqwest::Client)>,
    /// A runtime with four workers, for parallel sends.
    pub rt: tokio::runtime::Runtime,
    /// The CA the replicas' certificate chains to (for more clients).
    pub pki: Pki,
    /// The control plane.
    pub cp: ControlPlane,
    _dir: tempfile::TempDir,
}

impl Replicas {
    /// A fresh control plane and one replica per `(name, args)`.
    pub fn start(specs: &[(&str, &[&str])]) -> Replicas {
        super::install_crypto();
        let cp = ControlPlane::up();
        let dir = tempfile::tempdir().unwrap();
        prepare(&cp);
        let pki = Pki::new();
        let certs = certificates(&pki, dir.path());
        let replicas: Vec<Replica> = specs
            .iter()
            .map(|(name, args)| Replica::start(name, &cp, &certs, args))
            .collect();
        let clients = replicas
            .iter()
            .map(|r| {
                (
                    r.url(),
                    super::webhook_client(&pki.ca_pem, super::Http::Two),
                )
            })
            .collect();
        Replicas {
            replicas,
            clients,
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .unwrap(),
            pki,
            cp,
            _dir: dir,
        }
    }
}

impl Replica {
    /// The URL the API server would call on this replica.
    pub fn url(&self) -> String {
        format!("https://{}/validate?timeout=10s", self.webhook)
    }
}
