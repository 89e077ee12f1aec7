#!/usr/bin/env bash
# Installs everything fedsgd needs to build, test and run, from Debian's
# package archive only. Safe to run again. Needs root (or sudo).
#   scripts/install-deps.sh          build + test dependencies and the data set
#   scripts/install-deps.sh --bench  also PyTorch, the benchmark's reference
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates
  libzmq3-dev cppzmq-dev libeigen3-dev nlohmann-json3-dev libsqlite3-dev sqlite3
  zlib1g-dev libcli11-dev libcpp-httplib-dev libsystemd-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist
  # used by tests only: the dashboard in a real browser, the metrics format,
  # and numpy.load of the model download
  chromium prometheus python3-numpy
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(python3 python3-torch)
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
