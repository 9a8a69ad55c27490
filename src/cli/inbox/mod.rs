//! The approver's inbox (docs/approvals.md, "The inbox"): `kubectl blastguard
//! pending | show NAME | approve NAME | reject NAME | request -f FILE`.
//!
//! Requests are `ApprovalRequest` objects in the release namespace, read and written
//! with the user's kubectl ([`kubectl`]). Nothing here is trusted by the webhook: an
//! approval is the signatures, verified on the retry against allowed_signers. What
//! this module adds is that an approver signs only what they saw: `approve` and
//! `show` check that the recorded object has the payload's digest before anything
//! else ([`crate::approval::request::check_record`]).

pub mod ask;
pub mod kubectl;

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::Value;

pub use ask::RequestArgs;
pub use kubectl::{InboxCluster, InboxError};

use super::approve::args::ApproveArgs;
use super::approve::signing::Signer;
use super::{EXIT_BAD_INPUT, EXIT_DENIED};
use crate::approval::allowed_signers::{AllowedSigners, fingerprint};
use crate::approval::payload::rfc3339;
use crate::approval::request::{
    self, MAX_SIGNATURES, Rejection, RequestSpec, RequestState, RequestStatus,
};
use crate::approval::verifier::SignedApprovals;
use crate::approval::{ApprovalOutcome, sshsig};
use crate::cli::policy_source::{self, PolicyChoice};
use crate::cluster::requests::ApprovalRequest;
use crate::policy::Policy;

/// The chart's allowed_signers ConfigMap with the default release name, and its key.
const SIGNERS_CONFIGMAP: (&str, &str) = ("blastguard-allowed-signers", "allowed_signers");

/// Arguments of `pending`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  kubectl blastguard pending\n  kubectl blastguard pending --all -o json"
)]
pub struct PendingArgs {
    /// Also list rejected, spent and expired requests.
    #[arg(long)]
    pub all: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Where the inbox is.
    #[command(flatten)]
    pub cluster: InboxCluster,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    Text,
    /// The records as JSON.
    Json,
}

/// Arguments of `show`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  kubectl blastguard show deployment-prod-api-apply-0123456789abcdef"
)]
pub struct ShowArgs {
    /// The request's name (as `pending` lists it).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where the inbox is.
    #[command(flatten)]
    pub cluster: InboxCluster,
}

/// Arguments of `reject`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  kubectl blastguard reject deployment-prod-api-apply-0123456789abcdef --reason 'not during the freeze'"
)]
pub struct RejectArgs {
    /// The request's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Why (shown to the requester in the denial of every retry).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Where the inbox is.
    #[command(flatten)]
    pub cluster: InboxCluster,
}

