#!/usr/bin/env bash
# Cross-builds fedsgd for aarch64 and runs the unit-test suite under
# qemu-aarch64-static (user-mode emulation) on this x86-64 machine. The
# integration tests stay with the native build: they time real processes,
# and emulation would only make them slow.
#   scripts/test-arm64.sh [extra ctest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --arm64
build="${BUILD_DIR:-build-arm64}"
cmake -S . -B "$build" -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
      -DCMAKE_BUILD_TYPE=Release -DFEDSGD_BUILD_BENCH=OFF -DFEDSGD_WERROR=ON
cmake --build "$build" -j "$(nproc)" --target fedsgd_unit_tests fedsgd-daemon fedsgd-coordinator
file "$build/daemon/fedsgd-daemon" "$build/coordinator/fedsgd-coordinator"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" -L unit "$@"
