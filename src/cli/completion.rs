//! `blastguard completion bash|zsh|fish`: shell completion scripts.

use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// Arguments of `blastguard completion`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # bash: load now, or install for every session
  source <(blastguard completion bash)
  blastguard completion bash > /etc/bash_completion.d/blastguard

  # zsh (a directory on $fpath)
  blastguard completion zsh > \"${fpath[1]}/_blastguard\"

  # fish
  blastguard completion fish > ~/.config/fish/completions/blastguard.fish

  # Installed as the kubectl plugin, completions for the kubectl-blastguard command
  kubectl-blastguard completion bash > /etc/bash_completion.d/kubectl-blastguard")]
pub struct CompletionArgs {
    /// The shell to print the completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Prints the completion script of `program` (the name the binary was run as).
pub fn run(args: CompletionArgs, program: &str) -> ExitCode {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, program, &mut std::io::stdout());
    ExitCode::SUCCESS
}
