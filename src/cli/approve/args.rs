//! The flags of `digest` and `approve`.

use std::path::PathBuf;
use std::time::Duration;

use crate::approval::ApprovalOperation;

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

impl ChangeArgs {
    /// FILE (`-f`); clap requires it wherever it is the input (`approve NAME` takes a
    /// request instead), so `-` is only what an absent value would mean.
    pub fn file(&self) -> &std::path::Path {
        self.file.as_deref().unwrap_or(std::path::Path::new("-"))
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

#[cfg(test)]
impl ChangeArgs {
    /// The arguments of `approve -f FILE` and nothing else, for the stages' tests.
    pub(crate) fn for_file(file: &std::path::Path) -> Self {
        Self {
            file: Some(file.to_path_buf()),
            review: false,
            operation: None,
            replicas: None,
            namespace: None,
            cluster_scoped: false,
            ttl: None,
            reason: None,
            restart: None,
            policy: None,
        }
    }
}

/// Arguments of `blastguard digest`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    kubectl get deployment api -n prod -o json | blastguard digest -f -\n  \
    blastguard digest -f deploy.yaml --operation scale --replicas 40\n  \
    blastguard digest --review -f review.json")]
#[command(group(clap::ArgGroup::new("input").args(["file"]).required(true)))]
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
    by object in one command; --payload then applies to the object it names.")]
#[command(group(clap::ArgGroup::new("input").args(["file", "request"]).required(true)))]
pub struct ApproveArgs {
    /// An `ApprovalRequest` of the inbox to approve (instead of -f FILE): its
    /// recorded object is checked against its payload's digest, then the payload is
    /// signed and the signature added to the request.
    #[arg(value_name = "NAME")]
    pub request: Option<String>,
    /// Where the inbox is (with NAME).
    #[command(flatten)]
    pub inbox: crate::cli::inbox::kubectl::InboxCluster,
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
