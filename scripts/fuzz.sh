#!/usr/bin/env bash
# `npm run fuzz`: the long fuzzing run of every decoder (tests/fuzz/fuzz_*.c) under
# ASan+UBSan: FUZZ_RUNS executions per target (default 10,000,000), or `seconds` per target
# when given (`npm run fuzz -- 600`). Targets run in parallel, one per core (FUZZ_JOBS).
# Crashes are kept in tests/fuzz/regressions/<target>/, which `npm test` replays.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash build.sh fuzz "$@"
