//! Reading FILE: one object, an AdmissionReview, an approval payload, or several
//! objects (a kustomize or Helm render), through the same multi-document reader as
//! `check` (crate::cli::check::input), so both commands read a file alike.

use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

use super::args::ChangeArgs;
use super::error::ApproveError;
use super::error::{FileProblem, RestartError};
use crate::approval::payload::{API_VERSION, KIND, rfc3339};
use crate::change::Change;
use crate::cli::check::input::{self, Manifest};
use crate::policy::Policy;

/// What was read from FILE.
#[derive(Debug)]
pub enum Input {
    /// A Kubernetes object.
    Object {
        /// The object (with `--restart` applied).
        object: Value,
        /// Its document in FILE, from 1 (what `--annotate` edits).
        document: usize,
    },
    /// An AdmissionReview, judged as the webhook would.
    Review(Box<Change>),
    /// An approval payload, exactly as written (less a trailing newline).
    Payload(String),
}

impl Input {
    /// The object, when this is one.
    pub fn object(&self) -> Option<&Value> {
        match self {
            Input::Object { object, .. } => Some(object),
            _ => None,
        }
    }
}

/// FILE as read: its text, whether it is JSON, and what it holds.
#[derive(Debug)]
pub struct Source {
    /// The text, exactly as read.
    pub text: String,
    /// Whether the text is JSON.
    pub json: bool,
    /// What it holds, in order.
    pub inputs: Vec<Input>,
}

/// The text of `path` (`-`: standard input), bounded as `check` bounds it.
pub fn read_text(path: &Path) -> Result<String, ApproveError> {
    let bytes = input::read_source(path)?;
    String::from_utf8(bytes).map_err(|_| {
        ApproveError::Read(input::InputError::NotText {
            path: path.display().to_string(),
        })
    })
}

/// Reads FILE. A file of several documents holds only objects; a List is refused
/// (an approval binds one object).
pub fn read(args: &ChangeArgs, policy: &Policy) -> Result<Source, ApproveError> {
    let text = read_text(args.file())?;
    let name = args.file().display().to_string();
    let json = text.trim_start().starts_with('{');
    let manifests = input::parse_text(&name, &text, json)?;
    let file_error = |problem: FileProblem| ApproveError::file(&name, problem);
    if manifests.is_empty() {
        return Err(file_error(FileProblem::NoObject));
    }
    if let Some(listed) = manifests.iter().find(|m| m.origin.item.is_some()) {
        return Err(file_error(FileProblem::List(listed.origin.document)));
    }
    let several = manifests.len() > 1;
    let mut inputs = Vec::with_capacity(manifests.len());
    for m in manifests {
        let document = m.origin.document;
        let input = classify(m, &text, args, policy).map_err(&file_error)?;
        if several && !matches!(input, Input::Object { .. }) {
            return Err(file_error(FileProblem::NotAnObject(document)));
        }
        inputs.push(input);
    }
    Ok(Source { text, json, inputs })
}

fn classify(
    m: Manifest,
    text: &str,
    args: &ChangeArgs,
    policy: &Policy,
) -> Result<Input, FileProblem> {
    let document = m.origin.document;
    let value = Value::Object(m.object);
    let field = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if args.review || kind == "AdmissionReview" {
        if kind != "AdmissionReview" {
            return Err(FileProblem::NotAReview(kind.to_string()));
        }
        let body = serde_json::to_vec(&value).expect("a JSON value serializes");
        let request = crate::review::decode(&body).map_err(|r| r.error)?;
        let change = Change::from_view(&request, policy)?;
        return Ok(Input::Review(Box::new(change)));
    }
    if api_version == API_VERSION && kind == KIND {
        return Ok(Input::Payload(strip_one_newline(text).to_string()));
    }
    let mut object = value;
    if let Some(time) = &args.restart {
        restart(&mut object, time, SystemTime::now())?;
    }
    Ok(Input::Object { object, document })
}

