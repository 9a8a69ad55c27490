//! Bursts do not become denials (issue 19, finding 5), and what shared state adds to a
//! decision's latency under a steady rate, on a real control plane
//! (scripts/control-plane.sh) with two `serve --state cluster` replicas.
//!
//! Before: an agent's own burst of 40 parallel in-limit creates had 36 to 39 of them
//! denied `cluster_unavailable`: each decision waited its turn for one write after
//! another and ran out of its 200 ms budget. Now the reservations that arrive while a
//! write is in flight go out together in the next one.
//!
//! What stands in for the API server: this test posts the AdmissionReviews to the
//! replicas itself, over TLS verified against a test CA, as the API server does. The
//! records are read and written through the real API server. The replicas run as an
//! install does, looking for each admitted change in the cluster: the objects these
//! reviews name are never made, so each hold lapses after its look instead of being
//! confirmed, which costs the same (one GET, and a settlement carried by the key's next
//! write).
//!
//! `added_latency_at_steady_rates` is the benchmark of scripts/bench-state.sh
//! (BENCHMARKS.md), ignored in the test suite: it measures, it asserts nothing.

mod common;

use std::time::{Duration, Instant};

use common::replica::{CLUSTER_STATE, CLUSTER_STATE_LOOKING, Replicas};
use common::{AI, DeploymentCreate, uid, verdict_at};

/// An AI-assisted Deployment CREATE of `replicas` pods by `user` in `team-a`.
fn create(name: &str, user: &str, replicas: u64) -> Vec<u8> {
    let review = DeploymentCreate {
        uid: &uid(3),
        namespace: "team-a",
        name,
        replicas,
        annotations: AI,
        user,
    }
    .review();
    serde_json::to_vec(&review).unwrap()
}

/// One decision: allowed, its message, and how long the round trip took.
async fn judge(client: &reqwest::Client, url: &str, body: Vec<u8>) -> (bool, String, Duration) {
    let started = Instant::now();
    let (allowed, message) = verdict_at(client, url, body).await;
    (allowed, message, started.elapsed())
}

/// Two replicas with the default decision budget (200 ms), plus one more started with
/// `extra_args` (e.g. an in-memory one, to compare with).
fn setup(extra_args: Option<&[&str]>) -> Replicas {
    // BENCH_UNSEEN=1: count each admitted change at once, as before issue 19, to
    // compare what looking for it costs.
    let state: &[&str] = if std::env::var_os("BENCH_UNSEEN").is_some() {
        &CLUSTER_STATE
    } else {
        &CLUSTER_STATE_LOOKING
    };
    let mut specs = vec![("replica A", state), ("replica B", state)];
    if let Some(args) = extra_args {
        specs.push(("replica M", args));
    }
    Replicas::start(&specs)
}

/// The ChangeSet CRD was established moments before the replicas started, as on a
/// fresh install: the API server holds its first write of the type for about 2 s,
/// as long as a reservation waits. Each replica writes once (a dry run) before it
/// reports ready, so the first decisions are not the ones held.
#[test]
fn the_first_decisions_after_the_crd_is_established_are_admitted() {
    let s = setup(None);
    let sends: Vec<_> = (0..6)
        .map(|i| {
            let (url, client) = s.clients[i % 2].clone();
            let user = format!("system:serviceaccount:ai-agents:first-{i}");
            let body = create(&format!("web-{i}"), &user, 1);
            async move { judge(&client, &url, body).await }
        })
        .collect();
    let answers = s.rt.block_on(futures::future::join_all(sends));
    let denied: Vec<&String> = answers
        .iter()
        .filter(|(allowed, _, _)| !allowed)
        .map(|(_, m, _)| m)
        .collect();
    assert!(
        denied.is_empty(),
        "first in-limit creates denied: {denied:?}\n{}",
        s.replicas[0].stderr.lock().unwrap()
    );
}

