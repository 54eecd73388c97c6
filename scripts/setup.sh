#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian 12 packages keygate builds and tests with. Idempotent and quiet when
# everything is already there; needs root (or sudo) only when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libssl-dev openssl libcurl4-openssl-dev curl libcjson-dev libp11-kit-dev p11-kit p11-kit-modules
  libcmocka-dev
  python3 python3-pytest python3-pytest-xdist python3-cryptography python3-jwcrypto
  opensc
  clang clang-format libclang-rt-14-dev valgrind gdb
  swtpm swtpm-tools tpm2-tools libtss2-dev
  fuse3 python3-fusepy
  nginx haproxy
  gnutls-bin libengine-pkcs11-openssl nghttp2-client
  debhelper dpkg-dev fakeroot man-db groff-base faketime
  python3-matplotlib hyperfine linux-perf
  python3-ecdsa
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
