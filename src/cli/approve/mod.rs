//! `blastguard digest` and `blastguard approve`: the approver's commands.
//!
//! Both read one object (a manifest, `kubectl get -o json` output, or an
//! AdmissionReview) or a render of several, and build the payload the webhook will
//! ask for; `approve` signs it with an SSH key file or through ssh-agent. When the
//! object already carries an approval, `approve` signs that exact payload and
//! appends its signature, so approvers can sign one after the other.
//!
//! By stage: [`input`] reads FILE (with `check`'s reader), [`subject`] binds each
//! object through the engine's own `Change`, [`payload`] chooses the payload to
//! sign, [`signing`] signs or attaches signatures, [`output`] and [`annotate`] show
//! and write. This file runs the stages and does the printing.

pub mod annotate;
pub mod annotate_json;
pub mod args;
pub mod error;
pub mod input;
pub mod output;
pub mod payload;
pub mod signing;
pub mod subject;

use std::process::ExitCode;
use std::time::SystemTime;

pub use args::{ApproveArgs, ChangeArgs, DigestArgs, OperationArg};
pub use error::ApproveError;
use error::FileProblem;
pub use input::RESTARTED_AT;

use super::EXIT_BAD_INPUT;
use crate::approval::allowed_signers::fingerprint;
use crate::approval::payload::SIGNATURE_NAMESPACE;
use crate::cli::policy_source::{self, PolicyChoice};
use crate::policy::Policy;
use payload::{Existing, Prepared, Settings};
use signing::Signer;

