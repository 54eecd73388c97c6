#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The README's demo command: installs what is missing, builds, starts the local ITA stack and
# the simulated TD, runs the pipeline as far as keygate goes today, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
echo "== build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
exec /usr/bin/python3 scripts/demo.py --build build "$@"
