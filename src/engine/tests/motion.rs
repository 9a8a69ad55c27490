//! What a change sets in motion (docs/policy.md): every row of the radius table that
//! counts what a controller does after admission, on the embedded default policy
//! (staging → rule `default`: 10 pods; prod → rule `protected`: 0 pods). Each row is
//! an attack that was admitted before these rows were counted.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::*;
use crate::change::Target;
use crate::engine::State;
use crate::sizes::Sizes;
use crate::verdict::Reason::Unmeasurable;

/// Sizes as a cluster would answer them: workload replicas and Service endpoints.
#[derive(Default)]
struct Cluster {
    replicas: HashMap<(String, String), u64>,
    endpoints: HashMap<(String, String), u64>,
}

impl Sizes for Cluster {
    fn replicas(&self, target: &Target) -> Result<u64, String> {
        let key = (
            target.namespace.clone().unwrap_or_default(),
            target.name.clone(),
        );
        self.replicas
            .get(&key)
            .copied()
            .ok_or_else(|| format!("the size of {target} is not known"))
    }
    fn endpoints(&self, namespace: &str, service: &str) -> Result<u64, String> {
        self.endpoints
            .get(&(namespace.to_string(), service.to_string()))
            .copied()
            .ok_or_else(|| format!("the endpoints of Service {namespace}/{service} are not known"))
    }
    fn observe(&self, _: &Target, _: Option<u64>) {}
}

/// An engine whose cluster has these Deployments (namespace, name, replicas) and
/// Services (namespace, name, endpoints).
fn engine_over(deployments: &[(&str, &str, u64)], services: &[(&str, &str, u64)]) -> Engine {
    let key = |ns: &str, name: &str| (ns.to_string(), name.to_string());
    let cluster = Cluster {
        replicas: deployments
            .iter()
            .map(|(ns, n, r)| (key(ns, n), *r))
            .collect(),
        endpoints: services.iter().map(|(ns, n, e)| (key(ns, n), *e)).collect(),
    };
    Engine::with_state(
        Policy::from_yaml(DEFAULT_POLICY_YAML, None).unwrap(),
        Arc::new(NoTrustedSigners),
        State {
            sizes: Arc::new(cluster),
            ..State::in_memory()
        },
    )
}

fn hpa(target: &str, min: u64, max: u64, metrics: Value) -> Value {
    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "api", "annotations": ai()},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                    "minReplicas": min, "maxReplicas": max, "metrics": metrics}})
}

fn cpu(percent: u64) -> Value {
    json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": percent}}}])
}

fn run(engine: &Engine, rows: Vec<(&str, Req, (Decision, Reason, u64))>) {
    for (name, req, want) in rows {
        let got = engine.review(&req.body());
        assert_eq!(verdict_of(&got), want, "{name}");
    }
}

/// Issue 18, paths 1-3: the HPA controller moves its target to the new range.
#[test]
fn autoscalers_count_what_the_hpa_controller_will_do() {
    let engine = engine_over(
        &[
            ("prod", "api", 40),
            ("prod", "small", 1),
            ("prod", "big", 40),
            ("staging", "api", 30),
        ],
        &[],
    );
    let m = cpu(80);
    run(
        &engine,
        vec![
            (
                "path 1: lowering the range of a 40-replica target to 1..1",
                Req::update("HorizontalPodAutoscaler", "prod", hpa("api", 40, 40, m.clone()), hpa("api", 1, 1, m.clone())).user(AI_SA),
                (Deny, OverLimits, 39),
            ),
            (
                "path 2: retargeting a 1..1 autoscaler at a 40-replica workload",
                Req::update("HorizontalPodAutoscaler", "prod", hpa("small", 1, 1, m.clone()), hpa("big", 1, 1, m.clone())).user(AI_SA),
                (Deny, OverLimits, 39),
            ),
            (
                "path 3: created below the target's size",
                Req::create("HorizontalPodAutoscaler", "staging", hpa("api", 1, 1, m.clone())),
                (Deny, OverLimits, 29),
            ),
            (
                "created around the target's size: the range's reach from it",
                Req::create("HorizontalPodAutoscaler", "staging", hpa("api", 25, 35, m.clone())),
                (Allow, WithinLimits, 5),
            ),
            (
                "a range that still holds the target moves nothing",
                Req::update("HorizontalPodAutoscaler", "staging", hpa("api", 25, 35, m.clone()), hpa("api", 28, 35, m.clone())),
                (Allow, WithinLimits, 0),
            ),
            (
                "a raised floor: the pods it adds",
                Req::update("HorizontalPodAutoscaler", "staging", hpa("api", 25, 50, m.clone()), hpa("api", 45, 50, m.clone())),
                (Deny, OverLimits, 15),
            ),
            (
                "new metrics may drive the target anywhere in its range",
                Req::update("HorizontalPodAutoscaler", "staging", hpa("api", 25, 90, m.clone()), hpa("api", 25, 90, cpu(10))),
                (Deny, OverLimits, 60),
            ),
            (
                "maxReplicas is the resulting replicas",
                Req::update("HorizontalPodAutoscaler", "staging", hpa("api", 2, 50, m.clone()), hpa("api", 2, 500, m.clone())),
                (Deny, OverLimits, 0),
            ),
            (
                "deleting an autoscaler leaves its target as it is",
                Req::delete("HorizontalPodAutoscaler", "prod", hpa("api", 40, 40, m.clone())).user(AI_SA),
                (Allow, WithinLimits, 0),
            ),
            (
                "a target of unknown size cannot be measured",
                Req::create("HorizontalPodAutoscaler", "staging", hpa("ghost", 1, 5, m.clone())),
                (Deny, Unmeasurable, 0),
            ),
        ],
    );
}

