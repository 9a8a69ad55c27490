//! Why `digest` or `approve` refused (exit 2): one type, so a caller (and a test) can
//! tell a payload that does not match its manifest from a file that cannot be read,
//! and each variant says what is wrong and where.

use std::fmt;

use super::annotate::AnnotateError;
use crate::annotations::{APPROVAL, APPROVAL_SIGNATURE};
use crate::approval::ApprovalSubject;
use crate::approval::digest::DigestError;
use crate::approval::payload::PayloadError;
use crate::approval::signing::SignError;
use crate::cli::check::input::InputError;
use crate::cli::check::synth::SynthError;
use crate::cli::policy_source::LoadPolicyError;
use crate::defaults;
use crate::review::ReviewError;

/// Why `digest` or `approve` refused.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    /// FILE (or a payload or signature file) could not be read.
    #[error("cannot read {0}")]
    Read(#[from] InputError),
    /// The policy (for its maxTTL and allowed_signers) could not be loaded.
    #[error(transparent)]
    Policy(#[from] LoadPolicyError),
    /// Flags that cannot go together, or one that needs another.
    #[error("{0}")]
    Usage(&'static str),
    /// FILE does not hold what the command needs.
    #[error("{file}: {problem}")]
    File {
        /// FILE (or `-`), as given.
        file: String,
        /// What is wrong with it.
        problem: FileProblem,
    },
    /// A problem with one object of a file of several.
    #[error("{who}: {source}")]
    OneOf {
        /// `Kind namespace/name`.
        who: String,
        /// The problem.
        source: Box<ApproveError>,
    },
    /// The object cannot be approved as asked.
    #[error(transparent)]
    Subject(#[from] SubjectProblem),
    /// A payload (given, on the object, or in FILE) does not parse.
    #[error("{what} is not usable: {source}")]
    Payload {
        /// Which payload.
        what: String,
        /// Why.
        source: PayloadError,
    },
    /// A payload approves another change than FILE's.
    #[error(transparent)]
    Mismatch(#[from] Box<Mismatch>),
    /// The payload is expired or longer than maxTTL: the webhook would refuse it.
    #[error(transparent)]
    Unusable(#[from] Unusable),
    /// The object could not be digested.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The key already signed this approval.
    #[error("key {0} has already signed this approval")]
    AlreadySigned(String),
    /// A `--signature` file (or the object's signature annotation) is unusable.
    #[error("{path}: {problem}")]
    Signature {
        /// The file, or the annotation.
        path: String,
        /// Why.
        problem: SignatureProblem,
    },
    /// The approval could not be written into the object or the file.
    #[error(transparent)]
    Output(#[from] OutputProblem),
    /// The annotated file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What FILE holds that the command cannot use.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    /// No document is an object.
    #[error("holds no object")]
    NoObject,
    /// A `List` (an approval binds one object).
    #[error("document {0} is a List; approve one object at a time (kubectl get KIND NAME -o json)")]
    List(usize),
    /// A payload or review among several objects.
    #[error(
        "document {0} is not a Kubernetes object; a file of several documents holds only objects"
    )]
    NotAnObject(usize),
    /// `--review` on something else.
    #[error("not an AdmissionReview (kind {0:?})")]
    NotAReview(String),
    /// An AdmissionReview the webhook would not judge.
    #[error(transparent)]
    Review(#[from] ReviewError),
    /// `--restart` cannot be applied to the object.
    #[error("--restart: {0}")]
    Restart(#[from] RestartError),
    /// `digest` of a file of several objects.
    #[error("holds {0} objects; digest one object at a time (blastguard approve takes them all)")]
    SeveralToDigest(usize),
    /// `digest` of a payload.
    #[error("is already an approval payload; sign it with blastguard approve")]
    AlreadyAPayload,
    /// `--signature` with a file of several objects.
    #[error(
        "holds {0} objects, each with its own payload; attach a --signature to one object's manifest at a time"
    )]
    SignatureForSeveral(usize),
    /// `--payload` names an object the file does not hold.
    #[error("the payload given with --payload approves {0}, which is not in this file")]
    PayloadNotHere(String),
    /// `--payload` on an object that carries another approval.
    #[error(
        "already carries a different approval; remove its {} and {} annotations to start over with --payload",
        crate::annotations::APPROVAL,
        crate::annotations::APPROVAL_SIGNATURE
    )]
    DifferentApproval,
}

/// Why an object cannot be approved as asked.
#[derive(Debug, thiserror::Error)]
pub enum SubjectProblem {
    /// No `metadata.name`.
    #[error("metadata.name is not set: an approval is bound to one named object")]
    NoName,
    /// No namespace, and not said to be cluster-scoped.
    #[error(
        "metadata.namespace is not set: pass --namespace NAME (or --cluster-scoped for a cluster-scoped object)"
    )]
    NoNamespace,
    /// `--namespace` names another namespace than the object.
    #[error("--namespace {flag} contradicts metadata.namespace {namespace}")]
    NamespaceContradicts {
        /// `--namespace`.
        flag: String,
        /// `metadata.namespace`.
        namespace: String,
    },
    /// `--cluster-scoped` on an object with a namespace.
    #[error("--cluster-scoped contradicts metadata.namespace")]
    ClusterScopedContradicts,
    /// `--cluster-scoped` on a kind known to be namespaced.
    #[error("{0} is namespaced: --cluster-scoped does not apply")]
    Namespaced(String),
    /// A scale approval without its count.
    #[error("--replicas N (the exact replica count approved) is required with --operation scale")]
    ReplicasRequired,
    /// `--replicas` on an apply or delete.
    #[error("--replicas only applies to --operation scale")]
    ReplicasNotScale,
    /// `--replicas` below what the request asks for.
    #[error("--replicas {replicas} is below the {requested} replicas the request asks for")]
    ReplicasBelow {
        /// `--replicas`.
        replicas: u64,
        /// The count the review or payload asks for.
        requested: u64,
    },
    /// The object is not a mapping.
    #[error("the object is not a mapping")]
    NotAMapping,
    /// The object cannot become the request the webhook would judge.
    #[error("the object as a request: {0}")]
    Synth(#[from] SynthError),
    /// The request built from the object does not read as the webhook reads it.
    #[error("the object as a request: {0}")]
    Request(#[from] ReviewError),
}

/// Why a payload would be refused by the webhook.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    /// `--ttl` over the policy's maxTTL.
    #[error(
        "--ttl {ttl} is longer than the policy's maxTTL of {max}: the webhook would refuse the approval"
    )]
    TtlOverMax {
        /// The flag, as given.
        ttl: String,
        /// The policy's maxTTL.
        max: String,
    },
    /// `--ttl` ending past what RFC 3339 can write.
    #[error("--ttl {0} ends after year 9999")]
    TtlPastYear9999(String),
    /// The payload's notAfter has passed.
    #[error("the approval expired at {not_after} (now is {now}); start a new one")]
    Expired {
        /// Its notAfter.
        not_after: String,
        /// Now (RFC 3339).
        now: String,
    },
    /// The payload's window is longer than maxTTL.
    #[error(
        "the approval is valid for {valid}, longer than the policy's maxTTL of {max}: the webhook would refuse it"
    )]
    WindowOverMax {
        /// How long it is valid.
        valid: String,
        /// The policy's maxTTL.
        max: String,
    },
}

