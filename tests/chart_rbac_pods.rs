//! The chart's RBAC is minimal and its pods are highly available and hardened; the
//! Dockerfile builds the image the pods run.
//!
//! The chart's helpers (`helm template`, the rendered objects, matchConditions in CEL) are
//! in tests/common/chart.rs; helm and kubernetes-validate come from `.tools/bin`
//! (`scripts/install-tools.sh`, which `scripts/test.sh` runs), kubectl, openssl and
//! promtool from PATH.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::chart::*;
use common::repo;
use serde_json::{Value, json};

fn arg_value<'a>(args: &'a [Value], flag: &str) -> &'a str {
    args.iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
}

/// (apiGroups, resources, verbs) of each rule, sorted, for comparing rule sets.
fn rules(role: &Value) -> BTreeSet<(Vec<String>, Vec<String>, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        let mut out: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    };
    role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["verbs"]),
            )
        })
        .collect()
}

#[test]
fn cluster_rbac_is_minimal() {
    let objs = objects(&render(""));
    let read = || vec!["get".to_string(), "list".to_string(), "watch".to_string()];
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Read-only, cluster-wide: Namespaces (labels) and the kinds whose Scale the engine
    // judges (the parent's approval), from the same list the engine compiles in, plus
    // the policy's custom workloads. Nothing else: no Secrets, no Pods, no writes.
    let mut scaled: BTreeMap<String, Vec<String>> = BTreeMap::new();
    scaled.insert(String::new(), vec!["namespaces".into()]);
    for k in blastguard::kinds::built_in() {
        if k.reach == blastguard::kinds::Reach::Replicas
            && k.subresources.iter().any(|s| s == "scale")
        {
            scaled
                .entry(k.group.clone())
                .or_default()
                .push(k.resource.clone());
        }
    }
    scaled.insert("argoproj.io".into(), vec!["rollouts".into()]);
    let want: BTreeSet<_> = scaled
        .into_iter()
        .map(|(group, mut resources)| {
            resources.sort();
            (vec![group], resources, read())
        })
        .collect();
    let mut want = want;
    // A Service's endpoints, listed when an AI change rewires it.
    want.insert((
        owned(&["discovery.k8s.io"]),
        owned(&["endpointslices"]),
        owned(&["list"]),
    ));
    let cluster_role = object(&objs, "ClusterRole", "blastguard-cluster-state");
    assert_eq!(rules(cluster_role), want);
    assert!(
        want.iter().any(|(g, r, _)| g == &owned(&["apps"])
            && r == &owned(&["deployments", "replicasets", "statefulsets"])),
        "the built-in scaled kinds are there: {want:?}"
    );
    // Writes only on the change-set records, only in the release namespace.
    let role = object(&objs, "Role", "blastguard-change-sets");
    assert_eq!(role["metadata"]["namespace"], "blastguard");
    assert_eq!(
        rules(role),
        BTreeSet::from([
            (
                owned(&["blastguard.io"]),
                owned(&["changesets"]),
                owned(&["create", "delete", "get", "list", "update", "watch"]),
            ),
            (
                owned(&["blastguard.io"]),
                owned(&["spentapprovals"]),
                owned(&["create", "delete", "get", "list"]),
            ),
        ])
    );
    // Each bound to the pods' ServiceAccount and nothing else.
    for (kind, name, role_kind, role_name) in [
        (
            "ClusterRoleBinding",
            "blastguard-cluster-state",
            "ClusterRole",
            "blastguard-cluster-state",
        ),
        (
            "RoleBinding",
            "blastguard-change-sets",
            "Role",
            "blastguard-change-sets",
        ),
    ] {
        let b = object(&objs, kind, name);
        assert_eq!(b["roleRef"]["kind"], role_kind);
        assert_eq!(b["roleRef"]["name"], role_name);
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "blastguard", "namespace": "blastguard"}])
        );
    }
    let roles = objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        .count();
    // And the read of the webhook configuration, checked in
    // tests/chart_self_protection.rs, and the inbox's server Role and its approver and
    // requester ClusterRoles, checked in tests/chart_inbox.rs.
    assert_eq!(roles, 6, "no other role");
    // A custom workload of the policy is readable too, under its plural.
    let custom = objects(&render(
        "policy:\n  workloads:\n    - {group: example.com, kind: Canary, replicas: /spec/replicas, template: /spec/template, resource: canaries}\n",
    ));
    let rules = rules(object(&custom, "ClusterRole", "blastguard-cluster-state"));
    assert!(rules.contains(&(owned(&["example.com"]), owned(&["canaries"]), read())));
    assert!(!rules.iter().any(|(g, _, _)| g == &owned(&["argoproj.io"])));
    // The CRD: namespaced records of blastguard.io/v1alpha1 with the columns an
    // operator reads.
    let crd = object(
        &objs,
        "CustomResourceDefinition",
        "changesets.blastguard.io",
    );
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["group"], "blastguard.io");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Key",
            "Namespaces",
            "Pods",
            "Window",
            "Last Change",
            "Touched",
            "Expires"
        ]
    );
}

