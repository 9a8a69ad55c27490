//! The kubectl plugin, run through the real kubectl: every test runs
//! `kubectl blastguard ...` with PATH holding a symlink `kubectl-blastguard` to the
//! built binary, over objects that real `kubectl create ... --dry-run=client` made.
//!
//! No API server runs here. Where a test needs the current state of an object as the
//! cluster stores it (`kubectl get -o yaml`), [`stored`] stands in for the API server:
//! it adds what the API server adds on create (uid, resourceVersion, defaults), as
//! scripts/make-fixtures.py does for the engine's fixtures.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

const AI_SA: &str = "system:serviceaccount:ai-agents:claude";

/// A PATH with the plugin on it, and a scratch directory for inputs.
struct Kubectl {
    dir: tempfile::TempDir,
    path: std::ffi::OsString,
}

impl Kubectl {
    fn new() -> Self {
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

    fn command(&self, program: &str, args: &[&str]) -> Command {
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
    fn plugin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
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
    fn make(&self, args: &[&str]) -> String {
        let out = self.command("kubectl", args).output().expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
    }

    /// Annotates manifests as an AI agent would (`kubectl annotate --local`).
    fn ai(&self, manifest: &str, format: &str) -> String {
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

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, contents).expect("write input");
        path
    }
}

fn deployment(k: &Kubectl, name: &str, replicas: u32, extra: &[&str]) -> String {
    let replicas = format!("--replicas={replicas}");
    let mut args = vec![
        "create",
        "deployment",
        name,
        "--image=nginx:1.27",
        replicas.as_str(),
        "--dry-run=client",
        "-o",
        "yaml",
    ];
    args.extend_from_slice(extra);
    k.make(&args)
}

/// Joins YAML documents as a multi-document stream.
fn stream(documents: &[&str]) -> String {
    documents.join("---\n")
}

/// The outcome of one run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
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
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// The table row of an object (`Deployment shop/api`), split on runs of spaces.
    fn row(&self, object: &str) -> Vec<String> {
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
fn verdicts(report: &Value) -> Vec<(String, String, String, Value)> {
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
fn stored(manifest: &str, applied: bool) -> Value {
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

#[test]
fn multi_document_file_denies_the_big_ai_change_only() {
    let k = Kubectl::new();
    let big = k.ai(&deployment(&k, "api", 40, &[]), "yaml");
    let small = k.ai(&deployment(&k, "web", 3, &[]), "yaml");
    let person = deployment(&k, "batch", 40, &[]);
    let config = k.make(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=b",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let file = k.write("all.yaml", &stream(&[&big, &small, &person, &config]));

    let run = k.plugin(&["check", "-f", file.to_str().expect("path")], None);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let api = run.row("Deployment default/api");
    assert_eq!(
        &api[..7],
        [
            "Deployment default/api",
            "CREATE",
            "annotation: claude-code",
            "40",
            "default",
            "default",
            "deny"
        ]
    );
    assert!(api[7].starts_with("this AI-assisted create of Deployment default/api exceeds"));
    assert_eq!(run.row("Deployment default/web")[6], "allow");
    assert_eq!(
        run.row("Deployment default/batch")[2..7],
        ["-", "-", "default", "-", "allow"]
    );
    // The API server sends every namespaced kind with an AI signal (a ConfigMap counts
    // toward a change set's namespaces), so check judges it too; this one has none.
    let cfg = run.row("ConfigMap default/cfg");
    assert_eq!(cfg[6..8], ["allow", "not AI-assisted"], "{cfg:?}");
    // The full denial follows the table: the limit, and the payload to sign.
    assert!(
        run.stdout
            .contains("pods affected 40 > 10 (maxPodsAffected)")
    );
    assert!(run.stdout.contains(r#""kind":"Approval""#));
    assert!(
        run.stdout
            .contains("4 object(s): 1 denied, 0 warned, 3 allowed, 0 skipped")
    );

    // A reader that stops early (`| head`) does not turn a denial into an error. The
    // table is made longer than a pipe's buffer, so the write surely finds it closed.
    let many: Vec<String> = (0..1500)
        .map(|i| config.replace("name: cfg", &format!("name: cfg-{i}")))
        .collect();
    let mut docs = vec![big.as_str()];
    docs.extend(many.iter().map(String::as_str));
    let long = k.write("long.yaml", &stream(&docs));
    let script = format!(
        "kubectl blastguard check -f {} | head -1; echo \"exit=${{PIPESTATUS[0]}}\"",
        long.display()
    );
    let piped = Run::from(k.command("bash", &["-c", &script]).output().expect("bash"));
    assert!(piped.stdout.starts_with("OBJECT "), "{}", piped.stdout);
    assert!(piped.stdout.ends_with("exit=1\n"), "{}", piped.stdout);
    assert!(piped.stderr.is_empty(), "{}", piped.stderr);
}

#[test]
fn directories_are_read_recursively_and_json_streams_too() {
    let k = Kubectl::new();
    let web = deployment(&k, "web", 2, &[]);
    let api = k.ai(&deployment(&k, "api", 30, &[]), "yaml");
    // `kubectl annotate --local -f DIR -o json` prints a stream of JSON objects.
    k.write("in/a/web.yaml", &web);
    k.write("in/z/api.yml", &api);
    let both = k.ai(&stream(&[&web, &api]), "json");
    assert!(
        both.matches("\"kind\": \"Deployment\"").count() == 2,
        "{both}"
    );
    k.write(
        "in/b/both.json",
        &both
            .replace("\"web\"", "\"web2\"")
            .replace("\"api\"", "\"api2\""),
    );
    k.write("in/notes.txt", "kind: [not yaml and not read");

    let run = k.plugin(&["check", "-f", "in", "-o", "json"], None);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let report = run.json();
    let files: Vec<_> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            format!(
                "{}#{}",
                r["source"]["file"].as_str().unwrap_or_default(),
                r["source"]["document"]
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            "in/a/web.yaml#1",
            "in/b/both.json#1",
            "in/b/both.json#2",
            "in/z/api.yml#1"
        ]
    );
    let got: Vec<_> = verdicts(&report)
        .into_iter()
        .map(|(name, verdict, ..)| format!("{name}={verdict}"))
        .collect();
    assert_eq!(got, ["web=allow", "web2=allow", "api2=deny", "api=deny"]);
}

#[test]
fn stdin_from_a_real_kubectl_pipe_and_list_kinds() {
    let k = Kubectl::new();
    // kubectl create ... -o yaml | kubectl annotate --local -f - ... | kubectl blastguard check -f -
    let mut create = k
        .command(
            "kubectl",
            &[
                "create",
                "deployment",
                "api",
                "--image=nginx",
                "--replicas=25",
                "--dry-run=client",
                "-o",
                "yaml",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl create");
    let mut annotate = k
        .command(
            "kubectl",
            &[
                "annotate",
                "--local",
                "-f",
                "-",
                "blastguard.io/ai-agent=claude-code",
                "-o",
                "yaml",
            ],
        )
        .stdin(create.stdout.take().expect("pipe"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl annotate");
    let check = k
        .command("kubectl", &["blastguard", "check", "-f", "-", "-n", "shop"])
        .stdin(annotate.stdout.take().expect("pipe"))
        .output()
        .expect("kubectl blastguard");
    assert!(create.wait().expect("kubectl create").success());
    assert!(annotate.wait().expect("kubectl annotate").success());
    let run = Run::from(check);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.row("Deployment shop/api")[3..7],
        ["25", "shop", "default", "deny"]
    );
    assert!(
        run.stdout.contains("from <stdin>:1:1 (document 1)"),
        "{}",
        run.stdout
    );

    // `kubectl get -o yaml` of several objects is a List; its items are checked.
    let list = json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [
            serde_yaml::from_str::<Value>(&k.ai(&deployment(&k, "one", 2, &[]), "yaml")).expect("yaml"),
            serde_yaml::from_str::<Value>(&deployment(&k, "two", 50, &[])).expect("yaml"),
        ]
    });
    let run = k.plugin(
        &["check", "-f", "-", "-o", "json"],
        Some(list.to_string().as_bytes()),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["summary"]["total"], 2);
    assert_eq!(report["results"][1]["source"]["item"], 1);
    assert_eq!(
        verdicts(&report),
        [
            (
                "one".into(),
                "allow".into(),
                "within_limits".into(),
                json!(2)
            ),
            (
                "two".into(),
                "allow".into(),
                "not_ai_assisted".into(),
                Value::Null
            ),
        ]
    );
}

#[test]
fn old_state_makes_updates_measured_as_the_webhook_measures_them() {
    let k = Kubectl::new();
    let current = deployment(&k, "api", 40, &["-n", "shop"]);
    let live = k.write(
        "current.yaml",
        &serde_yaml::to_string(&stored(&current, true)).expect("yaml"),
    );
    let live = live.to_str().expect("path");
    // An env var the previous apply set, to see that dropping it is a rollout.
    let base_file = k.write("base.yaml", &current);
    let with_env = k.make(&[
        "set",
        "env",
        "--local",
        "-f",
        base_file.to_str().expect("path"),
        "MODE=a",
        "-o",
        "yaml",
    ]);
    let live_with_env = k.write(
        "current-env.yaml",
        &serde_yaml::to_string(&stored(&with_env, true)).expect("yaml"),
    );

    let cases = [
        // (what, manifest, old, expected verdict, pods affected)
        (
            "scale 40 -> 45",
            deployment(&k, "api", 45, &["-n", "shop"]),
            live,
            "allow",
            5,
        ),
        (
            "scale 40 -> 55",
            deployment(&k, "api", 55, &["-n", "shop"]),
            live,
            "deny",
            15,
        ),
        (
            "new image",
            deployment(&k, "api", 40, &["-n", "shop", "--image=nginx:1.28"])
                .replace("image: nginx:1.27", "image: nginx:1.28"),
            live,
            "deny",
            40,
        ),
        (
            "env removed",
            deployment(&k, "api", 40, &["-n", "shop"]),
            live_with_env.to_str().expect("path"),
            "deny",
            40,
        ),
        (
            "unchanged",
            with_env.clone(),
            live_with_env.to_str().expect("path"),
            "allow",
            0,
        ),
    ];
    for (what, manifest, old, verdict, pods) in cases {
        let file = k.write("new.yaml", &k.ai(&manifest, "yaml"));
        let run = k.plugin(
            &[
                "check",
                "-f",
                file.to_str().expect("path"),
                "--old",
                old,
                "-o",
                "json",
            ],
            None,
        );
        let report = run.json();
        let r = &report["results"][0];
        assert_eq!(r["operation"], "UPDATE", "{what}");
        assert_eq!(r["verdict"], verdict, "{what}: {r}");
        assert_eq!(r["radius"]["podsAffected"], pods, "{what}: {r}");
        assert_eq!(run.code, if verdict == "deny" { 1 } else { 0 }, "{what}");
    }

    // The same manifest without --old, or with old state of another namespace, is a
    // CREATE of 45 pods.
    let file = k.write(
        "new.yaml",
        &k.ai(&deployment(&k, "api", 45, &["-n", "prod-eu"]), "yaml"),
    );
    let run = k.plugin(
        &[
            "check",
            "-f",
            file.to_str().expect("path"),
            "--old",
            live,
            "-o",
            "json",
        ],
        None,
    );
    let r = &run.json()["results"][0];
    assert_eq!(
        (r["operation"].as_str(), r["verdict"].as_str()),
        (Some("CREATE"), Some("deny"))
    );
    assert_eq!(r["rule"]["name"], "protected");
}

#[test]
fn delete_is_measured_from_the_current_state() {
    let k = Kubectl::new();
    let manifest = deployment(&k, "api", 3, &["-n", "shop"]);
    let live = k.write(
        "current.json",
        &stored(&deployment(&k, "api", 30, &["-n", "shop"]), false).to_string(),
    );
    let file = k.write("api.yaml", &manifest);
    let file = file.to_str().expect("path");
    let live = live.to_str().expect("path");
    // (args, verdict, pods): deleting is judged by identity, never by annotations.
    let cases: [(&[&str], &str, Value); 4] = [
        (&["--delete", "--as", AI_SA], "allow", json!(3)),
        (
            &["--delete", "--as", AI_SA, "--old", live],
            "deny",
            json!(30),
        ),
        (&["--delete", "--old", live], "allow", Value::Null),
        (
            &["--delete", "--old", live, "--field-manager", "kubectl-ai"],
            "allow",
            Value::Null,
        ),
    ];
    for (extra, verdict, pods) in cases {
        let mut args = vec!["check", "-f", file, "-o", "json"];
        args.extend_from_slice(extra);
        let run = k.plugin(&args, None);
        let r = &run.json()["results"][0];
        assert_eq!(r["operation"], "DELETE", "{extra:?}");
        assert_eq!(
            (r["verdict"].as_str(), &r["radius"]["podsAffected"]),
            (Some(verdict), &pods),
            "{extra:?}: {r}"
        );
    }
    let run = k.plugin(
        &[
            "check", "-f", file, "--delete", "--as", AI_SA, "--old", live,
        ],
        None,
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("AI-assisted delete of Deployment shop/api"),
        "{}",
        run.stdout
    );
}

#[test]
fn identity_flags_are_the_requester_the_webhook_sees() {
    let k = Kubectl::new();
    let policy = k.write(
        "policy.yaml",
        &k.make(&["blastguard", "policy", "default"])
            .replace("groups: []", "groups: [\"ai:agents\"]"),
    );
    assert!(
        std::fs::read_to_string(&policy)
            .expect("policy")
            .contains("ai:agents")
    );
    let policy = policy.to_str().expect("path");
    let file = k.write("api.yaml", &deployment(&k, "api", 12, &[]));
    let file = file.to_str().expect("path");
    // (flags, verdict, AI signal type, signal value)
    let cases: [(&[&str], &str, Value, Value); 5] = [
        (&[], "allow", Value::Null, Value::Null),
        (&["--as", "alice"], "allow", Value::Null, Value::Null),
        (&["--as", AI_SA], "deny", json!("user"), json!(AI_SA)),
        (
            &[
                "--as",
                "bob",
                "--as-group",
                "ops",
                "--as-group",
                "ai:agents",
            ],
            "deny",
            json!("group"),
            json!("ai:agents"),
        ),
        (
            &["--field-manager", "kubectl-ai-helper"],
            "deny",
            json!("field-manager"),
            json!("kubectl-ai-helper"),
        ),
    ];
    for (flags, verdict, kind, value) in cases {
        let mut args = vec!["check", "-f", file, "--policy", policy, "-o", "json"];
        args.extend_from_slice(flags);
        let run = k.plugin(&args, None);
        let r = &run.json()["results"][0];
        assert_eq!(r["verdict"], verdict, "{flags:?}: {r}");
        assert_eq!(
            (&r["aiSignal"]["type"], &r["aiSignal"]["value"]),
            (&kind, &value),
            "{flags:?}"
        );
    }
    // The requester is never the approver: the user named in --as is in the message's
    // AI signal, as the webhook reports it.
    let run = k.plugin(&["check", "-f", file, "--as", AI_SA], None);
    assert!(
        run.stdout
            .contains(&format!("AI signal: requester {AI_SA}.")),
        "{}",
        run.stdout
    );
}

#[test]
fn json_report_has_the_documented_schema_and_the_full_message() {
    let k = Kubectl::new();
    let big = k.ai(&deployment(&k, "api", 40, &["-n", "shop"]), "yaml");
    let file = k.write("api.yaml", &big);
    let file = file.to_str().expect("path");
    let json_run = k.plugin(&["check", "-f", file, "-o", "json"], None);
    assert_eq!(json_run.code, 1);
    let report = json_run.json();
    assert_eq!(report["apiVersion"], "blastguard.io/v1");
    assert_eq!(report["kind"], "CheckReport");
    assert_eq!(
        report["summary"],
        json!({"total": 1, "allowed": 0, "warned": 0, "denied": 1, "skipped": 0, "errors": 0})
    );
    let r = &report["results"][0];
    assert_eq!(
        r["source"],
        json!({"file": file, "document": 1, "item": null, "line": 1, "column": 1})
    );
    assert_eq!(
        r["object"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop", "name": "api"})
    );
    assert_eq!(r["operation"], "CREATE");
    assert_eq!(
        (r["verdict"].as_str(), r["reason"].as_str()),
        (Some("deny"), Some("over_limits"))
    );
    assert_eq!(r["aiSignal"]["type"], "annotation");
    assert_eq!(r["aiSignal"]["value"], "claude-code");
    assert_eq!(r["rule"], json!({"name": "default", "mode": "enforce"}));
    assert_eq!(
        r["radius"],
        json!({"podsAffected": 40, "percentAffected": null, "resultingReplicas": 40,
            "clusterScoped": false, "nodeWide": false, "namespacesInChangeSet": 1})
    );
    assert_eq!(
        r["violations"],
        json!([{"limit": "maxPodsAffected", "description": "pods affected 40 > 10 (maxPodsAffected)"}])
    );
    assert_eq!(
        r["approval"],
        json!({"result": "missing", "signers": [], "detail": null})
    );
    assert_eq!(r["warnings"], json!([]));
    assert_eq!(r["skipReason"], Value::Null);
    assert_eq!(report["errors"], json!([]));
    let payload = &r["approvalPayload"];
    assert_eq!(
        payload["target"],
        json!({"group": "apps", "kind": "Deployment", "namespace": "shop", "name": "api"})
    );
    assert_eq!(payload["digest"], r["digest"]);
    assert!(
        r["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:") && d.len() == 71)
    );

    // The message is the whole denial; the table's WHY is its first line, and the
    // text output carries the rest below the table.
    let message = r["message"].as_str().expect("message");
    assert!(message.lines().count() > 3, "{message}");
    let text = k.plugin(&["check", "-f", file], None);
    let first = message
        .lines()
        .next()
        .expect("line")
        .trim_start_matches("blastguard: ");
    assert_eq!(text.row("Deployment shop/api")[7], first);
    let without_times = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("notBefore"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(without_times(&text.stdout).contains(&without_times(message)));
}

#[test]
fn bad_input_exits_2_and_says_where() {
    let k = Kubectl::new();
    let good = deployment(&k, "api", 1, &[]);
    k.write(
        "bad.yaml",
        &format!(
            "{good}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: [unclosed\n"
        ),
    );
    let good_lines = good.lines().count();
    k.write("list.yaml", "- a\n- b\n");
    k.write(
        "noname.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
    );
    k.write("bad.json", "{\"apiVersion\": \"v1\",\n \"kind\": }");
    k.write("empty.yaml", "# nothing here\n");
    k.write("kz/kustomization.yaml", "resources: [deploy.yaml]\n");
    k.write("good.yaml", &good);
    // The line of the unclosed `[`: the `---` line, then its sixth line.
    let bad_line = good_lines + 6;
    let cases: [(&[&str], String); 9] = [
        (&["-f", "bad.yaml"], format!("bad.yaml:{bad_line}:")),
        (&["-f", "bad.json"], "bad.json:2:".to_string()),
        (
            &["-f", "missing.yaml"],
            "missing.yaml: No such file".to_string(),
        ),
        (
            &["-f", "list.yaml"],
            "list.yaml:1:1 (document 1): not a Kubernetes object".to_string(),
        ),
        (
            &["-f", "noname.yaml"],
            "noname.yaml:1:1 (document 1): ConfigMap has no metadata.name".to_string(),
        ),
        (
            &["-f", "empty.yaml"],
            "no Kubernetes objects found in empty.yaml; pass --empty ok".to_string(),
        ),
        (
            &["-f", "kz"],
            "kz/kustomization.yaml:1:1 (document 1): not a Kubernetes object: no apiVersion (a kustomization: check what it renders, `kubectl kustomize kz | kubectl blastguard check -f -`)".to_string(),
        ),
        (
            &["-f", "-", "--old", "-"],
            "stdin (-) can be read only once".to_string(),
        ),
        (
            &["-f", "good.yaml", "-o", "yaml"],
            "invalid value 'yaml'".to_string(),
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["check"];
        full.extend_from_slice(args);
        let run = k.plugin(&full, Some(good.as_bytes()));
        assert_eq!(run.code, 2, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains(&expected),
            "{args:?}: expected {expected:?} in:\n{}",
            run.stderr
        );
        // Input problems still come with the report (what could be read, and the
        // count of what could not); a usage error has none.
        let usage = args.contains(&"yaml");
        assert_eq!(run.stdout.is_empty(), usage, "{args:?}: {}", run.stdout);
        if !usage {
            assert!(
                run.stdout.contains("1 input(s) could not be checked"),
                "{args:?}: {}",
                run.stdout
            );
        }
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    // No input at all is a usage error, also 2.
    let run = k.plugin(&["check"], None);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--filename"), "{}", run.stderr);
}

#[test]
fn unknown_kinds_are_skipped_and_definitions_in_the_input_teach_kinds() {
    let k = Kubectl::new();
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: shop\n  annotations: {blastguard.io/ai-agent: claude-code}\n";
    let gadget = "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g\n  annotations: {blastguard.io/ai-agent: claude-code}\n";
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gadgets.example.com}\nspec:\n  group: example.com\n  scope: Cluster\n  names: {kind: Gadget, plural: gadgets, singular: gadget, listKind: GadgetList}\n  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]\n";
    let small = deployment(&k, "api", 2, &[]);

    let only_unknown = k.write("widget.yaml", &stream(&[widget, &small]));
    let run = k.plugin(&["check", "-f", only_unknown.to_str().expect("path")], None);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let row = run.row("Widget shop/w");
    assert_eq!(row[6], "skipped");
    assert!(
        row[7].starts_with(
            "not sent to the webhook: the chart registers no rule for example.com/v1/Widget"
        ),
        "{row:?}"
    );
    assert!(run.stdout.contains("1 skipped"));

    // The definition (a cluster-scoped object: an AI change to it needs approval) is
    // judged; the custom object it defines is known now, but the chart registers no
    // rule for it (it is not one of the policy's spec.workloads), so it is skipped.
    let with_crd = k.write("gadget.yaml", &stream(&[crd, gadget]));
    let run = k.plugin(
        &[
            "check",
            "-f",
            with_crd.to_str().expect("path"),
            "-o",
            "json",
            "--as",
            AI_SA,
        ],
        None,
    );
    assert_eq!(run.code, 1);
    let report = run.json();
    let reach: Vec<_> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["object"]["kind"].clone(),
                r["verdict"].clone(),
                r["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        reach,
        [
            (
                json!("CustomResourceDefinition"),
                json!("deny"),
                json!("over_limits")
            ),
            (json!("Gadget"), json!("skipped"), json!("not_sent")),
        ]
    );
}

#[test]
fn cluster_scoped_objects_and_change_set_reach() {
    let k = Kubectl::new();
    let namespace = k.make(&[
        "create",
        "namespace",
        "team-x",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let binding = k.make(&[
        "create",
        "clusterrolebinding",
        "readers",
        "--clusterrole=view",
        "--user=bob",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    // One AI change set touching five namespaces: the fourth is over
    // maxNamespacesPerChange (3), as the webhook counts a change set across requests.
    // The ConfigMap comes first and counts like any namespaced object: the API server
    // sends every namespaced kind.
    let configmap = k.make(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=x=y",
        "-n",
        "team-e",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let workloads: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|ns| deployment(&k, "cfg", 1, &["-n", &format!("team-{ns}")]))
        .collect();
    let mut docs: Vec<&str> = vec![&namespace, &binding, &configmap];
    docs.extend(workloads.iter().map(String::as_str));
    let file = k.write("set.yaml", &stream(&docs));
    let run = k.plugin(
        &["check", "-f", file.to_str().expect("path"), "--as", AI_SA],
        None,
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.row("Namespace team-x")[4..7],
        ["cluster", "default", "deny"]
    );
    assert_eq!(
        run.row("ClusterRoleBinding readers")[4..7],
        ["cluster", "default", "deny"]
    );
    assert_eq!(
        run.row("ConfigMap team-e/cfg")[4..7],
        ["team-e", "default", "allow"]
    );
    assert_eq!(run.row("Deployment team-a/cfg")[6], "allow");
    assert_eq!(
        run.row("Deployment team-b/cfg")[4..7],
        ["team-b (3 namespaces in change set)", "default", "allow"]
    );
    assert_eq!(
        run.row("Deployment team-c/cfg")[4..7],
        ["team-c (4 namespaces in change set)", "default", "deny"]
    );
    assert!(
        run.stdout
            .contains("namespaces in this change set 4 > 3 (maxNamespacesPerChange)")
    );
}

#[test]
fn review_mode_prints_the_webhooks_answer() {
    let k = Kubectl::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let fixture = |name: &str| fixtures.join(name).to_str().expect("path").to_string();
    // (fixture, exit code, allowed, status code)
    let cases = [
        ("deployment-create-ai-prod.json", 1, false, json!(403)),
        ("scale-by-hpa.json", 0, true, Value::Null),
        ("deployment-update-image-person.json", 0, true, Value::Null),
    ];
    for (name, code, allowed, status) in cases {
        let path = fixture(name);
        let sent: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json");
        let run = k.plugin(&["check", "--review", &path], None);
        assert_eq!(run.code, code, "{name}: {}", run.stderr);
        let answer = run.json();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(answer["kind"], "AdmissionReview", "{name}");
        assert_eq!(answer["response"]["uid"], sent["request"]["uid"], "{name}");
        assert_eq!(answer["response"]["allowed"], allowed, "{name}");
        assert_eq!(answer["response"]["status"]["code"], status, "{name}");
    }
    // From stdin, as a pipeline would feed it.
    let body = std::fs::read(fixture("namespace-create-ai.json")).expect("fixture");
    let run = k.plugin(&["check", "--review", "-"], Some(&body));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.json()["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Namespace team-x"))
    );

    // Not a review: nothing the server would answer with 200; exit 2 with the reason.
    let run = k.plugin(&["check", "--review", "-"], Some(b"{not json"));
    assert_eq!(run.code, 2);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr
            .contains("<stdin>: the body is not a valid AdmissionReview"),
        "{}",
        run.stderr
    );
    // A review the server answers with a rejection (it has a uid): printed, still 2.
    let v1beta1 = r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u-1","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{}}}"#;
    let run = k.plugin(&["check", "--review", "-"], Some(v1beta1.as_bytes()));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.json()["response"]["uid"], "u-1");
    assert_eq!(run.json()["response"]["allowed"], false);
    assert!(
        run.stderr.contains("admission.k8s.io/v1 only"),
        "{}",
        run.stderr
    );
    // --review takes no manifests.
    let run = k.plugin(&["check", "--review", "-", "-f", "x.yaml"], None);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
}

#[test]
fn help_has_examples_and_the_plugin_name() {
    let k = Kubectl::new();
    let run = k.plugin(&["--help"], None);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("Usage: kubectl blastguard <COMMAND>"),
        "{}",
        run.stdout
    );
    // digest and approve carry their examples in src/cli/approve.rs (approvals branch).
    for command in ["serve", "check", "policy", "completion"] {
        let run = k.plugin(&[command, "--help"], None);
        assert_eq!(run.code, 0, "{command}: {}", run.stderr);
        assert!(
            run.stdout.contains("Examples:"),
            "{command} --help has no examples:\n{}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains(&format!("Usage: kubectl blastguard {command}")),
            "{command}: {}",
            run.stdout
        );
    }
    // Run by its own name, the binary says so.
    let own = k
        .command(env!("CARGO_BIN_EXE_blastguard"), &["check", "--help"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&own.stdout).contains("Usage: blastguard check"));
}

#[test]
fn completion_scripts_are_valid_shell() {
    let k = Kubectl::new();
    let bash = k.plugin(&["completion", "bash"], None);
    assert_eq!(bash.code, 0, "{}", bash.stderr);
    // Completes the command it was run as, with the check flags.
    assert!(
        bash.stdout.contains("kubectl-blastguard"),
        "{}",
        bash.stdout
    );
    assert!(bash.stdout.contains("--allowed-signers"));
    let syntax = k
        .command("bash", &["-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(bash.stdout.as_bytes())?;
            child.wait_with_output()
        })
        .expect("bash -n");
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // Loaded into bash, it registers a completion for the command.
    let script = k.write("completion.bash", &bash.stdout);
    let loaded = k
        .command(
            "bash",
            &[
                "-c",
                &format!(
                    "source {} && complete -p kubectl-blastguard",
                    script.display()
                ),
            ],
        )
        .output()
        .expect("bash");
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    for (shell, marker) in [
        ("zsh", "#compdef kubectl-blastguard"),
        ("fish", "complete -c kubectl-blastguard"),
    ] {
        let run = k.plugin(&["completion", shell], None);
        assert_eq!(run.code, 0, "{shell}");
        assert!(run.stdout.contains(marker), "{shell}: {}", run.stdout);
        assert!(run.stdout.contains("field-manager"), "{shell}");
    }
    let run = k.plugin(&["completion", "tcsh"], None);
    assert_eq!(run.code, 2);
}

#[test]
fn color_only_on_a_terminal_and_never_with_no_color() {
    let k = Kubectl::new();
    let file = k.write("api.yaml", &k.ai(&deployment(&k, "api", 40, &[]), "yaml"));
    let command = format!("kubectl blastguard check -f {}", file.display());
    // `script` runs the command on a pseudo-terminal, as a person's shell would.
    let on_tty = |no_color: Option<&str>| {
        let mut c = k.command("script", &["-qec", &command, "/dev/null"]);
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        Run::from(c.output().expect("script"))
    };
    let colored = on_tty(None);
    assert!(
        colored.stdout.contains("\x1b[1;31mdeny"),
        "{:?}",
        colored.stdout
    );
    assert!(!on_tty(Some("1")).stdout.contains('\x1b'));
    // An empty NO_COLOR does not count (no-color.org).
    assert!(on_tty(Some("")).stdout.contains('\x1b'));
    let piped = k.plugin(&["check", "-f", file.to_str().expect("path")], None);
    assert_eq!(piped.code, 1);
    assert!(!piped.stdout.contains('\x1b'));
}

#[test]
fn rendered_manifests_from_helm_and_kustomize() {
    let k = Kubectl::new();
    // helm lives in the worktree's .tools/bin (scripts/install-tools.sh) or on PATH.
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin");
    let mut paths = vec![tools];
    paths.extend(std::env::split_paths(&k.path));
    let path = std::env::join_paths(paths).expect("PATH");
    let sh = |script: &str| {
        let out = k
            .command("sh", &["-c", script])
            .env("PATH", &path)
            .output()
            .expect("sh");
        Run::from(out)
    };
    let created = sh("helm create shop >/dev/null");
    assert_eq!(created.code, 0, "helm create: {}", created.stderr);

    // helm template puts no namespace in the objects: -n tells check where they go.
    let run = sh("helm template shop ./shop --set replicaCount=30 \
         | kubectl blastguard check -f - -n shop --as system:serviceaccount:ai-agents:claude -o json");
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    let kinds: Vec<_> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            format!(
                "{} {}/{} {}",
                r["object"]["kind"].as_str().unwrap_or_default(),
                r["object"]["namespace"].as_str().unwrap_or_default(),
                r["object"]["name"].as_str().unwrap_or_default(),
                r["verdict"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount shop/shop allow",
            "Service shop/shop allow",
            "Deployment shop/shop deny",
            "Pod shop/shop-test-connection allow",
        ]
    );
    let within = sh(
        "helm template shop ./shop --set replicaCount=3 | kubectl blastguard check -f - -n shop --as system:serviceaccount:ai-agents:claude",
    );
    assert_eq!(within.code, 0, "{}{}", within.stdout, within.stderr);

    // kustomize sets the namespace and adds the AI marker to every object.
    k.write("kz/deploy.yaml", &deployment(&k, "api", 12, &[]));
    k.write(
        "kz/kustomization.yaml",
        "resources: [deploy.yaml]\nnamespace: staging\ncommonAnnotations:\n  blastguard.io/ai-agent: claude-code\n",
    );
    let run = sh("kubectl kustomize kz | kubectl blastguard check -f -");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.row("Deployment staging/api")[2..7],
        [
            "annotation: claude-code",
            "12",
            "staging",
            "default",
            "deny"
        ]
    );
}

/// Stands in for the API server: the AdmissionReview v1 it sends to the webhook when
/// `user` creates `object`, or updates `old` to `object`.
fn api_server_review(index: usize, object: &Value, old: Option<&Value>, user: &str) -> Value {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().expect("kind");
    let resource = match kind {
        "Deployment" => "deployments",
        "Namespace" => "namespaces",
        "ConfigMap" => "configmaps",
        "CronJob" => "cronjobs",
        other => panic!("no resource for {other} in this stand-in"),
    };
    // The API server defaults what it is sent before the webhook sees it.
    let mut object = blastguard::defaults::defaulted(object).0;
    let old = old.map(|o| blastguard::defaults::defaulted(o).0);
    let namespace = (kind != "Namespace").then(|| {
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    });
    if let Some(ns) = &namespace {
        object["metadata"]["namespace"] = json!(ns);
    }
    let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
    let mut request = json!({
        "uid": format!("6c1e5a10-0000-4000-8000-{index:012}"),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": resource},
        "name": object["metadata"]["name"],
        "operation": operation,
        "userInfo": {"username": user, "groups": ["system:authenticated"]},
        "object": object,
        "oldObject": old,
        "dryRun": false,
        "options": {"kind": if old.is_some() { "UpdateOptions" } else { "CreateOptions" },
            "apiVersion": "meta.k8s.io/v1"},
    });
    if let Some(ns) = namespace {
        request["namespace"] = json!(ns);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// A denial carries a payload valid from "now": the two runs may be a second apart.
fn without_validity(message: &str) -> String {
    let mut out = message.to_string();
    for field in ["\"notBefore\":\"", "\"notAfter\":\""] {
        if let Some(start) = out.find(field).map(|i| i + field.len())
            && let Some(len) = out[start..].find('"')
        {
            out.replace_range(start..start + len, "T");
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn check_and_the_https_webhook_give_the_same_verdicts_and_messages() {
    let k = Kubectl::new();
    // A warn-mode rule too, so warnings are compared as well as denials.
    let policy = k.write(
        "policy.yaml",
        &k.make(&["blastguard", "policy", "default"]).replacen(
            "  rules:",
            "  rules:\n    - name: staging\n      namespaces: [staging]\n      mode: warn\n      limits: {maxPodsAffected: 5}",
            1,
        ),
    );
    let policy = policy.to_str().expect("path");
    let yaml = |text: &str| -> Value { serde_yaml::from_str(text).expect("kubectl YAML") };

    // The current state of two Deployments, as stored; the new objects change replicas
    // of one and the image of the other.
    let mut old = vec![
        stored(&deployment(&k, "api", 10, &["-n", "shop"]), true),
        stored(&deployment(&k, "pay", 12, &["-n", "shop"]), true),
    ];
    for o in &mut old {
        o["metadata"]["annotations"]["blastguard.io/ai-agent"] = json!("claude-code");
    }
    let mut scaled = old[0].clone();
    scaled["spec"]["replicas"] = json!(14);
    let mut new_image = old[1].clone();
    new_image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");

    let mut objects: Vec<Value> = vec![
        yaml(&k.ai(&deployment(&k, "big", 40, &[]), "yaml")),
        yaml(&deployment(&k, "web", 3, &["-n", "shop"])),
        yaml(&k.make(&[
            "create",
            "namespace",
            "team-x",
            "--dry-run=client",
            "-o",
            "yaml",
        ])),
        yaml(&k.make(&[
            "create",
            "cronjob",
            "report",
            "--image=busybox",
            "--schedule=*/5 * * * *",
            "-n",
            "shop",
            "--dry-run=client",
            "-o",
            "yaml",
        ])),
        yaml(&deployment(&k, "canary", 8, &["-n", "staging"])),
        yaml(&deployment(&k, "tiny", 2, &["-n", "staging"])),
        yaml(&deployment(&k, "db", 1, &["-n", "prod"])),
        scaled,
        new_image,
    ];
    for ns in ["team-a", "team-b", "team-c"] {
        objects.push(yaml(&k.make(&[
            "create",
            "configmap",
            "cfg",
            "--from-literal=x=y",
            "-n",
            ns,
            "--dry-run=client",
            "-o",
            "yaml",
        ])));
    }

    // Through check: the objects as one multi-document file, the stored state as --old.
    let docs: Vec<String> = objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("yaml"))
        .collect();
    let file = k.write(
        "change.yaml",
        &stream(&docs.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    let current = k.write(
        "current.yaml",
        &stream(
            &old.iter()
                .map(|o| serde_yaml::to_string(o).expect("yaml"))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ),
    );
    let run = k.plugin(
        &[
            "check",
            "-f",
            file.to_str().expect("path"),
            "--old",
            current.to_str().expect("path"),
            "--as",
            AI_SA,
            "--policy",
            policy,
            "-o",
            "json",
        ],
        None,
    );
    let report = run.json();
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), objects.len());

    // Through the HTTPS webhook, in the same order, as the API server sends them.
    let pki = common::Pki::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        common::Server::start_with_leaf(dir.path(), &pki.leaf(1, 2030), &["--policy", policy]);
    let client = common::webhook_client(&pki.ca_pem, common::Http::Two);
    let mut seen = std::collections::BTreeSet::new();
    for (i, (object, r)) in objects.iter().zip(results).enumerate() {
        let name = object["metadata"]["name"].as_str().expect("name");
        let previous = old.iter().find(|o| o["metadata"]["name"] == name);
        let review = api_server_review(i, object, previous, AI_SA);
        let answer =
            common::post_review(&client, &server, serde_json::to_vec(&review).expect("json"))
                .await
                .expect("the webhook answers");
        assert_eq!(answer.status, 200);
        let response = &answer.json()["response"];
        let warnings = response["warnings"].as_array().cloned().unwrap_or_default();
        let verdict = match (response["allowed"].as_bool(), warnings.is_empty()) {
            (Some(false), _) => "deny",
            (Some(true), false) => "warn",
            _ => "allow",
        };
        let what = format!("{} {name}", object["kind"]);
        assert_eq!(
            r["operation"],
            if previous.is_some() {
                "UPDATE"
            } else {
                "CREATE"
            },
            "{what}"
        );
        assert_eq!(
            r["verdict"], verdict,
            "{what}: check {r}\nwebhook {response}"
        );
        assert_eq!(r["warnings"], json!(warnings), "{what}");
        let message = response["status"]["message"]
            .as_str()
            .filter(|_| verdict == "deny");
        assert_eq!(
            r["message"].as_str().map(without_validity),
            message.map(without_validity),
            "{what}"
        );
        seen.insert(verdict);
    }
    // The comparison covered every kind of answer.
    assert_eq!(seen, ["allow", "deny", "warn"].into_iter().collect());
}