/// Why a signature cannot be attached.
#[derive(Debug, thiserror::Error)]
pub enum SignatureProblem {
    /// The object's signature annotation does not parse.
    #[error("the object's annotation is not usable: {0}")]
    Annotation(String),
    /// A `--signature` file holds no SSH signature.
    #[error("not an SSH signature: {0}")]
    NotASignature(String),
    /// It signs another payload.
    #[error(
        "does not verify over the payload being approved ({0}); sign exactly that payload with: \
         ssh-keygen -Y sign -n {ns} -f KEY payload.json",
        ns = crate::approval::payload::SIGNATURE_NAMESPACE
    )]
    OtherPayload(String),
    /// Its key signed already.
    #[error("key {0} has already signed this approval")]
    AlreadySigned(String),
    /// It cannot be written back as an armored signature.
    #[error("cannot armor the signature: {0}")]
    Armor(String),
}

/// Why `--restart` cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestartError {
    /// TIME is not an RFC 3339 time.
    #[error("{time:?} is not an RFC 3339 time ({problem})")]
    Time {
        /// As given.
        time: String,
        /// The parser's words.
        problem: String,
    },
    /// The object has no pod template.
    #[error("the object has no pod template (spec.template) to restart")]
    NoTemplate,
    /// A part of the template that must be a mapping is not.
    #[error("{0} is not a mapping")]
    NotAMapping(&'static str),
}