fn with_owners(mut object: Value, owners: Value) -> Value {
    object["metadata"]["ownerReferences"] = owners;
    object
}

fn pod(labels: Value, memory: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "api", "labels": labels},
           "spec": {"containers": [{"name": "app", "image": "app:1",
                                    "resources": {"requests": {"memory": memory}}}]},
           "status": {"phase": "Running"}})
}

/// Issue 18, paths 4-6: the garbage collector, a ReplicaSet replacing a relabeled
/// pod, and subresources through which the object changes.
#[test]
fn owners_labels_and_subresources_are_judged_like_the_object() {
    let engine = engine();
    let owned = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "0d3f4a62-0000-4000-8000-000000000001"}]);
    let mut resize = Req::update("Pod", "prod", pod(json!({"app": "front"}), "256Mi"), pod(json!({"app": "front"}), "4Mi")).user(AI_SA);
    resize.sub = Some("resize");
    let mut ephemeral = Req::update("Pod", "prod", pod(json!({"app": "front"}), "256Mi"), {
        let mut p = pod(json!({"app": "front"}), "256Mi");
        p["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox"}]);
        p
    })
    .user(AI_SA);
    ephemeral.sub = Some("ephemeralcontainers");
    let mut stripped = deploy(40, "app:1", human());
    stripped["metadata"]["annotations"] = json!({});
    let mut strip = Req::update("Deployment", "staging", deploy(40, "app:1", ai()), stripped);
    strip.sub = Some("status");
    let mut controller_status = Req::update("Deployment", "prod", deploy(40, "app:1", ai()), deploy(40, "app:1", ai()))
        .user("system:serviceaccount:kube-system:deployment-controller");
    controller_status.sub = Some("status");
    run(
        &engine,
        vec![
            (
                "path 4: ownerReferences to an owner that does not exist: as a delete",
                Req::update("Deployment", "prod", deploy(40, "app:1", human()), with_owners(deploy(40, "app:1", human()), owned.clone())).user(AI_SA),
                (Deny, OverLimits, 40),
            ),
            (
                "ownerReferences of a small workload",
                Req::update("Deployment", "staging", deploy(4, "app:1", ai()), with_owners(deploy(4, "app:1", ai()), owned.clone())),
                (Allow, WithinLimits, 4),
            ),
            (
                "path 5: a pod relabeled out of its selector is replaced",
                Req::update("Pod", "prod", pod(json!({"app": "front"}), "256Mi"), pod(json!({"app": "front-orphaned"}), "256Mi")).user(AI_SA),
                (Deny, OverLimits, 1),
            ),
            ("path 6: pods/resize is judged like the pod", resize, (Deny, OverLimits, 1)),
            ("pods/ephemeralcontainers too", ephemeral, (Deny, OverLimits, 1)),
            ("path 9: a marker stripped through /status is still stripped", strip, (Deny, OverLimits, 0)),
            ("a controller's status update is not AI-assisted", controller_status, (Allow, NotAiAssisted, 0)),
        ],
    );
}

fn paused(paused: bool, image: &str, updated: Option<u64>) -> Value {
    let mut d = deploy(40, image, human());
    d["spec"]["paused"] = json!(paused);
    d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
    d["status"] = match updated {
        Some(u) => json!({"replicas": 40, "updatedReplicas": u}),
        None => json!({}),
    };
    d
}

