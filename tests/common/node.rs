//! The end-to-end harness with a node: `scripts/control-plane.sh up DIR --node` runs
//! containerd, a kubelet, kube-proxy and kube-scheduler beside the control plane, the
//! image `scripts/image.sh` builds is imported into the node (`control-plane.sh load`),
//! and the chart is installed as users install it: blastguard runs in pods behind its
//! Service, with the generated certificates, and the API server calls it there.
//!
//! Nothing here stands in for the API server or the kubelet. The machine itself is
//! changed (a bridge, iptables chains, mounts, cgroups, sysctls): [`MachineState`]
//! records what `down` must put back, and the test checks it did.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cluster::{
    AI_AGENT, ControlPlane, REQUESTS, Run, deployment, metric_sum, run, script, wait_for,
};
use super::repo;

/// The chart's image repository (values.yaml `image.repository`), which the archive of
/// `scripts/image.sh` names.
pub const REPOSITORY: &str = "ghcr.io/blastguard/blastguard";

/// The release and its namespace.
pub const RELEASE: &str = "blastguard";

/// What the API server says when blastguard answered and denied.
pub const DENIED: &str = r#"admission webhook "validate.blastguard.io" denied the request"#;

/// The node's name (scripts/control-plane/node.sh).
pub const NODE: &str = "blastguard-node";

/// Bound for pods to become Ready or go away on the loaded 2-core machine.
pub const POD_WAIT: Duration = Duration::from_secs(120);

/// What `scripts/image.sh` made (built once per test binary).
pub struct Image {
    /// The OCI archive.
    pub archive: PathBuf,
    /// Its tag (the crate's version).
    pub tag: String,
    /// How long the build took.
    pub seconds: f64,
}

/// The target directory of this build (`CARGO_TARGET_TMPDIR` is its `tmp`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `scripts/image.sh` once (a static release build, then buildah), or takes the
/// archive it made from `BLASTGUARD_IMAGE_ARCHIVE` (built once for several runs).
pub fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let t0 = Instant::now();
        if let Some(archive) = std::env::var_os("BLASTGUARD_IMAGE_ARCHIVE") {
            let archive = PathBuf::from(archive);
            assert!(
                archive.is_file(),
                "BLASTGUARD_IMAGE_ARCHIVE: no file {archive:?}"
            );
            return Image {
                archive,
                tag: env!("CARGO_PKG_VERSION").to_string(),
                seconds: 0.0,
            };
        }
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("scripts/image.sh"))
            .env("CARGO_TARGET_DIR", target_dir());
        let out = run(cmd, None);
        assert!(out.ok, "scripts/image.sh failed:\n{}", out.stderr);
        Image {
            archive: PathBuf::from(out.stdout.trim()),
            tag: env!("CARGO_PKG_VERSION").to_string(),
            seconds: t0.elapsed().as_secs_f64(),
        }
    })
}

/// What a node changes on the machine and `down` must put back, as text to compare.
#[derive(Debug, PartialEq, Eq)]
pub struct MachineState {
    /// `iptables-save` and `ip6tables-save`, without counters.
    pub iptables: String,
    /// Network interfaces (names).
    pub links: Vec<String>,
    /// Mount points.
    pub mounts: Vec<String>,
    /// Network namespaces in /run/netns.
    pub netns: Vec<String>,
    /// The sysctls the node sets.
    pub sysctls: Vec<String>,
    /// The cgroups kubelet makes (kubepods in every hierarchy).
    pub cgroups: Vec<String>,
    /// Paths the node's programs write outside its directory when absent.
    pub paths: Vec<String>,
}

