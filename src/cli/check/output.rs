//! What `check` prints: a table for people (`-o text`), a JSON report for machines
//! (`-o json`, docs/kubectl-plugin.md), SARIF 2.1.0 for code scanning (`-o sarif`).

use std::fmt::Write as _;

use serde::Serialize;

use super::input::Origin;
use super::synth::{ObjectKey, Operation};
use crate::approval::{ApprovalOutcome, ApprovalPayload};
use crate::provenance::Signal;
use crate::verdict::{Decision, Reason, Verdict};

/// `apiVersion` of the JSON report.
pub const REPORT_API_VERSION: &str = "blastguard.io/v1";
/// `kind` of the JSON report.
pub const REPORT_KIND: &str = "CheckReport";

/// What happened to one object.
#[derive(Debug)]
pub struct Outcome {
    /// Where it was read from.
    pub origin: Origin,
    /// Its identity.
    pub key: ObjectKey,
    /// What was done to it.
    pub operation: Operation,
    /// The engine's judgement, or `None` when skipped (see `skip`).
    pub evaluation: Option<Evaluation>,
    /// Why it was not judged, when `evaluation` is `None`.
    pub skip: Skip,
}

/// Why an object was not judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its kind is neither built in nor defined by a CustomResourceDefinition in the
    /// input: no request can be built for it.
    UnknownKind,
    /// The chart's webhook rules do not name its kind (not in `kinds.yaml` nor the
    /// policy's `spec.workloads`): the API server never sends it, so it changes no
    /// verdict in the cluster and must not count toward reach here.
    NotSent,
}

impl Skip {
    /// The `reason` of a skipped entry in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::UnknownKind => "unknown_kind",
            Skip::NotSent => "not_sent",
        }
    }
}

/// Input that could not be judged: a file that cannot be read or parsed, a document
/// that is not an object, an object without a name, or no objects at all.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The file (or `<stdin>`, or the sources given when nothing was found).
    pub file: String,
    /// The line, from 1, when the problem has a place in the file.
    pub line: Option<usize>,
    /// The column, from 1, when the problem has a place in the file.
    pub column: Option<usize>,
    /// What is wrong, with the file and place.
    pub message: String,
}

/// The engine's judgement of one object.
#[derive(Debug)]
pub struct Evaluation {
    /// The engine's verdict, as the webhook would give it.
    pub verdict: Verdict,
    /// The denial message of the AdmissionResponse (`status.message`), when denied.
    pub message: Option<String>,
    /// The warnings of the AdmissionResponse.
    pub warnings: Vec<String>,
}

impl Outcome {
    /// `allow`, `warn`, `deny`, or `skipped`.
    pub fn verdict_name(&self) -> &'static str {
        self.evaluation
            .as_ref()
            .map_or("skipped", |e| e.verdict.decision.as_str())
    }

    /// Whether the API server would reject this object.
    pub fn denied(&self) -> bool {
        self.evaluation
            .as_ref()
            .is_some_and(|e| e.verdict.decision == Decision::Deny)
    }

    fn object_label(&self) -> String {
        let k = &self.key;
        match &k.namespace {
            Some(ns) => format!("{} {ns}/{}", k.kind, k.name),
            None => format!("{} {}", k.kind, k.name),
        }
    }

    /// Why, in one line.
    fn why(&self) -> String {
        let Some(e) = &self.evaluation else {
            return match self.skip {
                Skip::UnknownKind => format!(
                    "unknown kind {}: not a built-in kind and no CustomResourceDefinition for it in the input; not evaluated",
                    api_version(&self.key)
                ),
                Skip::NotSent => format!(
                    "not sent to the webhook: the chart registers no rule for {} (not a kind blastguard judges nor one of the policy's spec.workloads); not evaluated",
                    api_version(&self.key)
                ),
            };
        };
        let first_line = |text: &str| {
            let line = text.lines().next().unwrap_or_default();
            line.strip_prefix("blastguard: ")
                .unwrap_or(line)
                .to_string()
        };
        let v = &e.verdict;
        match v.decision {
            Decision::Deny => first_line(e.message.as_deref().unwrap_or_default()),
            Decision::Warn => first_line(e.warnings.first().map_or("", String::as_str)),
            Decision::Allow => match v.reason {
                Reason::NotAiAssisted => "not AI-assisted".to_string(),
                Reason::NoMatchingRule => "no policy rule matches the namespace".to_string(),
                Reason::WithinLimits => "AI-assisted, within the limits".to_string(),
                Reason::Approved => match &v.findings.approval {
                    Some(ApprovalOutcome::Valid { signers }) => {
                        format!("over the limits, approved by {}", signers.join(", "))
                    }
                    _ => "over the limits, approved".to_string(),
                },
                Reason::OverLimits => {
                    let limits: Vec<_> = v
                        .findings
                        .violations
                        .iter()
                        .map(|x| x.limit_name())
                        .collect();
                    format!("over the limits (audit mode): {}", limits.join(", "))
                }
                Reason::Unmeasurable => {
                    "cannot be measured (audit mode): a pod count could not be read".to_string()
                }
                // check reads no cluster, so this only comes from a server's state.
                Reason::ClusterUnavailable => {
                    "AI-assisted, cluster state unreadable (audit mode)".to_string()
                }
                Reason::ChangeSetCapped => {
                    "AI-assisted, change-set records at their cap (audit mode)".to_string()
                }
            },
        }
    }
}

