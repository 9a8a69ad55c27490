//! `kubectl blastguard request -f FILE`: records a change as an `ApprovalRequest`
//! without applying it, judged by the webhook's own engine (docs/approvals.md, "The
//! inbox").
//!
//! The object becomes the AdmissionReview the API server would send (as `check`
//! builds it, crate::cli::check::synth: an update of the live object when one exists,
//! made by the user kubectl acts as), and [`Engine::review`] judges it with the
//! cluster's policy and the namespace's labels. The engine's own denial is what is
//! recorded: the same subject, payload, rule, pods and limits exceeded as the webhook
//! would record for that change, so the request's name is the one a denied apply
//! finds. No rule and no digest is computed here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{InboxCluster, InboxError};
use crate::approval::ApprovalSubject;
use crate::approval::NoTrustedSigners;
use crate::approval::request::{ApprovalRequests, Denied, Found};
use crate::cli::check::input::{InputError, Manifest, Reader};
use crate::cli::check::resources::Resources;
use crate::cli::check::synth::{Caller, Planner, SynthError};
use crate::cli::policy_source::{self, LoadPolicyError, PolicyChoice};
use crate::cluster::requests::ApprovalRequest;
use crate::engine::{Engine, Reviewed, State};
use crate::policy::NamespaceLabels;
use crate::verdict::Reason;

/// Arguments of `request`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  kubectl blastguard request -f deploy.yaml --reason 'CHG-1234'\n\n\
    Records the change as an ApprovalRequest without applying it; a denied `kubectl apply` records\n\
    one by itself. The change is judged as the webhook judges it (the cluster's policy when you may\n\
    read it, the namespace's labels, the live object), made by the user kubectl acts as. The digest\n\
    is of the manifest with the API server's defaults applied offline: when the cluster's differs\n\
    (a mutating webhook), the denied apply records its own request."
)]
pub struct RequestArgs {
    /// The object to ask approval for (YAML or JSON; `-` reads standard input).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// The object's namespace when the manifest does not say.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Why the change is wanted (kept in the payload).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Where the inbox is.
    #[command(flatten)]
    pub cluster: InboxCluster,
}

/// Why no request was recorded.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// FILE could not be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// FILE holds not exactly one object.
    #[error("{file} holds {count} objects; request one object at a time")]
    NotOne {
        /// FILE, as given.
        file: String,
        /// How many objects FILE holds.
        count: usize,
    },
    /// `--namespace` names another namespace than the manifest.
    #[error("--namespace {flag} contradicts metadata.namespace {namespace} in {file}")]
    Namespace {
        /// FILE, as given.
        file: String,
        /// `--namespace`.
        flag: String,
        /// `metadata.namespace`.
        namespace: String,
    },
    /// The object cannot become a request.
    #[error(transparent)]
    Synth(#[from] SynthError),
    /// A kind blastguard does not judge.
    #[error("{file}: kind {kind} is not one blastguard judges: no approval is needed")]
    UnknownKind {
        /// FILE, as given.
        file: String,
        /// `kind` as the manifest writes it.
        kind: String,
    },
    /// The user kubectl acts as is unknown, and the webhook judges by it.
    #[error(
        "kubectl auth whoami did not name the user kubectl acts as, and the webhook judges a change by its requester"
    )]
    Requester,
    /// The policy file could not be used.
    #[error(transparent)]
    Policy(#[from] LoadPolicyError),
    /// The engine did not judge the review built from the object.
    #[error("{file}: the review built from this object was not judged: {detail}")]
    NotJudged {
        /// FILE, as given.
        file: String,
        /// The engine's error.
        detail: String,
    },
    /// The webhook would not deny this change for want of an approval.
    #[error(
        "the webhook would not deny this change for want of an approval ({reason}): nothing to request"
    )]
    NotDenied {
        /// Why it would decide as it does (`within_limits`, `not_ai_assisted`, ...).
        reason: &'static str,
    },
    /// The inbox could not be written.
    #[error(transparent)]
    Inbox(#[from] InboxError),
}

/// What was recorded.
#[derive(Debug)]
pub struct Recorded {
    /// The request's name (the one a denied apply of the same change finds).
    pub name: String,
    /// The record as written (or as it would have been, when it existed already).
    pub record: ApprovalRequest,
    /// `false`: a request for this exact change existed already.
    pub created: bool,
    /// What the judgement could not know (the cluster's policy, the namespace's
    /// labels), one line each.
    pub notes: Vec<String>,
}

/// The engine's inbox while judging one change: it holds the denial the engine
/// records, and knows no earlier record (a signed one is found by the retry, not
/// here).
#[derive(Default)]
struct Captured(Mutex<Option<Denied>>);

