#!/usr/bin/env bash
# A real, local Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager) on 127.0.0.1 for blastguard's end-to-end tests.
#
# Why: the webhook's claims (what it denies, which identities it trusts, what
# the apiserver does when it is down or slow) only mean something against the
# real apiserver: its admission chain, RBAC, service-account tokens, and the
# controllers that turn a Deployment into ReplicaSets and Pods under their own
# service accounts. No container runtime or kubelet runs, so Pods stay Pending;
# everything up to scheduling is the real thing.
#
# Why we build instead of download: only the package registries are reachable
# here, so the binaries are compiled from the Go module proxy, pinned in
# scripts/control-plane/{kube,etcd}/go.mod (+ go.sum), once per machine, into
# ${BLASTGUARD_CACHE:-$HOME/.cache/blastguard}/control-plane/<k8s>-etcd<etcd>/.
#
#   scripts/control-plane.sh version     pinned Kubernetes version
#   scripts/control-plane.sh build       build (or find) the binaries; prints their dir
#   scripts/control-plane.sh up DIR      start a fresh cluster in DIR; returns once usable
#   scripts/control-plane.sh up DIR --node   the same plus a node (scripts/control-plane/node.sh):
#                                        containerd, kubelet, kube-proxy, kube-scheduler; pods run
#   scripts/control-plane.sh load DIR ARCHIVE   import an OCI image archive into DIR's node
#   scripts/control-plane.sh build-node  build (or find) the node's binaries; prints their dir
#   scripts/control-plane.sh down DIR    stop it (idempotent); with a node, undo what it changed
#
# up writes DIR/kubeconfig (cluster-admin), DIR/env (KUBECONFIG=, APISERVER_PORT=,
# ETCD_PORT=, ...; also printed on stdout), DIR/pids, DIR/{etcd,kube-apiserver,
# kube-controller-manager}.log. Every listener binds 127.0.0.1 on a port the
# kernel reported free; nothing is contacted beyond loopback. With --node, the API
# server and the kubelet bind the node's bridge address instead (pods must reach
# them), and the kubeconfig names that address.
# CONTROL_PLANE_APISERVER_ARGS (split on spaces) is appended to kube-apiserver's
# command line, e.g. --admission-control-config-file=FILE for a test.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src="$here/control-plane"
cache_root="${BLASTGUARD_CACHE:-$HOME/.cache/blastguard}/control-plane"
timeout_s="${CONTROL_PLANE_TIMEOUT:-120}"

log() { echo "control-plane: $*" >&2; }
die() { log "error: $*"; exit 1; }

# The pins live in the go.mod files alone, so the script can't disagree with them.
mod_version() { # go.mod module-path
  awk -v m="$2" '{ for (i = 1; i < NF; i++) if ($i == m && $(i+1) ~ /^v[0-9]/) { print $(i+1); exit } }' "$1"
}
k8s_version=$(mod_version "$src/kube/go.mod" k8s.io/kubernetes)
etcd_version=$(mod_version "$src/etcd/go.mod" go.etcd.io/etcd/server/v3)
[ -n "$k8s_version" ] && [ -n "$etcd_version" ] || die "cannot read the pinned versions from $src/*/go.mod"
bin_dir="$cache_root/${k8s_version}-etcd${etcd_version#v}"
binaries=(etcd kube-apiserver kube-controller-manager)

api_host=127.0.0.1
node=false
# shellcheck source=control-plane/node.sh
. "$src/node.sh"

have_binaries() {
  local b
  for b in "${binaries[@]}"; do [ -x "$bin_dir/$b" ] || return 1; done
}

