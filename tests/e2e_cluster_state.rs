//! One answer from every replica (issue 10), on a real control plane
//! (scripts/control-plane.sh: etcd, kube-apiserver, kube-controller-manager).
//!
//! Two `blastguard serve` processes run as the chart's ServiceAccount (a token from
//! the TokenRequest API, bound by the chart's own ClusterRole and Role, applied from
//! `helm template`), each on its own port with a certificate of a test CA, both
//! reading and writing the same API server.
//!
//! What stands in for the API server here: this test posts the AdmissionReviews to
//! the replicas itself, over TLS verified against the test CA, as the API server
//! does when it calls a webhook (`POST /validate?timeout=10s`), so that it can choose
//! which replica judges each request. Everything the replicas read and write goes
//! through the real API server: Namespaces, Deployments and ChangeSet records are
//! created, labelled and watched there, and `kubectl` reads the records back. The
//! objects these reviews name are never made, so the replicas count each admitted
//! change at once (`--count-unseen`) instead of looking for it first (that is
//! tests/e2e_forged.rs).
//!
//! Scenarios (one control plane, in order): alternating replicas agree on namespace
//! reach and on the pod budget, and neither a denied nor a dry-run request is
//! recorded; a replica restarted mid-window keeps counting; a namespace's labels
//! changed at runtime select another rule within seconds; a scale within its
//! parent's approval is admitted by either replica; records expire with the window;
//! the API server stopped mid-run leaves admission answering within the budget
//! (onClusterUnavailable deny, then allow); the servers ran with exactly the chart's
//! RBAC. It prints what `kubectl get changesets` shows and the latency a decision
//! that writes a record adds (figures for the note, not assertions).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::cluster::{Approver, ControlPlane, Steps, deployment, wait_for};
use common::cluster_state::*;
use common::{AI, DeploymentCreate, Pki, uid};

/// The default decision budget, which the outage step's replicas run with.
const BUDGET: Duration = Duration::from_millis(200);

/// The budget of replicas A and B: the scenarios check what the replicas agree on,
/// and this 2-core machine, busy with builds, answers a GET later than a cluster's
/// API server would now and then (under a full CI run with fuzzers beside it, past
/// 1 s). The default budget is the outage step's.
const RELAXED_BUDGET: &str = "5s";
/// [`RELAXED_BUDGET`] as a duration, for the bounds the outage step asserts.
const RELAXED: Duration = Duration::from_secs(5);

/// An AI-assisted Deployment CREATE by `user`.
fn create(ns: &str, name: &str, replicas: u64, user: &str, dry_run: bool) -> Value {
    let mut review = DeploymentCreate {
        uid: &uid(10),
        namespace: ns,
        name,
        replicas,
        annotations: AI,
        user,
    }
    .review();
    review["request"]["dryRun"] = json!(dry_run);
    review
}

/// A scale of `apps/v1` Deployment `ns/name` from `from` to `to` replicas by `user`, as
/// the API server sends it (tests/fixtures/scale-by-ai-identity.json).
fn scale(ns: &str, name: &str, from: u64, to: u64, user: &str) -> Value {
    let fixture = common::repo().join("tests/fixtures/scale-by-ai-identity.json");
    let mut review: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let r = &mut review["request"];
    r["uid"] = json!(uid(11));
    r["name"] = json!(name);
    r["namespace"] = json!(ns);
    r["userInfo"]["username"] = json!(user);
    for (which, replicas) in [("object", to), ("oldObject", from)] {
        r[which]["metadata"]["name"] = json!(name);
        r[which]["metadata"]["namespace"] = json!(ns);
        r[which]["spec"]["replicas"] = json!(replicas);
    }
    review
}

