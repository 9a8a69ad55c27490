//! What happens when a watched file changes: the certificate pair, the policy or the
//! allowed_signers file is swapped in, or, when invalid, logged and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{error, info, warn};

use super::tls::{self, CertError, CertResolver};
use crate::approval::{self, SignersError};
use crate::engine::Engine;
use crate::policy::{Policy, PolicyError};
use crate::server::metrics::{Metrics, Reloaded};
use crate::server::reload::{ContentWatch, ReadError};

/// Why a watched file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A policy file that is not UTF-8 text.
    #[error("{path}: not UTF-8 text ({source})")]
    NotText {
        /// The file.
        path: String,
        /// Where the bytes stop being UTF-8.
        source: std::str::Utf8Error,
    },
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The allowed_signers file is invalid.
    #[error(transparent)]
    Signers(#[from] SignersError),
    /// The certificate pair is unusable.
    #[error(transparent)]
    Certificate(#[from] CertError),
}

/// The policy file given with `--policy`.
#[derive(Debug)]
pub struct PolicyFile {
    path: PathBuf,
    watch: ContentWatch,
}

impl PolicyFile {
    /// Loads the policy at startup; any problem is fatal there.
    pub fn load(path: &Path, metrics: &Metrics) -> Result<(Self, Policy), LoadError> {
        let mut file = Self {
            path: path.to_path_buf(),
            watch: ContentWatch::new(vec![path.to_path_buf()]),
        };
        let snapshot = file.watch.read();
        let policy = parse_policy(&file.path, snapshot)?;
        metrics.record_reload(Reloaded::Policy, true);
        Ok((file, policy))
    }

    /// Reloads the policy if the file changed; an invalid one keeps the last good.
    pub fn tick(&mut self, engine: &Engine, metrics: &Metrics) {
        let Some(snapshot) = self.watch.poll() else {
            return;
        };
        match parse_policy(&self.path, snapshot) {
            Ok(policy) => {
                info!(
                    path = %self.path.display(),
                    name = %policy.document.metadata.name,
                    rules = policy.rules.len(),
                    "policy reloaded"
                );
                engine.set_policy(policy);
                metrics.record_reload(Reloaded::Policy, true);
            }
            Err(e) => {
                error!(
                    path = %self.path.display(),
                    "policy reload failed, keeping the last good policy: {}",
                    crate::server::logging::one_line(&e.to_string())
                );
                metrics.record_reload(Reloaded::Policy, false);
            }
        }
    }
}

fn parse_policy(
    path: &Path,
    snapshot: crate::server::reload::Snapshot,
) -> Result<Policy, LoadError> {
    let bytes = snapshot?.into_iter().next().unwrap_or_default();
    let text = std::str::from_utf8(&bytes).map_err(|source| LoadError::NotText {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Policy::from_yaml(text, Some(path.display().to_string()))?)
}

/// The allowed_signers file: `--allowed-signers`, else the policy's
/// `spec.approvals.allowedSigners` (followed when a policy reload changes it).
#[derive(Debug)]
pub struct SignersFile {
    flag: Option<PathBuf>,
    watch: Option<ContentWatch>,
    loaded: bool,
    /// `serve --dev` without `--allowed-signers`: having no approvers is the expected
    /// first run, said at WARN with the flag to pass, not as an ERROR.
    dev: bool,
}

impl SignersFile {
    /// Signers from the flag's path if given, else from the policy's.
    pub fn new(flag: Option<PathBuf>) -> Self {
        Self {
            flag,
            watch: None,
            loaded: false,
            dev: false,
        }
    }

    /// For `serve --dev`: a missing file is expected, so it is a warning.
    pub fn dev(mut self, dev: bool) -> Self {
        self.dev = dev && self.flag.is_none();
        self
    }

    /// Loads the file if it (or its path) changed. Until one load succeeds no
    /// signature is trusted, so approvals are impossible but the webhook serves; after
    /// that, a failed load keeps the last good signers.
    pub fn tick(&mut self, engine: &Engine, metrics: &Metrics) {
        let path = match &self.flag {
            Some(p) => p.clone(),
            None => PathBuf::from(&engine.policy().approvals.allowed_signers),
        };
        let watch = match &mut self.watch {
            Some(w) if w.paths() == [path.clone()] => w,
            slot => slot.insert(ContentWatch::new(vec![path.clone()])),
        };
        let Some(snapshot) = watch.poll() else {
            return;
        };
        let loaded = snapshot.map_err(LoadError::from).and_then(|_| {
            approval::allowed_signers::AllowedSigners::load(&path).map_err(LoadError::from)
        });
        match loaded {
            Ok(signers) => {
                let entries = signers.signers.len();
                engine.set_verifier(Arc::new(approval::verifier::SignedApprovals::new(signers)));
                self.loaded = true;
                metrics.record_reload(Reloaded::AllowedSigners, true);
                metrics.set_allowed_signers(Some(entries));
                if entries == 0 {
                    // Loaded, and yet nobody can approve: as bad as a broken file.
                    error!(
                        path = %path.display(),
                        entries,
                        "allowed_signers has no key lines, so no approval can be valid: add one line per approver \
                         (principals [options] key-type base64-key, e.g. alice@example.com ssh-ed25519 AAAA...)"
                    );
                } else {
                    info!(path = %path.display(), entries, "allowed_signers loaded");
                }
            }
            Err(e) => {
                metrics.record_reload(Reloaded::AllowedSigners, false);
                let fix = signers_fix(&e);
                if self.loaded {
                    error!(path = %path.display(), "allowed_signers reload failed, keeping the last good signers: {e}. {fix}");
                } else if self.dev {
                    metrics.set_allowed_signers(None);
                    warn!(path = %path.display(), "--dev: no allowed_signers, so no approval can be valid; pass --allowed-signers FILE to try approvals ({e})");
                } else {
                    // ERROR, not WARN: the webhook serves and is ready, but no AI
                    // change over a limit can be approved until this is fixed.
                    metrics.set_allowed_signers(None);
                    error!(path = %path.display(), "no allowed_signers loaded, so no approval can be valid until it is: {e}. {fix}");
                }
            }
        }
    }
}

/// What to do about an allowed_signers file that did not load, for the log line an
/// operator reads when alert BlastguardNoApprovers fires.
fn signers_fix(e: &LoadError) -> String {
    use approval::allowed_signers::{AllowedSignersError, LoadError as SignersLoad};
    match e {
        LoadError::Signers(SignersLoad::Invalid {
            path,
            source: AllowedSignersError::Line { line, .. },
        }) => format!(
            "Fix: correct or remove line {line} of {path} (one approver per line: principals [options] \
             key-type base64-key; options namespaces=\"...\", valid-after=\"YYYYMMDD[HHMM[SS]][Z]\", \
             valid-before=\"...\"; try it with ssh-keygen -Y verify -f {path}); the whole file is refused \
             until every line is valid; see docs/runbook.md#blastguardnoapprovers"
        ),
        _ => "Fix: make the file readable UTF-8 text of allowed_signers lines (the chart's approvers value \
              or the policy's spec.approvals.allowedSigners path); see docs/runbook.md#blastguardnoapprovers"
            .to_string(),
    }
}

/// The serving certificate and key.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    watch: ContentWatch,
    resolver: Arc<CertResolver>,
    client_ca: Option<(PathBuf, Arc<tls::ClientCa>)>,
}

impl CertFiles {
    /// Watches the pair; nothing is loaded until the first tick.
    pub fn new(cert: PathBuf, key: PathBuf, resolver: Arc<CertResolver>) -> Self {
        let watch = ContentWatch::new(vec![cert.clone(), key.clone()]);
        Self {
            cert,
            key,
            watch,
            resolver,
            client_ca: None,
        }
    }

    /// Also watches the client CA of `--client-ca`, loaded into its verifier.
    pub fn with_client_ca(mut self, client_ca: Option<(PathBuf, Arc<tls::ClientCa>)>) -> Self {
        if let Some((path, _)) = &client_ca {
            self.watch = ContentWatch::new(vec![self.cert.clone(), self.key.clone(), path.clone()]);
        }
        self.client_ca = client_ca;
        self
    }

    /// Loads the pair if it changed; an unusable pair keeps the one being served.
    pub fn tick(&mut self, metrics: &Metrics) {
        let Some(snapshot) = self.watch.poll() else {
            return;
        };
        let (cert_path, key_path) = (self.cert.display(), self.key.display());
        let parsed = snapshot.map_err(LoadError::from).and_then(|files| {
            let (cert, key, ca) = match files.as_slice() {
                [cert, key] => (cert, key, None),
                [cert, key, ca] => (cert, key, Some(ca)),
                _ => unreachable!("the watch reads the certificate, the key and the client CA"),
            };
            let pair = tls::parse_pair(cert, key, &cert_path.to_string(), &key_path.to_string())?;
            let verifier = match (ca, &self.client_ca) {
                (Some(ca), Some((path, _))) => {
                    Some(tls::parse_client_ca(ca, &path.display().to_string())?)
                }
                _ => None,
            };
            Ok::<_, LoadError>((pair, verifier))
        });
        match parsed {
            Ok((pair, verifier)) => {
                if let (Some(verifier), Some((path, ca))) = (verifier, &self.client_ca) {
                    ca.set(verifier);
                    info!(client_ca = %path.display(), "client CA loaded: only clients with its certificates are served");
                }
                let description = tls::describe(&pair);
                if let Some(not_after) = tls::not_after(&pair) {
                    metrics.set_tls_cert_not_after(not_after);
                }
                self.resolver.set(pair);
                metrics.record_reload(Reloaded::TlsCert, true);
                info!(cert = %cert_path, key = %key_path, "serving certificate loaded: {description}");
            }
            Err(e) => {
                metrics.record_reload(Reloaded::TlsCert, false);
                if self.resolver.is_loaded() {
                    error!("certificate reload failed, keeping the certificate being served: {e}");
                } else {
                    warn!("no serving certificate yet, not ready until one loads: {e}");
                }
            }
        }
    }
}
