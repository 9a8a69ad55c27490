//! End to end, through a real API server (tests/common/cluster.rs): the guard guards
//! itself (docs/design.md "Install", issue 19 findings 1 and 2).
//!
//! The tamperings of issue 19 are made with the real `kubectl --as` by AI service
//! accounts of the chart's default policy (`system:serviceaccount:ai-agents:*`): one
//! bound to the stock `edit` ClusterRole cluster-wide, one allowed only to delete
//! namespaces, one bound to `cluster-admin`. The API server authorizes them with RBAC
//! and evaluates the chart's ValidatingAdmissionPolicy itself; nothing here stands in
//! for it. Each tampering is shown admitted without the policy, denied by the API
//! server with it, and made by a person (`alice@example.com`, also cluster-admin)
//! either way. Then: what the API server does not let a policy guard, the RBAC of
//! docs/install.md ("RBAC for AI agents") denying every tampering with no policy at
//! all, and a running `blastguard serve` noticing its webhook configuration change and
//! vanish (log and metrics).
//!
//! Most attempts are `--dry-run=server`: the API server authorizes and admits a dry
//! run exactly as the real request (ValidatingAdmissionPolicies included) and then
//! stores nothing, so a tampering that would succeed does no harm to the next step.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};

use common::cluster::{E2e, Run, Steps, WAIT, chart, deployment, wait_for};
use serde_json::{Value, json};

const NS: &str = "blastguard";
const VAP: &str = "blastguard-self-protection";
/// Bound to the stock `edit` ClusterRole in every namespace.
const EDITOR: &str = "system:serviceaccount:ai-agents:editor";
/// Allowed to delete namespaces, nothing else (issue 19 finding 2).
const NS_DELETER: &str = "system:serviceaccount:ai-agents:ns-deleter";
/// Bound to `cluster-admin`.
const ADMIN: &str = "system:serviceaccount:ai-agents:admin";
/// A person, bound to `cluster-admin`.
const ALICE: &str = "alice@example.com";
/// The message of the chart's policy (charts/blastguard/templates/self-protection.yaml).
const POLICY_DENIAL: &str = "AI identities may not";
/// A ChangeSet record made for the test.
const RECORD: &str = "e2e-record";
/// A Pod made for the test in the release namespace.
const POD: &str = "e2e-pod";

/// One tampering of issue 19: who tries it and the kubectl arguments.
struct Tamper {
    what: &'static str,
    who: &'static str,
    args: Vec<String>,
    stdin: Option<String>,
}

impl Tamper {
    fn new(what: &'static str, who: &'static str, args: &[&str]) -> Tamper {
        Tamper {
            what,
            who,
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: None,
        }
    }

    /// Tries it as `who` (a dry run unless `real`).
    fn try_as(&self, e2e: &E2e, who: &str, real: bool) -> Run {
        let mut args: Vec<&str> = vec!["--as", who];
        args.extend(self.args.iter().map(String::as_str));
        if !real {
            args.push("--dry-run=server");
        }
        e2e.kubectl_with(&args, self.stdin.as_deref())
    }
}

/// The tamperings of issue 19, findings 1 and 2.
fn tamperings() -> Vec<Tamper> {
    let mallory = "mallory@example.com namespaces=\"approval@blastguard.io\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEDRbbeo68CP2MprQEJGYnHK8jjEFT5bvdQ1SfOw64y";
    let signers = json!({"data": {"allowed_signers": mallory}}).to_string();
    let audit = json!({"data": {"policy.yaml": "apiVersion: blastguard.io/v1alpha1\nkind: BlastRadiusPolicy\nmetadata: {name: default}\nspec: {mode: audit}\n"}}).to_string();
    let flood = deployment(NS, "flood", 500, &[]).to_string();
    let ignore = r#"[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Ignore"}]"#;
    let mut apply = Tamper::new(
        "create a 500-replica Deployment in the release namespace",
        EDITOR,
        &["apply", "-f", "-"],
    );
    apply.stdin = Some(flood);
    vec![
        Tamper::new(
            "rewrite blastguard-allowed-signers",
            EDITOR,
            &[
                "-n",
                NS,
                "patch",
                "configmap",
                "blastguard-allowed-signers",
                "--type",
                "merge",
                "-p",
                &signers,
            ],
        ),
        Tamper::new(
            "rewrite blastguard-policy",
            EDITOR,
            &[
                "-n",
                NS,
                "patch",
                "configmap",
                "blastguard-policy",
                "--type",
                "merge",
                "-p",
                &audit,
            ],
        ),
        apply,
        Tamper::new(
            "delete the release namespace",
            NS_DELETER,
            &["delete", "namespace", NS],
        ),
        Tamper::new(
            "edit the webhook configuration",
            ADMIN,
            &[
                "patch",
                "validatingwebhookconfiguration",
                "blastguard",
                "--type",
                "json",
                "-p",
                ignore,
            ],
        ),
        Tamper::new(
            "delete the webhook configuration",
            ADMIN,
            &["delete", "validatingwebhookconfiguration", "blastguard"],
        ),
        Tamper::new(
            "delete the ChangeSet CRD",
            ADMIN,
            &[
                "delete",
                "customresourcedefinition",
                "changesets.blastguard.io",
            ],
        ),
        Tamper::new(
            "delete a ChangeSet record",
            ADMIN,
            &["-n", NS, "delete", "changeset", RECORD],
        ),
    ]
}

