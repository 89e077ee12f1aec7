#!/usr/bin/env bash
# Installs everything fedsgd needs, from Debian's package archive only. Safe
# to run again. Needs root (or sudo).
#   scripts/install-deps.sh            build, test and run (incl. the data set)
#   scripts/install-deps.sh --build-only   build and run, no test tools (images)
#   scripts/install-deps.sh --bench    also PyTorch, the benchmark's reference
#   scripts/install-deps.sh --package  also the Debian packaging tools
#   scripts/install-deps.sh --fuzz     also clang and libFuzzer (scripts/fuzz.sh)
#   scripts/install-deps.sh --arm64    also the aarch64 cross compiler, qemu-user
#                                      and the arm64 libraries (adds the arch)
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates
  libzmq3-dev cppzmq-dev libeigen3-dev nlohmann-json3-dev libsqlite3-dev sqlite3
  zlib1g-dev libcli11-dev libcpp-httplib-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist
)
# Used by tests only: the dashboard in a real browser, the metrics format,
# numpy.load of the model download, systemd-analyze for the units, the
# compose file's YAML, tcpdump for the CURVE capture test, openssl for the
# HTTPS test's self-signed certificate.
test_tools=(chromium prometheus python3-numpy python3-yaml systemd yamllint tcpdump openssl)
add_arm64=false
with_test_tools=true
for arg in "$@"; do
  case "$arg" in
    --build-only) with_test_tools=false ;;
    --bench) packages+=(python3 python3-torch) ;;
    --package) packages+=(dpkg-dev fakeroot file lintian) ;;
    --fuzz) packages+=(clang-14 libclang-rt-14-dev) ;;
    --arm64)
      add_arm64=true
      packages+=(g++-aarch64-linux-gnu qemu-user-static dpkg-dev fakeroot file lintian
                 libzmq3-dev:arm64 libsqlite3-dev:arm64 libgtest-dev:arm64 libgmock-dev:arm64
                 zlib1g-dev:arm64 libcpp-httplib-dev:arm64
                 libssl-dev:arm64) ;;
    *) echo "install-deps: unknown option '$arg'" >&2; exit 2 ;;
  esac
done

$with_test_tools && packages+=("${test_tools[@]}")

sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive

updated=false
if $add_arm64 && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  "${sudo[@]}" dpkg --add-architecture arm64
  "${sudo[@]}" apt-get update -q
  updated=true
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
$updated || "${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
