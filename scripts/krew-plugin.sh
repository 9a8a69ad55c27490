#!/usr/bin/env bash
# The kubectl plugin for a release: the archive krew downloads and its manifest with the
# archive's sha256 filled in (docs/release.md, docs/kubectl-plugin.md).
#
#   scripts/krew-plugin.sh BINARY [OUTDIR]    # OUTDIR default: <target>/krew
#
# BINARY: a static blastguard for x86-64 Linux (the one scripts/image.sh builds, at
# <target>/static/x86_64-unknown-linux-gnu/release/blastguard), so the plugin runs on
# any distribution. Writes OUTDIR/kubectl-blastguard_v<version>_linux_amd64.tar.gz
# (the binary, and LICENSE when the repository has one; sorted, owned by 0:0, mtime of
# the commit, gzip without a name or time, so the same binary gives the same sha256)
# and OUTDIR/blastguard.yaml, plugins/krew/blastguard.yaml with version, uri and
# sha256 for it. Prints both paths on stdout.
#
# BLASTGUARD_RELEASE_URL: where the archive will be downloaded from; default the
# GitHub release of the version. Publishing it there and the krew-index pull request
# need GitHub and are not done here.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

[ $# -ge 1 ] || { echo "usage: scripts/krew-plugin.sh BINARY [OUTDIR]" >&2; exit 2; }
bin=$1
[ -x "$bin" ] || { echo "krew-plugin.sh: $bin is not an executable" >&2; exit 1; }
for t in tar gzip sha256sum; do
  command -v "$t" >/dev/null || { echo "krew-plugin.sh: $t is not installed" >&2; exit 1; }
done
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "krew-plugin.sh: no version in Cargo.toml" >&2; exit 1; }
# The archive must hold the release's binary, not whatever was built last.
got=$("$bin" --version)
[ "$got" = "blastguard $version" ] || {
  echo "krew-plugin.sh: $bin --version says '$got', Cargo.toml says $version" >&2
  exit 1
}
outdir=${2:-${CARGO_TARGET_DIR:-$root/target}/krew}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
name="kubectl-blastguard_v${version}_linux_amd64.tar.gz"
url=${BLASTGUARD_RELEASE_URL:-https://github.com/blastguard/blastguard/releases/download/v$version}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$bin" "$stage/blastguard"
files=(blastguard)
if [ -f LICENSE ]; then
  install -m 0644 LICENSE "$stage/LICENSE"
  files+=(LICENSE)
fi
mtime=$(git log -1 --format=%ct 2>/dev/null || echo 0)
tar -C "$stage" --sort=name --mtime="@$mtime" --owner=0 --group=0 --numeric-owner \
  -cf - "${files[@]}" | gzip -n -9 >"$outdir/$name"
sha=$(sha256sum "$outdir/$name" | cut -d' ' -f1)

# Only these three lines change between releases; the rest of the manifest is reviewed
# by hand in the repository.
sed -e "s|^  version: .*|  version: v$version|" \
  -e "s|^      uri: .*|      uri: $url/$name|" \
  -e "s|^      sha256: .*|      sha256: \"$sha\"|" \
  plugins/krew/blastguard.yaml >"$outdir/blastguard.yaml"
grep -q "sha256: \"$sha\"" "$outdir/blastguard.yaml" || {
  echo "krew-plugin.sh: could not fill in plugins/krew/blastguard.yaml" >&2
  exit 1
}
echo "$outdir/$name"
echo "$outdir/blastguard.yaml"