cmd_build() {
  if have_binaries; then echo "$bin_dir"; return 0; fi
  local go
  go=$(command -v go || true)
  [ -n "$go" ] || go=/usr/local/go/bin/go
  [ -x "$go" ] || die "no Go toolchain (neither 'go' on PATH nor /usr/local/go/bin/go)"
  mkdir -p "$cache_root"
  # Two test runs may ask for the build at once: the second waits, then finds it done.
  exec 9>"$cache_root/.build.lock"
  flock 9
  if have_binaries; then echo "$bin_dir"; return 0; fi
  # Leftovers of a build that was killed (holding the lock, no other build runs).
  find "$cache_root" -maxdepth 1 -type d -name '.build.*' -exec rm -rf {} +

  # auto: the local Go when it is new enough for the go.mod files (1.25), else the
  # toolchain module from the proxy. -mod=readonly: build exactly what go.sum pins.
  # GOWORK=off: a go.work further up must not pull these modules into it.
  # CGO_ENABLED=0: static binaries like the released ones, and no C compiler needed.
  export GOTOOLCHAIN=auto GOWORK=off CGO_ENABLED=0
  local gv major minor ldk tmp start secs
  major=${k8s_version#v}; major=${major%%.*}
  minor=${k8s_version#v"$major".}; minor=${minor%%.*}
  # The module zips carry the placeholder version (v0.0.0-master); stamp the real one
  # so /version, kubectl's skew check and user agents see v1.35.x.
  ldk="-s -w"
  for gv in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldk+=" -X $gv.gitVersion=$k8s_version -X $gv.gitMajor=$major -X $gv.gitMinor=$minor -X $gv.gitTreeState=clean"
  done
  tmp=$(mktemp -d "$cache_root/.build.XXXXXX"); chmod 755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  log "building kube-apiserver, kube-controller-manager $k8s_version and etcd $etcd_version with $("$go" version | cut -d' ' -f3) (with an empty Go build cache: about 5 min on 2 cores)"
  start=$(date +%s)
  (cd "$src/kube" && "$go" build -mod=readonly -buildvcs=false -trimpath -ldflags="$ldk" -o "$tmp/" ./kube-apiserver ./kube-controller-manager) \
    || die "building kube-apiserver/kube-controller-manager failed (see above)"
  (cd "$src/etcd" && "$go" build -mod=readonly -buildvcs=false -trimpath -ldflags="-s -w" -o "$tmp/etcd" .) \
    || die "building etcd failed (see above)"
  secs=$(( $(date +%s) - start ))
  "$tmp/kube-apiserver" --version >/dev/null || die "the built kube-apiserver does not run"
  "$tmp/etcd" --version >/dev/null || die "the built etcd does not run"
  printf 'kubernetes %s\netcd %s\n%s\nbuilt %s in %ss on %s cores\n' "$k8s_version" "$etcd_version" \
    "$("$go" version)" "$(date -u +%FT%TZ)" "$secs" "$(nproc)" > "$tmp/BUILD-INFO"
  # Only a complete build gets the final name, so an interrupted one is never mistaken for it.
  rm -rf "$bin_dir"
  mv "$tmp" "$bin_dir"
  trap - EXIT
  log "built in ${secs}s: $bin_dir"
  echo "$bin_dir"
}

# --- up / down ---------------------------------------------------------------

# Free loopback ports, all held open until every one is chosen so they differ. Taken
# from 26000-31999, below Linux's ephemeral range (32768 and up): a port the kernel
# hands out for bind(0) can, once released, go to the next outgoing connection of a
# test running beside this cluster before our server binds it. (The tests' own
# servers take theirs from 20000-25999: tests/common/cluster.rs.)
free_ports() { # count
  python3 - "$1" <<'PY'
import random, socket, sys
socks = []
while len(socks) < int(sys.argv[1]):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randrange(26000, 32000)))
    except OSError:
        s.close()
        continue
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# A pid from DIR/pids still counts only while it is alive, not a zombie, and is
# still ours (its command line names a path in DIR), so a recycled pid is never signalled.
alive() { # pid dir
  local state
  [ -r "/proc/$1/stat" ] || return 1
  state=$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1) || return 1
  [ "$state" != Z ] || return 1
  tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2/"
}

