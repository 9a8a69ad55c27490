#!/usr/bin/env bash
# blastguard against a real local control plane, by hand (docs/development.md).
#
#   scripts/dev-cluster.sh up [DIR]     control plane + helm install (webhook.url) + serve
#   scripts/dev-cluster.sh down [DIR]   stop serve and the control plane
#
# BLASTGUARD_BIN=PATH runs that blastguard binary instead of `cargo build`.
# DIR defaults to ${TMPDIR:-/tmp}/blastguard-dev. up writes DIR/env.sh (source it:
# KUBECONFIG, PATH with the pinned kubectl and helm first, WEBHOOK_URL, ADMIN_URL),
# DIR/serve.log (the decision log), DIR/keys/{alice,bob} (approvers' SSH keys, listed in
# allowed_signers). The same sequence as the e2e tests' harness (tests/common/cluster.rs)
# and docs/install.md "Development": the server runs the policy and allowed_signers the
# chart put in its ConfigMaps.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cmd=${1:-}
dir=${2:-${TMPDIR:-/tmp}/blastguard-dev}
log() { echo "dev-cluster: $*" >&2; }

# serve's pid from DIR/serve.pid, only while it is alive and still our process.
serve_pid() {
  local pid
  pid=$(cat "$dir/serve.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/" && echo "$pid"
}

down() {
  local pid
  if pid=$(serve_pid); then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$dir/serve.pid"
  bash "$root/scripts/control-plane.sh" down "$dir/cluster"
  log "down ($dir kept; rm -rf it to start from scratch)"
}

up() {
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if serve_pid >/dev/null; then
    log "already up in $dir; run: $0 down $dir"; exit 1
  fi
  local tools target
  tools=$(bash "$root/scripts/install-tools.sh")
  export PATH="$tools:$PATH"
  if [ -n "${BLASTGUARD_BIN:-}" ]; then
    # A prebuilt binary (a release download, a CI artifact): no Rust toolchain needed.
    [ -x "$BLASTGUARD_BIN" ] || { log "BLASTGUARD_BIN=$BLASTGUARD_BIN is not an executable file"; exit 1; }
    log "using $BLASTGUARD_BIN"
    cp "$BLASTGUARD_BIN" "$dir/blastguard"
  else
    log "building blastguard (BLASTGUARD_BIN=PATH uses a prebuilt binary instead)"
    (cd "$root" && cargo build --quiet)
    target=${CARGO_TARGET_DIR:-$root/target}
    cp "$target/debug/blastguard" "$dir/blastguard"
  fi

  bash "$root/scripts/control-plane.sh" up "$dir/cluster" >/dev/null
  export KUBECONFIG="$dir/cluster/kubeconfig"

  # A CA and a serving certificate for 127.0.0.1 (the API server dials the URL's host).
  local p=$dir/pki
  rm -rf "$p"; mkdir -p "$p"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=blastguard-dev-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$p/tls.key" -out "$p/tls.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$p/tls.ext"
  openssl x509 -req -in "$p/tls.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
    -days 30 -extfile "$p/tls.ext" -out "$p/tls.crt" 2>/dev/null

  # Two approvers, so the approval workflow can be tried end to end.
  mkdir -p "$dir/keys"
  local name entries=""
  for name in alice bob; do
    [ -f "$dir/keys/$name" ] || ssh-keygen -q -t ed25519 -N '' -C "$name@example.com" -f "$dir/keys/$name"
    entries+="    - '$name@example.com namespaces=\"approval@blastguard.io\" $(cut -d' ' -f1,2 "$dir/keys/$name.pub")'"$'\n'
  done

  local ports webhook_port admin_port
  ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
  read -r webhook_port admin_port <<< "$ports"
  cat > "$dir/values.yaml" <<EOF
webhook:
  url: https://127.0.0.1:$webhook_port/validate
certificates:
  mode: secret
  secret:
    caBundle: $(openssl base64 -A -in "$p/ca.crt")
allowedSigners:
  entries:
$entries
EOF
  helm install blastguard "$root/charts/blastguard" --namespace blastguard --create-namespace \
    -f "$dir/values.yaml" >/dev/null

  kubectl -n blastguard get configmap blastguard-policy -o jsonpath='{.data.policy\.yaml}' > "$dir/policy.yaml"
  kubectl -n blastguard get configmap blastguard-allowed-signers -o jsonpath='{.data.allowed_signers}' > "$dir/allowed_signers"
  setsid "$dir/blastguard" serve --listen "127.0.0.1:$webhook_port" --admin-listen "127.0.0.1:$admin_port" \
    --tls-cert "$p/tls.crt" --tls-key "$p/tls.key" \
    --policy "$dir/policy.yaml" --allowed-signers "$dir/allowed_signers" \
    > "$dir/serve.log" 2>&1 < /dev/null &
  echo $! > "$dir/serve.pid"
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break
    serve_pid >/dev/null || { cat "$dir/serve.log" >&2; log "error: serve exited"; exit 1; }
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null || { log "error: serve not ready"; exit 1; }

  {
    printf 'export KUBECONFIG=%q\n' "$KUBECONFIG"
    printf 'export PATH=%q:"$PATH"\n' "$tools"
    printf 'WEBHOOK_URL=%q\n' "https://127.0.0.1:$webhook_port/validate"
    printf 'ADMIN_URL=%q\n' "http://127.0.0.1:$admin_port"
    printf 'APPROVER_KEYS=%q\n' "$dir/keys"
  } > "$dir/env.sh"
  log "up: webhook https://127.0.0.1:$webhook_port/validate, metrics http://127.0.0.1:$admin_port/metrics"
  log "next: source $dir/env.sh   (decision log: $dir/serve.log; stop: $0 down $dir)"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