/// Runs `digest`.
pub fn run_digest(args: DigestArgs) -> ExitCode {
    match digest(&args.change, SystemTime::now()) {
        Ok(prepared) => {
            println!("{}", prepared.payload_text);
            for note in &prepared.notes {
                eprintln!("note: {note}");
            }
            eprintln!(
                "Sign with: blastguard approve -f {file} --key ~/.ssh/id_ed25519 \
                 (passphrase-protected key: --agent --key ~/.ssh/id_ed25519.pub)\n\
                 (or save the line above as payload.json and run: ssh-keygen -Y sign -n {SIGNATURE_NAMESPACE} -f ~/.ssh/id_ed25519 payload.json, \
                 then: blastguard approve -f {file} --payload payload.json --signature payload.json.sig --annotate)",
                file = args.change.file().display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// Runs `approve`.
pub fn run_approve(args: ApproveArgs) -> ExitCode {
    if let Some(name) = &args.request {
        return super::inbox::run_approve(name, &args);
    }
    match approve(&args, SystemTime::now()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &ApproveError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// The policy of `--policy`, else the embedded one, through the commands' one loader
/// (crate::cli::policy_source).
fn policy_of(args: &ChangeArgs) -> Result<Policy, ApproveError> {
    let choice = PolicyChoice::file_or_embedded(args.policy.as_deref());
    Ok(policy_source::load(&choice)?.policy)
}

/// FILE as it was written: what `--annotate` edits.
struct Written {
    text: String,
    json: bool,
}

/// Every object's payload.
fn prepare_all(
    args: &ChangeArgs,
    policy: &Policy,
    given: Option<&std::path::Path>,
    existing: Existing,
    now: SystemTime,
) -> Result<(Written, Vec<Prepared>), ApproveError> {
    let given = given.map(payload::given).transpose()?;
    let ttl = payload::ttl(args, policy, now)?;
    let source = input::read(args, policy)?;
    let written = Written {
        text: source.text.clone(),
        json: source.json,
    };
    let settings = Settings {
        args,
        policy,
        now,
        ttl,
        existing,
    };
    Ok((written, payload::prepare_all(&settings, source, given)?))
}

fn digest(args: &ChangeArgs, now: SystemTime) -> Result<Prepared, ApproveError> {
    let policy = policy_of(args)?;
    let (_, mut all) = prepare_all(args, &policy, None, Existing::ReplaceIfStale, now)?;
    let file = args.file().display().to_string();
    if all.len() != 1 {
        return Err(ApproveError::file(
            file,
            FileProblem::SeveralToDigest(all.len()),
        ));
    }
    let prepared = all.remove(0);
    if let input::Input::Payload(_) = prepared.input {
        return Err(ApproveError::file(file, FileProblem::AlreadyAPayload));
    }
    Ok(prepared)
}

fn approve(args: &ApproveArgs, now: SystemTime) -> Result<(), ApproveError> {
    let signer = if args.signature.is_empty() {
        Some(Signer::from_flags(args.key.as_deref(), args.agent)?)
    } else {
        None
    };
    let policy = policy_of(&args.change)?;
    let (source, all) = prepare_all(
        &args.change,
        &policy,
        args.payload.as_deref(),
        Existing::Extend,
        now,
    )?;
    let file = args.change.file();
    if args.annotate && !all.iter().all(|p| p.input.object().is_some()) {
        return Err(ApproveError::Usage(
            "--annotate writes the approval into a manifest; FILE is not one (print the annotations instead)",
        ));
    }
    if !args.signature.is_empty() && all.len() > 1 {
        return Err(ApproveError::file(
            file.display().to_string(),
            FileProblem::SignatureForSeveral(all.len()),
        ));
    }
    let several = all.len() > 1;
    let trust_file = trust_file(args, &policy);
    let mut signed = Vec::with_capacity(all.len());
    for prepared in all {
        let who = prepared.who(several);
        let signatures = sign(
            args,
            signer.as_ref(),
            &prepared,
            who.as_deref(),
            trust_file.as_deref(),
            now,
        )
        .map_err(|e| e.of(who.as_deref()))?;
        signed.push((prepared, signatures));
    }

    if args.annotate {
        let text = output::annotated_text(&source.text, source.json, &signed)?;
        output::write_file(file, &text)?;
        for (prepared, signatures) in &signed {
            let count = signing::signature_count(signatures);
            match prepared.who(several) {
                Some(who) => eprintln!(
                    "Added the approval with {count} signature(s) to {who} in {}.",
                    file.display()
                ),
                None => eprintln!(
                    "Added the approval with {count} signature(s) to {}.",
                    file.display()
                ),
            }
        }
        return Ok(());
    }
    for (prepared, signatures) in &signed {
        let yaml = output::annotations_yaml(&prepared.payload_text, signatures)?;
        let count = signing::signature_count(signatures);
        if let Some(who) = prepared.who(several) {
            println!("# {who}");
        }
        eprintln!(
            "Add these annotations under metadata.annotations ({count} signature(s); for scale, on the workload):"
        );
        print!("{yaml}");
    }
    Ok(())
}

/// Signs (or attaches) one object's payload, telling the approver what they sign.
fn sign(
    args: &ApproveArgs,
    signer: Option<&Signer>,
    prepared: &Prepared,
    who: Option<&str>,
    trust_file: Option<&std::path::Path>,
    now: SystemTime,
) -> Result<String, ApproveError> {
    let file = args.change.file();
    match signer {
        Some(signer) => {
            signing::not_signed_yet(prepared, signer)?;
            for note in &prepared.notes {
                eprintln!("note: {note}");
            }
            eprint!("{}", output::what_is_signed(prepared, who, file));
            let public = signer.public_key()?;
            if let Some(path) = trust_file {
                let trust = signing::trust(path, public.key_data(), now);
                eprintln!(
                    "{}",
                    output::trust_line(&trust, &fingerprint(public.key_data()), path)
                );
            }
            signing::sign_one(prepared, signer)
        }
        None => {
            for note in &prepared.notes {
                eprintln!("note: {note}");
            }
            eprint!("{}", output::what_is_signed(prepared, None, file));
            let (signatures, attached) = signing::attach(prepared, &args.signature)?;
            for (key, path) in &attached {
                eprintln!("Attaching the signature by key {key} from {path}.");
            }
            // Same warning as when signing: a key the cluster will not count is
            // worth knowing before the retry (only with --allowed-signers).
            if let Some(path) = &args.allowed_signers {
                for key in signing::existing_keys(&Prepared {
                    input: input::Input::Payload(String::new()),
                    payload_text: String::new(),
                    existing_signatures: Some(signatures.clone()),
                    notes: Vec::new(),
                })? {
                    let trust = signing::trust(path, &key, SystemTime::now());
                    if !matches!(
                        trust,
                        signing::Trust::Trusted(_) | signing::Trust::Unreadable(_)
                    ) {
                        eprintln!(
                            "warning: key {} is not trusted for approvals by {}: the webhook will not count it",
                            fingerprint(&key),
                            path.display()
                        );
                    }
                }
            }
            Ok(signatures)
        }
    }
}

/// The allowed_signers copy to check the signing key against: `--allowed-signers`,
/// else the path the `--policy` file names.
fn trust_file(args: &ApproveArgs, policy: &Policy) -> Option<std::path::PathBuf> {
    match (&args.allowed_signers, &args.change.policy) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(_)) => Some(std::path::PathBuf::from(&policy.approvals.allowed_signers)),
        (None, None) => None,
    }
}
