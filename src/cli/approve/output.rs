//! What `digest` and `approve` show and write: the approver's view of what is
//! signed, the annotations to add, and the annotated file.

use std::io::Write;
use std::path::Path;

use super::annotate::{self, Approval};
use super::error::ApproveError;
use super::error::OutputProblem;
use super::input::Input;
use super::payload::Prepared;
use super::signing::Trust;
use crate::annotations::{APPROVAL, APPROVAL_SIGNATURE};
use crate::approval::ApprovalPayload;

/// What the approver is about to sign, in words, before the payload itself: the
/// target, the operation, the summary and the digest, and whether that digest was
/// computed here from FILE.
pub fn what_is_signed(prepared: &Prepared, who: Option<&str>, file: &Path) -> String {
    let Ok(payload) = ApprovalPayload::parse(&prepared.payload_text) else {
        return format!(
            "Signing this approval payload:\n  {}\n",
            prepared.payload_text
        );
    };
    let mut out = match who {
        Some(who) => format!("Signing the approval of {who}:\n"),
        None => "Signing the approval of:\n".to_string(),
    };
    let line = |out: &mut String, name: &str, value: &str| {
        out.push_str(&format!("  {name:<10} {value}\n"));
    };
    line(&mut out, "target:", &payload.target.to_string());
    line(&mut out, "operation:", payload.operation.as_str());
    if !payload.summary.is_empty() {
        line(&mut out, "summary:", &payload.summary);
    }
    let checked = match &prepared.input {
        Input::Payload(_) => format!(
            "NOT CHECKED: {} is a payload alone; compare this digest with `blastguard digest -f MANIFEST` before signing",
            file.display()
        ),
        _ => format!("computed here from {}", file.display()),
    };
    if let Some(digest) = &payload.digest {
        line(&mut out, "digest:", &format!("{digest} ({checked})"));
    }
    if let Some(replicas) = payload.replicas {
        line(&mut out, "replicas:", &format!("exactly {replicas}"));
    }
    line(
        &mut out,
        "valid:",
        &format!("{} to {}", payload.not_before, payload.not_after),
    );
    if !payload.reason.is_empty() {
        line(&mut out, "reason:", &payload.reason);
    }
    line(&mut out, "payload:", &prepared.payload_text);
    out
}

/// The line telling whether the webhook will count a key's signature.
pub fn trust_line(trust: &Trust, fingerprint: &str, file: &Path) -> String {
    let file = file.display();
    match trust {
        Trust::Trusted(who) => format!("Signing as {who} (key {fingerprint}, trusted by {file})."),
        Trust::Restricted(why) => format!(
            "warning: {file} does not trust key {fingerprint} for approvals now ({why}): the webhook will not count this signature"
        ),
        Trust::NotListed => format!(
            "warning: key {fingerprint} is not in {file}: the webhook will not count this signature"
        ),
        Trust::Unreadable(e) => {
            format!("warning: cannot check the key against allowed_signers: {e}")
        }
    }
}

/// The two annotations as YAML, to paste under `metadata.annotations`.
pub fn annotations_yaml(payload: &str, signatures: &str) -> Result<String, ApproveError> {
    let pair: std::collections::BTreeMap<&str, &str> =
        [(APPROVAL, payload), (APPROVAL_SIGNATURE, signatures)]
            .into_iter()
            .collect();
    serde_saphyr::to_string(&pair).map_err(|e| OutputProblem::Yaml(e.to_string()).into())
}

