//! The kubectl plugin as its tests run it (tests/plugin_*.rs): `kubectl blastguard
//! ...` through the real kubectl with PATH holding a symlink `kubectl-blastguard` to
//! the built binary, objects that real `kubectl create ... --dry-run=client` made, and
//! [`stored`], which stands in for the API server where a test needs an object as the
//! cluster stores it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

/// The AI agent's identity in the embedded policy.
pub const AI_SA: &str = "system:serviceaccount:ai-agents:claude";

/// A PATH with the plugin on it, and a scratch directory for inputs.
pub struct Kubectl {
    dir: tempfile::TempDir,
    /// The PATH the plugin is on.
    pub path: std::ffi::OsString,
}

impl Kubectl {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_blastguard"),
            bin.join("kubectl-blastguard"),
        )
        .expect("symlink the plugin");
        let mut paths = vec![bin];
        paths.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let path = std::env::join_paths(paths).expect("PATH");
        Self { dir, path }
    }

    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args)
            .current_dir(self.dir.path())
            .env("PATH", &self.path)
            .env("USER", "ci-runner")
            // The developer's environment must not change what is checked.
            .env_remove("NO_COLOR")
            .env_remove("BLASTGUARD_POLICY")
            .env_remove("BLASTGUARD_ALLOWED_SIGNERS")
            // kubectl wants a home for its cache even when it talks to no server.
            .env("HOME", self.dir.path());
        c
    }

    /// `kubectl blastguard ARGS`, with `stdin` piped in.
    pub fn plugin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        let mut full = vec!["blastguard"];
        full.extend_from_slice(args);
        let mut child = self
            .command("kubectl", &full)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(bytes) = stdin {
            input.write_all(bytes).expect("write stdin");
        }
        drop(input);
        Run::from(child.wait_with_output().expect("kubectl finishes"))
    }

    /// Real kubectl output: `kubectl ARGS` (e.g. `create deployment ... --dry-run=client -o yaml`).
    pub fn make(&self, args: &[&str]) -> String {
        let out = self.command("kubectl", args).output().expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
    }

    /// Annotates manifests as an AI agent would (`kubectl annotate --local`).
    pub fn ai(&self, manifest: &str, format: &str) -> String {
        let file = self.write("to-annotate.yaml", manifest);
        self.make(&[
            "annotate",
            "--local",
            "-f",
            file.to_str().expect("utf-8 path"),
            "blastguard.io/ai-agent=claude-code",
            "-o",
            format,
        ])
    }

    /// Writes `contents` to `name` in the scratch directory; its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, contents).expect("write input");
        path
    }

    /// A Namespace's YAML as `kubectl create namespace NAME --dry-run=client -o yaml`
    /// writes it.
    pub fn namespace_yaml(&self, name: &str) -> String {
        self.make(&[
            "create",
            "namespace",
            name,
            "--dry-run=client",
            "-o",
            "yaml",
        ])
    }

    /// A Deployment's YAML as `kubectl create deployment NAME --image=nginx:1.27
    /// --replicas=N --dry-run=client -o yaml EXTRA` writes it.
    pub fn deployment_yaml(&self, name: &str, replicas: u32, extra: &[&str]) -> String {
        super::objects::create_deployment(None, name, replicas, "nginx:1.27", "yaml", extra)
    }
}

/// Joins YAML documents as a multi-document stream.
pub fn stream(documents: &[&str]) -> String {
    documents.join("---\n")
}

/// The outcome of one run.
pub struct Run {
    /// The exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().expect("exited, not killed"),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// The table row of an object (`Deployment shop/api`), split on runs of spaces.
    pub fn row(&self, object: &str) -> Vec<String> {
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{object} ")))
            .unwrap_or_else(|| panic!("no row for {object}:\n{}", self.stdout));
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// `(verdict, reason, podsAffected)` of each result of a JSON report, by object name.
pub fn verdicts(report: &Value) -> Vec<(String, String, String, Value)> {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["object"]["name"].as_str().unwrap_or_default().to_string(),
                r["verdict"].as_str().unwrap_or_default().to_string(),
                r["reason"].as_str().unwrap_or_default().to_string(),
                r["radius"]["podsAffected"].clone(),
            )
        })
        .collect()
}

/// `manifest` (YAML from kubectl) as the API server stores it after creating it, and
/// as `kubectl get -o yaml` then shows it: identity, defaults, and, when it was made
/// with `kubectl apply`, the applied manifest in the last-applied annotation.
pub fn stored(manifest: &str, applied: bool) -> Value {
    let mut o: Value = serde_yaml::from_str(manifest).expect("kubectl YAML");
    let last = serde_json::to_string(&o).expect("JSON");
    let meta = &mut o["metadata"];
    meta["uid"] = json!("5b0c7d9e-0000-4000-8000-000000000001");
    meta["resourceVersion"] = json!("81234");
    meta["creationTimestamp"] = json!("2026-11-22T09:00:00Z");
    meta["generation"] = json!(1);
    if applied {
        meta["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json!(last);
    }
    let spec = &mut o["spec"];
    spec["strategy"] = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
    spec["revisionHistoryLimit"] = json!(10);
    spec["progressDeadlineSeconds"] = json!(600);
    let pod = &mut spec["template"]["spec"];
    for (key, value) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("securityContext", json!({})),
        ("schedulerName", json!("default-scheduler")),
    ] {
        pod[key] = value;
    }
    for c in pod["containers"].as_array_mut().expect("containers") {
        c["terminationMessagePath"] = json!("/dev/termination-log");
        c["terminationMessagePolicy"] = json!("File");
        c["imagePullPolicy"] = json!("IfNotPresent");
    }
    o["status"] =
        json!({"replicas": o["spec"]["replicas"], "readyReplicas": o["spec"]["replicas"]});
    o
}
