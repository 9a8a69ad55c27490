//! `blastguard check -f --old` on what a change sets in motion (docs/policy.md): the
//! same answers as the webhook where the input holds what the count needs (an
//! autoscaler's target among the old objects), and, where it does not (the target's
//! size, a Service's endpoints), a denial that says what cannot be known offline
//! instead of a guess.

mod common;

use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

const TARGET: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: team}
spec:
  replicas: 30
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: app, image: nginx:1.27}]}
";

const AUTOSCALER: &str = "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: api
  namespace: team
  annotations: {blastguard.io/ai-agent: claude-code}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api}
  minReplicas: 1
  maxReplicas: 1
";

fn service(selector: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: front
  namespace: team
  annotations: {{blastguard.io/ai-agent: claude-code}}
spec:
  selector: {{app: {selector}}}
  ports: [{{port: 80}}]
"
    )
}

#[test]
fn what_a_change_sets_in_motion_is_counted_offline_or_named_as_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let hpa = write(dir.path(), "hpa.yaml", AUTOSCALER);
    let target = write(dir.path(), "target.yaml", TARGET);

    // The target is among the old objects: its size is known, 30 -> 1 is counted.
    let (status, out, err) = common::run_to_exit(&["check", "-f", &hpa, "--old", &target]);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(out.contains("pods affected 29 > 10"), "{out}");

    // Without it, the size is not known offline, and check says so.
    let (status, out, err) = common::run_to_exit(&["check", "-f", &hpa]);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(
        out.contains("the current size of Deployment team/api is not known without a cluster"),
        "{out}"
    );

    // A Service's endpoints are never known offline.
    let old = write(dir.path(), "old-svc.yaml", &service("front"));
    let new = write(dir.path(), "svc.yaml", &service("nothing"));
    let (status, out, err) = common::run_to_exit(&["check", "-f", &new, "--old", &old]);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(
        out.contains("the endpoints of Service team/front are not known without a cluster"),
        "{out}"
    );
    // A Service change that rewires nothing needs nothing from the cluster.
    let (status, out, err) = common::run_to_exit(&["check", "-f", &old, "--old", &old]);
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
}
