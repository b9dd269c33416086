#!/usr/bin/env bash
# Builds the simulator natively: the core's sources (all of wasm/src except the WASM
# export shim) and sim/*.c, -O2, xxhash from /usr/include (libxxhash-dev).
# Output: build/sim. With SIM_SANITIZE=1, an ASan+UBSan build (build/sim-asan).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CC:-}" ]; then
  if command -v clang >/dev/null; then CC=clang; else CC=cc; fi
fi
if [ ! -f /usr/include/xxhash.h ]; then
  echo "sim/build.sh: /usr/include/xxhash.h missing: apt-get install libxxhash-dev" >&2
  exit 1
fi
mkdir -p build
core_src=$(ls wasm/src/*.c | grep -v '/wasm_exports\.c$')
flags=(-std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wno-unused-parameter -Iwasm/include -Iwasm/src)
out=build/sim
if [ "${SIM_SANITIZE:-0}" = 1 ]; then
  flags+=(-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -fno-sanitize=pointer-overflow,nonnull-attribute)
  out=build/sim-asan
else
  flags+=(-O2 -g)
fi
# shellcheck disable=SC2086
$CC "${flags[@]}" $core_src sim/*.c -lm -o "$out"
echo "sim/build.sh: built $out"
