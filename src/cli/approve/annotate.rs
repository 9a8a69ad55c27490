//! `approve --annotate`: the approval annotations written into the manifest's own
//! text. A manifest in git is a file people wrote: its comments, key order, quoting
//! and the other documents of a render must stay as they were, so the text is
//! edited (the two annotation entries replaced or added under
//! `metadata.annotations`), never re-serialized. Every edit is read back and must
//! parse to exactly the object with the annotations set; a layout the editor does
//! not handle (flow-style `metadata: {...}`, say) is refused rather than guessed.

use serde_json::{Map, Value};

use crate::annotations::{APPROVAL, APPROVAL_SIGNATURE};

/// The two annotations to set on one document.
#[derive(Debug, Clone, Copy)]
pub struct Approval<'a> {
    /// The payload (`blastguard.io/approval`).
    pub payload: &'a str,
    /// The signatures (`blastguard.io/approval-signature`).
    pub signatures: &'a str,
}

/// Why a document could not be edited in place.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnotateError {
    /// The document number is not in the text.
    #[error("document {0} is not in the file")]
    NoDocument(usize),
    /// The layout is not one edited in place.
    #[error(
        "document {document}: {why}; write the annotations by hand (blastguard approve without --annotate prints them)"
    )]
    Layout {
        /// The document, from 1.
        document: usize,
        /// What the editor does not handle.
        why: &'static str,
    },
}

/// The byte ranges of the documents of a YAML stream, numbered from 1 as the reader
/// numbers them (every `---` starts one; a text that does not start with `---` has
/// its first document before the first marker).
fn documents(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut starts = vec![0];
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if offset > 0 && (bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t")) {
            starts.push(offset);
        }
        offset += line.len();
    }
    let mut ranges: Vec<_> = starts
        .windows(2)
        .map(|w| w[0]..w[1])
        .chain(std::iter::once(*starts.last().unwrap_or(&0)..text.len()))
        .collect();
    // Comments before the first `---` are no document of their own: the marker
    // opens document 1.
    if ranges.len() > 1 && !text[ranges[0].clone()].lines().any(content) {
        let first = ranges.remove(0);
        ranges[0].start = first.start;
    }
    ranges
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Whether a line holds YAML content (not blank, not only a comment).
fn content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// The key a block-mapping entry line starts with (quotes removed).
fn key_of(line: &str) -> Option<String> {
    let t = line.trim_start();
    let (key, _) = if let Some(rest) = t.strip_prefix('"') {
        let end = rest.find('"')?;
        return rest[end + 1..]
            .trim_start()
            .starts_with(':')
            .then(|| rest[..end].to_string());
    } else if let Some(rest) = t.strip_prefix('\'') {
        let end = rest.find('\'')?;
        return rest[end + 1..]
            .trim_start()
            .starts_with(':')
            .then(|| rest[..end].to_string());
    } else {
        t.split_once(':')?
    };
    Some(key.trim_end().to_string())
}

/// The value after `key:` on an entry line, without a trailing comment.
fn inline_value(line: &str) -> &str {
    let after = line.split_once(':').map(|(_, v)| v).unwrap_or("");
    let v = after.trim();
    match v.find(" #") {
        Some(i) => v[..i].trim_end(),
        None if v.starts_with('#') => "",
        None => v,
    }
}

/// The lines `[from, to)` of an entry's block: the entry line and every line after it
/// that is indented deeper, blank or a comment, up to the last content line.
fn block_end(lines: &[&str], from: usize, parent_indent: usize) -> usize {
    let mut end = from + 1;
    let mut i = from + 1;
    while i < lines.len() {
        let line = lines[i];
        if content(line) {
            if indent(line) <= parent_indent {
                break;
            }
            end = i + 1;
        }
        i += 1;
    }
    end
}

