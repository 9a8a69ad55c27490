//! `blastguard check`: would this pass? Manifests (or a raw AdmissionReview) judged
//! offline by the webhook's own engine (docs/design.md#commands).
//!
//! Each manifest becomes the AdmissionReview the API server would send ([`synth`]),
//! and [`Engine::review`] judges it exactly as `serve` does: no rule lives here.

pub mod apply;
pub mod input;
pub mod output;
pub mod resources;
pub mod server;
pub mod synth;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::Value;

use super::policy_source::{self, Cluster, LoadPolicyError, Loaded, PolicyChoice};
use super::{EXIT_BAD_INPUT, EXIT_DENIED, EXIT_OK};
use crate::approval::{self, ApprovalVerifier, NoTrustedSigners, SignersError};
use crate::engine::{Engine, Reviewed, State};
use crate::policy::{KnownNamespaces, Policy};
use crate::sizes::{InMemorySizes, Sizes};
use input::{InputError, Manifest, Reader};
use output::{Evaluation, Outcome, Problem, Skip, Style};
use synth::{Caller, Planner, SynthError};

/// The requester reported when neither `--as` nor a local user name is known.
pub const FALLBACK_USER: &str = "kubectl-blastguard-check";

const EXAMPLES: &str = "\
Examples:
  # Would these manifests pass? (exit 0: all pass, 1: any denied, 2: bad input)
  kubectl blastguard check -f deploy.yaml -f k8s/

  # Rendered manifests on stdin
  kubectl kustomize overlays/prod | kubectl blastguard check -f -
  helm template shop ./chart | kubectl blastguard check -f -

  # An update, measured against the current state in the cluster
  kubectl get deploy api -n shop -o yaml > current.yaml
  kubectl blastguard check -f deploy.yaml --old current.yaml

  # As the AI agent's identity would be judged, as JSON for a pipeline
  kubectl blastguard check -f k8s/ --as system:serviceaccount:ai-agents:claude -o json

  # SARIF for GitHub code scanning; a chart that renders nothing is fine
  kubectl blastguard check -f rendered.yaml -o sarif --empty ok > blastguard.sarif

  # Exact, as the cluster presents them (defaults and mutating webhooks included):
  # each object goes through `kubectl apply --dry-run=server` with your kubeconfig
  kubectl blastguard check -f deploy.yaml --server

  # Deleting these objects
  kubectl blastguard check -f deploy.yaml --delete

  # A raw AdmissionReview: prints the response the webhook would send
  blastguard check --review review.json";

/// Output format of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table, then the full message of each denial and warning.
    Text,
    /// The JSON report (schema: docs/kubectl-plugin.md).
    Json,
    /// SARIF 2.1.0, for GitHub code scanning: denials as errors, warnings as
    /// warnings, at the line and column of each object.
    Sarif,
}

/// What an input without any Kubernetes object means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Empty {
    /// Bad input (exit 2): a render that came out empty usually hides a mistake.
    Error,
    /// Nothing to check passes (exit 0).
    Ok,
}

