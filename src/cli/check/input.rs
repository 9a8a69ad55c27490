//! Reading manifests for `check`: files, directories (recursively: `.yaml`, `.yml`,
//! `.json`), and stdin (`-`); multi-document YAML and JSON streams; `List` kinds
//! unpacked. Every error names the file and, for a parse error, the line.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Most bytes read from one file or from stdin: far above any real manifest set, and a
/// bound on what a runaway pipe can make `check` hold.
pub const MAX_SOURCE_BYTES: u64 = 64 * 1024 * 1024;

/// Most bytes read over all sources of one run (a directory may hold many files).
pub const MAX_TOTAL_BYTES: u64 = 256 * 1024 * 1024;

/// The name stdin is given in messages.
pub const STDIN_NAME: &str = "<stdin>";

/// Where an object was read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The file (as given or found in a directory), or `<stdin>`.
    pub file: String,
    /// The document in the file, from 1 (YAML `---` documents, or JSON values).
    pub document: usize,
    /// The index in a `List`'s `items`, from 0, when the object came from a list.
    pub item: Option<usize>,
    /// The line the object starts on, from 1; 0 when not known.
    pub line: usize,
    /// The column (in characters) the object starts at, from 1; 0 when not known.
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `file:line:column` is what editors and terminals turn into a link.
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column.max(1))?;
        }
        write!(f, " (document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, ", item {item}")?;
        }
        f.write_str(")")
    }
}

/// One Kubernetes object read from the input.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it came from.
    pub origin: Origin,
    /// The object; it has string `apiVersion` and `kind`.
    pub object: Map<String, Value>,
}

/// Why the input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A source exceeds [`MAX_SOURCE_BYTES`].
    #[error("{path}: larger than {MAX_SOURCE_BYTES} bytes; split the input")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// All sources together exceed [`MAX_TOTAL_BYTES`].
    #[error(
        "{path}: the inputs together are larger than {MAX_TOTAL_BYTES} bytes; check them in parts"
    )]
    TotalTooLarge {
        /// The file that went over.
        path: String,
    },
    /// Not valid UTF-8 text.
    #[error("{path}: not UTF-8 text")]
    NotText {
        /// The file.
        path: String,
    },
    /// YAML or JSON syntax error.
    #[error("{path}:{line}:{column}: invalid {format}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
        /// `YAML` or `JSON`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A document that is not a Kubernetes object.
    #[error("{origin}: not a Kubernetes object: {problem}")]
    NotAnObject {
        /// Where.
        origin: Origin,
        /// What is missing or wrong.
        problem: String,
    },
    /// A field the pod count depends on that the API server would refuse.
    #[error("{origin}: {path}: {problem}")]
    Field {
        /// Where.
        origin: Origin,
        /// The field, e.g. `spec.replicas`.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `-` given more than once (stdin can be read only once).
    #[error("stdin (-) can be read only once, but it was given more than once")]
    StdinTwice,
}

impl InputError {
    /// The file, and the line and column when the error has a place in it.
    pub fn location(&self) -> (&str, Option<(usize, usize)>) {
        match self {
            InputError::Read { path, .. }
            | InputError::TooLarge { path }
            | InputError::TotalTooLarge { path }
            | InputError::NotText { path } => (path, None),
            InputError::Syntax {
                path, line, column, ..
            } => (path, Some((*line, *column))),
            InputError::NotAnObject { origin, .. } | InputError::Field { origin, .. } => (
                &origin.file,
                (origin.line > 0).then_some((origin.line, origin.column)),
            ),
            InputError::StdinTwice => (STDIN_NAME, None),
        }
    }
}

/// Reads sources, remembering whether stdin was consumed.
#[derive(Debug, Default)]
pub struct Reader {
    stdin_used: bool,
    total_bytes: u64,
}

