# The node of `scripts/control-plane.sh up DIR --node`, sourced by control-plane.sh
# (it uses its log, die, fail, start, alive, free_ports, api and its variables).
#
# One node beside the control plane: containerd and runc (Debian packages), the CNI
# bridge plugin (Debian containernetworking-plugins), kubelet, kube-proxy (iptables
# mode) and kube-scheduler built from the pinned k8s.io/kubernetes module, and a
# pause image built locally (no registry is reachable here). Pods get addresses on a
# bridge of our own; the API server listens on that bridge's address, which the host
# and the pods reach and nothing beyond the machine does (a guard chain drops anything
# else that is sent to it or forwarded through it).
#
# What it changes on the machine, and `down` undoes: the bridge and its address, the
# pods' network namespaces and veths, mounts under DIR (overlay, tmpfs, nsfs), the
# kubepods cgroups, iptables chains (kube-proxy's KUBE-*, kubelet's, our BLASTGUARD-NODE),
# the sysctls kubelet and the bridge plugin set (recorded before, written back after),
# /run/containerd/s (containerd's shim sockets: that path is compiled in) and
# /var/log/containers (kubelet's symlinks: also compiled in) when they were not there.
# Everything else lives in DIR. A lock (flock on $node_lock, held by the node's
# processes) lets one node run per machine: they share fixed names (bridge, chains).

node_bridge=bgnode0
node_cidr=10.244.0.0/24
node_ip=10.244.0.1
node_name=blastguard-node
node_guard=BLASTGUARD-NODE
node_lock=/run/lock/blastguard-node.lock
node_cache="$cache_root/${k8s_version}-node"
node_binaries=(kubelet kube-proxy kube-scheduler pause.oci.tar)
# The pause image's name: not a registry anyone can reach; containerd only looks it up
# locally (it is imported before the first pod).
pause_image=blastguard.local/pause:e2e
# The kernel settings a node changes (kubelet: the panic and overcommit ones it calls
# kernel defaults; the bridge plugin: ip_forward; kube-proxy: conntrack, route_localnet).
node_sysctls=(
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes
  net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.ipv4.conf.all.forwarding
  net.ipv4.conf.default.forwarding net.bridge.bridge-nf-call-iptables
  net.bridge.bridge-nf-call-ip6tables net.netfilter.nf_conntrack_max
  net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait
)

# Paths outside DIR that the node's programs write to whatever their flags say (compiled
# in): containerd's shim sockets, kubelet's container log symlinks and device-plugin
# socket directory, libcni's result cache and lock. down removes those up found absent.
node_paths=(/run/containerd /var/log/containers /var/log/pods /var/lib/kubelet /var/lib/cni /etc/cni /run/netns /opt/containerd /var/lib/containerd)

have_node_binaries() {
  local b
  for b in "${node_binaries[@]}"; do [ -s "$node_cache/$b" ] || return 1; done
}

