//! Kubernetes objects as the tests start from them: one Deployment as `kubectl
//! create deployment` writes it, and the edits a test makes (annotations, an
//! approval).

use std::process::Command;

use serde_json::{Value, json};

/// A Deployment as `kubectl create deployment NAME --image IMAGE --replicas N
/// --dry-run=client -o json` writes it (the real kubectl, no cluster).
pub fn deployment(namespace: &str, name: &str, replicas: u32, image: &str) -> Value {
    let out = Command::new("kubectl")
        .args([
            "create",
            "deployment",
            name,
            "--image",
            image,
            "-n",
            namespace,
        ])
        .arg(format!("--replicas={replicas}"))
        .args(["--dry-run=client", "-o", "json"])
        .output()
        .expect("kubectl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
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
