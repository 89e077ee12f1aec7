#!/usr/bin/env bash
# Stragglers (issue 10): wall time to 0.85 test accuracy for a 10-device
# fleet of which 3 are 10x slower (the daemons' --slowdown, a simulation
# aid), MLP 784-128-10 iid, batch 32, lr 0.05, 1 local epoch, real
# coordinator and daemons on loopback (scripts/run-fleet.sh). Every daemon
# is also slowed --slowdown S times (default 4, the stragglers 4 x 10): ten
# full-speed daemons on this 2-core machine would compete for the cores,
# which ten boards do not, and that would charge the asynchronous mode (which
# keeps the fast devices busy) for the simulation's shared CPU. With S = 4
# the seven fast daemons need 7/4 of a core. Three ways:
#   sync            rounds wait for every device (quorum 1.0)
#   sync-quorum-0.7 rounds close at 7 of 10 updates (the slow devices' work
#                   is lost when a round closes without it), deadline 30 s
#   async           FedBuff: a new version every --buffer updates, stale
#                   updates weighted by (1 + s)^-0.5 (the defaults)
# Prints per way: the versions run, the first version reaching 0.85 and the
# seconds from the first round opening to its commit (both "-" if never),
# the final and best test accuracy, and the whole run's seconds; then the
# speed-up of async over sync. Times come from the round records (SQLite).
#
#   bench/stragglers.sh [--sync-rounds R] [--async-versions V] [--buffer K]
#                       [--stragglers N:F] [--slowdown S] [--only REGEX] [--build DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

sync_rounds=25 async_versions=70 buffer=5 stragglers=3:10 slowdown=4 only="" build=build
while [[ $# -gt 0 ]]; do
  case "$1" in
    --sync-rounds) sync_rounds=$2; shift 2 ;;
    --async-versions) async_versions=$2; shift 2 ;;
    --buffer) buffer=$2; shift 2 ;;
    --stragglers) stragglers=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --slowdown) slowdown=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "stragglers: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
command -v sqlite3 >/dev/null || { echo "stragglers: needs sqlite3 (scripts/install-deps.sh)" >&2; exit 2; }

ways=(
  "sync|$sync_rounds|"
  "sync-quorum-0.7|$sync_rounds|-- --quorum 0.7 --round-timeout 30"
  "async|$async_versions|--async --buffer $buffer"
)
out=$(mktemp -d -t fedsgd-stragglers.XXXXXX)
printf '%-16s %8s %14s %12s %9s %9s %9s\n' way versions "first >= 0.85" "seconds to" final best "run s"
declare -A to85
for way in "${ways[@]}"; do
  IFS='|' read -r name rounds flags <<<"$way"
  [[ -n $only && ! $name =~ $only ]] && continue
  # shellcheck disable=SC2086  # the flags are words
  scripts/run-fleet.sh --devices 10 --rounds "$rounds" --stragglers "$stragglers" --slowdown "$slowdown" \
    --dir "$out/$name" --port 17270 --http 127.0.0.1:0 $flags > "$out/$name.log" 2>&1 ||
    { echo "stragglers: $name failed; see $out/$name.log" >&2; continue; }
  db=$out/$name/fleet.db
  read -r first seconds < <(sqlite3 -separator ' ' "$db" \
    "SELECT IFNULL(MIN(round), '-'), CASE WHEN COUNT(*) > 0 THEN printf('%.1f', MIN(finished_at) - (SELECT started_at FROM rounds WHERE round = 1)) ELSE '-' END
       FROM rounds WHERE test_accuracy >= 0.85")
  read -r final best < <(sqlite3 -separator ' ' "$db" \
    "SELECT printf('%.4f', (SELECT test_accuracy FROM rounds ORDER BY round DESC LIMIT 1)), printf('%.4f', MAX(test_accuracy)) FROM rounds")
  run=$(python3 -c 'import json,sys; print("%.1f" % json.load(open(sys.argv[1]))["seconds"])' "$out/$name/summary.json")
  printf '%-16s %8s %14s %12s %9s %9s %9s\n' "$name" "$rounds" "$first" "$seconds" "$final" "$best" "$run"
  to85[$name]=$seconds
done
if [[ ${to85[sync]:--} != - && ${to85[async]:--} != - ]]; then
  python3 -c 'import sys; print("async reaches 0.85 %.2fx faster than sync (quorum 1.0)" % (float(sys.argv[1]) / float(sys.argv[2])))' \
    "${to85[sync]}" "${to85[async]}"
fi
echo "logs and databases: $out"
