//! The command line: `serve`, `check`, `policy check`, `digest`, `approve`, `diff`,
//! `completion`; the kubectl plugin when installed as `kubectl-blastguard`.

pub mod approve;
pub mod check;
pub mod completion;
pub mod diff_command;
pub mod field_diff;
pub mod inbox;
pub mod policy;
pub mod policy_source;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Exit code: everything passed.
pub const EXIT_OK: u8 = 0;
/// Exit code: a change was denied (or a policy is invalid).
pub const EXIT_DENIED: u8 = 1;
/// Exit code: the input could not be read.
pub const EXIT_BAD_INPUT: u8 = 2;

/// The file name kubectl finds the plugin by (`kubectl blastguard` runs it).
pub const PLUGIN_PROGRAM: &str = "kubectl-blastguard";

/// blastguard: hold AI-assisted Kubernetes changes with a high blast radius until
/// senior engineers sign an approval for exactly that change.
#[derive(Debug, Parser)]
#[command(name = "blastguard", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, in the order `--help` lists them.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook (HTTPS) and its admin port.
    #[command(after_help = "\
Examples:
  # Without a cluster: self-signed certificate, embedded policy
  blastguard serve --dev

  # In the cluster (the Helm chart runs this)
  blastguard serve --tls-cert /tls/tls.crt --tls-key /tls/tls.key \\
    --policy /etc/blastguard/policy.yaml --log-format json")]
    Serve(crate::server::ServeArgs),
    /// Evaluate manifests or an AdmissionReview offline with the webhook's engine.
    Check(check::CheckArgs),
    /// Work with policy files.
    #[command(
        subcommand,
        after_help = "\
Examples:
  blastguard policy default > policy.yaml
  blastguard policy check policy.yaml"
    )]
    Policy(policy::PolicyCommand),
    /// Print the approval payload for a change.
    Digest(approve::DigestArgs),
    /// Sign an approval for a change with an SSH key.
    Approve(approve::ApproveArgs),
    /// Show what a change does to the live objects: the fields that change, its
    /// summary and the digest an approval must bind.
    Diff(diff_command::DiffArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(completion::CompletionArgs),
    /// The inbox: list the changes waiting for approval.
    Pending(inbox::PendingArgs),
    /// The inbox: one request's summary, limits exceeded, requester and diff.
    Show(inbox::ShowArgs),
    /// The inbox: reject a request (it is never admitted).
    Reject(inbox::RejectArgs),
    /// The inbox: record a change as a request without applying it.
    Request(inbox::RequestArgs),
}

/// The program's file name, and the name help shows: `kubectl blastguard` when run as
/// the kubectl plugin (kubectl runs `kubectl-blastguard` from PATH).
fn program_names() -> (String, String) {
    let program = std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "blastguard".to_string());
    let shown = if program == PLUGIN_PROGRAM {
        "kubectl blastguard".to_string()
    } else {
        program.clone()
    };
    (program, shown)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let (program, shown) = program_names();
    let matches = Cli::command().bin_name(shown).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Serve(args) => crate::server::run(args),
        Command::Check(args) => check::run(args),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Digest(args) => approve::run_digest(args),
        Command::Approve(args) => approve::run_approve(args),
        Command::Diff(args) => diff_command::run(args),
        Command::Completion(args) => completion::run(args, &program),
        Command::Pending(args) => inbox::run_pending(args),
        Command::Show(args) => inbox::run_show(args),
        Command::Reject(args) => inbox::run_reject(args),
        Command::Request(args) => inbox::run_request(args),
    }
}
