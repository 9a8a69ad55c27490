//! `blastguard serve`: the HTTPS webhook and its admin port.

use std::process::ExitCode;

/// Arguments of `blastguard serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// Runs the server until SIGTERM.
pub fn run(_args: ServeArgs) -> ExitCode {
    ExitCode::from(crate::cli::EXIT_BAD_INPUT)
}
