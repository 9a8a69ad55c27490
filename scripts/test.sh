#!/usr/bin/env bash
# The full test suite, from a fresh clone: installs the real tools the tests use
# (helm, kubectl, kubernetes-validate, promtool, buildah, skopeo, krew, a registry,
# containerd, runc and the CNI plugins),
# builds the local control plane and node the end-to-end tests run (tests/e2e_*.rs), then
# format, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
tools_bin=$(bash scripts/install-tools.sh)
export PATH="$tools_bin:$PATH"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
# The e2e tests start a real etcd, kube-apiserver and kube-controller-manager
# (scripts/control-plane.sh). Built here, before cargo test, so they never wait on the
# build nor fail for lack of it: once per machine, about 5 min on 2 cores, then cached
# in ~/.cache/blastguard (progress on stderr).
bash scripts/control-plane.sh build >/dev/null
# tests/e2e_node.rs also runs a node beside it (kubelet, kube-proxy, kube-scheduler from
# the same pinned module, and a pause image): built here too, about 1 min more with the
# control plane's Go cache warm, also cached.
bash scripts/control-plane.sh build-node >/dev/null
# Benches (harness = false) are left out: they print figures, they test nothing.
cargo test --lib --bins --tests --no-fail-fast
