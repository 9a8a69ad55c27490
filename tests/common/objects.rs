//! Kubernetes objects as the tests start from them: one Deployment as `kubectl
//! create deployment` writes it (JSON, YAML, the agent's), and the edits a test makes
//! (annotations, an approval).

use std::process::Command;

use serde_json::{Value, json};

/// The AI marker of the embedded and the chart's default policy, as the tests' agent
/// sets it.
pub const AI_MARKER: (&str, &str) = ("blastguard.io/ai-agent", "claude-code");

/// What `kubectl create deployment NAME --image IMAGE --replicas N [-n NAMESPACE]
/// --dry-run=client -o FORMAT EXTRA...` prints (the real kubectl, no cluster): the one
/// way the tests make a Deployment manifest.
pub fn create_deployment(
    namespace: Option<&str>,
    name: &str,
    replicas: u32,
    image: &str,
    format: &str,
    extra: &[&str],
) -> String {
    let mut command = Command::new("kubectl");
    command.args(["create", "deployment", name, "--image", image]);
    if let Some(namespace) = namespace {
        command.args(["-n", namespace]);
    }
    let out = command
        .arg(format!("--replicas={replicas}"))
        .args(["--dry-run=client", "-o", format])
        .args(extra)
        .output()
        .expect("kubectl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
}

/// A Deployment as `kubectl create deployment NAME --image IMAGE --replicas N
/// --dry-run=client -o json` writes it (its container is named after the image).
pub fn deployment(namespace: &str, name: &str, replicas: u32, image: &str) -> Value {
    serde_json::from_str(&create_deployment(
        Some(namespace),
        name,
        replicas,
        image,
        "json",
        &[],
    ))
    .unwrap()
}

/// [`deployment`], marked as the AI agent's ([`AI_MARKER`]).
pub fn ai_deployment(namespace: &str, name: &str, replicas: u32, image: &str) -> Value {
    annotate(deployment(namespace, name, replicas, image), &[AI_MARKER])
}

/// An object as YAML (keys in order, as kubectl writes them).
pub fn yaml(object: &Value) -> String {
    serde_saphyr::to_string(object).expect("a JSON value is YAML")
}

/// `object` with these annotations added (or replaced).
pub fn annotate(mut object: Value, annotations: &[(&str, &str)]) -> Value {
    let map = object["metadata"]
        .as_object_mut()
        .unwrap()
        .entry("annotations")
        .or_insert_with(|| json!({}));
    for (k, v) in annotations {
        map[*k] = json!(v);
    }
    object
}

/// `object` carrying an approval: the payload and its signatures as annotations.
pub fn with_approval(object: Value, payload: &str, signatures: &str) -> Value {
    annotate(
        object,
        &[
            ("blastguard.io/approval", payload),
            ("blastguard.io/approval-signature", signatures),
        ],
    )
}