/// Why the approval could not be written into the output.
#[derive(Debug, thiserror::Error)]
pub enum OutputProblem {
    /// The annotations do not serialize as YAML.
    #[error("cannot write the annotations as YAML: {0}")]
    Yaml(String),
    /// `--annotate` of a JSON file of several objects.
    #[error("the annotated file: a JSON file holds one object")]
    JsonOfSeveral,
    /// `--annotate` of what is not an object.
    #[error("the annotated file: not an object")]
    NotAnObject,
    /// The YAML text could not be edited.
    #[error("the annotated file: {0}")]
    Annotate(#[from] AnnotateError),
}

impl ApproveError {
    /// This error, about the object `who` of several.
    pub fn of(self, who: Option<&str>) -> Self {
        match who {
            Some(who) => ApproveError::OneOf {
                who: who.to_string(),
                source: Box::new(self),
            },
            None => self,
        }
    }

    /// A problem with FILE.
    pub fn file(file: impl Into<String>, problem: FileProblem) -> Self {
        ApproveError::File {
            file: file.into(),
            problem,
        }
    }
}

/// A payload approves another change than FILE's: both sides named, so the approver
/// sees they were about to sign a change other than the one they read.
#[derive(Debug)]
pub struct Mismatch {
    /// Which payload (`the payload given with --payload`, ...).
    pub what: String,
    /// FILE.
    pub file: String,
    /// What the payload approves.
    pub approved: ApprovalSubject,
    /// What FILE must be approved as.
    pub actual: ApprovalSubject,
    /// The verifier's words.
    pub detail: String,
    /// When FILE was digested with defaults applied here: what cannot be foreseen.
    pub defaulted_here: Option<Vec<String>>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, file, detail) = (&self.what, &self.file, &self.detail);
        let digest = |s: &ApprovalSubject| s.digest.clone().unwrap_or_else(|| "none".into());
        if self.approved.operation != self.actual.operation
            || self.approved.target != self.actual.target
        {
            write!(
                f,
                "{what} approves {} {} (digest {}), but {file} is {} {} (digest {}): {detail}",
                self.approved.operation.as_str(),
                self.approved.target,
                digest(&self.approved),
                self.actual.operation.as_str(),
                self.actual.target,
                digest(&self.actual),
            )?;
        } else {
            match (&self.approved.digest, &self.actual.digest) {
                (Some(approved), Some(actual)) if approved != actual => write!(
                    f,
                    "{what} does not match {file}: it approves digest {approved}, but {file} has digest {actual}: \
                     the object was changed after it was approved, or the payload is for another object, \
                     and signing it would approve a change you have not seen"
                )?,
                _ => write!(f, "{what} does not match {file}: {detail}")?,
            }
        }
        if let Some(unforeseeable) = &self.defaulted_here {
            write!(
                f,
                " ({file} was digested with the API server's defaults applied; {}",
                defaults::MUTATING_WEBHOOKS_NOTE
            )?;
            for u in unforeseeable {
                write!(f, "; {u}")?;
            }
            f.write_str(")")?;
        }
        write!(
            f,
            "; if {file} is what you mean to approve, remove its {APPROVAL} and {APPROVAL_SIGNATURE} \
             annotations (or drop --payload) and approve it anew"
        )
    }
}

impl std::error::Error for Mismatch {}
