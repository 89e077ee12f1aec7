#!/usr/bin/env bash
# The main job: a real federation on this machine. Installs what is missing,
# builds, then starts one fedsgd-coordinator and N fedsgd-daemon processes on
# loopback, each daemon training on its own shard of Fashion-MNIST. Prints
# one line per round; stops everything at the end or on Ctrl-C. --secure
# makes CURVE keys in the run directory (coordinator.key*, devN.key*, an
# authorized-keys/ directory with every device enrolled) and runs the same
# fleet encrypted and authenticated (docs/security.md).
#
#   scripts/run-fleet.sh [--devices N] [--rounds R] [--split iid|labels:K|dirichlet:A]
#                        [--model M] [--local-epochs E] [--batch B] [--lr LR]
#                        [--threads T] [--mode hogwild|sync] [--port P] [--http ADDR:PORT]
#                        [--dir DIR] [--build DIR] [--secure] [--update-codec C]
#                        [--async] [--buffer K] [--stragglers N:F] [--slowdown S]
#                        [-- COORDINATOR FLAGS...]
#   --update-codec fp32|fp16|int8|topk:F compresses the daemons' updates
#   (the coordinator's flag; docs/protocol.md "Tensor encodings").
#   --async runs asynchronous buffered aggregation (FedBuff), a new model
#   version every --buffer K updates (docs/protocol.md "Asynchronous mode").
#   --stragglers N:F makes the last N daemons F times slower per mini-batch
#   (the daemons' --slowdown, a simulation aid); --slowdown S slows every
#   daemon S times (the stragglers S x F), so that N daemons sharing this
#   machine's cores stand for N boards that each have their own.
#   Flags after "--" go to fedsgd-coordinator as they are, e.g.
#   -- --dp-noise-multiplier 1.0 --dp-clip 1.0
set -euo pipefail
cd "$(dirname "$0")/.."

devices=4 rounds=10 split=iid model=mlp:784-128-10 local_epochs=1 batch=32 lr=0.05
threads=1 mode=hogwild port=7070 http=127.0.0.1:8080 dir="" build=build secure=0 stragglers=0:1 base_slowdown=1
data=/usr/share/datasets/fashion-mnist

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
coordinator_flags=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --devices) devices=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --split) split=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --local-epochs) local_epochs=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --http) http=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --secure) secure=1; shift ;;
    --update-codec) coordinator_flags+=(--update-codec "$2"); shift 2 ;;
    --async) coordinator_flags+=(--async); shift ;;
    --buffer) coordinator_flags+=(--buffer "$2"); shift 2 ;;
    --stragglers) stragglers=$2; shift 2 ;;
    --slowdown) base_slowdown=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; coordinator_flags+=("$@"); break ;;
    *) echo "run-fleet: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$devices" =~ ^[1-9][0-9]*$ ]] || { echo "run-fleet: --devices must be a positive integer" >&2; exit 2; }
[[ "$stragglers" =~ ^([0-9]+):([0-9]+(\.[0-9]+)?)$ ]] ||
  { echo "run-fleet: --stragglers must be N:F, e.g. 3:10 (N devices F times slower)" >&2; exit 2; }
slow_devices=${BASH_REMATCH[1]} slowdown=${BASH_REMATCH[2]}
[[ "$base_slowdown" =~ ^[0-9]+(\.[0-9]+)?$ ]] ||
  { echo "run-fleet: --slowdown must be a number >= 1" >&2; exit 2; }
(( slow_devices <= devices )) ||
  { echo "run-fleet: --stragglers $stragglers: only $devices device(s)" >&2; exit 2; }

scripts/install-deps.sh
if [[ ! -x "$build/daemon/fedsgd-daemon" || ! -x "$build/coordinator/fedsgd-coordinator" ]] ||
   [[ -n "$(find shared daemon coordinator CMakeLists.txt -newer "$build/daemon/fedsgd-daemon" -print -quit)" ]]; then
  echo "run-fleet: building into $build/ ..."
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" -j "$(nproc)" --target fedsgd-daemon fedsgd-coordinator >/dev/null
fi

dir=${dir:-$(mktemp -d -t fedsgd-fleet.XXXXXX)}
mkdir -p "$dir"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "run-fleet: interrupted, stopping the fleet"; exit 130' INT TERM

coordinator_keys=() daemon_keys=()
if [[ $secure -eq 1 ]]; then
  # Enrolment as on real boards: each device makes its pair, its public half
  # is copied into the coordinator's directory under the device's id. Keys
  # already in $dir (an earlier run) are kept: keygen never overwrites one.
  mkdir -p "$dir/authorized-keys"
  [[ -f $dir/coordinator.key_secret ]] ||
    "$build/coordinator/fedsgd-coordinator" keygen --out "$dir/coordinator" > /dev/null
  for ((i = 0; i < devices; i++)); do
    [[ -f $dir/dev$i.key_secret ]] || "$build/daemon/fedsgd-daemon" keygen --out "$dir/dev$i" > /dev/null
    cp "$dir/dev$i.key" "$dir/authorized-keys/dev$i.key"
  done
  coordinator_keys=(--curve-key "$dir/coordinator.key_secret" --authorized-keys "$dir/authorized-keys")
  echo "run-fleet: CURVE on: keys in $dir, $devices device(s) enrolled in $dir/authorized-keys"
fi

echo "run-fleet: $devices devices, $rounds rounds, split $split, model $model; logs and database in $dir"
"$build/coordinator/fedsgd-coordinator" \
  --listen "tcp://127.0.0.1:$port" --publish "tcp://127.0.0.1:$((port + 1))" --http "$http" \
  --db "$dir/fleet.db" --new-run --model "$model" --rounds "$rounds" --min-devices "$devices" \
  --local-epochs "$local_epochs" --batch "$batch" --lr "$lr" --eval-data "$data" \
  "${coordinator_keys[@]}" "${coordinator_flags[@]}" > "$dir/summary.json" &
coordinator=$!
pids+=("$coordinator")

for ((i = 0; i < devices; i++)); do
  [[ $secure -eq 1 ]] && daemon_keys=(--key "$dir/dev$i.key_secret" --coordinator-key "$dir/coordinator.key")
  pace=(--slowdown "$base_slowdown")
  (( i >= devices - slow_devices )) &&
    pace=(--slowdown "$(awk -v a="$base_slowdown" -v b="$slowdown" 'BEGIN { print a * b }')")
  "$build/daemon/fedsgd-daemon" --coordinator "tcp://127.0.0.1:$port" --id "dev$i" \
    --data "$data" --shard "$i/$devices" --split "$split" --threads "$threads" --mode "$mode" \
    --exit-when-done "${daemon_keys[@]}" "${pace[@]}" 2> "$dir/dev$i.log" &
  pids+=("$!")
done

status=0
wait "$coordinator" || status=$?
if [[ $status -eq 0 ]]; then
  echo "run-fleet: done: $(cat "$dir/summary.json")"
else
  echo "run-fleet: the coordinator exited with status $status; daemon logs are in $dir" >&2
fi
exit "$status"
