//! `kubectl blastguard check` and the HTTPS webhook (`blastguard serve`, called as the
//! API server calls it: the AdmissionReviews of tests/common/review.rs stand in for it)
//! give the same verdicts and messages for the same changes.
//!
//! No API server runs here. Where a test needs the current state of an object as the
//! cluster stores it (`kubectl get -o yaml`), `stored` (tests/common/plugin.rs) stands in
//! for the API server: it adds what the API server adds on create (uid, resourceVersion,
//! defaults), as scripts/make-fixtures.py does for the engine's fixtures.

mod common;

use common::plugin::*;
use common::review::Request;
use serde_json::{Value, json};

/// Stands in for the API server: the AdmissionReview v1 it sends to the webhook when
/// `user` creates `object`, or updates `old` to `object`.
fn api_server_review(index: usize, object: &Value, old: Option<&Value>, user: &str) -> Value {
    // The API server defaults what it is sent before the webhook sees it.
    let mut object = blastguard::defaults::defaulted(object).0;
    let old = old.map(|o| blastguard::defaults::defaulted(o).0);
    if object["kind"] != "Namespace" && object["metadata"]["namespace"].is_null() {
        object["metadata"]["namespace"] = json!("default");
    }
    let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
    let mut request = Request::on(operation, Some(&object), old.as_ref())
        .by(user)
        .in_groups(&["system:authenticated"])
        .uid(&format!("6c1e5a10-0000-4000-8000-{index:012}"));
    // `kubectl blastguard check` knows no field manager: neither does this request.
    request.0["options"]
        .as_object_mut()
        .expect("options")
        .remove("fieldManager");
    request.json()
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
        stored(&k.deployment_yaml("api", 10, &["-n", "shop"]), true),
        stored(&k.deployment_yaml("pay", 12, &["-n", "shop"]), true),
    ];
    for o in &mut old {
        o["metadata"]["annotations"]["blastguard.io/ai-agent"] = json!("claude-code");
    }
    let mut scaled = old[0].clone();
    scaled["spec"]["replicas"] = json!(14);
    let mut new_image = old[1].clone();
    new_image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");

    let mut objects: Vec<Value> = vec![
        yaml(&k.ai(&k.deployment_yaml("big", 40, &[]), "yaml")),
        yaml(&k.deployment_yaml("web", 3, &["-n", "shop"])),
        yaml(&k.namespace_yaml("team-x")),
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
        yaml(&k.deployment_yaml("canary", 8, &["-n", "staging"])),
        yaml(&k.deployment_yaml("tiny", 2, &["-n", "staging"])),
        yaml(&k.deployment_yaml("db", 1, &["-n", "prod"])),
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
