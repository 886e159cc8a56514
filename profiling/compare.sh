#!/usr/bin/env bash
# One-run comparison on this GPU: our trainer (bench_train) against PyTorch (eager and
# torch.compile) and JAX training the same model on the same data, printed as one markdown table.
#
#   profiling/compare.sh [--epochs 10] [--rounds 2] [--tf32] [--model cnn] [--run-timeout 300]
#
# --model cnn compares the CNN of `mnist train --model cnn` instead (ours through bench_cnn,
# which times epochs 2.. of epochs+1; PyTorch and JAX through torch_mlp.py and jax_mlp.py with
# --model cnn).
#
# The systems run one after another, interleaved over the rounds (ours, torch eager, torch
# compile, jax, then again), so a drift of the GPU's clocks or temperature shows in every
# system's spread instead of in one system's number. Each run trains one warm-up epoch and then
# --epochs timed epochs and reports the median epoch; the table gives, per system, the median
# over the rounds, the images/s at that median, the test accuracy after the epochs+1 epochs of
# each round, and the time relative to ours (above 1: slower than ours). Every system times an
# epoch the same way: device synchronized, host clock, the epoch including its one copy of the
# loss to the host, device synchronized, host clock.
#
# The peers run with $PYTHON (default python3 on PATH: the one that has torch and jax). A peer
# that cannot run (no torch, no jax, torch too old to compile, ...) gets a row saying why and
# never fails the script. Each run may take --run-timeout seconds (default 300, or
# $MNIST_COMPARE_RUN_TIMEOUT); one that takes longer is stopped and its row says so. Stopped
# itself (SIGTERM, SIGINT: a caller's time limit, Ctrl-C), the script still prints the table of
# the runs it finished, then exits 143 (130). Logs and every RESULT line:
# runs/compare-<time>/. Without a GPU: one line, exit 1. Exit 0 when our row has numbers.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

epochs=10
rounds=2
tf32=()
math=fp32
model=mlp
run_timeout=${MNIST_COMPARE_RUN_TIMEOUT:-300}
while (($#)); do
  case $1 in
    --epochs) epochs=${2:?--epochs needs a number}; shift 2 ;;
    --rounds) rounds=${2:?--rounds needs a number}; shift 2 ;;
    --tf32) tf32=(--tf32); math=tf32; shift ;;
    --model) model=${2:?--model needs mlp or cnn}; shift 2 ;;
    --run-timeout) run_timeout=${2:?--run-timeout needs seconds}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "compare.sh: unknown option $1 (see compare.sh --help)" >&2; exit 2 ;;
  esac
done
if ! [[ $epochs =~ ^[1-9][0-9]*$ && $rounds =~ ^[1-9][0-9]*$ && $run_timeout =~ ^[1-9][0-9]*$ ]]; then
  echo "compare.sh: --epochs, --rounds and --run-timeout must be positive integers" >&2
  exit 2
fi
if [[ $model != mlp && $model != cnn ]]; then
  echo "compare.sh: --model must be mlp or cnn" >&2
  exit 2
fi
# Ours: bench_train (1 warm-up + --epochs timed) or bench_cnn (--epochs + 1, the first untimed).
if [[ $model == cnn ]]; then
  our_bench=bench_cnn
  our_args=(--json --epochs $((epochs + 1)))
else
  our_bench=bench_train
  our_args=(--json --epochs "$epochs")
fi

require_gpu compare.sh
python=${PYTHON:-python3}
cd "$repo"
out_dir=runs/compare-$(timestamp)
mkdir -p "$out_dir"
results=$out_dir/results.tsv  # system, round, ms_per_epoch, images_per_s, test_accuracy, error
: >"$results"

our_build_error=""
if ! build_targets "$our_bench" 2>"$out_dir/build.log"; then
  our_build_error="$our_bench did not build (see $out_dir/build.log)"
fi

# field LINE KEY: the value of KEY=VALUE in a RESULT line (values have no spaces).
field() { sed -n "s/.* $2=\\([^ ]*\\).*/\\1/p" <<<"$1"; }
# json_number JSON KEY: a top-level number of bench_train's (bench_cnn's) one-line JSON object.
json_number() { grep -o "\"$2\":[-0-9.eE+]*" <<<"$1" | head -n 1 | cut -d: -f2; }

record() {  # record SYSTEM ROUND MS IMAGES_PER_S ACCURACY ERROR
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"
}

# run_limited "SYSTEM ROUND" OUT ERR COMMAND...: COMMAND with its output in OUT and ERR, stopped after
# run_timeout seconds (exit 124, or 137 when TERM did not stop it). timeout runs it in a process
# group of its own and stops the whole group (the peers' compile workers too). It runs in the
# background and is waited for, so that a signal to this script stops the wait at once and the
# trap below stops that group.
running=""  # "SYSTEM ROUND PID" of the run in progress
run_started=0
run_limited() {
  local label=$1 out=$2 err=$3 status=0
  shift 3
  run_started=$SECONDS
  timeout --kill-after=5 "$run_timeout" "$@" >"$out" 2>"$err" &
  running="$label $!"
  wait "$!" || status=$?
  running=""
  return "$status"
}
# timed_out STATUS: the run ended at its limit (124, or 137 after the KILL), not earlier (a run
# killed by something else, such as the OOM killer, also exits 137).
timed_out() { (((${1:-0} == 124 || ${1:-0} == 137) && SECONDS - run_started >= run_timeout)); }

