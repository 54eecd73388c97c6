#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The OpenSSL 3.5 leg of scripts/test.sh (runs alone too): keygate built against OpenSSL 3.5.4 LTS
# (the OpenSSL of Debian 13, Fedora, RHEL 10), its C unit tests, and the provider, servers and
# PKCS#11 pytest files with every process of the run on 3.5.4.
#
#   scripts/test-openssl35.sh [openssl|build|test|all]      (default: all)
#     openssl  OpenSSL 3.5.4 only (or its cached build)
#     build    OpenSSL 3.5.4 (or its cached build), then keygate against it in build-ossl35/
#     test     checks that 3.5.4 is what runs, then ctest and the pytest files (after build)
#
# OpenSSL comes from ../shared/third_party/openssl-3.5.4.tar.gz (KEYGATE_OPENSSL35_TARBALL
# overrides); without it the leg skips, saying so. Its build is cached outside the clone in
# ${KEYGATE_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/keygate}/openssl-<tarball sha256>, renamed into
# place only when complete. scripts/test.sh runs `all` in the background from its start
# (niced) and waits for it at its end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version=3.5.4
tarball=${KEYGATE_OPENSSL35_TARBALL:-$root/../shared/third_party/openssl-$version.tar.gz}
build=$root/build-ossl35
jobs=$(nproc)
what=${1:-all}

if [ ! -f "$tarball" ]; then
  echo "== OpenSSL $version leg SKIPPED: no $tarball (OpenSSL's source from shared/third_party;" \
    "KEYGATE_OPENSSL35_TARBALL names another place)"
  exit 0
fi
sha=$(sha256sum "$tarball" | cut -d' ' -f1)
cache=${KEYGATE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keygate}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
prefix=$cache/openssl-$sha

