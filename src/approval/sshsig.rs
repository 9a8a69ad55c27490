//! SSHSIG signatures (`ssh-keygen -Y sign`): reading the armored blocks of the
//! approval-signature annotation, with bounds, and verifying one over the payload.
//!
//! The signature format itself is the `ssh-key` crate's; this module adds what an
//! admission webhook needs on top: a hard cap on how much untrusted text is decoded,
//! a clear reason for every refusal, and the one-trailing-newline variant of the
//! signed bytes (docs/design.md#approvals).

use ssh_encoding::Decode;
use ssh_encoding::base64::{Base64, Encoding};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, LineEnding, PublicKey, Signature, SshSig};

use super::payload::SIGNATURE_NAMESPACE;

/// First line of an armored SSH signature.
pub const BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
/// Last line of an armored SSH signature.
pub const END: &str = "-----END SSH SIGNATURE-----";
/// Most signatures one approval may carry (policy allows up to 16 approvers).
pub const MAX_SIGNATURES: usize = 20;
/// Largest decoded signature blob: an RSA-4096 SSHSIG is about 1.1 KiB.
pub const MAX_BLOB_BYTES: usize = 4096;

/// Flag of a security-key signature: the user touched the key.
const SK_USER_PRESENT: u8 = 0x01;
/// Flags and counter that end a security-key signature.
const SK_TRAILER_BYTES: usize = 5;

/// Why the signature annotation cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArmorError {
    /// No armored block at all.
    #[error("it holds no {BEGIN} block")]
    Empty,
    /// More blocks than [`MAX_SIGNATURES`].
    #[error("it holds more than {MAX_SIGNATURES} signatures")]
    TooMany,
    /// Text outside the blocks.
    #[error("unexpected text outside the {BEGIN} ... {END} blocks")]
    Stray,
    /// A block without its end line.
    #[error("signature {index} has no {END} line")]
    Unterminated {
        /// 1-based position in the annotation.
        index: usize,
    },
    /// A block whose body is too long.
    #[error("signature {index} is longer than {MAX_BLOB_BYTES} bytes")]
    TooLong {
        /// 1-based position in the annotation.
        index: usize,
    },
    /// A body that is not base64.
    #[error("signature {index} is not valid base64")]
    Base64 {
        /// 1-based position in the annotation.
        index: usize,
    },
    /// Base64 of something that is not an SSHSIG.
    #[error("signature {index} is not an SSH signature: {message}")]
    Format {
        /// 1-based position in the annotation.
        index: usize,
        /// What the decoder said.
        message: String,
    },
    /// An RSA signature with SHA-1 (`ssh-rsa`).
    #[error(
        "signature {index} uses the SHA-1 algorithm ssh-rsa, which is not accepted (ssh-keygen -Y sign makes rsa-sha2-512)"
    )]
    WeakAlgorithm {
        /// 1-based position in the annotation.
        index: usize,
    },
}

/// Splits the annotation into its armored blocks and decodes each, doing no more than
/// [`MAX_SIGNATURES`] × [`MAX_BLOB_BYTES`] of work whatever the input.
pub fn parse_signatures(annotation: &str) -> Result<Vec<SshSig>, ArmorError> {
    let mut signatures = Vec::new();
    let mut rest = annotation;
    loop {
        let trimmed = rest.trim_start();
        if trimmed.is_empty() {
            break;
        }
        let Some(body) = trimmed.strip_prefix(BEGIN) else {
            return Err(ArmorError::Stray);
        };
        if signatures.len() == MAX_SIGNATURES {
            return Err(ArmorError::TooMany);
        }
        let index = signatures.len() + 1;
        let end = body.find(END).ok_or(ArmorError::Unterminated { index })?;
        signatures.push(decode_block(&body[..end], index)?);
        rest = &body[end + END.len()..];
    }
    if signatures.is_empty() {
        return Err(ArmorError::Empty);
    }
    Ok(signatures)
}

/// Decodes the base64 body of one block (line breaks and spaces between lines
/// ignored: YAML and `kubectl annotate` may reflow them).
fn decode_block(body: &str, index: usize) -> Result<SshSig, ArmorError> {
    // Base64 is 4 characters per 3 bytes; anything longer is refused before decoding.
    if body.len() > (MAX_BLOB_BYTES / 3 + 1) * 4 * 2 {
        return Err(ArmorError::TooLong { index });
    }
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() > (MAX_BLOB_BYTES / 3 + 1) * 4 {
        return Err(ArmorError::TooLong { index });
    }
    let blob = Base64::decode_vec(&compact).map_err(|_| ArmorError::Base64 { index })?;
    decode_sshsig(&blob).map_err(|e| match e {
        SshSigError::WeakAlgorithm => ArmorError::WeakAlgorithm { index },
        SshSigError::Format(message) => ArmorError::Format { index, message },
    })
}