run_ours() {  # run_ours ROUND
  local log=$out_dir/mnist-cuda.$1 json status=0
  if [[ -n $our_build_error ]]; then
    record mnist-cuda "$1" "" "" "" "$our_build_error"
    return
  fi
  echo ">>> round $1: mnist-cuda ($our_bench)" >&2
  run_limited "mnist-cuda $1" "$log.json" "$log.err" "$build_dir/profiling/$our_bench" "${our_args[@]}" "${tf32[@]}" || status=$?
  json=$(tail -n 1 "$log.json")
  if timed_out "$status"; then
    record mnist-cuda "$1" "" "" "" "timed out after $run_timeout s (--run-timeout)"
    return
  fi
  if ((status != 0)) || [[ $json != \{* ]]; then
    record mnist-cuda "$1" "" "" "" "exit $status: $(cat "$log.json" "$log.err" | grep . | tail -n 1)"
    return
  fi
  record mnist-cuda "$1" "$(json_number "$json" ms_per_epoch)" "$(json_number "$json" images_per_s)" \
    "$(json_number "$json" test_accuracy)" ""
}

run_peer() {  # run_peer SYSTEM ROUND SCRIPT ARG...
  local system=$1 round=$2 log=$out_dir/$1.$2 line status=0 error
  shift 2
  if ! command -v "$python" >/dev/null 2>&1; then
    record "$system" "$round" "" "" "" "$python not found"
    return
  fi
  echo ">>> round $round: $system" >&2
  run_limited "$system $round" "$log.out" "$log.err" "$python" "$@" --epochs "$epochs" "${tf32[@]}" || status=$?
  line=$(grep '^RESULT ' "$log.out" | tail -n 1 || true)
  if timed_out "$status"; then
    record "$system" "$round" "" "" "" "timed out after $run_timeout s (--run-timeout)"
    return
  fi
  if [[ -z $line ]]; then
    record "$system" "$round" "" "" "" "exit $status without a RESULT line (see $log.err)"
    return
  fi
  error=$(sed -n 's/.* error="\(.*\)"$/\1/p' <<<"$line")
  if [[ -n $error ]]; then
    record "$system" "$round" "" "" "" "$error"
    return
  fi
  record "$system" "$round" "$(field "$line" ms_per_epoch)" "$(field "$line" images_per_s)" \
    "$(field "$line" test_accuracy)" ""
}

print_table() {
  local gpu
  gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true)
  echo
  echo "## mnist-cuda against PyTorch and JAX on ${gpu:-this GPU}"
  echo
  if [[ $model == cnn ]]; then
    echo "CNN conv 5x5 32 - pool - conv 5x5 64 - pool - dense 1024, batch 128, Adam 1e-3, dropout 0.5, $math; $epochs timed"
  else
    echo "Default model 784-512-512-10, batch 128, Adam 1e-3, dropout 0.2, $math GEMMs; $epochs timed"
  fi
  echo "epochs after 1 warm-up, $rounds round(s) interleaved; ms/epoch is the median over the rounds of each"
  echo "run's median epoch (host clock, device synchronized at both ends). Logs: $out_dir/"
  echo
  awk -F'\t' -v epochs="$epochs" '
    function median(list,    v, n, i, j, t) {
      n = split(list, v, " ")
      for (i = 2; i <= n; ++i) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; --j) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    {
      if (!($1 in seen)) { seen[$1] = 1; order[++count] = $1 }
      if ($3 != "") {
        ms[$1] = ms[$1] " " $3
        images[$1] = $4 * $3 / 1000  # images trained per epoch
        rounds_text[$1] = rounds_text[$1] (rounds_text[$1] == "" ? "" : " / ") sprintf("%.2f", $3)
        accuracy[$1] = accuracy[$1] (accuracy[$1] == "" ? "" : " / ") ($5 == "" ? "n/a" : sprintf("%.2f%%", 100 * $5))
      } else if (!($1 in error)) {
        error[$1] = $6
        gsub(/\|/, "\\|", error[$1])  # a | of the message would end the table cell
      }
    }
    END {
      ours = ("mnist-cuda" in ms) ? median(ms["mnist-cuda"]) : ""
      printf "| system | ms/epoch (median) | images/s | test accuracy after %d epochs | time vs ours | note |\n", epochs + 1
      print "|---|---:|---:|---:|---:|---|"
      for (i = 1; i <= count; ++i) {
        s = order[i]
        name = s == "mnist-cuda" ? "mnist-cuda (ours)" : s
        if (s in ms) {
          m = median(ms[s])
          note = "rounds: " rounds_text[s] " ms" (s in error ? "; a round failed: " error[s] : "")
          ratio = ours != "" ? sprintf("%.2fx", m / ours) : "n/a"
          printf "| %s | %.3f | %.0f | %s | %s | %s |\n", name, m, images[s] / (m / 1000), accuracy[s], ratio, note
        } else {
          printf "| %s | n/a | n/a | n/a | n/a | %s |\n", name, error[s]
        }
      }
    }' "$results"
}

# A signal (a caller's time limit, Ctrl-C): stop the run in progress, then the table of what
# finished, so that the rows already measured are not lost with the script.
stopped() {
  local system round pid
  trap '' TERM INT  # a caller's second TERM (timeout signals the script, then its group) waits
  if [[ -n $running ]]; then
    read -r system round pid <<<"$running"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    record "$system" "$round" "" "" "" "stopped by SIG$1 while running"
  fi
  print_table
  exit $((128 + $2))
}
trap 'stopped TERM 15' TERM
trap 'stopped INT 2' INT

peers=profiling/peers
for ((round = 1; round <= rounds; ++round)); do
  run_ours "$round"
  run_peer torch-eager "$round" "$peers/torch_mlp.py" --mode eager --model "$model"
  run_peer torch-compile "$round" "$peers/torch_mlp.py" --mode compile --model "$model"
  run_peer jax "$round" "$peers/jax_mlp.py" --model "$model"
done

print_table

[[ -n $(awk -F'\t' '$1 == "mnist-cuda" && $3 != ""' "$results") ]]
