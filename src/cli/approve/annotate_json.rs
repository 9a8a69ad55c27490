//! `approve --annotate` on a JSON file (one object, as `kubectl get -o json` writes
//! it): the same promise as the YAML editor in [`super::annotate`], every byte but
//! the approval's entries as it was (member order, indentation), the edit read back
//! and compared with the approved object before it is written.

use std::collections::HashMap;
use std::ops::Range;

use serde_json::Value;
use serde_json::value::RawValue;

use super::annotate::{AnnotateError, Approval, expected};
use crate::annotations::{APPROVAL, APPROVAL_SIGNATURE};

/// How a JSON file is laid out: one line (`{"a":1}`), or pretty with one indent step
/// per level, as `kubectl get -o json` and `jq` write it.
struct JsonStyle {
    /// The indent of one level, when the file is pretty.
    step: Option<String>,
    /// The file's line ending.
    newline: &'static str,
}

impl JsonStyle {
    /// The style of `text`: pretty when its first member starts a new line, the step
    /// being that line's indent.
    fn of(text: &str) -> Self {
        let body = text.trim_start().strip_prefix('{').unwrap_or("");
        let first = body.trim_start_matches([' ', '\t', '\r']);
        let step = first.strip_prefix('\n').map(|rest| {
            let key = rest.trim_start_matches([' ', '\t']);
            rest[..rest.len() - key.len()].to_string()
        });
        JsonStyle {
            step: step.filter(|s| !s.is_empty()),
            newline: if text.contains("\r\n") { "\r\n" } else { "\n" },
        }
    }
}

/// The byte range `raw` (a value borrowed from `text`) covers in `text`.
fn span(text: &str, raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
    start..start + raw.get().len()
}

/// The members of the JSON object `range` of `text` covers, each with the range its
/// value covers; `None` when it is not an object.
fn members(text: &str, range: Range<usize>) -> Option<HashMap<String, Range<usize>>> {
    let raw: HashMap<String, &RawValue> = serde_json::from_str(&text[range]).ok()?;
    Some(raw.into_iter().map(|(k, v)| (k, span(text, v))).collect())
}

/// The whitespace a line of `text` starts with, for the line holding byte `at`.
fn line_indent(text: &str, at: usize) -> &str {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    &line[..line.len() - line.trim_start_matches([' ', '\t']).len()]
}

/// The object `range` of `text` covers, with `add` (keys and rendered values)
/// appended in the file's style.
fn append_members(
    text: &str,
    range: Range<usize>,
    add: &[(&str, String)],
    style: &JsonStyle,
) -> String {
    let object = &text[range.clone()];
    // Everything up to the last member's value (or the opening brace).
    let body_end = object[..object.len() - 1].trim_end().len();
    let empty = body_end == 1;
    let outer = line_indent(text, range.start);
    let mut out = object[..body_end].to_string();
    for (i, (key, value)) in add.iter().enumerate() {
        if !(empty && i == 0) {
            out.push(',');
        }
        if let Some(step) = &style.step {
            out.push_str(style.newline);
            out.push_str(outer);
            out.push_str(step);
        }
        out.push_str(&Value::String((*key).to_string()).to_string());
        out.push_str(if style.step.is_some() { ": " } else { ":" });
        out.push_str(value);
    }
    match (&style.step, empty) {
        (Some(_), true) => {
            out.push_str(style.newline);
            out.push_str(outer);
            out.push('}');
        }
        _ => out.push_str(&object[body_end..]),
    }
    out
}

