//! Signing an approval payload as `ssh-keygen -Y sign -n approval@blastguard.io` does:
//! with a private key file, or through ssh-agent so the key never leaves it.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ssh_agent_client_rs::{Client, Identity};
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PrivateKey, PublicKey, SshSig};

use super::allowed_signers::fingerprint;
use super::payload::SIGNATURE_NAMESPACE;

/// How long to wait on ssh-agent: long enough for a confirmation prompt or a
/// security-key touch, short enough not to hang a script forever.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a payload could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key file could not be read or parsed.
    #[error("cannot read SSH key {path}: {message}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The key file is passphrase-protected.
    #[error(
        "SSH key {0} is protected by a passphrase: add it to ssh-agent (ssh-add {0}) and sign with --agent"
    )]
    Encrypted(String),
    /// Talking to ssh-agent failed.
    #[error("ssh-agent: {0}")]
    Agent(String),
    /// The signature could not be made.
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// Signs `payload` with a private key file (OpenSSH format, unencrypted), SHA-512 as
/// ssh-keygen does.
pub fn sign_with_key_file(path: &Path, payload: &[u8]) -> Result<SshSig, SignError> {
    let key = PrivateKey::read_openssh_file(path).map_err(|e| SignError::Key {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    if key.is_encrypted() {
        return Err(SignError::Encrypted(path.display().to_string()));
    }
    let sig = key
        .sign(SIGNATURE_NAMESPACE, HashAlg::Sha512, payload)
        .map_err(|e| SignError::Sign(e.to_string()))?;
    check(key.public_key().key_data(), &sig, payload)?;
    Ok(sig)
}

/// Reads the public half of a key file: a `.pub` file, or the public part of a
/// private key file (readable without its passphrase).
pub fn read_public_key(path: &Path) -> Result<PublicKey, SignError> {
    let text = std::fs::read_to_string(path).map_err(|e| SignError::Key {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    PublicKey::from_openssh(text.trim())
        .or_else(|_| PrivateKey::from_openssh(&text).map(|k| k.public_key().clone()))
        .map_err(|e| SignError::Key {
            path: path.display().to_string(),
            message: e.to_string(),
        })
}

/// Signs `payload` through the ssh-agent at `socket`, with `key` or, when `None`, the
/// agent's only key.
pub fn sign_with_agent(
    socket: &Path,
    key: Option<&PublicKey>,
    payload: &[u8],
) -> Result<SshSig, SignError> {
    let agent_error = |e: &dyn std::fmt::Display| SignError::Agent(e.to_string());
    let stream = UnixStream::connect(socket)
        .map_err(|e| SignError::Agent(format!("cannot connect to {}: {e}", socket.display())))?;
    stream
        .set_read_timeout(Some(AGENT_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(AGENT_TIMEOUT)))
        .map_err(|e| agent_error(&e))?;
    let mut client = Client::with_read_write(Box::new(stream));
    let identities: Vec<KeyData> = client
        .list_all_identities()
        .map_err(|e| agent_error(&e))?
        .iter()
        .filter_map(|identity| match identity {
            Identity::PublicKey(k) => Some(k.key_data().clone()),
            Identity::Certificate(_) => None,
        })
        .collect();
    let chosen = match key {
        Some(wanted) => identities
            .into_iter()
            .find(|k| k == wanted.key_data())
            .ok_or_else(|| {
                SignError::Agent(format!(
                    "the agent does not hold key {} (ssh-add it first)",
                    fingerprint(wanted.key_data())
                ))
            })?,
        None => match identities.len() {
            1 => identities.into_iter().next().expect("one identity"),
            0 => {
                return Err(SignError::Agent(
                    "the agent holds no keys (ssh-add one)".into(),
                ));
            }
            _ => {
                let list: Vec<String> = identities.iter().map(fingerprint).collect();
                return Err(SignError::Agent(format!(
                    "the agent holds {} keys ({}): choose one with --key ~/.ssh/KEY.pub",
                    list.len(),
                    list.join(", ")
                )));
            }
        },
    };
    let signed_data = SshSig::signed_data(SIGNATURE_NAMESPACE, HashAlg::Sha512, payload)
        .map_err(|e| SignError::Sign(e.to_string()))?;
    let signature = client
        .sign(PublicKey::from(chosen.clone()), &signed_data)
        .map_err(|e| agent_error(&e))?;
    let sig = SshSig::new(
        chosen.clone(),
        SIGNATURE_NAMESPACE,
        HashAlg::Sha512,
        signature,
    )
    .map_err(|e| SignError::Sign(e.to_string()))?;
    check(&chosen, &sig, payload)?;
    Ok(sig)
}

/// Verifies a fresh signature before handing it out: a broken signer is caught here,
/// not by a denied deploy.
fn check(key: &KeyData, sig: &SshSig, payload: &[u8]) -> Result<(), SignError> {
    PublicKey::from(key.clone())
        .verify(SIGNATURE_NAMESPACE, payload, sig)
        .map_err(|e| SignError::Sign(format!("the new signature does not verify: {e}")))
}