/// A command's output lines, sorted.
fn lines_of(cmd: Command) -> Vec<String> {
    let out = run(cmd, None);
    let mut lines: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

impl MachineState {
    /// The state now.
    pub fn now() -> MachineState {
        let mut iptables = String::new();
        for t in ["iptables-save", "ip6tables-save"] {
            let out = run(Command::new(t), None).stdout;
            for line in out.lines().filter(|l| !l.starts_with('#')) {
                // Chain headers carry packet counters: `:INPUT ACCEPT [12:345]`.
                let line = match line.rfind(" [") {
                    Some(i) if line.starts_with(':') => &line[..i],
                    _ => line,
                };
                iptables.push_str(line);
                iptables.push('\n');
            }
        }
        let mut links = Command::new("ip");
        links.args(["-o", "link", "show"]);
        let links = lines_of(links)
            .iter()
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next().unwrap().to_string())
            })
            .collect();
        let mut mounts = Command::new("findmnt");
        mounts.args(["-rn", "-o", "TARGET"]);
        let mut sysctl = Command::new("sysctl");
        sysctl.args([
            "vm.overcommit_memory",
            "vm.panic_on_oom",
            "kernel.panic",
            "kernel.panic_on_oops",
            "kernel.keys.root_maxkeys",
            "kernel.keys.root_maxbytes",
            "net.ipv4.ip_forward",
            "net.ipv4.conf.all.route_localnet",
        ]);
        let netns = std::fs::read_dir("/run/netns")
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let cgroups = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| {
                d.filter_map(|e| {
                    let p = e.ok()?.path().join("kubepods");
                    p.exists().then(|| p.display().to_string())
                })
                .collect()
            })
            .unwrap_or_default();
        let paths = [
            "/run/containerd",
            "/var/log/containers",
            "/var/log/pods",
            "/var/lib/kubelet",
            "/var/lib/cni",
            "/opt/containerd",
            "/etc/cni",
        ]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .map(str::to_string)
        .collect();
        MachineState {
            iptables,
            links,
            mounts: lines_of(mounts),
            netns,
            sysctls: lines_of(sysctl),
            cgroups,
            paths,
        }
    }
}

/// A control plane with a node, and the tools pointed at it.
pub struct NodeCluster {
    /// Scratch files (helm's caches, values), inside the cluster's directory.
    pub work: PathBuf,
    /// The cluster (stopped, and the machine put back, when dropped).
    pub cluster: ControlPlane,
}

impl NodeCluster {
    /// `control-plane.sh up DIR --node`.
    pub fn up() -> NodeCluster {
        let cluster = ControlPlane::up_with(&["--node"]);
        let work = cluster.dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        NodeCluster { work, cluster }
    }

    /// A value of the `env` file `up` wrote.
    pub fn env(&self, key: &str) -> String {
        let env = std::fs::read_to_string(self.cluster.dir.path().join("env")).unwrap();
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in the cluster's env:\n{env}"))
            .trim_matches('\'')
            .to_string()
    }

    /// `control-plane.sh load DIR ARCHIVE`.
    pub fn load(&self, archive: &Path) {
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .arg("load")
            .arg(self.cluster.dir.path())
            .arg(archive);
        let out = run(cmd, None);
        assert!(out.ok, "control-plane.sh load failed:\n{}", out.stderr);
    }

    /// `helm install` of the chart from this checkout, release and namespace
    /// `blastguard`, the loaded image (`image.tag`, `pullPolicy: Never`), `--wait`,
    /// with `sets` added as `--set` values.
    pub fn install(&self, tag: &str, sets: &[&str]) -> Run {
        let chart = super::cluster::chart();
        let tag = format!("image.tag={tag}");
        let mut args = vec![
            "install",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            RELEASE,
            "--create-namespace",
            "--set",
            &tag,
            "--set",
            "image.pullPolicy=Never",
            "--wait",
            "--timeout=3m",
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        self.helm(&args)
    }

    /// `ctr` against the node's containerd, in the kubelet's namespace.
    pub fn ctr(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.env("CONTAINERD_ADDRESS"))
            .args(["-n", "k8s.io"])
            .args(args);
        run(cmd, None)
    }

    /// `kubectl` as cluster-admin.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_with(args, None)
    }

    /// `kubectl` with `input` on standard input.
    pub fn kubectl_with(&self, args: &[&str], input: Option<&str>) -> Run {
        self.cluster.kubectl(&self.work, args, input)
    }

    /// `helm` against this cluster, with its caches in the scratch directory.
    pub fn helm(&self, args: &[&str]) -> Run {
        self.cluster.helm(&self.work, args)
    }

    /// An object as JSON, or None when it does not exist.
    pub fn get(&self, namespace: &str, object: &str) -> Option<Value> {
        let mut args = vec![];
        if !namespace.is_empty() {
            args.extend(["-n", namespace]);
        }
        args.extend(["get", object, "-o", "json"]);
        let r = self.kubectl(&args);
        r.ok.then(|| serde_json::from_str(&r.stdout).unwrap())
    }

    /// The release's pods (by the chart's selector labels).
    pub fn pods(&self) -> Vec<Value> {
        let out = self
            .kubectl(&[
                "-n",
                RELEASE,
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=blastguard,app.kubernetes.io/instance=blastguard",
                "-o",
                "json",
            ])
            .expect_ok();
        let list: Value = serde_json::from_str(&out).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// The release's pods that are Ready and not terminating.
    pub fn ready_pods(&self) -> Vec<Value> {
        self.pods().into_iter().filter(ready).collect()
    }

    /// Waits until `n` pods are Ready, none other exists, and all run `image`.
    pub fn wait_rolled(&self, n: usize, image: &str) -> Vec<Value> {
        wait_for(
            &format!("{n} Ready pods of {image} and no other"),
            POD_WAIT,
            || {
                let pods = self.pods();
                let done = pods.len() == n
                    && pods
                        .iter()
                        .all(|p| ready(p) && p["spec"]["containers"][0]["image"] == image);
                done.then_some(pods)
            },
        )
    }
}