/// Arguments of `blastguard check`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct CheckArgs {
    /// Manifests to check: a file, a directory (recursively: .yaml, .yml, .json), or
    /// - for stdin. Multi-document YAML, JSON, and List kinds. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required_unless_present = "review"
    )]
    pub files: Vec<PathBuf>,

    /// The current state (e.g. `kubectl get -o yaml`): objects found here by group,
    /// kind, namespace and name are checked as updates; the rest as creations.
    /// Repeatable.
    #[arg(long, value_name = "FILE|DIR|-")]
    pub old: Vec<PathBuf>,

    /// Check the objects as deletions.
    #[arg(long)]
    pub delete: bool,

    /// Ask the cluster: judge each object as `kubectl apply --dry-run=server -o json`
    /// returns it (defaults and the cluster's mutating webhooks included) and as an
    /// update of the current object when one exists. Without it, the API server's
    /// defaults are applied offline; mutating webhooks cannot be foreseen.
    #[arg(long, conflicts_with = "delete")]
    pub server: bool,

    /// The kubectl `--server` runs (with the usual KUBECONFIG and context).
    #[arg(long, value_name = "PATH", default_value = "kubectl")]
    pub kubectl: String,

    /// Judge with the policy the cluster runs: the chart's ConfigMap (see
    /// --release-namespace, --policy-configmap), read with kubectl; an error when it
    /// cannot be read. `--server` reads it too, falling back to the embedded policy
    /// (and saying so) when it cannot.
    #[arg(long, conflicts_with = "policy")]
    pub policy_from_cluster: bool,

    /// The namespace blastguard is installed in (the policy ConfigMap's).
    #[arg(long, value_name = "NAMESPACE", default_value = policy_source::DEFAULT_NAMESPACE)]
    pub release_namespace: String,

    /// The policy ConfigMap's name (`<release>-policy`; its key is policy.yaml).
    #[arg(long, value_name = "NAME", default_value = policy_source::DEFAULT_CONFIGMAP)]
    pub policy_configmap: String,

    /// The user the change is made as [default: the local user name].
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,

    /// A group of that user. Repeatable.
    #[arg(long = "as-group", value_name = "GROUP")]
    pub as_groups: Vec<String>,

    /// The field manager the change is made with (as `kubectl apply
    /// --field-manager`). Deletions carry none.
    #[arg(long, value_name = "NAME")]
    pub field_manager: Option<String>,

    /// The namespace of namespaced objects that do not name one.
    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = synth::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// Policy file [default: the embedded policy].
    #[arg(long, env = "BLASTGUARD_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// OpenSSH allowed_signers file of trusted approvers [default: the policy's
    /// spec.approvals.allowedSigners, when that file exists].
    #[arg(long, env = "BLASTGUARD_ALLOWED_SIGNERS", value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,

    /// What input without any Kubernetes object means: `error` (exit 2, the report
    /// says so) or `ok` (exit 0), e.g. for a chart whose values render nothing.
    #[arg(long, value_enum, value_name = "error|ok", default_value_t = Empty::Error)]
    pub empty: Empty,

    /// Judge a raw AdmissionReview (file or -) and print the AdmissionReview response
    /// the webhook would send.
    #[arg(
        long,
        value_name = "FILE|-",
        conflicts_with_all = ["files", "old", "delete", "as_user", "as_groups", "field_manager", "output", "empty"]
    )]
    pub review: Option<PathBuf>,
}

