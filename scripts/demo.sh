#!/usr/bin/env bash
# Command 1: set everything up, then run kubegate on its embedded default (a sandbox cluster behind the
# proxy, a demo user and kubeconfig). Ctrl-C stops it and cleans up.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
export PATH="$ROOT/.tools/bin:$PATH"
exec "$ROOT/.venv/bin/kubegate" demo "$@"