fn api_version(key: &ObjectKey) -> String {
    if key.group.is_empty() {
        format!("{}/{}", key.version, key.kind)
    } else {
        format!("{}/{}/{}", key.group, key.version, key.kind)
    }
}

/// The value a signal matched on.
fn signal_value(signal: &Signal) -> &str {
    match signal {
        Signal::Annotation { value, .. } | Signal::StickyAnnotation { value, .. } => value,
        Signal::User(v) | Signal::Group(v) | Signal::FieldManager(v) => v,
    }
}

/// Counts by verdict.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Objects read.
    pub total: usize,
    /// Admitted without warnings.
    pub allowed: usize,
    /// Admitted with warnings.
    pub warned: usize,
    /// Denied: these make `check` exit 1.
    pub denied: usize,
    /// Not evaluated (unknown kind, or not sent to the webhook).
    pub skipped: usize,
    /// Inputs that could not be judged (listed in `errors`).
    pub errors: usize,
}

impl Summary {
    /// The counts over `outcomes`.
    pub fn of(outcomes: &[Outcome], problems: &[Problem]) -> Self {
        let mut s = Summary {
            total: outcomes.len(),
            errors: problems.len(),
            ..Summary::default()
        };
        for o in outcomes {
            match o.verdict_name() {
                "allow" => s.allowed += 1,
                "warn" => s.warned += 1,
                "deny" => s.denied += 1,
                _ => s.skipped += 1,
            }
        }
        s
    }
}

/// How the table is drawn.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// ANSI colors on the verdict.
    pub color: bool,
}

impl Style {
    fn paint(self, verdict: &str, padded: &str) -> String {
        let code = match verdict {
            "deny" => "1;31",
            "warn" => "33",
            "allow" => "32",
            _ => "2",
        };
        if self.color {
            format!("\x1b[{code}m{padded}\x1b[0m")
        } else {
            padded.to_string()
        }
    }
}

const HEADERS: [&str; 8] = [
    "OBJECT",
    "OP",
    "AI SIGNAL",
    "PODS",
    "REACH",
    "RULE",
    "VERDICT",
    "WHY",
];
const VERDICT_COLUMN: usize = 6;