# kubelet, kube-proxy, kube-scheduler from the same go.mod as the control plane, and
# the pause image; cached in their own directory so a control-plane cache of an earlier
# checkout (without them) stays valid.
cmd_build_node() {
  if have_node_binaries; then echo "$node_cache"; return 0; fi
  local go
  go=$(command -v go || true)
  [ -n "$go" ] || go=/usr/local/go/bin/go
  [ -x "$go" ] || die "no Go toolchain (neither 'go' on PATH nor /usr/local/go/bin/go)"
  command -v buildah >/dev/null || die "buildah is needed for the pause image (bash scripts/install-tools.sh)"
  mkdir -p "$cache_root"
  exec 9>"$cache_root/.build-node.lock"
  flock 9
  if have_node_binaries; then echo "$node_cache"; return 0; fi
  find "$cache_root" -maxdepth 1 -type d -name '.build-node.*' -exec rm -rf {} +
  export GOTOOLCHAIN=auto GOWORK=off CGO_ENABLED=0
  local major minor ldk tmp start secs gv
  major=${k8s_version#v}; major=${major%%.*}
  minor=${k8s_version#v"$major".}; minor=${minor%%.*}
  ldk="-s -w"
  for gv in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldk+=" -X $gv.gitVersion=$k8s_version -X $gv.gitMajor=$major -X $gv.gitMinor=$minor -X $gv.gitTreeState=clean"
  done
  tmp=$(mktemp -d "$cache_root/.build-node.XXXXXX"); chmod 755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  log "building kubelet, kube-proxy, kube-scheduler $k8s_version and the pause image (with a warm Go cache: about 1 min on 2 cores)"
  start=$(date +%s)
  (cd "$src/kube" && "$go" build -mod=readonly -buildvcs=false -trimpath -ldflags="$ldk" -o "$tmp/" ./kubelet ./kube-proxy ./kube-scheduler) \
    || die "building kubelet/kube-proxy/kube-scheduler failed (see above)"
  (cd "$src/pause" && "$go" build -mod=readonly -buildvcs=false -trimpath -ldflags="-s -w" -o "$tmp/pause" .) \
    || die "building the pause binary failed (see above)"
  # A scratch image holding only that binary, written as an OCI archive, like
  # scripts/image.sh does (vfs store of its own, nothing run inside the image).
  local store ctr
  store=$(mktemp -d "$tmp/store.XXXXXX")
  bb() { buildah --storage-driver vfs --root "$store/root" --runroot "$store/run" "$@"; }
  ctr=$(bb from --pull=never --name "blastguard-pause-$$" scratch)
  bb copy --quiet --chmod 0755 "$ctr" "$tmp/pause" /pause >/dev/null
  bb config --os linux --arch amd64 --user 65535:65535 --entrypoint '["/pause"]' "$ctr"
  bb commit --quiet --rm --format oci "$ctr" "oci-archive:$tmp/pause.oci.tar:$pause_image" >/dev/null \
    || die "writing the pause image failed"
  rm -rf "$store" "$tmp/pause"
  secs=$(( $(date +%s) - start ))
  "$tmp/kubelet" --version >/dev/null || die "the built kubelet does not run"
  printf 'kubernetes %s (kubelet, kube-proxy, kube-scheduler; pause image %s)\n%s\nbuilt %s in %ss on %s cores\n' \
    "$k8s_version" "$pause_image" "$("$go" version)" "$(date -u +%FT%TZ)" "$secs" "$(nproc)" > "$tmp/BUILD-INFO"
  rm -rf "$node_cache"
  mv "$tmp" "$node_cache"
  trap - EXIT
  log "node built in ${secs}s: $node_cache"
  echo "$node_cache"
}

node_preflight() {
  local t
  for t in containerd containerd-shim-runc-v2 runc ctr iptables iptables-save ip6tables ip sysctl findmnt; do
    command -v "$t" >/dev/null || die "$t is missing: run bash scripts/install-tools.sh (Debian containerd, runc)"
  done
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] \
    || die "the CNI plugins are missing in /usr/lib/cni: run bash scripts/install-tools.sh (Debian containernetworking-plugins)"
  [ "$(id -u)" = 0 ] || die "a node needs root (network namespaces, mounts, iptables)"
  if ip -4 route show | grep -v "dev $node_bridge" | awk '{print $1}' | grep -qx "$node_cidr"; then
    die "$node_cidr is already routed on this machine; the node's bridge would clash"
  fi
}

# The lock: fd 8 stays open in every node process (kubelet, containerd, ...), so it is
# held exactly as long as one of them lives, whichever way they end.
node_lock() {
  mkdir -p "$(dirname "$node_lock")"
  exec 8<>"$node_lock"
  if ! flock -n 8; then
    die "another node runs on this machine (up by $(cat "$node_lock" 2>/dev/null || echo '?')); run 'down' on its DIR first"
  fi
  echo "$dir" > "$node_lock"
}

# What the machine looks like before: down compares against it and puts back sysctls.
node_snapshot() {
  local s v
  mkdir -p "$dir/node"
  : > "$dir/node/sysctls"
  for s in "${node_sysctls[@]}"; do
    v=$(sysctl -n "$s" 2>/dev/null) && printf '%s\t%s\n' "$s" "$v" >> "$dir/node/sysctls"
  done
  : > "$dir/node/created"
  local c
  for c in "${node_paths[@]}"; do
    [ -e "$c" ] || echo "$c" >> "$dir/node/created"
  done
  for c in /sys/fs/cgroup/*/; do
    [ -e "$c/kubepods" ] || echo "${c}kubepods" >> "$dir/node/created"
  done
  node_iptables_state > "$dir/node/iptables.before"
}

# Every rule and chain, without counters: what down must leave as it was.
node_iptables_state() {
  local t
  for t in iptables ip6tables; do
    { "$t-save" 2>/dev/null || true; } | { grep -v '^#' || true; } | sed 's/\[[0-9]*:[0-9]*\]$//; s/^/'"$t"' /'
  done
}

node_network() {
  ip link show "$node_bridge" >/dev/null 2>&1 && die "a bridge $node_bridge already exists (a node that was not taken down?)"
  echo "$node_bridge" >> "$dir/node/created"
  ip link add "$node_bridge" type bridge
  ip addr add "$node_ip/${node_cidr#*/}" dev "$node_bridge"
  ip link set "$node_bridge" up
  # Nothing but this machine and its pods reaches the node's addresses (the host
  # answers for any of its addresses on any interface), and nothing the pods send is
  # forwarded past the bridge.
  local t
  iptables -w -N "$node_guard"
  iptables -w -A "$node_guard" -i lo -j RETURN
  iptables -w -A "$node_guard" -i "$node_bridge" -o "$node_bridge" -j RETURN
  iptables -w -A "$node_guard" -i "$node_bridge" -m addrtype --dst-type LOCAL -j RETURN
  iptables -w -A "$node_guard" -o "$node_bridge" -m addrtype --src-type LOCAL -j RETURN
  iptables -w -A "$node_guard" -j DROP
  for t in INPUT FORWARD; do
    iptables -w -I "$t" 1 -d "$node_cidr" -j "$node_guard"
  done
  iptables -w -I FORWARD 1 -s "$node_cidr" -j "$node_guard"
  iptables -w -I OUTPUT 1 -s "$node_cidr" ! -d "$node_cidr" ! -o lo -j DROP
}

