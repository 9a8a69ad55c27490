//! The approval inbox on the real control plane (tests/common/cluster.rs: pinned etcd
//! and kube-apiserver, the chart installed with helm, `blastguard serve` with its state
//! in the cluster, registered through `webhook.url`). Every change is a real
//! `kubectl apply`; every inbox command is the real plugin (`kubectl blastguard ...`,
//! kubectl finding `kubectl-blastguard` on PATH) run as its user through a kubeconfig
//! that impersonates them; the keys are made by ssh-keygen; the self-protection policy
//! and RBAC are the API server's own. Nothing here stands in for the API server. The
//! notification receiver is a local HTTP server on loopback (tests/common/receiver.rs).
//!
//! Issue 23: a denied AI change waits in the cluster, two approvers list, read and sign
//! it, the AI retries the very same apply and it is admitted once; a rejected request
//! stays denied; tampered and forged records admit nothing; every event is notified.

mod common;

use std::path::{Path, PathBuf};

use common::cluster::{BOT, E2e, Steps, WAIT, wait_for};
use common::objects::deployment;
use common::receiver::Receiver;
use common::users::Users;
use serde_json::{Value, json};

const NS: &str = "prod";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

/// The agent's manifest: no AI marker (its identity is the signal).
fn api(replicas: u32, image: &str) -> Value {
    deployment(NS, "api", replicas, image)
}

/// RBAC as an operator sets it up (docs/approvals.md, "Setting up the inbox"): the
/// agent may change Deployments in prod and record requests; the approvers are bound
/// to the chart's approver role and may read prod. The agent is also (wrongly) bound
/// to the approver role, to show that the self-protection policy, not RBAC alone,
/// keeps an AI from signing or rejecting.
fn grant(e2e: &E2e) {
    e2e.namespaces(&[NS, "ai-agents"]);
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "e2e-ai-agent"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments", "replicasets"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]});
    e2e.apply(&role, &[], None).expect_ok();
    let bind = |name: &str, ns: &str, role: &str, user: &str| {
        e2e.kubectl(&[
            "create",
            "rolebinding",
            name,
            "-n",
            ns,
            "--clusterrole",
            role,
            "--user",
            user,
        ])
        .expect_ok();
    };
    bind("bot-deploys", NS, "e2e-ai-agent", BOT);
    bind("bot-requests", "blastguard", "blastguard-requester", BOT);
    bind("bot-misbound", "blastguard", "blastguard-approver", BOT);
    for (who, name) in [(ALICE, "alice"), (BOB, "bob")] {
        bind(
            &format!("{name}-approver"),
            "blastguard",
            "blastguard-approver",
            who,
        );
        bind(&format!("{name}-view"), NS, "view", who);
    }
}

/// The requests as cluster-admin reads them.
fn requests(e2e: &E2e) -> Vec<Value> {
    e2e.list("blastguard", "approvalrequests.blastguard.io")
}

/// Waits for an open request whose object has `replicas`, and returns its name.
fn request_for(e2e: &E2e, replicas: u64) -> String {
    wait_for(&format!("a request for replicas {replicas}"), WAIT, || {
        requests(e2e).into_iter().find_map(|r| {
            (r["spec"]["object"]["spec"]["replicas"] == replicas
                && r["status"]["state"] == "Pending")
                .then(|| r["metadata"]["name"].as_str().unwrap().to_string())
        })
    })
}

/// Changes a record's spec (or status) as cluster-admin, the tamperer who can write
/// records: read, `edit`, replace, again when the server's sweep wrote in between.
fn tamper(e2e: &E2e, name: &str, status: bool, edit: impl Fn(&mut Value)) {
    let mut args = vec!["replace", "-f", "-"];
    if status {
        args.push("--subresource=status");
    }
    for _ in 0..10 {
        let mut record = get_request(e2e, name);
        edit(&mut record);
        let r = e2e.kubectl_with(&args, Some(&record.to_string()));
        if r.ok {
            return;
        }
        assert!(r.stderr.contains("Conflict"), "{}", r.stderr);
    }
    panic!("request {name} kept changing");
}

