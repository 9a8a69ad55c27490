//! The plain manifests (`manifests/`) are `helm template` without the certificate
//! material, and the certificate step docs/install.md documents completes them.
//!
//! The chart's helpers (`helm template`, the rendered objects, matchConditions in CEL) are
//! in tests/common/chart.rs; helm and kubernetes-validate come from `.tools/bin`
//! (`scripts/install-tools.sh`, which `scripts/test.sh` runs), kubectl, openssl and
//! promtool from PATH.

mod common;

use common::chart::*;
use common::{repo, tool};
use serde_json::Value;

// ---------------------------------------------------------------------------------
// manifests/ and its certificate step.

/// The default rendering without the certificate material: the generated Secrets
/// dropped, the webhook's caBundle removed.
fn without_certificate_material(mut objs: Vec<Value>) -> Vec<Value> {
    let before = objs.len();
    objs.retain(|o| {
        kind_and_name(o) != ("Secret".into(), "blastguard-ca".into())
            && kind_and_name(o) != ("Secret".into(), "blastguard-tls".into())
    });
    assert_eq!(before - objs.len(), 2, "two generated Secrets");
    for o in &mut objs {
        if o["kind"] == "ValidatingWebhookConfiguration" {
            for w in o["webhooks"].as_array_mut().expect("webhooks") {
                let cc = w["clientConfig"].as_object_mut().expect("clientConfig");
                assert!(cc.remove("caBundle").is_some(), "a generated caBundle");
            }
        }
    }
    objs
}

fn sorted(mut objs: Vec<Value>) -> Vec<Value> {
    objs.sort_by_key(kind_and_name);
    objs
}

fn manifests() -> Vec<Value> {
    ["blastguard.yaml", "webhook.yaml"]
        .iter()
        .flat_map(|f| {
            objects(
                &std::fs::read_to_string(repo().join("manifests").join(f))
                    .expect("manifests/ is committed"),
            )
        })
        .collect()
}

#[test]
fn manifests_are_helm_template_without_the_certificate_material() {
    // Byte for byte what scripts/render-manifests.sh writes...
    let dir = tempfile::tempdir().expect("tempdir");
    succeed(
        tool("bash")
            .arg(repo().join("scripts/render-manifests.sh"))
            .arg(dir.path()),
    );
    for f in ["blastguard.yaml", "webhook.yaml"] {
        let fresh = std::fs::read_to_string(dir.path().join(f)).expect("rendered");
        let committed = std::fs::read_to_string(repo().join("manifests").join(f))
            .expect("manifests/ is committed");
        assert!(
            fresh == committed,
            "manifests/{f} is stale: run scripts/render-manifests.sh"
        );
    }
    // ...and, object for object, helm template of the defaults minus the certificates.
    assert_eq!(
        sorted(manifests()),
        sorted(without_certificate_material(objects(&render(""))))
    );
}

/// The fenced shell block between the markers in docs/install.md.
fn documented_certificate_script() -> String {
    let doc = std::fs::read_to_string(repo().join("docs/install.md")).expect("docs/install.md");
    let block = doc
        .split("<!-- BEGIN certificate-script")
        .nth(1)
        .and_then(|rest| rest.split("<!-- END certificate-script -->").next())
        .expect("docs/install.md marks the certificate script");
    let body = block
        .split("```sh")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```sh block");
    body.lines()
        .map(|l| l.strip_prefix("   ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_documented_certificate_step_completes_the_plain_manifests() {
    let dir = tempfile::tempdir().expect("tempdir");
    succeed(
        tool("bash")
            .args(["-c", &documented_certificate_script()])
            .current_dir(dir.path())
            .env("MANIFESTS", repo().join("manifests")),
    );
    let secret_file = dir.path().join("tls-secret.yaml");
    let webhook_file = dir.path().join("webhook.yaml");
    for version in ["1.30.0".to_string(), newest_kubernetes_version()] {
        kubernetes_validate(&[secret_file.clone(), webhook_file.clone()], &version)
            .unwrap_or_else(|r| panic!("Kubernetes {version}:\n{r}"));
    }

    // The Secret is the one the pods mount, in their namespace.
    let secret_objs = objects(&std::fs::read_to_string(&secret_file).expect("secret"));
    let secret = &secret_objs[0];
    let plain = manifests();
    let deployment = object(&plain, "Deployment", "blastguard");
    let tls_volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("tls volume");
    assert_eq!(
        secret["metadata"]["name"],
        tls_volume["secret"]["secretName"]
    );
    assert_eq!(secret["metadata"]["namespace"], NAMESPACE);

    // The webhook configuration is manifests/webhook.yaml plus the CA bundle...
    let patched = objects(&std::fs::read_to_string(&webhook_file).expect("webhook"));
    let bundle = ca_bundle(&patched);
    let mut stripped = patched[0].clone();
    stripped["webhooks"][0]["clientConfig"]
        .as_object_mut()
        .expect("clientConfig")
        .remove("caBundle");
    assert_eq!(
        stripped,
        *object(&plain, "ValidatingWebhookConfiguration", "blastguard")
    );
    // ...and the API server, trusting only that bundle, reaches the server by its name.
    let cert = secret_data(secret, "tls.crt");
    let key = secret_data(secret, "tls.key");
    tls_handshake(&cert, &key, &bundle, SERVICE_DNS_NAME)
        .unwrap_or_else(|e| panic!("TLS to {SERVICE_DNS_NAME} fails: {e}"));
}
