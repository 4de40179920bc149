#!/usr/bin/env bash
# Command 2: set everything up, then run the whole test suite (lint included). .ci/run calls exactly this.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n 2 "$@"
