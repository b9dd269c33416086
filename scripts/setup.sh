#!/usr/bin/env bash
# Everything `npm start` and `npm test` need on a fresh Debian machine with Node.js:
# the npm packages (from package-lock.json), the WASM toolchain (build.sh installs what is
# missing), protoc-c and the protobuf-c runtime for the simulator, and the build itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false

if [ ! -x node_modules/.bin/wrangler ] || [ ! -x node_modules/.bin/tsx ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages (npm ci)"
  npm ci --no-audit --no-fund
fi
# The simulator's wire code is generated from wasm/ringkv.proto by protoc-c
# (protobuf-c-compiler) and links the protobuf-c runtime (libprotobuf-c-dev).
APT_UPDATED=0
missing_sim_packages() {
  command -v protoc-c >/dev/null 2>&1 || echo protobuf-c-compiler
  [ -f /usr/include/protobuf-c/protobuf-c.h ] || echo libprotobuf-c-dev
}
# Installs the Debian packages named as arguments (none: nothing to do, silently).
apt_install() {
  local missing="$*"
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing: $missing"
    export DEBIAN_FRONTEND=noninteractive
    if [ $APT_UPDATED = 0 ]; then
      apt-get update -qq >/dev/null || { echo "setup: error: apt-get update failed" >&2; exit 1; }
      APT_UPDATED=1
    fi
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
      { echo "setup: error: apt-get install -y $missing failed" >&2; exit 1; }
  else
    echo "setup: error: missing packages; install them with:
  sudo apt-get update && sudo apt-get install -y $missing" >&2
    exit 1
  fi
}
# shellcheck disable=SC2046
apt_install $(missing_sim_packages)
bash build.sh
