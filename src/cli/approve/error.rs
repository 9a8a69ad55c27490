//! Why `digest` or `approve` refused (exit 2): one type, so a caller (and a test) can
//! tell a payload that does not match its manifest from a file that cannot be read.

use crate::approval::digest::DigestError;
use crate::approval::payload::PayloadError;
use crate::approval::signing::SignError;
use crate::cli::check::input::InputError;
use crate::policy::PolicyError;

/// Why `digest` or `approve` refused.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    /// FILE (or a payload or signature file) could not be read.
    #[error("cannot read {0}")]
    Read(#[from] InputError),
    /// The policy (for its maxTTL and allowed_signers) could not be loaded.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Flags that cannot go together, or one that needs another.
    #[error("{0}")]
    Usage(&'static str),
    /// FILE does not hold what the command needs.
    #[error("{file}: {problem}")]
    File {
        /// The file.
        file: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A problem with one object of a file of several.
    #[error("{who}: {source}")]
    OneOf {
        /// `Kind namespace/name`.
        who: String,
        /// The problem.
        source: Box<ApproveError>,
    },
    /// The object cannot be approved as asked (no name, no namespace, a flag that
    /// contradicts it).
    #[error("{0}")]
    Subject(String),
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
    Mismatch(#[from] Box<super::payload::Mismatch>),
    /// The payload is expired or longer than maxTTL: the webhook would refuse it.
    #[error("{0}")]
    Unusable(String),
    /// The object could not be digested.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The key already signed this approval.
    #[error("key {0} has already signed this approval")]
    AlreadySigned(String),
    /// A `--signature` file is unusable.
    #[error("{path}: {problem}")]
    Signature {
        /// The file.
        path: String,
        /// Why.
        problem: String,
    },
    /// The annotated file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
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
}