#[test]
fn every_replica_gives_the_answer_the_cluster_knows() {
    common::install_crypto();
    let cp = ControlPlane::up();
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );

    // The chart's CRD, RBAC and ServiceAccount; the servers run as that account.
    cp.kubectl_ok(&["create", "namespace", NAMESPACE], None);
    cp.kubectl_ok(&["apply", "-f", "-"], Some(&chart_rbac()));
    cp.kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "crd/changesets.blastguard.io",
            "--timeout=30s",
        ],
        None,
    );
    let sa_kubeconfig = service_account_kubeconfig(&cp, dir.path());

    // A test CA and serving certificate; the approver trusted by the servers.
    let pki = Pki::new();
    let leaf = pki.leaf(1, 2030);
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(certs.join("tls.key"), &leaf.key_pem).unwrap();
    let alice = Approver::new(dir.path(), "alice@example.com");
    let signers = dir.path().join("allowed_signers");
    std::fs::write(&signers, format!("{}\n", alice.allowed_signers_line())).unwrap();
    let signers_arg = signers.to_str().unwrap().to_string();
    let setup = Setup {
        certs,
        ca_pem: pki.ca_pem.clone(),
        rt: rt.clone(),
    };
    let cluster_args = [
        "--state",
        "cluster",
        "--count-unseen",
        "--state-namespace",
        NAMESPACE,
        "--allowed-signers",
        &signers_arg,
        "--api-budget",
        RELAXED_BUDGET,
    ];
    let a = Replica::start("replica A", &setup, Some(&sa_kubeconfig), &cluster_args);
    let mut b = Some(Replica::start(
        "replica B",
        &setup,
        Some(&sa_kubeconfig),
        &cluster_args,
    ));
    for r in [&a, b.as_ref().unwrap()] {
        assert!(
            r.log().contains("state: in the cluster"),
            "the startup log says which state is on:\n{}",
            r.log()
        );
    }
    for ns in [
        "reach-1", "reach-2", "reach-3", "reach-4", "team-a", "payments", "shop",
    ] {
        cp.kubectl_ok(&["create", "namespace", ns], None);
    }

    let mut steps = Steps::default();

    steps.run(
        "alternating replicas agree on namespace reach; a denied change is not recorded",
        || {
            let b = b.as_ref().unwrap();
            let bot = "system:serviceaccount:ai-agents:reach";
            let replicas = [&a, b, &a, b];
            let mut allowed = Vec::new();
            for (i, ns) in ["reach-1", "reach-2", "reach-3", "reach-4"]
                .iter()
                .enumerate()
            {
                let (answer, _) = replicas[i].judge(&create(ns, "web", 1, bot, false));
                allowed.push(answer.allowed());
                if i == 3 {
                    assert!(
                        answer.message().contains("namespaces"),
                        "the 4th namespace is over maxNamespacesPerChange 3: {}",
                        answer.message()
                    );
                }
            }
            assert_eq!(allowed, [true, true, true, false]);
            let rec = record(&cp, NAMESPACE, &format!("user:{bot}")).expect("a record");
            assert_eq!(rec["spec"]["namespaceCount"], 3, "the denial wrote nothing");
            assert_eq!(rec["spec"]["podCount"], 3);
        },
    );

    steps.run(
        "alternating replicas agree on the pod budget; a dry run is judged but not recorded",
        || {
            let b = b.as_ref().unwrap();
            let bot = "system:serviceaccount:ai-agents:pods";
            // maxPodsPerChangeSet 50: five changes of ten pods fit, the sixth does not,
            // whichever replica judges it.
            for i in 0..5 {
                let replica = if i % 2 == 0 { &a } else { b };
                let (answer, _) =
                    replica.judge(&create("team-a", &format!("api-{i}"), 10, bot, false));
                assert!(answer.allowed(), "change {i}: {}", answer.message());
            }
            for replica in [&a, b] {
                let (dry, _) = replica.judge(&create("team-a", "dry", 10, bot, true));
                assert!(!dry.allowed(), "a dry run is judged like the real thing");
                assert!(dry.message().contains("pods"), "{}", dry.message());
            }
            let (answer, _) = b.judge(&create("team-a", "api-5", 10, bot, false));
            assert!(!answer.allowed());
            let rec = record(&cp, NAMESPACE, &format!("user:{bot}")).expect("a record");
            assert_eq!(rec["spec"]["podCount"], 50);
            // A dry run that would be admitted is not recorded either.
            let quiet = "system:serviceaccount:ai-agents:dry";
            let (dry, _) = a.judge(&create("team-a", "dry", 3, quiet, true));
            assert!(dry.allowed());
            assert!(record(&cp, NAMESPACE, &format!("user:{quiet}")).is_none());
        },
    );

    steps.run("a replica restarted mid-window keeps counting", || {
        let log = b.take().unwrap().stop();
        let restarted = b.insert(Replica::start(
            "replica B (restarted)",
            &setup,
            Some(&sa_kubeconfig),
            &cluster_args,
        ));
        assert!(!log.contains("stopping with change-set writes"), "{log}");
        let pods = "system:serviceaccount:ai-agents:pods";
        let (answer, _) = restarted.judge(&create("team-a", "api-6", 1, pods, false));
        assert!(
            !answer.allowed(),
            "50 pods already used: {}",
            answer.message()
        );
        let reach = "system:serviceaccount:ai-agents:reach";
        let (answer, _) = restarted.judge(&create("reach-4", "web", 1, reach, false));
        assert!(!answer.allowed(), "three namespaces already reached");
        let (answer, _) = restarted.judge(&create("reach-2", "web2", 1, reach, false));
        assert!(
            answer.allowed(),
            "a namespace it already reached: {}",
            answer.message()
        );
    });

    steps.run(
        "a namespace's labels changed at runtime select another rule within seconds",
        || {
            let b = b.as_ref().unwrap();
            let bot = "system:serviceaccount:ai-agents:labels";
            let judged = |r: &Replica| r.judge(&create("payments", "pay", 2, bot, true)).0;
            for r in [&a, b] {
                let answer = judged(r);
                assert!(answer.allowed());
                assert_eq!(answer.rule(), "default");
            }
            cp.kubectl_ok(
                &[
                    "label",
                    "namespace",
                    "payments",
                    "blastguard.io/tier=critical",
                ],
                None,
            );
            let t0 = Instant::now();
            for r in [&a, b] {
                wait_for("the protected rule", SECONDS, || {
                    let answer = judged(r);
                    (answer.rule() == "protected").then_some(answer)
                });
            }
            eprintln!(
                "e2e: both replicas applied the new label after {:.2}s",
                t0.elapsed().as_secs_f64()
            );
            assert!(!judged(&a).allowed(), "maxPodsAffected 0 under protected");
            cp.kubectl_ok(
                &["label", "namespace", "payments", "blastguard.io/tier-"],
                None,
            );
            for r in [&a, b] {
                wait_for("the default rule again", SECONDS, || {
                    (judged(r).rule() == "default").then_some(())
                });
            }
        },
    );

    steps.run(
        "a scale approval admits exactly its count, once, on whichever replica",
        || {
            let b = b.as_ref().unwrap();
            let now = std::time::SystemTime::now();
            let payload = json!({
                "apiVersion": "blastguard.io/v1",
                "kind": "Approval",
                "target": {"group": "apps", "kind": "Deployment", "namespace": "shop", "name": "api"},
                "operation": "scale",
                "replicas": 20,
                "notBefore": humantime::format_rfc3339_seconds(now - Duration::from_secs(60)).to_string(),
                "notAfter": humantime::format_rfc3339_seconds(now + Duration::from_secs(3600)).to_string(),
                "reason": "e2e: scale for the sale"
            })
            .to_string();
            let signature = alice.sign(&payload);
            let parent = deployment(
                "shop",
                "api",
                2,
                &[
                    ("blastguard.io/approval", &payload),
                    ("blastguard.io/approval-signature", &signature),
                ],
            );
            cp.kubectl_ok(&["apply", "-f", "-"], Some(&parent.to_string()));
            let scaler = "system:serviceaccount:ai-agents:scaler";
            // Past the approved count, neither replica admits it.
            for r in [&a, b] {
                let over = wait_for("the parent's approval on the replica", SECONDS, || {
                    let (over, _) = r.judge(&scale("shop", "api", 2, 30, scaler));
                    assert!(!over.allowed(), "30 is not the approved 20");
                    (over.0["auditAnnotations"]["approval"] == "replicas_exceeded")
                        .then_some(over)
                });
                let _ = over;
            }
            // The approved scale: one replica admits it and spends the approval...
            let (answer, _) = a.judge(&scale("shop", "api", 2, 20, scaler));
            assert!(answer.allowed(), "{:?}", answer.0);
            assert_eq!(answer.0["auditAnnotations"]["approval"], "valid");
            // ...and every replica then knows it is spent: single use across replicas.
            for r in [&a, b] {
                let (again, _) = r.judge(&scale("shop", "api", 2, 20, scaler));
                assert!(!again.allowed(), "a spent approval admitted a second scale");
                assert_eq!(again.0["auditAnnotations"]["approval"], "spent");
            }
        },
    );

    steps.run("records expire with the window and are deleted", || {
        // A replica of its own with a 3-second window and its records in another
        // namespace (as cluster-admin, which may write there).
        cp.kubectl_ok(&["create", "namespace", "bg-short"], None);
        let policy = dir.path().join("short-window.yaml");
        std::fs::write(
            &policy,
            blastguard::policy::DEFAULT_POLICY_YAML.replace("window: 1h", "window: 3s"),
        )
        .unwrap();
        let short = Replica::start(
            "replica with a 3s window",
            &setup,
            Some(&cp.kubeconfig),
            &[
                "--state",
                "cluster",
                "--count-unseen",
                "--state-namespace",
                "bg-short",
                "--policy",
                policy.to_str().unwrap(),
            ],
        );
        let bot = "system:serviceaccount:ai-agents:brief";
        let (first, _) = short.judge(&create("team-a", "one", 8, bot, false));
        assert!(first.allowed());
        assert!(record(&cp, "bg-short", &format!("user:{bot}")).is_some());
        wait_for(
            "the record to be collected",
            Duration::from_secs(20),
            || {
                record(&cp, "bg-short", &format!("user:{bot}"))
                    .is_none()
                    .then_some(())
            },
        );
        let (again, _) = short.judge(&create("team-a", "two", 8, bot, false));
        assert!(again.allowed(), "nothing counts after the window");
        drop(short);
    });

    // What an operator sees.
    let table = cp.kubectl_ok(&["get", "changesets", "-n", NAMESPACE], None);
    let wide = cp.kubectl_ok(&["get", "changesets", "-n", NAMESPACE, "-o", "wide"], None);
    eprintln!("e2e: kubectl get changesets -n {NAMESPACE}\n{table}");
    eprintln!("e2e: kubectl get changesets -n {NAMESPACE} -o wide\n{wide}");
    steps.run("kubectl shows which agent used how much", || {
        let header = table.lines().next().unwrap_or_default();
        for column in ["NAME", "KEY", "NAMESPACES", "PODS", "WINDOW", "LAST CHANGE"] {
            assert!(header.contains(column), "{header}");
        }
        assert!(
            table.contains("user:system:serviceaccount:ai-agents:pods"),
            "{table}"
        );
        assert!(wide.contains("reach-1,reach-2,reach-3"), "{wide}");
    });

    steps.run(
        "the latency a decision that writes a change-set record adds (printed)",
        || {
            let memory = Replica::start("replica in memory", &setup, None, &["--state", "memory"]);
            assert!(memory.log().contains("state=\"memory\"") || memory.log().contains("state: change sets"));
            let n = 200;
            // Within every limit, so each one is admitted and (in the cluster) written:
            // no pods, one namespace, one requester and one change-id (two records).
            let review = |i: usize| {
                let mut r = create("team-a", &format!("cfg-{i}"), 0, "system:serviceaccount:ai-agents:bench", false);
                r["request"]["object"]["metadata"]["annotations"]["blastguard.io/change-id"] =
                    json!("bench");
                r
            };
            let (mem50, mem99) = latencies(&memory, n, review);
            let (cl50, cl99) = latencies(&a, n, review);
            eprintln!(
                "e2e: decision latency over {n} admitted AI-assisted requests (HTTPS round trip, HTTP/2, one connection):\n\
                 e2e:   in memory:                         p50 {}  p99 {}\n\
                 e2e:   cluster (GET + write of 2 records): p50 {}  p99 {}\n\
                 e2e:   added:                             p50 {}  p99 {}",
                ms(mem50),
                ms(mem99),
                ms(cl50),
                ms(cl99),
                ms(cl50.saturating_sub(mem50)),
                ms(cl99.saturating_sub(mem99)),
            );
            let writes = a.metric("blastguard_change_set_writes_total{result=\"written\"}");
            assert!(writes >= 2.0 * n as f64, "each decision wrote its records: {writes}");
        },
    );

    steps.run(
        "the API server stopped mid-run leaves admission answering within the budget",
        || {
            let b = b.as_ref().unwrap();
            // onClusterUnavailable: allow, for the warning; A and B keep the default deny.
            let policy = dir.path().join("allow.yaml");
            std::fs::write(
                &policy,
                blastguard::policy::DEFAULT_POLICY_YAML.replace(
                    "  mode: enforce ",
                    "  onClusterUnavailable: allow\n  mode: enforce ",
                ),
            )
            .unwrap();
            let lenient = Replica::start(
                "replica with onClusterUnavailable allow",
                &setup,
                Some(&sa_kubeconfig),
                &[
                    "--state",
                    "cluster",
                    "--count-unseen",
                    "--state-namespace",
                    NAMESPACE,
                    "--policy",
                    policy.to_str().unwrap(),
                ],
            );
            let apiserver = cp
                .pids()
                .into_iter()
                .find(|(name, _)| name == "kube-apiserver")
                .expect("kube-apiserver pid")
                .1;
            let strict = Replica::start(
                "replica with the default budget",
                &setup,
                Some(&sa_kubeconfig),
                &[
                    "--state",
                    "cluster",
                    "--count-unseen",
                    "--state-namespace",
                    NAMESPACE,
                ],
            );
            let bot = "system:serviceaccount:ai-agents:outage";
            let before =
                strict.metric("blastguard_cluster_unavailable_decisions_total{decision=\"deny\"}");
            // Stopped, not killed: connections hang, the worst case for a deadline.
            signal(apiserver, "STOP");
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut worst = Duration::ZERO;
                let mut worst_relaxed = Duration::ZERO;
                for (i, r) in [&strict, &a, b, &strict].iter().enumerate() {
                    let (answer, took) =
                        r.judge(&create("team-a", &format!("o-{i}"), 1, bot, false));
                    if std::ptr::eq(*r, &strict) {
                        worst = worst.max(took);
                    } else {
                        worst_relaxed = worst_relaxed.max(took);
                    }
                    assert!(!answer.allowed(), "onClusterUnavailable: deny");
                    assert!(
                        answer.message().contains("could not be read from the API server in time"),
                        "{}",
                        answer.message()
                    );
                }
                assert!(
                    worst_relaxed < RELAXED + Duration::from_millis(800),
                    "within the {RELAXED_BUDGET} budget: {worst_relaxed:?}"
                );
                let (answer, took) = lenient.judge(&create("team-a", "o-l", 1, bot, false));
                worst = worst.max(took);
                assert!(answer.allowed(), "onClusterUnavailable: allow");
                assert!(
                    answer.warnings().iter().any(|w| w.contains("decided without the cluster's state")),
                    "{:?}",
                    answer.warnings()
                );
                // Over a limit: denied as ever.
                let (over, took) = strict.judge(&create("team-a", "big", 40, bot, false));
                worst = worst.max(took);
                assert!(!over.allowed());
                eprintln!(
                    "e2e: slowest answer with the API server stopped: {} (budget {})",
                    ms(worst),
                    ms(BUDGET)
                );
                assert!(
                    worst < BUDGET + Duration::from_millis(800),
                    "answered within the budget (plus the HTTPS round trip on a busy machine): {worst:?}"
                );
            }));
            signal(apiserver, "CONT");
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
            assert!(
                strict.metric("blastguard_cluster_unavailable_decisions_total{decision=\"deny\"}")
                    > before,
                "counted"
            );
            assert!(
                lenient.metric("blastguard_cluster_unavailable_decisions_total{decision=\"allow\"}")
                    >= 1.0
            );
            // Back: decisions read the cluster again.
            let fine = "system:serviceaccount:ai-agents:after";
            wait_for("decisions with the cluster's state again", Duration::from_secs(30), || {
                let (answer, _) = a.judge(&create("team-a", "after", 1, fine, false));
                answer.allowed().then_some(())
            });
            wait_for("the watches to list again", Duration::from_secs(30), || {
                (a.metric("blastguard_cluster_cache_synced{cache=\"namespaces\"}") == 1.0)
                    .then_some(())
            });
            drop(lenient);
            drop(strict);
        },
    );

    steps.run("the servers run with exactly the chart's RBAC", || {
        let b = b.as_ref().unwrap();
        for r in [&a, b] {
            for cache in ["namespaces", "workloads", "changesets"] {
                assert_eq!(
                    r.metric(&format!(
                        "blastguard_cluster_cache_synced{{cache=\"{cache}\"}}"
                    )),
                    1.0,
                    "{} listed {cache} as the ServiceAccount",
                    r.name
                );
            }
            let log = r.log();
            assert!(!log.contains("forbidden"), "{}: {log}", r.name);
        }
        let can = cp.kubectl_ok(&[
                "auth",
                "can-i",
                "--list",
                "-n",
                NAMESPACE,
                &format!("--as={SERVICE_ACCOUNT}"),
            ],
            None,
        );
        let granted: Vec<String> = can
            .lines()
            .skip(1)
            .filter(|l| !l.trim_start().starts_with('['))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.starts_with("selfsubject"))
            .collect();
        assert_eq!(
            granted,
            [
                "spentapprovals.blastguard.io [] [] [get list create delete]",
                // The inbox's requests and their status (the chart's approval-requests
                // Role).
                "approvalrequests.blastguard.io [] [] [get list create update patch delete]",
                "changesets.blastguard.io [] [] [get list watch create update delete]",
                "namespaces [] [] [get list watch]",
                "replicationcontrollers [] [] [get list watch]",
                // Its own webhook configuration, that one object (--webhook-configuration).
                "validatingwebhookconfigurations.admissionregistration.k8s.io [] [blastguard] [get list watch]",
                "deployments.apps [] [] [get list watch]",
                "replicasets.apps [] [] [get list watch]",
                "statefulsets.apps [] [] [get list watch]",
                "rollouts.argoproj.io [] [] [get list watch]",
                "approvalrequests.blastguard.io/status [] [] [get update]",
                "endpointslices.discovery.k8s.io [] [] [list]",
            ],
            "{can}"
        );
        // Elsewhere the records are not writable.
        let elsewhere = cp.kubectl(
            cp.dir.path(),
            &[
                "auth",
                "can-i",
                "create",
                "changesets.blastguard.io",
                "-n",
                "team-a",
                &format!("--as={SERVICE_ACCOUNT}"),
            ],
            None,
        );
        assert_eq!(elsewhere.stdout.trim(), "no");
    });

    drop(b);
    drop(a);
    steps.finish();
}
