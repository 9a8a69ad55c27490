#!/usr/bin/env bash
# The benchmark (BENCHMARKS.md): blastguard beside two baseline servers that read each
# body and answer a fixed allowed review: one built from the same stack with
# blastguard's own TLS and listener settings (examples/baseline_server.rs), one with
# hyper's, rustls's and tokio's defaults and nothing of blastguard's
# (examples/hyper_defaults_server.rs); and beside nginx when it is installed; in one
# run, on 127.0.0.1 only:
#
#   - server CPU per request (utime+stime from /proc / requests) and latency
#     p50/p99/p99.9 at 1,000 and 2,000 requests/s, HTTP/2 and HTTP/1.1, and at
#     3,000/s over HTTP/2 with 4 connections × 4 streams, for four 12 KB Deployment
#     UPDATE reviews (a person's change; an AI change allowed; denied with its payload;
#     approved by two SSH signatures), with oha at a fixed rate;
#   - throughput at saturation; idle and peak RSS; eight concurrent 3 MiB reviews;
#     time from start to /readyz 200;
#   - the engine alone, instructions per decision under valgrind's callgrind, in all
#     and by stage (the named frames of src/engine.rs);
#   - the ratios to both baselines, checked against issue 24's targets.
#
# Prints the tables and writes them to $CARGO_TARGET_DIR/bench/results.md (with
# results.json and every request's latency beside it), rewrites BENCHMARKS.md's
# generated section (between its "results" markers) with the same tables, and draws
# docs/bench-latency.png from the same run: every figure there comes from this one
# run. Takes about 6 minutes once built; not part of the test suite. It measures
# whatever this checkout builds. To render the tables again from the last run's
# results.json without measuring: python3 scripts/bench/run.py --out target/bench
# --render-only --doc BENCHMARKS.md.
#
# Usage: scripts/bench.sh     (BENCH_SECONDS=5: length of each fixed-rate run)
#
# Needs: cargo, python3, openssl, ssh-keygen. Installs when missing: oha (crates.io,
# into .tools/bin, once, a few minutes), valgrind (Debian, only when run as root;
# otherwise the engine figures are skipped), matplotlib (PyPI, into .tools/bench-venv;
# without it no plot). nginx is measured only when present: nothing installs it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
out=$target/bench
tools=$root/.tools
run_seconds=${BENCH_SECONDS:-5}
# The load generator's version the figures were taken with (its CSV and JSON output
# are what run.py reads).
OHA_VERSION=1.16.0
mkdir -p "$out" "$tools/bin"
say() { echo "[bench] $*" >&2; }

for tool in python3 openssl ssh-keygen; do
  command -v "$tool" >/dev/null || { say "$tool is required"; exit 1; }
done

oha=$(command -v oha || true)
[ -z "$oha" ] && [ -x "$tools/bin/oha" ] && oha=$tools/bin/oha
if [ -z "$oha" ]; then
  say "installing the load generator oha from crates.io into .tools/bin (once, a few minutes)"
  # Its default TLS is rustls over aws-lc-rs (a C build with cmake); where that does
  # not build, its native-tls feature (the system's OpenSSL) serves the same options.
  cargo install oha --version "$OHA_VERSION" --locked --quiet --root "$tools" ||
    cargo install oha --version "$OHA_VERSION" --locked --quiet --root "$tools" \
      --no-default-features --features native-tls
  oha=$tools/bin/oha
fi

valgrind=$(command -v valgrind || true)
if [ -z "$valgrind" ] && [ "$(id -u)" -eq 0 ]; then
  say "installing valgrind (Debian) for the engine's instruction counts"
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null 2>&1; }; then
    valgrind=$(command -v valgrind || true)
  fi
fi
[ -z "$valgrind" ] && say "valgrind not available (not root, or apt-get failed): the engine figures are skipped"

nginx=$(command -v nginx || true)
[ -z "$nginx" ] && [ -x /usr/sbin/nginx ] && nginx=/usr/sbin/nginx
if [ -z "$nginx" ]; then
  say "nginx is not installed: measured without it (apt-get install nginx to include it)"
fi

build_started=$SECONDS
say "building blastguard, the baseline servers and the engine driver (release)"
cargo build --release --quiet --bin blastguard --example baseline_server --example hyper_defaults_server \
  --example engine_decisions
build_seconds=$((SECONDS - build_started))

measure_started=$SECONDS
extra=()
[ -n "$valgrind" ] && extra+=(--valgrind "$valgrind")
[ -n "$nginx" ] && extra+=(--nginx "$nginx")
python3 scripts/bench/run.py \
  --blastguard "$target/release/blastguard" \
  --baseline "$target/release/examples/baseline_server" \
  --hyper-defaults "$target/release/examples/hyper_defaults_server" \
  --engine "$target/release/examples/engine_decisions" \
  --oha "$oha" --out "$out" --seconds "$run_seconds" --doc BENCHMARKS.md "${extra[@]}"
measure_seconds=$((SECONDS - measure_started))

venv=$tools/bench-venv
if ! "$venv/bin/python" -c 'import matplotlib' >/dev/null 2>&1; then
  say "installing matplotlib from PyPI into .tools/bench-venv (once)"
  { python3 -m venv "$venv" && "$venv/bin/pip" install -q matplotlib; } >&2 || say "matplotlib unavailable: no plot"
fi
if "$venv/bin/python" -c 'import matplotlib' >/dev/null 2>&1; then
  "$venv/bin/python" scripts/bench/plot.py "$out" docs/bench-latency.png >&2
fi
say "build ${build_seconds} s, measurements ${measure_seconds} s; table in $out/results.md and BENCHMARKS.md, plot in docs/bench-latency.png"