#[test]
fn a_burst_of_forty_in_limit_creates_is_admitted() {
    let s = setup(None);
    for round in 0..3 {
        let user = format!("system:serviceaccount:ai-agents:burst-{round}");
        // 40 one-pod creates: 40 pods, within the 50-pod budget; over both replicas.
        let sends: Vec<_> = (0..40)
            .map(|i| {
                let (url, client) = s.clients[i % 2].clone();
                let body = create(&format!("web-{i}"), &user, 1);
                async move { judge(&client, &url, body).await }
            })
            .collect();
        let started = Instant::now();
        let answers = s.rt.block_on(futures::future::join_all(sends));
        let took = started.elapsed();
        let denied: Vec<&String> = answers
            .iter()
            .filter(|(allowed, _, _)| !allowed)
            .map(|(_, m, _)| m)
            .collect();
        let slowest = answers.iter().map(|(_, _, t)| *t).max().unwrap_or_default();
        eprintln!(
            "round {round}: 40 parallel in-limit creates, {} denied, in {took:?} (slowest {slowest:?})",
            denied.len()
        );
        assert!(
            denied.is_empty(),
            "round {round}: in-limit creates denied: {denied:?}\n{}",
            s.replicas[0].stderr.lock().unwrap()
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends AI decisions at `rate` per second for `seconds` to the replicas `targets`
/// (round robin), each by one of 40 agents in turn (1-pod creates: none reaches its
/// budget); returns every latency, sorted, and how many were denied.
fn steady(
    s: &Replicas,
    targets: &[usize],
    rate: u32,
    seconds: u32,
    tag: &str,
) -> (Vec<Duration>, usize) {
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let results = s.rt.block_on(async {
        let mut tasks = Vec::with_capacity(total);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for i in 0..total {
            tick.tick().await;
            let (url, client) = s.clients[targets[i % targets.len()]].clone();
            let user = format!("system:serviceaccount:ai-agents:{tag}-{}", i % 40);
            let body = create(&format!("web-{i}"), &user, 1);
            tasks.push(tokio::spawn(
                async move { judge(&client, &url, body).await },
            ));
        }
        let mut results = Vec::with_capacity(total);
        for t in tasks {
            results.push(t.await.unwrap());
        }
        results
    });
    let denied = results.iter().filter(|(a, _, _)| !a).count();
    if let Some((_, message, _)) = results.iter().find(|(a, _, _)| !a) {
        eprintln!("{tag}: {denied} denied, e.g. {message}");
    }
    let mut took: Vec<Duration> = results.into_iter().map(|(_, _, t)| t).collect();
    took.sort();
    (took, denied)
}

/// The benchmark of scripts/bench-state.sh: p50/p99 of decisions at 10, 50 and 100
/// AI decisions per second on two replicas with their state in the cluster, against
/// the same on one replica with its state in memory; the difference is what shared
/// state adds.
#[test]
#[ignore = "a benchmark: scripts/bench-state.sh"]
fn added_latency_at_steady_rates() {
    let seconds: u32 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let s = setup(Some(&["--state", "memory"]));
    // Warm every connection up.
    let (_, denied) = steady(&s, &[0, 1, 2], 20, 1, "warm");
    if denied > 0 {
        // Why the first decisions of a fresh replica waited too long.
        for r in &s.replicas {
            for line in r.stderr.lock().unwrap().lines() {
                if line.contains("WARN") {
                    eprintln!("{line}");
                }
            }
        }
    }
    println!(
        "| AI decisions/s | p50 cluster | p99 cluster | p50 memory | p99 memory | added p50 | added p99 | denied (cluster) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let rates: Vec<u32> = std::env::var("BENCH_RATES")
        .ok()
        .map(|r| r.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 50, 100]);
    for rate in rates {
        let (cluster, denied) = steady(&s, &[0, 1], rate, seconds, &format!("c{rate}"));
        let (memory, _) = steady(&s, &[2], rate, seconds, &format!("m{rate}"));
        let (c50, c99) = (percentile(&cluster, 0.5), percentile(&cluster, 0.99));
        let (m50, m99) = (percentile(&memory, 0.5), percentile(&memory, 0.99));
        println!(
            "| {rate} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {denied} of {} |",
            ms(c50),
            ms(c99),
            ms(m50),
            ms(m99),
            ms(c50) - ms(m50),
            ms(c99) - ms(m99),
            cluster.len()
        );
    }
}