fn staged(partition: u64, current: &str, update: &str) -> Value {
    let mut s = workload("StatefulSet", Some(40), "app:2", human());
    s["spec"]["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": partition}});
    s["status"] = json!({"replicas": 40, "currentRevision": current, "updateRevision": update});
    s
}

/// Issue 18, path 7: a rollout staged by a person and released by an AI.
#[test]
fn releasing_a_waiting_rollout_counts_the_pods_it_replaces() {
    run(
        &engine(),
        vec![
            (
                "resume with a template change pending (no pod updated yet)",
                Req::update("Deployment", "prod", paused(true, "app:2", Some(0)), paused(false, "app:2", Some(0))).user(AI_SA),
                (Deny, OverLimits, 40),
            ),
            (
                "resume half way through",
                Req::update("Deployment", "staging", paused(true, "app:2", Some(35)), paused(false, "app:2", Some(35))).user(AI_SA),
                (Allow, WithinLimits, 5),
            ),
            (
                "resume when the status cannot tell: every pod",
                Req::update("Deployment", "staging", paused(true, "app:2", None), paused(false, "app:2", None)).user(AI_SA),
                (Deny, OverLimits, 40),
            ),
            (
                "resume with nothing pending",
                Req::update("Deployment", "prod", paused(true, "app:1", Some(40)), paused(false, "app:1", Some(40))).user(AI_SA),
                (Allow, WithinLimits, 0),
            ),
            (
                "maxUnavailable 100% under a person's rollout in progress",
                Req::update("Deployment", "prod", paused(false, "app:2", Some(10)), {
                    let mut d = paused(false, "app:2", Some(10));
                    d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%", "maxSurge": 0}});
                    d
                })
                .user(AI_SA),
                (Deny, OverLimits, 30),
            ),
            (
                "new rollout numbers with nothing in progress",
                Req::update("Deployment", "prod", paused(false, "app:1", Some(40)), {
                    let mut d = paused(false, "app:1", Some(40));
                    d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%", "maxSurge": 0}});
                    d
                })
                .user(AI_SA),
                (Allow, WithinLimits, 0),
            ),
            (
                "a StatefulSet's partition lowered over a staged template",
                Req::update("StatefulSet", "prod", staged(40, "r1", "r2"), staged(0, "r1", "r2")).user(AI_SA),
                (Deny, OverLimits, 40),
            ),
            (
                "a partition lowered with nothing staged",
                Req::update("StatefulSet", "prod", staged(40, "r2", "r2"), staged(0, "r2", "r2")).user(AI_SA),
                (Allow, WithinLimits, 0),
            ),
        ],
    );
}

fn cronjob(schedule: &str, parallelism: u64, suspend: bool) -> Value {
    let mut c = workload("CronJob", Some(parallelism), "app:1", human());
    c["spec"]["schedule"] = json!(schedule);
    c["spec"]["suspend"] = json!(suspend);
    c
}

/// Issue 18, path 10: a schedule starts runs; counted over the change-set window.
#[test]
fn a_schedule_counts_the_runs_it_starts_within_the_window() {
    let monthly = "0 0 1 * *";
    run(
        &engine(),
        vec![
            (
                "path 10: a monthly job made to run every minute (60 runs of 10 pods)",
                Req::update("CronJob", "staging", cronjob(monthly, 10, false), cronjob("* * * * *", 10, false)).user(AI_SA),
                (Deny, OverLimits, 600),
            ),
            (
                "created monthly: at least one run",
                Req::create("CronJob", "staging", cronjob(monthly, 5, false)).user(AI_SA),
                (Allow, WithinLimits, 5),
            ),
            (
                "@hourly: one run an hour",
                Req::create("CronJob", "staging", cronjob("@hourly", 5, false)).user(AI_SA),
                (Allow, WithinLimits, 5),
            ),
            (
                "@every 10m: six runs",
                Req::create("CronJob", "staging", cronjob("@every 10m", 2, false)).user(AI_SA),
                (Deny, OverLimits, 12),
            ),
            (
                "unsuspended",
                Req::update("CronJob", "prod", cronjob(monthly, 10, true), cronjob(monthly, 10, false)).user(AI_SA),
                (Deny, OverLimits, 10),
            ),
            (
                "a change that starts no run",
                Req::update("CronJob", "prod", cronjob(monthly, 10, false), {
                    let mut c = cronjob(monthly, 10, false);
                    c["spec"]["successfulJobsHistoryLimit"] = json!(1);
                    c
                })
                .user(AI_SA),
                (Allow, WithinLimits, 0),
            ),
            (
                "concurrencyPolicy Replace: each run replaces the last",
                Req::update("CronJob", "prod", cronjob(monthly, 10, false), {
                    let mut c = cronjob(monthly, 10, false);
                    c["spec"]["concurrencyPolicy"] = json!("Replace");
                    c
                })
                .user(AI_SA),
                (Deny, OverLimits, 10),
            ),
            (
                "suspended: no run starts",
                Req::update("CronJob", "prod", cronjob(monthly, 10, false), cronjob(monthly, 10, true)).user(AI_SA),
                (Allow, WithinLimits, 0),
            ),
            (
                "a schedule that is not cron cannot be measured",
                Req::create("CronJob", "staging", cronjob("every tuesday", 1, false)).user(AI_SA),
                (Deny, Unmeasurable, 0),
            ),
        ],
    );
}