/// Why an approver's decision (`approve NAME`, `reject NAME`) was not written.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// The inbox could not be read or written.
    #[error(transparent)]
    Inbox(#[from] InboxError),
    /// The key could not sign.
    #[error(transparent)]
    Signer(#[from] super::approve::error::ApproveError),
    /// An approver rejected the request.
    #[error("request {name} was rejected{why}; a rejected request cannot be approved")]
    Rejected {
        /// The request's name, as `pending` lists it.
        name: String,
        /// ` by WHO: REASON`, when recorded.
        why: String,
    },
    /// The request admitted its change already.
    #[error("request {0} has admitted its change already (an approval admits its change once)")]
    Spent(String),
    /// Rejecting a spent request.
    #[error("request {0} has admitted its change already; rejecting it changes nothing")]
    SpentUnchangeable(String),
    /// The request expired.
    #[error("request {name} expired{at}; the requester's next attempt asks anew")]
    Expired {
        /// The request's name, as `pending` lists it.
        name: String,
        /// ` at NOTAFTER`, when the payload says.
        at: String,
    },
    /// The record is not what it says: nothing is signed.
    #[error("refusing to sign request {name}: {source}")]
    Record {
        /// The request's name, as `pending` lists it.
        name: String,
        /// What is wrong with it.
        source: request::RecordError,
    },
    /// This key signed the request already.
    #[error("key {key} has already signed request {name}")]
    AlreadySigned {
        /// The request's name, as `pending` lists it.
        name: String,
        /// The key's fingerprint.
        key: String,
    },
    /// The request carries as many signatures as the verifier reads.
    #[error("request {0} carries {MAX_SIGNATURES} signatures already")]
    FullOfSignatures(String),
    /// Others kept writing the request.
    #[error("request {0} kept changing; run the command again")]
    KeptChanging(String),
    /// `reject --reason` without a reason.
    #[error("--reason must say why")]
    NoReason,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// The cluster's policy and allowed_signers, when the user may read them: with them
/// the tools count signatures as the webhook will.
struct Trust {
    policy: Policy,
    verifier: SignedApprovals,
}

fn trust(cluster: &InboxCluster) -> Option<Trust> {
    let choice = PolicyChoice::of_release(
        &cluster.kubectl,
        &cluster.release_namespace,
        policy_source::Cluster::Required,
    );
    let policy = policy_source::load(&choice).ok()?.policy;
    let signers_text = cluster.configmap_key(SIGNERS_CONFIGMAP.0, SIGNERS_CONFIGMAP.1)?;
    let signers = AllowedSigners::parse(&signers_text).ok()?;
    Some(Trust {
        policy,
        verifier: SignedApprovals::new(signers),
    })
}

/// `n/N` and what is still missing, as the webhook would count (with `trust`), or as
/// signatures on the record (without).
fn signed_text(spec: &RequestSpec, status: &RequestStatus, trust: Option<&Trust>) -> String {
    let count = status.signatures.len();
    let required = spec.required_approvals;
    let judged = trust.and_then(|t| {
        request::judge(
            &t.verifier,
            &t.policy,
            spec,
            &status.signatures,
            SystemTime::now(),
        )
    });
    match judged.as_ref() {
        Some(ApprovalOutcome::Valid { signers }) => format!("{}/{required}", signers.len()),
        Some(outcome @ ApprovalOutcome::Rejected { reason, detail }) if count > 0 => {
            let missing = detail
                .split_once("needs ")
                .map(|(_, m)| format!(" (needs {})", m.trim_end_matches(')')))
                .unwrap_or_default();
            // Short of approvers is what SIGNED says; anything else (a key nobody
            // trusts, a signature of another payload) is named.
            if crate::approval::insufficient(outcome) {
                format!("{count}/{required}{missing}")
            } else {
                format!("{count}/{required} ({reason})")
            }
        }
        _ => {
            let groups: Vec<String> = spec
                .approvers
                .iter()
                .map(|t| format!("{}:{}", t.group, t.count))
                .collect();
            if groups.is_empty() || count >= required as usize {
                format!("{count}/{required}")
            } else {
                format!("{count}/{required} (groups {})", groups.join(","))
            }
        }
    }
}

/// `3m`, `2h5m`: how long ago, or until.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn age(record: &ApprovalRequest, now: SystemTime) -> String {
    record
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| humantime::parse_rfc3339_weak(&t.0.to_string()).ok())
        .map(|created| short(now.duration_since(created).unwrap_or_default()))
        .unwrap_or_else(|| "?".into())
}

fn expires(spec: &RequestSpec, now: SystemTime) -> String {
    match humantime::parse_rfc3339_weak(&spec.expires_at) {
        Ok(until) if until > now => format!(
            "in {}",
            short(until.duration_since(now).unwrap_or_default())
        ),
        Ok(_) => "expired".into(),
        Err(_) => "?".into(),
    }
}

/// Runs `pending`.
pub fn run_pending(args: PendingArgs) -> ExitCode {
    let records = match args.cluster.list() {
        Ok(records) => records,
        Err(e) => return fail(e),
    };
    let now = SystemTime::now();
    let mut shown: Vec<&ApprovalRequest> = records
        .iter()
        .filter(|r| args.all || r.status().state.open())
        .collect();
    shown.sort_by_key(|r| {
        r.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
    });
    if args.output == Format::Json {
        return match serde_json::to_string_pretty(&shown) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    if shown.is_empty() {
        eprintln!(
            "No {}requests in namespace {}.",
            if args.all { "" } else { "pending " },
            args.cluster.release_namespace
        );
        return ExitCode::SUCCESS;
    }
    let trust = trust(&args.cluster);
    let mut rows = vec![
        [
            "NAME",
            "TARGET",
            "OPERATION",
            "PODS",
            "REQUESTER",
            "RULE",
            "STATE",
            "SIGNED",
            "AGE",
            "EXPIRES",
        ]
        .map(String::from),
    ];
    for r in shown {
        let status = r.status();
        rows.push([
            r.metadata.name.clone().unwrap_or_default(),
            r.spec.display.clone(),
            r.spec.operation.clone(),
            r.spec
                .pods_affected
                .map_or_else(|| "-".into(), |p| p.to_string()),
            r.spec.requester.clone(),
            r.spec.rule.clone(),
            status.state.as_str().to_string(),
            signed_text(&r.spec, &status, trust.as_ref()),
            age(r, now),
            expires(&r.spec, now),
        ]);
    }
    print!("{}", table(&rows));
    ExitCode::SUCCESS
}

fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// The live object reduced to what the record keeps (and the digest binds): the
/// fields but `status`, and `metadata` down to name and labels, so the diff shows
/// exactly what a signature approves.
fn as_recorded(object: &Value) -> Value {
    let mut reduced = object.clone();
    if let Some(map) = reduced.as_object_mut() {
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
        let metadata = object.get("metadata");
        let mut kept = serde_json::Map::new();
        for key in ["name", "generateName", "labels"] {
            if let Some(v) = metadata.and_then(|m| m.get(key)) {
                kept.insert(key.to_string(), v.clone());
            }
        }
        map.insert("metadata".into(), Value::Object(kept));
    }
    reduced
}

fn recorded_without_type(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
        map.remove("status");
    }
    object
}

