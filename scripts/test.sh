#!/usr/bin/env bash
# The full test suite, from a fresh clone: installs the real tools the tests use
# (helm, kubectl, kubernetes-validate, promtool, buildah, skopeo, krew, a registry,
# containerd, runc and the CNI plugins),
# builds the local control plane and node the end-to-end tests run (tests/e2e_*.rs), then
# format, lints and every test: what `cargo test --lib --bins --tests --no-fail-fast`
# runs, in parallel lanes (scripts/test-lanes.py; docs/development.md, "How the suite
# runs"). BLASTGUARD_TEST_LANES=1 runs the binaries one after another.
set -euo pipefail
cd "$(dirname "$0")/.."
tools_bin=$(bash scripts/install-tools.sh)
export PATH="$tools_bin:$PATH"
cargo fmt --all -- --check
logs=target/test-logs
mkdir -p "$logs"
# The release image the node tests run (tests/e2e_node*.rs): a static release build
# of its own in target/static, made beside clippy and the test build rather than
# inside a test lane, where its minutes of CPU would slow the timing-sensitive tests.
# An archive of its own, which nothing rewrites while a node imports it; the node
# tests take it from BLASTGUARD_IMAGE_ARCHIVE (tests/release.rs runs scripts/image.sh
# again into its own, and its static build then has nothing left to do).
image_archive=$PWD/target/image/suite/blastguard.oci.tar
# A session of its own, so a failure below stops its whole build (cargo, rustc).
setsid bash scripts/image.sh "$image_archive" >"$logs/image.out" 2>"$logs/image.log" &
image_pid=$!
trap 'kill -- "-$image_pid" 2>/dev/null || true' EXIT
cargo clippy --all-targets --quiet -- -D warnings
# The e2e tests start a real etcd, kube-apiserver and kube-controller-manager
# (scripts/control-plane.sh). Built here, before the tests, so they never wait on the
# build nor fail for lack of it: once per machine, about 5 min on 2 cores, then cached
# in ~/.cache/blastguard (progress on stderr).
bash scripts/control-plane.sh build >/dev/null
# tests/e2e_node.rs also runs a node beside it (kubelet, kube-proxy, kube-scheduler from
# the same pinned module, and a pause image): built here too, about 1 min more with the
# control plane's Go cache warm, also cached.
bash scripts/control-plane.sh build-node >/dev/null
# Benches (harness = false) are left out: they print figures, they test nothing.
cargo test --lib --bins --tests --no-run --message-format=json-render-diagnostics \
  >"$logs/artifacts.json"
if wait "$image_pid"; then
  export BLASTGUARD_IMAGE_ARCHIVE=$image_archive
else
  # The node tests then run scripts/image.sh themselves and fail with its output;
  # every other test still runs.
  echo "test.sh: scripts/image.sh failed:" >&2
  cat "$logs/image.log" >&2
fi
trap - EXIT
exec python3 scripts/test-lanes.py --artifacts "$logs/artifacts.json"