/// RBAC for the identities above, and the namespaces.
fn grant(e2e: &E2e) {
    e2e.namespaces(&["ai-agents", "team-a"]);
    for sa in ["editor", "ns-deleter", "admin", "bot"] {
        let manifest = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                              "metadata": {"name": sa, "namespace": "ai-agents"}});
        e2e.apply(&manifest, &[], None).expect_ok();
    }
    let cluster_binding = |name: &str, role: &str, subject: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": [subject]})
    };
    let sa = |name: &str| json!({"kind": "ServiceAccount", "name": name, "namespace": "ai-agents"});
    let deleter = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "e2e-namespace-deleter"},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "delete"]}]});
    e2e.apply(&deleter, &[], None).expect_ok();
    for binding in [
        cluster_binding("e2e-ai-editor", "edit", sa("editor")),
        cluster_binding(
            "e2e-ai-ns-deleter",
            "e2e-namespace-deleter",
            sa("ns-deleter"),
        ),
        cluster_binding("e2e-ai-admin", "cluster-admin", sa("admin")),
        cluster_binding(
            "e2e-alice",
            "cluster-admin",
            json!({"kind": "User", "name": ALICE, "apiGroup": "rbac.authorization.k8s.io"}),
        ),
    ] {
        e2e.apply(&binding, &[], None).expect_ok();
    }
    // A record of the kind blastguard writes.
    let record = json!({"apiVersion": "blastguard.io/v1alpha1", "kind": "ChangeSet",
        "metadata": {"name": RECORD, "namespace": NS},
        "spec": {"key": "user:system:serviceaccount:ai-agents:bot", "podCount": 51}});
    e2e.apply(&record, &[], None).expect_ok();
    // A Pod in the release namespace (it stays Pending: no node runs here).
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD, "namespace": NS},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}});
    e2e.apply(&pod, &[], None).expect_ok();
}

/// `kubectl exec` into the release namespace's Pod as the `edit` agent: a CONNECT,
/// which has no dry run. Admission runs before the API server looks for the Pod's node.
fn exec_into_blastguard(e2e: &E2e) -> String {
    e2e.kubectl_as(EDITOR, &["-n", NS, "exec", POD, "--", "true"])
        .expect_err()
}

/// Turns the chart's policy on or off with `helm upgrade`, and waits until the API
/// server enforces the change (its policies are loaded by an informer, not at once).
fn set_policy(e2e: &E2e, on: bool) {
    e2e.helm(&[
        "upgrade",
        "blastguard",
        chart().to_str().unwrap(),
        "-n",
        NS,
        "--reuse-values",
        "--set",
        &format!("selfProtection.enabled={on}"),
    ])
    .expect_ok();
    let probe = &tamperings()[0];
    wait_for(
        &format!("the API server to enforce selfProtection.enabled={on}"),
        WAIT,
        || {
            let r = probe.try_as(e2e, probe.who, false);
            let denied = r.stderr.contains(POLICY_DENIAL);
            (denied == on).then_some(())
        },
    );
}

/// The webhook configuration as stored, ready to be created again.
fn saved_webhook_configuration(e2e: &E2e) -> Value {
    let mut vwc = e2e
        .get("", "validatingwebhookconfiguration/blastguard")
        .expect("the webhook configuration exists");
    let meta = vwc["metadata"].as_object_mut().unwrap();
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
        "generation",
    ] {
        meta.remove(field);
    }
    vwc
}

