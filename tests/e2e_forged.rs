//! Forged reviews on a default install (issue 19, findings 3, 4 and 5), on a real
//! control plane (scripts/control-plane.sh) with the chart installed: `webhook.url` at
//! a local `blastguard serve` that keeps its state in the cluster, as the chart's pods
//! do, and looks for each admitted AI change there before it counts for the window.
//!
//! The forger is this test: it posts AdmissionReviews straight to the webhook's port
//! (TLS against the chart's CA, as anything that reaches the port can), as the
//! default install cannot tell them from the API server's. Every other request is a
//! real `kubectl --as` through the API server, which calls the webhook itself.
//!
//! Before: five forged 10-replica CREATEs "by" the victim were confirmed when
//! admitted, and the victim's real 1-replica create was then denied `51 > 50` for the
//! whole window. And during a flood of forged reviews with fresh usernames, an
//! agent's real create was denied `cluster_unavailable` on a loaded machine (CI): its
//! record's create queued at the API server behind one create per forged review.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::cluster::{E2e, deployment, wait_for};
use common::{AI, DeploymentCreate, Http, uid, verdict_at, webhook_client_builder};

const VICTIM: &str = "system:serviceaccount:ai-agents:victim";
const AGENT: &str = "system:serviceaccount:ai-agents:agent";

/// The forger's address: a loopback address other than the API server's (127.0.0.1),
/// as a pod's address in a cluster is not the API server's.
const FORGER_ADDRESS: &str = "127.0.0.2";

/// A forger's view of the webhook: its port and a client that trusts its certificate.
struct Forger {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    url: String,
}

impl Forger {
    fn new(e2e: &E2e) -> Self {
        Self {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            // From an address of its own, as a pod's is not the API server's.
            client: webhook_client_builder(&e2e.webhook.pki.ca_pem, Http::Two)
                .local_address(FORGER_ADDRESS.parse::<std::net::IpAddr>().unwrap())
                .build()
                .unwrap(),
            url: format!("https://{}/validate?timeout=10s", e2e.webhook.listen),
        }
    }