build_openssl() {
  if [ -x "$prefix/bin/openssl" ]; then
    echo "OpenSSL $version: cached in $prefix"
    return 0
  fi
  echo "OpenSSL $version: building into $prefix"
  # Staged beside the cache entry (same file system) and renamed into place at the end, so an
  # interrupted build leaves no half cache. The prefix is compiled in (module and config
  # directories, rpath), hence the DESTDIR install.
  stage=$(mktemp -d "$cache/.openssl-$sha.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  tar -xzf "$tarball" -C "$stage"
  cd "$stage/openssl-$version"
  # The release tarball ships a crypto/buildinf.h for Windows (VC-WIN32) that make takes as up to
  # date: `openssl version -a` would report that platform and compiler.
  rm -f crypto/buildinf.h
  # The rpath makes openssl, libssl and the modules load this libcrypto, not the system's
  # (same soname, libcrypto.so.3). no-docs no-tests: neither is used here.
  # shellcheck disable=SC2016 # $(LIBRPATH) is make's, expanded by OpenSSL's Makefile
  local log=$stage/build.log cfg=(--prefix="$prefix" --libdir=lib --openssldir="$prefix/ssl" no-docs no-tests
    shared '-Wl,-rpath,$(LIBRPATH)')
  # Only the shared libraries: LIBS without libcrypto.a and libssl.a, which would compile every
  # libcrypto and libssl source a second time (their own object files); nothing here links them.
  local libs="apps/libapps.a providers/libcommon.a providers/libdefault.a providers/liblegacy.a"
  if ! (./Configure "${cfg[@]}" && make -j "$jobs" LIBS="$libs" build_sw &&
    make LIBS="$libs" INSTALL_LIBS= DESTDIR="$stage/root" install_sw install_ssldirs) >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "OpenSSL $version: the build failed (the lines above are the end of its log)" >&2
    return 1
  fi
  cd "$root"
  if ! mv -T "$stage/root$prefix" "$prefix" 2>/dev/null && [ ! -x "$prefix/bin/openssl" ]; then
    echo "OpenSSL $version: could not move the build into $prefix" >&2
    return 1
  fi
  rm -rf "$stage"
  trap - EXIT
  echo "OpenSSL $version: built"
}

build_keygate() {
  rm -rf "$build"
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEYGATE_WERROR=ON \
    -DOPENSSL_ROOT_DIR="$prefix" >/dev/null
  cmake --build "$build" -j "$jobs" >/dev/null
  echo "keygate: built against OpenSSL $version in $build"
}

# Every process of the run on 3.5.4: its openssl first on PATH, its libraries for the hosts that
# are not ours (nginx, haproxy, pkcs11-tool, curl, python's ssl: built against Debian's 3.0,
# ABI-compatible with 3.5 under the same soname; one process cannot hold two libcrypto.so.3, so
# a 3.0 host would otherwise give a 3.5-built module 3.0's libcrypto), its headers and libraries
# for the C test hosts the tests compile (gcc reads C_INCLUDE_PATH and LIBRARY_PATH).
use_openssl35() {
  export PATH="$prefix/bin:$PATH"
  export LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export C_INCLUDE_PATH="$prefix/include${C_INCLUDE_PATH:+:$C_INCLUDE_PATH}"
  export LIBRARY_PATH="$prefix/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
}

expect() { # what, actual, expected substring
  if [[ "$2" != *"$3"* ]]; then
    echo "OpenSSL $version leg: $1 is '$2', expected '$3'" >&2
    exit 1
  fi
  echo "  $1: $2"
}

check_versions() {
  echo "== OpenSSL $version leg: what runs"
  expect "openssl version" "$(openssl version)" "OpenSSL $version "
  expect "keygate version" "$("$build/cli/keygate" version | grep '^OpenSSL')" "OpenSSL $version "
  local f
  for f in provider/keygate.so pkcs11/libkeygate-pkcs11.so cli/keygate; do
    # the rpath alone (no LD_LIBRARY_PATH) must find 3.5.4's libcrypto
    expect "libcrypto of $f" \
      "$(env -u LD_LIBRARY_PATH ldd "$build/$f" | awk '/libcrypto\.so/ {print $3}')" "$prefix/lib/libcrypto.so.3"
  done
  expect "keygate provider in openssl" "$(OPENSSL_CONF=/dev/null openssl list -providers -verbose \
    -provider-path "$build/provider" -provider keygate -provider default | grep -A3 '^  keygate' | grep status)" \
    "status: active"
  expect "nginx" "$(nginx -V 2>&1 | grep -i 'running with\|built with' | tail -1)" "OpenSSL $version "
  expect "haproxy" "$(haproxy -vv 2>&1 | grep -i 'running on openssl')" "OpenSSL $version "
  expect "libcrypto of pkcs11-tool" "$(ldd "$(command -v pkcs11-tool)" | awk '/libcrypto\.so/ {print $3}')" \
    "$prefix/lib/libcrypto.so.3"
  expect "python ssl" "$(/usr/bin/python3 -c 'import ssl; print(ssl.OPENSSL_VERSION)')" "OpenSSL $version "
}

run_tests() {
  if [ ! -x "$prefix/bin/openssl" ] || [ ! -x "$build/cli/keygate" ]; then
    echo "OpenSSL $version leg: no build of OpenSSL $version in $prefix or of keygate in $build" \
      "(run $0 build first)" >&2
    exit 1
  fi
  use_openssl35
  check_versions
  echo "== OpenSSL $version leg: C unit tests (ctest)"
  ctest --test-dir "$build" --output-on-failure -j "$jobs"
  echo "== OpenSSL $version leg: provider, servers and PKCS#11 tests (pytest)"
  # Not run here: the valgrind cases. memcheck reports OpenSSL's own assembler AES-GCM
  # (uninitialised reads by design) unless OpenSSL is built with -DPURIFY, which this build is
  # not; the 3.0 leg runs them against Debian's OpenSSL and its suppressions.
  echo "(not run here: test_provider.py's 2 valgrind cases, which need an OpenSSL built with -DPURIFY)"
  KEYGATE_BUILD_DIR="$build" /usr/bin/python3 -m pytest -p no:cacheprovider -q -n 3 --dist loadfile \
    -k "not valgrind" "$root/tests/integration/test_provider.py" "$root/tests/integration/test_servers.py" \
    "$root/tests/integration/test_pkcs11.py"
}

case "$what" in
openssl) build_openssl ;;
build)
  build_openssl
  build_keygate
  ;;
test) run_tests ;;
all)
  build_openssl
  build_keygate
  run_tests
  ;;
*) echo "usage: $0 [openssl|build|test|all]" >&2 && exit 2 ;;
esac
