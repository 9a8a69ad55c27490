//! `blastguard policy check FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::{EXIT_BAD_INPUT, EXIT_DENIED};
use crate::policy::{Policy, PolicyError};

/// `blastguard policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and print each problem with its path.
    #[command(after_help = "Example:\n  blastguard policy check policy.yaml")]
    Check {
        /// The policy file (YAML or JSON).
        file: PathBuf,
    },
    /// Print the embedded default policy.
    Default,
}

/// Runs a policy command.
pub fn run(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Check { file } => match Policy::from_file(&file) {
            Ok(policy) => {
                println!(
                    "{}: valid policy {:?} with {} rule(s)",
                    file.display(),
                    policy.document.metadata.name,
                    policy.rules.len()
                );
                ExitCode::SUCCESS
            }
            Err(PolicyError::Invalid { problems, .. }) => {
                eprintln!("{}: {} problem(s):", file.display(), problems.len());
                for p in &problems {
                    eprintln!("  {p}");
                }
                ExitCode::from(EXIT_DENIED)
            }
            Err(e @ PolicyError::Read { .. }) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_BAD_INPUT)
            }
        },
        PolicyCommand::Default => {
            print!("{}", crate::policy::DEFAULT_POLICY_YAML);
            ExitCode::SUCCESS
        }
    }
}
