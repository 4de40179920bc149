#!/usr/bin/env bash
# Command 2: set everything up, then run the whole test suite (lint included). .ci/run calls exactly this.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # 10,000-connection tests
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n 2 "$@"
