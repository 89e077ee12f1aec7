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
#                        [--gateways G] [--no-build] [-- COORDINATOR FLAGS...]
#   --update-codec fp32|fp16|int8|topk:F compresses the daemons' updates
#   (the coordinator's flag; docs/protocol.md "Tensor encodings").
#   --async runs asynchronous buffered aggregation (FedBuff), a new model
#   version every --buffer K updates (docs/protocol.md "Asynchronous mode").
#   --stragglers N:F makes the last N daemons F times slower per mini-batch
#   (the daemons' --slowdown, a simulation aid); --slowdown S slows every
#   daemon S times (the stragglers S x F), so that N daemons sharing this
#   machine's cores stand for N boards that each have their own.
#   --gateways G (1 <= G <= N) runs a two-tier fleet: the coordinator is
#   the root, with --min-devices G, and G gateways (fedsgd-coordinator
#   --upstream) take part in it as devices gw0..gw<G-1>, each serving its
#   own boards and forwarding one pre-aggregated update per round. Device i
#   joins gateway i mod G (round-robin: board counts differ by one at most)
#   and still trains on shard i/N, the same shards as the flat fleet.
#   Gateway g listens on port P+2+2g, publishes on P+3+2g, serves HTTP on
#   the --http host at its port + 1 + g (an --http port of 0 gives each a
#   free port), and writes gateway<g>.db, gateway<g>.log (its round lines)
#   and gateway<g>.json (its summary) in DIR. With --secure each gateway
#   has its own pair gw<g>.key*, enrolled in the root's authorized-keys/,
#   and is the CURVE server of its boards, whose keys are in
#   gw<g>-authorized/ (the root's directory then holds the gateways only).
#   The plan is the root's: flags after "--" go to the root only.
#   G = 0 (the default) is the flat fleet.
#   --no-build uses the binaries in --build as they are, even when sources
#   are newer (default: rebuild them first).
#   Flags after "--" go to fedsgd-coordinator as they are, e.g.
#   -- --dp-noise-multiplier 1.0 --dp-clip 1.0
set -euo pipefail
cd "$(dirname "$0")/.."

devices=4 rounds=10 split=iid model=mlp:784-128-10 local_epochs=1 batch=32 lr=0.05
threads=1 mode=hogwild port=7070 http=127.0.0.1:8080 dir="" build=build secure=0 stragglers=0:1 base_slowdown=1
gateways=0 no_build=0
data=/usr/share/datasets/fashion-mnist

# The comment block above, lines 2 up to the first line that is not a comment.
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
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
    --gateways) gateways=$2; shift 2 ;;
    --no-build) no_build=1; shift ;;
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
[[ "$gateways" =~ ^(0|[1-9][0-9]*)$ ]] ||
  { echo "run-fleet: --gateways must be a non-negative integer (0: no gateways)" >&2; exit 2; }
(( gateways <= devices )) ||
  { echo "run-fleet: --gateways $gateways: only $devices device(s), each gateway needs one at least" >&2; exit 2; }
