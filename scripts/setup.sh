#!/usr/bin/env bash
# Everything `npm start` and `npm test` need on a fresh Debian machine with Node.js:
# the npm packages (from package-lock.json), the WASM toolchain (build.sh installs what is
# missing) and the build itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false

if [ ! -x node_modules/.bin/wrangler ] || [ ! -x node_modules/.bin/tsx ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages (npm ci)"
  npm ci --no-audit --no-fund
fi
bash build.sh