impl Reader {
    /// Reads every object of `source` into `out`; a file that cannot be read is added
    /// to `errors` and the others are still read, so one bad file does not hide the
    /// verdicts on the rest.
    pub fn read_into(
        &mut self,
        source: &Path,
        out: &mut Vec<Manifest>,
        errors: &mut Vec<InputError>,
    ) {
        let is_dir = source.as_os_str() != "-" && source.is_dir();
        if !is_dir {
            match self.read(source) {
                Ok(manifests) => out.extend(manifests),
                Err(e) => errors.push(e),
            }
            return;
        }
        let mut files = Vec::new();
        if let Err(e) = collect_manifest_files(source, &mut files) {
            errors.push(e);
        }
        for file in files {
            match self.read_file(&file) {
                Ok(manifests) => out.extend(manifests),
                Err(e) => errors.push(e),
            }
        }
    }

    /// Reads every object of one source: a file, a directory (recursively), or `-`.
    pub fn read(&mut self, source: &Path) -> Result<Vec<Manifest>, InputError> {
        if source.as_os_str() == "-" {
            if std::mem::replace(&mut self.stdin_used, true) {
                return Err(InputError::StdinTwice);
            }
            let text = self.read_text(source, STDIN_NAME)?;
            return parse(STDIN_NAME, &text, false);
        }
        let name = source.display().to_string();
        let metadata = std::fs::metadata(source).map_err(|e| read_error(&name, e))?;
        if !metadata.is_dir() {
            return self.read_file(source);
        }
        let mut files = Vec::new();
        collect_manifest_files(source, &mut files)?;
        let mut out = Vec::new();
        for file in files {
            out.extend(self.read_file(&file)?);
        }
        Ok(out)
    }

    fn read_file(&mut self, path: &Path) -> Result<Vec<Manifest>, InputError> {
        let name = path.display().to_string();
        let text = self.read_text(path, &name)?;
        parse(&name, &text, has_extension(path, &["json"])).map_err(|e| match e {
            InputError::NotAnObject { origin, problem } => InputError::NotAnObject {
                problem: problem + &render_hint(path),
                origin,
            },
            other => other,
        })
    }

    fn read_text(&mut self, source: &Path, name: &str) -> Result<String, InputError> {
        let bytes = read_source(source)?;
        self.total_bytes += bytes.len() as u64;
        if self.total_bytes > MAX_TOTAL_BYTES {
            return Err(InputError::TotalTooLarge {
                path: name.to_string(),
            });
        }
        String::from_utf8(bytes).map_err(|_| InputError::NotText {
            path: name.to_string(),
        })
    }
}

fn read_error(path: &str, source: std::io::Error) -> InputError {
    InputError::Read {
        path: path.to_string(),
        source,
    }
}

/// The bytes of one file, or of stdin for `-`, at most [`MAX_SOURCE_BYTES`].
pub fn read_source(source: &Path) -> Result<Vec<u8>, InputError> {
    if source.as_os_str() == "-" {
        return read_bytes(std::io::stdin().lock(), STDIN_NAME, MAX_SOURCE_BYTES);
    }
    let name = source.display().to_string();
    let file = std::fs::File::open(source).map_err(|e| read_error(&name, e))?;
    read_bytes(file, &name, MAX_SOURCE_BYTES)
}

/// Reads at most `limit` bytes: one more is read only to tell that there are more.
fn read_bytes(reader: impl Read, name: &str, limit: u64) -> Result<Vec<u8>, InputError> {
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_error(name, e))?;
    if bytes.len() as u64 > limit {
        return Err(InputError::TooLarge {
            path: name.to_string(),
        });
    }
    Ok(bytes)
}

