//! `blastguard digest` and `blastguard approve`: the approver's commands.
//!
//! Both read one object (a manifest, `kubectl get -o json` output, or an
//! AdmissionReview) and build the payload the webhook will ask for; `approve` signs
//! it with an SSH key file or through ssh-agent. When the object already carries an
//! approval, `approve` signs that exact payload and appends its signature, so
//! approvers can sign one after the other.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::EXIT_BAD_INPUT;
use crate::annotations::{APPROVAL, APPROVAL_SIGNATURE};
use crate::approval::allowed_signers::{AllowedSigners, KeyTrust, fingerprint};
use crate::approval::payload::{SIGNATURE_NAMESPACE, rfc3339};
use crate::approval::verifier::binds_to;
use crate::approval::{
    ApprovalOperation, ApprovalPayload, ApprovalSubject, signing, sshsig, summary,
};
use crate::change::{Change, Target};
use crate::defaults;
use crate::policy::Policy;

/// `--operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OperationArg {
    /// Create or update the object with exactly this spec.
    Apply,
    /// Delete the object (approval on the object before it is deleted).
    Delete,
    /// Scale the workload to exactly --replicas.
    Scale,
}

impl From<OperationArg> for ApprovalOperation {
    fn from(op: OperationArg) -> Self {
        match op {
            OperationArg::Apply => ApprovalOperation::Apply,
            OperationArg::Delete => ApprovalOperation::Delete,
            OperationArg::Scale => ApprovalOperation::Scale,
        }
    }
}

/// What both commands read, and how the payload is built.
#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    /// The object: a manifest (YAML or JSON), `kubectl get -o json` output, or an
    /// AdmissionReview; `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Read FILE as an AdmissionReview (as the webhook receives it): the payload is
    /// exactly the one the webhook asks for.
    #[arg(long)]
    pub review: bool,
    /// What is approved (default: apply, or the operation of an approval already on
    /// the object).
    #[arg(long, value_enum)]
    pub operation: Option<OperationArg>,
    /// With --operation scale: the exact replica count approved.
    #[arg(long, value_name = "N")]
    pub replicas: Option<u64>,
    /// The object's namespace when the manifest does not say.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The object is cluster-scoped (a manifest without a namespace is otherwise an
    /// error).
    #[arg(long, conflicts_with = "namespace")]
    pub cluster_scoped: bool,
    /// How long the approval is valid, from now (at most the policy's maxTTL).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub ttl: Option<Duration>,
    /// Why the change is approved (kept in the payload, for the audit trail).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Approve a `kubectl rollout restart` made exact: set the pod template's
    /// `kubectl.kubernetes.io/restartedAt` annotation (what rollout restart writes) to
    /// TIME (RFC 3339; default now) before digesting, so the approval binds one
    /// restart. With --annotate the object is written with it; the requester then
    /// applies that file (`kubectl replace -f FILE`) instead of running rollout
    /// restart, whose new timestamp no one could approve in advance.
    #[arg(long, value_name = "TIME", num_args = 0..=1, default_missing_value = "now")]
    pub restart: Option<String>,
    /// Policy file, for its maxTTL (default: the embedded policy).
    #[arg(long, env = "BLASTGUARD_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

impl ChangeArgs {
    /// FILE (`-f`); clap requires it wherever it is the input, so `-` (standard
    /// input) is only what an empty value would mean.
    pub fn file(&self) -> &Path {
        self.file.as_deref().unwrap_or(Path::new("-"))
    }
}

/// Arguments of `blastguard digest`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").args(["file"]).required(true)))]
#[command(after_help = "Examples:\n  \
    kubectl get deployment api -n prod -o json | blastguard digest -f -\n  \
    blastguard digest -f deploy.yaml --operation scale --replicas 40\n  \
    blastguard digest --review -f review.json")]
