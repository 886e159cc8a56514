#!/usr/bin/env bash
# A training recipe over several seeds: the mean ± standard deviation of the test accuracy and
# the wall time of each run. A benchmark, not a test: it takes minutes per seed.
#
#   profiling/recipes.sh [--seeds N (5)] [--device cpu] [--binary PATH] [-- mnist train options]
#   e.g. profiling/recipes.sh --seeds 5 -- --lr-schedule cosine --warmup-epochs 1
#
# Each run goes to runs/recipes-<time>/seed-<s>/ (--no-report); the last line is the summary.
# --binary: another build of mnist (default build/mnist), e.g. a copy that a rebuild of the
# tree during the runs does not replace.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=5
device=cpu
binary=build/mnist
while (($#)); do
  case $1 in
    --seeds) seeds=${2:?--seeds needs a number}; shift 2 ;;
    --device) device=${2:?--device needs cpu, gpu or auto}; shift 2 ;;
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --) shift; break ;;
    *) echo "recipes: unknown option $1 (mnist train options go after --)" >&2; exit 2 ;;
  esac
done
[[ -x $binary ]] || { echo "recipes: $binary not built; run bash .ci/setup" >&2; exit 1; }
out=runs/recipes-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
accuracies=()
for ((s = 1; s <= seeds; s++)); do
  start=$(date +%s%N)
  "$binary" train --device "$device" --seed "$s" --no-report --out "$out/seed-$s" "$@" >"$out/seed-$s.log" 2>&1
  tenths=$((($(date +%s%N) - start) / 100000000))
  accuracy=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test"]["accuracy"])' "$out/seed-$s/report.json")
  accuracies+=("$accuracy")
  printf 'seed %d: test accuracy %s, %d.%d s\n' "$s" "$accuracy" $((tenths / 10)) $((tenths % 10))
done
python3 - "${accuracies[@]}" <<'PY'
import statistics, sys
a = [100 * float(x) for x in sys.argv[1:]]
sd = statistics.stdev(a) if len(a) > 1 else 0.0
print(f"{len(a)} seeds: test accuracy {statistics.mean(a):.2f}% ± {sd:.2f} (min {min(a):.2f}, max {max(a):.2f})")
PY
