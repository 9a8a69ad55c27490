//! The soak: `blastguard serve` on loopback under mixed load for a set time, while its
//! certificate, policy and allowed_signers change underneath; prints what it saw.
//! Run it with `scripts/soak.sh` (docs/reliability.md); `tests/soak.rs` runs the same
//! driver for two minutes in the test suite.
//!
//! Usage: soak --blastguard PATH [--duration 30m] [--rate 300] [--workers 8] [--json FILE]

mod driver;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let mut options = driver::Options::default();
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--blastguard" => options.blastguard = PathBuf::from(value()),
            "--duration" => {
                options.duration = humantime::parse_duration(&value())
                    .unwrap_or_else(|e| usage(&format!("--duration: {e}")))
            }
            "--rate" => {
                options.rate = value()
                    .parse()
                    .unwrap_or_else(|e| usage(&format!("--rate: {e}")))
            }
            "--workers" => {
                options.workers = value()
                    .parse()
                    .unwrap_or_else(|e| usage(&format!("--workers: {e}")))
            }
            "--json" => json = Some(PathBuf::from(value())),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if options.duration > Duration::from_secs(24 * 3600) {
        usage("--duration: at most 24h (the approvals it signs must stay valid)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = runtime.block_on(driver::run(options));
    println!("{report}");
    if let Some(path) = json {
        std::fs::write(&path, report.to_json()).expect("write the JSON report");
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        eprintln!("soak: FAILED: {}", report.failures().join("; "));
        ExitCode::FAILURE
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("soak: {problem}");
    }
    eprintln!(
        "usage: soak --blastguard PATH [--duration 30m] [--rate REQUESTS_PER_SECOND] [--workers N] [--json FILE]"
    );
    std::process::exit(2)
}
