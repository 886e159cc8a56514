#!/usr/bin/env bash
# CTest `gpu_session_plan`: gpu_session.sh's plan and its comparison of the training runs'
# metrics, on any machine (no GPU, no build).
#   1. --dry-run with several budgets exits 0, runs neither nvidia-smi nor cmake (stand-ins on
#      PATH record any call), lists the stages in the order of value, and its caps add up to no
#      more than the budget;
#   2. same_metrics.py passes files that differ only in "seconds", and fails a changed loss or a
#      missing epoch, naming the line.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() {
  echo "FAIL  $*"
  failures=$((failures + 1))
}

# --- 1. the plan --------------------------------------------------------------------------------
mkdir -p "$work/bin"
for tool in nvidia-smi cmake ninja nvcc; do
  printf '#!/bin/sh\necho "%s $*" >>"%s/calls"\nexit 1\n' "$tool" "$work" >"$work/bin/$tool"
  chmod +x "$work/bin/$tool"
done
# The stages that must come in this order (ids of the plan), by value.
expected_order=(ctest-gpu train-seed-1-a train-seed-1-b train-no-graph bench-train bench-kernels compare memcheck
  bench-cnn ctest-cpu)
for budget in 540 300 200 1000; do
  before=$failures
  plan=$(PATH="$work/bin:$PATH" bash "$here/gpu_session.sh" --dry-run --budget "$budget" 2>&1)
  status=$?
  if ((status != 0)); then
    fail "--dry-run --budget $budget: exit $status"
    while IFS= read -r line; do echo "      $line"; done <<<"$plan"
    continue
  fi
  # The stage rows: id, cap, binary, exists, what (between the header and the total).
  rows=$(sed -n '/^stage /,/^total of the caps/p' <<<"$plan" | sed '1d;$d')
  sum=$(awk '{ s += $2 } END { print s + 0 }' <<<"$rows")
  if ! [[ $sum =~ ^[0-9]+$ ]] || ((sum > budget)) || ((sum == 0)); then
    fail "--dry-run --budget $budget: the caps add up to $sum s"
  fi
  total=$(sed -n 's/^total of the caps: \([0-9]*\) s of the \([0-9]*\) s budget$/\1 \2/p' <<<"$plan")
  [[ $total == "$sum $budget" ]] || fail "--dry-run --budget $budget: total line '$total', rows add up to $sum"
  # No cap negative, every row with a binary and an existence column.
  awk 'NF < 5 || $2 !~ /^[0-9]+$/ { bad = 1 } END { exit bad }' <<<"$rows" ||
    fail "--dry-run --budget $budget: a row without a whole cap or a binary column"
  previous=0
  for id in "${expected_order[@]}"; do
    line=$(awk -v id="$id" '$1 == id { print NR; exit }' <<<"$rows")
    if [[ -z $line ]]; then
      fail "--dry-run --budget $budget: no stage $id"
    elif ((line <= previous)); then
      fail "--dry-run --budget $budget: stage $id out of order"
    else
      previous=$line
    fi
  done
  # The full budget keeps every stage of value; a smaller one cuts from the end.
  if ((budget >= 540)); then
    awk '$1 != "sanitizers" && $2 == 0 { bad = 1 } END { exit bad }' <<<"$rows" ||
      fail "--dry-run --budget $budget: a stage with cap 0"
  fi
  first_cap=$(awk '$1 == "ctest-gpu" { print $2 }' <<<"$rows")
  last_cap=$(awk '$1 == "ctest-cpu" { print $2 }' <<<"$rows")
  if ((budget < 540)) && ((first_cap == 0 || last_cap != 0)); then
    fail "--dry-run --budget $budget: ctest-gpu gets $first_cap s, ctest-cpu $last_cap s (the later stage is cut first)"
  fi
  ((failures == before)) && echo "ok    --dry-run --budget $budget: caps add up to $sum s, stages in order"
done
if [[ -s $work/calls ]]; then
  fail "--dry-run called: $(tr '\n' ';' <"$work/calls")"
fi

# --- 2. the metrics comparison ------------------------------------------------------------------
metrics() {  # metrics FILE LOSS2 SECONDS: a made-up metrics.jsonl of 3 epochs
  {
    echo "{\"epoch\":1,\"train_loss\":0.2843,\"train_accuracy\":0.9151,\"val_loss\":0.1204,\"seconds\":$3}"
    echo "{\"epoch\":2,\"train_loss\":$2,\"train_accuracy\":0.9664,\"val_loss\":0.0891,\"seconds\":$3}"
    echo "{\"epoch\":3,\"train_loss\":0.0761,\"train_accuracy\":0.9765,\"val_loss\":0.0802,\"seconds\":$3}"
  } >"$1"
}
metrics "$work/a.jsonl" 0.1102 4.21
metrics "$work/b.jsonl" 0.1102 3.97
metrics "$work/c.jsonl" 0.1102 12.5
metrics "$work/changed.jsonl" 0.1103 4.21
head -n 2 "$work/a.jsonl" >"$work/short.jsonl"
compare() { "$python" "$here/same_metrics.py" "$@" 2>&1; }
if output=$(compare "$work/a.jsonl" "$work/b.jsonl" "$work/c.jsonl"); then
  echo "ok    same but for seconds: $output"
else
  fail "same but for seconds: $output"
fi
if output=$(compare "$work/a.jsonl" "$work/b.jsonl" "$work/changed.jsonl"); then
  fail "a changed loss passed: $output"
elif [[ $output == *"changed.jsonl line 2 "* && $output == *0.1103* ]]; then
  echo "ok    a changed loss fails: $output"
else
  fail "a changed loss: not named: $output"
fi
if output=$(compare "$work/a.jsonl" "$work/short.jsonl"); then
  fail "a missing epoch passed: $output"
elif [[ $output == *"short.jsonl line 3 "* ]]; then
  echo "ok    a missing epoch fails: $output"
else
  fail "a missing epoch: not named: $output"
fi
if output=$(compare "$work/a.jsonl" "$work/none.jsonl"); then
  fail "a missing file passed: $output"
else
  echo "ok    a missing file fails: $output"
fi

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "gpu_session.sh's plan and metrics comparison: all passed"
