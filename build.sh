#!/usr/bin/env bash
# build.sh: builds and checks the ringkv core.
#
#   bash build.sh [wasm]          build/ringkv.wasm (zero imports; rebuilt only when stale)
#   bash build.sh native          build/native/libringkv.a (host build, for bench/sim/replay)
#   bash build.sh test            cmocka tests in tests/c/ under ASan+UBSan
#   bash build.sh fuzz-smoke      every libFuzzer target briefly, plus its regression inputs
#   bash build.sh fuzz [seconds]  the long run: FUZZ_RUNS (default 10M) executions per
#                                 target, or `seconds` per target when given
#
# Toolchain: $WASI_SDK_PATH (the official wasi-sdk) when set; otherwise Debian's clang-14,
# lld, wasi-libc and libclang-rt-14-dev-wasm32. xxhash comes from libxxhash-dev (header
# only), cmocka from libcmocka-dev, the sanitizer and libFuzzer runtimes from
# libclang-rt-14-dev. Missing packages are installed with apt-get when running as root;
# otherwise the exact command is printed.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
BUILD=$ROOT/build

log() { echo "build.sh: $*"; }
die() { echo "build.sh: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Toolchain

CLANG=""
WASM_CLANG=""
WASM_SYSROOT=""
APT_UPDATED=0

find_host_clang() {
  CLANG=""
  if [ -n "${RINGKV_CLANG:-}" ]; then CLANG=$RINGKV_CLANG; return; fi
  local c
  for c in clang-14 clang; do
    if command -v "$c" >/dev/null 2>&1; then CLANG=$(command -v "$c"); return; fi
  done
}

clang_major() { "$1" -dumpversion 2>/dev/null | cut -d. -f1; }

# Prints the Debian packages missing for `what`, one per line: wasm (the WASM build),
# native (clang and xxhash), host (native plus cmocka and the sanitizer/libFuzzer runtimes).
missing_packages() {
  local what=$1 v=14
  if [ "$what" = wasm ] && [ -n "${WASI_SDK_PATH:-}" ]; then
    # wasi-sdk brings clang, lld, the libc and the builtins; xxhash.h still comes from Debian.
    [ -f /usr/include/xxhash.h ] || echo libxxhash-dev
    return 0
  fi
  find_host_clang
  if [ -n "$CLANG" ]; then v=$(clang_major "$CLANG"); else echo "clang-14"; fi
  if [ "$what" = wasm ]; then
    [ -f /usr/include/xxhash.h ] || echo libxxhash-dev
    if [ -n "$CLANG" ]; then
      local rt
      rt=$("$CLANG" -print-resource-dir)/lib/wasi/libclang_rt.builtins-wasm32.a
      [ -f "$rt" ] || echo "libclang-rt-$v-dev-wasm32"
      if ! command -v "wasm-ld-$v" >/dev/null 2>&1 && ! command -v wasm-ld >/dev/null 2>&1 &&
         [ ! -x "$(dirname "$(readlink -f "$CLANG")")/wasm-ld" ]; then echo "lld-$v"; fi
    else
      echo libclang-rt-14-dev-wasm32
      echo lld-14
    fi
    { [ -f /usr/include/wasm32-wasi/stdlib.h ] && [ -f /usr/lib/wasm32-wasi/libc.a ]; } || echo wasi-libc
  else
    [ -f /usr/include/xxhash.h ] || echo libxxhash-dev
    [ "$what" = native ] && return 0
    [ -f /usr/include/cmocka.h ] || echo libcmocka-dev
    if [ -n "$CLANG" ]; then
      local rd
      rd=$("$CLANG" -print-resource-dir)/lib/linux
      { [ -f "$rd/libclang_rt.asan-x86_64.a" ] || [ -f "$rd/libclang_rt.asan-aarch64.a" ]; } &&
        { [ -f "$rd/libclang_rt.fuzzer-x86_64.a" ] || [ -f "$rd/libclang_rt.fuzzer-aarch64.a" ]; } ||
        echo "libclang-rt-$v-dev"
    else
      echo libclang-rt-14-dev
    fi
  fi
}

# Installs what `what` needs (two passes: the clang version decides some package names).
ensure_toolchain() {
  local what=$1 pass missing
  for pass in 1 2; do
    missing=$(missing_packages "$what" | sort -u | tr '\n' ' ' | sed 's/ *$//')
    [ -z "$missing" ] && break
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      log "installing: $missing"
      export DEBIAN_FRONTEND=noninteractive
      if [ $APT_UPDATED = 0 ]; then
        apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
      fi
      # shellcheck disable=SC2086
      apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
        die "apt-get install -y $missing failed"
    else
      die "missing toolchain packages; install them with:
  sudo apt-get update && sudo apt-get install -y $missing"
    fi
  done
  missing=$(missing_packages "$what" | sort -u | tr '\n' ' ' | sed 's/ *$//')
  [ -z "$missing" ] || die "still missing after apt-get: $missing"
  find_host_clang
  if [ "$what" = wasm ]; then
    if [ -n "${WASI_SDK_PATH:-}" ]; then
      WASM_CLANG=$WASI_SDK_PATH/bin/clang
      WASM_SYSROOT=$WASI_SDK_PATH/share/wasi-sysroot
      [ -x "$WASM_CLANG" ] || die "\$WASI_SDK_PATH/bin/clang not found ($WASM_CLANG)"
      [ -d "$WASM_SYSROOT" ] || die "wasi-sdk sysroot not found ($WASM_SYSROOT)"
    else
      WASM_CLANG=$CLANG
      # A private sysroot holding only the WASI headers and libraries, so that no host
      # header (/usr/include, /usr/local/include) can reach the WASM build.
      WASM_SYSROOT=$BUILD/wasi-sysroot
      mkdir -p "$WASM_SYSROOT/include" "$WASM_SYSROOT/lib"
      ln -sfn /usr/include/wasm32-wasi "$WASM_SYSROOT/include/wasm32-wasi"
      ln -sfn /usr/lib/wasm32-wasi "$WASM_SYSROOT/lib/wasm32-wasi"
    fi
    # xxhash.h alone, from libxxhash-dev: the only host header the WASM build sees.
    mkdir -p "$BUILD/xxhash-include"
    ln -sfn /usr/include/xxhash.h "$BUILD/xxhash-include/xxhash.h"
  fi
}

# ---------------------------------------------------------------------------------------
# Sources

core_sources() { ls "$ROOT"/wasm/src/*.c; }
# The core without the WASM boundary (wasm_exports.c): native, tests, fuzzing.
native_sources() { core_sources | grep -v '/wasm_exports\.c$'; }

# True when `out` is missing or older than any core source, header or this script.
stale() {
  local out=$1; shift
  [ -f "$out" ] || return 0
  [ -n "$(find "$ROOT/wasm/src" "$ROOT/wasm/include" "$ROOT/build.sh" "$@" -newer "$out" -print -quit 2>/dev/null)" ]
}

# ---------------------------------------------------------------------------------------
# wasm

WASM_EXPORTS=(ringkv_wasm_input ringkv_wasm_call ringkv_wasm_output ringkv_wasm_output_len)

cmd_wasm() {
  local out=$BUILD/ringkv.wasm
  ensure_toolchain wasm
  if ! stale "$out"; then
    log "build/ringkv.wasm is up to date ($(stat -c %s "$out") bytes)"
    return 0
  fi
  [ -f "$ROOT/wasm/src/wasm_exports.c" ] || die "wasm/src/wasm_exports.c is missing"
  mkdir -p "$BUILD"
  local werror=-Werror
  [ "${RINGKV_WERROR:-1}" = 0 ] && werror=""
  local exports=() e
  for e in "${WASM_EXPORTS[@]}"; do exports+=("-Wl,--export=$e"); done
  # -nostartfiles + --no-entry: a library module with no _start/_initialize; the core has
  # no constructors. Memory is exported (wasm-ld's default) and may grow.
  # shellcheck disable=SC2046
  "$WASM_CLANG" --target=wasm32-wasi --sysroot="$WASM_SYSROOT" \
    -O2 -std=c11 -Wall -Wextra $werror -DNDEBUG \
    -I"$BUILD/xxhash-include" -I"$ROOT/wasm/include" -I"$ROOT/wasm/src" \
    -nostartfiles -Wl,--no-entry "${exports[@]}" \
    -Wl,--strip-all -Wl,-z,stack-size=262144 \
    -o "$out.tmp" $(core_sources)
  # The module must import nothing (no WASI) and export the boundary.
  node -e '
    const fs = require("fs");
    const m = new WebAssembly.Module(fs.readFileSync(process.argv[1]));
    const imports = WebAssembly.Module.imports(m);
    if (imports.length !== 0) {
      console.error("build.sh: error: ringkv.wasm has imports: " +
        imports.map((i) => i.module + "." + i.name).join(", "));
      process.exit(1);
    }
    const names = WebAssembly.Module.exports(m).map((e) => e.name);
    const missing = ["memory", ...process.argv.slice(2)].filter((n) => !names.includes(n));
    if (missing.length) {
      console.error("build.sh: error: ringkv.wasm lacks exports: " + missing.join(", "));
      process.exit(1);
    }
  ' "$out.tmp" "${WASM_EXPORTS[@]}" || { rm -f "$out.tmp"; exit 1; }
  mv "$out.tmp" "$out"
  log "built build/ringkv.wasm ($(stat -c %s "$out") bytes, 0 imports)"
}

# ---------------------------------------------------------------------------------------
# native

cmd_native() {
  local dir=$BUILD/native out=$BUILD/native/libringkv.a
  ensure_toolchain native
  if ! stale "$out"; then
    log "build/native/libringkv.a is up to date"
    return 0
  fi
  rm -rf "$dir/obj" && mkdir -p "$dir/obj"
  local src objs=()
  for src in $(native_sources); do
    local obj=$dir/obj/$(basename "${src%.c}").o
    "$CLANG" -O2 -g -std=c11 -Wall -Wextra -I"$ROOT/wasm/include" -I"$ROOT/wasm/src" \
      -c "$src" -o "$obj"
    objs+=("$obj")
  done
  rm -f "$out"
  ar rcs "$out" "${objs[@]}"
  log "built build/native/libringkv.a (${#objs[@]} objects)"
}

# ---------------------------------------------------------------------------------------
# test: cmocka under ASan+UBSan

# $RINGKV_SAN_EXTRA: extra compiler flags for the sanitizer builds (e.g. to bisect a report).
# shellcheck disable=SC2206
SAN_EXTRA=(${RINGKV_SAN_EXTRA:-})
# Builds with extra flags live apart, so they never replace the binaries of a normal run.
SAN_SUFFIX=${RINGKV_SAN_EXTRA:+-extra}
SAN_FLAGS=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1 "${SAN_EXTRA[@]}")

# Compiles the core (without wasm_exports.c) into $1 with the flags in the rest.
build_core_objs() {
  local dir=$1; shift
  mkdir -p "$dir"
  # Different flags (e.g. RINGKV_SAN_EXTRA) invalidate every object.
  if [ "$(cat "$dir/flags" 2>/dev/null || true)" != "$CLANG $*" ]; then
    rm -f "$dir"/*.o
    echo "$CLANG $*" >"$dir/flags"
  fi
  local src obj
  CORE_OBJS=()
  for src in $(native_sources); do
    obj=$dir/$(basename "${src%.c}").o
    if stale "$obj"; then
      "$CLANG" "$@" -std=c11 -Wall -Wextra -I"$ROOT/wasm/include" -I"$ROOT/wasm/src" \
        -c "$src" -o "$obj"
    fi
    CORE_OBJS+=("$obj")
  done
  # Drop objects of sources that no longer exist.
  for obj in "$dir"/*.o; do
    [ -e "$obj" ] || continue
    [ -f "$ROOT/wasm/src/$(basename "${obj%.o}").c" ] || rm -f "$obj"
  done
}

cmd_test() {
  ensure_toolchain host
  local dir=$BUILD/test$SAN_SUFFIX
  build_core_objs "$dir/core" "${SAN_FLAGS[@]}"
  local t name bin passed=0 failed=0 failed_names=()
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  for t in "$ROOT"/tests/c/test_*.c; do
    [ -e "$t" ] || continue
    name=$(basename "${t%.c}")
    bin=$dir/$name
    if ! "$CLANG" "${SAN_FLAGS[@]}" -std=c11 -Wall -Wextra -I"$ROOT/tests/c" \
        -I"$ROOT/wasm/include" -I"$ROOT/wasm/src" "$t" "${CORE_OBJS[@]}" -lcmocka -o "$bin"; then
      echo "[  FAILED  ] $name: does not compile"
      failed=$((failed + 1)); failed_names+=("$name"); continue
    fi
    echo "--- $name"
    # cmocka's per-test RUN/OK lines are dropped; failures, sanitizer reports and the
    # summary lines stay.
    local rc
    set +e
    "$bin" 2>&1 | grep -v -E '^\[ +(RUN|OK) +\]'
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names+=("$name"); fi
  done
  echo "native tests: $passed binaries passed, $failed failed${failed_names[*]:+ (${failed_names[*]})}"
  [ $failed = 0 ]
}

# ---------------------------------------------------------------------------------------
# fuzz

FUZZ_FLAGS=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1 "${SAN_EXTRA[@]}")
FUZZ_DIR=$BUILD/fuzz$SAN_SUFFIX
FUZZ_CORE_FLAGS=(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1 "${SAN_EXTRA[@]}")

fuzz_targets() {
  local f
  for f in "$ROOT"/tests/fuzz/fuzz_*.c; do [ -e "$f" ] && basename "${f%.c}"; done
}

# Builds every fuzz target into build/fuzz/ (build/fuzz-extra/ with RINGKV_SAN_EXTRA) and
# fills empty seed corpora.
build_fuzzers() {
  ensure_toolchain host
  local dir=$FUZZ_DIR
  build_core_objs "$dir/core" "${FUZZ_CORE_FLAGS[@]}"
  local t
  for t in $(fuzz_targets); do
    if stale "$dir/$t" "$ROOT/tests/fuzz/$t.c" "$ROOT/tests/fuzz/fuzzlib.h" "$dir/core/flags"; then
      "$CLANG" "${FUZZ_FLAGS[@]}" -std=c11 -Wall -Wextra -I"$ROOT/tests/fuzz" \
        -I"$ROOT/wasm/include" -I"$ROOT/wasm/src" "$ROOT/tests/fuzz/$t.c" "${CORE_OBJS[@]}" -o "$dir/$t"
    fi
    mkdir -p "$ROOT/tests/fuzz/corpus/$t" "$ROOT/tests/fuzz/regressions/$t"
  done
  # Seeds: generated by tests/fuzz/make_seeds.c into any empty corpus directory.
  local empty=0
  for t in $(fuzz_targets); do
    [ -n "$(ls -A "$ROOT/tests/fuzz/corpus/$t")" ] || empty=1
  done
  if [ $empty = 1 ] && [ -f "$ROOT/tests/fuzz/make_seeds.c" ]; then
    "$CLANG" -O1 -g -std=c11 -Wall -Wextra -I"$ROOT/tests/fuzz" -I"$ROOT/wasm/include" \
      -I"$ROOT/wasm/src" "$ROOT/tests/fuzz/make_seeds.c" $(native_sources) -o "$dir/make_seeds"
    for t in $(fuzz_targets); do
      [ -n "$(ls -A "$ROOT/tests/fuzz/corpus/$t")" ] || "$dir/make_seeds" "$t" "$ROOT/tests/fuzz/corpus/$t"
    done
  fi
}

# Runs one target: regression inputs one by one, then fuzzing from the seed corpus in a
# scratch copy (new inputs never land in the committed corpus). Crashes go to the
# target's regressions directory. Prints one summary line; returns non-zero on failure.
# Args: target, log file, then libFuzzer options.
run_fuzzer() {
  local t=$1 logf=$2; shift 2
  local bin=$FUZZ_DIR/$t
  local regdir=$ROOT/tests/fuzz/regressions/$t work=$FUZZ_DIR/work/$t.$BASHPID
  # The long run grows a corpus kept between runs (build/fuzz-corpus/<target>/).
  [ "${FUZZ_PERSIST:-0}" = 1 ] && work=$BUILD/fuzz-corpus/$t
  local regs=() f reg_failed=0
  for f in "$regdir"/*; do [ -f "$f" ] && regs+=("$f"); done
  if [ ${#regs[@]} -gt 0 ]; then
    if ! "$bin" -rss_limit_mb=2048 "${regs[@]}" >"$logf.reg" 2>&1; then
      echo "$t: FAILED on a regression input (log: ${logf#"$ROOT"/}.reg)"
      grep -aE "Running:|oracle failed|runtime error|ERROR: |SUMMARY" "$logf.reg" | grep -v "^SUMMARY: libFuzzer" |
        tail -4 | sed 's/^/    /'
      # The smoke run stops here; the long run still fuzzes, to find what else there is.
      [ "${FUZZ_PERSIST:-0}" = 1 ] || return 1
      reg_failed=1
    fi
  fi
  [ "${FUZZ_PERSIST:-0}" = 1 ] || rm -rf "$work"
  mkdir -p "$work"
  local rc=0
  "$bin" "$@" -rss_limit_mb=2048 -timeout=25 -max_len=8192 -print_final_stats=1 \
    -artifact_prefix="$regdir/" "$work" "$ROOT/tests/fuzz/corpus/$t" >"$logf" 2>&1 || rc=$?
  local runs
  runs=$(grep -aEo 'stat::number_of_executed_units: *[0-9]+' "$logf" | grep -Eo '[0-9]+$' | tail -1 || true)
  [ -n "$runs" ] || runs=$(grep -aEo '^Done [0-9]+ runs' "$logf" | grep -Eo '[0-9]+' | tail -1 || true)
  [ "${FUZZ_PERSIST:-0}" = 1 ] || rm -rf "$work"
  if [ $rc != 0 ]; then
    echo "$t: FAILED after ${runs:-?} executions (log: ${logf#"$ROOT"/}, input kept in tests/fuzz/regressions/$t/)"
    grep -aE "oracle failed|runtime error|ERROR: |SUMMARY" "$logf" | grep -v "^SUMMARY: libFuzzer" |
      head -4 | sed 's/^/    /'
    return 1
  fi
  if [ $reg_failed = 1 ]; then
    echo "$t: ${runs:-?} executions, no new crash (but a regression input fails, above)"
    return 1
  fi
  echo "$t: ${runs:-?} executions, ${#regs[@]} regression inputs, ok"
}

# Runs every target with the given libFuzzer options, `jobs` at a time.
run_fuzzers() {
  local label=$1 jobs=$2; shift 2
  local t pids=() names=() passed=0 failed=0 i
  # Per mode, so a smoke run (npm test) never truncates the logs of a long run.
  local logs=$FUZZ_DIR/logs-${label// /-}
  mkdir -p "$logs"
  local targets
  targets=$(fuzz_targets)
  [ -n "$targets" ] || die "no fuzz targets in tests/fuzz/"
  for t in $targets; do
    # Wait for a free slot.
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    run_fuzzer "$t" "$logs/$t.log" "$@" >"$logs/$t.summary" 2>&1 &
    pids+=($!); names+=("$t")
  done
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    cat "$logs/${names[$i]}.summary"
  done
  echo "$label: $passed passed, $failed failed"
  [ $failed = 0 ]
}

ncpu() { nproc 2>/dev/null || echo 2; }

cmd_fuzz_smoke() {
  build_fuzzers
  local n
  n=$(fuzz_targets | wc -l)
  # About 80 s in all: each target gets its share of the cores' time.
  local per=$(( 80 * $(ncpu) / (n > 0 ? n : 1) ))
  [ $per -gt 20 ] && per=20
  [ $per -lt 5 ] && per=5
  run_fuzzers "fuzz smoke" "$(ncpu)" -runs="${FUZZ_SMOKE_RUNS:-200000}" -max_total_time="$per"
}

cmd_fuzz() {
  build_fuzzers
  local opts=()
  if [ -n "${1:-}" ]; then
    opts=(-max_total_time="$1")
  else
    opts=(-runs="${FUZZ_RUNS:-10000000}")
  fi
  FUZZ_PERSIST=1 run_fuzzers "fuzz" "${FUZZ_JOBS:-$(ncpu)}" "${opts[@]}"
}

# ---------------------------------------------------------------------------------------

main() {
  case "${1:-wasm}" in
    wasm) cmd_wasm ;;
    native) cmd_native ;;
    test) cmd_test ;;
    fuzz-smoke) cmd_fuzz_smoke ;;
    fuzz) shift; cmd_fuzz "${1:-}" ;;
    toolchain) ensure_toolchain wasm; ensure_toolchain host; log "toolchain ok ($CLANG)" ;;
    -h | --help | help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$1' (wasm | native | test | fuzz-smoke | fuzz [seconds])" ;;
  esac
}

# One line, so that bash has read all of it before running: editing this file while a
# long run is going does not change what that run executes.
main "$@"; exit $?