fn row(o: &Outcome) -> [String; 8] {
    let dash = || "-".to_string();
    let e = o.evaluation.as_ref();
    let findings = e.map(|e| &e.verdict.findings);
    let signal = findings
        .and_then(|f| f.signal.as_ref())
        .map_or_else(dash, |s| format!("{}: {}", s.kind(), signal_value(s)));
    let radius = findings.and_then(|f| f.radius.as_ref());
    let pods = radius.map_or_else(dash, |r| match r.percent_affected {
        Some(p) => format!("{} ({p:.0}%)", r.pods_affected),
        None => r.pods_affected.to_string(),
    });
    let namespace = o.key.namespace.as_deref();
    let reach = match (radius, namespace) {
        _ if e.is_none() => dash(),
        (Some(r), _) if r.cluster_scoped => "cluster".to_string(),
        (Some(r), Some(ns)) if r.node_wide => format!("{ns}, every node"),
        (Some(r), Some(ns)) => match r.namespaces_in_change_set {
            Some(n) if n > 1 => format!("{ns} ({n} namespaces in change set)"),
            _ => ns.to_string(),
        },
        (_, Some(ns)) => ns.to_string(),
        (_, None) => "cluster".to_string(),
    };
    let rule = findings
        .and_then(|f| f.rule.as_ref())
        .map_or_else(dash, |(name, _)| name.clone());
    [
        o.object_label(),
        o.operation.as_str().to_string(),
        signal,
        pods,
        reach,
        rule,
        o.verdict_name().to_string(),
        o.why(),
    ]
}

/// The table, the full message of every denial and warning, and a summary line that
/// counts the `problems` too.
pub fn text(outcomes: &[Outcome], problems: &[Problem], style: Style) -> String {
    let rows: Vec<[String; 8]> = outcomes.iter().map(row).collect();
    let mut widths = HEADERS.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String; 8], verdict: Option<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == cells.len() - 1 {
                text.push_str(cell);
                break;
            }
            let padded = format!("{cell:<width$}  ", width = widths[i]);
            match verdict {
                Some(v) if i == VERDICT_COLUMN => text.push_str(&style.paint(v, &padded)),
                _ => text.push_str(&padded),
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&HEADERS.map(String::from), None);
    for (r, o) in rows.iter().zip(outcomes) {
        line(r, Some(o.verdict_name()));
    }
    for o in outcomes {
        let Some(e) = &o.evaluation else { continue };
        let details = match (&e.message, e.warnings.is_empty()) {
            (Some(message), _) => message.clone(),
            (None, false) => e.warnings.join("\n"),
            (None, true) => continue,
        };
        let _ = write!(
            out,
            "\n{} {}, from {}:\n{details}\n",
            o.verdict_name(),
            o.object_label(),
            o.origin
        );
    }
    let s = Summary::of(outcomes, problems);
    let _ = write!(
        out,
        "\n{} object(s): {} denied, {} warned, {} allowed, {} skipped",
        s.total, s.denied, s.warned, s.allowed, s.skipped
    );
    if s.errors > 0 {
        // The problems themselves are on stderr, where they always were.
        let _ = write!(
            out,
            "; {} input(s) could not be checked (see stderr)",
            s.errors
        );
    }
    out.push('\n');
    out
}

/// The JSON report (`-o json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report<'a> {
    /// [`REPORT_API_VERSION`].
    pub api_version: &'static str,
    /// [`REPORT_KIND`].
    pub kind: &'static str,
    /// Counts by verdict.
    pub summary: Summary,
    /// One entry per object, in input order.
    pub results: Vec<ReportResult<'a>>,
    /// Inputs that could not be judged; any makes the exit code 2.
    pub errors: &'a [Problem],
    /// The policy that judged (each result names its rule).
    pub policy: &'a ReportPolicy,
}

/// `policy` of the JSON report: which policy judged.
#[derive(Debug, Serialize)]
pub struct ReportPolicy {
    /// `embedded default`, `file PATH` or `cluster ConfigMap NAMESPACE/NAME`.
    pub source: String,
    /// The policy's `metadata.name`.
    pub name: String,
}

impl ReportPolicy {
    /// The text report's line: `cluster ConfigMap blastguard/blastguard-policy (blastguard)`.
    pub fn describe(&self) -> String {
        if self.name.is_empty() {
            self.source.clone()
        } else {
            format!("{} (metadata.name {})", self.source, self.name)
        }
    }
}

