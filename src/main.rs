//! The `blastguard` binary (also `kubectl-blastguard`): all logic lives in the library.

fn main() -> std::process::ExitCode {
    blastguard::cli::main()
}