    /// Posts an AI-assisted Deployment CREATE "by" `user`; whether it was allowed,
    /// and the message. A forger retries a review the replica could not record in
    /// time (`onClusterUnavailable: deny`, "retry in a moment") as an agent would: the
    /// first record write after the replica starts can outlast the 400 ms an idle
    /// replica waits (seen once in a full suite run).
    fn create(&self, user: &str, name: &str, replicas: u64) -> (bool, String) {
        let body = DeploymentCreate {
            uid: &uid(replicas as u32),
            namespace: "team-a",
            name,
            replicas,
            annotations: AI,
            user,
        }
        .body();
        let mut answer = self
            .rt
            .block_on(verdict_at(&self.client, &self.url, body.clone()));
        for _ in 0..3 {
            if answer.0 || !answer.1.contains("onClusterUnavailable") {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
            answer = self
                .rt
                .block_on(verdict_at(&self.client, &self.url, body.clone()));
        }
        answer
    }
}

/// The records of the user key `user`, as kubectl reads them.
fn record_of(e2e: &E2e, user: &str) -> Option<Value> {
    let list: Value = serde_json::from_str(
        &e2e.kubectl(&["get", "changesets", "-n", "blastguard", "-o", "json"])
            .expect_ok(),
    )
    .unwrap();
    list["items"]
        .as_array()?
        .iter()
        .find(|r| r["spec"]["key"] == format!("user:{user}"))
        .cloned()
}

fn records(e2e: &E2e) -> usize {
    e2e.kubectl(&["get", "changesets", "-n", "blastguard", "-o", "name"])
        .expect_ok()
        .lines()
        .count()
}

#[test]
fn forged_reviews_spend_no_budget_once_they_lapse() {
    common::install_crypto();
    let e2e = E2e::start_with_cluster_state();
    e2e.namespaces(&["team-a"]);
    for (name, user) in [("victim", VICTIM), ("agent", AGENT)] {
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("{name}-edit")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "User", "name": user}]
        });
        e2e.apply(&binding, &[], None).expect_ok();
    }
    let forger = Forger::new(&e2e);
    let lapsed = r#"blastguard_change_set_holds_total{result="lapsed"}"#;
    let confirmed = r#"blastguard_change_set_holds_total{result="confirmed"}"#;

    // Five forged 10-replica CREATEs "by" the victim: admitted (50 of a 50-pod
    // budget), and held while the replica looks for them.
    for i in 0..5 {
        let (allowed, message) = forger.create(VICTIM, &format!("forged-{i}"), 10);
        assert!(allowed, "forged create {i}: {message}");
    }
    // While held they count: a forged review never makes a change pass a limit.
    let (allowed, message) = forger.create(VICTIM, "one-more", 1);
    assert!(!allowed, "a 51st pod while the holds live was admitted");
    assert!(message.contains("51"), "{message}");

    // Never seen in the cluster: they lapse within seconds, and their record goes.
    wait_for("the forged holds to lapse", Duration::from_secs(30), || {
        (e2e.webhook.metric(lapsed) >= 5.0).then_some(())
    });
    wait_for("the victim's record to go", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(300));
        record_of(&e2e, VICTIM).is_none().then_some(())
    });

    // The victim's real in-limit create, through the API server: admitted, seen,
    // and counted for the window.
    e2e.apply(&deployment("team-a", "real", 1, AI), &[], Some(VICTIM))
        .expect_ok();
    wait_for(
        "the real create to be confirmed",
        Duration::from_secs(30),
        || {
            std::thread::sleep(Duration::from_millis(300));
            let record = record_of(&e2e, VICTIM)?;
            (record["spec"]["podCount"] == 1 && e2e.webhook.metric(confirmed) >= 1.0).then_some(())
        },
    );

    // Finding 4 and 5: a flood of forged reviews by fresh AI-looking usernames, 32
    // at a time, while another agent makes a real in-limit change: the agent's change
    // is admitted, and the flood's records go as their holds lapse.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (client, url) = (forger.client.clone(), forger.url.clone());
        let (stop, sent) = (stop.clone(), sent.clone());
        forger.rt.spawn(async move {
            let tasks: Vec<_> = (0..32)
                .map(|t| {
                    let (client, url, stop, sent) =
                        (client.clone(), url.clone(), stop.clone(), sent.clone());
                    tokio::spawn(async move {
                        let mut n = 0;
                        while !stop.load(Ordering::Relaxed) {
                            let user = format!("system:serviceaccount:ai-agents:fresh-{t}-{n}");
                            let body = DeploymentCreate {
                                uid: &uid(n),
                                namespace: "team-a",
                                name: "flood",
                                replicas: 1,
                                annotations: AI,
                                user: &user,
                            }
                            .body();
                            let _ = verdict_at(&client, &url, body).await;
                            sent.fetch_add(1, Ordering::Relaxed);
                            n += 1;
                        }
                    })
                })
                .collect();
            futures::future::join_all(tasks).await;
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    for i in 0..3 {
        let out = e2e.apply(
            &deployment("team-a", &format!("agent-{i}"), 2, AI),
            &[],
            Some(AGENT),
        );
        let text = out.expect_ok();
        assert!(!text.contains("cluster_unavailable"), "{text}");
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    forger.rt.block_on(flood).unwrap();
    let flooded = sent.load(Ordering::Relaxed);
    eprintln!("3 real creates during a flood of {flooded} forged reviews took {took:?}");
    assert!(flooded > 100, "the flood sent only {flooded} reviews");
    wait_for("the flood's records to go", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(500));
        let left = records(&e2e);
        (left <= 2).then_some(left)
    });
    // Each real create is counted once seen, and its confirmation written lazily.
    wait_for(
        "the agent's three creates to count",
        Duration::from_secs(30),
        || {
            std::thread::sleep(Duration::from_millis(300));
            let agent = record_of(&e2e, AGENT)?;
            (agent["spec"]["podCount"] == 6).then_some(())
        },
    );
}