#[test]
fn ai_identities_cannot_switch_the_guard_off() {
    let e2e = E2e::start();
    grant(&e2e);
    let mut steps = Steps::default();
    let vwc = saved_webhook_configuration(&e2e);

    steps.run(
        "without the policy, every tampering of issue 19 is admitted",
        || {
            set_policy(&e2e, false);
            for t in tamperings() {
                let r = t.try_as(&e2e, t.who, false);
                if t.what == "delete the ChangeSet CRD" {
                    // CRDs are among the kinds the webhook judges (cluster reach): it
                    // denies this one while it is registered...
                    let err = r.expect_err();
                    assert!(err.contains("validate.blastguard.io"), "{err}");
                    continue;
                }
                assert!(r.ok, "{} as {}: {}", t.what, t.who, r.stderr);
            }
            // ...but nothing stops the same identity deleting the webhook configuration
            // first, for real, and then the CRD goes too.
            let delete = &tamperings()[5];
            delete.try_as(&e2e, delete.who, true).expect_ok();
            let crd = &tamperings()[6];
            crd.try_as(&e2e, crd.who, false).expect_ok();
            e2e.apply(&vwc, &[], None).expect_ok();
            // An exec into blastguard's namespace passes admission and fails only for
            // want of a node.
            let err = exec_into_blastguard(&e2e);
            assert!(
                !err.contains(POLICY_DENIAL) && !err.contains("forbidden"),
                "{err}"
            );
        },
    );

    steps.run(
        "with the policy the API server denies each tampering by an AI identity",
        || {
            set_policy(&e2e, true);
            for t in tamperings() {
                for real in [false, true] {
                    let err = t.try_as(&e2e, t.who, real).expect_err();
                    assert!(
                        err.contains(POLICY_DENIAL) && err.contains(VAP),
                        "{} as {} (real: {real}) not denied by the policy: {err}",
                        t.what,
                        t.who
                    );
                }
            }
            // A CONNECT is matched too.
            let err = exec_into_blastguard(&e2e);
            assert!(
                err.contains(POLICY_DENIAL),
                "exec not denied by the policy: {err}"
            );
            // Nothing changed.
            assert!(e2e.get(NS, "deployment/flood").is_none());
            assert!(e2e.get("", "namespace/blastguard").is_some());
            assert!(e2e.get(NS, &format!("changeset/{RECORD}")).is_some());
            assert_eq!(
                e2e.jsonpath(
                    "",
                    "validatingwebhookconfiguration/blastguard",
                    "{.webhooks[0].failurePolicy}"
                ),
                "Fail"
            );
        },
    );

    steps.run("a person makes every one of these changes", || {
        for t in tamperings() {
            let r = t.try_as(&e2e, ALICE, false);
            assert!(r.ok, "{} as {ALICE}: {}", t.what, r.stderr);
        }
    });

    steps.run("the AI identities still work everywhere else", || {
        let small = deployment("team-a", "small", 1, &[]);
        e2e.apply(&small, &["--dry-run=server"], Some(EDITOR))
            .expect_ok();
        e2e.kubectl_as(
            ADMIN,
            &[
                "-n",
                "team-a",
                "create",
                "configmap",
                "settings",
                "--dry-run=server",
            ],
        )
        .expect_ok();
    });

    steps.run(
        "the API server does not let a policy guard policies and bindings",
        || {
            // Admission policies are never evaluated for ValidatingAdmissionPolicy and
            // ValidatingAdmissionPolicyBinding objects (the API server's own guard
            // against locking itself out), so an identity with write on them removes
            // the policy: only RBAC keeps AI identities away from them.
            for resource in [
                "validatingadmissionpolicybinding",
                "validatingadmissionpolicy",
            ] {
                e2e.kubectl_as(ADMIN, &["delete", resource, VAP, "--dry-run=server"])
                    .expect_ok();
                e2e.kubectl_as(
                    ADMIN,
                    &["label", resource, VAP, "tampered=yes", "--dry-run=server"],
                )
                .expect_ok();
            }
        },
    );

    steps.run(
        "the RBAC of docs/install.md denies every tampering with no policy at all",
        || {
            set_policy(&e2e, false);
            let scoped = documented_rbac(&e2e);
            for t in tamperings() {
                let err = t.try_as(&e2e, &scoped, false).expect_err();
                assert!(
                    err.contains("Forbidden") || err.contains("forbidden"),
                    "{} as {scoped}: {err}",
                    t.what
                );
            }
            // What docs/install.md says never to grant, asked of the API server's
            // authorizer in the agent's own namespace (cluster-scoped resources ignore
            // it) and in the release namespace.
            for [verb, resource, namespace] in [
                ["delete", "validatingadmissionpolicies", "team-a"],
                ["delete", "validatingadmissionpolicybindings", "team-a"],
                ["update", "validatingwebhookconfigurations", "team-a"],
                ["delete", "customresourcedefinitions", "team-a"],
                ["delete", "namespaces", "team-a"],
                ["impersonate", "users", "team-a"],
                ["impersonate", "serviceaccounts", "team-a"],
                ["escalate", "roles", "team-a"],
                ["bind", "roles", "team-a"],
                ["create", "pods", NS],
                ["update", "configmaps", NS],
            ] {
                let answer = e2e
                    .kubectl(&[
                        "auth", "can-i", "--as", &scoped, verb, resource, "-n", namespace,
                    ])
                    .stdout;
                assert_eq!(
                    answer.trim(),
                    "no",
                    "{scoped} can {verb} {resource} in {namespace}"
                );
            }
            // The agent still does its work in its own namespace (the webhook judges it).
            let small = deployment("team-a", "small", 1, &[]);
            e2e.apply(&small, &["--dry-run=server"], Some(&scoped))
                .expect_ok();
            set_policy(&e2e, true);
        },
    );

    steps.run(
        "a running server notices its webhook configuration change and vanish",
        || watch_the_webhook_configuration(&e2e, &vwc),
    );

    steps.finish();
}

