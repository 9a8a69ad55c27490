//! End to end, through a real API server (tests/common/cluster.rs): a person's changes
//! are never sent to blastguard.
//!
//! The webhook configuration sends only AI-assisted requests (its matchConditions,
//! evaluated by the real API server). Here cluster-admin, a person without AI markers,
//! creates, updates, scales, annotates and deletes workloads, in `prod` and well over
//! every limit, and blastguard's own count of the AdmissionReviews it answered
//! (`blastguard_admission_requests_total`, summed over its labels) does not move. The
//! controllers' work that follows (ReplicaSets, Pods) is not sent either. The last
//! step sends one AI change to show the count is live.

mod common;

use common::cluster::{AI_AGENT, E2e, Steps, deployment};

#[test]
fn a_persons_changes_are_never_sent_to_the_webhook() {
    let e2e = E2e::start();
    e2e.namespaces(&["prod", "team"]);
    let mut steps = Steps::default();
    let start = e2e.webhook.requests();
    assert_eq!(
        start,
        0.0,
        "nothing was sent yet:\n{}",
        e2e.webhook.metrics()
    );

    // After each change, blastguard has still answered nothing.
    let unsent = |what: &str| {
        assert_eq!(
            e2e.webhook.requests(),
            0.0,
            "{what} was sent to the webhook; decisions:\n{:#?}",
            e2e.webhook.decisions()
        );
    };

    steps.run("create a 40-replica Deployment in prod", || {
        e2e.apply(&deployment("prod", "api", 40, &[]), &[], None)
            .expect_ok();
        // The deployment controller's ReplicaSet and the replicaset controller's Pods.
        e2e.wait_for_replicaset("prod", "api", 40);
        common::cluster::wait_for("40 Pods of prod/api", common::cluster::WAIT, || {
            (e2e.list("prod", "pods").len() == 40).then_some(())
        });
        unsent("a person's create");
    });

    steps.run(
        "update its pod template (every pod replaced) with apply and set image",
        || {
            let mut changed = deployment("prod", "api", 40, &[]);
            changed["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28".into();
            e2e.apply(&changed, &[], None).expect_ok();
            e2e.kubectl(&[
                "-n",
                "prod",
                "set",
                "image",
                "deployment/api",
                "nginx=nginx:1.29",
            ])
            .expect_ok();
            unsent("a person's update");
        },
    );

    steps.run(
        "scale it to 80, and to 0, with kubectl scale (the scale subresource)",
        || {
            e2e.kubectl(&["-n", "prod", "scale", "deployment/api", "--replicas=80"])
                .expect_ok();
            assert_eq!(
                e2e.jsonpath("prod", "deployment/api", "{.spec.replicas}"),
                "80"
            );
            // The rollouts above are stuck (no pod ever becomes ready here), so the
            // deployment controller spreads the 80, plus the surge (25%) it may add,
            // over the old and new ReplicaSets.
            common::cluster::wait_for(
                "the ReplicaSets of prod/api to be scaled up to 80 or more",
                common::cluster::WAIT,
                || {
                    let total: u64 = e2e
                        .list("prod", "replicasets")
                        .iter()
                        .map(|rs| rs["spec"]["replicas"].as_u64().unwrap_or(0))
                        .sum();
                    (total >= 80).then_some(())
                },
            );
            e2e.kubectl(&["-n", "prod", "scale", "deployment/api", "--replicas=0"])
                .expect_ok();
            unsent("a person's scale");
        },
    );

    steps.run(
        "a large change outside prod: create 120 replicas (over maxReplicas), patch, delete",
        || {
            e2e.apply(&deployment("team", "batch", 120, &[]), &[], None)
                .expect_ok();
            e2e.kubectl(&[
                "-n",
                "team",
                "patch",
                "deployment/batch",
                "-p",
                r#"{"spec":{"template":{"metadata":{"labels":{"rev":"2"}}}}}"#,
            ])
            .expect_ok();
            e2e.kubectl(&["-n", "team", "annotate", "deployment/batch", "owner=alice"])
                .expect_ok();
            e2e.kubectl(&["-n", "team", "delete", "deployment/batch", "--wait=true"])
                .expect_ok();
            unsent("a person's create, patch, annotate or delete");
        },
    );

    steps.run(
        "delete the prod Deployment; the garbage collector removes the rest",
        || {
            e2e.kubectl(&["-n", "prod", "delete", "deployment/api", "--wait=true"])
                .expect_ok();
            common::cluster::wait_for(
                "prod's ReplicaSets to be collected",
                common::cluster::WAIT,
                || e2e.list("prod", "replicasets").is_empty().then_some(()),
            );
            unsent("a person's delete or the garbage collector");
        },
    );

    steps.run(
        "the count is live: one AI change is sent and counted",
        || {
            let err = e2e
                .apply(
                    &deployment("team", "ai", 40, &[(AI_AGENT, "claude-code")]),
                    &["--dry-run=server"],
                    None,
                )
                .expect_err();
            assert!(err.contains("blastguard: this AI-assisted create"), "{err}");
            assert_eq!(e2e.webhook.requests(), 1.0);
            assert_eq!(
                e2e.webhook.decisions().len(),
                1,
                "{:#?}",
                e2e.webhook.decisions()
            );
        },
    );

    steps.finish();
}