pub struct DigestArgs {
    /// What to build the payload for.
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// Arguments of `blastguard approve`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    blastguard approve -f deploy.yaml --payload payload.json --key ~/.ssh/id_ed25519 --annotate\n  \
    blastguard approve -f deploy.yaml --key ~/.ssh/id_ed25519 --reason 'CHG-1234' --annotate\n  \
    blastguard approve -f deploy.yaml --agent --key ~/.ssh/id_ed25519.pub --annotate\n  \
    blastguard approve -f payload.json --key ~/.ssh/id_ed25519\n  \
    blastguard approve -f deploy.yaml --payload payload.json --signature payload.json.sig --annotate\n  \
    helm template ./chart > render.yaml && blastguard approve -f render.yaml --agent --annotate\n\n\
    A second approver runs the same command on the annotated manifest: the payload is kept\n\
    and their signature is appended. A passphrase-protected key signs through ssh-agent\n\
    (--agent). A file of several objects (a kustomize or Helm render) is approved object\n\
    by object in one command; --payload then applies to the object it names.\n\n\
    In the inbox (kubectl blastguard pending), approve a waiting request by its name:\n  \
    kubectl blastguard approve deployment-prod-api-apply-0123456789abcdef --key ~/.ssh/id_ed25519")]
#[command(group(clap::ArgGroup::new("input").args(["file", "request"]).required(true)))]
pub struct ApproveArgs {
    /// An `ApprovalRequest` of the inbox to approve (instead of -f FILE): its
    /// recorded object is checked against its payload's digest, then the payload is
    /// signed and the signature added to the request.
    #[arg(value_name = "NAME")]
    pub request: Option<String>,
    /// Where the inbox is (with NAME).
    #[command(flatten)]
    pub inbox: super::inbox::InboxCluster,
    /// What to approve. FILE may also be an approval payload (as printed in a denial
    /// or by `blastguard digest`): it is signed as it is.
    #[command(flatten)]
    pub change: ChangeArgs,
    /// The payload to sign (as printed in a denial of `kubectl apply --dry-run=server`),
    /// for the object in FILE; with --annotate it is written into FILE.
    #[arg(long, value_name = "PAYLOAD_FILE")]
    pub payload: Option<PathBuf>,
    /// Private key to sign with (OpenSSH format); with --agent, the key (public or
    /// private file) whose agent copy signs.
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// Sign through ssh-agent (SSH_AUTH_SOCK): the way to sign with a
    /// passphrase-protected key.
    #[arg(long)]
    pub agent: bool,
    /// Attach a signature made elsewhere (`ssh-keygen -Y sign -n approval@blastguard.io
    /// -f KEY payload.json` writes payload.json.sig) instead of signing; it must verify
    /// over the payload. May be repeated.
    #[arg(long, value_name = "SIG_FILE", conflicts_with_all = ["key", "agent"])]
    pub signature: Vec<PathBuf>,
    /// Write the approval annotations into FILE (standard output for `-`) instead of
    /// printing them.
    #[arg(long)]
    pub annotate: bool,
    /// allowed_signers file to check the signing key against (overrides the
    /// policy's path).
    #[arg(long, env = "BLASTGUARD_ALLOWED_SIGNERS", value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
}

/// Runs `digest`.
pub fn run_digest(args: DigestArgs) -> ExitCode {
    match digest(&args.change, SystemTime::now()) {
        Ok(prepared) => {
            println!("{}", prepared.payload_text);
            for note in &prepared.notes {
                eprintln!("note: {note}");
            }
            eprintln!(
                "Sign with: blastguard approve -f {file} --key ~/.ssh/id_ed25519 \
                 (passphrase-protected key: --agent --key ~/.ssh/id_ed25519.pub)\n\
                 (or save the line above as payload.json and run: ssh-keygen -Y sign -n {SIGNATURE_NAMESPACE} -f ~/.ssh/id_ed25519 payload.json, \
                 then: blastguard approve -f {file} --payload payload.json --signature payload.json.sig --annotate)",
                file = args.change.file().display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// Runs `approve`.
pub fn run_approve(args: ApproveArgs) -> ExitCode {
    if let Some(name) = &args.request {
        return super::inbox::run_approve(name, &args);
    }
    match approve(&args, SystemTime::now()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// What was read from FILE.
enum Input {
    /// A Kubernetes object, with the format it was written in.
    Object { object: Value, json: bool },
    /// An AdmissionReview, judged as the webhook would.
    Review(Box<Change>),
    /// An approval payload, exactly as written (less a trailing newline).
    Payload(String),
}

/// The payload to sign and where it came from.
struct Prepared {
    input: Input,
    payload_text: String,
    /// Signatures already on the object for this payload.
    existing_signatures: Option<String>,
    /// Things the approver should know.
    notes: Vec<String>,
}

fn digest(args: &ChangeArgs, now: SystemTime) -> Result<Prepared, String> {
    let prepared = prepare(args, None, Existing::ReplaceIfStale, now)?;
    if let Input::Payload(_) = prepared.input {
        return Err(format!(
            "{} is already an approval payload; sign it with blastguard approve",
            args.file().display()
        ));
    }
    Ok(prepared)
}

/// What to do with an approval already on the object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// Sign it again (a next approver); refuse when it no longer fits the object, so
    /// nobody's signature is dropped unnoticed.
    Extend,
    /// Show it when it still fits, else build a new payload (`digest` only reads).
    ReplaceIfStale,
}

/// Builds the payload to sign for FILE: the one in `given` (a payload file), else the
/// approval already on the object, else a new one.
fn prepare(
    args: &ChangeArgs,
    given: Option<&Path>,
    existing_mode: Existing,
    now: SystemTime,
) -> Result<Prepared, String> {
    let mut all = prepare_all(args, given, existing_mode, now)?;
    if all.len() != 1 {
        return Err(format!(
            "{} holds {} objects; digest one object at a time (blastguard approve takes them all)",
            args.file().display(),
            all.len()
        ));
    }
    Ok(all.remove(0))
}

/// [`prepare`] for every object of FILE: a kustomize or Helm render is one change of
/// several objects, each approved on its own payload.
fn prepare_all(
    args: &ChangeArgs,
    given: Option<&Path>,
    existing_mode: Existing,
    now: SystemTime,
) -> Result<Vec<Prepared>, String> {
    let text = read_input(args.file())?;
    let given = given
        .map(|path| {
            let text = read_input(path)?;
            let exact = strip_one_newline(&text).to_string();
            let payload =
                ApprovalPayload::parse(&exact).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok::<_, String>((exact, payload))
        })
        .transpose()?;
    let policy = policy_of(args)?;
    let max_ttl = policy.approvals.max_ttl;
    let ttl = match args.ttl {
        Some(ttl) if ttl > max_ttl => {
            return Err(format!(
                "--ttl {} is longer than the policy's maxTTL of {}: the webhook would refuse the approval",
                humantime::format_duration(ttl),
                humantime::format_duration(max_ttl)
            ));
        }
        Some(ttl) if ttl.is_zero() => return Err("--ttl must be longer than 0s".into()),
        // RFC 3339 ends at year 9999.
        Some(ttl) if now.checked_add(ttl).is_none_or(|end| end > latest_time()) => {
            return Err(format!(
                "--ttl {} ends after year 9999",
                humantime::format_duration(ttl)
            ));
        }
        Some(ttl) => ttl,
        None => policy.approvals.offered_ttl(),
    };
    let inputs = parse_inputs(&text, args)?;
    if inputs.len() == 1 {
        let input = inputs.into_iter().next().expect("one input");
        return Ok(vec![prepare_input(
            args,
            input,
            given.as_ref(),
            existing_mode,
            now,
            ttl,
            max_ttl,
        )?]);
    }
    // Several objects: the given payload belongs to the one it names.
    let mut given = given;
    let mut all = Vec::with_capacity(inputs.len());
    for input in inputs {
        let Input::Object { object, .. } = &input else {
            unreachable!("parse_inputs returns only objects for several documents")
        };
        let who = describe(object);
        let mine = given.take_if(|(_, p)| {
            object_subject(object, p.operation, args, p.replicas)
                .is_ok_and(|s| s.target == p.target)
        });
        let prepared = prepare_input(args, input, mine.as_ref(), existing_mode, now, ttl, max_ttl)
            .map_err(|e| format!("{who}: {e}"))?;
        all.push(prepared);
    }
    if let Some((_, p)) = given {
        return Err(format!(
            "the payload given with --payload approves {}, which is not in {}",
            p.target,
            args.file().display()
        ));
    }
    Ok(all)
}

/// `Kind namespace/name` of an object, for messages about one of several.
fn describe(object: &Value) -> String {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    let name = text("/metadata/name").unwrap_or("<no name>");
    match text("/metadata/namespace") {
        Some(ns) => format!("{} {ns}/{name}", text("/kind").unwrap_or("object")),
        None => format!("{} {name}", text("/kind").unwrap_or("object")),
    }
}

/// The payload to sign for one object of FILE.
fn prepare_input(
    args: &ChangeArgs,
    input: Input,
    given: Option<&(String, ApprovalPayload)>,
    existing_mode: Existing,
    now: SystemTime,
    ttl: Duration,
    max_ttl: Duration,
) -> Result<Prepared, String> {
    let mut notes = Vec::new();
    let (subject, annotations) = match &input {
        Input::Payload(_) if given.is_some() => {
            return Err("--payload needs FILE to be the object the payload approves".into());
        }
        Input::Payload(payload_text) => {
            if args.operation.is_some()
                || args.replicas.is_some()
                || args.ttl.is_some()
                || args.reason.is_some()
            {
                return Err(
                    "--operation, --replicas, --ttl and --reason do not apply to a payload file: it is signed as it is"
                        .into(),
                );
            }
            let payload = ApprovalPayload::parse(payload_text).map_err(|e| e.to_string())?;
            still_usable(&payload, now, max_ttl)?;
            return Ok(Prepared {
                payload_text: payload_text.clone(),
                input,
                existing_signatures: None,
                notes,
            });
        }
        Input::Review(change) => {
            if args.operation.is_some() || args.namespace.is_some() || args.cluster_scoped {
                return Err(
                    "--operation, --namespace and --cluster-scoped come from the AdmissionReview itself"
                        .into(),
                );
            }
            let mut subject = ApprovalSubject::of(change).map_err(|e| e.to_string())?;
            if let Some(replicas) = args.replicas {
                raise_replicas(&mut subject, replicas)?;
            }
            let annotations = change.approval_annotations().cloned();
            (subject, annotations.unwrap_or_default())
        }
        Input::Object { object, .. } => {
            let annotations = object_annotations(object);
            let existing_operation = annotations
                .get(APPROVAL)
                .and_then(|p| ApprovalPayload::parse(p).ok())
                .map(|p| p.operation);
            let operation = args
                .operation
                .map(ApprovalOperation::from)
                .or(given.as_ref().map(|(_, p)| p.operation))
                .or(existing_operation)
                .unwrap_or(ApprovalOperation::Apply);
            // The replica count a given scale payload names is the one to check.
            let given_replicas = given.and_then(|(_, p)| p.replicas);
            let subject = object_subject(object, operation, args, given_replicas)?;
            if operation == ApprovalOperation::Apply
                && !from_server(object)
                && given.is_none()
                && !annotations.contains_key(APPROVAL)
            {
                notes.push(format!(
                    "this digest is of the manifest with the API server's defaults applied; {}",
                    defaults::MUTATING_WEBHOOKS_NOTE
                ));
                notes.extend(
                    defaults::defaulted(object)
                        .1
                        .into_iter()
                        .map(|u| format!("the cluster's digest will differ: {u}")),
                );
            }
            (subject, annotations)
        }
    };
    let existing = annotations.get(APPROVAL).filter(|text| {
        // An approval for another operation than the one asked for is replaced, not
        // extended: one object carries one approval.
        match (args.operation, ApprovalPayload::parse(text)) {
            (Some(asked), Ok(p)) if ApprovalOperation::from(asked) != p.operation => {
                notes.push(format!(
                    "the object's approval is for operation {:?}; this new {:?} approval replaces it",
                    p.operation.as_str(),
                    ApprovalOperation::from(asked).as_str()
                ));
                false
            }
            _ => true,
        }
    });
    let chosen = match (&given, existing) {
        (Some((text, _)), Some(existing)) if text != existing => {
            return Err(format!(
                "{} already carries a different approval; remove its {APPROVAL} and {APPROVAL_SIGNATURE} \
                 annotations to start over with --payload",
                args.file().display()
            ));
        }
        (Some((text, _)), _) => Some((text.clone(), "the payload given with --payload")),
        (None, Some(existing)) => Some((existing.clone(), "the approval already on the object")),
        (None, None) => None,
    };
    if let Some((payload_text, what)) = chosen {
        let payload = ApprovalPayload::parse(&payload_text)
            .map_err(|e| format!("{what} is not usable: {e}"))?;
        // The digest is always the one of FILE (after the API server's defaults):
        // a payload is never taken at its word, or an approver shown one manifest
        // signs the digest of another (issue 22).
        let fits = binds_to(&subject, &payload)
            .map_err(|r| mismatch(what, args.file(), &subject, &payload, &r.detail, &input))
            .and_then(|()| still_usable(&payload, now, max_ttl));
        match fits {
            Err(e) if existing_mode == Existing::ReplaceIfStale && given.is_none() => {
                notes.push(format!(
                    "a new payload for {}, because {e}",
                    args.file().display()
                ));
                return Ok(Prepared {
                    payload_text: subject
                        .payload(now, ttl, args.reason.as_deref().unwrap_or_default())
                        .with_summary(summary_of(&input, &subject))
                        .to_json(),
                    input,
                    existing_signatures: None,
                    notes,
                });
            }
            fits => fits?,
        }
        if args.ttl.is_some() || args.reason.is_some() {
            notes.push(format!(
                "{what} is signed as it is: --ttl and --reason are ignored"
            ));
        }
        return Ok(Prepared {
            payload_text,
            existing_signatures: annotations.get(APPROVAL_SIGNATURE).cloned(),
            input,
            notes,
        });
    }
    let payload = subject
        .payload(now, ttl, args.reason.as_deref().unwrap_or_default())
        .with_summary(summary_of(&input, &subject));
    Ok(Prepared {
        payload_text: payload.to_json(),
        input,
        existing_signatures: None,
        notes,
    })
}

/// The summary line of a new payload: from the request for an AdmissionReview
/// (old and new object), from the object alone for a manifest (its state, not a diff:
/// the live object is not read here).
fn summary_of(input: &Input, subject: &ApprovalSubject) -> String {
    match input {
        Input::Review(change) => summary::of_change(change, None),
        Input::Object { object, .. } => {
            let object = defaults::defaulted(object).0;
            summary::describe(&summary::Facts {
                operation: subject.operation,
                old: (subject.operation == ApprovalOperation::Delete).then_some(&object),
                new: (subject.operation == ApprovalOperation::Apply).then_some(&object),
                replicas: (None, subject.replicas),
                pods: None,
                creating: false,
            })
        }
        Input::Payload(_) => String::new(),
    }
}

/// Why a payload is not the one FILE needs, naming both sides, so the approver sees
/// that they were about to sign a change other than the one they read.
fn mismatch(
    what: &str,
    file: &Path,
    subject: &ApprovalSubject,
    payload: &ApprovalPayload,
    detail: &str,
    input: &Input,
) -> String {
    let file = file.display();
    let mut message = if payload.operation != subject.operation || payload.target != subject.target
    {
        format!(
            "{what} approves {} {} (digest {}), but {file} is {} {} (digest {}): {detail}",
            payload.operation.as_str(),
            payload.target,
            payload.digest.as_deref().unwrap_or("none"),
            subject.operation.as_str(),
            subject.target,
            subject.digest.as_deref().unwrap_or("none"),
        )
    } else {
        match (&payload.digest, &subject.digest) {
            (Some(approved), Some(actual)) if approved != actual => format!(
                "{what} does not match {file}: it approves digest {approved}, but {file} has digest {actual}: \
                 the object was changed after it was approved, or the payload is for another object, \
                 and signing it would approve a change you have not seen"
            ),
            _ => format!("{what} does not match {file}: {detail}"),
        }
    };
    if let Input::Object { object, .. } = input
        && !from_server(object)
    {
        let unforeseeable = defaults::defaulted(object).1;
        message.push_str(&format!(
            " ({file} was digested with the API server's defaults applied; {}",
            defaults::MUTATING_WEBHOOKS_NOTE
        ));
        for u in unforeseeable {
            message.push_str(&format!("; {u}"));
        }
        message.push(')');
    }
    message.push_str(&format!(
        "; if {file} is what you mean to approve, remove its {APPROVAL} and {APPROVAL_SIGNATURE} \
         annotations (or drop --payload) and approve it anew"
    ));
    message
}

fn policy_of(args: &ChangeArgs) -> Result<Policy, String> {
    match &args.policy {
        Some(path) => Policy::from_file(path).map_err(|e| e.to_string()),
        None => Ok(Policy::embedded()),
    }
}

fn latest_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

/// A payload worth signing: not expired, and within the policy's maxTTL.
fn still_usable(
    payload: &ApprovalPayload,
    now: SystemTime,
    max_ttl: Duration,
) -> Result<(), String> {
    let (not_before, not_after) = payload.window().map_err(|e| e.to_string())?;
    if not_after <= now {
        return Err(format!(
            "the approval expired at {} (now is {}); start a new one",
            payload.not_after,
            rfc3339(now)
        ));
    }
    let ttl = not_after.duration_since(not_before).unwrap_or_default();
    if ttl > max_ttl {
        return Err(format!(
            "the approval is valid for {}, longer than the policy's maxTTL of {}: the webhook would refuse it",
            humantime::format_duration(ttl),
            humantime::format_duration(max_ttl)
        ));
    }
    Ok(())
}

fn raise_replicas(subject: &mut ApprovalSubject, replicas: u64) -> Result<(), String> {
    if subject.operation != ApprovalOperation::Scale {
        return Err("--replicas only applies to a scale approval".into());
    }
    if let Some(requested) = subject.replicas
        && replicas < requested
    {
        return Err(format!(
            "--replicas {replicas} is below the {requested} replicas the request asks for"
        ));
    }
    subject.replicas = Some(replicas);
    Ok(())
}

fn read_input(path: &Path) -> Result<String, String> {
    let bytes = super::check::input::read_source(path).map_err(|e| format!("cannot read {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// The objects of FILE: one object, review or payload, or several objects (a
/// multi-document render), each approved on its own.
fn parse_inputs(text: &str, args: &ChangeArgs) -> Result<Vec<Input>, String> {
    let file = args.file().display();
    let json = text.trim_start().starts_with('{');
    if json {
        let value = serde_json::from_str(text).map_err(|e| format!("{file}: invalid JSON: {e}"))?;
        return Ok(vec![parse_input(value, json, text, args)?]);
    }
    // Empty documents are skipped by the parser.
    let options = crate::yaml::manifest_options(text);
    let mut documents = serde_saphyr::from_multiple_with_options::<Value>(text, options)
        .map_err(|e| format!("{file}: invalid YAML: {}", crate::yaml::message(&e)))?;
    // `---` followed by nothing but comments (as helm template writes) is a null.
    documents.retain(|d| !d.is_null());
    match documents.len() {
        0 => Err(format!("{file} holds no object")),
        1 => Ok(vec![parse_input(
            documents.pop().expect("one document"),
            json,
            text,
            args,
        )?]),
        _ => documents
            .into_iter()
            .enumerate()
            .map(|(i, value)| match parse_input(value, json, text, args)? {
                object @ Input::Object { .. } => Ok(object),
                _ => Err(format!(
                    "{file}: document {} is not a Kubernetes object; a file of several documents holds only objects",
                    i + 1
                )),
            })
            .collect(),
    }
}

fn parse_input(value: Value, json: bool, text: &str, args: &ChangeArgs) -> Result<Input, String> {
    let file = args.file().display();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if args.review || kind == "AdmissionReview" {
        if kind != "AdmissionReview" {
            return Err(format!("{file} is not an AdmissionReview (kind {kind:?})"));
        }
        let body = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
        let request = crate::review::decode(&body).map_err(|r| format!("{file}: {}", r.error))?;
        let policy = policy_of(args)?;
        let change = Change::from_view(&request, &policy).map_err(|e| format!("{file}: {e}"))?;
        return Ok(Input::Review(Box::new(change)));
    }
    if api_version == crate::approval::payload::API_VERSION
        && kind == crate::approval::payload::KIND
    {
        return Ok(Input::Payload(strip_one_newline(text).to_string()));
    }
    if kind == "List" || kind.ends_with("List") && value.get("items").is_some() {
        return Err(format!(
            "{file} is a {kind}; approve one object at a time (kubectl get KIND NAME -o json)"
        ));
    }
    if kind.is_empty() || api_version.is_empty() {
        return Err(format!("{file}: an object needs apiVersion and kind"));
    }
    let mut value = value;
    if let Some(time) = &args.restart {
        restart(&mut value, time).map_err(|e| format!("{file}: --restart: {e}"))?;
    }
    Ok(Input::Object {
        object: value,
        json,
    })
}

/// What `kubectl rollout restart` writes into the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Sets the pod template's [`RESTARTED_AT`] to `time` (`now`: the current time), as
/// `kubectl rollout restart` does, so the restart is one exact object to approve.
fn restart(object: &mut Value, time: &str) -> Result<(), String> {
    let time = if time == "now" {
        rfc3339(SystemTime::now())
    } else {
        humantime::parse_rfc3339_weak(time)
            .map_err(|e| format!("{time:?} is not an RFC 3339 time ({e})"))?;
        time.to_string()
    };
    let template = object
        .pointer_mut("/spec/template")
        .and_then(Value::as_object_mut)
        .ok_or("the object has no pod template (spec.template) to restart")?;
    let metadata = template
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let annotations = metadata
        .as_object_mut()
        .ok_or("spec.template.metadata is not a mapping")?
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if annotations.is_null() {
        *annotations = Value::Object(Default::default());
    }
    annotations
        .as_object_mut()
        .ok_or("spec.template.metadata.annotations is not a mapping")?
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
fn strip_one_newline(text: &str) -> &str {
    text.strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text)
}

fn object_annotations(object: &Value) -> std::collections::BTreeMap<String, String> {
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
fn from_server(object: &Value) -> bool {
    ["uid", "resourceVersion", "creationTimestamp"]
        .iter()
        .any(|f| {
            object
                .pointer(&format!("/metadata/{f}"))
                .is_some_and(|v| !v.is_null())
        })
}

/// What an object must be approved as, as [`ApprovalSubject::of`] does for a request.
fn object_subject(
    object: &Value,
    operation: ApprovalOperation,
    args: &ChangeArgs,
    given_replicas: Option<u64>,
) -> Result<ApprovalSubject, String> {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    let api_version = text("/apiVersion").unwrap_or_default();
    let group = api_version
        .rsplit_once('/')
        .map(|(g, _)| g.to_string())
        .unwrap_or_default();
    let name = text("/metadata/name")
        .filter(|n| !n.is_empty())
        .ok_or("metadata.name is not set: an approval is bound to one named object")?;
    // A kind blastguard knows to be cluster-scoped (a Namespace, a ClusterRole) needs
    // no --cluster-scoped: its target has no namespace whatever the flags say.
    let known_cluster_scoped = crate::kinds::find(&group, text("/kind").unwrap_or_default())
        .is_some_and(|k| k.cluster_scoped);
    let namespace = match (
        text("/metadata/namespace"),
        &args.namespace,
        args.cluster_scoped || known_cluster_scoped,
    ) {
        (Some(ns), Some(flag), _) if ns != flag => {
            return Err(format!(
                "--namespace {flag} contradicts metadata.namespace {ns}"
            ));
        }
        (Some(_), _, true) => {
            return Err("--cluster-scoped contradicts metadata.namespace".into());
        }
        (Some(ns), _, _) => ns.to_string(),
        (None, Some(flag), _) => flag.clone(),
        (None, None, true) => String::new(),
        (None, None, false) => {
            return Err(
                "metadata.namespace is not set: pass --namespace NAME (or --cluster-scoped for a cluster-scoped object)"
                    .into(),
            );
        }
    };
    let target = Target {
        group,
        kind: text("/kind").unwrap_or_default().to_string(),
        namespace: Some(namespace).filter(|ns| !ns.is_empty()),
        name: name.to_string(),
    };
    let replicas = match operation {
        ApprovalOperation::Scale => {
            let existing = object_annotations(object)
                .get(APPROVAL)
                .and_then(|p| ApprovalPayload::parse(p).ok())
                .and_then(|p| p.replicas);
            Some(args.replicas.or(given_replicas).or(existing).ok_or(
                "--replicas N (the exact replica count approved) is required with --operation scale",
            )?)
        }
        ApprovalOperation::Apply | ApprovalOperation::Delete if args.replicas.is_some() => {
            return Err("--replicas only applies to --operation scale".into());
        }
        ApprovalOperation::Apply | ApprovalOperation::Delete => None,
    };
    // A manifest is digested as the API server will present it: with its defaults
    // (docs/design.md#approvals); an object read from a server, as it is.
    let served;
    let object = if from_server(object) {
        object
    } else {
        served = defaults::defaulted(object).0;
        &served
    };
    ApprovalSubject::new(&target, operation, Some(object), replicas).map_err(|e| e.to_string())
}

fn approve(args: &ApproveArgs, now: SystemTime) -> Result<(), String> {
    let signer = if args.signature.is_empty() {
        Some(signer(args)?)
    } else {
        None
    };
    let all = prepare_all(&args.change, args.payload.as_deref(), Existing::Extend, now)?;
    if args.annotate && !all.iter().all(|p| matches!(p.input, Input::Object { .. })) {
        return Err(
            "--annotate writes the approval into a manifest; FILE is not one (print the annotations instead)"
                .into(),
        );
    }
    if !args.signature.is_empty() && all.len() > 1 {
        return Err(format!(
            "{} holds {} objects, each with its own payload; attach a --signature to one object's manifest at a time",
            args.change.file().display(),
            all.len()
        ));
    }
    let several = all.len() > 1;
    let mut signed = Vec::with_capacity(all.len());
    for prepared in all {
        let who = match &prepared.input {
            Input::Object { object, .. } if several => Some(describe(object)),
            _ => None,
        };
        let signatures = match &signer {
            Some(signer) => sign_one(args, signer, &prepared, who.as_deref(), now),
            None => attach(args, &prepared),
        }
        .map_err(|e| match &who {
            Some(who) => format!("{who}: {e}"),
            None => e,
        })?;
        signed.push((prepared, signatures));
    }

    if args.annotate {
        let mut objects = Vec::with_capacity(signed.len());
        let mut json = false;
        for (prepared, signatures) in &signed {
            let Input::Object { object, json: j } = &prepared.input else {
                unreachable!("checked above: every input is an object")
            };
            let mut object = object.clone();
            let annotations = annotations_mut(&mut object)?;
            annotations.insert(APPROVAL.into(), prepared.payload_text.clone().into());
            annotations.insert(APPROVAL_SIGNATURE.into(), signatures.clone().into());
            objects.push(object);
            json = *j;
        }
        write_back(args.change.file(), &objects, json)?;
        for (prepared, signatures) in &signed {
            let count = signature_count(signatures);
            match &prepared.input {
                Input::Object { object, .. } if several => eprintln!(
                    "Added the approval with {count} signature(s) to {} in {}.",
                    describe(object),
                    args.change.file().display()
                ),
                _ => eprintln!(
                    "Added the approval with {count} signature(s) to {}.",
                    args.change.file().display()
                ),
            }
        }
        return Ok(());
    }
    for (prepared, signatures) in &signed {
        let pair: std::collections::BTreeMap<&str, &str> = [
            (APPROVAL, prepared.payload_text.as_str()),
            (APPROVAL_SIGNATURE, signatures.as_str()),
        ]
        .into_iter()
        .collect();
        let yaml = serde_saphyr::to_string(&pair).map_err(|e| e.to_string())?;
        let count = signature_count(signatures);
        if let Input::Object { object, .. } = &prepared.input
            && several
        {
            println!("# {}", describe(object));
        }
        eprintln!(
            "Add these annotations under metadata.annotations ({count} signature(s); for scale, on the workload):"
        );
        print!("{yaml}");
    }
    Ok(())
}

fn signature_count(signatures: &str) -> usize {
    sshsig::parse_signatures(signatures)
        .map(|s| s.len())
        .unwrap_or(1)
}

/// The signatures already on the object, followed by `new`.
fn append_signature(prepared: &Prepared, new: &str) -> String {
    match &prepared.existing_signatures {
        Some(existing) if !existing.trim().is_empty() => {
            format!("{}\n{}", existing.trim_end(), new.trim_end())
        }
        _ => new.trim_end().to_string(),
    }
}

/// The keys that already signed the object's approval.
fn existing_keys(prepared: &Prepared) -> Result<Vec<ssh_key::public::KeyData>, String> {
    let Some(existing) = &prepared.existing_signatures else {
        return Ok(Vec::new());
    };
    let signatures = sshsig::parse_signatures(existing)
        .map_err(|e| format!("the object's {APPROVAL_SIGNATURE} annotation is not usable: {e}"))?;
    Ok(signatures.iter().map(|s| s.public_key().clone()).collect())
}

/// Signs one object's payload; returns its signature annotation.
fn sign_one(
    args: &ApproveArgs,
    signer: &Signer,
    prepared: &Prepared,
    who: Option<&str>,
    now: SystemTime,
) -> Result<String, String> {
    let public = signer.public_key()?;
    if existing_keys(prepared)?.contains(public.key_data()) {
        return Err(format!(
            "key {} has already signed this approval",
            fingerprint(public.key_data())
        ));
    }
    for note in &prepared.notes {
        eprintln!("note: {note}");
    }
    eprint!("{}", what_is_signed(prepared, who, args.change.file()));
    check_trust(args, &public, now);
    let payload = prepared.payload_text.as_bytes();
    let sig = match signer {
        Signer::KeyFile(path) => signing::sign_with_key_file(path, payload),
        Signer::Agent { socket, key } => signing::sign_with_agent(socket, key, payload),
    }
    .map_err(|e| e.to_string())?;
    let armored = sshsig::armor(&sig).map_err(|e| e.to_string())?;
    Ok(append_signature(prepared, &armored))
}

/// Attaches the `--signature` files: each must verify over the payload (as
/// `ssh-keygen -Y sign` signs a file: the payload, or the payload and a newline) and
/// be by a key that has not signed yet, so a wrong file fails here, not at the
/// webhook.
fn attach(args: &ApproveArgs, prepared: &Prepared) -> Result<String, String> {
    for note in &prepared.notes {
        eprintln!("note: {note}");
    }
    eprint!("{}", what_is_signed(prepared, None, args.change.file()));
    let mut keys = existing_keys(prepared)?;
    let mut added = Vec::new();
    for path in &args.signature {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let signatures = sshsig::parse_signatures(&text)
            .map_err(|e| format!("{} is not an SSH signature: {e}", path.display()))?;
        for sig in &signatures {
            sshsig::verify(sig, prepared.payload_text.as_bytes()).map_err(|e| {
                format!(
                    "{} does not verify over the payload being approved ({e}); sign exactly that payload with: \
                     ssh-keygen -Y sign -n {SIGNATURE_NAMESPACE} -f KEY payload.json",
                    path.display()
                )
            })?;
            if keys.contains(sig.public_key()) {
                return Err(format!(
                    "{}: key {} has already signed this approval",
                    path.display(),
                    fingerprint(sig.public_key())
                ));
            }
            keys.push(sig.public_key().clone());
            added.push(sshsig::armor(sig).map_err(|e| e.to_string())?);
            eprintln!(
                "Attaching the signature by key {} from {}.",
                fingerprint(sig.public_key()),
                path.display()
            );
        }
    }
    if let Some(path) = &args.allowed_signers {
        // Same warning as when signing: a key the cluster will not count is worth
        // knowing before the retry.
        if let Ok(signers) = AllowedSigners::load(path) {
            for key in &keys {
                if !matches!(
                    signers.trust(key, SIGNATURE_NAMESPACE, SystemTime::now()),
                    KeyTrust::Trusted(_)
                ) {
                    eprintln!(
                        "warning: key {} is not trusted for approvals by {}: the webhook will not count it",
                        fingerprint(key),
                        path.display()
                    );
                }
            }
        }
    }
    Ok(append_signature(prepared, &added.join("")))
}

/// What the approver is about to sign, in words, before the payload itself: the
/// target, the operation, the summary and the digest, and whether that digest was
/// computed here from FILE.
fn what_is_signed(prepared: &Prepared, who: Option<&str>, file: &Path) -> String {
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

/// How the approver signs.
pub(crate) enum Signer {
    KeyFile(PathBuf),
    Agent {
        socket: PathBuf,
        key: ssh_key::PublicKey,
    },
}

impl Signer {
    pub(crate) fn public_key(&self) -> Result<ssh_key::PublicKey, String> {
        match self {
            Signer::KeyFile(path) => signing::read_public_key(path).map_err(|e| e.to_string()),
            Signer::Agent { key, .. } => Ok(key.clone()),
        }
    }
}

pub(crate) fn signer(args: &ApproveArgs) -> Result<Signer, String> {
    if args.agent {
        let socket = std::env::var_os("SSH_AUTH_SOCK")
            .map(PathBuf::from)
            .ok_or("--agent needs SSH_AUTH_SOCK (is ssh-agent running?)")?;
        let wanted = args
            .key
            .as_deref()
            .map(signing::read_public_key)
            .transpose()
            .map_err(|e| e.to_string())?;
        let key = signing::agent_key(&socket, wanted.as_ref()).map_err(|e| e.to_string())?;
        return Ok(Signer::Agent { socket, key });
    }
    match &args.key {
        Some(path) => Ok(Signer::KeyFile(path.clone())),
        None => Err("pass --key ~/.ssh/id_ed25519 (a private key file) or --agent".into()),
    }
}

/// Tells the approver whether the webhook will count their signature (a warning, not
/// an error: their allowed_signers copy may be older than the cluster's).
pub(crate) fn check_trust(args: &ApproveArgs, public: &ssh_key::PublicKey, now: SystemTime) {
    let path = match (&args.allowed_signers, &args.change.policy) {
        (Some(path), _) => path.clone(),
        (None, Some(policy)) => match Policy::from_file(policy) {
            Ok(p) => PathBuf::from(p.approvals.allowed_signers),
            Err(_) => return,
        },
        (None, None) => return,
    };
    match AllowedSigners::load(&path) {
        Err(e) => eprintln!("warning: cannot check the key against allowed_signers: {e}"),
        Ok(signers) => match signers.trust(public.key_data(), SIGNATURE_NAMESPACE, now) {
            KeyTrust::Trusted(lines) => {
                let who: Vec<&str> = lines.iter().map(|l| l.principals.as_str()).collect();
                eprintln!(
                    "Signing as {} (key {}, trusted by {}).",
                    who.join(","),
                    fingerprint(public.key_data()),
                    path.display()
                );
            }
            KeyTrust::Restricted(why) => eprintln!(
                "warning: {} does not trust key {} for approvals now ({}): the webhook will not count this signature",
                path.display(),
                fingerprint(public.key_data()),
                why.join("; ")
            ),
            KeyTrust::NotListed => eprintln!(
                "warning: key {} is not in {}: the webhook will not count this signature",
                fingerprint(public.key_data()),
                path.display()
            ),
        },
    }
}

fn annotations_mut(object: &mut Value) -> Result<&mut serde_json::Map<String, Value>, String> {
    let metadata = object
        .as_object_mut()
        .ok_or("the object is not a mapping")?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let annotations = metadata
        .as_object_mut()
        .ok_or("metadata is not a mapping")?
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if annotations.is_null() {
        *annotations = Value::Object(Default::default());
    }
    annotations
        .as_object_mut()
        .ok_or_else(|| "metadata.annotations is not a mapping".to_string())
}

/// Writes the annotated object in its original format: atomically over FILE, or to
/// standard output for `-`.
fn write_back(path: &Path, objects: &[Value], json: bool) -> Result<(), String> {
    let text = match objects {
        [object] if json => {
            let mut t = serde_json::to_string_pretty(object).map_err(|e| e.to_string())?;
            t.push('\n');
            t
        }
        _ => {
            // A render of several objects stays one multi-document file.
            let docs = objects
                .iter()
                .map(|o| serde_saphyr::to_string(o).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            docs.join("---\n")
        }
    };
    if path == Path::new("-") {
        print!("{text}");
        return Ok(());
    }
    if !json
        && std::fs::read_to_string(path)
            .map(|t| t.lines().any(|l| l.trim_start().starts_with('#')))
            .unwrap_or(false)
    {
        eprintln!(
            "note: {} was rewritten as plain YAML; its comments are not kept",
            path.display()
        );
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let error = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| error(&e))?;
    file.write_all(text.as_bytes()).map_err(|e| error(&e))?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(file.path(), meta.permissions()).map_err(|e| error(&e))?;
    }
    file.persist(path).map_err(|e| error(&e))?;
    Ok(())
}
