#!/usr/bin/env bash
# What `mnist tune` costs and what it finds. A benchmark, not a test: the study takes many minutes.
#
#   profiling/tune_bench.sh overhead [--trials N (10)] [--binary PATH]
#     N trials of one fixed configuration through `mnist tune`, against the same N `mnist train`
#     runs one after another: the difference per trial is tune's overhead (Python and Optuna's
#     start, the check of the space, the storage, the polling of metrics.jsonl, tune.md).
#   profiling/tune_bench.sh study [--trials N (30)] [--epochs E (5)] [--seed S (1)] [--binary PATH]
#     a real study of the default MLP space on the CPU, E epochs a trial, then the default
#     configuration trained for the same E epochs: best validation and test accuracy side by side.
#
# Everything goes to runs/tune-bench-<time>/. --binary: another build of mnist (default
# build/mnist), e.g. a copy that a rebuild of the tree during the run does not replace.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
[[ $mode == overhead || $mode == study ]] || { echo "tune_bench: give overhead or study first" >&2; exit 2; }
shift
binary=build/mnist
trials=
epochs=5
seed=1
while (($#)); do
  case $1 in
    --trials) trials=${2:?--trials needs a number}; shift 2 ;;
    --epochs) epochs=${2:?--epochs needs a number}; shift 2 ;;
    --seed) seed=${2:?--seed needs a number}; shift 2 ;;
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    *) echo "tune_bench: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -x $binary ]] || { echo "tune_bench: $binary not built; run bash .ci/setup" >&2; exit 1; }
out=runs/tune-bench-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
now() { date +%s%N; }
seconds() { python3 -c 'import sys; print(f"{(int(sys.argv[2]) - int(sys.argv[1])) / 1e9:.2f}")' "$1" "$2"; }

if [[ $mode == overhead ]]; then
  trials=${trials:-10}
  # One configuration, a fixed "space": every trial trains exactly what the direct runs train.
  options=(--device cpu --train-subset 5000 --epochs 2 --seed 1)
  echo '{"hidden": "64"}' >"$out/space.json"
  start=$(now)
  for ((i = 0; i < trials; i++)); do
    "$binary" train "${options[@]}" --hidden 64 --no-report --out "$out/direct/$i" >/dev/null
  done
  direct=$(seconds "$start" "$(now)")
  start=$(now)
  "$binary" tune --trials "$trials" --pruner none --space "$out/space.json" --out "$out/tune" -- "${options[@]}" \
    >"$out/tune.log"
  tuned=$(seconds "$start" "$(now)")
  python3 - "$trials" "$direct" "$tuned" <<'PY'
import sys
n, direct, tuned = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"{n} trials: mnist train alone {direct:.2f} s ({direct / n:.3f} s each), through mnist tune {tuned:.2f} s "
      f"({tuned / n:.3f} s each): overhead {(tuned - direct) / n:.3f} s a trial")
PY
  exit 0
fi

trials=${trials:-30}
start=$(now)
"$binary" tune --trials "$trials" --seed "$seed" --out "$out/study" -- --device cpu --epochs "$epochs" \
  | tee "$out/tune.log"
echo "study: $(seconds "$start" "$(now)") s"
start=$(now)
"$binary" train --device cpu --epochs "$epochs" --no-report --out "$out/default" >"$out/default.log"
echo "default configuration, $epochs epochs: $(seconds "$start" "$(now)") s"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
tune = json.load(open(f"{out}/study/tune.json"))
states = {}
for t in tune["trials"]:
    states[t["state"]] = states.get(t["state"], 0) + 1
best = tune["best"]
default = [json.loads(line) for line in open(f"{out}/default/metrics.jsonl")]
test = json.load(open(f"{out}/default/report.json"))["test"]["accuracy"]
print("trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())))
print(f"best trial {best['number']}: validation {100 * best['value']:.2f}%, test {100 * best['test_accuracy']:.2f}%")
print(f"default configuration: validation {100 * max(e['val_accuracy'] for e in default):.2f}%, test {100 * test:.2f}%")
print("best trial's command: mnist train " + " ".join(best["train_args"]))
PY