/// Applies the RoleBinding of docs/install.md, "RBAC for AI agents" (the first yaml
/// block of that section), and returns the identity it binds.
fn documented_rbac(e2e: &E2e) -> String {
    let doc = std::fs::read_to_string(common::repo().join("docs/install.md")).unwrap();
    let section = doc
        .split("\n## RBAC for AI agents")
        .nth(1)
        .expect("docs/install.md has a section \"RBAC for AI agents\"");
    let section = section.split("\n## ").next().unwrap();
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section shows the RBAC as a yaml block");
    e2e.kubectl_with(&["apply", "-f", "-"], Some(block))
        .expect_ok();
    let subject = block
        .lines()
        .skip_while(|l| !l.contains("subjects:"))
        .find_map(|l| l.trim().strip_prefix("- {kind: ServiceAccount, name: "))
        .expect("a ServiceAccount subject in the block");
    let (name, rest) = subject.split_once(',').unwrap();
    let namespace = rest
        .trim()
        .strip_prefix("namespace: ")
        .unwrap()
        .trim_end_matches('}')
        .trim();
    format!("system:serviceaccount:{namespace}:{name}")
}

// ---------------------------------------------------------------------------------
// The watch of the webhook configuration (serve --webhook-configuration).

/// A kubeconfig that authenticates as the chart's ServiceAccount with a bound token.
fn service_account_kubeconfig(e2e: &E2e) -> PathBuf {
    let token = e2e
        .kubectl(&["create", "token", "blastguard", "-n", NS, "--duration=1h"])
        .expect_ok();
    let admin = std::fs::read_to_string(&e2e.cluster.kubeconfig).unwrap();
    let server = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("server in the kubeconfig");
    let ca = e2e.cluster.dir.path().join("pki/ca.crt");
    let file = e2e.work.join("blastguard-sa.kubeconfig");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster: {{server: \"{server}\", certificate-authority: \"{}\"}}\nusers:\n- name: sa\n  user: {{token: \"{}\"}}\ncontexts:\n- name: sa\n  context: {{cluster: e2e, user: sa, namespace: {NS}}}\ncurrent-context: sa\n",
            ca.display(),
            token.trim()
        ),
    )
    .unwrap();
    file
}

