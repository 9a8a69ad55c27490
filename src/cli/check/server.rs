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

/// What the cluster says of one manifest.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The current object (`kubectl get`), when it exists.
    pub current: Option<Map<String, Value>>,
    /// The object the API server would store, or why it would not say.
    pub requested: Requested,
}

/// The server's dry run of one manifest.
#[derive(Debug, Clone)]
pub enum Requested {
    /// The object as the API server would store it (defaulted and mutated).
    Served(Map<String, Value>),
    /// blastguard denied the dry run, with and without its own annotations (an AI
    /// change to an object that is AI-marked stays AI-assisted when the markers are
    /// removed: provenance is sticky). The object can only be foreseen offline.
    Denied {
        /// The API server's message (it carries the payload to sign).
        message: String,
    },
}

impl Requested {
    /// The approval payload a denial carries (the server's own digest and summary).
    pub fn payload(&self) -> Option<&str> {
        match self {
            Requested::Served(_) => None,
            Requested::Denied { message } => payload_in(message),
        }
    }
}

/// The first approval payload in a denial message.
pub fn payload_in(message: &str) -> Option<&str> {
    message
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(r#"{"apiVersion":"blastguard.io/v1","kind":"Approval""#))
}

/// What the cluster says of `manifest`: its current object, and its dry run.
pub fn answer(kubectl: &str, m: &Manifest) -> Result<Answer, ServerError> {
    let text = Value::Object(m.object.clone()).to_string();
    let fail = |verb, message| ServerError {
        origin: m.origin.to_string(),
        verb,
        message,
    };
    let current = match kubectl_json(
        kubectl,
        &["get", "--ignore-not-found", "-o", "json", "-f", "-"],
        &text,
    )
    .map_err(|e| fail("get", e))?
    {
        // `kubectl get -f` answers with a List even for one object.
        Some(Value::Object(mut object)) if object.get("kind") == Some(&"List".into()) => {
            match object.remove("items") {
                Some(Value::Array(items)) => items.into_iter().find_map(|i| match i {
                    Value::Object(o) => Some(o),
                    _ => None,
                }),
                _ => None,
            }
        }
        Some(Value::Object(object)) => Some(object),
        _ => None,
    };
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
        Err(first) if first.contains(WEBHOOK) => {
            let (stripped, ours) = without_our_annotations(&m.object);
            match dry_run(&Value::Object(stripped).to_string()) {
                // Still denied: the live object is AI-marked (sticky provenance).
                Err(again) if again.contains(WEBHOOK) => {
                    tracing::debug!(origin = %m.origin, "blastguard denies the dry run");
                    return Ok(Answer {
                        current,
                        requested: Requested::Denied { message: first },
                    });
                }
                other => other.map(|answer| {
                    answer.map(|mut a| {
                        restore_annotations(&mut a, ours);
                        a
                    })
                }),
            }
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
    Ok(Answer {
        current,
        requested: Requested::Served(object),
    })
}

/// The manifests as the cluster would store them, and the current objects.
#[derive(Debug, Default)]
pub struct DryRuns {
    /// The server's answer for each manifest, or the manifest itself (judged
    /// offline over the current object) when blastguard denied its dry run.
    pub new: Vec<Manifest>,
    /// The current objects of those that exist.
    pub old: Vec<Manifest>,
    /// What the reader should know (a manifest foreseen offline).
    pub notes: Vec<String>,
}

/// The server's dry-run answer for each manifest (keeping its origin), and the
/// current objects of those that exist.
pub fn dry_run(kubectl: &str, manifests: Vec<Manifest>) -> Result<DryRuns, ServerError> {
    let mut out = DryRuns::default();
    for m in manifests {
        let answer = answer(kubectl, &m)?;
        if let Some(object) = answer.current {
            out.old.push(Manifest {
                object,
                origin: m.origin.clone(),
            });
        }
        match answer.requested {
            Requested::Served(object) => out.new.push(Manifest {
                object,
                origin: m.origin,
            }),
            Requested::Denied { .. } => {
                out.notes.push(format!(
                    "{}: blastguard denies the server's dry run of this AI-marked object; it is \
                     judged as applied offline over the current object (the cluster's \
                     mutating webhooks cannot be foreseen)",
                    m.origin
                ));
                out.new.push(m);
            }
        }
    }
    Ok(out)
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
