#!/usr/bin/env bash
# The test command: installs the dependencies, builds (Release), and runs the
# whole test suite through ctest. Extra arguments go to ctest.
#   FEDSGD_SANITIZE=address|thread scripts/test.sh   builds and tests under a sanitizer
#   BUILD_DIR=...                                    build directory (default build/)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

sanitize="${FEDSGD_SANITIZE:-}"
build="${BUILD_DIR:-build${sanitize:+-$sanitize}}"
type=Release
[[ -n "$sanitize" ]] && type=RelWithDebInfo
jobs=$(nproc)

bench=ON
[[ -n "$sanitize" ]] && bench=OFF  # benchmarks under a sanitizer measure nothing

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE="$type" -DFEDSGD_SANITIZE="$sanitize" \
      -DFEDSGD_WERROR=ON -DFEDSGD_BUILD_BENCH="$bench"
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs" "$@"
