//! `blastguard check` in CI (issue 12, item 5): a report for everything readable when
//! some input is bad, what empty input means, the line and column of every object in
//! every output format, SARIF 2.1.0 for code scanning, and the GitHub Actions example
//! of docs/kubectl-plugin.md run as the runner would run it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::objects::{ai_deployment, yaml};
use common::plugin::{Kubectl, Run};
use serde_json::{Value, json};

/// An AI-assisted Deployment's YAML; `replicas` over 10 is over the embedded policy's
/// limit.
fn deployment(name: &str, namespace: &str, replicas: u32) -> String {
    yaml(&ai_deployment(namespace, name, replicas, "nginx:1.27"))
}

/// A policy whose `staging` namespace only warns.
const WARN_POLICY: &str = "apiVersion: blastguard.io/v1alpha1
kind: BlastRadiusPolicy
metadata: {name: ci}
spec:
  rules:
    - name: staging
      namespaces: [staging]
      mode: warn
      limits: {maxPodsAffected: 10}
    - name: default
      namespaces: [\"*\"]
      limits: {maxPodsAffected: 10, maxNamespacesPerChange: 3}
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, text).expect("write");
    path
}

/// `blastguard ARGS` in `dir`, with nothing of the developer's environment.
fn check(dir: &Path, args: &[&str]) -> Run {
    let out = common::blastguard()
        .args(args)
        .current_dir(dir)
        .env_remove("BLASTGUARD_POLICY")
        .env_remove("BLASTGUARD_ALLOWED_SIGNERS")
        .env("USER", "ci-runner")
        .output()
        .expect("run blastguard");
    Run::from(out)
}