/// The two entries as YAML lines at `indent`: the payload as a double-quoted scalar
/// (JSON string syntax is YAML's), the signatures as a literal block.
fn entries(approval: Approval<'_>, indent: usize, step: usize) -> Vec<String> {
    let pad = " ".repeat(indent);
    let mut out = vec![format!(
        "{pad}{APPROVAL}: {}",
        Value::String(approval.payload.to_string())
    )];
    let body = approval.signatures.trim_end_matches('\n');
    out.push(format!("{pad}{APPROVAL_SIGNATURE}: |-"));
    let inner = " ".repeat(indent + step);
    out.extend(body.lines().map(|l| {
        if l.is_empty() {
            String::new()
        } else {
            format!("{inner}{l}")
        }
    }));
    out
}

/// One document with the approval set, or why it cannot be edited in place.
fn edit_document(doc: &str, approval: Approval<'_>) -> Result<String, &'static str> {
    let newline = if doc.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = doc.lines().collect();
    let meta = lines
        .iter()
        .position(|l| key_of(l).as_deref() == Some("metadata") && indent(l) == 0)
        .ok_or("no block-style metadata at the top level")?;
    if !inline_value(lines[meta]).is_empty() {
        return Err("metadata is written in flow style ({...})");
    }
    let meta_end = block_end(&lines, meta, 0);
    let child = lines[meta + 1..meta_end]
        .iter()
        .find(|l| content(l))
        .map(|l| indent(l))
        .filter(|&i| i > 0)
        .ok_or("metadata is empty")?;
    if lines[meta + 1..meta_end]
        .iter()
        .any(|l| content(l) && indent(l) < child)
    {
        return Err("metadata's entries are not evenly indented");
    }
    let annotations = (meta + 1..meta_end)
        .find(|&i| indent(lines[i]) == child && key_of(lines[i]).as_deref() == Some("annotations"));
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 8);
    match annotations {
        None => {
            // After the last entry of metadata.
            out.extend(lines[..meta_end].iter().map(|l| l.to_string()));
            out.push(format!("{}annotations:", " ".repeat(child)));
            out.extend(entries(approval, child * 2, child));
            out.extend(lines[meta_end..].iter().map(|l| l.to_string()));
        }
        Some(at) => {
            let value = inline_value(lines[at]);
            let end = block_end(&lines, at, child);
            if !matches!(value, "" | "{}" | "null" | "~") {
                return Err("metadata.annotations is written in flow style ({...})");
            }
            let body = &lines[at + 1..end];
            let step = body
                .iter()
                .find(|l| content(l))
                .map(|l| indent(l))
                .unwrap_or(child * 2);
            if step <= child {
                return Err("metadata.annotations' entries are not indented");
            }
            out.extend(lines[..at].iter().map(|l| l.to_string()));
            if value.is_empty() {
                out.push(lines[at].to_string());
            } else {
                // `annotations: {}` (or null) becomes a block; a comment stays.
                let comment = lines[at].find(" #").map(|i| &lines[at][i..]).unwrap_or("");
                out.push(format!("{}annotations:{comment}", " ".repeat(child)));
            }
            // The entries, less the approval's own (a stale approval is replaced).
            let mut i = 0;
            let mut kept = Vec::new();
            while i < body.len() {
                let line = body[i];
                let ours = content(line)
                    && indent(line) == step
                    && key_of(line).is_some_and(|k| k == APPROVAL || k == APPROVAL_SIGNATURE);
                if ours {
                    i += block_end(body, i, step) - i;
                    continue;
                }
                kept.push(line.to_string());
                i += 1;
            }
            // Our entries go after the last entry, before trailing comments.
            let last = kept.iter().rposition(|l| content(l)).map_or(0, |p| p + 1);
            let tail = kept.split_off(last);
            out.extend(kept);
            out.extend(entries(approval, step, step - child));
            out.extend(tail);
            out.extend(lines[end..].iter().map(|l| l.to_string()));
        }
    }
    let mut text = out.join(newline);
    if doc.ends_with('\n') {
        text.push_str(newline);
    }
    Ok(text)
}

