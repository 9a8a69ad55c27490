//! `serve --dev`: a throwaway CA and serving certificate for localhost, an example
//! review, and instructions to reach the server, so it runs without a cluster.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Names the dev certificate is valid for.
const DEV_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Why the dev setup could not be created.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// Certificate generation failed.
    #[error("cannot generate the dev certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The files of a dev run, in a temporary directory removed when this is dropped.
#[derive(Debug)]
pub struct DevSetup {
    dir: tempfile::TempDir,
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The serving certificate.
    pub cert: PathBuf,
    /// The serving key.
    pub key: PathBuf,
    /// An example AdmissionReview that the embedded policy denies.
    pub review: PathBuf,
}

impl DevSetup {
    /// Creates a CA, a leaf for localhost, 127.0.0.1 and ::1, and the example review.
    pub fn create() -> Result<Self, DevError> {
        let dir = tempfile::Builder::new()
            .prefix("blastguard-dev-")
            .tempdir()
            .map_err(|source| DevError::Write {
                path: std::env::temp_dir().display().to_string(),
                source,
            })?;

        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("blastguard dev CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate()?;
        let mut leaf_params =
            CertificateParams::new(DEV_NAMES.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        leaf_params.distinguished_name = name("blastguard dev webhook");
        let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

        let path = |file: &str| dir.path().join(file);
        let setup = Self {
            ca: path("ca.crt"),
            cert: path("tls.crt"),
            key: path("tls.key"),
            review: path("review.json"),
            dir,
        };
        write(&setup.ca, ca_cert.pem().as_bytes())?;
        write(&setup.cert, leaf_cert.pem().as_bytes())?;
        write(&setup.key, leaf_key.serialize_pem().as_bytes())?;
        write(&setup.review, example_review())?;
        Ok(setup)
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How to reach the server, with a ready-to-run curl command.
    pub fn instructions(&self, webhook: SocketAddr, admin: SocketAddr) -> String {
        let webhook = reachable(webhook);
        let admin = reachable(admin);
        format!(
            "blastguard dev mode: self-signed certificate, files in {dir}\n\
             \x20 webhook:        https://{webhook}/validate\n\
             \x20 admin:          http://{admin}/readyz  http://{admin}/metrics\n\
             \x20 CA certificate: {ca}\n\
             \x20 example review: {review} (an AI-assisted 40-replica Deployment in namespace prod)\n\
             try it:\n\
             \x20 curl --cacert '{ca}' -H 'Content-Type: application/json' --data-binary '@{review}' 'https://{webhook}/validate?timeout=10s'",
            dir = self.dir.path().display(),
            ca = self.ca.display(),
            review = self.review.display(),
        )
    }
}

/// The address to tell a local client: the loopback address of the family when the
/// server listens on all addresses.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), DevError> {
    std::fs::write(path, bytes).map_err(|source| DevError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// A CREATE of a 40-replica Deployment by Claude Code in namespace prod, as the API
/// server sends it: the kubectl-made fixture the tests and README use.
fn example_review() -> &'static [u8] {
    include_bytes!("../../tests/fixtures/deployment-create-ai-prod.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_review_is_denied_by_the_embedded_policy() {
        let engine = crate::engine::Engine::new(
            crate::policy::Policy::embedded(),
            std::sync::Arc::new(crate::approval::NoTrustedSigners),
        );
        let reviewed = engine.review(example_review());
        let judged = reviewed.judged().expect("the example is a valid review");
        assert_eq!(judged.verdict.decision, crate::verdict::Decision::Deny);
    }

    #[test]
    fn instructions_point_local_clients_at_loopback() {
        let cases = [
            ("0.0.0.0:8443", "127.0.0.1:8443"),
            ("[::]:8443", "[::1]:8443"),
            ("127.0.0.1:9000", "127.0.0.1:9000"),
        ];
        for (bound, told) in cases {
            assert_eq!(reachable(bound.parse().unwrap()).to_string(), told);
        }
    }
}