/// How to check the source files of kustomize and Helm, which are not objects.
fn render_hint(path: &Path) -> String {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let dir = path
        .parent()
        .map_or(".".into(), |d| d.display().to_string());
    let dir = if dir.is_empty() { ".".to_string() } else { dir };
    match file {
        "kustomization.yaml" | "kustomization.yml" | "Kustomization" => format!(
            " (a kustomization: check what it renders, `kubectl kustomize {dir} | kubectl blastguard check -f -`)"
        ),
        "Chart.yaml" | "values.yaml" | "values.yml" => format!(
            " (a Helm chart file: check what the chart renders, `helm template NAME {dir} | kubectl blastguard check -f -`)"
        ),
        _ => String::new(),
    }
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The manifest files under `dir`, in name order at every level so results are stable.
/// Symbolic links to directories are not followed (no cycles); links to files are.
fn collect_manifest_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let name = dir.display().to_string();
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| read_error(&name, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(&name, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|e| read_error(&path.display().to_string(), e))?;
        if file_type.is_dir() {
            collect_manifest_files(&path, out)?;
        } else if has_extension(&path, &["yaml", "yml", "json"])
            && (file_type.is_file() || path.is_file())
        {
            out.push(path);
        }
    }
    Ok(())
}

/// The objects of `text` (read from `name`), as [`Reader`] reads a file: the one
/// multi-document reader `check`, `approve` and `digest` share. `is_json` reads the
/// text as a stream of JSON values.
pub fn parse_text(name: &str, text: &str, is_json: bool) -> Result<Vec<Manifest>, InputError> {
    parse(name, text, is_json)
}

/// Parses a text of YAML documents or JSON values into objects. JSON is read as a
/// stream of values when the file is `.json` or the text starts like JSON; anything
/// else (and JSON-looking text that is not JSON, such as a YAML flow mapping) as YAML.
fn parse(name: &str, text: &str, is_json_file: bool) -> Result<Vec<Manifest>, InputError> {
    let looks_like_json = text.trim_start().starts_with(['{', '[']);
    let documents = if is_json_file {
        json_documents(name, text)?
    } else if looks_like_json {
        json_documents(name, text).or_else(|_| yaml_documents(name, text))?
    } else {
        yaml_documents(name, text)?
    };
    let mut out = Vec::new();
    for (index, (place, value)) in documents.into_iter().enumerate() {
        let origin = Origin {
            file: name.to_string(),
            document: place.number.unwrap_or(index + 1),
            item: None,
            line: place.at.0,
            column: place.at.1,
        };
        // Empty documents (`---` at the end, comments only) hold nothing.
        if !value.is_null() {
            unpack(origin, &place.items, value, &mut out)?;
        }
    }
    Ok(out)
}

/// Where a document is in its file: its place among the documents when that differs
/// from its place in the parsed list, the line and column (from 1) its value starts
/// at, and where each element of its top-level `items` starts (for `List` kinds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Place {
    number: Option<usize>,
    at: (usize, usize),
    items: Vec<(usize, usize)>,
}

/// The documents of a text, each with its place in the file.
type Documents = Vec<(Place, Value)>;

