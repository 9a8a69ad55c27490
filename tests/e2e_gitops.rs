//! GitOps on the real control plane (tests/common/cluster.rs: pinned etcd and
//! kube-apiserver, the chart installed with helm, `blastguard serve` registered
//! through `webhook.url`, every change made with the real kubectl, approvers' keys
//! made and used by the real ssh-keygen). The GitOps controller is played by kubectl
//! impersonating Flux's kustomize-controller service account with a server-side
//! apply, which is the request Flux sends; nothing here stands in for the API server.
//!
//! Issue 22 finding 6, as docs/gitops.md walks it: an approval committed to git
//! with its manifest (`approve --annotate` leaving the file as it was), labels a
//! GitOps tool adds at sync time (`spec.approvals.unsignedLabels`), a re-sync, and
//! the revert of a person's drift after the approval expired and was spent
//! (`spec.approvals.restorers`).

mod common;

use common::cluster::{AI_AGENT, BOT, E2e, Steps, WAIT, wait_for};
use serde_json::Value;

/// Flux's kustomize-controller, as it runs in `flux-system`.
const FLUX: &str = "system:serviceaccount:flux-system:kustomize-controller";
/// Argo CD's application controller: a GitOps identity the policy does not list.
const ARGO: &str = "system:serviceaccount:argocd:argocd-application-controller";

/// The manifest in git, as a person would keep it: comments, its own key order.
fn manifest(replicas: u32) -> String {
    format!(
        "\
# The shop's web tier. Changed by the agent in PR 42 (CHG-1234).
kind: Deployment
apiVersion: apps/v1
metadata:
  name: web
  namespace: shop
  annotations:
    {AI_AGENT}: claude-code   # the agent that wrote this change
spec:
  replicas: {replicas} # sized for the sale
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
"
    )
}

/// The manifest as Flux applies it: with the labels kustomize-controller adds.
fn as_synced(text: &str) -> String {
    text.replacen(
        "  namespace: shop\n",
        "  namespace: shop\n  labels:\n    kustomize.toolkit.fluxcd.io/name: apps\n    kustomize.toolkit.fluxcd.io/namespace: flux-system\n",
        1,
    )
}

/// A server-side apply of `text` by `user` with its field manager, as Flux and Argo
/// CD apply.
fn sync(e2e: &E2e, user: &str, text: &str) -> common::cluster::Run {
    e2e.kubectl_with(
        &[
            "--as",
            user,
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "gitops",
            "-f",
            "-",
        ],
        Some(text),
    )
}

