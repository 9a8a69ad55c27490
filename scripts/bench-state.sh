#!/usr/bin/env bash
# What shared change-set state adds to a decision (issue 19, BENCHMARKS.md): two
# `blastguard serve --state cluster` replicas on the local control plane
# (scripts/control-plane.sh) and one `--state memory` replica beside them, AI
# decisions (1-pod Deployment CREATEs by 40 agents in turn) sent at 10, 50 and 100
# per second over HTTPS/2; prints p50/p99 of each and the difference as a markdown
# table. Not part of the test suite.
#
# Usage: scripts/bench-state.sh
#   BENCH_SECONDS=10   length of each rate's run
#   BENCH_PROFILE=release (default) or debug: the build measured
#   BENCH_RATES=10,50,100 the rates run
#   BENCH_UNSEEN=1     replicas count each change at once (--count-unseen), as before
#                      they looked for it in the cluster: what looking costs
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
profile=()
[ "${BENCH_PROFILE:-release}" = release ] && profile=(--release)
exec cargo test "${profile[@]}" --test e2e_state_load -- --ignored --nocapture --test-threads 1 \
  added_latency_at_steady_rates