/// One object in the JSON report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportResult<'a> {
    /// Where the object was read from.
    pub source: ReportSource<'a>,
    /// The object.
    pub object: ReportObject<'a>,
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: &'static str,
    /// `allow`, `warn`, `deny` or `skipped`.
    pub verdict: &'static str,
    /// Why: `not_ai_assisted`, `no_matching_rule`, `within_limits`, `approved`,
    /// `over_limits`, `unmeasurable`, or `unknown_kind` or `not_sent` (skipped).
    pub reason: &'static str,
    /// The AI signal, if any.
    pub ai_signal: Option<ReportSignal>,
    /// The matched rule.
    pub rule: Option<ReportRule<'a>>,
    /// How far the change reaches (measured for AI-assisted changes only).
    pub radius: Option<ReportRadius>,
    /// Limits exceeded.
    pub violations: Vec<ReportViolation>,
    /// The approval verifier's answer (asked only when over a limit).
    pub approval: Option<ReportApproval<'a>>,
    /// The full denial message, exactly as the webhook would send it.
    pub message: Option<&'a str>,
    /// The warnings, exactly as the webhook would send them.
    pub warnings: &'a [String],
    /// The approval payload that would lift the limits (when denied or warned over
    /// a limit). Its digest is over the object as `check` built it; sign the one a
    /// server-side dry run prints when defaulting or mutation changes the object.
    pub approval_payload: Option<&'a ApprovalPayload>,
    /// The digest the change is bound to.
    pub digest: Option<&'a str>,
    /// Why the object was skipped.
    pub skip_reason: Option<String>,
}

/// `source` of a report entry.
#[derive(Debug, Serialize)]
pub struct ReportSource<'a> {
    /// File, or `<stdin>`.
    pub file: &'a str,
    /// Document in the file, from 1.
    pub document: usize,
    /// Index in a List's items, from 0.
    pub item: Option<usize>,
    /// The line the object starts on, from 1 (`null` when not known).
    pub line: Option<usize>,
    /// The column the object starts at, from 1, in characters.
    pub column: Option<usize>,
}

/// `object` of a report entry.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportObject<'a> {
    /// `group/version` or `version`.
    pub api_version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: &'a str,
    /// Namespace; `null` when cluster-scoped or the kind is unknown.
    pub namespace: Option<&'a str>,
    /// Name (the generateName prefix when the name is generated).
    pub name: &'a str,
}

/// `aiSignal` of a report entry.
#[derive(Debug, Serialize)]
pub struct ReportSignal {
    /// `annotation`, `sticky-annotation`, `user`, `group` or `field-manager`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The annotation value, user, group or field manager that matched.
    pub value: String,
    /// The signal in words.
    pub description: String,
}

/// `rule` of a report entry.
#[derive(Debug, Serialize)]
pub struct ReportRule<'a> {
    /// Rule name.
    pub name: &'a str,
    /// `enforce`, `warn` or `audit`.
    pub mode: &'static str,
}

/// `radius` of a report entry.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportRadius {
    /// Pods created, replaced or removed.
    pub pods_affected: u64,
    /// Of the old replica count; `null` on CREATE.
    pub percent_affected: Option<f64>,
    /// Replica count after the change.
    pub resulting_replicas: Option<u64>,
    /// Cluster-scoped object or Namespace.
    pub cluster_scoped: bool,
    /// DaemonSet.
    pub node_wide: bool,
    /// Distinct namespaces of the change set so far, this object included.
    pub namespaces_in_change_set: Option<u64>,
}

/// One entry of `violations`.
#[derive(Debug, Serialize)]
pub struct ReportViolation {
    /// The policy limit, e.g. `maxPodsAffected`.
    pub limit: &'static str,
    /// Measured against the limit, in words.
    pub description: String,
}

/// `approval` of a report entry.
#[derive(Debug, Serialize)]
pub struct ReportApproval<'a> {
    /// `missing`, `valid`, or why it was rejected (e.g. `expired`).
    pub result: &'static str,
    /// The distinct principals that signed a valid approval.
    pub signers: &'a [String],
    /// What is wrong with a rejected approval.
    pub detail: Option<&'a str>,
}

