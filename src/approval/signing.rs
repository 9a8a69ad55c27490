//! Signing an approval payload as `ssh-keygen -Y sign -n approval@blastguard.io` does:
//! with a private key file, or through ssh-agent so the key never leaves it.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ssh_agent_client_rs::{Client, Identity};
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, PrivateKey, PublicKey, Signature, SshSig};

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
    let sig = match key.key_data() {
        KeypairData::Rsa(rsa) => sign_rsa(rsa, payload)?,
        _ => key
            .sign(SIGNATURE_NAMESPACE, HashAlg::Sha512, payload)
            .map_err(|e| SignError::Sign(e.to_string()))?,
    };
    check(key.public_key().key_data(), &sig, payload)?;
    Ok(sig)
}

/// rsa-sha2-512 over the SSHSIG signed data. ssh-key 0.6.7 cannot sign with RSA: it
/// rebuilds the private key from the first prime twice (`[p, p]`), which the `rsa`
/// crate rightly refuses; so the key is rebuilt here from `p` and `q`.
fn sign_rsa(keypair: &RsaKeypair, payload: &[u8]) -> Result<SshSig, SignError> {
    use rsa::signature::{SignatureEncoding, Signer};
    let crypto = |e: &dyn std::fmt::Display| SignError::Sign(format!("RSA key: {e}"));
    let uint = |m: &ssh_key::Mpint| {
        m.as_positive_bytes()
            .map(rsa::BigUint::from_bytes_be)
            .ok_or_else(|| SignError::Sign("RSA key: a component is not a positive integer".into()))
    };
    let private = rsa::RsaPrivateKey::from_components(
        uint(&keypair.public.n)?,
        uint(&keypair.public.e)?,
        uint(&keypair.private.d)?,
        vec![uint(&keypair.private.p)?, uint(&keypair.private.q)?],
    )
    .map_err(|e| crypto(&e))?;
    let signed_data = SshSig::signed_data(SIGNATURE_NAMESPACE, HashAlg::Sha512, payload)
        .map_err(|e| crypto(&e))?;
    let raw = rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(private)
        .try_sign(&signed_data)
        .map_err(|e| crypto(&e))?;
    let signature = Signature::new(
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        raw.to_vec(),
    )
    .map_err(|e| crypto(&e))?;
    SshSig::new(
        KeyData::Rsa(keypair.public.clone()),
        SIGNATURE_NAMESPACE,
        HashAlg::Sha512,
        signature,
    )
    .map_err(|e| crypto(&e))
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

/// Connects to the ssh-agent at `socket`, with timeouts.
fn connect_agent(socket: &Path) -> Result<Client, SignError> {
    let stream = UnixStream::connect(socket)
        .map_err(|e| SignError::Agent(format!("cannot connect to {}: {e}", socket.display())))?;
    stream
        .set_read_timeout(Some(AGENT_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(AGENT_TIMEOUT)))
        .map_err(|e| SignError::Agent(e.to_string()))?;
    Ok(Client::with_read_write(Box::new(stream)))
}

/// The agent key to sign with: `wanted` if the agent holds it, else the agent's only
/// key.
pub fn agent_key(socket: &Path, wanted: Option<&PublicKey>) -> Result<PublicKey, SignError> {
    let identities: Vec<KeyData> = connect_agent(socket)?
        .list_all_identities()
        .map_err(|e| SignError::Agent(e.to_string()))?
        .iter()
        .filter_map(|identity| match identity {
            Identity::PublicKey(k) => Some(k.key_data().clone()),
            Identity::Certificate(_) => None,
        })
        .collect();
    let chosen = match wanted {
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
            n => {
                let list: Vec<String> = identities.iter().map(fingerprint).collect();
                return Err(SignError::Agent(format!(
                    "the agent holds {n} keys ({}): choose one with --key ~/.ssh/KEY.pub",
                    list.join(", ")
                )));
            }
        },
    };
    Ok(PublicKey::from(chosen))
}

/// Signs `payload` with `key` through the ssh-agent at `socket` (SHA-512, and
/// rsa-sha2-512 for RSA keys, as ssh-keygen does).
pub fn sign_with_agent(
    socket: &Path,
    key: &PublicKey,
    payload: &[u8],
) -> Result<SshSig, SignError> {
    let signed_data = SshSig::signed_data(SIGNATURE_NAMESPACE, HashAlg::Sha512, payload)
        .map_err(|e| SignError::Sign(e.to_string()))?;
    let signature = connect_agent(socket)?
        .sign(key, &signed_data)
        .map_err(|e| SignError::Agent(e.to_string()))?;
    let sig = SshSig::new(
        key.key_data().clone(),
        SIGNATURE_NAMESPACE,
        HashAlg::Sha512,
        signature,
    )
    .map_err(|e| SignError::Sign(e.to_string()))?;
    check(key.key_data(), &sig, payload)?;
    Ok(sig)
}

/// Verifies a fresh signature before handing it out: a broken signer is caught here,
/// not by a denied deploy.
fn check(key: &KeyData, sig: &SshSig, payload: &[u8]) -> Result<(), SignError> {
    PublicKey::from(key.clone())
        .verify(SIGNATURE_NAMESPACE, payload, sig)
        .map_err(|e| SignError::Sign(format!("the new signature does not verify: {e}")))
}
