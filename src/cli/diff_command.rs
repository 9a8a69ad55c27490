//! `blastguard diff -f FILE` (`kubectl blastguard diff`): what an approver reads before
//! signing: for each object of FILE, the change against the live object, with its
//! target, operation, summary and digest.
//!
//! The requested object is the API server's dry run when the cluster answers one.
//! blastguard itself denies the dry run of an AI change over a limit, and an AI-marked
//! live object stays AI-assisted without its markers (sticky provenance), so for those
//! the requested object is foreseen offline, exactly as `check` foresees it (the
//! manifest applied over the live object, with the API server's defaults), and its
//! digest is held against the one the cluster's denial asks for: when they agree, the
//! diff shown is of the object the approval will bind.

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use super::EXIT_BAD_INPUT;
use super::check::input::{InputError, Manifest, Reader};
use super::check::resources::Resources;
use super::check::server::{self, Requested, ServerError};
use super::check::synth::{self, Caller, Planner, SynthError};
use super::field_diff::{Diff, diff};
use super::policy_source::{self, Cluster, PolicyChoice, PolicySource};
use crate::approval::{ApprovalPayload, ApprovalSubject, summary};
use crate::change::Change;
use crate::policy::Policy;

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// One JSON document: `{"policy": ..., "objects": [...]}`.
    Json,
}

/// Arguments of `blastguard diff`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    kubectl blastguard diff -f deploy.yaml\n  \
    kubectl blastguard diff -f deploy.yaml -o json\n\n\
    Read what a change does before signing it: only the fields that change are listed,\n\
    the approval's own annotations left out, with the digest the approval must bind.")]