/// Runs `show`.
pub fn run_show(args: ShowArgs) -> ExitCode {
    let record = match args.cluster.get(&args.name) {
        Ok(record) => record,
        Err(e) => return fail(e),
    };
    let now = SystemTime::now();
    let spec = &record.spec;
    let status = record.status();
    let trust = trust(&args.cluster);
    println!("Name:        {}", args.name);
    println!("Target:      {} ({})", spec.display, spec.operation);
    println!("Requester:   {}", spec.requester);
    println!(
        "Rule:        {} ({} approvals required{})",
        spec.rule,
        spec.required_approvals,
        if spec.approvers.is_empty() {
            String::new()
        } else {
            let groups: Vec<String> = spec
                .approvers
                .iter()
                .map(|t| format!("{} from {}", t.count, t.group))
                .collect();
            format!("; {}", groups.join(", "))
        }
    );
    println!("State:       {}", status.state.as_str());
    println!(
        "Signed:      {}{}",
        signed_text(spec, &status, trust.as_ref()),
        if status.signed_by.is_empty() {
            String::new()
        } else {
            format!(" by {}", status.signed_by.join(", "))
        }
    );
    if let Some(r) = &status.rejection {
        println!("Rejected by: {} at {}: {}", r.by, r.at, r.reason);
    }
    println!("Expires:     {} ({})", spec.expires_at, expires(spec, now));
    println!("Attempts:    {} (last {})", spec.attempts, spec.last_seen);
    if let Some(pods) = spec.pods_affected {
        println!("Pods:        {pods} affected");
    }
    println!(
        "Summary:     {}",
        if spec.summary.is_empty() {
            "-"
        } else {
            &spec.summary
        }
    );
    println!("Limits exceeded:");
    if spec.exceeded.is_empty() {
        println!("  (not recorded)");
    }
    for limit in &spec.exceeded {
        println!("  - {limit}");
    }
    let checked = request::check_record(spec);
    match &checked {
        Ok(payload) => println!(
            "Check:       the recorded object has the payload's digest{}",
            payload
                .digest
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ),
        Err(e) => println!("Check:       FAILED: {e}"),
    }
    let live = args.cluster.live(
        &spec.target.group,
        &spec.target.kind,
        &spec.target.namespace,
        &spec.target.name,
    );
    let live_view = live.as_ref().map(as_recorded);
    let requested = spec.object.as_ref().map(recorded_without_type);
    let requested = match spec.operation.as_str() {
        "delete" => None,
        _ => requested,
    };
    println!("Diff (live → requested):");
    if spec.operation == "scale" {
        println!("  ~ spec.replicas → {}", spec.replicas.unwrap_or_default());
    } else {
        let diff = super::field_diff::diff(live_view.as_ref(), requested.as_ref());
        let text = diff.to_string();
        if text.trim().is_empty() {
            println!("  (no difference)");
        }
        for line in text.lines() {
            println!("  {line}");
        }
    }
    println!("Payload:     {}", spec.payload);
    println!(
        "\nApprove: kubectl blastguard approve {} --key ~/.ssh/id_ed25519   Reject: kubectl blastguard reject {} --reason TEXT",
        args.name, args.name
    );
    if checked.is_err() {
        return ExitCode::from(EXIT_DENIED);
    }
    ExitCode::SUCCESS
}

