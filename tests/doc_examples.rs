//! The docs' examples, run (issue 12, Deliver 3): a doc example must not rot again.
//!
//! - Every allowed_signers line in docs/*.md (a line with a principal, optional
//!   options and an SSH key type, in a fence or a YAML list item) is read by
//!   blastguard's parser and by the real `ssh-keygen -Y verify`, with its key material
//!   (shown as `AAAA...` in the docs) replaced by a real key of a type ssh-keygen can
//!   make quickly. Both must accept it.
//! - Every fenced block whose info string is `yaml policy` (the marker) or that holds a
//!   `kind: BlastRadiusPolicy` document goes through `blastguard policy check`.

use std::path::{Path, PathBuf};
use std::process::Command;

use blastguard::approval::allowed_signers::AllowedSigners;

fn docs() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    out.sort();
    out
}

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ssh-rsa",
];

/// The allowed_signers lines of a doc: (line number, the line without YAML quoting).
fn signer_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let mut line = raw.trim().trim_start_matches("- ").trim();
            if let Some(inner) = line.strip_prefix('\'').and_then(|l| l.strip_suffix('\'')) {
                line = inner;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let key_at = words.iter().position(|w| KEY_TYPES.contains(w))?;
            // A principal first (an e-mail-like pattern), the key type later.
            (key_at >= 1 && words[0].contains('@') && !line.contains('`'))
                .then(|| (i + 1, line.to_string()))
        })
        .collect()
}

#[test]
fn every_allowed_signers_line_in_the_docs_is_accepted_by_blastguard_and_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let public = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let payload = dir.path().join("payload.json");
    std::fs::write(&payload, "{}").unwrap();
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", "approval@blastguard.io", "-f"])
            .arg(&key)
            .arg(&payload)
            .status()
            .unwrap()
            .success()
    );
    let mut seen = 0;
    for (path, text) in docs() {
        for (n, line) in signer_lines(&text) {
            seen += 1;
            let words: Vec<&str> = line.split_whitespace().collect();
            let key_at = words.iter().position(|w| KEY_TYPES.contains(w)).unwrap();
            let principal = words[0].trim_matches('"').split(',').next().unwrap();
            let real = format!("{} {public}\n", words[..key_at].join(" "));
            let where_ = format!("{}:{n}: {line}", path.display());
            AllowedSigners::parse(&real).unwrap_or_else(|e| panic!("{where_}: blastguard: {e}"));
            let file = dir.path().join("allowed_signers");
            std::fs::write(&file, &real).unwrap();
            let out = Command::new("ssh-keygen")
                .args(["-Y", "verify", "-f"])
                .arg(&file)
                .args(["-I", principal, "-n", "approval@blastguard.io", "-s"])
                .arg(dir.path().join("payload.json.sig"))
                .stdin(std::fs::File::open(&payload).unwrap())
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stderr);
            // A time window may have passed or not begun; the line must still parse.
            assert!(
                !said.contains("bad options") && !said.contains("invalid"),
                "{where_}: ssh-keygen: {said}"
            );
        }
    }
    assert!(
        seen >= 3,
        "found only {seen} allowed_signers lines in docs/"
    );
}

#[test]
fn every_policy_in_the_docs_passes_policy_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for (path, text) in docs() {
        let mut fence: Option<(usize, String, String)> = None;
        for (i, line) in text.lines().enumerate() {
            match &mut fence {
                None if line.trim_start().starts_with("```") => {
                    let info = line.trim_start().trim_start_matches('`').trim().to_string();
                    fence = Some((i + 1, info, String::new()));
                }
                None => {}
                Some((start, info, body)) if line.trim_start().starts_with("```") => {
                    if info == "yaml policy" || body.contains("kind: BlastRadiusPolicy") {
                        seen += 1;
                        let file = dir.path().join("policy.yaml");
                        std::fs::write(&file, &*body).unwrap();
                        let out = Command::new(env!("CARGO_BIN_EXE_blastguard"))
                            .args(["policy", "check"])
                            .arg(&file)
                            .output()
                            .unwrap();
                        assert!(
                            out.status.success(),
                            "{}:{start}: {}{}",
                            path.display(),
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    fence = None;
                }
                Some((_, _, body)) => {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    // The embedded default is documented too: print it and check it the same way.
    let out = Command::new(env!("CARGO_BIN_EXE_blastguard"))
        .args(["policy", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let file = dir.path().join("default.yaml");
    std::fs::write(&file, &out.stdout).unwrap();
    let ok = Command::new(env!("CARGO_BIN_EXE_blastguard"))
        .args(["policy", "check"])
        .arg(&file)
        .status()
        .unwrap()
        .success();
    assert!(ok, "blastguard policy default does not pass policy check");
    eprintln!("{seen} policy examples checked");
}
