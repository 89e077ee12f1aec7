#!/usr/bin/env bash
# Learning quality of the federation (issue 9): runs the real coordinator and
# 10 daemons (processes, loopback, Fashion-MNIST, MLP 784-128-10, batch 32,
# lr 0.05, 1 local epoch) per scenario and prints one table: test accuracy
# after the last round, the first round reaching 0.85 ("-": never), the
# federated (devices' held-out) min / median accuracy of the last round, and
# wall seconds. A coordinator option this build does not have is reported as
# "n/a (option missing)" rather than aborting the table.
#
#   bench/federated_quality.sh [--rounds R] [--only REGEX] [--quick] [--build DIR]
#
#   --rounds R     rounds per scenario (default 40)
#   --only REGEX   run only the scenarios whose name matches (grep -E)
#   --quick        0.5 local epoch instead of 1 (where a scenario does not
#                  set its own): a faster, rougher table
# The adaptive server optimisers run with --server-lr 0.01 (Reddi et al. 2021
# tune it in [1e-3, 1]; FedAvg's 1.0 makes FedAdam diverge here).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=40 only="" quick=0 build=build
data=/usr/share/datasets/fashion-mnist
devices=10
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --build) build=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "federated_quality: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
local_epochs=1
if [[ $quick -eq 1 ]]; then local_epochs=0.5; fi
coordinator=$build/coordinator/fedsgd-coordinator
daemon=$build/daemon/fedsgd-daemon
[[ -x $coordinator && -x $daemon ]] || { echo "federated_quality: build $coordinator and $daemon first" >&2; exit 2; }

# name | split | coordinator options | attack | attackers (the first N devices)
scenarios=(
  "iid/mean|iid|||0"
  "labels:2/mean|labels:2|||0"
  "dirichlet:0.5/mean|dirichlet:0.5|||0"
  "iid/fedavgm|iid|--server-optimizer momentum||0"
  "labels:2/fedavgm|labels:2|--server-optimizer momentum||0"
  "dirichlet:0.5/fedavgm|dirichlet:0.5|--server-optimizer momentum||0"
  "iid/fedadam|iid|--server-optimizer adam --server-lr 0.01||0"
  "labels:2/fedadam|labels:2|--server-optimizer adam --server-lr 0.01||0"
  "dirichlet:0.5/fedadam|dirichlet:0.5|--server-optimizer adam --server-lr 0.01||0"
  "iid/fedprox|iid|--prox-mu 0.01||0"
  # iid with more local work per round: 3 local epochs.
  "iid/3-local-epochs|iid|--local-epochs 3||0"
  "iid/fedavgm-3-local-epochs|iid|--server-optimizer momentum --local-epochs 3||0"
  "labels:2/fedprox|labels:2|--prox-mu 0.01||0"
  "dirichlet:0.5/fedprox|dirichlet:0.5|--prox-mu 0.01||0"
  # Label skew with less local drift: 50 local steps (of ~170 in an epoch).
  "labels:2/local-steps-50|labels:2|--local-steps 50||0"
  # Label skew with logit adjustment (Menon et al. 2021; FedLC).
  "labels:2/logit-adjustment|labels:2|--logit-adjustment 1||0"
  "labels:2/logit-adjustment-0.5|labels:2|--logit-adjustment 0.5||0"
  "labels:2/logit-adjustment-0.25|labels:2|--logit-adjustment 0.25||0"
  "dirichlet:0.5/logit-adjustment|dirichlet:0.5|--logit-adjustment 1||0"
  "labels:2/logit-adjustment+fedavgm|labels:2|--logit-adjustment 1 --server-optimizer momentum||0"
)
for attack in sign-flip scale:10 gaussian:1; do
  # The plain mean without the default norm bounding, then each rule with it.
  scenarios+=("2-attackers-$attack/mean-unbounded|iid|--aggregator mean --norm-bound off|$attack|2")
  for rule in mean median trimmed_mean krum; do
    scenarios+=("2-attackers-$attack/$rule|iid|--aggregator $rule|$attack|2")
  done
