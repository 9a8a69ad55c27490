//! `check --server`: the objects as the cluster itself would present them.
//!
//! Offline, `check` applies the API server's defaults (crate::defaults) but cannot
//! foresee a cluster's mutating admission (webhooks, LimitRanges, a Job's uid). With
//! `--server`, each manifest goes through `kubectl apply --dry-run=server -o json`
//! with the user's kubeconfig, and the answer (defaulted and mutated, nothing stored)
//! is what is judged and digested; the current object (`kubectl get`) is the old side
//! of an update. kubectl is what a kubectl plugin's user has, with their credentials
//! and context, so nothing here talks to the API server itself.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Map, Value};

use super::input::Manifest;

/// The webhook's name in an API server's denial.
const WEBHOOK: &str = "\"validate.blastguard.io\"";

/// The object without its `blastguard.io/` annotations, and those annotations.
fn without_our_annotations(
    object: &Map<String, Value>,
) -> (Map<String, Value>, Map<String, Value>) {
    let mut stripped = object.clone();
    let mut ours = Map::new();
    if let Some(annotations) = stripped
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        let keys: Vec<String> = annotations
            .keys()
            .filter(|k| k.starts_with("blastguard.io/"))
            .cloned()
            .collect();
        for key in keys {
            if let Some(v) = annotations.remove(&key) {
                ours.insert(key, v);
            }
        }
    }
    (stripped, ours)
}

fn restore_annotations(answer: &mut Value, ours: Map<String, Value>) {
    if ours.is_empty() {
        return;
    }
    let Some(metadata) = answer.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(annotations) = annotations.as_object_mut() {
        annotations.extend(ours);
    }
}

/// Why the cluster could not answer.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: `kubectl {verb}` failed: {message}")]
pub struct ServerError {
    origin: String,
    verb: &'static str,
    message: String,
}

/// The server's dry-run answer for each manifest (keeping its origin), and the
/// current objects of those that exist.
pub fn dry_run(
    kubectl: &str,
    manifests: Vec<Manifest>,
) -> Result<(Vec<Manifest>, Vec<Manifest>), ServerError> {
    let mut new = Vec::with_capacity(manifests.len());
    let mut old = Vec::new();
    for m in manifests {
        let text = Value::Object(m.object.clone()).to_string();
        let origin = m.origin.to_string();
        let fail = |verb, message| ServerError {
            origin: origin.clone(),
            verb,
            message,
        };
        let current = kubectl_json(
            kubectl,
            &["get", "--ignore-not-found", "-o", "json", "-f", "-"],
            &text,
        )
        .map_err(|e| fail("get", e))?;
        if let Some(Value::Object(object)) = current {
            old.push(Manifest {
                object,
                origin: m.origin.clone(),
            });
        }
        let dry_run = |text: &str| {
            kubectl_json(
                kubectl,
                &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
                text,
            )
        };
        let answer = match dry_run(&text) {
            // blastguard itself denied the dry run (an AI change over a limit): ask
            // again without its annotations, which are outside the approval digest,
            // and put them back on the answer for check to judge.
            Err(e) if e.contains(WEBHOOK) => {
                let (stripped, ours) = without_our_annotations(&m.object);
                dry_run(&Value::Object(stripped).to_string()).map(|answer| {
                    answer.map(|mut a| {
                        restore_annotations(&mut a, ours);
                        a
                    })
                })
            }
            other => other,
        }
        .map_err(|e| fail("apply --dry-run=server", e))?;
        let Some(Value::Object(object)) = answer else {
            return Err(fail(
                "apply --dry-run=server",
                "no object in the answer".into(),
            ));
        };
        new.push(Manifest {
            object,
            origin: m.origin,
        });
    }
    Ok((new, old))
}

/// Runs kubectl with `stdin`; its JSON answer (`None` when it printed nothing).
fn kubectl_json(kubectl: &str, args: &[&str], stdin: &str) -> Result<Option<Value>, String> {
    let mut child = Command::new(kubectl)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {kubectl}: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout)
        .map(Some)
        .map_err(|e| format!("unreadable answer: {e}"))
}