pub struct DiffArgs {
    /// The manifests (file, directory or -), as `check -f` reads them. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<PathBuf>,
    /// The kubectl to run (with the usual KUBECONFIG and context).
    #[arg(long, value_name = "PATH", default_value = "kubectl")]
    pub kubectl: String,
    /// The namespace of namespaced objects that do not name one.
    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = synth::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Policy file (provenance signals, custom workloads) [default: the cluster's
    /// ConfigMap, else the embedded policy].
    #[arg(long, env = "BLASTGUARD_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The namespace blastguard is installed in (the policy ConfigMap's).
    #[arg(long, value_name = "NAMESPACE", default_value = policy_source::DEFAULT_NAMESPACE)]
    pub release_namespace: String,
    /// The policy ConfigMap's name.
    #[arg(long, value_name = "NAME", default_value = policy_source::DEFAULT_CONFIGMAP)]
    pub policy_configmap: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// Why `diff` could not show a change (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// FILE could not be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The cluster could not answer.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The policy could not be loaded.
    #[error(transparent)]
    Policy(#[from] policy_source::LoadPolicyError),
    /// A manifest cannot become a request.
    #[error(transparent)]
    Synth(#[from] SynthError),
    /// The request built from a manifest was not understood.
    #[error("{origin}: {detail}")]
    NotJudged {
        /// Where the object came from.
        origin: String,
        /// Why.
        detail: String,
    },
    /// FILE holds no object.
    #[error("no Kubernetes objects found in {0}")]
    Empty(String),
}

/// Where the requested object shown comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Basis {
    /// The API server's dry run: exactly what it would store.
    ServerDryRun,
    /// Foreseen here over the live object (blastguard denied the dry run).
    Offline,
}

/// One object's change, as shown to the approver.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shown {
    /// Where it was read from.
    pub origin: String,
    /// `Kind namespace/name` (group included for non-core kinds).
    pub target: String,
    /// The approval operation (`apply`).
    pub operation: &'static str,
    /// The request the API server would send: CREATE or UPDATE.
    pub request: &'static str,
    /// What the change does, in one line.
    pub summary: String,
    /// The digest of the requested object, computed here.
    pub digest: Option<String>,
    /// The digest the cluster's denial asks for, when it denied the dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_digest: Option<String>,
    /// What the requested object is.
    pub basis: Basis,
    /// The cluster's denial, first line (the payload to sign is its own line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied: Option<String>,
    /// The fields that change.
    pub diff: Diff,
}

impl Shown {
    /// Whether the diff is of the object the cluster's approval will bind.
    pub fn digests_agree(&self) -> bool {
        self.cluster_digest.is_none() || self.cluster_digest == self.digest
    }
}

/// Runs `diff`.
pub fn run(args: DiffArgs) -> ExitCode {
    match execute(&args) {
        Ok((source, shown)) => {
            let text = match args.output {
                Format::Json => {
                    let doc = serde_json::json!({"policy": source.to_string(), "objects": shown});
                    format!(
                        "{}\n",
                        serde_json::to_string_pretty(&doc).expect("serializable")
                    )
                }
                Format::Text => shown.iter().map(render).collect::<Vec<_>>().join("\n"),
            };
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("blastguard diff: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn execute(args: &DiffArgs) -> Result<(PolicySource, Vec<Shown>), DiffError> {
    let policy_source::Loaded {
        policy,
        source,
        note,
    } = policy_source::load(&PolicyChoice {
        file: args.policy.as_deref(),
        cluster: Cluster::Tried,
        kubectl: &args.kubectl,
        namespace: &args.release_namespace,
        configmap: &args.policy_configmap,
    })?;
    if let Some(note) = note {
        tracing::debug!(%note, "diff reads provenance from the embedded policy");
    }
    let mut reader = Reader::default();
    let mut manifests = Vec::new();
    for file in &args.files {
        manifests.extend(reader.read(file)?);
    }
    if manifests.is_empty() {
        let files: Vec<_> = args.files.iter().map(|f| f.display().to_string()).collect();
        return Err(DiffError::Empty(files.join(", ")));
    }
    let mut planner = Planner {
        resources: Resources::builtin(),
        namespace: args.namespace.clone(),
        caller: Caller {
            username: "blastguard-diff".to_string(),
            groups: Vec::new(),
            field_manager: None,
        },
    };
    planner.learn_definitions(&manifests);
    let mut shown = Vec::with_capacity(manifests.len());
    for m in manifests {
        let answer = server::answer(&args.kubectl, &m)?;
        let cluster_payload = answer
            .requested
            .payload()
            .and_then(|p| ApprovalPayload::parse(p).ok());
        let denied = match &answer.requested {
            Requested::Denied { message } => message.lines().next().map(str::to_string),
            Requested::Served(_) => None,
        };
        let (requested, basis) = match answer.requested {
            Requested::Served(object) => (
                Manifest {
                    object,
                    origin: m.origin.clone(),
                },
                Basis::ServerDryRun,
            ),
            Requested::Denied { .. } => (m, Basis::Offline),
        };
        let current: Vec<Manifest> = answer
            .current
            .into_iter()
            .map(|object| Manifest {
                object,
                origin: requested.origin.clone(),
            })
            .collect();
        shown.push(show_one(
            &planner,
            &policy,
            requested,
            current,
            basis,
            cluster_payload,
            denied,
        )?);
    }
    Ok((source, shown))
}

/// The change of one object, through the same request the webhook would judge.
fn show_one(
    planner: &Planner,
    policy: &Policy,
    requested: Manifest,
    current: Vec<Manifest>,
    basis: Basis,
    cluster_payload: Option<ApprovalPayload>,
    denied: Option<String>,
) -> Result<Shown, DiffError> {
    let origin = requested.origin.to_string();
    let planned = planner
        .plan(vec![requested], current, false)?
        .pop()
        .expect("one manifest, one plan");
    let not_judged = |detail: String| DiffError::NotJudged {
        origin: origin.clone(),
        detail,
    };
    let review = planned.review.ok_or_else(|| {
        not_judged(format!(
            "kind {} is not one blastguard judges",
            planned.key.kind
        ))
    })?;
    let body = serde_json::to_vec(&review).map_err(|e| not_judged(e.to_string()))?;
    let request = crate::review::decode(&body).map_err(|r| not_judged(r.error.to_string()))?;
    let change = Change::from_view(&request, policy).map_err(|e| not_judged(e.to_string()))?;
    let subject = ApprovalSubject::of_without(&change, &policy.approvals.unsigned_labels)
        .map_err(|e| not_judged(e.to_string()))?;
    let object = |pointer: &str| review.pointer(pointer).filter(|v| !v.is_null());
    let diff = diff(object("/request/oldObject"), object("/request/object"));
    let summary = match &cluster_payload {
        Some(p) if !p.summary.is_empty() => p.summary.clone(),
        _ => summary::of_change(&change, None),
    };
    Ok(Shown {
        origin,
        target: subject.target.to_string(),
        operation: subject.operation.as_str(),
        request: change.operation.as_str(),
        summary,
        digest: subject.digest,
        cluster_digest: cluster_payload.and_then(|p| p.digest),
        basis,
        denied,
        diff,
    })
}

/// One object's change for people.
pub fn render(shown: &Shown) -> String {
    let mut out = format!("{} ({})\n", shown.target, shown.request.to_lowercase());
    let line = |out: &mut String, name: &str, value: &str| {
        out.push_str(&format!("  {name:<10} {value}\n"));
    };
    line(&mut out, "operation:", shown.operation);
    if !shown.summary.is_empty() {
        line(&mut out, "summary:", &shown.summary);
    }
    let digest = shown.digest.as_deref().unwrap_or("none");
    let digest = match (&shown.cluster_digest, shown.digests_agree()) {
        (Some(_), true) => format!("{digest} (the cluster asks for this digest)"),
        (Some(cluster), false) => format!(
            "{digest}, but the cluster asks for {cluster}: the cluster changes the object in ways \
             not foreseen here (a mutating webhook?); this diff is not of what you would sign"
        ),
        (None, _) => digest.to_string(),
    };
    line(&mut out, "digest:", &digest);
    let basis = match shown.basis {
        Basis::ServerDryRun => "the API server's dry run against the live object".to_string(),
        Basis::Offline => {
            "the manifest applied over the live object here (blastguard denies the dry run)"
                .to_string()
        }
    };
    line(&mut out, "from:", &basis);
    if let Some(denied) = &shown.denied {
        line(&mut out, "cluster:", denied);
    }
    out.push_str(&shown.diff.to_string());
    out
}

/// The object a review carries, for tests of [`render`].
#[cfg(test)]
fn shown(diff: Diff, cluster_digest: Option<&str>) -> Shown {
    Shown {
        origin: "deploy.yaml:1:1 (document 1)".into(),
        target: "Deployment payments/web (group apps)".into(),
        operation: "apply",
        request: "UPDATE",
        summary: "replicas 20 → 40, 20 pods affected".into(),
        digest: Some("sha256:aa".into()),
        cluster_digest: cluster_digest.map(str::to_string),
        basis: Basis::Offline,
        denied: Some("admission webhook \"validate.blastguard.io\" denied the request".into()),
        diff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn the_text_names_target_operation_summary_digest_and_the_fields() {
        let d = diff(
            Some(&json!({"spec": {"replicas": 20}})),
            Some(&json!({"spec": {"replicas": 40}})),
        );
        let text = render(&shown(d, Some("sha256:aa")));
        assert_eq!(
            text,
            "Deployment payments/web (group apps) (update)\n  \
             operation: apply\n  \
             summary:   replicas 20 → 40, 20 pods affected\n  \
             digest:    sha256:aa (the cluster asks for this digest)\n  \
             from:      the manifest applied over the live object here (blastguard denies the dry run)\n  \
             cluster:   admission webhook \"validate.blastguard.io\" denied the request\n\
             ~ spec.replicas: 20 → 40\n"
        );
    }

    #[test]
    fn a_digest_the_cluster_does_not_ask_for_is_said() {
        let text = render(&shown(Diff::default(), Some("sha256:bb")));
        assert!(
            text.contains("but the cluster asks for sha256:bb"),
            "{text}"
        );
        assert!(!shown(Diff::default(), Some("sha256:bb")).digests_agree());
        assert!(shown(Diff::default(), None).digests_agree());
    }

    #[test]
    fn an_offline_update_is_shown_through_the_engines_request() {
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "payments", "uid": "u1",
                "resourceVersion": "5", "annotations": {"blastguard.io/ai-agent": "claude-code"}},
            "spec": {"replicas": 20, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}
        });
        let mut manifest = live.clone();
        // A live object carries the API server's defaults.
        let mut live = live;
        crate::defaults::apply(&mut live);
        let md = manifest["metadata"].as_object_mut().unwrap();
        md.remove("uid");
        md.remove("resourceVersion");
        manifest["spec"]["replicas"] = json!(40);
        manifest["metadata"]["annotations"]["blastguard.io/approval"] = json!("{}");
        let planner = Planner {
            resources: Resources::builtin(),
            namespace: "default".into(),
            caller: Caller {
                username: "u".into(),
                groups: vec![],
                field_manager: None,
            },
        };
        let to_manifest = |v: Value| Manifest {
            object: v.as_object().unwrap().clone(),
            origin: Default::default(),
        };
        let shown = show_one(
            &planner,
            &Policy::embedded(),
            to_manifest(manifest),
            vec![to_manifest(live)],
            Basis::Offline,
            None,
            None,
        )
        .unwrap();
        assert_eq!(shown.request, "UPDATE");
        assert_eq!(shown.target, "Deployment payments/web (group apps)");
        // Only the replicas change: the server's defaults applied to both sides
        // and the approval's annotation are not part of the diff.
        assert_eq!(shown.diff.to_string(), "~ spec.replicas: 20 → 40\n");
        assert!(
            shown.summary.contains("replicas 20 → 40"),
            "{}",
            shown.summary
        );
        assert!(
            shown
                .digest
                .as_deref()
                .is_some_and(|d| d.starts_with("sha256:"))
        );
    }
}
