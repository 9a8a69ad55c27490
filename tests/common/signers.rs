//! Approvers' keys made with the real `ssh-keygen`, the allowed_signers file that
//! trusts them, and signatures made and checked with `ssh-keygen -Y sign` and
//! `ssh-keygen -Y verify`, as an approver without blastguard makes them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use blastguard::approval::load_verifier;
use blastguard::approval::payload::SIGNATURE_NAMESPACE;
use blastguard::engine::Engine;
use blastguard::policy::Policy;

/// One key to make: (file name, ssh-keygen arguments, principal or None when the key
/// is not trusted, options of its allowed_signers line).
pub type KeySpec<'a> = (&'a str, &'a [&'a str], Option<&'a str>, &'a str);

/// Keys made with `ssh-keygen` in a directory of their own, and the allowed_signers
/// file naming the trusted ones.
pub struct Signers {
    dir: tempfile::TempDir,
}

impl Signers {
    /// Makes each key (without a passphrase) and writes allowed_signers.
    pub fn new(keys: &[KeySpec]) -> Signers {
        let dir = tempfile::tempdir().unwrap();
        let mut allowed = String::from("# approvers, as ssh-keygen reads them\n\n");
        for (name, args, principal, options) in keys {
            let path = dir.path().join(name);
            let status = Command::new("ssh-keygen")
                .args(*args)
                .args(["-q", "-N", "", "-C", name, "-f"])
                .arg(&path)
                .status()
                .expect("ssh-keygen is installed");
            assert!(status.success(), "ssh-keygen {name}");
            if let Some(principal) = principal {
                let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
                allowed.push_str(&format!("{principal} {options}{public}"));
            }
        }
        std::fs::write(dir.path().join("allowed_signers"), allowed).unwrap();
        Signers { dir }
    }

    /// The private key file of `name`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.path(name)
    }

    /// A path in the keys' directory (scratch files of a test).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The allowed_signers file.
    pub fn allowed_signers(&self) -> PathBuf {
        self.path("allowed_signers")
    }

    /// An engine with the embedded policy trusting these signers.
    pub fn engine(&self) -> Engine {
        Engine::new(
            Policy::embedded(),
            load_verifier(&self.allowed_signers()).unwrap(),
        )
    }

    /// `name`'s signature of exactly `payload`, in blastguard's namespace.
    pub fn sign(&self, name: &str, payload: &str) -> String {
        ssh_keygen_sign(&self.key(name), payload, SIGNATURE_NAMESPACE)
    }

    /// The concatenated signatures of `payload` by each of `names`, as the
    /// `blastguard.io/approval-signature` annotation holds them.
    pub fn sign_all(&self, names: &[&str], payload: &str) -> String {
        names.iter().map(|n| self.sign(n, payload)).collect()
    }

    /// `ssh-keygen -Y verify` against these allowed_signers of `signature` over
    /// `payload` as `principal` in `namespace`: Err with what ssh-keygen said.
    pub fn verify(
        &self,
        payload: &str,
        signature: &str,
        principal: &str,
        namespace: &str,
    ) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let sig = dir.path().join("sig");
        std::fs::write(&sig, signature).unwrap();
        let mut child = Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(self.allowed_signers())
            .args(["-I", principal, "-n", namespace, "-s"])
            .arg(&sig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(payload.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && text.contains(&format!("Good \"{namespace}\" signature")) {
            Ok(())
        } else {
            Err(text)
        }
    }
}

/// `ssh-keygen -Y sign -n NAMESPACE -f KEY FILE`: writes `FILE.sig` and returns its
/// path.
pub fn ssh_keygen_sign_file(key: &Path, file: &Path, namespace: &str) -> PathBuf {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", namespace, "-f"])
        .arg(key)
        .arg(file)
        .output()
        .expect("ssh-keygen is installed");
    assert!(
        out.status.success(),
        "ssh-keygen -Y sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sig = file.as_os_str().to_owned();
    sig.push(".sig");
    PathBuf::from(sig)
}

/// The armored signature of exactly `payload` by `key` in `namespace`, as
/// `ssh-keygen -Y sign` makes it.
pub fn ssh_keygen_sign(key: &Path, payload: &str, namespace: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.json");
    std::fs::write(&file, payload).unwrap();
    std::fs::read_to_string(ssh_keygen_sign_file(key, &file, namespace)).unwrap()
}

/// An approver with an ed25519 key made by `ssh-keygen`.
pub struct Approver {
    /// The principal in allowed_signers.
    pub principal: String,
    key: PathBuf,
}

impl Approver {
    /// Makes a key in `dir`.
    pub fn new(dir: &Path, principal: &str) -> Approver {
        let key = dir.join(principal.replace(['@', '.'], "_"));
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", principal, "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen is installed");
        assert!(status.success(), "ssh-keygen {principal}");
        Approver {
            principal: principal.to_string(),
            key,
        }
    }

    /// The allowed_signers line trusting this key for blastguard's namespace only.
    pub fn allowed_signers_line(&self) -> String {
        let public = std::fs::read_to_string(self.key.with_extension("pub")).unwrap();
        let mut fields = public.split_whitespace();
        let (kind, blob) = (fields.next().unwrap(), fields.next().unwrap());
        format!(
            "{} namespaces=\"approval@blastguard.io\" {kind} {blob}",
            self.principal
        )
    }

    /// The armored signature of `payload` exactly as
    /// `ssh-keygen -Y sign -n approval@blastguard.io -f KEY payload.json` makes it.
    pub fn sign(&self, payload: &str) -> String {
        ssh_keygen_sign(&self.key, payload, SIGNATURE_NAMESPACE)
    }
}
