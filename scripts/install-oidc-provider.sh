#!/usr/bin/env bash
# Install the npm package oidc-provider (an OpenID Certified OpenID Connect server) into
# .tools/oidc-provider for the sign-in tests and the demo (sandbox/oidc/provider.mjs runs it under Node).
# Needs node (>= 20) and npm; without them this says so and does nothing (the tests that need the
# provider then skip, naming the reason). Idempotent: a second run only checks.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VERSION="9.13.3"
TARGET=.tools/oidc-provider
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "install-oidc-provider: node/npm not found: the OIDC sign-in tests will be skipped" >&2
  exit 0
fi
if [ -f "$TARGET/node_modules/oidc-provider/package.json" ] && \
   grep -q "\"version\": \"$VERSION\"" "$TARGET/node_modules/oidc-provider/package.json"; then
  exit 0
fi
mkdir -p "$TARGET"
[ -f "$TARGET/package.json" ] || echo '{"name": "kubegate-oidc-provider", "private": true}' > "$TARGET/package.json"
if ! npm install --prefix "$TARGET" --no-audit --no-fund --silent "oidc-provider@$VERSION" >/dev/null; then
  # no npm registry here (the project's two commands need only PyPI and Debian's packages): the
  # sign-in tests that need the real provider skip, naming the reason; everything else goes on
  echo "install-oidc-provider: npm install oidc-provider@$VERSION failed: the OIDC sign-in tests will be skipped" >&2
  exit 0
fi
node -e "import('$ROOT/$TARGET/node_modules/oidc-provider/lib/index.js').then(() => 0)"