#[test]
fn one_bad_file_does_not_hide_the_verdicts_on_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    write(d, "k8s/a-big.yaml", &deployment("big", "shop", 40));
    let broken = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: [unclosed\n";
    write(d, "k8s/b-broken.yaml", broken);
    write(d, "k8s/c-small.yaml", &deployment("small", "shop", 2));
    write(
        d,
        "k8s/d-noname.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {}\n",
    );

    let run = check(d, &["check", "-f", "k8s", "-o", "json"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    let report = run.json();
    let verdicts: Vec<_> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| (r["object"]["name"].clone(), r["verdict"].clone()))
        .collect();
    assert_eq!(
        verdicts,
        [
            (json!("big"), json!("deny")),
            (json!("small"), json!("allow"))
        ]
    );
    assert_eq!(report["summary"]["errors"], 2);
    let errors = report["errors"].as_array().expect("errors");
    assert_eq!(errors[0]["file"], "k8s/b-broken.yaml");
    assert_eq!(errors[0]["line"], 5, "{errors:?}");
    assert!(
        errors[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("k8s/b-broken.yaml:5:")),
        "{errors:?}"
    );
    assert_eq!(
        errors[1],
        json!({"file": "k8s/d-noname.yaml", "line": 1, "column": 1,
            "message": "k8s/d-noname.yaml:1:1 (document 1): Deployment has no metadata.name"})
    );
    // Each problem is on stderr too, where a CI log shows it.
    assert!(
        run.stderr.contains("k8s/b-broken.yaml:5:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("has no metadata.name"),
        "{}",
        run.stderr
    );

    // The text report: both verdicts, and the problems counted.
    let text = check(d, &["check", "-f", "k8s"]);
    assert_eq!(text.code, 2);
    assert!(
        text.stdout.contains("Deployment shop/big"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("Deployment shop/small"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(
            "2 object(s): 1 denied, 0 warned, 1 allowed, 0 skipped; 2 input(s) could not be checked"
        ),
        "{}",
        text.stdout
    );
    assert!(
        text.stderr.contains("k8s/b-broken.yaml:5:"),
        "{}",
        text.stderr
    );

    // A missing file among good ones: the same.
    let missing = check(
        d,
        &[
            "check",
            "-f",
            "k8s/c-small.yaml",
            "-f",
            "nope.yaml",
            "-o",
            "json",
        ],
    );
    assert_eq!(missing.code, 2);
    let report = missing.json();
    assert_eq!(report["results"][0]["verdict"], "allow");
    assert_eq!(report["errors"][0]["file"], "nope.yaml");
    assert_eq!(report["errors"][0]["line"], Value::Null);
}

#[test]
fn empty_input_is_an_error_unless_told_otherwise() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    write(d, "empty.yaml", "# the chart rendered nothing\n---\n");
    std::fs::create_dir(d.join("nothing")).expect("mkdir");
    for source in ["empty.yaml", "nothing"] {
        let run = check(d, &["check", "-f", source, "-o", "json"]);
        assert_eq!(run.code, 2, "{source}: {}{}", run.stdout, run.stderr);
        let report = run.json();
        assert_eq!(report["summary"]["total"], 0);
        let message = report["errors"][0]["message"].as_str().expect("message");
        assert_eq!(
            message,
            format!(
                "no Kubernetes objects found in {source}; pass --empty ok if nothing to check is fine"
            )
        );
        assert!(run.stderr.contains(message), "{}", run.stderr);

        let ok = check(d, &["check", "-f", source, "-o", "json", "--empty", "ok"]);
        assert_eq!(ok.code, 0, "{source}: {}{}", ok.stdout, ok.stderr);
        assert_eq!(ok.json()["errors"], json!([]));
        assert!(ok.stderr.is_empty(), "{}", ok.stderr);
        let text = check(d, &["check", "-f", source, "--empty", "ok"]);
        assert_eq!(text.code, 0);
        assert!(text.stdout.contains("0 object(s)"), "{}", text.stdout);
    }
    let bad = check(d, &["check", "-f", "empty.yaml", "--empty", "maybe"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("invalid value 'maybe'"),
        "{}",
        bad.stderr
    );
}

#[test]
fn every_format_says_where_each_object_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    // A comment before the first `---` (no document of its own), a small object, then
    // the big one after it; and a JSON List whose second item starts on line 3,
    // column 5.
    let small = deployment("small", "shop", 1);
    let yaml = format!("# shop\n---\n{small}---\n{}", deployment("big", "shop", 40));
    // Lines 1-2 are the comment and `---`, the small object follows, then `---`.
    let big_line = 2 + small.lines().count() + 2;
    write(d, "shop.yaml", &yaml);
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        serde_saphyr::from_str::<Value>(&deployment("one", "web", 1)).expect("yaml"),
        serde_saphyr::from_str::<Value>(&deployment("two", "web", 30)).expect("yaml"),
    ]});
    let items = list["items"].as_array().expect("items");
    let json_text = format!(
        "{{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [\n  {},\n    {}\n]}}\n",
        items[0], items[1]
    );
    write(d, "web.json", &json_text);

    let run = check(
        d,
        &["check", "-f", "shop.yaml", "-f", "web.json", "-o", "json"],
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let sources: Vec<_> = run.json()["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["source"].clone())
        .collect();
    assert_eq!(
        sources,
        [
            json!({"file": "shop.yaml", "document": 1, "item": null, "line": 3, "column": 1}),
            json!({"file": "shop.yaml", "document": 2, "item": null, "line": big_line, "column": 1}),
            json!({"file": "web.json", "document": 1, "item": 0, "line": 2, "column": 3}),
            json!({"file": "web.json", "document": 1, "item": 1, "line": 3, "column": 5}),
        ]
    );
    assert_eq!(
        yaml.lines().nth(big_line - 1),
        Some("apiVersion: apps/v1"),
        "line {big_line} is where the big one starts"
    );

    let text = check(d, &["check", "-f", "shop.yaml", "-f", "web.json"]);
    assert!(
        text.stdout.contains(&format!(
            "deny Deployment shop/big, from shop.yaml:{big_line}:1 (document 2):"
        )),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("deny Deployment web/two, from web.json:3:5 (document 1, item 1):"),
        "{}",
        text.stdout
    );

    let sarif = check(
        d,
        &["check", "-f", "shop.yaml", "-f", "web.json", "-o", "sarif"],
    );
    assert_eq!(sarif.code, 1);
    let log = sarif.json();
    let places: Vec<_> = log["runs"][0]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["locations"][0]["physicalLocation"].clone())
        .collect();
    assert_eq!(
        places,
        [
            json!({"artifactLocation": {"uri": "shop.yaml"}, "region": {"startLine": big_line, "startColumn": 1}}),
            json!({"artifactLocation": {"uri": "web.json"}, "region": {"startLine": 3, "startColumn": 5}}),
        ]
    );
}

#[test]
fn sarif_has_one_result_per_denied_or_warned_object_and_is_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    write(d, "policy.yaml", WARN_POLICY);
    let docs = [
        deployment("denied", "shop", 40),
        deployment("warned", "staging", 40),
        deployment("fine", "shop", 2),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: other}\n".to_string(),
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: reader\n  annotations: {blastguard.io/ai-agent: claude-code}\nrules: []\n".to_string(),
    ];
    write(d, "k8s/all.yaml", &docs.join("---\n"));
    // Where each document starts: after the ones before it and their `---`.
    let line_of = |n: usize| {
        1 + docs[..n]
            .iter()
            .map(|d| d.lines().count() + 1)
            .sum::<usize>()
    };
    write(
        d,
        "k8s/broken.json",
        "{\"apiVersion\": \"v1\",\n \"kind\": }",
    );
    let run = check(
        d,
        &[
            "check",
            "-f",
            "./k8s",
            "--policy",
            "policy.yaml",
            "-o",
            "sarif",
        ],
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    let log = run.json();

    assert_eq!(log["version"], "2.1.0");
    let sarif_run = &log["runs"][0];
    assert_eq!(sarif_run["tool"]["driver"]["name"], "blastguard");
    let results = sarif_run["results"].as_array().expect("results");
    let summary: Vec<_> = results
        .iter()
        .map(|r| {
            (
                r["ruleId"].as_str().unwrap_or_default(),
                r["level"].as_str().unwrap_or_default(),
                r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                    .as_str()
                    .unwrap_or_default(),
                r["locations"][0]["physicalLocation"]["region"]["startLine"].clone(),
            )
        })
        .collect();
    // The allowed Deployment and the ConfigMap (never sent to the webhook) have none.
    assert_eq!(
        summary,
        [
            ("maxPodsAffected", "error", "k8s/all.yaml", json!(1)),
            (
                "maxPodsAffected",
                "warning",
                "k8s/all.yaml",
                json!(line_of(1))
            ),
            (
                "allowClusterScoped",
                "error",
                "k8s/all.yaml",
                json!(line_of(4))
            ),
            ("invalidInput", "error", "k8s/broken.json", json!(2)),
        ]
    );
    assert!(
        results[0]["message"]["text"].as_str().is_some_and(|t| t
            .starts_with("Deployment shop/denied: blastguard: this AI-assisted create")
            && t.contains("\"kind\":\"Approval\"")),
        "{}",
        results[0]["message"]
    );
    // Each result's rule is described in the driver, at its index.
    let rules = sarif_run["tool"]["driver"]["rules"]
        .as_array()
        .expect("rules");
    for r in results {
        let index = r["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[index]["id"], r["ruleId"]);
        assert!(rules[index]["shortDescription"]["text"].is_string());
    }
    assert_eq!(
        sarif_run["invocations"][0]["executionSuccessful"], false,
        "a file could not be read"
    );
    required_fields_by_hand(&log);
    validate_against_the_schema(&run.stdout);
}

/// What SARIF 2.1.0 requires of what blastguard writes (the schema's `required` lists,
/// and the `uri-reference` format), checked without the schema.
fn required_fields_by_hand(log: &Value) {
    assert!(
        log["$schema"]
            .as_str()
            .is_some_and(|s| s.starts_with("https://"))
    );
    assert_eq!(log["version"], "2.1.0");
    for run in log["runs"].as_array().expect("runs") {
        let driver = &run["tool"]["driver"];
        assert!(driver["name"].is_string(), "tool.driver.name is required");
        for rule in driver["rules"].as_array().expect("rules") {
            assert!(rule["id"].is_string(), "reportingDescriptor.id is required");
        }
        for invocation in run["invocations"].as_array().expect("invocations") {
            assert!(invocation["executionSuccessful"].is_boolean());
        }
        assert!(
            ["utf16CodeUnits", "unicodeCodePoints"]
                .contains(&run["columnKind"].as_str().unwrap_or_default())
        );
        for result in run["results"].as_array().expect("results") {
            assert!(
                result["message"]["text"].is_string(),
                "result.message is required"
            );
            assert!(
                ["error", "warning", "note", "none"]
                    .contains(&result["level"].as_str().unwrap_or_default())
            );
            for location in result["locations"].as_array().expect("locations") {
                let physical = &location["physicalLocation"];
                let uri = physical["artifactLocation"]["uri"].as_str().expect("uri");
                assert!(
                    uri.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._~/:%+=@".contains(c)),
                    "{uri} is not a URI reference"
                );
                if let Some(region) = physical.get("region") {
                    assert!(region["startLine"].as_u64().is_some_and(|l| l >= 1));
                    assert!(region["startColumn"].as_u64().is_some_and(|c| c >= 1));
                }
            }
        }
    }
}

/// Validates against the OASIS SARIF 2.1.0 JSON schema with Python's `jsonschema`,
/// when both are at hand: the schema is not on PyPI and this test does not download
/// it. Put it at `$BLASTGUARD_SARIF_SCHEMA` or `.tools/sarif-schema-2.1.0.json` (from
/// https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json);
/// `jsonschema` comes with scripts/install-tools.sh's venv (kubernetes-validate).
fn validate_against_the_schema(sarif: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema = std::env::var_os("BLASTGUARD_SARIF_SCHEMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".tools/sarif-schema-2.1.0.json"));
    if !schema.is_file() {
        eprintln!(
            "SARIF schema not found at {}: checked the required fields by hand only",
            schema.display()
        );
        return;
    }
    let venv = root.join(".tools/venv/bin/python");
    let python = if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let log = write(dir.path(), "log.sarif", sarif);
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        log = json.load(open(sys.argv[2]))\n\
        jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(log)\n\
        print('valid')\n";
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(&schema)
        .arg(&log)
        .output();
    let Ok(out) = out else {
        eprintln!("no python: checked the required fields by hand only");
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'jsonschema'") {
        eprintln!("no jsonschema module: checked the required fields by hand only");
        return;
    }
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "valid",
        "the SARIF log does not validate against {}:\n{stderr}",
        schema.display()
    );
}

/// A step of the Actions example: its `if`, its `env`, and its `run` script.
type Step = (Option<String>, Vec<(String, String)>, String);

/// The `run` scripts of the GitHub Actions example in docs/kubectl-plugin.md, with
/// their step's `if` and `env`, read from the doc so the doc cannot rot.
fn documented_steps() -> Vec<Step> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/kubectl-plugin.md"),
    )
    .expect("docs/kubectl-plugin.md");
    let start = doc
        .find("```yaml\n- name: blast radius\n")
        .expect("the Actions example is in docs/kubectl-plugin.md");
    let block = &doc[start + "```yaml\n".len()..];
    let block = &block[..block.find("```").expect("the block ends")];
    let steps: Vec<Value> = serde_saphyr::from_str(block).expect("the example is YAML");
    steps
        .iter()
        .filter_map(|step| {
            let run = step["run"].as_str()?;
            let env = step["env"]
                .as_object()
                .map(|e| {
                    e.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            Some((
                step["if"].as_str().map(str::to_string),
                env,
                run.to_string(),
            ))
        })
        .collect()
}

/// Runs the steps as a runner does: each `run` with `bash -e` (GitHub Actions' default
/// shell on Linux), in order; after a failure only `if: always()` steps run. Returns
/// whether the job passed, and each step's exit code.
fn run_job(workspace: &Path, path: &std::ffi::OsStr, steps: &[Step]) -> (bool, Vec<i32>) {
    let mut passed = true;
    let mut codes = Vec::new();
    for (condition, env, script) in steps {
        if !passed && condition.as_deref() != Some("always()") {
            continue;
        }
        let script_file = write(workspace, ".step.sh", script);
        let out = Command::new("bash")
            .arg("-e")
            .arg(&script_file)
            .current_dir(workspace)
            .env("PATH", path)
            .env("HOME", workspace)
            // The step's own env (the documented BLASTGUARD_POLICY) over the test's.
            .env_remove("BLASTGUARD_POLICY")
            .env_remove("BLASTGUARD_ALLOWED_SIGNERS")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("bash");
        let code = out.status.code().unwrap_or(-1);
        if code != 0 {
            passed = false;
        }
        codes.push(code);
    }
    (passed, codes)
}

#[test]
fn the_documented_github_actions_steps_fail_the_job_on_a_denial() {
    let steps = documented_steps();
    assert_eq!(steps.len(), 2, "the gate and the SARIF step");
    assert!(steps[0].2.contains("set -o pipefail"), "{}", steps[0].2);

    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    // kubectl on PATH with the plugin beside it, as in the runner.
    let kubectl = Kubectl::new();
    let path = kubectl.path.clone();
    let workspace = d.join("repo");
    write(
        &workspace,
        "overlays/prod/kustomization.yaml",
        "resources: [deploy.yaml]\n",
    );
    // The cluster's policy, committed as the docs say (here the chart's default).
    write(
        &workspace,
        "deploy/blastguard-policy.yaml",
        blastguard::policy::DEFAULT_POLICY_YAML,
    );

    // Denied: the gate step fails, the SARIF step still writes the log and passes.
    write(
        &workspace,
        "overlays/prod/deploy.yaml",
        &deployment("api", "shop", 40),
    );
    let (passed, codes) = run_job(&workspace, &path, &steps);
    assert!(!passed, "a denial must fail the job: {codes:?}");
    assert_eq!(codes, [1, 0]);
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace.join("report.json")).expect("report.json"),
    )
    .expect("JSON");
    assert_eq!(report["summary"]["denied"], 1);
    assert_eq!(
        report["policy"]["source"], "file deploy/blastguard-policy.yaml",
        "the report names the policy that judged"
    );
    let sarif: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace.join("blastguard.sarif")).expect("the SARIF log"),
    )
    .expect("JSON");
    assert_eq!(sarif["runs"][0]["results"][0]["level"], "error");
    assert_eq!(
        sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "rendered.yaml"
    );

    // Without `set -o pipefail`, `| tee` would have passed the same denial.
    let mut unguarded = steps.clone();
    unguarded[0].2 = unguarded[0].2.replace("set -o pipefail\n", "");
    let (passed, _) = run_job(&workspace, &path, &unguarded[..1]);
    assert!(passed, "the example's pipefail is what makes the job fail");

    // Admitted: both steps pass.
    write(
        &workspace,
        "overlays/prod/deploy.yaml",
        &deployment("api", "shop", 3),
    );
    let (passed, codes) = run_job(&workspace, &path, &steps);
    assert!(passed, "{codes:?}");
    assert_eq!(codes, [0, 0]);
}
