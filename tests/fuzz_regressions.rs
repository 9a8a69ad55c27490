//! Every input kept from fuzzing (`fuzz/regressions/<target>/`: what a fuzzer found,
//! and hand-written inputs for each format's known hazards), and every seed of the
//! fuzz corpus (`fuzz/seeds/<target>/`), run through the same functions as the
//! cargo-fuzz targets (`fuzz/harness.rs`): no panic, and each target's properties
//! hold. docs/fuzzing.md says how to run the fuzzers themselves.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

/// A fuzz target's function: what its fuzzer runs on each input.
type Target = fn(&[u8]);

/// Each target with the function its fuzzer runs.
const TARGETS: &[(&str, Target)] = &[
    ("review", harness::review),
    ("approval_payload", harness::approval_payload),
    ("sshsig", harness::sshsig),
    ("allowed_signers", harness::allowed_signers),
    ("policy", harness::policy_file),
];

fn run_all(under: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(under);
    let mut ran = 0;
    for (target, run) in TARGETS {
        let dir = root.join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let input = std::fs::read(&file).unwrap();
            // A panic names the input, so it can be fed to the fuzz target again.
            eprintln!("{target}: {}", file.display());
            run(&input);
            ran += 1;
        }
    }
    ran
}

#[test]
fn kept_fuzz_inputs_are_handled() {
    assert!(run_all("regressions") > 0, "fuzz/regressions holds inputs");
}

#[test]
fn fuzz_seeds_are_handled() {
    assert!(run_all("seeds") > 0, "fuzz/seeds holds the corpus seeds");
}