fn get_request(e2e: &E2e, name: &str) -> Value {
    e2e.get(
        "blastguard",
        &format!("approvalrequests.blastguard.io/{name}"),
    )
    .unwrap_or_else(|| panic!("request {name} is gone"))
}

#[test]
fn the_inbox_loop_on_a_real_cluster() {
    let receiver = Receiver::start(&[503]);
    let mut e2e = E2e::start_with_cluster_state();
    e2e.webhook.stop();
    e2e.webhook.extra_args = vec![
        "--notify-url".into(),
        receiver.url(),
        "--notify-backoff".into(),
        "200ms".into(),
        "--requests-sweep".into(),
        "1s".into(),
        // Two cores shared with other builds: the API server's answers take longer than
        // the default 200 ms budget of a decision, which then (rightly) fails closed.
        "--api-budget".into(),
        "2s".into(),
    ];
    e2e.webhook.start();
    grant(&e2e);
    let users = Users::new(&e2e, &[ALICE, BOB, BOT]);
    let keys: Vec<PathBuf> = e2e
        .approvers
        .iter()
        .map(|a| {
            e2e.work
                .join("keys")
                .join(a.principal.replace(['@', '.'], "_"))
        })
        .collect();
    let (alice_key, bob_key) = (keys[0].to_str().unwrap(), keys[1].to_str().unwrap());
    let mallory_key = e2e
        .work
        .join("keys")
        .join(e2e.outsider.principal.replace(['@', '.'], "_"));
    // A person's Deployment: 2 replicas.
    e2e.apply(&api(2, "nginx:1.27"), &[], None).expect_ok();
    let manifest = e2e.work.join("api.json");
    std::fs::write(&manifest, api(5, "nginx:1.28").to_string()).unwrap();
    let apply =
        |file: &Path| users.kubectl(&e2e, BOT, &["apply", "-f", file.to_str().unwrap()], None);
    let mut steps = Steps::default();
    let mut commands = 0;
    let mut first = String::new();
    // The first request as its approvers left it: a payload with two valid signatures.
    let mut signed_first = Value::Null;

    steps.run("the AI's apply is denied and waits in the inbox", || {
        let denied = apply(&manifest).expect_err();
        commands += 1;
        assert!(denied.contains("denied"), "{denied}");
        first = request_for(&e2e, 5);
        let pending = users.plugin(&e2e, ALICE, &["pending"]).expect_ok();
        commands += 1;
        assert!(pending.contains(&first), "{pending}");
        assert!(pending.contains("Deployment prod/api"), "{pending}");
        assert!(pending.contains(BOT), "{pending}");
        assert!(pending.contains("0/2"), "{pending}");
        assert!(pending.contains("protected"), "{pending}");
        // The retry of a denied change counts on the same record: one per change.
        // (On a loaded machine a decision may end as "cluster state unavailable"
        // instead, which records nothing: the agent retries, as agents do.)
        wait_for("a retry counted", WAIT, || {
            apply(&manifest).expect_err();
            std::thread::sleep(std::time::Duration::from_millis(500));
            (get_request(&e2e, &first)["spec"]["attempts"].as_u64() >= Some(2)).then_some(())
        });
        assert_eq!(
            requests(&e2e)
                .iter()
                .filter(|r| r["spec"]["object"]["spec"]["replicas"] == 5)
                .count(),
            1
        );
        // A dry run never records.
        let dry = e2e.work.join("dry.json");
        std::fs::write(&dry, api(6, "nginx:1.28").to_string()).unwrap();
        users
            .kubectl(
                &e2e,
                BOT,
                &["apply", "--dry-run=server", "-f", dry.to_str().unwrap()],
                None,
            )
            .expect_err();
    });

    steps.run(
        "approvers show the summary, the limits and the diff",
        || {
            let show = users.plugin(&e2e, ALICE, &["show", &first]).expect_ok();
            commands += 1;
            for want in [
                "Requester:   system:serviceaccount:ai-agents:bot",
                "Rule:        protected (2 approvals required",
                "Limits exceeded:",
                "maxPodsAffected",
                "the recorded object has the payload's digest",
                "spec.replicas",
                "nginx:1.28",
            ] {
                assert!(show.contains(want), "{want:?} not in:\n{show}");
            }
            let show = users.plugin(&e2e, BOB, &["show", &first]).expect_ok();
            commands += 1;
            assert!(show.contains("spec.replicas"), "{show}");
        },
    );

    steps.run("an AI can ask but never sign or reject", || {
        let refused = users
            .plugin(
                &e2e,
                BOT,
                &["approve", &first, "--key", mallory_key.to_str().unwrap()],
            )
            .expect_err();
        assert!(refused.contains("may only"), "{refused}");
        let refused = users
            .plugin(&e2e, BOT, &["reject", &first, "--reason", "mine"])
            .expect_err();
        assert!(refused.contains("may only"), "{refused}");
        // It may record a request without applying (the create is its one write).
        let other = e2e.work.join("other.json");
        std::fs::write(&other, api(3, "nginx:1.28").to_string()).unwrap();
        let made = users.plugin(&e2e, BOT, &["request", "-f", other.to_str().unwrap()]);
        assert!(made.stderr.contains("Recorded request"), "{}", made.stderr);
        let recorded = made.expect_ok();
        assert!(recorded.is_empty(), "{recorded}");
        let asked = users.plugin(&e2e, BOT, &["request", "-f", other.to_str().unwrap()]);
        assert!(asked.stderr.contains("exists already"), "{}", asked.stderr);
    });

    steps.run(
        "two approvers sign with ssh-keygen keys; the very same apply is admitted once",
        || {
            let one = users.plugin(&e2e, ALICE, &["approve", &first, "--key", alice_key]);
            commands += 1;
            assert!(
                one.stderr.contains("more approvers must sign"),
                "{}",
                one.stderr
            );
            one.expect_ok();
            // The same key twice is one approver.
            users
                .plugin(&e2e, ALICE, &["approve", &first, "--key", alice_key])
                .expect_err();
            let two = users.plugin(&e2e, BOB, &["approve", &first, "--key", bob_key]);
            commands += 1;
            assert!(two.stderr.contains("fully signed"), "{}", two.stderr);
            two.expect_ok();
            signed_first = get_request(&e2e, &first);
            assert_eq!(signed_first["status"]["state"], "Approved");
            // The very same command. On a loaded machine the record may not be read
            // within the decision's budget (the denial then offers a fresh payload and
            // spends nothing): the agent retries, at most twice more.
            let admitted = (0..3).any(|_| apply(&manifest).ok);
            assert!(admitted, "the signed request did not admit the change");
            commands += 1;
            assert_eq!(e2e.jsonpath(NS, "deployment/api", "{.spec.replicas}"), "5");
            wait_for("the request marked spent", WAIT, || {
                (get_request(&e2e, &first)["status"]["state"] == "Spent").then_some(())
            });
            // A person rolls back; the approval cannot undo it: the same apply is denied.
            e2e.apply(&api(2, "nginx:1.27"), &[], None).expect_ok();
            // Denied every time; the reason names the spend once the record is read
            // within the decision's budget (else a fresh payload, as above).
            let mut spent = String::new();
            for _ in 0..3 {
                spent = apply(&manifest).expect_err();
                if spent.contains("admitted its change once") {
                    break;
                }
            }
            assert!(spent.contains("admitted its change once"), "{spent}");
            assert_eq!(e2e.jsonpath(NS, "deployment/api", "{.spec.replicas}"), "2");
            eprintln!(
                "e2e: the inbox loop took {commands} commands, no copy-paste, no file hand-off"
            );
        },
    );

    steps.run("a rejected request stays denied", || {
        let file = e2e.work.join("seven.json");
        std::fs::write(&file, api(7, "nginx:1.28").to_string()).unwrap();
        apply(&file).expect_err();
        let name = request_for(&e2e, 7);
        users
            .plugin(
                &e2e,
                ALICE,
                &["reject", &name, "--reason", "not during the freeze"],
            )
            .expect_ok();
        let refused = users
            .plugin(&e2e, BOB, &["approve", &name, "--key", bob_key])
            .expect_err();
        assert!(refused.contains("rejected"), "{refused}");
        let denied = apply(&file).expect_err();
        assert!(denied.contains("not during the freeze"), "{denied}");
        assert_eq!(e2e.jsonpath(NS, "deployment/api", "{.spec.replicas}"), "2");
    });

    steps.run("a tampered object is refused before signing", || {
        let file = e2e.work.join("eight.json");
        std::fs::write(&file, api(8, "nginx:1.28").to_string()).unwrap();
        apply(&file).expect_err();
        let name = request_for(&e2e, 8);
        // Someone who may write records makes the object look harmless.
        tamper(&e2e, &name, false, |r| {
            r["spec"]["object"]["spec"]["replicas"] = json!(1)
        });
        let show = users.plugin(&e2e, ALICE, &["show", &name]);
        assert!(show.stdout.contains("FAILED"), "{}", show.stdout);
        show.expect_err();
        let refused = users
            .plugin(&e2e, ALICE, &["approve", &name, "--key", alice_key])
            .expect_err();
        assert!(refused.contains("refusing to sign"), "{refused}");
    });

    steps.run("forged records admit nothing", || {
        let file = e2e.work.join("nine.json");
        std::fs::write(&file, api(9, "nginx:1.28").to_string()).unwrap();
        apply(&file).expect_err();
        let name = request_for(&e2e, 9);
        let own_payload = get_request(&e2e, &name)["spec"]["payload"].clone();
        let spent = &signed_first;
        let signatures = spent["status"]["signatures"].clone();
        // 1. Valid signatures of another payload, on this record's payload.
        tamper(&e2e, &name, true, |r| {
            r["status"]["signatures"] = signatures.clone();
            r["status"]["state"] = json!("Approved");
        });
        let denied = apply(&file).expect_err();
        assert!(denied.contains("does not verify"), "{denied}");
        // 2. Another change's signed payload with its signatures: binds another digest.
        tamper(&e2e, &name, false, |r| {
            r["spec"]["payload"] = spent["spec"]["payload"].clone()
        });
        tamper(&e2e, &name, true, |r| {
            r["status"]["signatures"] = signatures.clone()
        });
        let denied = apply(&file).expect_err();
        assert!(denied.contains("digest"), "{denied}");
        // 3. This record's own payload signed twice by a key nobody trusts.
        tamper(&e2e, &name, false, |r| {
            r["spec"]["payload"] = own_payload.clone()
        });
        let forged = e2e.outsider.sign(own_payload.as_str().unwrap());
        tamper(&e2e, &name, true, |r| {
            r["status"]["signatures"] = json!([forged.clone(), forged.clone()])
        });
        let denied = apply(&file).expect_err();
        assert!(denied.contains("not in allowed_signers"), "{denied}");
        assert_eq!(e2e.jsonpath(NS, "deployment/api", "{.spec.replicas}"), "2");
    });

    steps.run("a request expires with its payload", || {
        let name = request_for(&e2e, 3);
        // Past its notAfter, within the hour it is kept for.
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let past = humantime::format_rfc3339_seconds(past).to_string();
        tamper(&e2e, &name, false, |r| r["spec"]["expiresAt"] = json!(past));
        wait_for("the request marked expired", WAIT, || {
            (get_request(&e2e, &name)["status"]["state"] == "Expired").then_some(())
        });
    });

    steps.run("the receiver saw each event, after a retry", || {
        wait_for("the notifications", WAIT, || {
            (receiver.saw("new", &first)
                && receiver.saw("approved", &first)
                && receiver.bodies().iter().any(|b| b["event"] == "rejected")
                && receiver.bodies().iter().any(|b| b["event"] == "expired"))
            .then_some(())
        });
        let new = receiver
            .bodies()
            .into_iter()
            .find(|b| b["event"] == "new" && b["request"] == first.as_str())
            .unwrap();
        assert!(
            new["text"]
                .as_str()
                .unwrap()
                .contains("Deployment prod/api"),
            "{new}"
        );
        assert!(
            receiver.tries() > receiver.bodies().len(),
            "the 503 was retried"
        );
        let metrics = e2e.webhook.metrics();
        assert!(
            metrics.contains("blastguard_notification_failures_total{reason=\"http_status\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("blastguard_approval_requests{state=\"Spent\"}"),
            "{metrics}"
        );
    });

    steps.finish();
}