fn json_documents(name: &str, text: &str) -> Result<Documents, InputError> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut out = Vec::new();
    loop {
        // serde_json gives no positions of values, only the offset it has read to:
        // a value starts at the first non-blank byte after the previous one ended.
        let before = stream.byte_offset();
        let value = match stream.next() {
            None => break,
            Some(Ok(value)) => value,
            Some(Err(e)) => {
                return Err(InputError::Syntax {
                    path: name.to_string(),
                    line: e.line(),
                    column: e.column(),
                    format: "JSON",
                    message: e.to_string(),
                });
            }
        };
        let end = stream.byte_offset();
        let slice = &text[before..end];
        let start = before + (slice.len() - slice.trim_start().len());
        let at = line_column(text, start);
        // JSON is YAML's flow syntax: the YAML reading of this one value finds where
        // its items start (only List kinds need them).
        let items = if value.get("items").is_some_and(Value::is_array) {
            yaml_places(&text[start..end])
                .into_iter()
                .next()
                .map(|p| p.items.into_iter().map(|i| shifted(i, at)).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        out.push((
            Place {
                number: None,
                at,
                items,
            },
            value,
        ));
    }
    Ok(out)
}

/// The line and column (from 1, in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A position read in a slice that starts at `origin`, as a position in the file.
fn shifted((line, column): (usize, usize), origin: (usize, usize)) -> (usize, usize) {
    if line == 1 {
        (origin.0, origin.1 + column - 1)
    } else {
        (origin.0 + line - 1, column)
    }
}

fn yaml_documents(name: &str, text: &str) -> Result<Documents, InputError> {
    // One parser over the whole stream, so error positions are in file lines. Empty
    // documents are skipped by the parser.
    let options = crate::yaml::manifest_options(text);
    let values = serde_saphyr::from_multiple_with_options::<Value>(text, options).map_err(|e| {
        let location = e.location();
        let at = |n: Option<u64>| n.and_then(|n| usize::try_from(n).ok()).unwrap_or(1);
        InputError::Syntax {
            path: name.to_string(),
            line: at(location.map(|l| l.line())),
            column: at(location.map(|l| l.column())),
            format: "YAML",
            message: crate::yaml::message(&e),
        }
    })?;
    let places = yaml_places(text);
    if places.len() != values.len() {
        // The two readings disagree on which documents are empty (an explicit
        // `!!null`, say): number the documents that hold something instead, without
        // a position.
        return Ok(values.into_iter().map(|v| (Place::default(), v)).collect());
    }
    Ok(places.into_iter().zip(values).collect())
}

/// The places of the documents of a YAML stream that hold something: their number
/// (from 1), where their value starts, and where the elements of a top-level `items`
/// start. The parser skips empty documents, but a message should name a document by
/// its place in the file, where `---` lines count every document.
fn yaml_places(text: &str) -> Vec<Place> {
    use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

    /// An open mapping or sequence: how many nodes it holds so far, the last key
    /// (mappings), and whether it is the root mapping's `items` list.
    struct Frame {
        mapping: bool,
        nodes: usize,
        key: Option<String>,
        items: bool,
    }

    let mut places = Vec::new();
    let mut document = 0;
    let mut stack: Vec<Frame> = Vec::new();
    // Whether the next node is a document's root.
    let mut at_root = false;
    for (event, span) in Parser::new_from_str(text).map_while(Result::ok) {
        let at = (span.start.line(), span.start.col() + 1);
        let (is_node, opens) = match &event {
            Event::DocumentStart(..) => {
                document += 1;
                at_root = true;
                stack.clear();
                continue;
            }
            Event::Scalar(..) | Event::Alias(..) | Event::UnresolvedAlias(..) => (true, None),
            Event::MappingStart(..) => (true, Some(true)),
            Event::SequenceStart(..) => (true, Some(false)),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                continue;
            }
            _ => continue,
        };
        if !is_node {
            continue;
        }
        if std::mem::replace(&mut at_root, false) {
            let empty = matches!(
                &event,
                Event::Scalar(value, ScalarStyle::Plain, _, None)
                    if matches!(value.as_ref(), "" | "~" | "null" | "Null" | "NULL")
            );
            if !empty {
                places.push(Place {
                    number: Some(document),
                    at,
                    items: Vec::new(),
                });
            }
            if let Some(mapping) = opens {
                stack.push(Frame {
                    mapping,
                    nodes: 0,
                    key: None,
                    items: false,
                });
            }
            continue;
        }
        let depth = stack.len();
        let Some(parent) = stack.last_mut() else {
            continue;
        };
        let is_key = parent.mapping && parent.nodes % 2 == 0;
        let is_items_list = depth == 1
            && parent.mapping
            && !is_key
            && parent.key.as_deref() == Some("items")
            && opens == Some(false);
        if parent.items
            && let Some(place) = places.last_mut()
        {
            place.items.push(at);
        }
        if is_key {
            parent.key = match &event {
                Event::Scalar(value, ..) => Some(value.to_string()),
                _ => None,
            };
        }
        parent.nodes += 1;
        if let Some(mapping) = opens {
            stack.push(Frame {
                mapping,
                nodes: 0,
                key: None,
                items: is_items_list,
            });
        }
    }
    places
}

