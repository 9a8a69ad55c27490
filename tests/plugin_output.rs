//! What the kubectl plugin prints (docs/kubectl-plugin.md), through the real kubectl:
//! the JSON report's documented schema, bad input exiting 2 and saying where, review mode
//! printing the webhook's answer, help with examples, valid completion scripts, and color
//! only on a terminal.
//!
//! No API server runs here. Where a test needs the current state of an object as the
//! cluster stores it (`kubectl get -o yaml`), `stored` (tests/common/plugin.rs) stands in
//! for the API server: it adds what the API server adds on create (uid, resourceVersion,
//! defaults), as scripts/make-fixtures.py does for the engine's fixtures.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;

use common::plugin::*;
use common::review::Request;
use serde_json::{Value, json};

#[test]
fn json_report_has_the_documented_schema_and_the_full_message() {
    let k = Kubectl::new();
    let big = k.ai(&k.deployment_yaml("api", 40, &["-n", "shop"]), "yaml");
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
    let good = k.deployment_yaml("api", 1, &[]);
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
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
    let mut v1beta1 = Request::on("CREATE", Some(&pod), None)
        .uid("u-1")
        .without_identity()
        .json();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let v1beta1 = v1beta1.to_string();
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
    let file = k.write(
        "api.yaml",
        &k.ai(&k.deployment_yaml("api", 40, &[]), "yaml"),
    );
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
