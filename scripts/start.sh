#!/usr/bin/env bash
# `npm start`: set-up (npm packages, WASM toolchain, build), then a local cluster under
# wrangler dev on http://127.0.0.1:8787 with state persisted in .state/.
# `npm start -- --port N` picks another port; PORT=N works too. Works offline.
set -euo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false

port=${PORT:-8787}
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=${2:?--port needs a number}; shift 2 ;;
    --port=*) port=${1#--port=}; shift ;;
    --) shift ;;
    *) extra+=("$1"); shift ;;
  esac
done
if ! [[ "$port" =~ ^[0-9]+$ ]]; then echo "start: bad port '$port'" >&2; exit 2; fi

bash scripts/setup.sh
echo "start: ringkv on http://127.0.0.1:$port (state in .state/)"
exec npx wrangler dev --port "$port" --ip 127.0.0.1 --persist-to .state "${extra[@]}"