fn service(selector: Value, port: u64) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "annotations": ai()},
           "spec": {"selector": selector, "ports": [{"port": port, "protocol": "TCP", "targetPort": port}]}})
}

fn budget(expected: Option<u64>) -> Value {
    json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "api", "annotations": ai()},
           "spec": {"minAvailable": 30, "selector": {"matchLabels": {"app": "api"}}},
           "status": expected.map_or(json!({}), |e| json!({"expectedPods": e, "currentHealthy": e}))})
}

/// Issue 18, path 11 (the selector half), and a PodDisruptionBudget given up before
/// evictions.
#[test]
fn services_and_disruption_budgets_count_the_pods_behind_them() {
    let engine = engine_over(&[], &[("prod", "api", 20), ("staging", "api", 20)]);
    let app = json!({"app": "api"});
    let mut relabeled = service(app.clone(), 80);
    relabeled["metadata"]["labels"] = json!({"team": "a"});
    run(
        &engine,
        vec![
            (
                "path 11: a prod Service's selector changed to match nothing",
                Req::update("Service", "prod", service(app.clone(), 80), service(json!({"app": "nothing"}), 80)),
                (Deny, OverLimits, 20),
            ),
            ("its ports", Req::update("Service", "staging", service(app.clone(), 80), service(app.clone(), 81)), (Deny, OverLimits, 20)),
            ("its labels only", Req::update("Service", "staging", service(app.clone(), 80), relabeled), (Allow, WithinLimits, 0)),
            ("deleted", Req::delete("Service", "staging", service(app.clone(), 80)).user(AI_SA), (Deny, OverLimits, 20)),
            ("created", Req::create("Service", "staging", service(app.clone(), 80)), (Allow, WithinLimits, 0)),
            (
                "a PodDisruptionBudget deleted: the pods it protected",
                Req::delete("PodDisruptionBudget", "prod", budget(Some(40))).user(AI_SA),
                (Deny, OverLimits, 40),
            ),
            (
                "a PodDisruptionBudget whose status cannot tell",
                Req::delete("PodDisruptionBudget", "staging", budget(None)).user(AI_SA),
                (Deny, Unmeasurable, 0),
            ),
        ],
    );
    // Without a cluster the endpoints are unknown: unmeasurable, never 0.
    let offline = super::engine().review(
        &Req::update("Service", "staging", service(app.clone(), 80), service(app, 81)).body(),
    );
    assert_eq!(verdict_of(&offline), (Deny, Unmeasurable, 0));
}

/// Issue 18, path 13: a Namespace's target has no namespace, in the payload too; its
/// own rule judges it.
#[test]
fn a_namespace_is_its_own_target_and_judged_by_its_own_rule() {
    let namespace = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
    };
    // The API server sends a Namespace's own name as request.namespace.
    let mut req = Req::new("DELETE", "Namespace", Some("scratch2")).old(namespace("scratch2")).user(AI_SA);
    req.name = "scratch2";
    let denied = engine().review(&req.body());
    let verdict = &denied.judged().unwrap().verdict;
    let payload = verdict.payload.as_ref().expect("a payload to sign");
    assert_eq!(payload.target.namespace, "", "{payload:?}");
    assert_eq!(payload.target.name, "scratch2");
    assert_eq!(verdict.required_approvals, 1, "rule default");
    let mut prod = Req::new("DELETE", "Namespace", Some("prod")).old(namespace("prod")).user(AI_SA);
    prod.name = "prod";
    let denied = engine().review(&prod.body());
    let verdict = &denied.judged().unwrap().verdict;
    assert_eq!(verdict.required_approvals, 2, "rule protected judges prod itself");
    assert_eq!(verdict.payload.as_ref().unwrap().target.namespace, "");
}