/// Builds the JSON report.
pub fn report<'a>(
    outcomes: &'a [Outcome],
    problems: &'a [Problem],
    policy: &'a ReportPolicy,
) -> Report<'a> {
    Report {
        api_version: REPORT_API_VERSION,
        kind: REPORT_KIND,
        summary: Summary::of(outcomes, problems),
        results: outcomes.iter().map(report_result).collect(),
        errors: problems,
        policy,
    }
}

fn report_result(o: &Outcome) -> ReportResult<'_> {
    let k = &o.key;
    let source = ReportSource {
        file: &o.origin.file,
        document: o.origin.document,
        item: o.origin.item,
        line: (o.origin.line > 0).then_some(o.origin.line),
        column: (o.origin.line > 0).then_some(o.origin.column),
    };
    let object = ReportObject {
        api_version: if k.group.is_empty() {
            k.version.clone()
        } else {
            format!("{}/{}", k.group, k.version)
        },
        kind: &k.kind,
        namespace: k.namespace.as_deref(),
        name: &k.name,
    };
    let Some(e) = &o.evaluation else {
        return ReportResult {
            source,
            object,
            operation: o.operation.as_str(),
            verdict: "skipped",
            reason: o.skip.as_str(),
            ai_signal: None,
            rule: None,
            radius: None,
            violations: Vec::new(),
            approval: None,
            message: None,
            warnings: &[],
            approval_payload: None,
            digest: None,
            skip_reason: Some(o.why()),
        };
    };
    let v = &e.verdict;
    let f = &v.findings;
    ReportResult {
        source,
        object,
        operation: o.operation.as_str(),
        verdict: v.decision.as_str(),
        reason: v.reason.as_str(),
        ai_signal: f.signal.as_ref().map(|s| ReportSignal {
            kind: s.kind(),
            value: signal_value(s).to_string(),
            description: s.to_string(),
        }),
        rule: f.rule.as_ref().map(|(name, mode)| ReportRule {
            name,
            mode: mode.as_str(),
        }),
        radius: f.radius.as_ref().map(|r| ReportRadius {
            pods_affected: r.pods_affected,
            percent_affected: r.percent_affected,
            resulting_replicas: r.resulting_replicas,
            cluster_scoped: r.cluster_scoped,
            node_wide: r.node_wide,
            namespaces_in_change_set: r.namespaces_in_change_set,
        }),
        violations: f
            .violations
            .iter()
            .map(|x| ReportViolation {
                limit: x.limit_name(),
                description: x.to_string(),
            })
            .collect(),
        approval: f.approval.as_ref().map(|a| ReportApproval {
            result: a.metric_label(),
            signers: match a {
                ApprovalOutcome::Valid { signers } => signers,
                _ => &[],
            },
            detail: match a {
                ApprovalOutcome::Rejected { detail, .. } => Some(detail),
                _ => None,
            },
        }),
        message: e.message.as_deref(),
        warnings: &e.warnings,
        approval_payload: v.payload.as_ref(),
        digest: v.digest.as_deref(),
        skip_reason: None,
    }
}

/// `$schema` of the SARIF log: the OASIS schema of version 2.1.0.
pub const SARIF_SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// The `ruleId` of input that could not be checked.
pub const SARIF_INPUT_RULE: &str = "invalidInput";