if (( gateways > 0 )); then
  if ! [[ "$port" =~ ^[1-9][0-9]*$ ]] || (( port + 1 + 2 * gateways > 65535 )); then
    echo "run-fleet: --port $port: the root and $gateways gateway(s) need ports P..P+$((1 + 2 * gateways)), at most 65535" >&2
    exit 2
  fi
  http_host=${http%:*} http_port=${http##*:}
  if ! [[ "$http" == *:* && "$http_port" =~ ^[0-9]+$ ]] || (( http_port > 0 && http_port + gateways > 65535 )); then
    echo "run-fleet: --http $http: want HOST:PORT, with room for $gateways gateway port(s) after PORT" >&2
    exit 2
  fi
fi

scripts/install-deps.sh
if [[ $no_build -eq 1 ]]; then
  [[ -x "$build/daemon/fedsgd-daemon" && -x "$build/coordinator/fedsgd-coordinator" ]] ||
    { echo "run-fleet: --no-build: no fedsgd-daemon and fedsgd-coordinator in $build/" >&2; exit 2; }
elif [[ ! -x "$build/daemon/fedsgd-daemon" || ! -x "$build/coordinator/fedsgd-coordinator" ]] ||
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
if [[ $secure -eq 1 && $gateways -gt 0 ]]; then
  # Two tiers: the root enrols the gateways, each gateway enrols its boards.
  mkdir -p "$dir/authorized-keys"
  [[ -f $dir/coordinator.key_secret ]] ||
    "$build/coordinator/fedsgd-coordinator" keygen --out "$dir/coordinator" > /dev/null
  for ((g = 0; g < gateways; g++)); do
    mkdir -p "$dir/gw$g-authorized"
    [[ -f $dir/gw$g.key_secret ]] ||
      "$build/coordinator/fedsgd-coordinator" keygen --out "$dir/gw$g" > /dev/null
    cp "$dir/gw$g.key" "$dir/authorized-keys/gw$g.key"
  done
  for ((i = 0; i < devices; i++)); do
    [[ -f $dir/dev$i.key_secret ]] || "$build/daemon/fedsgd-daemon" keygen --out "$dir/dev$i" > /dev/null
    cp "$dir/dev$i.key" "$dir/gw$((i % gateways))-authorized/dev$i.key"
  done
  coordinator_keys=(--curve-key "$dir/coordinator.key_secret" --authorized-keys "$dir/authorized-keys")
  echo "run-fleet: CURVE on: keys in $dir, $gateways gateway(s) enrolled in $dir/authorized-keys," \
       "each gateway's devices in $dir/gw<g>-authorized"
elif [[ $secure -eq 1 ]]; then
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

if (( gateways > 0 )); then
  echo "run-fleet: $devices devices over $gateways gateway(s) (device i joins gw(i mod $gateways))," \
       "$rounds rounds, split $split, model $model; logs and databases in $dir"
else
  echo "run-fleet: $devices devices, $rounds rounds, split $split, model $model; logs and database in $dir"
fi
root_devices=$devices
(( gateways > 0 )) && root_devices=$gateways
"$build/coordinator/fedsgd-coordinator" \
  --listen "tcp://127.0.0.1:$port" --publish "tcp://127.0.0.1:$((port + 1))" --http "$http" \
  --db "$dir/fleet.db" --new-run --model "$model" --rounds "$rounds" --min-devices "$root_devices" \
  --local-epochs "$local_epochs" --batch "$batch" --lr "$lr" --eval-data "$data" \
  "${coordinator_keys[@]}" "${coordinator_flags[@]}" > "$dir/summary.json" &
coordinator=$!
pids+=("$coordinator")

# Gateways: each a fedsgd-coordinator that serves its boards and is one
# device (gwG) of the root. It takes its plan from the root: no plan flags.
gateway_pids=()
for ((g = 0; g < gateways; g++)); do
  boards=$(( (devices - 1 - g) / gateways + 1 ))  # devices i < N with i mod G = g
  gateway_http=$http_host:0
  (( http_port > 0 )) && gateway_http=$http_host:$((http_port + 1 + g))
  gateway_keys=()
  [[ $secure -eq 1 ]] &&
    gateway_keys=(--upstream-key "$dir/gw$g.key_secret" --upstream-server-key "$dir/coordinator.key"
                  --curve-key "$dir/gw$g.key_secret" --authorized-keys "$dir/gw$g-authorized")
  "$build/coordinator/fedsgd-coordinator" \
    --upstream "tcp://127.0.0.1:$port" --gateway-id "gw$g" \
    --listen "tcp://127.0.0.1:$((port + 2 + 2 * g))" --publish "tcp://127.0.0.1:$((port + 3 + 2 * g))" \
    --http "$gateway_http" --db "$dir/gateway$g.db" --new-run --min-devices "$boards" \
    "${gateway_keys[@]}" > "$dir/gateway$g.json" 2> "$dir/gateway$g.log" &
  gateway_pids+=("$!")
  pids+=("$!")
done

for ((i = 0; i < devices; i++)); do
  daemon_port=$port coordinator_key=$dir/coordinator.key
  if (( gateways > 0 )); then
    daemon_port=$((port + 2 + 2 * (i % gateways))) coordinator_key=$dir/gw$((i % gateways)).key
  fi
  [[ $secure -eq 1 ]] && daemon_keys=(--key "$dir/dev$i.key_secret" --coordinator-key "$coordinator_key")
  pace=(--slowdown "$base_slowdown")
  (( i >= devices - slow_devices )) &&
    pace=(--slowdown "$(awk -v a="$base_slowdown" -v b="$slowdown" 'BEGIN { print a * b }')")
  "$build/daemon/fedsgd-daemon" --coordinator "tcp://127.0.0.1:$daemon_port" --id "dev$i" \
    --data "$data" --shard "$i/$devices" --split "$split" --threads "$threads" --mode "$mode" \
    --exit-when-done "${daemon_keys[@]}" "${pace[@]}" 2> "$dir/dev$i.log" &
  pids+=("$!")
done

status=0
gateway_exit=()  # gateway g's exit status, once reaped
if (( gateways > 0 )); then
  # A gateway that dies would leave the root waiting for it for ever: watch
  # the gateways while the root runs. One that exits 0 has seen the run end,
  # which the root then follows within moments.
  ended_at=0
  while kill -0 "$coordinator" 2>/dev/null; do
    for ((g = 0; g < gateways; g++)); do
      [[ -z "${gateway_exit[g]:-}" ]] || continue
      kill -0 "${gateway_pids[g]}" 2>/dev/null && continue
      gateway_exit[g]=0
      wait "${gateway_pids[g]}" || gateway_exit[g]=$?
      if [[ ${gateway_exit[g]} -ne 0 ]]; then
        echo "run-fleet: gateway gw$g exited with status ${gateway_exit[g]} while the root was running;" \
             "see $dir/gateway$g.log:" >&2
        tail -n 5 "$dir/gateway$g.log" >&2
        exit 1
      fi
      (( ended_at > 0 )) || ended_at=$SECONDS
    done
    if (( ended_at > 0 && SECONDS - ended_at > 30 )); then
      echo "run-fleet: a gateway ended its run 30 s ago but the root is still running; stopping the fleet" >&2
      exit 1
    fi
    sleep 0.5
  done
fi
wait "$coordinator" || status=$?
if [[ $status -eq 0 ]]; then
  echo "run-fleet: done: $(cat "$dir/summary.json")"
else
  echo "run-fleet: the coordinator exited with status $status; gateway and daemon logs are in $dir" >&2
fi
# Gateways end with the root's run; give them 10 s to do so.
for ((g = 0; g < gateways; g++)); do
  if [[ -z "${gateway_exit[g]:-}" ]]; then
    pid=${gateway_pids[g]}
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "run-fleet: gateway gw$g still running 10 s after the root's run ended; stopping it" \
           "(see $dir/gateway$g.log)" >&2
      [[ $status -ne 0 ]] || status=1
      continue
    fi
    gateway_exit[g]=0
    wait "$pid" || gateway_exit[g]=$?
  fi
  if [[ ${gateway_exit[g]} -ne 0 ]]; then
    echo "run-fleet: gateway gw$g exited with status ${gateway_exit[g]}; see $dir/gateway$g.log" >&2
    [[ $status -ne 0 ]] || status=1
  fi
done
exit "$status"
