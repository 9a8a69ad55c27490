//! End to end on a real node (tests/common/node.rs): the chart installed as users
//! install it, blastguard's image (`scripts/image.sh`) running in two pods behind its
//! Service, the generated certificates, and the real API server calling it there.
//!
//! Nothing stands in for the API server, the kubelet or the container runtime:
//! `scripts/control-plane.sh up DIR --node` runs them (containerd, runc, kubelet,
//! kube-proxy, kube-scheduler), and every change goes through `kubectl` and `helm`.
//! The node starts once for the whole file (that is the expensive part), so the
//! scenarios are steps of one test, in order; each says what it relies on.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use common::cluster::{AI_AGENT, Steps, chart, deployment, wait_for};
use common::node::{
    DENIED, MachineState, NODE, NodeCluster, POD_WAIT, RELEASE, REPOSITORY, during, http_get,
    image, requests_on,
};
use common::registry::Registry;
use common::tool;
use serde_json::{Value, json};

#[test]
fn the_chart_runs_blastguard_in_pods_and_the_api_server_calls_it_through_its_service() {
    // The image first: its build must not run while the node waits.
    let image = image();
    eprintln!("e2e figure: scripts/image.sh {:.1}s", image.seconds);
    let before = MachineState::now();
    let t0 = Instant::now();
    let node = NodeCluster::up();
    eprintln!("e2e figure: up --node {:.1}s", t0.elapsed().as_secs_f64());
    let loaded = format!("{REPOSITORY}:{}", image.tag);
    let mut steps = Steps::default();

    steps.run(
        "load the image, helm install: two pods Ready, restricted and read-only",
        || {
            let t = Instant::now();
            node.load(&image.archive);
            let images = node.ctr(&["images", "ls", "-q"]).expect_ok();
            assert!(images.lines().any(|l| l == loaded), "{loaded} in\n{images}");
            // Connections live their default age (1m): the API server keeps one.
            node.install(&image.tag, &[]).expect_ok();
            eprintln!(
                "e2e figure: load + helm install --wait {:.1}s",
                t.elapsed().as_secs_f64()
            );
            let pods = node.wait_rolled(2, &loaded);
            for pod in &pods {
                let c = &pod["spec"]["containers"][0]["securityContext"];
                assert_eq!(c["readOnlyRootFilesystem"], true, "{c}");
                assert_eq!(c["allowPrivilegeEscalation"], false, "{c}");
                assert_eq!(c["capabilities"]["drop"], json!(["ALL"]), "{c}");
                assert_eq!(c["seccompProfile"]["type"], "RuntimeDefault", "{c}");
                assert_eq!(pod["spec"]["nodeName"], NODE);
                // What the runtime made of it: the process, seen from the host.
                let pid = container_pid(&node, pod);
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
                let field = |k: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(k))
                        .unwrap()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                };
                assert_eq!(field("Uid:"), ["65532"; 4], "{status}");
                assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
                assert_eq!(field("NoNewPrivs:"), ["1"], "{status}");
                assert_eq!(field("Seccomp:"), ["2"], "{status}");
                eprintln!(
                    "e2e figure: {} RSS {} kB",
                    pod["metadata"]["name"].as_str().unwrap(),
                    field("VmRSS:")[0]
                );
                let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
                let root = mounts
                    .lines()
                    .find(|l| l.split(' ').nth(4) == Some("/"))
                    .unwrap();
                let options = root.split(' ').nth(5).unwrap();
                assert!(options.split(',').any(|o| o == "ro"), "root: {root}");
                // No shell in the image, so nothing may assume one: the probes are
                // HTTP on the admin port, preStop a sleep action, the command the
                // binary itself.
                let root = format!("/proc/{pid}/root");
                assert!(!Path::new(&root).join("bin/sh").exists());
                let container = &pod["spec"]["containers"][0];
                assert_eq!(container["command"], json!(["/blastguard"]));
                for probe in ["readinessProbe", "livenessProbe"] {
                    let get = &container[probe]["httpGet"];
                    assert_eq!(get["port"], "admin", "{probe}: {}", container[probe]);
                    assert!(container[probe]["exec"].is_null());
                }
                assert!(container["lifecycle"]["preStop"]["exec"].is_null());
                assert!(container["lifecycle"]["preStop"]["sleep"].is_object());
                let admin = &container["ports"].as_array().unwrap();
                assert!(
                    admin
                        .iter()
                        .any(|p| p["name"] == "admin" && p["containerPort"] == 8080)
                );
                // In-cluster config: no kubeconfig in the pod, yet every watch synced
                // through the service account (readiness also waits for it).
                let ip = pod["status"]["podIP"].as_str().unwrap();
                let metrics = http_get(ip, 8080, "/metrics").unwrap();
                let synced: Vec<&str> = metrics
                    .lines()
                    .filter(|l| l.starts_with("blastguard_cluster_cache_synced{"))
                    .collect();
                assert!(!synced.is_empty(), "{metrics}");
                assert!(synced.iter().all(|l| l.ends_with(" 1")), "{synced:?}");
            }
            // The webhook is called through the Service, with the generated CA.
            let vwc = node
                .get("", "validatingwebhookconfiguration/blastguard")
                .unwrap();
            let client = &vwc["webhooks"][0]["clientConfig"];
            assert_eq!(client["service"]["name"], "blastguard", "{client}");
            assert_eq!(client["service"]["namespace"], RELEASE, "{client}");
            assert!(client["url"].is_null(), "{client}");
            assert!(client["caBundle"].as_str().is_some_and(|b| b.len() > 100));
        },
    );

    steps.run(
        "the API server calls the webhook through the Service: an AI change in prod is denied",
        || {
            node.kubectl(&["create", "namespace", "prod"]).expect_ok();
            let before = requests_on(&node).values().sum::<f64>();
            let ai = deployment("prod", "api", 40, &[(AI_AGENT, "claude-code")]);
            let err = node
                .kubectl_with(&["apply", "-f", "-"], Some(&ai.to_string()))
                .expect_err();
            assert!(err.contains(DENIED), "{err}");
            assert!(err.contains("pods affected 40 > 0"), "{err}");
            eprintln!(
                "e2e figure: first denial through the Service {:.1}s after up began",
                t0.elapsed().as_secs_f64()
            );
            assert!(node.get("prod", "deployment/api").is_none());
            let after = requests_on(&node).values().sum::<f64>();
            assert!(after > before, "no pod counted it: {before} -> {after}");
            // A person's change is not sent, and goes through.
            let person = deployment("prod", "api", 40, &[]);
            node.kubectl_with(
                &["apply", "--dry-run=server", "-f", "-"],
                Some(&person.to_string()),
            )
            .expect_ok();
        },
    );

    steps.run(
        "/tmp: serve --dev runs in the chart's pod (read-only root, no /tmp in the image)",
        || {
            let deploy = node.get(RELEASE, "deployment/blastguard").unwrap();
            let mut spec = deploy["spec"]["template"]["spec"].clone();
            spec["restartPolicy"] = json!("Never");
            let c = &mut spec["containers"][0];
            c["args"] = json!(["serve", "--dev"]);
            for probe in ["readinessProbe", "livenessProbe", "lifecycle"] {
                c.as_object_mut().unwrap().remove(probe);
            }
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "dev", "namespace": RELEASE},
                "spec": spec,
            });
            // The same pod without the chart's /tmp emptyDir: the fault the chart fixes.
            let mut bare = pod.clone();
            bare["metadata"]["name"] = json!("dev-no-tmp");
            let unmounted = |v: &Value| v["name"] != "tmp";
            let spec = &mut bare["spec"];
            let volumes: Vec<Value> = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| unmounted(v))
                .cloned()
                .collect();
            spec["volumes"] = json!(volumes);
            let mounts = &mut spec["containers"][0]["volumeMounts"];
            *mounts = json!(
                mounts
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|v| unmounted(v))
                    .cloned()
                    .collect::<Vec<_>>()
            );
            let logs: Vec<String> = [pod, bare]
                .iter()
                .map(|p| {
                    node.kubectl_with(&["apply", "-f", "-"], Some(&p.to_string()))
                        .expect_ok();
                    p["metadata"]["name"].as_str().unwrap().to_string()
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|name| {
                    let log = wait_for("serve --dev to start or fail", POD_WAIT, || {
                        let log = node.kubectl(&["-n", RELEASE, "logs", &name]);
                        (log.ok && !log.stdout.is_empty())
                            .then_some(format!("{}{}", log.stdout, log.stderr))
                    });
                    node.kubectl(&["-n", RELEASE, "delete", "pod", &name, "--grace-period=0"])
                        .expect_ok();
                    log
                })
                .collect();
            let (log, bare) = (&logs[0], &logs[1]);
            assert!(!log.contains("cannot write"), "{log}");
            assert!(log.contains("blastguard dev mode"), "{log}");
            assert!(log.contains("files in /tmp/blastguard-dev-"), "{log}");
            assert!(
                bare.contains("cannot write"),
                "without the emptyDir: {bare}"
            );
        },
    );

    steps.run(
        "helm upgrade to a new tag pulled from a registry: zero failed AI admissions in the roll",
        || {
            let registry = Registry::start();
            let pulled = format!("{}/blastguard/blastguard", registry.host);
            let tag = format!("{}-next", image.tag);
            let out = common::cluster::run(
                {
                    let mut c = tool("skopeo");
                    c.args(["copy", "--quiet", "--dest-tls-verify=false"])
                        .arg(format!("oci-archive:{}", image.archive.display()))
                        .arg(format!("docker://{pulled}:{tag}"));
                    c
                },
                None,
            );
            assert!(out.ok, "skopeo copy: {}", out.stderr);
            // containerd reads hosts.toml at each pull: plain HTTP for this registry.
            let hosts = std::path::Path::new(&node.env("CONTAINERD_HOSTS_DIR")).join(&registry.host);
            std::fs::create_dir_all(&hosts).unwrap();
            std::fs::write(
                hosts.join("hosts.toml"),
                format!(
                    "server = \"http://{h}\"\n[host.\"http://{h}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                    h = registry.host
                ),
            )
            .unwrap();
            let new_image = format!("{pulled}:{tag}");
            let secret_before = node.get(RELEASE, "secret/blastguard-tls");
            let t = Instant::now();
            let traffic = during(&node, || {
                node.helm(&[
                    "upgrade",
                    RELEASE,
                    chart().to_str().unwrap(),
                    "--namespace",
                    RELEASE,
                    "--reuse-values",
                    "--set",
                    &format!("image.repository={pulled}"),
                    "--set",
                    &format!("image.tag={tag}"),
                    "--set",
                    "image.pullPolicy=IfNotPresent",
                    "--wait",
                    "--timeout=3m",
                ])
                .expect_ok();
                node.wait_rolled(2, &new_image);
            });
            eprintln!(
                "e2e figure: helm upgrade roll {:.1}s; AI admissions {} answered, {} failed; people's changes {} ok, {} failed, slowest {:.2}s",
                t.elapsed().as_secs_f64(),
                traffic.answered,
                traffic.failed.len(),
                traffic.people_ok,
                traffic.people_failed.len(),
                traffic.people_slowest.as_secs_f64(),
            );
            traffic.assert_flowed();
            // The image came from the registry, with the chart's default pull policy.
            let images = node.ctr(&["images", "ls", "-q"]).expect_ok();
            assert!(images.lines().any(|l| l == new_image), "{new_image} in\n{images}");
            // The generated certificates were kept across the upgrade.
            let secret_after = node.get(RELEASE, "secret/blastguard-tls");
            assert_eq!(
                secret_before.map(|s| s["data"].clone()),
                secret_after.map(|s| s["data"].clone())
            );
        },
    );

    steps.run(
        "two replicas: the API server's connection lands on one; deleting that pod, another answers",
        || {
            let image_now = node.ready_pods()[0]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_string();
            // The API server keeps one HTTP/2 connection per webhook, to one endpoint,
            // for up to webhook.maxConnectionAge (1m here): the requests go to the pod
            // at its other end (tests/e2e_node_replicas.rs shows them spread).
            let before = requests_on(&node);
            assert_eq!(before.len(), 2, "{before:?}");
            let ai = deployment("prod", "api", 40, &[(AI_AGENT, "claude-code")]);
            for _ in 0..8 {
                let err = node
                    .kubectl_with(
                        &["apply", "--dry-run=server", "-f", "-"],
                        Some(&ai.to_string()),
                    )
                    .expect_err();
                assert!(err.contains(DENIED), "{err}");
            }
            let after = requests_on(&node);
            let grew = |name: &String| after.get(name) > before.get(name);
            let busy: Vec<&String> = before.keys().filter(|n| grew(n)).collect();
            assert!(!busy.is_empty(), "no pod counted them: {before:?} -> {after:?}");
            let total = |m: &BTreeMap<String, f64>| m.values().sum::<f64>();
            assert_eq!(total(&after) - total(&before), 8.0, "{before:?} -> {after:?}");
            let victim = busy[0].clone();
            let traffic = during(&node, || {
                node.kubectl(&["-n", RELEASE, "delete", "pod", &victim, "--wait=false"])
                    .expect_ok();
                wait_for("the deleted pod to go", POD_WAIT, || {
                    node.get(RELEASE, &format!("pod/{victim}"))
                        .is_none()
                        .then_some(())
                });
                node.wait_rolled(2, &image_now);
            });
            eprintln!(
                "e2e figure: pod deleted: AI admissions {} answered, {} failed",
                traffic.answered,
                traffic.failed.len()
            );
            traffic.assert_flowed();
            // Another pod took the requests over (the API server redialled the Service:
            // the other replica or the replacement, whichever its resolver picked).
            let last = requests_on(&node);
            let taken_over: f64 = last
                .iter()
                .filter(|(name, _)| **name != victim)
                .map(|(name, n)| n - after.get(name).copied().unwrap_or(0.0))
                .sum();
            assert!(
                taken_over > 0.0,
                "no pod but {victim} answered: {after:?} -> {last:?}"
            );
        },
    );

    steps.run("kubectl drain respects the PodDisruptionBudget", || {
        let image_now = node.ready_pods()[0]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string();
        let drain = node.kubectl(&[
            "drain",
            NODE,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=10s",
        ]);
        // One pod may go (minAvailable 1); its replacement has nowhere to run (the only
        // node is cordoned), so the second eviction is refused until the timeout.
        // kubectl asks to evict both pods at once, so the refusal comes at once and the
        // timeout need not be long: without the budget nothing is refused (no
        // "disruption budget" below) and no pod is left Ready, however long it took.
        assert!(!drain.ok, "drain evicted every pod:\n{}", drain.stdout);
        let said = format!("{}{}", drain.stdout, drain.stderr);
        assert!(said.contains("disruption budget"), "{said}");
        let left = node.ready_pods();
        assert_eq!(left.len(), 1, "{left:?}");
        // And that one still answers for the Service.
        let ai = deployment("prod", "api", 40, &[(AI_AGENT, "claude-code")]);
        let err = node
            .kubectl_with(
                &["apply", "--dry-run=server", "-f", "-"],
                Some(&ai.to_string()),
            )
            .expect_err();
        assert!(err.contains(DENIED), "{err}");
        node.kubectl(&["uncordon", NODE]).expect_ok();
        node.wait_rolled(2, &image_now);
    });

    steps.run("helm uninstall leaves nothing behind", || {
        let manifest = node
            .helm(&["get", "manifest", RELEASE, "-n", RELEASE])
            .expect_ok();
        let objects = node
            .kubectl_with(&["get", "-f", "-", "-o", "name"], Some(&manifest))
            .expect_ok();
        assert!(objects.lines().count() >= 8, "{objects}");
        node.helm(&[
            "uninstall",
            RELEASE,
            "-n",
            RELEASE,
            "--wait",
            "--timeout=2m",
        ])
        .expect_ok();
        let left = node.kubectl_with(
            &["get", "-f", "-", "-o", "name", "--ignore-not-found"],
            Some(&manifest),
        );
        assert!(
            left.stdout.trim().is_empty(),
            "left behind:\n{}",
            left.stdout
        );
        wait_for("the release's pods and containers to go", POD_WAIT, || {
            let containers = node.ctr(&["containers", "ls"]).expect_ok();
            (node.pods().is_empty() && !containers.contains("blastguard/blastguard")).then_some(())
        });
        // Nothing the server made in the cluster counts anything (it only denied
        // here): a denied change's reservation is released, so a record it was held
        // in, if any, holds no pods.
        let records = node
            .kubectl(&["get", "changesets.blastguard.io", "-A", "-o", "json"])
            .expect_ok();
        let records: Value = serde_json::from_str(&records).unwrap();
        for record in records["items"].as_array().into_iter().flatten() {
            let spec = &record["spec"];
            let empty = |field: &str| spec[field].as_array().is_none_or(|a| a.is_empty());
            assert!(
                empty("pods") && empty("held"),
                "a denial was counted: {record:#}"
            );
        }
        // An AI change now goes through: no webhook is registered any more.
        let ai = deployment("prod", "api", 40, &[(AI_AGENT, "claude-code")]);
        node.kubectl_with(
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&ai.to_string()),
        )
        .expect_ok();
    });

    let memory: Vec<String> = node
        .cluster
        .memory()
        .iter()
        .map(|(name, rss, peak)| format!("{name} {rss} MB (peak {peak})"))
        .collect();
    eprintln!("e2e figure: RSS at the end: {}", memory.join(", "));
    let t = Instant::now();
    drop(node);
    eprintln!("e2e figure: down {:.1}s", t.elapsed().as_secs_f64());

    steps.run("down leaves the machine as it found it", || {
        let after = MachineState::now();
        assert_eq!(after.iptables, before.iptables);
        assert_eq!(after, before);
    });
    steps.finish();
}

/// The PID of a pod's blastguard container, from containerd.
fn container_pid(node: &NodeCluster, pod: &Value) -> u32 {
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string();
    let tasks = node.ctr(&["tasks", "ls"]).expect_ok();
    tasks
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(id.as_str())).then(|| f.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no task {id} in\n{tasks}"))
}