#[test]
fn pods_are_highly_available_and_hardened() {
    let objs = objects(&render(""));
    let d = object(&objs, "Deployment", "blastguard");
    let spec = &d["spec"];
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    let selects_pods = |selector: &Value| {
        selector
            .as_object()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| pod_labels[k] == *v))
    };

    // Availability.
    assert_eq!(spec["replicas"], 2);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    );
    let pdb = object(&objs, "PodDisruptionBudget", "blastguard");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(selects_pods(&pdb["spec"]["selector"]["matchLabels"]));
    let spread = pod["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints");
    let nodes = spread
        .iter()
        .find(|t| t["topologyKey"] == "kubernetes.io/hostname")
        .expect("spread over nodes");
    assert_eq!(nodes["maxSkew"], 1);
    assert!(selects_pods(&nodes["labelSelector"]["matchLabels"]));
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .expect("preStop sleep");
    assert!(
        pre_stop > 0
            && pre_stop
                < pod["terminationGracePeriodSeconds"]
                    .as_i64()
                    .expect("grace")
    );

    // Probes on the admin port, which is where the server's admin listener is.
    let args = c["args"].as_array().expect("args");
    assert_eq!(c["command"], json!(["/blastguard"]));
    assert_eq!(args[0], "serve");
    assert_eq!(arg_value(args, "--admin-listen"), "0.0.0.0:8080");
    assert_eq!(arg_value(args, "--listen"), "0.0.0.0:8443");
    assert!(
        c["ports"]
            .as_array()
            .expect("ports")
            .contains(&json!({"name": "admin", "containerPort": 8080, "protocol": "TCP"}))
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "admin"})
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/livez", "port": "admin"})
    );

    // Restricted security.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    // The token the cluster state reads with (cluster.enabled, the default).
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(
        object(&objs, "ServiceAccount", "blastguard")["automountServiceAccountToken"],
        true
    );
    assert_eq!(arg_value(args, "--state"), "cluster");
    assert_eq!(arg_value(args, "--state-namespace"), "blastguard");
    assert_eq!(arg_value(args, "--webhook-configuration"), "blastguard");
    assert_eq!(pod["serviceAccountName"], "blastguard");
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());

    // Each file flag points into a whole-directory mount (never subPath, so kubelet's
    // symlink swaps reach the pod) of the object that holds that file.
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    assert!(mounts.iter().all(|m| m.get("subPath").is_none()));
    let volumes = pod["volumes"].as_array().expect("volumes");
    let source_of = |flag: &str| {
        let path = Path::new(arg_value(args, flag));
        let dir = path.parent().expect("a file in a directory");
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == dir.to_str().expect("UTF-8"))
            .unwrap_or_else(|| panic!("{flag}: nothing mounted at {dir:?}"));
        assert_eq!(mount["readOnly"], true);
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mount's volume");
        let file = path
            .file_name()
            .expect("file")
            .to_str()
            .expect("UTF-8")
            .to_string();
        (volume.clone(), file)
    };
    for (flag, key) in [("--tls-cert", "tls.crt"), ("--tls-key", "tls.key")] {
        let (volume, file) = source_of(flag);
        let secret = object(
            &objs,
            "Secret",
            volume["secret"]["secretName"].as_str().expect("secret"),
        );
        assert!(
            volume["secret"]["items"]
                .as_array()
                .expect("items")
                .contains(&json!({"key": key, "path": file}))
        );
        assert!(!secret_data(secret, key).is_empty());
    }
    for (flag, configmap) in [
        ("--policy", "blastguard-policy"),
        ("--allowed-signers", "blastguard-allowed-signers"),
    ] {
        let (volume, file) = source_of(flag);
        assert_eq!(volume["configMap"]["name"], configmap);
        assert!(object(&objs, "ConfigMap", configmap)["data"][&file].is_string());
    }
    // The policy names the same allowed_signers file the flag does.
    assert_eq!(
        rendered_policy(&objs).approvals.allowed_signers,
        arg_value(args, "--allowed-signers")
    );

    // Optional: a priority class.
    let optional = objects(&render(OPTIONAL_PARTS));
    let pod = &object(&optional, "Deployment", "blastguard")["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");

    // Without the cluster state the pods get no token and count in memory.
    let memory = objects(&render("cluster: {enabled: false}\n"));
    let pod = &object(&memory, "Deployment", "blastguard")["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        object(&memory, "ServiceAccount", "blastguard")["automountServiceAccountToken"],
        false
    );
    let args = pod["containers"][0]["args"].as_array().expect("args");
    assert_eq!(arg_value(args, "--state"), "memory");
    assert!(!args.iter().any(|a| {
        a.as_str().is_some_and(|a| {
            a.starts_with("--state-namespace") || a.starts_with("--webhook-configuration")
        })
    }));
}

#[test]
fn dockerfile_builds_the_image_the_pods_run() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let final_stage = dockerfile
        .rsplit_once("\nFROM ")
        .expect("a multi-stage build")
        .1;
    assert!(final_stage.starts_with("gcr.io/distroless/"));
    assert!(final_stage.contains("COPY --from=build /blastguard /blastguard"));
    let objs = objects(&render(""));
    let pod = &object(&objs, "Deployment", "blastguard")["spec"]["template"]["spec"];
    let user = pod["securityContext"]["runAsUser"]
        .as_i64()
        .expect("runAsUser");
    assert!(final_stage.contains(&format!("\nUSER {user}:{user}\n")));
    let command = pod["containers"][0]["command"][0]
        .as_str()
        .expect("command");
    assert!(final_stage.contains(&format!("ENTRYPOINT [\"{command}\"]")));
    let ignored = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    for dir in ["target", ".tools", ".git"] {
        assert!(
            ignored.lines().any(|l| l == dir),
            ".dockerignore keeps out {dir}"
        );
    }
}