enum SshSigError {
    WeakAlgorithm,
    Format(String),
}

/// Reads an SSHSIG blob (PROTOCOL.sshsig) as `ssh-keygen -Y verify` does: every
/// length exact, no trailing data, version 1. The crate's own decoder tolerates a
/// length prefix longer than its content, which would let one signature take many
/// byte forms; the parts are read here and each is decoded by the crate.
fn decode_sshsig(blob: &[u8]) -> Result<SshSig, SshSigError> {
    let format = |message: &str| SshSigError::Format(message.to_string());
    let mut r: &[u8] = blob
        .strip_prefix(b"SSHSIG")
        .ok_or_else(|| format("the SSHSIG preamble is missing"))?;
    let truncated = |_| format("the signature is truncated");
    let version = u32::decode(&mut r).map_err(truncated)?;
    if version != SshSig::VERSION {
        // Version 1 is the only one there is; the version is not signed.
        return Err(SshSigError::Format(format!(
            "unsupported SSHSIG version {version}"
        )));
    }
    let public_key = Vec::<u8>::decode(&mut r).map_err(truncated)?;
    let namespace = String::decode(&mut r).map_err(truncated)?;
    // Reserved: ignored, and verified as empty, as ssh-keygen does.
    let _reserved = Vec::<u8>::decode(&mut r).map_err(truncated)?;
    let hash = String::decode(&mut r).map_err(truncated)?;
    let signature = Vec::<u8>::decode(&mut r).map_err(truncated)?;
    if !r.is_empty() {
        return Err(format("trailing data after the signature"));
    }
    let public_key: KeyData =
        exact(&public_key).map_err(|e| SshSigError::Format(format!("public key: {e}")))?;
    let hash = HashAlg::new(&hash)
        .map_err(|_| SshSigError::Format(format!("unsupported hash algorithm {hash:?}")))?;
    if String::decode(&mut &signature[..]).is_ok_and(|alg| alg == "ssh-rsa") {
        // The crate refuses SHA-1 RSA signatures while decoding; the person reading
        // the denial deserves to know that was the reason.
        return Err(SshSigError::WeakAlgorithm);
    }
    let signature: Signature =
        exact(&signature).map_err(|e| SshSigError::Format(format!("signature: {e}")))?;
    SshSig::new(public_key, namespace, hash, signature)
        .map_err(|e| SshSigError::Format(e.to_string()))
}

/// Decodes `bytes` as one `T`, refusing trailing bytes.
fn exact<T: Decode>(bytes: &[u8]) -> Result<T, String>
where
    T::Error: std::fmt::Display,
{
    let mut r = bytes;
    let value = T::decode(&mut r).map_err(|e| e.to_string())?;
    if !r.is_empty() {
        return Err("trailing data".into());
    }
    Ok(value)
}

/// Why a decoded signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Signed in another namespace than [`SIGNATURE_NAMESPACE`].
    #[error("it was made for signature namespace {0:?}, not {SIGNATURE_NAMESPACE:?}")]
    Namespace(String),
    /// The cryptographic check failed.
    #[error("it does not verify over the approval payload (was the payload edited after signing?)")]
    Invalid,
    /// A security-key signature made without a touch.
    #[error("the security key was not touched (no user presence)")]
    NoUserPresence,
}

/// Verifies `sig` over `payload`, or over `payload` followed by one `\n` (what
/// `ssh-keygen -Y sign file` signs when an editor ended the file with a newline).
/// Key trust is the caller's business.
pub fn verify(sig: &SshSig, payload: &[u8]) -> Result<(), VerifyError> {
    if sig.namespace() != SIGNATURE_NAMESPACE {
        return Err(VerifyError::Namespace(sig.namespace().to_string()));
    }
    let key = PublicKey::from(sig.public_key().clone());
    let verified = key.verify(SIGNATURE_NAMESPACE, payload, sig).is_ok() || {
        let mut with_newline = Vec::with_capacity(payload.len() + 1);
        with_newline.extend_from_slice(payload);
        with_newline.push(b'\n');
        key.verify(SIGNATURE_NAMESPACE, &with_newline, sig).is_ok()
    };
    if !verified {
        return Err(VerifyError::Invalid);
    }
    if is_security_key(sig.public_key()) {
        let bytes = sig.signature_bytes();
        let flags = bytes
            .len()
            .checked_sub(SK_TRAILER_BYTES)
            .map(|at| bytes[at])
            .unwrap_or(0);
        if flags & SK_USER_PRESENT == 0 {
            return Err(VerifyError::NoUserPresence);
        }
    }
    Ok(())
}

