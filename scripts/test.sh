#!/usr/bin/env bash
# The full test suite, from a fresh clone: installs the real tools the tests use
# (helm, kubernetes-validate, promtool), then format, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
tools_bin=$(bash scripts/install-tools.sh)
export PATH="$tools_bin:$PATH"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
# Benches (harness = false) are left out: they print figures, they test nothing.
cargo test --lib --bins --tests --no-fail-fast
