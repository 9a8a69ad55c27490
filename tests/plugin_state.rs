//! The kubectl plugin measures changes against the current state as the webhook does
//! (docs/kubectl-plugin.md), through the real kubectl: updates and deletes from the old
//! state, the identity flags as the requester the webhook sees, cluster-scoped objects
//! and change-set reach.
//!
//! No API server runs here. Where a test needs the current state of an object as the
//! cluster stores it (`kubectl get -o yaml`), `stored` (tests/common/plugin.rs) stands in
//! for the API server: it adds what the API server adds on create (uid, resourceVersion,
//! defaults), as scripts/make-fixtures.py does for the engine's fixtures.

mod common;

use common::plugin::*;
use serde_json::{Value, json};

#[test]
fn old_state_makes_updates_measured_as_the_webhook_measures_them() {
    let k = Kubectl::new();
    let current = k.deployment_yaml("api", 40, &["-n", "shop"]);
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
            k.deployment_yaml("api", 45, &["-n", "shop"]),
            live,
            "allow",
            5,
        ),
        (
            "scale 40 -> 55",
            k.deployment_yaml("api", 55, &["-n", "shop"]),
            live,
            "deny",
            15,
        ),
        (
            "new image",
            k.deployment_yaml("api", 40, &["-n", "shop", "--image=nginx:1.28"])
                .replace("image: nginx:1.27", "image: nginx:1.28"),
            live,
            "deny",
            40,
        ),
        (
            "env removed",
            k.deployment_yaml("api", 40, &["-n", "shop"]),
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
        &k.ai(&k.deployment_yaml("api", 45, &["-n", "prod-eu"]), "yaml"),
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
    let manifest = k.deployment_yaml("api", 3, &["-n", "shop"]);
    let live = k.write(
        "current.json",
        &stored(&k.deployment_yaml("api", 30, &["-n", "shop"]), false).to_string(),
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
    let file = k.write("api.yaml", &k.deployment_yaml("api", 12, &[]));
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
fn cluster_scoped_objects_and_change_set_reach() {
    let k = Kubectl::new();
    let namespace = k.namespace_yaml("team-x");
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
        .map(|ns| k.deployment_yaml("cfg", 1, &["-n", &format!("team-{ns}")]))
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
