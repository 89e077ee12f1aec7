#!/usr/bin/env bash
# The daemon's resident memory while it trains, against the size of its data
# shard and model: starts a coordinator and one daemon on loopback, samples
# VmRSS of the daemon during the rounds, and prints the figures.
#   bench/daemon_memory.sh [SHARD (default 0/4)] [MODEL (default mlp:784-128-10)]
# DAEMON_ARGS adds daemon flags, e.g. DAEMON_ARGS=--inference-socket=/tmp/i.sock.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
shard="${1:-0/4}" model="${2:-mlp:784-128-10}"
data=/usr/share/datasets/fashion-mnist
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
port=$((20000 + RANDOM % 20000))
"$build/coordinator/fedsgd-coordinator" --listen "tcp://127.0.0.1:$port" \
  --publish "tcp://127.0.0.1:$((port + 1))" --http "127.0.0.1:0" --db "$dir/m.db" \
  --model "$model" --rounds 8 --min-devices 1 --local-epochs 1 > /dev/null 2> "$dir/c.log" &
"$build/daemon/fedsgd-daemon" --coordinator "tcp://127.0.0.1:$port" --id mem --data "$data" \
  --shard "$shard" --threads 2 --exit-when-done ${DAEMON_ARGS:-} 2> "$dir/d.log" &
pid=$!
peak=0 anon=0 file=0 pss=0
while kill -0 "$pid" 2>/dev/null; do
  if grep -q 'round 1:' "$dir/d.log" 2>/dev/null; then   # data loaded and sharded, training
    read -r rss a f < <(awk '/^VmRSS/ {r=$2} /^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {print r+0, a+0, f+0}' \
                          "/proc/$pid/status" 2>/dev/null || echo "0 0 0")
    if (( rss > peak )); then
      peak=$rss anon=$a file=$f
      pss=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
    fi
  fi
  sleep 0.05
done
samples=$(sed -n 's/.*with \([0-9]*\) samples.*/\1/p' "$dir/d.log" | head -1)
params=$(sed -n 's/.*(\([0-9]*\) parameters).*/\1/p' "$dir/c.log" | head -1)
python3 - "$peak" "$samples" "$params" "$anon" "$file" "${pss:-0}" <<'PY'
import sys
rss_kib, samples, params, anon_kib, file_kib, pss_kib = (int(x) for x in sys.argv[1:7])
# Pixels stay bytes (784 per image), labels are floats; the held-out split and
# the trainer's shuffled order are index arrays (8 bytes per sample each).
data_mib = samples * (784 + 4) / 2**20
index_mib = samples * 2 * 8 / 2**20
# The daemon holds the global model (one copy, shared by the network thread,
# the training job and the inference endpoint: daemon/shared_params.h), the
# model it trains (which becomes the update), and a weight snapshot and a
# gradient per hogwild thread (2 threads): 6 model-sized vectors.
model_mib = 6 * params * 4 / 2**20
rss_mib = rss_kib / 1024
print(f"daemon resident while training: {rss_mib:.1f} MiB "
      f"({anon_kib / 1024:.1f} MiB private, {file_kib / 1024:.1f} MiB mapped files: code and shared libraries)")
# Library pages other processes map too (the coordinator's libstdc++, libc,
# libzmq here) count in full above; PSS divides them among the sharers.
print(f"  proportional set size (shared pages split among their processes): {pss_kib / 1024:.1f} MiB")
print(f"  data shard: {samples} samples = {data_mib:.1f} MiB (+ {index_mib:.1f} MiB of indices); "
      f"model-sized buffers ~{model_mib:.1f} MiB")
print(f"  private memory besides data, indices and model: "
      f"{anon_kib / 1024 - data_mib - index_mib - model_mib:.1f} MiB")
PY
