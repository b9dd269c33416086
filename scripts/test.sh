#!/usr/bin/env bash
# `npm test`: set-up, then every test layer; each runner prints its own summary. With
# --long, the property tests run 1M cases per law instead of 100k.
set -uo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
bash scripts/setup.sh || { echo "setup failed"; exit 1; }

if [ "${1:-}" = "--long" ]; then export RINGKV_PROPERTY_CASES=1000000; fi

failed=()
step() {
  local name=$1; shift
  echo; echo "=== $name"
  local start=$SECONDS
  if "$@"; then echo "=== $name: ok ($((SECONDS - start)) s)"; else echo "=== $name: FAILED ($((SECONDS - start)) s)"; failed+=("$name"); fi
}

step "schema up to date" node scripts/gen-schema.mjs --check
step "numeric literals in worker/ (lint-literals)" node scripts/lint-literals.mjs
step "native core tests (cmocka, ASan+UBSan)" bash build.sh test
step "fuzz smoke" bash build.sh fuzz-smoke
js_tests=$(ls tests/lint/*.test.mjs tests/core/*.test.mjs tests/integration/*.test.mjs tests/replay/*.test.mjs tests/sim/*.test.mjs tests/chaos/*.test.mjs 2>/dev/null || true)
step "JavaScript tests (node --test: core wasm + integration in workerd)" \
  node --import tsx --test --test-concurrency=1 $js_tests

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "npm test: failed steps: ${failed[*]}"
  exit 1
fi
echo "npm test: all steps passed"
