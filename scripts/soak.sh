#!/usr/bin/env bash
# The soak (docs/reliability.md): builds blastguard and the soak driver in release
# mode, then runs `blastguard serve` on 127.0.0.1 under mixed load for DURATION while
# its certificate, policy and allowed_signers change underneath, and prints requests,
# errors, p50/p99, RSS and file descriptors at start and end. Exit 0 when it passed.
#
#   scripts/soak.sh [DURATION]          default 30m
#   RATE=300 WORKERS=8 JSON=soak.json scripts/soak.sh 2h
#
# Loopback only, bounded in time; the load runs at `nice` so the machine stays usable.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-30m}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --bin blastguard --example soak
args=(--blastguard "$target/release/blastguard" --duration "$duration"
      --rate "${RATE:-300}" --workers "${WORKERS:-8}")
if [[ -n "${JSON:-}" ]]; then
    args+=(--json "$JSON")
fi
exec nice -n 10 "$target/release/examples/soak" "${args[@]}"
