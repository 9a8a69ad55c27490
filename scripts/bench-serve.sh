#!/usr/bin/env bash
# Benchmark of `blastguard serve`: builds the release binary, starts `serve --dev`,
# and sends AdmissionReview requests over HTTPS with h2load, printing requests/s,
# latency percentiles, total time per run and the server's peak RSS.
#
# Runs (each REQUESTS requests, CLIENTS connections):
#   livez       GET /livez on the plain admin port: the HTTP stack alone (baseline)
#   allow-h2    POST /validate, a review without AI markers (the fast path), HTTP/2
#   deny-h2     POST /validate, the AI-assisted 40-replica Deployment in prod: full
#               evaluation, digest, approval payload and denial message, HTTP/2
#   deny-h1     the same over HTTP/1.1
# and the ratios of the deny runs to the allow fast path.
#
# Load generator and server share this machine's cores: compare runs of one
# invocation with each other, not across machines.
#
# Usage: scripts/bench-serve.sh   (REQUESTS=10000 CLIENTS=8 to change the load)
set -euo pipefail

REQUESTS=${REQUESTS:-10000}
CLIENTS=${CLIENTS:-8}
cd "$(dirname "$0")/.."

if ! command -v h2load >/dev/null; then
  echo "installing h2load (Debian package nghttp2-client)" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq nghttp2-client >/dev/null
fi

cargo build --release --quiet --bin blastguard

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

RUST_LOG=warn ./target/release/blastguard serve --dev \
  --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  >"$work/stdout" 2>"$work/stderr" &
server_pid=$!

for _ in $(seq 600); do
  grep -q "admin listening" "$work/stdout" 2>/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/stderr" >&2; exit 1; }
  sleep 0.1
done
webhook=$(sed -n 's|.*webhook listening on https://\([^/]*\)/validate.*|\1|p' "$work/stdout")
admin=$(sed -n 's|.*admin listening on http://\([^ ]*\) .*|\1|p' "$work/stdout")
review=$(sed -n 's|.*example review: \(.*\) (an AI.*|\1|p' "$work/stdout")
[ -n "$webhook" ] && [ -n "$admin" ] && [ -f "$review" ] || {
  echo "could not read the server's addresses:" >&2
  cat "$work/stdout" "$work/stderr" >&2
  exit 1
}
cp "$review" "$work/deny.json"
# Without the AI marker the same review takes the fast path.
sed 's|"blastguard.io/ai-agent": "claude-code"|"example.com/owner": "team-a"|' \
  "$review" >"$work/allow.json"
grep -q '"example.com/owner"' "$work/allow.json"

# run NAME URL [h2load options...]: one h2load run, summarised on one line.
run() {
  local name=$1 url=$2
  shift 2
  local log="$work/$name.log" out="$work/$name.out"
  h2load -n "$REQUESTS" -c "$CLIENTS" -t 1 --log-file="$log" "$@" "$url" >"$out"
  local succeeded total_time rps
  succeeded=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$out")
  if [ "$succeeded" != "$REQUESTS" ] || ! grep -q "status codes: $REQUESTS 2xx" "$out"; then
    echo "$name: not every request succeeded:" >&2
    cat "$out" >&2
    exit 1
  fi
  total_time=$(sed -n 's/^finished in \([0-9.]*m\?s\),.*/\1/p' "$out")
  rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$out")
  # The log's third column is each request's latency in microseconds.
  cut -f3 "$log" | sort -n | awk -v name="$name" -v rps="$rps" -v total="$total_time" '
    { v[NR] = $1 }
    function pct(p,   i) { i = int(p * NR + 0.999999); if (i < 1) i = 1; return v[i] / 1000 }
    END {
      printf "%-9s %10.0f %9s %8.3f %8.3f %8.3f %8.3f\n", name, rps, total, pct(0.5), pct(0.9), pct(0.99), v[NR] / 1000
      printf "%s %f %f\n", name, rps, pct(0.5) > "/dev/stderr"
    }' 2>>"$work/summary"
}

echo "blastguard serve --dev: $REQUESTS requests per run, $CLIENTS connections, h2load and server on $(nproc) cores"
printf "%-9s %10s %9s %8s %8s %8s %8s\n" run "req/s" total "p50 ms" "p90 ms" "p99 ms" "max ms"
post=(-H "content-type: application/json")
run livez "http://$admin/livez" --h1
run allow-h2 "https://$webhook/validate?timeout=10s" "${post[@]}" -d "$work/allow.json"
run deny-h2 "https://$webhook/validate?timeout=10s" "${post[@]}" -d "$work/deny.json"
run deny-h1 "https://$webhook/validate?timeout=10s" "${post[@]}" -d "$work/deny.json" --h1

awk '
  { rps[$1] = $2; p50[$1] = $3 }
  END {
    printf "deny-h2 / allow-h2: throughput x%.2f, p50 latency x%.2f\n", rps["deny-h2"] / rps["allow-h2"], p50["deny-h2"] / p50["allow-h2"]
    printf "allow-h2 / livez:   throughput x%.2f (TLS + review vs plain HTTP)\n", rps["allow-h2"] / rps["livez"]
  }' "$work/summary"

# The server judged every request: the metric counts match what was sent.
metrics=$(curl -sf "http://$admin/metrics")
denied=$(echo "$metrics" | sed -n 's/^blastguard_admission_requests_total{decision="deny",.*reason="over_limits"} //p')
echo "server counted $denied denials (expected $((2 * REQUESTS)))"
echo "server peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/$server_pid/status")"
