#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The README's test command: installs what is missing, builds from scratch, runs every C unit
# test (ctest) and every pytest test, then the C unit tests again under ASan+UBSan, the
# libFuzzer harnesses over their corpora (tests/fuzz/replay.sh), and the OpenSSL 3.5 leg
# (scripts/test-openssl35.sh), which runs in the background from the start.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
jobs=$(nproc)

./scripts/setup.sh

echo "== the OpenSSL 3.5 leg: building and testing in the background (niced), log in build-ossl35.log"
# The whole leg (the OpenSSL build, about 3 CPU-minutes when not cached, which CI never is, the
# cache being outside the clone; keygate against it; its tests, about 2 minutes of mostly waiting
# on servers) overlaps the legs below, most of all the integration tests, which wait on servers
# rather than on the CPU: nice 19 gives it only the CPU they leave idle. Run one after the other,
# the suite took over 20 minutes on 2 cores. It runs in its own session so that the trap can stop
# all of it (make, gcc, its servers) when this script fails first.
rm -rf build-ossl35
setsid -w nice -n 19 ./scripts/test-openssl35.sh all >build-ossl35.log 2>&1 &
ossl35_pid=$!
# (the pid alone when it has not yet made its session)
trap 'kill -- -"$ossl35_pid" 2>/dev/null || kill "$ossl35_pid" 2>/dev/null || true' EXIT

echo "== style: clang-format (.clang-format) on every tracked C source and header"
# shellcheck disable=SC2046
git ls-files -z '*.c' '*.h' | xargs -0 clang-format --dry-run -Werror

echo "== build (from scratch)"
rm -rf build build-asan build-fuzz
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEYGATE_WERROR=ON >/dev/null
cmake --build build -j "$jobs" >/dev/null

echo "== C unit tests (ctest)"
ctest --test-dir build --output-on-failure -j "$jobs"

echo "== integration tests (pytest)"
# Most tests wait on servers, timeouts and retries rather than on the CPU, so three workers
# (one file each, keeping each file's stack fixtures to one process) halve the wall time.
# (the teardown test runs 6 rounds here; its 20 rounds run under ASan below)
KEYGATE_BUILD_DIR="$root/build" KEYGATE_TEARDOWN_ROUNDS=6 \
  /usr/bin/python3 -m pytest -p no:cacheprovider -q -n 3 --dist loadfile "$root/tests"

echo "== C unit tests under ASan+UBSan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKEYGATE_SANITIZE=address,undefined >/dev/null
cmake --build build-asan -j "$jobs" >/dev/null
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs"

echo "== the ASan+UBSan provider inside the real openssl, C and Python hosts"
KEYGATE_BUILD_DIR="$root/build-asan" KEYGATE_ASAN_PRELOAD="$(gcc -print-file-name=libasan.so)" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  /usr/bin/python3 -m pytest -p no:cacheprovider -q "$root/tests/integration/test_provider.py" \
  -k "not valgrind and not ordinary"

echo "== the ASan+UBSan PKCS#11 module under pkcs11-tool, and leak-free under the raw-API checker"
KEYGATE_BUILD_DIR="$root/build-asan" KEYGATE_ASAN_PRELOAD="$(gcc -print-file-name=libasan.so)" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  /usr/bin/python3 -m pytest -p no:cacheprovider -q "$root/tests/integration/test_pkcs11.py" \
  -k "objects_and or sign_and_verify or decrypt or ecdh or test_suites"
KEYGATE_BUILD_DIR="$root/build-asan" KEYGATE_ASAN_PRELOAD="$(gcc -print-file-name=libasan.so)" \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  /usr/bin/python3 -m pytest -p no:cacheprovider -q "$root/tests/integration/test_pkcs11.py" \
  -k "raw_api or fork_child or threads_share or release_at_login or honest"

echo "== unloading the ASan+UBSan module and provider while lease refreshes run (12 rounds each)"
KEYGATE_BUILD_DIR="$root/build-asan" KEYGATE_ASAN_PRELOAD="$(gcc -print-file-name=libasan.so)" KEYGATE_TEARDOWN_ROUNDS=12 \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  /usr/bin/python3 -m pytest -p no:cacheprovider -q "$root/tests/integration/test_teardown.py"

echo "== fuzz harnesses (clang, ASan+UBSan): corpus replay + 3 s each"
FUZZ_SECONDS=3 "$root/tests/fuzz/replay.sh" "$root/build-fuzz"

echo "== OpenSSL 3.5 leg (scripts/test-openssl35.sh, run in the background since the start)"
waited=$SECONDS
if ! wait "$ossl35_pid"; then
  cat build-ossl35.log
  echo "the OpenSSL 3.5 leg failed (build-ossl35.log above)"
  exit 1
fi
cat build-ossl35.log
echo "(waited $((SECONDS - waited)) s for it)"

echo "== all tests passed"