/// What `kubectl rollout restart` writes into the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Sets the pod template's [`RESTARTED_AT`] to `time` (`now`: the current time), as
/// `kubectl rollout restart` does, so the restart is one exact object to approve.
pub fn restart(object: &mut Value, time: &str, now: SystemTime) -> Result<(), RestartError> {
    let time = if time == "now" {
        rfc3339(now)
    } else {
        humantime::parse_rfc3339_weak(time).map_err(|e| RestartError::Time {
            time: time.to_string(),
            problem: e.to_string(),
        })?;
        time.to_string()
    };
    let template = object
        .pointer_mut("/spec/template")
        .and_then(Value::as_object_mut)
        .ok_or(RestartError::NoTemplate)?;
    let metadata = template
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if metadata.is_null() {
        *metadata = Value::Object(Default::default());
    }
    let annotations = metadata
        .as_object_mut()
        .ok_or(RestartError::NotAMapping("spec.template.metadata"))?
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if annotations.is_null() {
        *annotations = Value::Object(Default::default());
    }
    annotations
        .as_object_mut()
        .ok_or(RestartError::NotAMapping(
            "spec.template.metadata.annotations",
        ))?
        .insert(RESTARTED_AT.to_string(), time.into());
    // The file is replaced onto the cluster later: a resourceVersion from `kubectl
    // get` would make that replace fail on any status update in between. The
    // approval's digest is what binds the spec, so a real change in between is
    // still refused (digest_mismatch).
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
    }
    Ok(())
}

/// A payload file as the annotation holds it: without the newline an editor or
/// `echo` ends the file with.
pub fn strip_one_newline(text: &str) -> &str {
    text.strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text)
}

/// The string annotations of an object.
pub fn object_annotations(object: &Value) -> std::collections::BTreeMap<String, String> {
    object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the object is as the API server presents it (it has server-set fields).
pub fn from_server(object: &Value) -> bool {
    ["uid", "resourceVersion", "creationTimestamp"]
        .iter()
        .any(|f| {
            object
                .pointer(&format!("/metadata/{f}"))
                .is_some_and(|v| !v.is_null())
        })
}

/// `Kind namespace/name` of an object, for messages about one of several.
pub fn describe(object: &Value) -> String {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    let name = text("/metadata/name").unwrap_or("<no name>");
    match text("/metadata/namespace") {
        Some(ns) => format!("{} {ns}/{name}", text("/kind").unwrap_or("object")),
        None => format!("{} {name}", text("/kind").unwrap_or("object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn args(file: &Path) -> ChangeArgs {
        ChangeArgs::for_file(file)
    }

    fn read_str(text: &str) -> Result<Source, ApproveError> {
        let dir = tempfile::tempdir().unwrap();
        let file: PathBuf = dir.path().join("in.yaml");
        std::fs::write(&file, text).unwrap();
        read(&args(&file), &Policy::embedded())
    }

    #[test]
    fn several_documents_are_objects_numbered_as_in_the_file() {
        let source = read_str(
            "# a render\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# nothing\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
        )
        .unwrap();
        let docs: Vec<usize> = source
            .inputs
            .iter()
            .map(|i| match i {
                Input::Object { document, .. } => *document,
                _ => panic!("an object"),
            })
            .collect();
        // Comments before the first `---` are no document; the comment-only one is.
        assert_eq!(docs, vec![1, 3]);
        assert!(!source.json);
    }

    #[test]
    fn a_list_and_a_payload_among_objects_are_refused() {
        let list = read_str("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n")
            .unwrap_err();
        assert!(list.to_string().contains("is a List"), "{list}");
        let mixed = read_str(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: blastguard.io/v1\nkind: Approval\n",
        )
        .unwrap_err();
        assert!(
            mixed
                .to_string()
                .contains("document 2 is not a Kubernetes object"),
            "{mixed}"
        );
        let empty = read_str("# nothing\n").unwrap_err();
        assert!(empty.to_string().contains("holds no object"), "{empty}");
    }

    #[test]
    fn a_payload_is_kept_byte_for_byte_less_one_newline() {
        let text = r#"{"apiVersion":"blastguard.io/v1","kind":"Approval","x": 1}"#;
        let source = read_str(&format!("{text}\n")).unwrap();
        assert!(source.json);
        assert!(matches!(&source.inputs[..], [Input::Payload(p)] if p == text));
    }

    #[test]
    fn restart_sets_the_time_and_drops_the_resource_version() {
        let mut object = json!({"metadata": {"resourceVersion": "9"},
            "spec": {"template": {"metadata": null}}});
        restart(&mut object, "2026-12-06T11:30:00Z", SystemTime::now()).unwrap();
        assert_eq!(
            object["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
            "2026-12-06T11:30:00Z"
        );
        assert!(object["metadata"].get("resourceVersion").is_none());
        assert!(restart(&mut json!({"spec": {}}), "now", SystemTime::now()).is_err());
        assert!(restart(&mut object, "yesterday", SystemTime::now()).is_err());
    }
}