/// Whether a pod is Ready and not being deleted.
pub fn ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// A plain HTTP GET (the pods' admin port, reached over the node's bridge): the body,
/// or None when the pod does not answer.
pub fn http_get(host: &str, port: u16, path: &str) -> Option<String> {
    let addr = format!("{host}:{port}").parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    status
        .split(' ')
        .nth(1)
        .is_some_and(|code| code == "200")
        .then(|| body.to_string())
}

/// Each Ready pod's `/metrics`, read from its admin port over the bridge, by pod name.
pub fn pod_metrics(node: &NodeCluster) -> BTreeMap<String, String> {
    node.ready_pods()
        .iter()
        .map(|p| {
            let ip = p["status"]["podIP"].as_str().unwrap();
            let text = http_get(ip, 8080, "/metrics").unwrap_or_else(|| panic!("{ip}:8080"));
            (p["metadata"]["name"].as_str().unwrap().to_string(), text)
        })
        .collect()
}

/// Each Ready pod's count of answered reviews.
pub fn requests_on(node: &NodeCluster) -> BTreeMap<String, f64> {
    pod_metrics(node)
        .into_iter()
        .map(|(name, text)| (name, metric_sum(&text, REQUESTS)))
        .collect()
}

/// The sum of the samples of metric `name` whose labels include `label` (`k="v"`).
pub fn metric_with(text: &str, name: &str, label: &str) -> f64 {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
        .filter(|l| {
            l.split_once('}')
                .is_some_and(|(labels, _)| labels.contains(label))
        })
        .collect();
    metric_sum(&lines.join("\n"), name)
}

/// What admission did while something ran: AI changes (dry-run, denied when answered)
/// and people's (dry-run, admitted without the webhook), sent one after another.
pub struct Traffic {
    /// AI changes answered (denied by blastguard).
    pub answered: usize,
    /// AI changes that got anything else, with what kubectl said.
    pub failed: Vec<String>,
    /// People's changes admitted.
    pub people_ok: usize,
    /// People's changes refused, with what kubectl said.
    pub people_failed: Vec<String>,
    /// The slowest person's change.
    pub people_slowest: Duration,
}

impl Traffic {
    #[track_caller]
    pub fn assert_flowed(&self) {
        assert!(
            self.failed.is_empty(),
            "failed AI admissions: {:#?}",
            self.failed
        );
        assert!(
            self.answered >= 5,
            "only {} AI admissions answered",
            self.answered
        );
        assert!(self.people_failed.is_empty(), "{:#?}", self.people_failed);
    }
}

/// Runs `action` while a second thread keeps sending changes through the API server.
pub fn during(node: &NodeCluster, action: impl FnOnce()) -> Traffic {
    let stop = AtomicBool::new(false);
    let ai = deployment("prod", "api", 40, &[(AI_AGENT, "claude-code")]).to_string();
    let person = deployment("prod", "web", 3, &[]).to_string();
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let mut t = Traffic {
                answered: 0,
                failed: vec![],
                people_ok: 0,
                people_failed: vec![],
                people_slowest: Duration::ZERO,
            };
            while !stop.load(Ordering::Relaxed) {
                let r = node.kubectl_with(&["apply", "--dry-run=server", "-f", "-"], Some(&ai));
                if !r.ok && r.stderr.contains(DENIED) {
                    t.answered += 1;
                } else {
                    t.failed.push(format!("{}{}", r.stdout, r.stderr));
                }
                let started = Instant::now();
                let r = node.kubectl_with(&["apply", "--dry-run=server", "-f", "-"], Some(&person));
                t.people_slowest = t.people_slowest.max(started.elapsed());
                if r.ok {
                    t.people_ok += 1;
                } else {
                    t.people_failed.push(r.stderr);
                }
            }
            t
        });
        // Whatever happens in the action, the sender stops.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(action));
        // A few more after the roll, through the new pods only.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let traffic = sender.join().unwrap();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
        traffic
    })
}