impl ApprovalRequests for Captured {
    fn find(&self, _subject: &ApprovalSubject) -> Found {
        Found::Nothing
    }
    fn record(&self, denied: Denied) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(denied);
    }
    fn spent(&self, _name: &str, _uid: &str) {}
}

/// The labels of the one namespace read from the cluster; `None` (the strictest rule
/// that could match, as the webhook when it cannot know) when they could not be read.
struct OneNamespace {
    name: String,
    labels: Option<BTreeMap<String, String>>,
}

impl NamespaceLabels for OneNamespace {
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        if namespace == self.name {
            self.labels.clone()
        } else {
            None
        }
    }
}

/// Judges FILE's object as the webhook would and records the engine's denial.
pub fn record(args: &RequestArgs) -> Result<Recorded, RequestError> {
    let file = args.file.display().to_string();
    let mut manifests = Reader::default().read(&args.file)?;
    if manifests.len() != 1 {
        return Err(RequestError::NotOne {
            file,
            count: manifests.len(),
        });
    }
    let manifest = manifests.remove(0);
    let cluster = &args.cluster;
    let mut notes = Vec::new();
    let loaded = policy_source::load(&PolicyChoice::of_release(
        &cluster.kubectl,
        &cluster.release_namespace,
        policy_source::Cluster::Tried,
    ))?;
    notes.extend(loaded.note);
    let policy = loaded.policy;
    let requester = cluster.whoami().ok_or(RequestError::Requester)?;
    let mut planner = Planner {
        resources: Resources::builtin(),
        namespace: args
            .namespace
            .clone()
            .unwrap_or_else(|| crate::cli::check::synth::DEFAULT_NAMESPACE.to_string()),
        caller: Caller {
            username: requester,
            groups: Vec::new(),
            field_manager: None,
        },
    };
    planner
        .resources
        .learn_workloads(&policy.document.spec.workloads);
    let written = manifest
        .object
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    if let (Some(flag), Some(namespace)) = (&args.namespace, written)
        && flag != namespace
    {
        return Err(RequestError::Namespace {
            file,
            flag: flag.clone(),
            namespace: namespace.to_string(),
        });
    }
    let (group, kind) = (planner.key(&manifest).group, planner.key(&manifest).kind);
    if planner.resources.lookup(&group, &kind).is_none() {
        // A custom kind: the API server sends it to the webhook in the scope the
        // manifest (or --namespace) gives it.
        let namespaced = written.is_some() || args.namespace.is_some();
        planner
            .resources
            .learn_kind(&group, &kind, None, namespaced);
    }
    let key = planner.key(&manifest);
    let namespace = key.namespace.clone().unwrap_or_default();
    // The live object makes it the update the API server would send.
    let old: Vec<Manifest> = cluster
        .live(&key.group, &key.kind, &namespace, &key.name)
        .and_then(|live| match live {
            Value::Object(object) => Some(Manifest {
                object,
                origin: manifest.origin.clone(),
            }),
            _ => None,
        })
        .into_iter()
        .collect();
    let labels = if namespace.is_empty() {
        Some(BTreeMap::new())
    } else {
        let labels = cluster.namespace_labels(&namespace);
        if labels.is_none() {
            notes.push(format!(
                "the labels of namespace {namespace} could not be read: judged by the strictest rule that could match it"
            ));
        }
        labels
    };
    let planned = planner
        .plan(vec![manifest], old, false)?
        .pop()
        .expect("one manifest, one plan");
    let review = planned.review.ok_or_else(|| RequestError::UnknownKind {
        file: file.clone(),
        kind: planned.key.kind.clone(),
    })?;
    let captured = Arc::new(Captured::default());
    let engine = Engine::with_state(
        policy,
        Arc::new(NoTrustedSigners),
        State {
            namespaces: Arc::new(OneNamespace {
                name: namespace,
                labels,
            }),
            ..State::in_memory()
        },
    );
    engine.set_requests(captured.clone());
    let body = serde_json::to_vec(&review).expect("a review serializes");
    let verdict = match engine.review(&body) {
        Reviewed::Judged(judged) => judged.verdict,
        other => {
            return Err(RequestError::NotJudged {
                file,
                detail: other.error().map(|e| e.to_string()).unwrap_or_default(),
            });
        }
    };
    let denied = captured.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(mut denied) = denied.filter(|_| verdict.reason == Reason::OverLimits) else {
        return Err(RequestError::NotDenied {
            reason: verdict.reason.as_str(),
        });
    };
    denied.payload.reason = args.reason.clone().unwrap_or_default();
    let name = denied.name();
    let mut spec = denied.spec("plugin");
    // Recorded, not denied: the first denied apply counts as the first attempt.
    spec.attempts = 0;
    let record = ApprovalRequest::new(&name, spec);
    let created = cluster.create(&record)?;
    Ok(Recorded {
        name,
        record,
        created,
        notes,
    })
}
