#!/usr/bin/env bash
# The training benchmark: fedsgd's standalone trainer against PyTorch's CPU
# SGD, same machine, same run. MLP 784-128-10 (ReLU), batch 32, lr 0.05, one
# epoch of Fashion-MNIST. Prints samples/s of each and their ratio, 1 -> 2
# thread scaling of both fedsgd modes, and the GFLOP/s reached against the
# machine's matrix-multiply GFLOP/s for the same shapes.
#
#   bench/train_vs_pytorch.sh            (builds into build/ if needed)
#   BUILD_DIR=build-x REPEAT=3 bench/train_vs_pytorch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
repeat="${REPEAT:-3}"
data=/usr/share/datasets/fashion-mnist

scripts/install-deps.sh --bench >&2
if [[ ! -x "$build/daemon/fedsgd-daemon" || ! -x "$build/bench/fedsgd_network_bench" ]]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >&2
  cmake --build "$build" -j "$(nproc)" --target fedsgd-daemon fedsgd_network_bench >&2
fi

# Best of $repeat runs: the machine is shared, the best run is the least disturbed.
best_of() {
  local lines=()
  for _ in $(seq "$repeat"); do lines+=("$("$@" 2>/dev/null | tail -n 1)"); done
  printf '%s\n' "${lines[@]}" | python3 -c 'import json, sys
runs = [json.loads(l) for l in sys.stdin if l.strip()]
print(json.dumps(max(runs, key=lambda r: r["samples_per_second"])))'
}

fed() {
  best_of "$build/daemon/fedsgd-daemon" train --data "$data" --eval-data "$data" \
    --model mlp:784-128-10 --epochs 1 --batch 32 --lr 0.05 --threads "$1" --mode "$2"
}

echo "running (best of $repeat each)..." >&2
hog1=$(fed 1 hogwild); hog2=$(fed 2 hogwild)
syn1=$(fed 1 sync);    syn2=$(fed 2 sync)
torch2=$(best_of /usr/bin/python3 bench/pytorch_reference.py --data "$data" --threads 2 --batch 32 --lr 0.05)
torch1=$(best_of /usr/bin/python3 bench/pytorch_reference.py --data "$data" --threads 1 --batch 32 --lr 0.05)
gemm=$("$build/bench/fedsgd_network_bench" --benchmark_filter='BM_Gemm' --benchmark_format=json 2>/dev/null)

python3 - "$hog1" "$hog2" "$syn1" "$syn2" "$torch1" "$torch2" "$gemm" <<'PY'
import json, sys
hog1, hog2, syn1, syn2, t1, t2 = (json.loads(a) for a in sys.argv[1:7])
gemm = json.loads(sys.argv[7])
# FLOPs per sample of one SGD step on 784-128-10: forward 2*(784*128 + 128*10),
# backward dW1 = 2*784*128 (no input gradient), dW2 + dA1 = 2*2*128*10.
flops = 2 * (784 * 128 + 128 * 10) + 2 * 784 * 128 + 4 * 128 * 10
gemm_gflops = max(b.get("GFLOP/s", 0) for b in gemm["benchmarks"])
def sps(r): return r["samples_per_second"]
print(f"{'run':<28}{'samples/s':>12}{'test acc':>10}{'GFLOP/s':>10}")
for name, r in [("fedsgd hogwild, 1 thread", hog1), ("fedsgd hogwild, 2 threads", hog2),
                ("fedsgd sync, 1 thread", syn1), ("fedsgd sync, 2 threads", syn2),
                ("pytorch, 1 thread", t1), ("pytorch, 2 threads", t2)]:
    print(f"{name:<28}{sps(r):>12.0f}{r.get('test_accuracy', float('nan')):>10.4f}"
          f"{sps(r) * flops / 1e9:>10.1f}")
print()
print(f"speed-up over PyTorch, 2 threads: hogwild {sps(hog2) / sps(t2):.1f}x, "
      f"sync {sps(syn2) / sps(t2):.1f}x   (target >= 10x)")
print(f"1 -> 2 thread scaling: hogwild {sps(hog2) / sps(hog1):.2f}x, sync {sps(syn2) / sps(syn1):.2f}x,"
      f" pytorch {sps(t2) / sps(t1):.2f}x")
print(f"matrix multiply (Eigen GEMM 128x784 * 784x32, 1 thread): {gemm_gflops:.1f} GFLOP/s; "
      f"hogwild 1 thread reaches {sps(hog1) * flops / 1e9 / gemm_gflops * 100:.0f}% of it, "
      f"2 threads {sps(hog2) * flops / 1e9 / (2 * gemm_gflops) * 100:.0f}% of twice it")
PY