done
# The hostile single update: one device, 1e6 x its delta (the largest scale
# --simulate-attack allows), under the default configuration.
scenarios+=("1-hostile-scale:1e6/default|iid||scale:1e6|1")

work=$(mktemp -d -t fedsgd-quality.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

results=()
port=$((20000 + RANDOM % 20000))
echo "federated_quality: $rounds rounds per scenario, $devices devices; logs in $work" >&2
for entry in "${scenarios[@]}"; do
  IFS='|' read -r name split options attack attackers <<< "$entry"
  if [[ -n $only ]] && ! grep -qE -- "$only" <<< "$name"; then continue; fi
  dir=$work/${name//[:\/]/_}
  mkdir -p "$dir"
  # shellcheck disable=SC2086  # options are words
  if ! "$coordinator" --check-config --db "$dir/q.db" $options > "$dir/check.log" 2>&1; then
    echo "federated_quality: $name: n/a (option missing): $(tail -1 "$dir/check.log")" >&2
    results+=("$name|n/a (option missing)|||||")
    continue
  fi
  port=$((port + 3))
  epochs_flag=(--local-epochs "$local_epochs")  # unless the scenario sets its own
  if grep -q -- '--local-epochs' <<< "$options"; then epochs_flag=(); fi
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$coordinator" --listen "tcp://127.0.0.1:$port" --publish "tcp://127.0.0.1:$((port + 1))" \
    --http "127.0.0.1:$((port + 2))" --db "$dir/q.db" --new-run --rounds "$rounds" \
    --min-devices "$devices" "${epochs_flag[@]}" --batch 32 --lr 0.05 \
    --round-timeout 120 --eval-data "$data" $options > "$dir/summary.json" 2> "$dir/coordinator.log" &
  cpid=$!
  pids=("$cpid")
  for ((i = 0; i < devices; i++)); do
    attack_flag=()
    if [[ -n $attack && $i -lt $attackers ]]; then attack_flag=(--simulate-attack "$attack"); fi
    "$daemon" --coordinator "tcp://127.0.0.1:$port" --id "dev$i" --data "$data" \
      --shard "$i/$devices" --split "$split" --threads 1 --exit-when-done "${attack_flag[@]}" \
      2> "$dir/dev$i.log" &
    pids+=("$!")
  done
  status=0
  wait "$cpid" || status=$?
  cleanup
  pids=()
  seconds=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
  if [[ $status -ne 0 ]]; then
    echo "federated_quality: $name: the coordinator failed ($status), see $dir/coordinator.log" >&2
    results+=("$name|failed|||||$seconds")
    continue
  fi
  # "round N/R: test accuracy A, test loss L, federated accuracy F (min X, median Y, max Z), ..."
  read -r accuracy first fmin fmedian < <(awk '
    /^round [0-9]+\/[0-9]+: test accuracy/ {
      split($2, rr, "/"); acc = $5; sub(",", "", acc)
      if (first == "" && acc + 0 >= 0.85) first = rr[1] + 0
      last = acc
      if (match($0, /\(min [0-9.]+, median [0-9.]+/)) {
        m = substr($0, RSTART, RLENGTH); split(m, f, /[ ,]+/); fmin = f[2]; fmed = f[4]
      }
    }
    END { print (last == "" ? "-" : last), (first == "" ? "-" : first),
                (fmin == "" ? "-" : fmin), (fmed == "" ? "-" : fmed) }' "$dir/coordinator.log")
  echo "federated_quality: $name: test accuracy $accuracy, first >= 0.85 at round $first, federated min $fmin median $fmedian, $seconds s" >&2
  results+=("$name|$accuracy|$first|$fmin|$fmedian|$seconds")
done

printf '%-34s %-22s %-10s %-8s %-8s %-6s\n' scenario "test acc @$rounds" "1st>=0.85" "fed min" "fed med" "secs"
for r in "${results[@]}"; do
  IFS='|' read -r name accuracy first fmin fmedian seconds <<< "$r"
  printf '%-34s %-22s %-10s %-8s %-8s %-6s\n' "$name" "$accuracy" "${first:--}" "${fmin:--}" \
    "${fmedian:--}" "${seconds:--}"
done
