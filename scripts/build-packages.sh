#!/usr/bin/env bash
# Builds the Debian package of fedsgd for amd64 (this machine) or arm64
# (cross-compiled), into build-package-ARCH/, and checks it with lintian.
#   scripts/build-packages.sh            amd64
#   scripts/build-packages.sh arm64      cross-compiled for aarch64 boards
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-amd64}"
build="build-package-$arch"
toolchain=()
case "$arch" in
  amd64) scripts/install-deps.sh --package ;;
  arm64) scripts/install-deps.sh --arm64; toolchain=(-DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake) ;;
  *) echo "build-packages: unknown architecture '$arch' (amd64 or arm64)" >&2; exit 2 ;;
esac
# Packages run on other machines than this one: no -march=native.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DFEDSGD_NATIVE=OFF -DFEDSGD_BUILD_TESTS=OFF \
      -DFEDSGD_BUILD_BENCH=OFF "${toolchain[@]}"
cmake --build "$build" -j "$(nproc)"
(cd "$build" && cpack -G DEB)
deb=$(ls "$build"/fedsgd_*_"$arch".deb)
echo "build-packages: $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'
lintian --fail-on error --suppress-tags no-manual-page,binary-without-manpage "$deb"
echo "build-packages: lintian reports no errors for $deb"
