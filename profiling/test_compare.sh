#!/usr/bin/env bash
# CTest `compare_stand_ins`: compare.sh's own logic, on any machine, with stand-ins for
# nvidia-smi, our bench and the peers' python (in a temporary folder, first on PATH):
#   1. a peer that outlasts --run-timeout is stopped, with every process it started, and its row
#      says so; a peer's error with a | in it stays one table cell; the other rows keep numbers;
#   2. compare.sh stopped by SIGTERM in the middle of a run (a caller's time limit) still prints
#      the table of the runs it finished, names the run it stopped, and leaves no process behind.
#
#   profiling/test_compare.sh
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
stand_ins=$(mktemp -d)
trap 'rm -rf "$stand_ins"' EXIT
mkdir -p "$stand_ins/bin" "$stand_ins/build/profiling"
touch "$stand_ins/build/CMakeCache.txt"
# A marker unique to this run, in every stand-in's command line, to find what is left running.
marker=compare-stand-in-$$-$RANDOM

cat >"$stand_ins/bin/nvidia-smi" <<'EOF'
#!/usr/bin/env bash
if [[ $1 == -L ]]; then echo "GPU 0: Stand-in GPU (UUID: GPU-0)"; else echo "Stand-in GPU, 0.0"; fi
EOF
cat >"$stand_ins/bin/cmake" <<'EOF'
#!/usr/bin/env bash
exit 0
EOF
cat >"$stand_ins/build/profiling/bench_train" <<'EOF'
#!/usr/bin/env bash
echo '{"system":"mnist-cuda","ms_per_epoch":20.5,"images_per_s":2634146,"test_accuracy":0.981}'
EOF
# The peers: eager answers, compile hangs (in a child process, as torch's compile workers are),
# jax fails with a | in its reason.
cat >"$stand_ins/bin/python" <<EOF
#!/usr/bin/env bash
case "\$*" in
  *eager*) echo 'RESULT system=torch-eager ms_per_epoch=250.5 images_per_s=215569 test_accuracy=0.9801 epochs=1' ;;
  *compile*) bash -c 'sleep 600; : $marker' & wait ;;
  *jax*) echo 'RESULT system=jax error="no GPU | backend"'; exit 1 ;;
esac
EOF
chmod +x "$stand_ins/bin/"* "$stand_ins/build/profiling/bench_train"

failures=0
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }
command -v pgrep >/dev/null 2>&1 || fail "pgrep not found: what is left running cannot be checked"
expect_row() {  # expect_row OUTPUT PATTERN WHAT
  if grep -qE "$2" <<<"$1"; then echo "ok    $3"; else fail "$3: no row matching $2"; fi
}
left_running() { pgrep -f "$marker" >/dev/null 2>&1; }
clean_up() {  # the run folder compare.sh names in its header, and anything left running
  local logs
  logs=$(sed -n 's|.*Logs: \(runs/compare-[0-9-]*\)/$|\1|p' <<<"$1")
  [[ -n $logs ]] && rm -rf "${here:?}/../$logs"
  pkill -f "$marker" 2>/dev/null
}
compare() {  # compare [timeout SECONDS] OPTION...: compare.sh --epochs 1 --rounds 1 OPTION...
  local limit=()
  if [[ $1 == timeout ]]; then limit=(timeout "$2"); shift 2; fi
  PATH="$stand_ins/bin:$PATH" MNIST_BUILD_DIR="$stand_ins/build" PYTHON="$stand_ins/bin/python" \
    "${limit[@]}" bash "$here/compare.sh" --epochs 1 --rounds 1 "$@" 2>/dev/null
}

# 1. --run-timeout
output=$(compare --run-timeout 2)
status=$?
check() {  # check CONDITION-STATUS OK-TEXT FAIL-TEXT
  if (($1)); then echo "ok    $2"; else fail "$3"; fi
}
check "status == 0" "exit 0 with our row" "exit $status with our row"
expect_row "$output" '^\| mnist-cuda \(ours\) \| 20\.500 \| 2634146 \| 98\.10% \| 1\.00x \|' "our row"
expect_row "$output" '^\| torch-eager \| 250\.500 \| ' "a peer's row"
expect_row "$output" '^\| torch-compile \| n/a .*\| timed out after 2 s \(--run-timeout\) \|$' "the peer that hung"
expect_row "$output" '^\| jax \| n/a .*\| no GPU \\\| backend \|$' "an error with a |"
sleep 1
if left_running; then fail "the timed-out peer's child process is still running"; else echo "ok    nothing left running"; fi
clean_up "$output"

# 2. SIGTERM from the caller during the hung peer (the run would take 60 s)
started=$SECONDS
output=$(compare timeout 4 --run-timeout 60)
status=$?
check "SECONDS - started < 20" "stopped at once" "stopped after $((SECONDS - started)) s"
check "status == 124" "timeout's exit 124" "exit $status (timeout's 124 expected)"
expect_row "$output" '^\| mnist-cuda \(ours\) \| 20\.500 \|' "our row after SIGTERM"
expect_row "$output" '^\| torch-compile \| n/a .*\| stopped by SIGTERM while running \|$' "the run SIGTERM stopped"
sleep 1
if left_running; then fail "a process of the stopped run is still running"; else echo "ok    nothing left running"; fi
clean_up "$output"

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "compare.sh: run time limit and SIGTERM handled"
