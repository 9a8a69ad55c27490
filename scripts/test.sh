#!/usr/bin/env bash
# The full test suite, from a fresh clone: installs the real tools the tests use
# (helm, kubernetes-validate, promtool), then format, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
tools_bin=$(bash scripts/install-tools.sh)
export PATH="$tools_bin:$PATH"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets --no-fail-fast