/// Why `check` could not judge its input (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A manifest could not be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A manifest cannot become a request.
    #[error(transparent)]
    Synth(#[from] SynthError),
    /// The allowed_signers file could not be loaded.
    #[error(transparent)]
    Signers(#[from] SignersError),
    /// `--server`: the cluster could not answer.
    #[error(transparent)]
    Server(#[from] server::ServerError),
    /// The policy (`--policy`, or the cluster's with `--policy-from-cluster`) could
    /// not be loaded.
    #[error(transparent)]
    Policy(#[from] LoadPolicyError),
    /// The engine could not judge a request built from a manifest.
    #[error("{origin}: the review built from this object was not judged: {detail}")]
    NotJudged {
        /// Where the object came from.
        origin: String,
        /// The engine's error.
        detail: String,
    },
    /// `--review` input is not an AdmissionReview.
    #[error("{path}: {detail}")]
    Review {
        /// The file.
        path: String,
        /// The engine's error.
        detail: String,
    },
    /// Writing the output failed (e.g. a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs `check`: exit 0 when everything passes, 1 when anything is denied, 2 on bad
/// input.
pub fn run(args: CheckArgs) -> ExitCode {
    match execute(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("blastguard check: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn execute(args: CheckArgs) -> Result<u8, CheckError> {
    let Loaded {
        policy,
        source,
        note: fallback,
    } = policy_source::load(&PolicyChoice {
        file: args.policy.as_deref(),
        cluster: if args.policy_from_cluster {
            Cluster::Required
        } else if args.server {
            Cluster::Tried
        } else {
            Cluster::Not
        },
        kubectl: &args.kubectl,
        namespace: &args.release_namespace,
        configmap: &args.policy_configmap,
    })?;
    if let Some(note) = &fallback {
        eprintln!("blastguard check: note: {note}");
    }
    let verifier = load_verifier(&policy, args.allowed_signers.as_deref())?;
    if let Some(path) = &args.review {
        eprintln!("blastguard check: policy: {source}");
        return check_review(&Engine::new(policy, verifier), path);
    }
    let policy_name = policy.document.metadata.name.clone();

    // Every readable object is judged even when some input is bad: a CI log should
    // show all the verdicts and every problem at once, not the first problem alone.
    let mut problems = Vec::new();
    let mut reader = Reader::default();
    let mut manifests = read_all(&mut reader, &args.files, &mut problems);
    let mut old = read_all(&mut reader, &args.old, &mut problems);
    if manifests.is_empty() && problems.is_empty() && args.empty == Empty::Error {
        let sources: Vec<_> = args.files.iter().map(|p| p.display().to_string()).collect();
        let sources = sources.join(", ");
        problems.push(Problem {
            file: sources.clone(),
            line: None,
            column: None,
            message: format!(
                "no Kubernetes objects found in {sources}; pass --empty ok if nothing to check is fine"
            ),
        });
    }
    if args.server {
        // --old, when given, comes first: it is what the objects are matched to.
        let runs = server::dry_run(&args.kubectl, manifests)?;
        for note in &runs.notes {
            eprintln!("blastguard check: note: {note}");
        }
        manifests = runs.new;
        old.extend(runs.old);
    }
    // check reads no cluster: a rule's namespaceSelector is judged on the labels of the
    // Namespaces in the input (the new ones over the old).
    let state = State {
        namespaces: Arc::new(known_namespaces(old.iter().chain(&manifests))),
        sizes: Arc::new(known_sizes(&manifests, &old, &args.namespace)),
        ..State::in_memory()
    };
    // The kinds the API server sends: the chart registers the webhook for every
    // namespaced kind (each counts toward namespace reach), the cluster-scoped kinds
    // of the built-in list and the policy's custom workloads. Any other cluster-scoped
    // kind never reaches the webhook, so judging it here would count reach the cluster
    // never counts.
    let workloads = policy.document.spec.workloads.clone();
    let sent = |group: &str, kind: &str, review: &Value| {
        let namespaced = review
            .pointer("/request/namespace")
            .and_then(Value::as_str)
            .is_some_and(|ns| !ns.is_empty());
        namespaced
            || crate::kinds::find(group, kind).is_some()
            || workloads.iter().any(|w| w.group == group && w.kind == kind)
    };
    let engine = Engine::with_state(policy, verifier, state);

    let mut planner = Planner {
        resources: resources::Resources::builtin(),
        namespace: args.namespace.clone(),
        caller: Caller {
            username: args.as_user.clone().unwrap_or_else(local_user),
            groups: args.as_groups.clone(),
            field_manager: args.field_manager.clone(),
        },
    };
    planner.resources.learn_workloads(&workloads);
    planner.learn_definitions(manifests.iter().chain(&old));

    let mut outcomes = Vec::with_capacity(manifests.len());
    for p in planner.plan_each(manifests, old, args.delete) {
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                let origin = match &e {
                    SynthError::NoName { origin, .. }
                    | SynthError::GeneratedName { origin, .. } => origin,
                };
                problems.push(problem_at(origin, e.to_string()));
                continue;
            }
        };
        let (evaluation, skip) = match &p.review {
            Some(review) if !sent(&p.key.group, &p.key.kind, review) => (None, Skip::NotSent),
            None if !sent(&p.key.group, &p.key.kind, &Value::Null) => (None, Skip::NotSent),
            Some(review) => match evaluate(&engine, review, &p.origin) {
                Ok(e) => (Some(e), Skip::UnknownKind),
                Err(e) => {
                    problems.push(problem_at(&p.origin, e.to_string()));
                    continue;
                }
            },
            None => (None, Skip::UnknownKind),
        };
        outcomes.push(Outcome {
            origin: p.origin,
            key: p.key,
            operation: p.operation,
            evaluation,
            skip,
        });
    }

    let judged_by = output::ReportPolicy {
        source: source.to_string(),
        name: policy_name,
    };
    let rendered = match args.output {
        Format::Json => to_json(&output::report(&outcomes, &problems, &judged_by))?,
        Format::Sarif => to_json(&output::sarif(&outcomes, &problems))?,
        Format::Text => format!(
            "{}policy: {}\n",
            output::text(
                &outcomes,
                &problems,
                Style {
                    color: std::io::stdout().is_terminal() && !no_color(),
                },
            ),
            judged_by.describe()
        ),
    };
    // Problems go to stderr in every format: a machine report usually goes to a file
    // in CI, and the log must still say what was wrong.
    for p in &problems {
        eprintln!("blastguard check: {}", p.message);
    }
    let mut rendered = rendered;
    let payloads = outcomes.iter().any(|o| {
        o.evaluation
            .as_ref()
            .is_some_and(|e| e.verdict.payload.is_some())
    });
    if payloads && !args.server && args.output == Format::Text {
        // An approval collected from an offline digest fails in the cluster when a
        // mutating webhook changes the object: say so where the payload is shown.
        rendered.push_str(&format!(
            "\nnote: approval digests: {}\n",
            crate::defaults::MUTATING_WEBHOOKS_NOTE
        ));
    }
    print_out(rendered.as_bytes())?;
    Ok(if !problems.is_empty() {
        EXIT_BAD_INPUT
    } else if outcomes.iter().any(Outcome::denied) {
        EXIT_DENIED
    } else {
        EXIT_OK
    })
}

fn to_json(value: &impl serde::Serialize) -> Result<String, CheckError> {
    let mut json = serde_json::to_string_pretty(value).map_err(std::io::Error::from)?;
    json.push('\n');
    Ok(json)
}

/// A problem with one object, at its place in its file.
fn problem_at(origin: &input::Origin, message: String) -> Problem {
    let known = origin.line > 0;
    Problem {
        file: origin.file.clone(),
        line: known.then_some(origin.line),
        column: known.then_some(origin.column),
        message,
    }
}

/// Writes to stdout. A reader that stopped reading (`| head`) is not an error: the
/// exit code still tells the verdict.
fn print_out(bytes: &[u8]) -> Result<(), CheckError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `NO_COLOR` set to anything but the empty string turns colors off (no-color.org).
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// The local user name, as the requester when `--as` is not given.
fn local_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| FALLBACK_USER.to_string())
}

/// Every object of `sources`; what cannot be read is added to `problems`.
fn read_all(
    reader: &mut Reader,
    sources: &[PathBuf],
    problems: &mut Vec<Problem>,
) -> Vec<Manifest> {
    let mut out = Vec::new();
    let mut errors: Vec<InputError> = Vec::new();
    for source in sources {
        reader.read_into(source, &mut out, &mut errors);
    }
    problems.extend(errors.iter().map(|e| {
        let (file, place) = e.location();
        Problem {
            file: file.to_string(),
            line: place.map(|p| p.0),
            column: place.map(|p| p.1),
            message: e.to_string(),
        }
    }));
    out
}

/// The approval verifier `check` judges with: `--allowed-signers` (else the policy's
/// file when it exists; without one, no approval can be trusted, and denials say so).
fn load_verifier(
    policy: &Policy,
    signers: Option<&Path>,
) -> Result<Arc<dyn ApprovalVerifier>, CheckError> {
    let verifier: Arc<dyn ApprovalVerifier> = match signers {
        Some(path) => approval::load_verifier(path)?,
        None => {
            let path = Path::new(&policy.approvals.allowed_signers);
            if path.exists() {
                approval::load_verifier(path)?
            } else {
                Arc::new(NoTrustedSigners)
            }
        }
    };
    Ok(verifier)
}

/// The labels of the Namespaces among `manifests`; a later one with the same name
/// wins.
/// The workload sizes the input tells: a workload's replicas as the old objects have
/// them (the cluster's now), else as the new ones create them. An autoscaler whose
/// target is in neither is measured against an unknown size, which `check` reports
/// as such instead of guessing.
fn known_sizes(manifests: &[Manifest], old: &[Manifest], namespace: &str) -> InMemorySizes {
    let sizes = InMemorySizes::default();
    for m in manifests.iter().chain(old) {
        let o = &m.object;
        let (Some(api_version), Some(kind)) = (
            o.get("apiVersion").and_then(Value::as_str),
            o.get("kind").and_then(Value::as_str),
        ) else {
            continue;
        };
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        if crate::kinds::classify(group, kind) != crate::kinds::Workload::Replicated {
            continue;
        }
        let metadata = o.get("metadata");
        let field = |k: &str| metadata.and_then(|m| m.get(k)).and_then(Value::as_str);
        let Some(name) = field("name") else { continue };
        let target = crate::change::Target {
            group: group.to_string(),
            kind: kind.to_string(),
            // Where check puts an object that names no namespace (`-n`).
            namespace: Some(field("namespace").unwrap_or(namespace).to_string()),
            name: name.to_string(),
        };
        let replicas = o
            .get("spec")
            .and_then(|s| s.get("replicas"))
            .map_or(Some(1), Value::as_u64);
        sizes.observe(&target, replicas);
    }
    sizes
}

fn known_namespaces<'a>(manifests: impl Iterator<Item = &'a Manifest>) -> KnownNamespaces {
    let mut known = KnownNamespaces::default();
    for m in manifests {
        let o = &m.object;
        if o.get("apiVersion").and_then(Value::as_str) != Some("v1")
            || o.get("kind").and_then(Value::as_str) != Some("Namespace")
        {
            continue;
        }
        let metadata = o.get("metadata");
        let Some(name) = metadata.and_then(|m| m.get("name")).and_then(Value::as_str) else {
            continue;
        };
        let labels = metadata
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|l| {
                l.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        known.0.insert(name.to_string(), labels);
    }
    known
}

/// Judges one synthesized review and reads the verdict and the response's message
/// and warnings, exactly as the API server would receive them.
fn evaluate(
    engine: &Engine,
    review: &Value,
    origin: &input::Origin,
) -> Result<Evaluation, CheckError> {
    let not_judged = |detail: String| CheckError::NotJudged {
        origin: origin.to_string(),
        detail,
    };
    let body = serde_json::to_vec(review).map_err(|e| not_judged(e.to_string()))?;
    let judged = match engine.review(&body) {
        Reviewed::Judged(judged) => judged,
        other => {
            return Err(not_judged(
                other.error().map(|e| e.to_string()).unwrap_or_default(),
            ));
        }
    };
    let verdict = judged.verdict;
    let response: Value =
        serde_json::from_slice(&judged.body).map_err(|e| not_judged(e.to_string()))?;
    let message = response
        .pointer("/response/status/message")
        .and_then(Value::as_str)
        .filter(|_| !verdict.decision.allowed())
        .map(str::to_string);
    let warnings = response
        .pointer("/response/warnings")
        .and_then(Value::as_array)
        .map(|w| {
            w.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(Evaluation {
        verdict,
        message,
        warnings,
    })
}

/// `check --review`: prints the AdmissionReview the webhook would answer with.
fn check_review(engine: &Engine, path: &Path) -> Result<u8, CheckError> {
    let name = if path.as_os_str() == "-" {
        input::STDIN_NAME.to_string()
    } else {
        path.display().to_string()
    };
    let body = input::read_source(path)?;
    let reviewed = engine.review(&body);
    let Some(body) = reviewed.body() else {
        return Err(CheckError::Review {
            path: name,
            detail: reviewed.error().map(|e| e.to_string()).unwrap_or_default(),
        });
    };
    let mut answer = body.to_vec();
    answer.push(b'\n');
    print_out(&answer)?;
    match &reviewed {
        // A review with a uid but not judgeable: the answer is printed (the API server
        // would get it), and the input was still bad.
        Reviewed::Rejected { error, .. } | Reviewed::Unreadable { error } => {
            eprintln!("blastguard check: {name}: {error}");
            Ok(EXIT_BAD_INPUT)
        }
        Reviewed::Judged(_) if reviewed.allowed() => Ok(EXIT_OK),
        Reviewed::Judged(_) => Ok(EXIT_DENIED),
    }
}