node_pki() { # adds the node's certificates to $dir/pki (after pki, whose sign it uses)
  local p=$dir/pki client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  # The API server's own certificate also names the bridge address (kubeconfig) and
  # the kubernetes Service's ClusterIP and names (what pods dial).
  sign ca apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$node_ip,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # The users the bootstrap RBAC binds: system:node:<name> in system:nodes (Node
  # authorizer, NodeRestriction), system:kube-scheduler, system:kube-proxy.
  sign ca kubelet "/O=system:nodes/CN=system:node:$node_name" "$client"
  sign ca kube-scheduler "/CN=system:kube-scheduler" "$client"
  sign ca kube-proxy "/CN=system:kube-proxy" "$client"
  # The API server's client certificate toward the kubelet (logs, exec).
  sign ca apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  rm -f "$dir/pki"/*.srl
}

node_containerd() {
  local c=$dir/containerd
  mkdir -p "$c/certs.d" "$dir/cni/net.d" "$dir/cni/ipam"
  cat > "$c/config.toml" <<EOF
# containerd for the e2e node: everything under $c but the shim sockets
# (/run/containerd/s, compiled in). Plugins that would write elsewhere (opt) are off.
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # This machine's bounding set lacks CAP_SYS_RESOURCE: runc may only raise a
  # container's oom_score_adj as far as containerd's own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # kubelet's cgroupDriver is cgroupfs (no systemd here).
        SystemdCgroup = false
        Root = "$c/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    # Per-registry hosts.toml (e.g. the tests' loopback registry), read at each pull.
    config_path = "$c/certs.d"
EOF
  cat > "$dir/cni/net.d/10-blastguard-node.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "blastguard-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$node_bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$node_cidr", "gateway": "$node_ip"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$dir/cni/ipam"
      }
    }
  ]
}
EOF
  start containerd "$dir/containerd.log" containerd --config "$c/config.toml"
  local t0=$SECONDS
  until ctr --address "$c/containerd.sock" version >/dev/null 2>&1; do
    alive "$(awk '$1=="containerd"{print $2}' "$dir/pids")" "$dir" || fail "containerd exited"
    [ $((SECONDS - t0)) -lt 30 ] || fail "containerd not answering after 30s"
    sleep 0.2
  done
  ctr --address "$c/containerd.sock" -n k8s.io images import "$node_bins/pause.oci.tar" >/dev/null \
    || fail "importing the pause image failed"
}

node_kubelet() {
  local k=$dir/kubelet
  mkdir -p "$k/root" "$dir/pod-logs"
  kubeconfig "$dir/kubelet.kubeconfig" kubelet
  cat > "$k/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
containerRuntimeEndpoint: unix://$dir/containerd/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: AlwaysAllow}
# No systemd, cgroup v1 on this machine, swap possibly on.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# No cluster DNS and no host resolver in pods: nothing they resolve leaves the machine.
resolvConf: ""
podLogsDir: $dir/pod-logs
# A test machine's disk may be nearly full: no evictions, no image GC of the
# locally built images (they cannot be pulled back).
evictionHard: {memory.available: "1Mi", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 30
rotateCertificates: false
serializeImagePulls: false
shutdownGracePeriod: 0s
staticPodPath: ""
syncFrequency: 10s
EOF
  start kubelet "$dir/kubelet.log" "$node_bins/kubelet" \
    --config="$k/config.yaml" --kubeconfig="$dir/kubelet.kubeconfig" \
    --root-dir="$k/root" --cert-dir="$k/pki" --hostname-override="$node_name" --node-ip="$node_ip"
}

node_proxy_and_scheduler() {
  kubeconfig "$dir/kube-proxy.kubeconfig" kube-proxy
  kubeconfig "$dir/kube-scheduler.kubeconfig" kube-scheduler
  cat > "$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $dir/kube-proxy.kubeconfig}
hostnameOverride: $node_name
clusterCIDR: $node_cidr
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:$proxy_healthz_port
metricsBindAddress: 127.0.0.1:$proxy_metrics_port
# NodePorts only on the bridge address, never on the machine's interfaces or loopback.
nodePortAddresses: ["$node_ip/32"]
iptables: {localhostNodePorts: false}
# Leave the machine's conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start kube-proxy "$dir/kube-proxy.log" "$node_bins/kube-proxy" --config="$dir/kube-proxy.yaml"
  start kube-scheduler "$dir/kube-scheduler.log" "$node_bins/kube-scheduler" \
    --kubeconfig="$dir/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$dir/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$dir/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$scheduler_port" --leader-elect=false --profiling=false
}

# Usable = the node is Ready without taints (pods schedule) and kube-proxy has written
# the kubernetes Service's rules (pods reach the API server).
node_wait_ready() {
  local t0=$SECONDS n
  until
    api "/api/v1/nodes/$node_name" 2>/dev/null | python3 -c '
import json, sys
n = json.load(sys.stdin)
ready = [c for c in n["status"].get("conditions", []) if c["type"] == "Ready"]
sys.exit(0 if ready and ready[0]["status"] == "True" and not n["spec"].get("taints") else 1)' 2>/dev/null \
      && iptables -w -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 'default/kubernetes:https'
  do
    for n in containerd kubelet kube-proxy kube-scheduler; do
      alive "$(awk -v n="$n" '$1==n{print $2}' "$dir/pids")" "$dir" || fail "$n exited"
    done
    [ $((SECONDS - t0)) -lt "$timeout_s" ] || fail "node $node_name not Ready and untainted after ${timeout_s}s"
    sleep 0.3
  done
}

# Imports an OCI image archive (scripts/image.sh's) into the node's containerd, where
# the kubelet finds it (the k8s.io namespace).
cmd_load() { # dir archive
  local d=$1 archive=$2
  [ -S "$d/containerd/containerd.sock" ] || die "no node runs in $d (up $d --node first)"
  [ -f "$archive" ] || die "no archive at $archive"
  ctr --address "$d/containerd/containerd.sock" -n k8s.io images import "$archive" >&2 \
    || die "importing $archive failed"
}

# --- down ---------------------------------------------------------------------

# Stops the containers, then undoes what the node changed on the machine. Runs after
# the node's processes got SIGTERM (cmd_down), before the control plane's.
node_down() ( # dir; a subshell where a failed step never stops the ones after it
  set +e +o pipefail
  local d=$1 c=$1/containerd sock=$1/containerd/containerd.sock id pid
  [ -d "$d/node" ] || return 0
  # kubelet first (it would restart what we stop), then every container's task.
  node_stop kubelet kube-proxy kube-scheduler
  if [ -S "$sock" ] && ctr --address "$sock" version >/dev/null 2>&1; then
    for id in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 0.3
    for id in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$sock" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
    done
  fi
  node_stop containerd
  # The shims outlive containerd; theirs name its socket.
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Whatever still runs in the pods' cgroups (a shim gone early leaves its container).
  local f
  for f in $(find /sys/fs/cgroup/*/kubepods -name cgroup.procs 2>/dev/null); do
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done < "$f"
  done
  sleep 0.2
  # Mounts under DIR, deepest first: container rootfs (overlay), volumes (tmpfs), netns.
  local m tries
  for tries in 1 2 3; do
    findmnt -rn -o TARGET | grep -F "$d/" | sort -r | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    findmnt -rn -o TARGET | grep -qF "$d/" || break
    sleep 0.5
  done
  findmnt -rn -o TARGET | grep -F "$d/" >&2 && log "warning: mounts left under $d"
  # cgroups kubelet made (removed deepest first; rmdir of a cgroup needs it empty).
  while read -r f; do
    case "$f" in
      /sys/fs/cgroup/*) [ ! -d "$f" ] || find "$f" -depth -type d -exec rmdir {} + 2>/dev/null || true ;;
    esac
  done < "$d/node/created"
  ip link show "$node_bridge" >/dev/null 2>&1 && grep -qx "$node_bridge" "$d/node/created" \
    && ip link del "$node_bridge"
  node_iptables_cleanup
  # Sysctls back as they were.
  local s v now
  while IFS=$'\t' read -r s v; do
    now=$(sysctl -n "$s" 2>/dev/null) || continue
    [ "$now" = "$v" ] || sysctl -qw "$s=$v" >/dev/null 2>&1 || log "warning: could not restore $s=$v"
  done < "$d/node/sysctls"
  for f in "${node_paths[@]}"; do
    if grep -qxF "$f" "$d/node/created"; then rm -rf "$f"; fi
  done
  # What differs from before, said out loud (a test checks it is nothing).
  if [ -f "$d/node/iptables.before" ] && ! diff "$d/node/iptables.before" <(node_iptables_state) > "$d/iptables.diff"; then
    log "warning: iptables differ from before up ($d/iptables.diff):"
    cat "$d/iptables.diff" >&2
  fi
  rm -rf "$d/node"
  # The API server before etcd. With a node it takes more than 10 s to stop after
  # SIGTERM (without one, about 1 s; why is not known yet): node_stop kills it then,
  # which a throwaway cluster can afford.
  node_stop kube-controller-manager kube-apiserver
)

node_stop() { # names...: SIGTERM, then SIGKILL after 10s
  local n pid waited=0
  for n in "$@"; do
    pid=$(awk -v n="$n" '$1==n{print $2}' "$d/pids" 2>/dev/null)
    [ -n "$pid" ] && alive "$pid" "$d" && kill -TERM "$pid" 2>/dev/null || true
  done
  for n in "$@"; do
    pid=$(awk -v n="$n" '$1==n{print $2}' "$d/pids" 2>/dev/null)
    [ -n "$pid" ] || continue
    while alive "$pid" "$d"; do
      if [ "$waited" -ge 100 ]; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; break; fi
      sleep 0.1; waited=$((waited + 1))
    done
  done
}

# kube-proxy's, kubelet's and the CNI plugin's chains, and ours: every rule in a
# built-in chain that jumps to one, then the chains themselves.
node_iptables_cleanup() {
  local t table chain rule
  for t in iptables ip6tables; do
    for table in filter nat mangle raw; do
      "$t" -w -t "$table" -S 2>/dev/null | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ' \
        | grep -E -- "-j (KUBE-|CNI-|$node_guard)|-s $node_cidr ! -d $node_cidr ! -o lo -j DROP" \
        | while read -r rule; do
          eval "$t -w -t $table ${rule/-A/-D}" 2>/dev/null || true
        done || true
      for chain in $("$t" -w -t "$table" -S 2>/dev/null | awk '$1=="-N" && ($2 ~ /^(KUBE-|CNI-)/ || $2=="'"$node_guard"'") {print $2}'); do
        "$t" -w -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$t" -w -t "$table" -S 2>/dev/null | awk '$1=="-N" && ($2 ~ /^(KUBE-|CNI-)/ || $2=="'"$node_guard"'") {print $2}'); do
        "$t" -w -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}