/// A `blastguard serve` with the cluster state, killed when dropped.
struct Watcher {
    child: Child,
    stderr: Arc<Mutex<String>>,
    admin: String,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watcher {
    fn start(e2e: &E2e, kubeconfig: &Path) -> Watcher {
        let tls = e2e.work.join("tls");
        let (child, stdout, stderr) = common::spawn_captured(
            common::blastguard()
                .args([
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--admin-listen",
                    "127.0.0.1:0",
                ])
                .arg("--tls-cert")
                .arg(tls.join("tls.crt"))
                .arg("--tls-key")
                .arg(tls.join("tls.key"))
                .args(["--state", "cluster", "--state-namespace", NS])
                .args(["--webhook-configuration", "blastguard"])
                .env("KUBECONFIG", kubeconfig)
                .env("HOME", &e2e.work)
                .env("RUST_LOG", "info"),
        );
        let admin = wait_for("serve to print its admin address", WAIT, || {
            let out = stdout.lock().unwrap().clone();
            let rest = out.split("admin listening on http://").nth(1)?;
            Some(rest.split_whitespace().next()?.to_string())
        });
        Watcher {
            child,
            stderr,
            admin,
        }
    }

    fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.admin);
        let out = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "5", &url])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn series(&self, series: &str) -> Option<f64> {
        let text = self.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

fn watch_the_webhook_configuration(e2e: &E2e, saved: &Value) {
    // The chart's RBAC for the server's account, as rendered for an in-cluster
    // install (the webhook.url install renders none: it runs no pods).
    let rendered = e2e
        .helm(&[
            "template",
            "blastguard",
            chart().to_str().unwrap(),
            "-n",
            NS,
        ])
        .expect_ok();
    let rbac: Vec<&str> = rendered
        .split("\n---\n")
        .filter(|doc| {
            [
                "kind: ClusterRole\n",
                "kind: ClusterRoleBinding\n",
                "kind: Role\n",
                "kind: RoleBinding\n",
            ]
            .iter()
            .any(|k| doc.contains(k))
        })
        .collect();
    // Six for the server's state and its webhook configuration, four for the inbox
    // (the server's Role on requests and its binding, the approver and requester
    // ClusterRoles).
    assert_eq!(rbac.len(), 10, "the server's roles and bindings");
    e2e.kubectl_with(&["apply", "-f", "-"], Some(&rbac.join("\n---\n")))
        .expect_ok();
    let kubeconfig = service_account_kubeconfig(e2e);
    let server = Watcher::start(e2e, &kubeconfig);

    let present = "blastguard_webhook_configuration_present{name=\"blastguard\"}";
    let changes = |change: &str| {
        format!(
            "blastguard_webhook_configuration_changes_total{{change=\"{change}\",name=\"blastguard\"}}"
        )
    };
    wait_for("the watch to see the configuration", WAIT, || {
        (server.series(present) == Some(1.0)).then_some(())
    });
    assert_eq!(server.series(&changes("modified")), Some(0.0));

    // Changed: the log names the field.
    e2e.kubectl(&[
        "patch",
        "validatingwebhookconfiguration",
        "blastguard",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/webhooks/0/timeoutSeconds","value":5}]"#,
    ])
    .expect_ok();
    wait_for("the change to be counted", WAIT, || {
        (server.series(&changes("modified")) == Some(1.0)).then_some(())
    });
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("the webhook configuration was changed"))
        .unwrap_or_else(|| panic!("no warning of the change:\n{log}"));
    assert!(
        line.contains("WARN") && line.contains("webhooks[0].timeoutSeconds"),
        "{line}"
    );

    // Deleted.
    e2e.kubectl(&["delete", "validatingwebhookconfiguration", "blastguard"])
        .expect_ok();
    wait_for("the deletion to be seen", WAIT, || {
        (server.series(present) == Some(0.0) && server.series(&changes("deleted")) == Some(1.0))
            .then_some(())
    });
    assert!(
        server
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("the webhook configuration was deleted")),
        "{}",
        server.log()
    );

    // Restored.
    e2e.apply(saved, &[], None).expect_ok();
    wait_for("the restored configuration to be seen", WAIT, || {
        (server.series(present) == Some(1.0) && server.series(&changes("created")) == Some(1.0))
            .then_some(())
    });
    // Only the one object is readable to the server: not the others, not the list.
    let can = |args: &[&str]| {
        let mut all = vec![
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "auth",
            "can-i",
        ];
        all.extend_from_slice(args);
        let mut cmd = common::tool("kubectl");
        cmd.args(&all);
        String::from_utf8_lossy(&cmd.output().unwrap().stdout)
            .trim()
            .to_string()
    };
    assert_eq!(
        can(&["get", "validatingwebhookconfigurations/blastguard"]),
        "yes"
    );
    assert_eq!(can(&["list", "validatingwebhookconfigurations"]), "no");
    assert_eq!(
        can(&["update", "validatingwebhookconfigurations/blastguard"]),
        "no"
    );
}