/// Adds `value` to `out`, or its items when it is a `List` (`kind: List`, or a typed
/// list such as `DeploymentList`, whose items may omit apiVersion and kind).
fn unpack(
    origin: Origin,
    items_at: &[(usize, usize)],
    value: Value,
    out: &mut Vec<Manifest>,
) -> Result<(), InputError> {
    let not_an_object = |problem: String| InputError::NotAnObject {
        origin: origin.clone(),
        problem,
    };
    let Value::Object(mut object) = value else {
        return Err(not_an_object(format!(
            "expected a mapping with apiVersion and kind, found {}",
            json_type(&value)
        )));
    };
    let text = |object: &Map<String, Value>, key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let api_version =
        text(&object, "apiVersion").ok_or_else(|| not_an_object("no apiVersion".into()))?;
    let kind = text(&object, "kind").ok_or_else(|| not_an_object("no kind".into()))?;

    let is_list = kind == "List" || (kind.ends_with("List") && object.contains_key("items"));
    if !is_list {
        integral_floats_to_integers(&mut object);
        check_counts(&api_version, &kind, &object).map_err(|(path, problem)| {
            InputError::Field {
                origin: origin.clone(),
                path,
                problem,
            }
        })?;
        out.push(Manifest { origin, object });
        return Ok(());
    }
    let items = match object.remove("items") {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => Vec::new(),
        Some(other) => {
            return Err(not_an_object(format!(
                "{kind}.items must be a list, found {}",
                json_type(&other)
            )));
        }
    };
    let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
    for (index, mut item) in items.into_iter().enumerate() {
        // Typed lists (DeploymentList) leave apiVersion and kind off their items.
        if let (Value::Object(fields), Some(item_kind)) = (&mut item, item_kind) {
            fields
                .entry("apiVersion")
                .or_insert_with(|| Value::String(api_version.clone()));
            fields
                .entry("kind")
                .or_insert_with(|| Value::String(item_kind.to_string()));
        }
        let (line, column) = items_at
            .get(index)
            .copied()
            .unwrap_or((origin.line, origin.column));
        let item_origin = Origin {
            item: Some(index),
            line,
            column,
            ..origin.clone()
        };
        // A list inside a list's items is unusual: its items get its position.
        unpack(item_origin, &[], item, out)?;
    }
    Ok(())
}