/// `text` (one JSON object, as `kubectl get -o json` writes it) with the approval
/// written in, every other byte as it was: the two entries replaced where they
/// are, or appended to `metadata.annotations` (itself appended to `metadata` when
/// missing), in the file's indentation. `object` is the object as read.
pub fn annotate_json(
    text: &str,
    object: &Value,
    approval: Approval<'_>,
) -> Result<String, AnnotateError> {
    let layout = |why| AnnotateError::Layout { document: 1, why };
    let style = JsonStyle::of(text);
    let mut text = text.to_string();
    let metadata = |text: &str| {
        let start = text.len() - text.trim_start().len();
        members(text, start..text.trim_end().len())
            .and_then(|top| top.get("metadata").cloned())
            .filter(|m| text[m.clone()].starts_with('{'))
            .ok_or(layout("no metadata object at the top level"))
    };
    // `metadata.annotations` made an empty object first, when missing or null.
    let meta = metadata(&text)?;
    let annotations = members(&text, meta.clone()).and_then(|m| m.get("annotations").cloned());
    match annotations {
        None => {
            let edited =
                append_members(&text, meta.clone(), &[("annotations", "{}".into())], &style);
            text.replace_range(meta, &edited);
        }
        Some(at) if &text[at.clone()] == "null" => text.replace_range(at, "{}"),
        Some(at) if !text[at.clone()].starts_with('{') => {
            return Err(layout("metadata.annotations is not an object"));
        }
        Some(_) => {}
    }
    let annotations = |text: &str| {
        metadata(text).and_then(|meta| {
            members(text, meta)
                .and_then(|m| m.get("annotations").cloned())
                .ok_or(layout("metadata.annotations is not an object"))
        })
    };
    let ours = [
        (APPROVAL, approval.payload),
        (APPROVAL_SIGNATURE, approval.signatures.trim_end()),
    ];
    // A stale approval's values are replaced where they stand (from the back, so
    // the earlier ranges hold); the missing entries are appended.
    let present = members(&text, annotations(&text)?).unwrap_or_default();
    let mut replaced: Vec<_> = ours
        .iter()
        .filter_map(|(key, value)| Some((present.get(*key)?.clone(), *value)))
        .collect();
    replaced.sort_by_key(|(range, _)| std::cmp::Reverse(range.start));
    for (range, value) in replaced {
        text.replace_range(range, &Value::String(value.to_string()).to_string());
    }
    let add: Vec<_> = ours
        .iter()
        .filter(|(key, _)| !present.contains_key(*key))
        .map(|(key, value)| (*key, Value::String(value.to_string()).to_string()))
        .collect();
    if !add.is_empty() {
        let at = annotations(&text)?;
        let edited = append_members(&text, at.clone(), &add, &style);
        text.replace_range(at, &edited);
    }
    let read: Value =
        serde_json::from_str(&text).map_err(|_| layout("the edited file does not parse"))?;
    if read != expected(object, approval) {
        return Err(layout(
            "the edited file does not read back as the approved object",
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n";

    fn approval(payload: &str) -> Approval<'_> {
        Approval {
            payload,
            signatures: SIG,
        }
    }

    fn annotate(text: &str, payload: &str) -> Result<String, AnnotateError> {
        let object: Value = serde_json::from_str(text).unwrap();
        annotate_json(text, &object, approval(payload))
    }

    /// The lines of `after` that are not in `before`, in order.
    fn added<'a>(before: &str, after: &'a str) -> Vec<&'a str> {
        let old: Vec<_> = before.lines().collect();
        after.lines().filter(|l| !old.contains(l)).collect()
    }

    #[test]
    fn member_order_and_indentation_stay_and_annotations_are_added_in_place() {
        // Keys out of alphabetical order, a 4-space indent, as a person or a
        // tool other than kubectl may write: re-serializing would sort and re-indent.
        let text = "{\n    \"kind\": \"Deployment\",\n    \"apiVersion\": \"apps/v1\",\n    \"metadata\": {\n        \"namespace\": \"payments\",\n        \"name\": \"web\"\n    },\n    \"spec\": {\"replicas\": 20}\n}\n";
        let out = annotate(text, "{\"a\":1}").unwrap();
        let mut lines = text.lines();
        // Every original line is still there, in order.
        assert!(
            lines.all(|l| out.lines().any(|o| o == l || o == format!("{l},"))),
            "{out}"
        );
        assert_eq!(
            added(text, &out),
            [
                "        \"name\": \"web\",",
                "        \"annotations\": {",
                "            \"blastguard.io/approval\": \"{\\\"a\\\":1}\",",
                "            \"blastguard.io/approval-signature\": \"-----BEGIN SSH SIGNATURE-----\\nU1NIU0lH\\n-----END SSH SIGNATURE-----\"",
                "        }",
            ]
        );
        assert!(out.find("\"kind\"") < out.find("\"apiVersion\""));
        assert!(out.ends_with("}\n"));
    }

    #[test]
    fn a_stale_approval_is_replaced_where_it_stands_and_other_annotations_stay() {
        let text = "{\n  \"metadata\": {\n    \"annotations\": {\n      \"z\": \"1\",\n      \"blastguard.io/approval\": \"old\",\n      \"a\": \"2\"\n    },\n    \"name\": \"web\"\n  }\n}";
        let out = annotate(text, "new").unwrap();
        let read: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            read["metadata"]["annotations"]["blastguard.io/approval"],
            "new"
        );
        assert_eq!(read["metadata"]["annotations"]["z"], "1");
        // The stale entry's line changed in place; the signature was appended last.
        let keys: Vec<_> = out
            .lines()
            .filter_map(|l| l.trim().split('"').nth(1))
            .collect();
        assert_eq!(
            keys,
            [
                "metadata",
                "annotations",
                "z",
                "blastguard.io/approval",
                "a",
                "blastguard.io/approval-signature",
                "name"
            ]
        );
        assert!(!out.ends_with('\n'));
    }

    #[test]
    fn one_line_json_stays_one_line_and_null_annotations_become_an_object() {
        let text = r#"{"metadata":{"name":"web","annotations":null},"kind":"Service"}"#;
        let out = annotate(text, "p").unwrap();
        assert!(!out.contains('\n'), "{out}");
        assert!(
            out.starts_with(
                r#"{"metadata":{"name":"web","annotations":{"blastguard.io/approval":"p","#
            ),
            "{out}"
        );
        let crlf = "{\r\n  \"metadata\": {\r\n    \"name\": \"web\"\r\n  }\r\n}\r\n";
        let out = annotate(crlf, "p").unwrap();
        assert!(!out.replace("\r\n", "").contains('\n'), "{out:?}");
    }

    #[test]
    fn a_file_without_a_metadata_object_is_refused_by_name() {
        for (text, why) in [
            (r#"{"kind":"Service"}"#, "no metadata object"),
            (r#"{"metadata":"web"}"#, "no metadata object"),
            (r#"{"metadata":{"annotations":["a"]}}"#, "not an object"),
        ] {
            let err = annotate(text, "p").unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
