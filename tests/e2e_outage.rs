//! End to end, through a real API server (tests/common/cluster.rs): what a webhook
//! outage does, and certificate rotation under traffic.
//!
//! The webhook configuration says `failurePolicy: Fail`, made safe by matchConditions
//! that send only AI-assisted requests. With the server stopped, the real API server
//! must still admit people's changes and the controllers' work (including the
//! deployment controller scaling the ReplicaSet of an AI-marked Deployment, whose
//! annotations it copied) and must refuse AI changes. Restarted on the same address
//! and certificate, the server serves again without anything changed in the cluster.
//! Then the serving certificate is replaced by symlink swap (as kubelet updates a
//! Secret volume) while kubectl sends AI requests through the API server, and none
//! fails.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{AI_AGENT, E2e, Steps, WAIT, deployment, wait_for};

const WEBHOOK_CONFIGURATION: &str = "validatingwebhookconfiguration/blastguard";

#[test]
fn an_outage_holds_only_ai_changes_and_certificates_rotate_without_a_failed_call() {
    let mut e2e = E2e::start();
    e2e.namespaces(&["team"]);
    let ai = [(AI_AGENT, "claude-code")];
    let mut steps = Steps::default();
    let configuration = e2e.jsonpath("", WEBHOOK_CONFIGURATION, "{.metadata.resourceVersion}");

    steps.run("baseline: an AI change within the limits passes", || {
        let sent = e2e.webhook.requests();
        e2e.apply(&deployment("team", "small", 2, &ai), &[], None)
            .expect_ok();
        assert_eq!(e2e.webhook.requests(), sent + 1.0);
        e2e.wait_for_replicaset("team", "small", 2);
    });

    steps.run(
        "server stopped: a person's change and the controllers' work go through",
        || {
            e2e.webhook.stop();
            e2e.apply(&deployment("team", "manual", 3, &[]), &[], None)
                .expect_ok();
            e2e.wait_for_replicaset("team", "manual", 3);
            // A person scales the AI-marked Deployment; the deployment controller then
            // updates its ReplicaSet, which carries the AI marker it copied.
            e2e.kubectl(&["-n", "team", "scale", "deployment/small", "--replicas=6"])
                .expect_ok();
            let rs = e2e.wait_for_replicaset("team", "small", 6);
            assert_eq!(rs["metadata"]["annotations"][AI_AGENT], "claude-code");
            wait_for("6 Pods of team/small", WAIT, || {
                let pods = e2e.list("team", "pods");
                let small = pods
                    .iter()
                    .filter(|p| p["metadata"]["labels"]["app"] == "small");
                (small.count() == 6).then_some(())
            });
        },
    );

    steps.run(
        "server stopped: the API server refuses AI changes (failurePolicy Fail)",
        || {
            let err = e2e
                .apply(&deployment("team", "refused", 1, &ai), &[], None)
                .expect_err();
            assert!(
                err.contains(r#"failed calling webhook "validate.blastguard.io""#)
                    && err.contains(&e2e.webhook.listen.to_string()),
                "{err}"
            );
            assert!(e2e.get("team", "deployment/refused").is_none());
        },
    );

    steps.run(
        "restarted on the same address and certificate: back to normal, cluster untouched",
        || {
            e2e.webhook.start();
            let sent = e2e.webhook.requests();
            e2e.apply(&deployment("team", "refused", 1, &ai), &[], None)
                .expect_ok();
            assert_eq!(e2e.webhook.requests(), sent + 1.0);
            let err = e2e
                .apply(
                    &deployment("team", "big", 40, &ai),
                    &["--dry-run=server"],
                    None,
                )
                .expect_err();
            assert!(
                err.contains("pods affected 40 > 10 (maxPodsAffected)"),
                "{err}"
            );
            assert_eq!(
                e2e.jsonpath("", WEBHOOK_CONFIGURATION, "{.metadata.resourceVersion}"),
                configuration,
                "the webhook configuration was changed"
            );
        },
    );

    steps.run(
        "certificate rotated by symlink swap under kubectl traffic: no failed call",
        || {
            rotation_under_traffic(&e2e);
        },
    );

    steps.finish();
}

/// kubectl sends AI dry-run requests through the API server in a loop (at most 60, or
/// 20 s) while the main thread swaps the certificate after the tenth. The API server
/// keeps its connections to the webhook, so the old certificate may serve most of
/// these calls; what the test holds is that the swap fails none of them and that a new
/// handshake gets the new certificate.
fn rotation_under_traffic(e2e: &E2e) {
    const MOST: usize = 60;
    const BOUND: Duration = Duration::from_secs(20);
    let change = deployment("team", "rotating", 2, &[(AI_AGENT, "claude-code")]);
    let sent = e2e.webhook.requests();
    let reloads = e2e
        .webhook
        .metric("blastguard_tls_cert_reloads_total{result=\"success\"}");
    let done = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let at_swap = std::thread::scope(|scope| {
        scope.spawn(|| {
            let t0 = Instant::now();
            while done.load(Ordering::SeqCst) < MOST && t0.elapsed() < BOUND {
                let r = e2e.apply(&change, &["--dry-run=server"], None);
                if !r.ok {
                    failures.lock().unwrap().push(r.stderr);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
        wait_for("10 requests before the swap", WAIT, || {
            (done.load(Ordering::SeqCst) >= 10).then_some(())
        });
        e2e.webhook.rotate(2);
        let new = e2e.webhook.leaf_der();
        wait_for("the new certificate to be served", WAIT, || {
            (e2e.webhook.served_certificate() == new).then_some(())
        });
        done.load(Ordering::SeqCst)
    });
    let total = done.load(Ordering::SeqCst);
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {total} calls failed: {failures:#?}",
        failures.len()
    );
    assert!(
        total >= at_swap + 10,
        "only {} requests after the swap ({total} in all)",
        total - at_swap
    );
    // Every call reached the server and was answered by it.
    assert_eq!(e2e.webhook.requests(), sent + total as f64);
    assert_eq!(
        e2e.webhook
            .metric("blastguard_tls_cert_reloads_total{result=\"success\"}"),
        reloads + 1.0
    );
    assert_eq!(
        e2e.webhook.metric("blastguard_tls_cert_not_after_seconds"),
        e2e.webhook.leaf_not_after() as f64
    );
    eprintln!(
        "e2e: {total} calls, {} after the swap, none failed",
        total - at_swap
    );
}
