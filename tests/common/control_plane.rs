//! A real control plane for the end-to-end tests (tests/common/cluster.rs says how they
//! use it): `scripts/control-plane.sh up` starts the pinned etcd, kube-apiserver and
//! kube-controller-manager on 127.0.0.1; `Drop` (or the watchdog, when the test
//! process dies without unwinding) runs `down`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use super::cluster::{Run, run};
use super::{repo, tool};

/// A running control plane (etcd, kube-apiserver, kube-controller-manager), stopped
/// with `control-plane.sh down` when dropped.
pub struct ControlPlane {
    /// Holds the cluster's files: kubeconfig, PKI, etcd data, logs.
    pub dir: tempfile::TempDir,
    /// The cluster-admin kubeconfig (`O=system:masters`).
    pub kubeconfig: PathBuf,
    watchdog: Child,
}

/// scripts/control-plane.sh.
pub fn script() -> PathBuf {
    repo().join("scripts/control-plane.sh")
}

impl ControlPlane {
    /// Starts a fresh cluster. Fails the test with the script's output when the binaries
    /// cannot be built or the cluster does not come up: an e2e test never skips.
    pub fn up() -> ControlPlane {
        ControlPlane::start(&[], "")
    }

    /// Starts a fresh cluster with `control-plane.sh up DIR ARGS` (`--node`: with a
    /// node, tests/common/node.rs).
    pub fn up_with(args: &[&str]) -> ControlPlane {
        ControlPlane::start(args, "")
    }

    /// [`ControlPlane::up`] with `args` appended to kube-apiserver's command line
    /// (space-separated; CONTROL_PLANE_APISERVER_ARGS of scripts/control-plane.sh).
    pub fn up_with_apiserver_args(args: &str) -> ControlPlane {
        ControlPlane::start(&[], args)
    }

    fn start(args: &[&str], apiserver_args: &str) -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("blastguard-e2e.")
            .tempdir()
            .unwrap();
        let t0 = Instant::now();
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .arg("up")
            .arg(dir.path())
            .args(args)
            .env("CONTROL_PLANE_APISERVER_ARGS", apiserver_args);
        let up = run(cmd, None);
        if !up.ok {
            // `up` cleans up after itself on failure; `down` is idempotent.
            let _ = Command::new("bash")
                .arg(script())
                .arg("down")
                .arg(dir.path())
                .status();
            panic!(
                "scripts/control-plane.sh up failed (build it with `bash scripts/control-plane.sh build`; \
                 scripts/test.sh does):\n{}\n{}",
                up.stdout, up.stderr
            );
        }
        // The watchdog: once this process is gone, stop whatever it left running (the
        // serve process recorded in serve.pid, the control plane) and remove the files.
        // In its own session, so the Ctrl-C that ends `cargo test` does not end it too.
        let watchdog = Command::new("setsid")
            .args([
                "sh",
                "-c",
                r#"while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
                   [ -f "$2/serve.pid" ] && kill "$(cat "$2/serve.pid")" 2>/dev/null
                   bash "$3" down "$2"; rm -rf "$2""#,
                "e2e-watchdog",
            ])
            .arg(std::process::id().to_string())
            .arg(dir.path())
            .arg(script())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eprintln!(
            "e2e: control plane up in {:.1}s ({})",
            t0.elapsed().as_secs_f64(),
            dir.path().display()
        );
        let kubeconfig = dir.path().join("kubeconfig");
        ControlPlane {
            dir,
            kubeconfig,
            watchdog,
        }
    }

    /// `kubectl` as cluster-admin, with `input` on standard input and its discovery
    /// cache under `work`.
    pub fn kubectl(&self, work: &Path, args: &[&str], input: Option<&str>) -> Run {
        let mut cmd = tool("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(work.join("kube-cache"))
            .arg("--request-timeout=30s")
            .args(args);
        run(cmd, input)
    }

    /// `kubectl` as cluster-admin, its caches in the cluster's directory; the test
    /// fails with its output unless it succeeds. Its standard output.
    #[track_caller]
    pub fn kubectl_ok(&self, args: &[&str], input: Option<&str>) -> String {
        self.kubectl(self.dir.path(), args, input).expect_ok()
    }

    /// `helm` against this cluster, its caches under `work`.
    pub fn helm(&self, work: &Path, args: &[&str]) -> Run {
        let home = work.join("helm");
        let mut cmd = tool("helm");
        cmd.env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args);
        run(cmd, None)
    }

    /// (component, pid) of the running processes, from control-plane.sh's `pids` file.
    pub fn pids(&self) -> Vec<(String, u32)> {
        std::fs::read_to_string(self.dir.path().join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (name, pid) = l.split_once(' ')?;
                Some((name.to_string(), pid.trim().parse().ok()?))
            })
            .collect()
    }

    /// (component, current RSS in MB, peak RSS in MB), read from /proc.
    pub fn memory(&self) -> Vec<(String, u64, u64)> {
        self.pids()
            .into_iter()
            .map(|(name, pid)| {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let kb = |key: &str| -> u64 {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(key))
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                        .unwrap_or(0)
                };
                (name, kb("VmRSS:") / 1024, kb("VmHWM:") / 1024)
            })
            .collect()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let memory: Vec<String> = self
            .memory()
            .iter()
            .map(|(name, rss, peak)| format!("{name} {rss} MB (peak {peak} MB)"))
            .collect();
        eprintln!("e2e: control plane RSS at the end: {}", memory.join(", "));
        let status = Command::new("bash")
            .arg(script())
            .arg("down")
            .arg(self.dir.path())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("e2e: control-plane.sh down failed: {status:?}");
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}