fn is_security_key(key: &KeyData) -> bool {
    matches!(
        key.algorithm(),
        Algorithm::SkEd25519 | Algorithm::SkEcdsaSha2NistP256
    )
}

/// The armored form of a signature, ending with a newline, as `ssh-keygen` writes it.
pub fn armor(sig: &SshSig) -> Result<String, ssh_key::Error> {
    let mut text = sig.to_pem(LineEnding::LF)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::HashAlg;
    use ssh_key::private::{Ed25519Keypair, KeypairData, PrivateKey};

    pub(crate) fn key(seed: u8) -> PrivateKey {
        PrivateKey::new(
            KeypairData::Ed25519(Ed25519Keypair::from_seed(&[seed; 32])),
            "",
        )
        .unwrap()
    }

    fn signed(payload: &[u8], namespace: &str) -> String {
        armor(&key(1).sign(namespace, HashAlg::Sha512, payload).unwrap()).unwrap()
    }

    #[test]
    fn verifies_exact_bytes_and_the_trailing_newline_variant() {
        let payload = br#"{"a":1}"#;
        let sig = &parse_signatures(&signed(payload, SIGNATURE_NAMESPACE)).unwrap()[0];
        assert_eq!(verify(sig, payload), Ok(()));
        let with_newline = b"{\"a\":1}\n";
        let sig_nl = &parse_signatures(&signed(with_newline, SIGNATURE_NAMESPACE)).unwrap()[0];
        assert_eq!(
            verify(sig_nl, payload),
            Ok(()),
            "signed with newline, annotation without"
        );
        assert_eq!(verify(sig, br#"{"a":2}"#), Err(VerifyError::Invalid));
        let two_newlines =
            &parse_signatures(&signed(b"{\"a\":1}\n\n", SIGNATURE_NAMESPACE)).unwrap()[0];
        assert_eq!(verify(two_newlines, payload), Err(VerifyError::Invalid));
        let other_ns = &parse_signatures(&signed(payload, "file")).unwrap()[0];
        assert_eq!(
            verify(other_ns, payload),
            Err(VerifyError::Namespace("file".into()))
        );
    }

    #[test]
    fn reads_several_blocks_reflowed_or_with_crlf() {
        let one = signed(b"x", SIGNATURE_NAMESPACE);
        let crlf = one.replace('\n', "\r\n");
        let indented = one.replace('\n', "\n   ");
        let text = format!("{one}{crlf}\n\n{indented}");
        assert_eq!(parse_signatures(&text).unwrap().len(), 3);
    }

    #[test]
    fn malformed_armor_is_refused_without_panic() {
        let good = signed(b"x", SIGNATURE_NAMESPACE);
        let body: String = good.lines().filter(|l| !l.starts_with("-----")).collect();
        let truncated = format!("{BEGIN}\n{}\n{END}\n", &body[..body.len() - 8]);
        let trailing = {
            let mut blob = Base64::decode_vec(&body).unwrap();
            blob.extend_from_slice(b"junk");
            format!("{BEGIN}\n{}\n{END}\n", Base64::encode_string(&blob))
        };
        type Check = fn(&ArmorError) -> bool;
        let cases: Vec<(String, Check)> = vec![
            (String::new(), |e| *e == ArmorError::Empty),
            ("   \n".into(), |e| *e == ArmorError::Empty),
            ("hello".into(), |e| *e == ArmorError::Stray),
            (format!("{good}trailing words"), |e| *e == ArmorError::Stray),
            (format!("{BEGIN}\nAAAA"), |e| {
                *e == ArmorError::Unterminated { index: 1 }
            }),
            (format!("{BEGIN}\n!!!!\n{END}"), |e| {
                *e == ArmorError::Base64 { index: 1 }
            }),
            (format!("{BEGIN}\nAAAA\n{END}"), |e| {
                matches!(e, ArmorError::Format { index: 1, .. })
            }),
            (truncated, |e| {
                matches!(e, ArmorError::Base64 { .. } | ArmorError::Format { .. })
            }),
            (
                trailing,
                |e| matches!(e, ArmorError::Format { message, .. } if message.contains("trailing")),
            ),
            (format!("{BEGIN}\n{}\n{END}", "A".repeat(20_000)), |e| {
                *e == ArmorError::TooLong { index: 1 }
            }),
            (good.repeat(MAX_SIGNATURES + 1), |e| {
                *e == ArmorError::TooMany
            }),
        ];
        for (text, check) in cases {
            let err = parse_signatures(&text).expect_err(&text);
            assert!(check(&err), "{text:.80?} gave {err:?}");
        }
        assert_eq!(
            parse_signatures(&good.repeat(MAX_SIGNATURES))
                .unwrap()
                .len(),
            MAX_SIGNATURES
        );
    }

    #[test]
    fn no_single_byte_change_makes_another_valid_signature() {
        let payload = br#"{"a":1}"#;
        let good = signed(payload, SIGNATURE_NAMESPACE);
        let original = parse_signatures(&good).unwrap().remove(0);
        let body: String = good.lines().filter(|l| !l.starts_with("-----")).collect();
        let blob = Base64::decode_vec(&body).unwrap();
        for at in 0..blob.len() {
            let mut mutated = blob.clone();
            mutated[at] ^= 0x01;
            let text = format!("{BEGIN}\n{}\n{END}\n", Base64::encode_string(&mutated));
            if let Ok(sigs) = parse_signatures(&text)
                && verify(&sigs[0], payload).is_ok()
            {
                // Only a re-encoding of the very same signature may pass (an
                // inner length the crate reads leniently): same key, namespace,
                // hash and signature bytes.
                assert_eq!(sigs[0], original, "byte {at} flipped");
            }
            // Truncation at any point is refused, without a panic.
            let text = format!("{BEGIN}\n{}\n{END}\n", Base64::encode_string(&blob[..at]));
            assert!(parse_signatures(&text).is_err(), "truncated at {at}");
        }
    }

    #[test]
    fn sha1_rsa_signatures_are_named_as_such() {
        // An SSHSIG whose inner signature claims ssh-rsa: refused before any crypto.
        let mut blob = b"SSHSIG".to_vec();
        let string = |b: &mut Vec<u8>, s: &[u8]| {
            b.extend_from_slice(&(s.len() as u32).to_be_bytes());
            b.extend_from_slice(s);
        };
        blob.extend_from_slice(&1u32.to_be_bytes());
        let mut pk = Vec::new();
        string(&mut pk, b"ssh-rsa");
        string(&mut pk, &[1, 0, 1]);
        string(&mut pk, &[0x80; 256]);
        string(&mut blob, &pk);
        string(&mut blob, SIGNATURE_NAMESPACE.as_bytes());
        string(&mut blob, b"");
        string(&mut blob, b"sha512");
        let mut sig = Vec::new();
        string(&mut sig, b"ssh-rsa");
        string(&mut sig, &[7; 256]);
        string(&mut blob, &sig);
        let text = format!("{BEGIN}\n{}\n{END}\n", Base64::encode_string(&blob));
        assert_eq!(
            parse_signatures(&text),
            Err(ArmorError::WeakAlgorithm { index: 1 })
        );
    }

    #[test]
    fn security_key_signatures_need_user_presence() {
        use sha2::{Digest, Sha256};
        use ssh_key::public::SkEd25519;
        use ssh_key::{Signature, SigningKey};
        fn raw_sign<S: SigningKey>(key: &S, message: &[u8]) -> Signature {
            key.try_sign(message).unwrap()
        }
        // Stands in for a FIDO authenticator: signs what an sk-ssh-ed25519 key signs
        // (SHA-256 of the application, flags, counter, SHA-256 of the message).
        let keypair = Ed25519Keypair::from_seed(&[9; 32]);
        let application = "ssh:";
        let public = KeyData::SkEd25519(SkEd25519::new(keypair.public, application));
        let private = PrivateKey::new(KeypairData::Ed25519(keypair), "").unwrap();
        let payload = b"{}";
        let sk_sig = |flags: u8| {
            let signed_data =
                SshSig::signed_data(SIGNATURE_NAMESPACE, HashAlg::Sha512, payload).unwrap();
            let trailer = [flags, 0, 0, 0, 7];
            let mut message = Sha256::digest(application.as_bytes()).to_vec();
            message.extend_from_slice(&trailer);
            message.extend(Sha256::digest(&signed_data));
            let inner = raw_sign(&private, &message);
            let mut data = inner.as_bytes().to_vec();
            data.extend_from_slice(&trailer);
            let sig = Signature::new(Algorithm::SkEd25519, data).unwrap();
            SshSig::new(public.clone(), SIGNATURE_NAMESPACE, HashAlg::Sha512, sig).unwrap()
        };
        assert_eq!(verify(&sk_sig(SK_USER_PRESENT), payload), Ok(()));
        assert_eq!(
            verify(&sk_sig(0), payload),
            Err(VerifyError::NoUserPresence)
        );
    }
}
