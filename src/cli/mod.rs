//! The command line: `serve`, `check`, `policy check`, `digest`, `approve`,
//! `completion`. The same binary is the kubectl plugin when installed as
//! `kubectl-blastguard`.

pub mod approve;
pub mod check;
pub mod policy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code: everything passed.
pub const EXIT_OK: u8 = 0;
/// Exit code: a change was denied (or a policy is invalid).
pub const EXIT_DENIED: u8 = 1;
/// Exit code: the input could not be read.
pub const EXIT_BAD_INPUT: u8 = 2;

/// blastguard: hold AI-assisted Kubernetes changes with a high blast radius until
/// senior engineers sign an approval for exactly that change.
#[derive(Debug, Parser)]
#[command(name = "blastguard", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook (HTTPS) and its admin port.
    Serve(crate::server::ServeArgs),
    /// Evaluate manifests or an AdmissionReview offline with the webhook's engine.
    Check(check::CheckArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Print the approval payload for a change.
    Digest(approve::DigestArgs),
    /// Sign an approval for a change with an SSH key.
    Approve(approve::ApproveArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => crate::server::run(args),
        Command::Check(args) => check::run(args),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Digest(args) => approve::run_digest(args),
        Command::Approve(args) => approve::run_approve(args),
    }
}