/// FILE's text with each signed object's approval written in: YAML edited in
/// place (annotate.rs), JSON (one object, as `kubectl get -o json` writes it)
/// too (annotate_json.rs).
pub fn annotated_text(
    source_text: &str,
    json: bool,
    signed: &[(Prepared, String)],
) -> Result<String, ApproveError> {
    if json {
        let [(prepared, signatures)] = signed else {
            return Err(OutputProblem::JsonOfSeveral.into());
        };
        let Input::Object { object, .. } = &prepared.input else {
            return Err(OutputProblem::NotAnObject.into());
        };
        let approval = Approval {
            payload: &prepared.payload_text,
            signatures,
        };
        // `--restart` changed the object itself (the pod template's restartedAt, no
        // resourceVersion): there is no text to keep, so the file is written whole.
        let as_read: Option<serde_json::Value> = serde_json::from_str(source_text).ok();
        if as_read.as_ref() != Some(object) {
            let whole = super::annotate::expected(object, approval);
            let mut text = serde_json::to_string_pretty(&whole).expect("a JSON value serializes");
            text.push('\n');
            return Ok(text);
        }
        return Ok(
            super::annotate_json::annotate_json(source_text, object, approval)
                .map_err(OutputProblem::from)?,
        );
    }
    let edits: Vec<_> = signed
        .iter()
        .filter_map(|(prepared, signatures)| match &prepared.input {
            Input::Object { object, document } => Some((
                *document,
                object,
                Approval {
                    payload: &prepared.payload_text,
                    signatures,
                },
            )),
            _ => None,
        })
        .collect();
    Ok(annotate::annotate_yaml(source_text, &edits).map_err(OutputProblem::from)?)
}

/// Writes `text` atomically over `path` (keeping its permissions), or to standard
/// output for `-`.
pub fn write_file(path: &Path, text: &str) -> Result<(), ApproveError> {
    if path == Path::new("-") {
        print!("{text}");
        return Ok(());
    }
    let error = |source: std::io::Error| ApproveError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(file.path(), meta.permissions()).map_err(error)?;
    }
    file.persist(path).map_err(|e| error(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prepared(object: serde_json::Value, document: usize) -> Prepared {
        Prepared {
            input: Input::Object { object, document },
            payload_text: r#"{"apiVersion":"blastguard.io/v1","kind":"Approval"}"#.into(),
            existing_signatures: None,
            notes: vec![],
        }
    }

    #[test]
    fn json_and_yaml_are_both_edited_in_place() {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let json = r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c"}}"#;
        let text =
            annotated_text(json, true, &[(prepared(object.clone(), 1), "SIG".into())]).unwrap();
        assert!(
            text.starts_with(r#"{"kind":"ConfigMap","apiVersion":"v1","#),
            "{text}"
        );
        let read: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(read["metadata"]["annotations"][APPROVAL_SIGNATURE], "SIG");
        let yaml = "# keep\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n";
        let text = annotated_text(yaml, false, &[(prepared(object, 1), "SIG".into())]).unwrap();
        assert!(text.starts_with("# keep\napiVersion: v1\n"), "{text}");
        assert!(
            text.contains("  annotations:\n    blastguard.io/approval: "),
            "{text}"
        );
    }

    #[test]
    fn a_restarted_json_object_is_written_whole_with_its_restart() {
        // As `--restart` leaves it: the pod template's restartedAt set, which the
        // file's text does not hold.
        let json = r#"{"kind":"Deployment","metadata":{"name":"web"},"spec":{}}"#;
        let restarted = json!({"kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "t"}}}}});
        let text = annotated_text(
            json,
            true,
            &[(prepared(restarted.clone(), 1), "SIG".into())],
        )
        .unwrap();
        let read: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            read["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "t"
        );
        assert_eq!(read["metadata"]["annotations"][APPROVAL_SIGNATURE], "SIG");
    }

    #[test]
    fn the_approver_sees_what_is_signed() {
        let p = Prepared {
            input: Input::Payload(String::new()),
            payload_text: r#"{"apiVersion":"blastguard.io/v1","kind":"Approval","target":{"group":"apps","kind":"Deployment","namespace":"prod","name":"api"},"operation":"apply","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","summary":"replicas 3 → 40","notBefore":"2026-11-22T10:00:00Z","notAfter":"2026-11-22T12:00:00Z"}"#.into(),
            existing_signatures: None,
            notes: vec![],
        };
        let text = what_is_signed(&p, None, Path::new("payload.json"));
        assert!(
            text.contains("  target:    Deployment prod/api (group apps)\n"),
            "{text}"
        );
        assert!(text.contains("  summary:   replicas 3 → 40\n"), "{text}");
        assert!(
            text.contains("NOT CHECKED: payload.json is a payload alone"),
            "{text}"
        );
    }
}
