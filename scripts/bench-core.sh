#!/usr/bin/env bash
# `npm run bench:core`: builds the core (WASM and native), the native timing driver, and
# runs bench/core.mjs (operations per second: WASM under Node, native, plain JS merge).
# BENCH_ROUNDS and BENCH_SECONDS override the rounds and seconds per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
bash build.sh
bash build.sh native
CC=${RINGKV_CLANG:-$(command -v clang-14 || command -v clang || command -v cc)}
"$CC" -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Iwasm/include bench/core_native.c build/native/libringkv.a \
  -o build/core_native
node --import tsx bench/core.mjs
