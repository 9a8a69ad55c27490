//! The engine alone: one AdmissionReview judged N times, for instruction counts under
//! `valgrind --tool=callgrind` (repeatable where wall time on a shared machine is not).
//!
//! `scripts/bench.sh` runs it twice per review, with N and with N + K iterations, and
//! divides the difference by K: the setup (policy, allowed_signers, reading the file)
//! cancels out, and what is left is one decision: the body parsed, the change
//! measured, the approval verified, the response serialized.
//!
//! ```sh
//! engine_decisions ITERATIONS ALLOWED_SIGNERS REVIEW.json          # Engine::review
//! engine_decisions ITERATIONS ALLOWED_SIGNERS REVIEW.json --scan   # serde_json skipping
//! ```
//!
//! `--scan` reads the body with serde_json into `IgnoredAny`: every byte parsed once,
//! nothing kept, the floor of any reading of the whole review with serde_json.

use std::hint::black_box;
use std::sync::Arc;

use blastguard::approval::allowed_signers::AllowedSigners;
use blastguard::approval::verifier::SignedApprovals;
use blastguard::engine::Engine;
use blastguard::policy::Policy;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (iterations, signers, review, scan) = match args.as_slice() {
        [n, s, r] => (n, s, r, false),
        [n, s, r, flag] if flag == "--scan" => (n, s, r, true),
        _ => {
            eprintln!("usage: engine_decisions ITERATIONS ALLOWED_SIGNERS REVIEW.json [--scan]");
            std::process::exit(2);
        }
    };
    let iterations: u32 = iterations.parse().expect("ITERATIONS: a number");
    let signers = std::fs::read_to_string(signers).expect("read ALLOWED_SIGNERS");
    let verifier = SignedApprovals::new(AllowedSigners::parse(&signers).expect("allowed_signers"));
    let body = std::fs::read(review).expect("read REVIEW");
    let engine = Engine::new(Policy::embedded(), Arc::new(verifier));
    for _ in 0..iterations {
        if scan {
            let read: Result<serde::de::IgnoredAny, _> = serde_json::from_slice(black_box(&body));
            black_box(read.expect("the review is JSON"));
        } else {
            black_box(engine.review(black_box(&body)));
        }
    }
}