/// The SARIF 2.1.0 log (`-o sarif`) for GitHub code scanning: one result per denied
/// (`error`) or warned (`warning`) object, at the line and column it starts at, and one
/// `error` per input that could not be checked. Allowed and skipped objects have none:
/// code scanning shows problems, and the JSON report has the rest.
pub fn sarif(outcomes: &[Outcome], problems: &[Problem]) -> serde_json::Value {
    use serde_json::{Value, json};

    let mut rules: Vec<(String, String)> = Vec::new();
    let mut rule_index = |id: &str, description: &str| {
        rules.iter().position(|(r, _)| r == id).unwrap_or_else(|| {
            rules.push((id.to_string(), description.to_string()));
            rules.len() - 1
        })
    };
    let mut results = Vec::new();
    for o in outcomes {
        let Some(e) = &o.evaluation else { continue };
        let level = match e.verdict.decision {
            Decision::Deny => "error",
            Decision::Warn => "warning",
            Decision::Allow => continue,
        };
        // The limit exceeded names the rule (what a reviewer looks up in the policy);
        // without one (e.g. a pod count that cannot be read), the reason does.
        let (id, description) = match e.verdict.findings.violations.first() {
            Some(v) => (v.limit_name(), rule_description(v.limit_name())),
            None => (
                e.verdict.reason.as_str(),
                "blastguard would not admit this change as it is",
            ),
        };
        let index = rule_index(id, description);
        let text = match (&e.message, e.warnings.is_empty()) {
            (Some(message), _) => message.clone(),
            (None, false) => e.warnings.join("\n"),
            (None, true) => o.why(),
        };
        results.push(json!({
            "ruleId": id,
            "ruleIndex": index,
            "level": level,
            "message": {"text": format!("{}: {text}", o.object_label())},
            "locations": [location(&o.origin.file, o.origin.line, o.origin.column)],
        }));
    }
    for p in problems {
        let index = rule_index(
            SARIF_INPUT_RULE,
            "input that blastguard check could not read or judge",
        );
        results.push(json!({
            "ruleId": SARIF_INPUT_RULE,
            "ruleIndex": index,
            "level": "error",
            "message": {"text": p.message},
            "locations": [location(&p.file, p.line.unwrap_or(0), p.column.unwrap_or(0))],
        }));
    }
    let rules: Vec<Value> = rules
        .into_iter()
        .map(|(id, description)| {
            json!({
                "id": id,
                "shortDescription": {"text": description},
            })
        })
        .collect();
    json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "blastguard",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            // Columns count characters, as the text and JSON outputs do.
            "columnKind": "unicodeCodePoints",
            "invocations": [{"executionSuccessful": problems.is_empty()}],
            "results": results,
        }]
    })
}

fn rule_description(limit: &str) -> &'static str {
    match limit {
        "maxPodsAffected" => "an AI-assisted change affects more pods than the rule allows",
        "maxPercentAffected" => {
            "an AI-assisted change affects a larger share of the current pods than the rule allows"
        }
        "maxReplicas" => "an AI-assisted change results in more replicas than the rule allows",
        "maxNamespacesPerChange" => {
            "an AI-assisted change set reaches more namespaces than the rule allows"
        }
        "maxPodsPerChangeSet" => "an AI-assisted change set affects more pods than the rule allows",
        "stickyProvenance" => {
            "removing the AI marker from an object an AI marked takes an approval"
        }
        "allowClusterScoped" => "an AI-assisted change to a cluster-scoped object",
        "allowNodeWide" => "an AI-assisted change to a DaemonSet, which reaches every node",
        "unmeasurable" => "the reach of an AI-assisted change cannot be measured",
        _ => "a blast-radius limit of the policy",
    }
}

/// A SARIF location: the file as a relative URI reference (what code scanning maps
/// to the repository), and the region when the place is known.
fn location(file: &str, line: usize, column: usize) -> serde_json::Value {
    let mut physical = serde_json::json!({"artifactLocation": {"uri": file_uri(file)}});
    if line > 0 {
        physical["region"] = serde_json::json!({"startLine": line, "startColumn": column.max(1)});
    }
    serde_json::json!({ "physicalLocation": physical })
}

/// A path as a URI reference: relative paths stay relative (without `./`), absolute
/// ones become `file://` URIs, and characters a URI cannot hold are percent-encoded.
fn file_uri(path: &str) -> String {
    let path = path.strip_prefix("./").unwrap_or(path);
    let mut out = String::with_capacity(path.len());
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for b in path.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'/'
            | b'+'
            | b'='
            | b'@' => out.push(b as char),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris_are_uri_references() {
        assert_eq!(file_uri("./k8s/deploy.yaml"), "k8s/deploy.yaml");
        assert_eq!(file_uri("/tmp/a b.yaml"), "file:///tmp/a%20b.yaml");
        assert_eq!(file_uri("<stdin>"), "%3Cstdin%3E");
    }
}