/// The object with the approval set, as the edited text must read back.
pub(super) fn expected(object: &Value, approval: Approval<'_>) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        if let Some(map) = annotations.as_object_mut() {
            map.insert(APPROVAL.into(), approval.payload.into());
            map.insert(
                APPROVAL_SIGNATURE.into(),
                approval.signatures.trim_end().into(),
            );
        }
    }
    object
}

/// `text` (a YAML file) with the approval of each `(document, object)` written
/// into that document, every other byte as it was. `object` is the document as
/// read (what the edit must read back as, plus the annotations).
pub fn annotate_yaml(
    text: &str,
    edits: &[(usize, &Value, Approval<'_>)],
) -> Result<String, AnnotateError> {
    let ranges = documents(text);
    let mut out = String::with_capacity(text.len() + 2048 * edits.len());
    let mut done = 0;
    let mut sorted: Vec<_> = edits.iter().collect();
    sorted.sort_by_key(|(d, ..)| *d);
    for (document, object, approval) in sorted {
        let range = ranges
            .get(document.wrapping_sub(1))
            .ok_or(AnnotateError::NoDocument(*document))?;
        let layout = |why| AnnotateError::Layout {
            document: *document,
            why,
        };
        let doc = &text[range.clone()];
        let edited = edit_document(doc, *approval).map_err(layout)?;
        let read: Value =
            serde_saphyr::from_str_with_options(&edited, crate::yaml::manifest_options(&edited))
                .map_err(|_| layout("the edited document does not parse"))?;
        if read != expected(object, *approval) {
            return Err(layout(
                "the edited document does not read back as the approved object",
            ));
        }
        out.push_str(&text[done..range.start]);
        out.push_str(&edited);
        done = range.end;
    }
    out.push_str(&text[done..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SIG: &str = "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\nAAAA\n-----END SSH SIGNATURE-----";
    const PAYLOAD: &str =
        r#"{"apiVersion":"blastguard.io/v1","kind":"Approval","reason":"it's \"ok\""}"#;

    fn approval() -> Approval<'static> {
        Approval {
            payload: PAYLOAD,
            signatures: SIG,
        }
    }

    fn read_all(text: &str) -> Vec<Value> {
        serde_saphyr::from_multiple_with_options::<Value>(text, crate::yaml::manifest_options(text))
            .unwrap()
            .into_iter()
            .filter(|v| !v.is_null())
            .collect()
    }

    fn annotate_one(text: &str, document: usize) -> Result<String, AnnotateError> {
        let objects = read_all(text);
        let index = documents(text)
            .iter()
            .take(document)
            .filter(|r| {
                let v: Value = serde_saphyr::from_str(&text[(*r).clone()]).unwrap_or(Value::Null);
                !v.is_null()
            })
            .count();
        let object = objects[index - 1].clone();
        annotate_yaml(text, &[(document, &object, approval())])
    }

    #[test]
    fn comments_order_and_quoting_stay_and_only_lines_are_added() {
        let text = "\
# Deployment of the web tier (CHG-1234)
kind: Deployment   # kind before apiVersion, on purpose
apiVersion: apps/v1
metadata:
  # who owns it
  namespace: payments
  name: 'web'
  labels: {app: web}
spec:
  replicas: 20 # approved by the SRE team
  template:
    spec:
      containers:
        - name: web
          image: \"nginx:1.27\"
";
        let out = annotate_one(text, 1).unwrap();
        let removed: Vec<_> = text
            .lines()
            .filter(|l| !out.lines().any(|o| o == *l))
            .collect();
        assert!(removed.is_empty(), "lines lost: {removed:?}\n{out}");
        assert!(
            out.contains("  labels: {app: web}\n  annotations:\n    blastguard.io/approval: \"{\\\"apiVersion"),
            "{out}"
        );
        assert!(
            out.contains(
                "    blastguard.io/approval-signature: |-\n      -----BEGIN SSH SIGNATURE-----\n"
            ),
            "{out}"
        );
        assert!(out.ends_with("          image: \"nginx:1.27\"\n"), "{out}");
        let read = &read_all(&out)[0];
        assert_eq!(read["metadata"]["annotations"][APPROVAL], PAYLOAD);
        assert_eq!(read["metadata"]["annotations"][APPROVAL_SIGNATURE], SIG);
    }

    #[test]
    fn existing_annotations_keep_their_style_and_a_stale_approval_is_replaced() {
        let text = "\
apiVersion: apps/v1
kind: Deployment
metadata:
    name: web
    annotations:
        # the agent that wrote it
        blastguard.io/ai-agent: claude-code
        blastguard.io/approval: >-
            {\"old\": true}
        \"blastguard.io/approval-signature\": |
            -----BEGIN SSH SIGNATURE-----
            old
            -----END SSH SIGNATURE-----
        team: payments   # keep me
    namespace: payments
spec: {replicas: 3}
";
        let out = annotate_one(text, 1).unwrap();
        assert!(!out.contains("old"), "{out}");
        assert!(out.contains("        # the agent that wrote it\n        blastguard.io/ai-agent: claude-code\n        team: payments   # keep me\n        blastguard.io/approval: "), "{out}");
        assert!(
            out.contains("        blastguard.io/approval-signature: |-\n            -----BEGIN"),
            "{out}"
        );
        assert!(
            out.contains("    namespace: payments\nspec: {replicas: 3}\n"),
            "{out}"
        );
        let read = &read_all(&out)[0];
        assert_eq!(read["metadata"]["annotations"]["team"], "payments");
        assert_eq!(read["metadata"]["annotations"][APPROVAL], PAYLOAD);
    }

    #[test]
    fn only_the_annotated_document_of_a_render_changes() {
        let first = "# Source: chart/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  b: \"2\"\n  a: \"1\"\n";
        let second = "---\n# Source: chart/templates/deploy.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations: {}   # none yet\nspec:\n  replicas: 3\n";
        let third = "---\n# trailing comment document\n";
        let text = format!("---\n{first}{second}{third}");
        let out = annotate_one(&text, 2).unwrap();
        assert!(out.starts_with(&format!("---\n{first}---\n")), "{out}");
        assert!(out.ends_with(&format!("  replicas: 3\n{third}")), "{out}");
        assert!(
            out.contains("  annotations: # none yet\n    blastguard.io/approval: "),
            "{out}"
        );
        let read = read_all(&out);
        assert_eq!(read.len(), 2);
        assert_eq!(read[0], read_all(first)[0]);
        assert_eq!(read[1]["metadata"]["annotations"][APPROVAL], PAYLOAD);
    }

    #[test]
    fn a_layout_not_edited_in_place_is_refused() {
        let flow = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n";
        assert!(matches!(
            annotate_one(flow, 1),
            Err(AnnotateError::Layout { document: 1, .. })
        ));
        let flow_annotations =
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  annotations: {a: b}\n";
        assert!(annotate_one(flow_annotations, 1).is_err());
        let object = json!({});
        assert_eq!(
            annotate_yaml(flow, &[(3, &object, approval())]),
            Err(AnnotateError::NoDocument(3))
        );
    }

    #[test]
    fn crlf_files_stay_crlf() {
        let text = "apiVersion: v1\r\nkind: ConfigMap\r\nmetadata:\r\n  name: cfg\r\n";
        let out = annotate_one(text, 1).unwrap();
        assert!(!out.replace("\r\n", "").contains('\n'), "{out:?}");
        assert_eq!(
            read_all(&out)[0]["metadata"]["annotations"][APPROVAL],
            PAYLOAD
        );
    }
}
