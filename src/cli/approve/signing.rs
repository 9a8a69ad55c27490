//! Signing one object's payload (key file or ssh-agent), or attaching signatures made
//! elsewhere (`ssh-keygen -Y sign`), after the signatures already on the object.
//! Nothing here prints: what the approver should know comes back as lines.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::error::ApproveError;
use super::error::SignatureProblem;
use super::payload::Prepared;
use crate::annotations::APPROVAL_SIGNATURE;
use crate::approval::allowed_signers::{AllowedSigners, KeyTrust, fingerprint};
use crate::approval::payload::SIGNATURE_NAMESPACE;
use crate::approval::{signing, sshsig};

/// How the approver signs.
#[derive(Debug)]
pub enum Signer {
    /// A private key file.
    KeyFile(PathBuf),
    /// A key held by ssh-agent.
    Agent {
        /// SSH_AUTH_SOCK.
        socket: PathBuf,
        /// The key the agent signs with.
        key: ssh_key::PublicKey,
    },
}

impl Signer {
    /// `--key` (a private key file) or `--agent` (with `--key` naming the key).
    pub fn from_flags(key: Option<&Path>, agent: bool) -> Result<Signer, ApproveError> {
        if agent {
            let socket =
                std::env::var_os("SSH_AUTH_SOCK")
                    .map(PathBuf::from)
                    .ok_or(ApproveError::Usage(
                        "--agent needs SSH_AUTH_SOCK (is ssh-agent running?)",
                    ))?;
            let wanted = key.map(signing::read_public_key).transpose()?;
            let key = signing::agent_key(&socket, wanted.as_ref())?;
            return Ok(Signer::Agent { socket, key });
        }
        match key {
            Some(path) => Ok(Signer::KeyFile(path.to_path_buf())),
            None => Err(ApproveError::Usage(
                "pass --key ~/.ssh/id_ed25519 (a private key file) or --agent",
            )),
        }
    }

    /// The public half of the signing key.
    pub fn public_key(&self) -> Result<ssh_key::PublicKey, ApproveError> {
        match self {
            Signer::KeyFile(path) => Ok(signing::read_public_key(path)?),
            Signer::Agent { key, .. } => Ok(key.clone()),
        }
    }

    pub(crate) fn sign(&self, payload: &[u8]) -> Result<String, ApproveError> {
        let sig = match self {
            Signer::KeyFile(path) => signing::sign_with_key_file(path, payload),
            Signer::Agent { socket, key } => signing::sign_with_agent(socket, key, payload),
        }?;
        sshsig::armor(&sig).map_err(|e| ApproveError::Sign(signing::SignError::Sign(e.to_string())))
    }
}

/// The keys that already signed the object's approval.
pub fn existing_keys(prepared: &Prepared) -> Result<Vec<ssh_key::public::KeyData>, ApproveError> {
    let Some(existing) = &prepared.existing_signatures else {
        return Ok(Vec::new());
    };
    let signatures = sshsig::parse_signatures(existing).map_err(|e| ApproveError::Signature {
        path: APPROVAL_SIGNATURE.into(),
        problem: SignatureProblem::Annotation(e.to_string()),
    })?;
    Ok(signatures.iter().map(|s| s.public_key().clone()).collect())
}

/// The signatures already on the object, followed by `new`.
pub fn append_signature(prepared: &Prepared, new: &str) -> String {
    match &prepared.existing_signatures {
        Some(existing) if !existing.trim().is_empty() => {
            format!("{}\n{}", existing.trim_end(), new.trim_end())
        }
        _ => new.trim_end().to_string(),
    }
}

/// How many signatures an annotation holds.
pub fn signature_count(signatures: &str) -> usize {
    sshsig::parse_signatures(signatures)
        .map(|s| s.len())
        .unwrap_or(1)
}

/// Refuses a key that already signed; else nothing.
pub fn not_signed_yet(prepared: &Prepared, signer: &Signer) -> Result<(), ApproveError> {
    let public = signer.public_key()?;
    if existing_keys(prepared)?.contains(public.key_data()) {
        return Err(ApproveError::AlreadySigned(fingerprint(public.key_data())));
    }
    Ok(())
}

/// Signs one object's payload; returns its signature annotation.
pub fn sign_one(prepared: &Prepared, signer: &Signer) -> Result<String, ApproveError> {
    not_signed_yet(prepared, signer)?;
    let armored = signer.sign(prepared.payload_text.as_bytes())?;
    Ok(append_signature(prepared, &armored))
}

/// Attaches the `--signature` files: each must verify over the payload (as
/// `ssh-keygen -Y sign` signs a file: the payload, or the payload and a newline) and
/// be by a key that has not signed yet, so a wrong file fails here, not at the
/// webhook. Returns the annotation and, per signature, `(fingerprint, file)`.
pub fn attach(
    prepared: &Prepared,
    files: &[PathBuf],
) -> Result<(String, Vec<(String, String)>), ApproveError> {
    let mut keys = existing_keys(prepared)?;
    let mut added = Vec::new();
    let mut attached = Vec::new();
    for path in files {
        let shown = path.display().to_string();
        let problem = |problem: SignatureProblem| ApproveError::Signature {
            path: shown.clone(),
            problem,
        };
        let text = super::input::read_text(path)?;
        let signatures = sshsig::parse_signatures(&text)
            .map_err(|e| problem(SignatureProblem::NotASignature(e.to_string())))?;
        for sig in &signatures {
            sshsig::verify(sig, prepared.payload_text.as_bytes())
                .map_err(|e| problem(SignatureProblem::OtherPayload(e.to_string())))?;
            if keys.contains(sig.public_key()) {
                return Err(problem(SignatureProblem::AlreadySigned(fingerprint(
                    sig.public_key(),
                ))));
            }
            keys.push(sig.public_key().clone());
            added.push(
                sshsig::armor(sig).map_err(|e| problem(SignatureProblem::Armor(e.to_string())))?,
            );
            attached.push((fingerprint(sig.public_key()), shown.clone()));
        }
    }
    Ok((append_signature(prepared, &added.join("")), attached))
}

/// Whether the webhook will count a key's signature, per an allowed_signers copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Trusted, as these principals.
    Trusted(String),
    /// Listed, but not for approvals now.
    Restricted(String),
    /// Not listed.
    NotListed,
    /// The file could not be read.
    Unreadable(String),
}

/// The trust `path` gives `key` now.
pub fn trust(path: &Path, key: &ssh_key::public::KeyData, now: SystemTime) -> Trust {
    match AllowedSigners::load(path) {
        Err(e) => Trust::Unreadable(e.to_string()),
        Ok(signers) => match signers.trust(key, SIGNATURE_NAMESPACE, now) {
            KeyTrust::Trusted(lines) => Trust::Trusted(
                lines
                    .iter()
                    .map(|l| l.principals.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            KeyTrust::Restricted(why) => Trust::Restricted(why.join("; ")),
            KeyTrust::NotListed => Trust::NotListed,
        },
    }
}
