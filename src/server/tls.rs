//! The serving certificate, and with `--client-ca` the client certificate required of
//! the API server: parsed from PEM, swapped atomically on reload, read without a lock.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls::{ServerConfig, version};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

/// ALPN protocols offered, HTTP/2 first as the API server prefers it.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a certificate and key pair cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The certificate file holds no PEM certificate.
    #[error("{path}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// The certificate file.
        path: String,
    },
    /// The certificate file holds broken PEM.
    #[error("{path}: invalid PEM certificate: {detail}")]
    BadCertificate {
        /// The certificate file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The key file holds no usable private key.
    #[error("{path}: no PEM private key found (PKCS#8, PKCS#1 or SEC1): {detail}")]
    NoKey {
        /// The key file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The client CA file holds no usable CA certificate.
    #[error("{path}: no usable CA certificate for client authentication: {detail}")]
    ClientCa {
        /// The client CA file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The key is of an unsupported type or does not belong to the certificate.
    #[error("{cert} and {key} do not form a usable pair: {detail}")]
    Pair {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What is wrong.
        detail: String,
    },
}

/// The crypto provider of every TLS endpoint: ring, named explicitly so no other
/// provider linked into the binary can be picked by accident.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and private key into a servable pair, checking that
/// the key belongs to the leaf certificate.
pub fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &str,
    key_path: &str,
) -> Result<CertifiedKey, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::BadCertificate {
            path: cert_path.to_string(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: cert_path.to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertError::NoKey {
        path: key_path.to_string(),
        detail: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| CertError::Pair {
        cert: cert_path.to_string(),
        key: key_path.to_string(),
        detail: e.to_string(),
    })
}

/// The leaf certificate's notAfter as unix seconds, if it parses.
pub fn not_after(key: &CertifiedKey) -> Option<i64> {
    let leaf = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Subject, serial and expiry of the leaf certificate, for logs.
pub fn describe(key: &CertifiedKey) -> String {
    let Some(leaf) = key.cert.first() else {
        return "no certificate".to_string();
    };
    match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, cert)) => format!(
            "subject \"{}\", serial {}, notAfter {}",
            cert.subject(),
            cert.raw_serial_as_string(),
            cert.validity().not_after
        ),
        Err(e) => format!("unparsable leaf certificate: {e}"),
    }
}

/// Serves whichever certificate was stored last; handshakes before the first one is
/// loaded fail (and readiness says why).
#[derive(Debug, Default)]
pub struct CertResolver {
    current: ArcSwapOption<CertifiedKey>,
}

impl CertResolver {
    /// Serves `key` from the next handshake on; handshakes in progress keep theirs.
    pub fn set(&self, key: CertifiedKey) {
        self.current.store(Some(Arc::new(key)));
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// Parses a PEM bundle of CA certificates into a verifier that requires a client
/// certificate chaining to one of them.
pub fn parse_client_ca(pem: &[u8], path: &str) -> Result<Arc<dyn ClientCertVerifier>, CertError> {
    let bad = |detail: String| CertError::ClientCa {
        path: path.to_string(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate found".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| bad(e.to_string()))
}

/// The client CA of `--client-ca`, swapped on reload. Until one is loaded every client
/// is refused: a webhook told to authenticate its clients never serves one it could
/// not check.
#[derive(Debug)]
pub struct ClientCa {
    current: ArcSwapOption<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl Default for ClientCa {
    fn default() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            provider: provider(),
        }
    }
}

impl ClientCa {
    /// Requires client certificates of `verifier`'s CAs from the next handshake on.
    pub fn set(&self, verifier: Arc<dyn ClientCertVerifier>) {
        self.current.store(Some(Arc::new(verifier)));
    }

    /// Whether a CA is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }
}

impl ClientCertVerifier for ClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The CA can change under a handshake; no hint makes a client send the
        // certificate it has, which is what the API server does anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.current.load_full() {
            Some(verifier) => verifier.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General(
                "no client CA loaded: every client is refused".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS configuration of the webhook: TLS 1.3 and 1.2 only, ALPN h2 and
/// http/1.1, the certificate from `resolver`; with `client_ca`, only clients with a
/// certificate of that CA.
pub fn server_config(
    resolver: Arc<CertResolver>,
    client_ca: Option<Arc<ClientCa>>,
) -> Result<ServerConfig, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?;
    let mut config = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(ca),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_parses_and_reports_its_expiry() {
        let (cert, key) = leaf("localhost");
        let pair = parse_pair(cert.as_bytes(), key.as_bytes(), "tls.crt", "tls.key").unwrap();
        // 2030-01-01T00:00:00Z
        assert_eq!(not_after(&pair), Some(1_893_456_000));
    }

    #[test]
    fn broken_inputs_name_the_file_and_the_problem() {
        let (cert_a, _) = leaf("a");
        let (_, key_b) = leaf("b");
        let cases: [(&[u8], &[u8], &str); 4] = [
            (b"", key_b.as_bytes(), "tls.crt: no PEM certificate"),
            (
                b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                key_b.as_bytes(),
                "tls.crt: invalid PEM certificate",
            ),
            (
                cert_a.as_bytes(),
                b"not a key",
                "tls.key: no PEM private key",
            ),
            (
                cert_a.as_bytes(),
                key_b.as_bytes(),
                "tls.crt and tls.key do not form a usable pair",
            ),
        ];
        for (cert, key, want) in cases {
            let err = parse_pair(cert, key, "tls.crt", "tls.key").unwrap_err();
            assert!(
                err.to_string().contains(want),
                "{err} should contain {want}"
            );
        }
    }
}
