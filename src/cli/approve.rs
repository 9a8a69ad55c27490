//! `blastguard digest` and `blastguard approve`: the approver's commands.

use std::process::ExitCode;

/// Arguments of `blastguard digest`.
#[derive(Debug, clap::Args)]
pub struct DigestArgs {}

/// Arguments of `blastguard approve`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {}

/// Runs `digest`.
pub fn run_digest(_args: DigestArgs) -> ExitCode {
    ExitCode::from(super::EXIT_BAD_INPUT)
}

/// Runs `approve`.
pub fn run_approve(_args: ApproveArgs) -> ExitCode {
    ExitCode::from(super::EXIT_BAD_INPUT)
}
