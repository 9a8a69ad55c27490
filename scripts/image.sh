#!/usr/bin/env bash
# The release image, built without a container daemon: a statically linked blastguard
# binary alone on a scratch base, written as an OCI archive (docs/release.md).
#
#   scripts/image.sh [OUT]     # OUT: the archive; default <target>/image/blastguard-<version>.oci.tar
#
# Prints the archive's path on stdout (progress on stderr). Needs cargo, file, ldd and
# buildah (Debian's package; scripts/install-tools.sh installs it). Runs as root without
# any daemon or runtime: nothing is run inside the image (no RUN step), so buildah only
# copies one file and writes metadata, with the vfs storage driver in a temporary
# store of its own (no overlay mounts, no fuse) that is removed afterwards.
#
# The binary: glibc, linked statically (-C target-feature=+crt-static). An explicit
# --target keeps RUSTFLAGS off build scripts and proc macros, which must stay dynamic.
# It is built in <target>/static (CARGO_TARGET_DIR, else ./target), a directory of its
# own, so the different RUSTFLAGS never invalidate the normal build. glibc warns (at link
# time) that a static getaddrinfo wants its NSS modules at run time: glibc 2.34
# and later have the "files" and "dns" modules inside libc, so /etc/hosts and
# /etc/resolv.conf (which the kubelet mounts) are read from scratch too (tried with a
# static getaddrinfo in an empty chroot); other NSS modules can't be loaded. In a
# cluster blastguard reaches the API server at KUBERNETES_SERVICE_HOST, an IP.
#
# Profile: release (thin LTO, 4 codegen units), the one published, also in the test
# (tests/release.rs): a cold static build took 3 min 54 s on CI's 2 cores (shared with
# other builds), a rebuild after a source change 1 min 48 s -- small beside the
# suite's ~15 min, so the test checks the very artifact a release ships rather than a
# cheaper profile's.
#
# The commit: BLASTGUARD_COMMIT, else `git rev-parse HEAD` (with -dirty when the tree
# has uncommitted changes), goes into blastguard_build_info and the revision label.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "image.sh: $1 is not installed ($2)" >&2
    exit 1
  }
}
need cargo "https://rustup.rs"
need file "apt-get install file"
need ldd "part of libc-bin"
need buildah "bash scripts/install-tools.sh, or apt-get install buildah"

triple=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-$root/target}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "image.sh: no version in Cargo.toml" >&2; exit 1; }
if [ -z "${BLASTGUARD_COMMIT:-}" ]; then
  BLASTGUARD_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  if [ "$BLASTGUARD_COMMIT" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    BLASTGUARD_COMMIT="$BLASTGUARD_COMMIT-dirty"
  fi
fi
export BLASTGUARD_COMMIT
out=${1:-$target_dir/image/blastguard-$version.oci.tar}
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")

# Run from a test (tests/common/node.rs), cargo's environment for tests is inherited:
# CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ... Build scripts (ring's) rerun when those
# differ, and with them every crate above, so a build from a test and one from the
# command line would each redo the other's (20+ minutes here). They are not ours
# to pass on.
for v in $(compgen -e); do
  case "$v" in
    CARGO_MANIFEST_DIR | CARGO_MANIFEST_PATH | CARGO_PKG_* | CARGO_CRATE_NAME | CARGO_BIN_* \
      | CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | CARGO_RUSTC_CURRENT_DIR) unset "$v" ;;
  esac
done
echo "image.sh: static release build (commit $BLASTGUARD_COMMIT) in $target_dir/static" >&2
start=$(date +%s)
CARGO_TARGET_DIR="$target_dir/static" RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --locked --release --target "$triple" --bin blastguard >&2
echo "image.sh: built in $(($(date +%s) - start)) s" >&2
bin="$target_dir/static/$triple/release/blastguard"

# Nothing else will be in the image, so refuse anything that still loads a library.
desc=$(file -b "$bin")
case "$desc" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) echo "image.sh: $bin is not static: $desc" >&2; exit 1 ;;
esac
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -qE 'not a dynamic executable|statically linked'; then
  echo "image.sh: ldd lists libraries for $bin:" >&2
  ldd "$bin" >&2
  exit 1
fi
"$bin" --version >&2

# A throwaway store: no state left behind, and nothing shared with other builds.
store=$(mktemp -d "$target_dir/image-store.XXXXXX")
cleanup() {
  # vfs layers are plain directories; buildah's own `rm` unmounts nothing here.
  rm -rf "$store"
}
trap cleanup EXIT
b() { buildah --storage-driver vfs --root "$store/root" --runroot "$store/run" "$@"; }

created=$(git log -1 --format=%ct 2>/dev/null || date +%s)
ctr=$(b from --pull=never --name "blastguard-image-$$" scratch)
b copy --quiet --chmod 0755 "$ctr" "$bin" /blastguard >/dev/null
b config \
  --os linux --arch amd64 \
  --user 65532:65532 \
  --entrypoint '["/blastguard"]' --cmd serve \
  --port 8443/tcp --port 8080/tcp \
  --created-by "scripts/image.sh (static blastguard on scratch)" \
  --label org.opencontainers.image.title=blastguard \
  --label org.opencontainers.image.source=https://github.com/blastguard/blastguard \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$BLASTGUARD_COMMIT" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  "$ctr"
# gzip layers (buildah's default for commit is uncompressed), as registries expect;
# the timestamp of the commit, not of the build, in the config and the layer.
rm -f "$out"
b commit --quiet --rm --format oci --disable-compression=false --timestamp "$created" \
  "$ctr" "oci-archive:$out:ghcr.io/blastguard/blastguard:$version" >/dev/null
echo "image.sh: $out ($(du -h "$out" | cut -f1)) in $(($(date +%s) - start)) s" >&2
echo "$out"