/// `40.0` becomes `40`, as kubectl sends it: YAML and JSON have no integer type of
/// their own, and Kubernetes' unstructured decoding turns integral floats into integers.
fn integral_floats_to_integers(object: &mut Map<String, Value>) {
    fn walk(value: &mut Value) {
        match value {
            Value::Number(n) if !n.is_i64() && !n.is_u64() => {
                if let Some(f) = n.as_f64()
                    && f.fract() == 0.0
                    && f.abs() < 9_007_199_254_740_992.0
                {
                    // Exact: |f| < 2^53 is an integer a double holds exactly.
                    *value = Value::from(f as i64);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Object(fields) => fields.values_mut().for_each(walk),
            _ => {}
        }
    }
    object.values_mut().for_each(walk);
}

/// The fields a built-in kind's pod count is read from must be int32s, as the API
/// server requires: `500.5` or `"500"` is refused here with its path instead of being
/// counted as something else.
fn check_counts(
    api_version: &str,
    kind: &str,
    object: &Map<String, Value>,
) -> Result<(), (String, String)> {
    use crate::kinds::Reach;
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let pointers: &[&str] = match crate::kinds::find(group, kind).map(|k| k.reach) {
        Some(Reach::Replicas) => &["/spec/replicas"],
        Some(Reach::Job) => &["/spec/parallelism"],
        Some(Reach::Cronjob) => &["/spec/jobTemplate/spec/parallelism"],
        Some(Reach::Autoscaler) => &["/spec/minReplicas", "/spec/maxReplicas"],
        _ => &[],
    };
    let whole = Value::Object(object.clone());
    for pointer in pointers {
        if let Some(v) = whole.pointer(pointer).filter(|v| !v.is_null())
            && v.as_u64().is_none_or(|n| n > i32::MAX as u64)
        {
            return Err((
                pointer.trim_start_matches('/').replace('/', "."),
                format!("{v} is not a replica count: it must be an integer from 0 to 2147483647"),
            ));
        }
    }
    Ok(())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(manifests: &[Manifest]) -> Vec<(String, usize, Option<usize>)> {
        manifests
            .iter()
            .map(|m| {
                (
                    m.object["kind"].as_str().unwrap_or_default().to_string(),
                    m.origin.document,
                    m.origin.item,
                )
            })
            .collect()
    }

    #[test]
    fn yaml_stream_with_empty_documents_and_a_list() {
        let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# only a comment\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s}\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d}\n---\n";
        let got = parse("m.yaml", text, false).expect("parses");
        assert_eq!(
            kinds(&got),
            vec![
                ("ConfigMap".to_string(), 1, None),
                ("Secret".to_string(), 3, Some(0)),
                ("Deployment".to_string(), 3, Some(1)),
            ]
        );
    }

    fn places(manifests: &[Manifest]) -> Vec<(usize, usize)> {
        manifests
            .iter()
            .map(|m| (m.origin.line, m.origin.column))
            .collect()
    }

    #[test]
    fn objects_know_the_line_and_column_they_start_at() {
        // Comments, an empty document and a List: each object where its first key is.
        let yaml = "# header\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# nothing\n---\n\n  apiVersion: v1\n  kind: List\n  items:\n  - apiVersion: v1\n    kind: Secret\n    metadata: {name: s}\n  -   apiVersion: v1\n      kind: Secret\n      metadata: {name: t}\n";
        let got = parse("m.yaml", yaml, false).expect("parses");
        assert_eq!(places(&got), vec![(3, 1), (13, 5), (16, 7)]);
        assert_eq!(
            got[1].origin.to_string(),
            "m.yaml:13:5 (document 3, item 0)"
        );

        let json = "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\"}\n\n  {\"apiVersion\": \"v1\", \"kind\": \"List\",\n   \"items\": [{\"apiVersion\":\"v1\",\"kind\":\"Secret\"},\n     {\"apiVersion\":\"v1\",\"kind\":\"Secret\"}]}\n";
        let got = parse("m.json", json, true).expect("parses");
        assert_eq!(places(&got), vec![(1, 1), (4, 14), (5, 6)]);
        // Multi-byte characters count as one column.
        let got = parse(
            "u.json",
            "{\"a\":\"é\"} {\"apiVersion\":\"v1\",\"kind\":\"Secret\"}",
            true,
        );
        let got = got.unwrap_err().to_string();
        assert!(got.starts_with("u.json:1:1 (document 1)"), "{got}");
    }

    #[test]
    fn typed_list_items_get_apiversion_and_kind() {
        let text = r#"{"apiVersion":"apps/v1","kind":"DeploymentList","items":[{"metadata":{"name":"a"}}]}"#;
        let got = parse("l.json", text, true).expect("parses");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].object["kind"], "Deployment");
        assert_eq!(got[0].object["apiVersion"], "apps/v1");
    }

    #[test]
    fn json_stream_of_several_values() {
        let text = "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\"}\n{\"apiVersion\":\"v1\",\"kind\":\"Secret\"}\n";
        let got = parse("<stdin>", text, false).expect("parses");
        assert_eq!(
            kinds(&got),
            vec![
                ("ConfigMap".to_string(), 1, None),
                ("Secret".to_string(), 2, None)
            ]
        );
    }

    #[test]
    fn yaml_flow_mapping_is_not_taken_for_json() {
        let got = parse("f.yaml", "{apiVersion: v1, kind: ConfigMap}\n", false).expect("parses");
        assert_eq!(kinds(&got), vec![("ConfigMap".to_string(), 1, None)]);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let cases = [
            // The bad line is in the second document: the line counts from the file.
            (
                "apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: [Secret\nmetadata: {}\n",
                false,
                "YAML",
                5,
            ),
            ("{\"apiVersion\": \"v1\",\n \"kind\": }\n", true, "JSON", 2),
        ];
        for (text, json, format, line) in cases {
            match parse("bad.yaml", text, json) {
                Err(InputError::Syntax {
                    path,
                    line: got,
                    format: f,
                    ..
                }) => {
                    assert_eq!((path.as_str(), f), ("bad.yaml", format), "{text}");
                    assert!(got >= line && got <= line + 1, "{text}: line {got}");
                }
                other => panic!("{text}: expected a syntax error, got {other:?}"),
            }
        }
    }

    #[test]
    fn replica_counts_are_read_as_kubectl_sends_them() {
        let doc = |replicas: &str| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: api}}\nspec: {{replicas: {replicas}}}\n"
            )
        };
        let read = |replicas: &str| parse("d.yaml", &doc(replicas), false);
        let ok = read("500.0").unwrap();
        assert_eq!(ok[0].object["spec"]["replicas"], serde_json::json!(500));
        assert!(ok[0].object["spec"]["replicas"].is_u64());
        // 2^64+5 does not even parse as a JSON number: a syntax error naming the field.
        let huge = read("18446744073709551621").unwrap_err().to_string();
        assert!(huge.contains("spec.replicas"), "{huge}");
        for bad in ["500.5", "\"500\"", "-1", "2147483648"] {
            match read(bad) {
                Err(e @ InputError::Field { .. }) => {
                    let text = e.to_string();
                    assert!(
                        text.starts_with("d.yaml:1:1 (document 1): spec.replicas: "),
                        "{text}"
                    );
                }
                other => panic!("replicas {bad}: {other:?}"),
            }
        }
        let hpa = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\nspec: {minReplicas: 1.5, maxReplicas: 3}\n";
        assert!(
            matches!(parse("h.yaml", hpa, false), Err(InputError::Field { path, .. }) if path == "spec.minReplicas")
        );
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {replicas: \"x\"}\n";
        assert!(
            parse("c.yaml", cm, false).is_ok(),
            "other kinds are not counted"
        );
    }

    #[test]
    fn reads_are_bounded() {
        // An endless source stops one byte past the limit.
        let endless = std::io::repeat(b'a');
        match read_bytes(endless, "<stdin>", 1024) {
            Err(InputError::TooLarge { path }) => assert_eq!(path, "<stdin>"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let exact = read_bytes(&[b'a'; 1024][..], "f", 1024).expect("at the limit is fine");
        assert_eq!(exact.len(), 1024);
    }

    #[test]
    fn documents_that_are_not_objects_are_errors() {
        let cases = [
            ("- a\n- b\n", "found a list"),
            ("kind: ConfigMap\n", "no apiVersion"),
            ("apiVersion: v1\nmetadata: {}\n", "no kind"),
            (
                "apiVersion: v1\nkind: List\nitems: 3\n",
                "items must be a list",
            ),
            ("apiVersion: v1\nkind: List\nitems: [7]\n", "found a number"),
        ];
        for (text, expected) in cases {
            match parse("x.yaml", text, false) {
                Err(e @ InputError::NotAnObject { .. }) => {
                    let message = e.to_string();
                    assert!(message.starts_with("x.yaml:"), "{message}");
                    assert!(message.contains(" (document 1"), "{message}");
                    assert!(message.contains(expected), "{text}: {message}");
                }
                other => panic!("{text}: expected NotAnObject, got {other:?}"),
            }
        }
    }
}
