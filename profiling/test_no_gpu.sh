#!/usr/bin/env bash
# CTest `profiling_no_gpu`: on a machine without a GPU, every profiling script, bench_train and
# bench_cnn must say so in one line and exit non-zero (never build, never a traceback). On a
# machine where nvidia-smi lists a GPU it exits 77, which CTest reports as SKIPPED.
#
#   profiling/test_no_gpu.sh BENCH_TRAIN_BINARY [BENCH_CNN_BINARY]
#
# The peers run with $PYTHON (default python3): with or without torch and jax installed, each
# must print one RESULT ... error="..." line.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench_train=${1:?usage: test_no_gpu.sh BENCH_TRAIN_BINARY [BENCH_CNN_BINARY]}
bench_cnn=${2:-}
python=${PYTHON:-python3}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "a GPU is present: the no-GPU behaviour cannot be checked here (SKIPPED)"
  exit 77
fi

failures=0
output=""
# check NAME COMMAND...: exit status non-zero, exactly one line of output (stdout and stderr,
# left in $output).
check() {
  local name=$1 status lines line
  shift
  output=$(cd "$here/.." && "$@" 2>&1)
  status=$?
  lines=$(grep -c '' <<<"$output")
  if ((status != 0)) && ((lines == 1)) && [[ -n $output ]]; then
    echo "ok    $name: exit $status: $output"
  else
    echo "FAIL  $name: exit $status, $lines line(s) of output:"
    while IFS= read -r line; do echo "      $line"; done <<<"$output"
    failures=$((failures + 1))
  fi
}

# A peer's one line must also be its RESULT line with the reason.
check_peer() {
  check "$@"
  if ! grep -q '^RESULT system=[^ ]* error=".*"$' <<<"$output"; then
    echo "FAIL  $1: not a RESULT ... error=\"...\" line"
    failures=$((failures + 1))
  fi
}

check bench_train "$bench_train" --epochs 1
if [[ -n $bench_cnn ]]; then check bench_cnn "$bench_cnn" --epochs 1; fi
check bench.sh bash "$here/bench.sh"
check nsys.sh bash "$here/nsys.sh"
check ncu.sh bash "$here/ncu.sh"
check compare.sh bash "$here/compare.sh" --epochs 1
check "compare.sh --model cnn" bash "$here/compare.sh" --model cnn --epochs 1
check gpu_session.sh bash "$here/gpu_session.sh"
if command -v "$python" >/dev/null 2>&1; then
  check_peer "torch_mlp.py --mode eager" "$python" "$here/peers/torch_mlp.py" --mode eager --epochs 1
  check_peer "torch_mlp.py --mode compile" "$python" "$here/peers/torch_mlp.py" --mode compile --epochs 1
  check_peer jax_mlp.py "$python" "$here/peers/jax_mlp.py" --epochs 1
  check_peer "torch_mlp.py --model cnn" "$python" "$here/peers/torch_mlp.py" --model cnn --epochs 1
  check_peer "jax_mlp.py --model cnn" "$python" "$here/peers/jax_mlp.py" --model cnn --epochs 1
else
  echo "skip  the peers: $python not found"
fi

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all scripts fail in one line without a GPU"
