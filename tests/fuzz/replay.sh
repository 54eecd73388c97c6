#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the libFuzzer harnesses (clang, ASan+UBSan) and replays every corpus under
# tests/fuzz/corpus/<harness>/ (-runs=0: each seed and regression input once), then fuzzes each
# harness briefly (FUZZ_SECONDS, default 10; 0 = replay only) from a scratch copy of its corpus.
# Any crash, sanitizer report or leak fails. Used by scripts/test.sh.
#
#   tests/fuzz/replay.sh [BUILD_DIR]     (default build-fuzz)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-fuzz}
seconds=${FUZZ_SECONDS:-10}
CC=clang cmake -S . -B "$build" -DKEYGATE_FUZZ=ON -DBUILD_TESTING=OFF -DKEYGATE_WERROR=ON >/dev/null
cmake --build "$build" --target fuzzers -j "$(nproc)" >/dev/null
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
for src in tests/fuzz/fuzz_*.c; do
  h=$(basename "$src" .c); h=${h#fuzz_}
  bin=$build/tests/fuzz/fuzz_$h
  n=$(ls tests/fuzz/corpus/$h | wc -l)
  [ "$n" -gt 0 ] || { echo "fuzz $h: empty corpus tests/fuzz/corpus/$h" >&2; exit 1; }
  if ! "$bin" -runs=0 "tests/fuzz/corpus/$h" >"$scratch/$h.log" 2>&1; then
    cat "$scratch/$h.log" >&2; echo "fuzz $h: corpus replay FAILED" >&2; exit 1
  fi
  if [ "$seconds" -gt 0 ]; then
    mkdir -p "$scratch/$h"
    cp tests/fuzz/corpus/$h/* "$scratch/$h/"
    if ! "$bin" -max_total_time="$seconds" -artifact_prefix="$scratch/" "$scratch/$h" >"$scratch/$h.log" 2>&1; then
      cat "$scratch/$h.log" >&2; echo "fuzz $h: ${seconds}s run FAILED (input: $(ls "$scratch"/crash-* "$scratch"/leak-* 2>/dev/null))" >&2
      exit 1
    fi
  fi
  echo "fuzz $h: $n corpus inputs replayed$([ "$seconds" -gt 0 ] && echo ", ${seconds}s fuzzing") ok"
done
