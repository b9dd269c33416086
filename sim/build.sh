#!/usr/bin/env bash
# Builds the simulator natively: the core's sources (all of wasm/src except the WASM
# export shim) and sim/*.c, -O2, xxhash from /usr/include (libxxhash-dev), and the wire
# code protoc-c (protobuf-c-compiler) generates from wasm/ringkv.proto into build/gen/,
# linked with the protobuf-c runtime (libprotobuf-c-dev).
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
if ! command -v protoc-c >/dev/null 2>&1; then
  echo "sim/build.sh: protoc-c missing: apt-get install protobuf-c-compiler" >&2
  exit 1
fi
if [ ! -f /usr/include/protobuf-c/protobuf-c.h ]; then
  echo "sim/build.sh: /usr/include/protobuf-c/protobuf-c.h missing: apt-get install libprotobuf-c-dev" >&2
  exit 1
fi
mkdir -p build/gen
# build/gen/ringkv.pb-c.{c,h}, regenerated when wasm/ringkv.proto is newer (via a scratch
# directory, so a failed or concurrent run never leaves half of a pair).
gen=build/gen/ringkv.pb-c
if [ ! -f "$gen.c" ] || [ ! -f "$gen.h" ] || [ wasm/ringkv.proto -nt "$gen.c" ] || [ wasm/ringkv.proto -nt "$gen.h" ]; then
  tmp=$(mktemp -d build/gen/tmp.XXXXXX)
  if ! protoc-c --c_out="$tmp" --proto_path=wasm wasm/ringkv.proto; then
    rm -rf "$tmp"
    echo "sim/build.sh: protoc-c failed on wasm/ringkv.proto" >&2
    exit 1
  fi
  mv -f "$tmp/ringkv.pb-c.h" "$gen.h"
  mv -f "$tmp/ringkv.pb-c.c" "$gen.c"
  rmdir "$tmp"
fi
core_src=$(ls wasm/src/*.c | grep -v '/wasm_exports\.c$')
flags=(-std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wno-unused-parameter -Iwasm/include -Iwasm/src -Ibuild/gen)
out=build/sim
if [ "${SIM_SANITIZE:-0}" = 1 ]; then
  flags+=(-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  out=build/sim-asan
else
  flags+=(-O2 -g)
fi
# shellcheck disable=SC2086
$CC "${flags[@]}" $core_src sim/*.c "$gen.c" -lprotobuf-c -lm -o "$out"
echo "sim/build.sh: built $out"