fn blastguard(args: &[&str]) -> (bool, String, String) {
    let out = common::blastguard()
        .args(args)
        .env_remove("BLASTGUARD_POLICY")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The webhook's policy with `edit` applied, once it has reloaded it.
fn reload_policy(e2e: &E2e, edit: impl Fn(&str) -> String) {
    let path = e2e.work.join("policy.yaml");
    let before = e2e.webhook.metric_sum("blastguard_policy_reloads_total");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the policy edit applies");
    std::fs::write(&path, edited).unwrap();
    wait_for("the webhook to reload the policy", WAIT, || {
        (e2e.webhook.metric_sum("blastguard_policy_reloads_total") > before).then_some(())
    });
    assert!(
        !e2e.webhook.log().contains("keeps the last good policy"),
        "{}",
        e2e.webhook.log()
    );
}

#[test]
fn the_gitops_loop_on_a_real_cluster() {
    let e2e = E2e::start();
    let mut steps = Steps::default();
    e2e.namespaces(&["shop"]);
    // The GitOps controllers and the agent may change workloads in `shop`.
    e2e.kubectl(&[
        "-n",
        "shop",
        "create",
        "rolebinding",
        "gitops-edit",
        "--clusterrole=edit",
        "--serviceaccount=flux-system:kustomize-controller",
        "--serviceaccount=argocd:argocd-application-controller",
        "--serviceaccount=ai-agents:bot",
    ])
    .expect_ok();
    let git = e2e.work.join("git");
    std::fs::create_dir_all(&git).unwrap();
    let file = git.join("web.yaml");
    let file_str = file.to_str().unwrap().to_string();
    // Two approvals over the test: a short window, so the second step sees it
    // expire (the policy's clock skew is lowered to match).
    let ttl = "25s";

    steps.run(
        "the approval is committed with its manifest, the file otherwise as it was",
        || {
            std::fs::write(&file, manifest(20)).unwrap();
            let (ok, payload, err) = blastguard(&["digest", "-f", &file_str, "--ttl", ttl]);
            assert!(ok, "{err}");
            let payload = payload.trim().to_string();
            let payload_file = git.join("payload.json");
            std::fs::write(&payload_file, &payload).unwrap();
            let sig = git.join("payload.json.sig");
            std::fs::write(&sig, e2e.approvers[0].sign(&payload)).unwrap();
            let (ok, _, err) = blastguard(&[
                "approve",
                "-f",
                &file_str,
                "--payload",
                payload_file.to_str().unwrap(),
                "--signature",
                sig.to_str().unwrap(),
                "--annotate",
            ]);
            assert!(ok, "{err}");
            let written = std::fs::read_to_string(&file).unwrap();
            // Every byte of the file is as it was but the two annotation entries,
            // added after the last annotation (issue 22 finding 6: the file was
            // rewritten, its comments dropped and its keys reordered).
            let lines: Vec<&str> = written.lines().collect();
            let first = lines
                .iter()
                .position(|l| l.starts_with("    blastguard.io/approval"))
                .unwrap_or_else(|| panic!("no approval in:\n{written}"));
            let spec = lines.iter().position(|l| *l == "spec:").unwrap();
            let without: Vec<&str> = lines[..first].iter().chain(&lines[spec..]).copied().collect();
            assert_eq!(without.join("\n") + "\n", manifest(20), "{written}");
            assert!(
                lines[first..spec]
                    .iter()
                    .all(|l| l.starts_with("    blastguard.io/approval") || l.starts_with("      ")),
                "{written}"
            );
            assert!(written.starts_with("# The shop's web tier."), "{written}");
        },
    );

    steps.run(
        "labels added at sync time break the digest unless the policy leaves them out",
        || {
            let synced = as_synced(&std::fs::read_to_string(&file).unwrap());
            // The approval signed the manifest without Flux's labels.
            let denied = sync(&e2e, FLUX, &synced).expect_err();
            assert!(denied.contains("digest"), "{denied}");
            reload_policy(&e2e, |p| {
                p.replacen(
                    "    clockSkew: 60s\n",
                    &format!(
                        "    clockSkew: 1s\n    unsignedLabels: [\"kustomize.toolkit.fluxcd.io/*\"]\n    restorers: [\"{FLUX}\"]\n"
                    ),
                    1,
                )
            });
            sync(&e2e, FLUX, &synced).expect_ok();
            let live = e2e.get("shop", "deployment/web").unwrap();
            assert_eq!(live["spec"]["replicas"], 20);
            assert_eq!(
                live["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"],
                "apps"
            );
        },
    );

    steps.run(
        "a re-sync of the approved manifest changes nothing and passes",
        || {
            let synced = as_synced(&std::fs::read_to_string(&file).unwrap());
            // The approval was spent by the sync above; a re-apply affects 0 pods.
            sync(&e2e, FLUX, &synced).expect_ok();
            sync(&e2e, ARGO, &synced).expect_ok();
        },
    );

    steps.run(
        "a person's drift is reverted by the GitOps controller, not by an agent",
        || {
            let synced = as_synced(&std::fs::read_to_string(&file).unwrap());
            let payload: Value = serde_json::from_str(
                e2e.get("shop", "deployment/web").unwrap()["metadata"]["annotations"]
                    ["blastguard.io/approval"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            // Wait until the approval has expired (it is spent already).
            let not_after =
                humantime::parse_rfc3339(payload["notAfter"].as_str().unwrap()).unwrap();
            while std::time::SystemTime::now() < not_after + std::time::Duration::from_secs(2) {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            // A person scales by hand (not an AI identity: the webhook is not asked).
            e2e.kubectl(&["-n", "shop", "scale", "deployment/web", "--replicas=40"])
                .expect_ok();
            // The agent replaying the manifest may not undo it, nor may a GitOps
            // controller the policy does not name.
            let denied = sync(&e2e, BOT, &synced).expect_err();
            assert!(denied.contains("expired"), "{denied}");
            let denied = sync(&e2e, ARGO, &synced).expect_err();
            assert!(denied.contains("expired"), "{denied}");
            assert_eq!(
                e2e.get("shop", "deployment/web").unwrap()["spec"]["replicas"],
                40
            );
            // The restorer brings back the state the approval signed: 20.
            sync(&e2e, FLUX, &synced).expect_ok();
            assert_eq!(
                e2e.get("shop", "deployment/web").unwrap()["spec"]["replicas"],
                20
            );
            // A new state in git with the old approval is a new change: denied.
            let changed = synced.replacen("replicas: 20 #", "replicas: 40 #", 1);
            let denied = sync(&e2e, FLUX, &changed).expect_err();
            assert!(denied.contains("digest"), "{denied}");
        },
    );
    steps.finish();
}