/// Runs `approve NAME`.
pub fn run_approve(name: &str, args: &ApproveArgs) -> ExitCode {
    match approve(name, args) {
        Ok(message) => {
            eprintln!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn approve(name: &str, args: &ApproveArgs) -> Result<String, DecisionError> {
    let cluster = &args.inbox;
    let signer = Signer::from_flags(args.key.as_deref(), args.agent)?;
    let public = signer.public_key()?;
    // Someone may write between our read and our write: read again and sign anew.
    for _ in 0..3 {
        let mut record = cluster.get(name)?;
        let now = SystemTime::now();
        let mut status = record.status();
        match status.state {
            RequestState::Rejected => {
                return Err(DecisionError::Rejected {
                    name: name.to_string(),
                    why: status
                        .rejection
                        .map(|r| format!(" by {}: {}", r.by, r.reason))
                        .unwrap_or_default(),
                });
            }
            RequestState::Spent => return Err(DecisionError::Spent(name.to_string())),
            RequestState::Expired => {
                return Err(DecisionError::Expired {
                    name: name.to_string(),
                    at: String::new(),
                });
            }
            RequestState::Pending | RequestState::Approved => {}
        }
        // What the approver signs must be what they can read: the recorded object
        // must have the payload's digest, and the payload approve what the record
        // names.
        let payload =
            request::check_record(&record.spec).map_err(|source| DecisionError::Record {
                name: name.to_string(),
                source,
            })?;
        if let Ok((_, until)) = payload.window()
            && until <= now
        {
            return Err(DecisionError::Expired {
                name: name.to_string(),
                at: format!(" at {}", payload.not_after),
            });
        }
        let existing: Vec<_> = status
            .signatures
            .iter()
            .filter_map(|s| sshsig::parse_signatures(s).ok())
            .flatten()
            .map(|s| s.public_key().clone())
            .collect();
        if existing.contains(public.key_data()) {
            return Err(DecisionError::AlreadySigned {
                name: name.to_string(),
                key: fingerprint(public.key_data()),
            });
        }
        if status.signatures.len() >= MAX_SIGNATURES {
            return Err(DecisionError::FullOfSignatures(name.to_string()));
        }
        eprintln!(
            "Signing request {name}: {} of {}{}\n  digest {}\n  requested by {}, valid until {}",
            record.spec.operation,
            record.spec.display,
            if payload.summary.is_empty() {
                String::new()
            } else {
                format!(": {}", payload.summary)
            },
            payload.digest.as_deref().map_or_else(
                || format!("replicas={}", payload.replicas.unwrap_or_default()),
                str::to_string
            ),
            record.spec.requester,
            payload.not_after
        );
        let armored = signer.sign(record.spec.payload.as_bytes())?;
        status.signatures.push(armored);
        let who = cluster
            .whoami()
            .unwrap_or_else(|| public.comment().to_string());
        status
            .signed_by
            .push(format!("{who} ({})", fingerprint(public.key_data())));
        let required = record.spec.required_approvals as usize;
        let trust = trust(cluster);
        let complete = match trust.as_ref().and_then(|t| {
            request::judge(
                &t.verifier,
                &t.policy,
                &record.spec,
                &status.signatures,
                now,
            )
        }) {
            Some(outcome) => matches!(outcome, ApprovalOutcome::Valid { .. }),
            None => status.signatures.len() >= required,
        };
        if complete {
            status.state = RequestState::Approved;
        }
        status.signed = signed_text(&record.spec, &status, trust.as_ref());
        record.status = Some(status.clone());
        match cluster.write_status(&record) {
            Ok(()) => {
                return Ok(if complete {
                    format!(
                        "Signed request {name} ({}): fully signed; the requester may retry the very same change.",
                        status.signed
                    )
                } else {
                    format!(
                        "Signed request {name} ({}): more approvers must sign (kubectl blastguard approve {name}).",
                        status.signed
                    )
                });
            }
            Err(InboxError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(DecisionError::KeptChanging(name.to_string()))
}

/// Runs `reject`.
pub fn run_reject(args: RejectArgs) -> ExitCode {
    if args.reason.trim().is_empty() {
        return fail(DecisionError::NoReason);
    }
    for _ in 0..3 {
        let mut record = match args.cluster.get(&args.name) {
            Ok(record) => record,
            Err(e) => return fail(e),
        };
        let mut status = record.status();
        match status.state {
            RequestState::Spent => return fail(DecisionError::SpentUnchangeable(args.name)),
            RequestState::Rejected => {
                eprintln!("Request {} is rejected already.", args.name);
                return ExitCode::SUCCESS;
            }
            _ => {}
        }
        status.state = RequestState::Rejected;
        status.rejection = Some(Rejection {
            by: args.cluster.whoami().unwrap_or_else(|| "unknown".into()),
            reason: args.reason.clone(),
            at: rfc3339(SystemTime::now()),
        });
        record.status = Some(status);
        match args.cluster.write_status(&record) {
            Ok(()) => {
                eprintln!(
                    "Rejected request {}: the change stays denied, whoever signs it.",
                    args.name
                );
                return ExitCode::SUCCESS;
            }
            Err(InboxError::Conflict(_)) => continue,
            Err(e) => return fail(e),
        }
    }
    fail(DecisionError::KeptChanging(args.name))
}

/// Runs `request -f FILE`.
pub fn run_request(args: RequestArgs) -> ExitCode {
    match ask::record(&args) {
        Ok(recorded) => {
            for note in &recorded.notes {
                eprintln!("note: {note}");
            }
            let name = &recorded.name;
            if recorded.created {
                eprintln!(
                    "Recorded request {name} for {} in namespace {} (rule {}, {} approvals required): approvers see it in kubectl blastguard pending.",
                    recorded.record.spec.display,
                    args.cluster.release_namespace,
                    recorded.record.spec.rule,
                    recorded.record.spec.required_approvals,
                );
            } else {
                eprintln!(
                    "Request {name} for this exact change exists already: kubectl blastguard show {name}"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
