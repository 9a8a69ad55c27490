//! Exact budgets under concurrency (issue 19, finding 6), on a real control plane
//! (scripts/control-plane.sh: etcd, kube-apiserver, kube-controller-manager).
//!
//! Before: 12 to 40 parallel 10-replica CREATEs by one identity against one `serve`
//! admitted 60 pods at a 50-pod limit in most runs: each decision read the count,
//! then recorded, so parallel ones each saw room the others were taking. Now each
//! decision reserves its pods in the `ChangeSet` records before it is judged, with a
//! resourceVersion precondition, and is judged on the record it was written into.
//!
//! What stands in for the API server here: this test posts the AdmissionReviews to
//! the replicas itself, over TLS verified against a test CA, as the API server does
//! (`POST /validate?timeout=10s`), so it can send them all at once and to the replica
//! it chooses. The records are read and written through the real API server, and read
//! back with `kubectl`. The replicas run as cluster-admin: RBAC is not what this test
//! is about (tests/e2e_cluster_state.rs runs them with the chart's).

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::cluster::{ControlPlane, wait_for};
use common::replica::{CLUSTER_STATE, Replica, Replicas, kubectl};
use common::{AI, DeploymentCreate, Http, uid, verdict_at, webhook_client};

/// The default policy's `maxPodsPerChangeSet` for namespace `team-a`.
const LIMIT: u64 = 50;
/// Decisions sent at once in each round.
const PARALLEL: usize = 40;
/// Rounds per setup: each a fresh identity, so each starts at zero.
const ROUNDS: usize = 3;

/// An AI-assisted 10-replica Deployment CREATE by `user`.
fn create(name: &str, user: &str, tag: u32) -> Vec<u8> {
    let review = DeploymentCreate {
        uid: &uid(tag),
        namespace: "team-a",
        name,
        replicas: 10,
        annotations: AI,
        user,
    }
    .review();
    serde_json::to_vec(&review).unwrap()
}

/// Sends `PARALLEL` CREATEs by `user` at once, spread over `replicas` (each over
/// HTTP/2 and HTTP/1.1), and returns how many were allowed, with every answer's
/// message.
fn burst(
    rt: &tokio::runtime::Runtime,
    clients: &[(String, reqwest::Client)],
    user: &str,
) -> (usize, Vec<String>) {
    let sends: Vec<_> = (0..PARALLEL)
        .map(|i| {
            let (url, client) = clients[i % clients.len()].clone();
            let body = create(&format!("web-{i}"), user, i as u32);
            async move { verdict_at(&client, &url, body).await }
        })
        .collect();
    let answers = rt.block_on(futures::future::join_all(sends));
    let allowed = answers.iter().filter(|(a, _)| *a).count();
    (allowed, answers.into_iter().map(|(_, m)| m).collect())
}

/// The `podCount` of `user`'s record, as kubectl reads it.
fn recorded_pods(cp: &ControlPlane, user: &str) -> u64 {
    let list: Value = serde_json::from_str(&kubectl(
        cp,
        &["get", "changesets", "-n", "blastguard", "-o", "json"],
    ))
    .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["spec"]["key"] == format!("user:{user}"))
        .and_then(|r| r["spec"]["podCount"].as_u64())
        .unwrap_or(0)
}

#[test]
fn parallel_decisions_on_one_or_two_replicas_never_pass_the_budget() {
    // A generous budget: what is checked is the count, not the latency, on a busy
    // two-core machine. A decision that could not read still counts as denied below
    // (onClusterUnavailable: deny, the default).
    let args = [&CLUSTER_STATE[..], &["--api-budget", "5s"]].concat();
    let s = Replicas::start(&[("replica A", &args), ("replica B", &args)]);
    let (cp, rt, ca) = (&s.cp, &s.rt, &s.pki.ca_pem);
    let (a, b) = (&s.replicas[0], &s.replicas[1]);
    let clients_of = |replicas: &[&Replica]| -> Vec<(String, reqwest::Client)> {
        let mut clients = Vec::new();
        for r in replicas {
            for http in [Http::Two, Http::One] {
                clients.push((r.url(), webhook_client(ca, http)));
            }
        }
        clients
    };
    let setups = [
        ("one replica", clients_of(&[a])),
        ("two replicas", clients_of(&[a, b])),
    ];
    let mut failures = Vec::new();
    for (setup, clients) in &setups {
        for round in 0..ROUNDS {
            let user = format!(
                "system:serviceaccount:ai-agents:{}-{round}",
                setup.replace(' ', "-")
            );
            let started = Instant::now();
            let (allowed, messages) = burst(rt, clients, &user);
            let took = started.elapsed();
            // The records settle (confirms are written after the answers).
            let pods = wait_for("the record to settle", Duration::from_secs(20), || {
                std::thread::sleep(Duration::from_millis(300));
                let pods = recorded_pods(cp, &user);
                (pods == allowed as u64 * 10).then_some(pods)
            });
            let unavailable = messages
                .iter()
                .filter(|m| m.contains("could not") || m.contains("unavailable"))
                .count();
            eprintln!(
                "{setup}, round {round}: {PARALLEL} parallel CREATEs of 10 pods: {allowed} allowed, \
                 {pods} pods recorded, {unavailable} denied as unavailable, in {took:?}"
            );
            if allowed as u64 * 10 > LIMIT || pods > LIMIT {
                failures.push(format!(
                    "{setup}, round {round}: {allowed} allowed, {pods} pods recorded"
                ));
            }
            assert!(
                allowed >= 1,
                "{setup}, round {round}: nothing allowed: {messages:?}"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "past the {LIMIT}-pod budget: {failures:?}\nA:\n{}\nB:\n{}",
        a.stderr.lock().unwrap(),
        b.stderr.lock().unwrap()
    );
}
