//! The kubectl plugin reads what people feed it (docs/kubectl-plugin.md), through the
//! real kubectl: multi-document files, directories and JSON streams, stdin from a real
//! kubectl pipe and List kinds, unknown kinds skipped and CRDs in the input teaching
//! kinds, and manifests rendered by helm and kustomize.
//!
//! No API server runs here. Where a test needs the current state of an object as the
//! cluster stores it (`kubectl get -o yaml`), `stored` (tests/common/plugin.rs) stands in
//! for the API server: it adds what the API server adds on create (uid, resourceVersion,
//! defaults), as scripts/make-fixtures.py does for the engine's fixtures.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::plugin::*;
use serde_json::{Value, json};

#[test]
fn multi_document_file_denies_the_big_ai_change_only() {
    let k = Kubectl::new();
    let big = k.ai(&k.deployment_yaml("api", 40, &[]), "yaml");
    let small = k.ai(&k.deployment_yaml("web", 3, &[]), "yaml");
    let person = k.deployment_yaml("batch", 40, &[]);
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
    let web = k.deployment_yaml("web", 2, &[]);
    let api = k.ai(&k.deployment_yaml("api", 30, &[]), "yaml");
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
            serde_yaml::from_str::<Value>(&k.ai(&k.deployment_yaml("one", 2, &[]), "yaml")).expect("yaml"),
            serde_yaml::from_str::<Value>(&k.deployment_yaml("two", 50, &[])).expect("yaml"),
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
fn unknown_kinds_are_skipped_and_definitions_in_the_input_teach_kinds() {
    let k = Kubectl::new();
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: shop\n  annotations: {blastguard.io/ai-agent: claude-code}\n";
    let gadget = "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g\n  annotations: {blastguard.io/ai-agent: claude-code}\n";
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gadgets.example.com}\nspec:\n  group: example.com\n  scope: Cluster\n  names: {kind: Gadget, plural: gadgets, singular: gadget, listKind: GadgetList}\n  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]\n";
    let small = k.deployment_yaml("api", 2, &[]);

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
    k.write("kz/deploy.yaml", &k.deployment_yaml("api", 12, &[]));
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