cmd_down() { # dir
  local dir=$1 name pid pids=() waited=0 left
  # A node's containers and machine changes first, while its processes still answer
  # (also after an up that failed before it started any process).
  node_down "$dir"
  [ -f "$dir/pids" ] || return 0
  # Reverse start order: controllers first, etcd last, so nothing logs a dead backend.
  while read -r name pid; do
    [ -n "${pid:-}" ] && pids=("$pid" "${pids[@]}")
  done < "$dir/pids"
  for pid in "${pids[@]}"; do alive "$pid" "$dir" && kill -TERM "$pid" 2>/dev/null || true; done
  while :; do
    left=()
    for pid in "${pids[@]}"; do alive "$pid" "$dir" && left+=("$pid"); done
    [ ${#left[@]} -eq 0 ] && break
    if [ "$waited" -ge 150 ]; then
      log "still running after 15s, killing: ${left[*]}"
      for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
      sleep 0.2
      for pid in "${left[@]}"; do alive "$pid" "$dir" && die "pid $pid survived SIGKILL"; done
      break
    fi
    sleep 0.1; waited=$((waited + 1))
  done
  rm -f "$dir/pids"
}

# Started in a session of their own so they outlive the shell that ran up and a
# Ctrl-C there; the wrapper records the pid of the binary itself (exec keeps it).
start() { # name log args...
  local name=$1 logf=$2; shift 2
  setsid bash -c 'echo "$$" > "$0"; exec "$@"' "$dir/.pid.$name" "$@" \
    > "$logf" 2>&1 < /dev/null &
  local i
  for i in $(seq 50); do [ -s "$dir/.pid.$name" ] && break; sleep 0.1; done
  [ -s "$dir/.pid.$name" ] || fail "$name did not start"
  echo "$name $(cat "$dir/.pid.$name")" >> "$dir/pids"
  rm -f "$dir/.pid.$name"
}

fail() {
  log "error: $*"
  local c
  for c in "${binaries[@]}" containerd kubelet kube-proxy kube-scheduler; do
    if [ -f "$dir/$c.log" ]; then
      echo "----- last 30 lines of $dir/$c.log -----" >&2
      tail -n 30 "$dir/$c.log" >&2
    fi
  done
  cmd_down "$dir" || true
  exit 1
}

pki() { # all certificates and keys the three components need, in $dir/pki
  local p=$dir/pki
  rm -rf "$p"; mkdir -p "$p"; chmod 700 "$p"
  newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
  newca() { # name
    newkey "$p/$1.key"
    openssl req -x509 -new -key "$p/$1.key" -subj "/CN=blastguard-e2e-$1" -days 30 -out "$p/$1.crt" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  }
  sign() { # ca name subject extensions
    newkey "$p/$2.key"
    openssl req -new -key "$p/$2.key" -subj "$3" -out "$p/$2.csr" 2>/dev/null
    openssl x509 -req -in "$p/$2.csr" -CA "$p/$1.crt" -CAkey "$p/$1.key" -CAcreateserial -days 30 \
      -extfile <(printf '%s\n' "$4") -out "$p/$2.crt" 2>/dev/null
    rm -f "$p/$2.csr"
  }
  newca ca
  local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign ca apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
  # O=system:masters is the group RBAC's bootstrap policy makes cluster-admin.
  sign ca admin "/O=system:masters/CN=blastguard-e2e-admin" "$client"
  # The user the bootstrap ClusterRole system:kube-controller-manager is bound to.
  sign ca kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  # Service-account tokens: the apiserver signs (TokenRequest) with the private
  # key and verifies with the public one; the controller manager signs legacy ones.
  newkey "$p/sa.key"
  openssl pkey -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  # The aggregation layer's front proxy, with a CA of its own as kubeadm does: the
  # apiserver then publishes a requestheader CA (kube-system/extension-apiserver-
  # authentication), which the controller manager's delegated authentication
  # otherwise keeps logging as missing.
  newca front-proxy-ca
  sign front-proxy-ca front-proxy-client "/CN=front-proxy-client" "$client"
  rm -f "$p"/*.srl
}

kubeconfig() { # out user-cert-name
  local b64="base64 -w0"
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: blastguard-e2e
  cluster:
    server: https://$api_host:$apiserver_port
    certificate-authority-data: $($b64 < "$dir/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $($b64 < "$dir/pki/$2.crt")
    client-key-data: $($b64 < "$dir/pki/$2.key")
contexts:
- name: $2@blastguard-e2e
  context: {cluster: blastguard-e2e, user: $2}
current-context: $2@blastguard-e2e
EOF
  chmod 600 "$1"
}

api() { # path: GET as cluster-admin, body on stdout, fails on non-2xx
  curl -fsS --max-time 5 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
    "https://$api_host:$apiserver_port$1"
}

cmd_up() {
  mkdir -p "$1"
  dir=$(cd "$1" && pwd)
  [ "${2:-}" = --node ] && node=true
  local name pid
  if [ -f "$dir/pids" ]; then
    while read -r name pid; do
      alive "$pid" "$dir" && die "$name (pid $pid) from an earlier 'up $dir' is still running; run 'down $dir' first"
    done < "$dir/pids"
    rm -f "$dir/pids"
  fi
  local bins node_bins=
  bins=$(cmd_build)
  if $node; then
    node_preflight
    node_bins=$(cmd_build_node)
    node_lock
    api_host=$node_ip
  fi
  local t0=$SECONDS
  trap 'fail "interrupted"' INT TERM

  # Each up is a fresh cluster: new CA and keys, empty etcd.
  rm -rf "$dir/etcd-data" "$dir/kcm-serving"
  rm -f "$dir"/{etcd,kube-apiserver,kube-controller-manager}.log "$dir/env" "$dir/kubeconfig"
  pki
  local etcd_port etcd_peer_port apiserver_port kcm_port
  local kubelet_port kubelet_healthz_port proxy_healthz_port proxy_metrics_port scheduler_port
  read -r etcd_port etcd_peer_port apiserver_port kcm_port kubelet_port kubelet_healthz_port \
    proxy_healthz_port proxy_metrics_port scheduler_port < <(free_ports 9)
  if $node; then
    node_pki
    node_snapshot
    node_network
  fi
  kubeconfig "$dir/kubeconfig" admin
  kubeconfig "$dir/kube-controller-manager.kubeconfig" kube-controller-manager

  # etcd: plain HTTP is fine on loopback. --unsafe-no-fsync: a test cluster's data
  # is thrown away, and fsync on a shared disk is most of etcd's write latency.
  start etcd "$dir/etcd.log" "$bins/etcd" \
    --name=e2e --data-dir="$dir/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="e2e=http://127.0.0.1:$etcd_peer_port" --initial-cluster-state=new \
    --unsafe-no-fsync
  until curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"'; do
    alive "$(awk '$1=="etcd"{print $2}' "$dir/pids")" "$dir" || fail "etcd exited"
    [ $((SECONDS - t0)) -lt "$timeout_s" ] || fail "etcd not healthy after ${timeout_s}s"
    sleep 0.2
  done

  # Admission plugins: the default set (NamespaceLifecycle, ServiceAccount,
  # LimitRanger, ResourceQuota, the webhook and policy plugins, ...) plus
  # NodeRestriction, which kubeadm clusters enable. No --egress-selector-config-file,
  # so webhooks at https://127.0.0.1:<port> are dialled directly.
  # --endpoint-reconciler-type=none: the default/kubernetes Endpoints may not hold a
  # loopback address (validation rejects it), and with no pods nothing reads it.
  # --service-cluster-ip-range only names the range Service ClusterIPs are allocated
  # from (stored in etcd); nothing listens on or dials those addresses.
  # With a node: the API server listens on the bridge's address (pods reach it there
  # through the kubernetes Service, whose endpoint the lease reconciler keeps, since
  # it is no loopback address); it calls kubelets by their InternalIP with a client
  # certificate (kubectl logs), and dials a webhook Service's endpoints itself
  # (aggregator routing), so it needs no kube-proxy on its own side.
  local apiserver_net=(--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none)
  if $node; then
    apiserver_net=(
      --bind-address="$node_ip" --advertise-address="$node_ip"
      --kubelet-client-certificate="$dir/pki/apiserver-kubelet-client.crt"
      --kubelet-client-key="$dir/pki/apiserver-kubelet-client.key"
      --kubelet-preferred-address-types=InternalIP
      --enable-aggregator-routing=true
    )
  fi
  start kube-apiserver "$dir/kube-apiserver.log" "$bins/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    "${apiserver_net[@]}" --secure-port="$apiserver_port" \
    --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
    --client-ca-file="$dir/pki/ca.crt" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --service-account-issuer="https://$api_host:$apiserver_port" \
    --service-account-key-file="$dir/pki/sa.pub" \
    --service-account-signing-key-file="$dir/pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true \
    --requestheader-client-ca-file="$dir/pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$dir/pki/front-proxy-client.crt" --proxy-client-key-file="$dir/pki/front-proxy-client.key" \
    --profiling=false ${CONTROL_PLANE_APISERVER_ARGS:-}
  until [ "$(api /readyz 2>/dev/null)" = ok ]; do
    alive "$(awk '$1=="kube-apiserver"{print $2}' "$dir/pids")" "$dir" || fail "kube-apiserver exited"
    [ $((SECONDS - t0)) -lt "$timeout_s" ] || fail "kube-apiserver /readyz not ok after ${timeout_s}s"
    sleep 0.3
  done

  # --use-service-account-credentials: each controller gets a token for
  # kube-system/<name>-controller and acts as that service account, as in a real
  # cluster (so audit logs, RBAC decisions and webhook userInfo look real).
  # Controllers: what turns workloads into pods, cleans up after them, and keeps
  # namespaces, service accounts and RBAC aggregation working. Left out: node,
  # volume, IPAM, CSR and cloud controllers (no nodes, volumes or kubelets here).
  # horizontal-pod-autoscaler starts without a metrics API; an HPA then only
  # reports FailedGetResourceMetric in its conditions.
  local controllers=(
    deployment-controller replicaset-controller replicationcontroller-controller
    statefulset-controller daemonset-controller job-controller cronjob-controller
    ttl-after-finished-controller horizontal-pod-autoscaler-controller disruption-controller
    garbage-collector-controller namespace-controller resourcequota-controller
    pod-garbage-collector-controller serviceaccount-controller serviceaccount-token-controller
    root-ca-certificate-publisher-controller clusterrole-aggregation-controller
    endpoints-controller endpointslice-controller validatingadmissionpolicy-status-controller
  )
  # A node's not-ready taint is lifted by the node lifecycle controller.
  $node && controllers+=(node-lifecycle-controller)
  start kube-controller-manager "$dir/kube-controller-manager.log" "$bins/kube-controller-manager" \
    --kubeconfig="$dir/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$dir/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$dir/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$dir/kcm-serving" \
    --use-service-account-credentials=true \
    --controllers="$(IFS=,; echo "${controllers[*]}")" \
    --leader-elect=true \
    --root-ca-file="$dir/pki/ca.crt" \
    --service-account-private-key-file="$dir/pki/sa.key" \
    --profiling=false

  # Usable = the controller manager leads (its controllers are running) and the
  # default ServiceAccount exists (ServiceAccount admission rejects pods without it).
  local holder
  until
    holder=$(api /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager 2>/dev/null \
      | python3 -c 'import json,sys; print(json.load(sys.stdin).get("spec",{}).get("holderIdentity") or "")' 2>/dev/null) \
      && [ -n "$holder" ] && api /api/v1/namespaces/default/serviceaccounts/default >/dev/null 2>&1
  do
    for name in "${binaries[@]}"; do
      alive "$(awk -v n="$name" '$1==n{print $2}' "$dir/pids")" "$dir" || fail "$name exited"
    done
    [ $((SECONDS - t0)) -lt "$timeout_s" ] \
      || fail "no controller-manager lease holder or no default ServiceAccount after ${timeout_s}s"
    sleep 0.3
  done
  if $node; then
    node_containerd
    node_kubelet
    node_proxy_and_scheduler
    node_wait_ready
  fi
  trap - INT TERM

  {
    printf 'KUBECONFIG=%q\n' "$dir/kubeconfig"
    printf 'APISERVER_PORT=%s\n' "$apiserver_port"
    printf 'APISERVER_URL=%q\n' "https://$api_host:$apiserver_port"
    printf 'ETCD_PORT=%s\n' "$etcd_port"
    printf 'KCM_PORT=%s\n' "$kcm_port"
    printf 'CA_CERT=%q\n' "$dir/pki/ca.crt"
    printf 'KUBERNETES_VERSION=%s\n' "$k8s_version"
    if $node; then
      printf 'NODE_NAME=%s\n' "$node_name"
      printf 'NODE_IP=%s\n' "$node_ip"
      printf 'CONTAINERD_ADDRESS=%q\n' "$dir/containerd/containerd.sock"
      printf 'CONTAINERD_HOSTS_DIR=%q\n' "$dir/containerd/certs.d"
    fi
  } > "$dir/env"
  log "up in $((SECONDS - t0))s: apiserver https://$api_host:$apiserver_port (lease holder $holder)$($node && echo ", node $node_name Ready")"
  cat "$dir/env"
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

case "${1:-}" in
  version) echo "$k8s_version" ;;
  build) cmd_build ;;
  build-node) cmd_build_node ;;
  up)
    { [ $# -eq 2 ] || { [ $# -eq 3 ] && [ "$3" = --node ]; }; } || usage
    cmd_up "$2" "${3:-}"
    ;;
  load) [ $# -eq 3 ] || usage; cmd_load "$(cd "$2" && pwd)" "$3" ;;
  down)
    [ $# -eq 2 ] || usage
    [ -d "$2" ] || exit 0
    cmd_down "$(cd "$2" && pwd)"
    ;;
  *) usage ;;
esac
