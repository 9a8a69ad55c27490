//! `blastguard check`: evaluate manifests or an AdmissionReview offline.

use std::process::ExitCode;

/// Arguments of `blastguard check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

/// Runs `check`.
pub fn run(_args: CheckArgs) -> ExitCode {
    ExitCode::from(super::EXIT_BAD_INPUT)
}
