#!/usr/bin/env bash
# The full check on a machine with an NVIDIA GPU:
#   1. configure + build (a fresh build-gpu by default, or the build dir given),
#   2. ctest: every test, the gpu-labelled ones included,
#   3. compute-sanitizer, tool by tool (memcheck with leak check first, then racecheck, synccheck
#      and initcheck): each tool over the GPU tests (--gtest_filter='Gpu*') of every test
#      executable that has any, then over two short epochs of `mnist train --device gpu`, MLP
#      and CNN (the first epoch captures the CUDA graph, the second replays it),
# then a summary table, last. Exit status 0 only when every step passed.
#
#   profiling/gpu_check.sh [options] [BUILD_DIR]
#
# Options (for a time-boxed call such as gpu_session.sh's; the defaults check everything):
#   --tools LIST        which sanitizer tools, in this order (memcheck,racecheck,synccheck,initcheck)
#   --targets LIST      tests, train or both (tests,train)
#   --budget SECONDS    stop starting sanitizer runs when this much time has gone; a run never
#                       outlasts it (default: no limit). Runs not started are listed as skipped.
#   --run-timeout SECONDS  each sanitizer run's own limit (300): one slow binary cannot take all
#   --jobs N            sanitizer runs at a time on the one GPU (4)
#   --test-timeout SECONDS  ctest's limit for each test in step 2 (300)
#   --kernels FILTER    compute-sanitizer --kernel-name filter for racecheck and synccheck
#                       (kns=mnist: every kernel of ours is in namespace mnist, so cuBLAS's and
#                       cuDNN's kernels run uninstrumented: they are not ours to fix, and
#                       racecheck over them is slow); 'all' instruments every kernel
# Environment: MNIST_COMPUTE_SANITIZER names the compute-sanitizer to use (gpu_session.sh finds
# it with its search of the machine); else PATH, then the CUDA toolkit's usual folders.
# MNIST_GPU_CHECK_SKIP_CTEST=1 skips step 2 (gpu_session.sh runs the tests itself).
#
# memcheck's leak check reports only when the CUDA context is destroyed, which a plain exit does
# not do: the script sets MNIST_RESET_DEVICE_AT_EXIT=1, with which `mnist` and the test
# executables call cudaDeviceReset last (mnist::reset_device_if_asked), and a memcheck run whose
# log lacks compute-sanitizer's "LEAK SUMMARY: ... bytes leaked in ... allocations" line fails.
#
# A build dir that has no CMake cache yet is configured with -G Ninja (when available) and
# -DCMAKE_CUDA_ARCHITECTURES=$CMAKE_CUDA_ARCHITECTURES (default 90, H100); an existing one is
# rebuilt as configured. Sanitizer logs go to BUILD_DIR/gpu_check_logs/.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1

tools=memcheck,racecheck,synccheck,initcheck
targets=tests,train
budget=0
run_timeout=300
jobs=4
test_timeout=300
kernels=kns=mnist
build_dir=
while (($#)); do
  case $1 in
    --tools) tools=${2:?--tools needs a list}; shift 2 ;;
    --targets) targets=${2:?--targets needs a list}; shift 2 ;;
    --budget) budget=${2:?--budget needs seconds}; shift 2 ;;
    --run-timeout) run_timeout=${2:?--run-timeout needs seconds}; shift 2 ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift 2 ;;
    --test-timeout) test_timeout=${2:?--test-timeout needs seconds}; shift 2 ;;
    --kernels) kernels=${2:?--kernels needs a filter or all}; shift 2 ;;
    -*) echo "gpu_check: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
    *) build_dir=$1; shift ;;
  esac
done
for tool in ${tools//,/ }; do
  case $tool in
    memcheck | racecheck | synccheck | initcheck) ;;
    *) echo "gpu_check: unknown tool $tool in --tools" >&2; exit 2 ;;
  esac
done
for target in ${targets//,/ }; do
  case $target in
    tests | train) ;;
    *) echo "gpu_check: unknown target $target in --targets (tests, train)" >&2; exit 2 ;;
  esac
done
if ! [[ $budget =~ ^[0-9]+$ && $run_timeout =~ ^[1-9][0-9]*$ && $jobs =~ ^[1-9][0-9]*$ &&
  $test_timeout =~ ^[1-9][0-9]*$ ]]; then
  echo "gpu_check: --budget, --run-timeout, --jobs and --test-timeout take whole numbers" >&2
  exit 2
fi
wants_target() { [[ ,$targets, == *,$1,* ]]; }

# --- a GPU, or one line and out -------------------------------------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi not found); nothing checked" >&2
  exit 2
fi
if ! gpu_list=$(nvidia-smi -L 2>&1) || ! grep -q '^GPU ' <<<"$gpu_list"; then
  echo "gpu_check: no usable NVIDIA GPU here (nvidia-smi -L: ${gpu_list%%$'\n'*}); nothing checked" >&2
  exit 2
fi

# nvidia-smi lists a GPU: a gpu test that finds no device the CUDA runtime can use (a driver
# older than the runtime) fails with the runtime's reason instead of skipping (tests/test_util.h).
export MNIST_GPU_TESTS_MUST_RUN=1
# Every program of ours destroys its CUDA context last, so that memcheck's leak check reports.
export MNIST_RESET_DEVICE_AT_EXIT=1

build_dir=${build_dir:-build-gpu}
case "$build_dir" in /*) ;; *) build_dir="$repo/$build_dir" ;; esac
log_dir="$build_dir/gpu_check_logs"

steps=()
results=()
failed=0
record() {  # record STEP RESULT; a RESULT starting with FAIL marks the run failed
  steps+=("$1")
  results+=("$2")
  [[ "$2" == FAIL* ]] && failed=1
  echo ">>> $1: $2"
}

summary() {
  echo
  echo "=== gpu_check summary ($(head -n1 <<<"$gpu_list")) ==="
  printf '%-52s %s\n' "step" "result"
  printf '%-52s %s\n' "----" "------"
  for i in "${!steps[@]}"; do printf '%-52s %s\n' "${steps[$i]}" "${results[$i]}"; done
  if ((failed)); then echo "gpu_check: FAILED"; else echo "gpu_check: all passed"; fi
}

# --- 1. configure + build -------------------------------------------------------------------
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  echo ">>> configuring $build_dir"
  if cmake -S "$repo" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CUDA_ARCHITECTURES="${CMAKE_CUDA_ARCHITECTURES:-90}"; then
    record "configure" "pass"
  else
    record "configure" "FAIL"
    summary
    exit 1
  fi
else
  record "configure" "pass (existing $build_dir)"
fi

echo ">>> building $build_dir"
if cmake --build "$build_dir" -j "$(nproc)"; then
  record "build" "pass"
else
  record "build" "FAIL"
  summary
  exit 1
fi

# --- 2. every test (MNIST_GPU_CHECK_SKIP_CTEST=1: already run, as gpu_session.sh does) -------
if [[ ${MNIST_GPU_CHECK_SKIP_CTEST:-0} == 1 ]]; then
  record "ctest (all labels)" "skipped (MNIST_GPU_CHECK_SKIP_CTEST=1)"
else
  echo ">>> ctest"
  if ctest --test-dir "$build_dir" --output-on-failure --timeout "$test_timeout"; then
    record "ctest (all labels)" "pass"
  else
    record "ctest (all labels)" "FAIL"
  fi
fi

# --- 3. compute-sanitizer, tool by tool -----------------------------------------------------
sanitizer=${MNIST_COMPUTE_SANITIZER:-}
[[ -n $sanitizer && ! -x $sanitizer ]] && sanitizer=
[[ -z $sanitizer ]] && sanitizer=$(command -v compute-sanitizer 2>/dev/null || true)
if [[ -z "$sanitizer" ]]; then
  for candidate in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda*/bin/compute-sanitizer \
                   /usr/local/cuda*/compute-sanitizer/compute-sanitizer; do
    if [[ -x "$candidate" ]]; then sanitizer=$candidate; break; fi
  done
fi
if [[ -z "$sanitizer" ]]; then
  record "compute-sanitizer" "FAIL (not found: MNIST_COMPUTE_SANITIZER, PATH, /usr/local/cuda*)"
  summary
  exit 1
fi
echo "=== compute-sanitizer: $sanitizer ($("$sanitizer" --version 2>&1 | grep -m1 -i version))"
mkdir -p "$log_dir"

# What each tool runs over: the test executables with Gpu* tests (the custom kernels' own
# tests first: they are quick and each covers one kernel; the end-to-end ones after), then
# `mnist train` for two short epochs of each model.
names=()
if wants_target tests; then
  later=()
  for bin in "$build_dir"/test_*; do
    [[ -f "$bin" && -x "$bin" ]] || continue
    # Indented lines of --gtest_list_tests are test names: any means the binary has GPU tests.
    "$bin" --gtest_list_tests --gtest_filter='Gpu*' 2>/dev/null | grep -q '^  ' || continue
    case $(basename "$bin") in
      test_gpu_trainer | test_cli | test_checkpoint | test_predict | test_report_command | test_reliability | \
        test_cnn_training | test_mlp | test_cnn) later+=("$(basename "$bin")") ;;
      *) names+=("$(basename "$bin")") ;;
    esac
  done
  names+=("${later[@]}")
  if ((${#names[@]} == 0)); then
    record "compute-sanitizer tests" "FAIL (no test executable with Gpu* tests in $build_dir)"
  fi
fi
if wants_target train; then
  if [[ -f data/mnist/train-images-idx3-ubyte.gz || -f data/mnist/train-images-idx3-ubyte ]]; then
    names+=(mnist-train-mlp mnist-train-cnn)
  else
    record "compute-sanitizer mnist train" "FAIL (no data/mnist: run data/fetch.sh mnist first)"
  fi
fi

# command_for TOOL NAME: sets cmd to what NAME runs under TOOL.
command_for() {
  local model
  case $2 in
    mnist-train-*)
      # 2,000 training images (16 steps of 128), two epochs: the first captures the epoch's CUDA
      # graph, the second replays it; validation and test after each.
      model=${2#mnist-train-}
      rm -rf "$log_dir/$2.$1.run"
      cmd=("$build_dir/mnist" train --device gpu --model "$model" --train-subset 2000 --epochs 2 --no-report
        --out "$log_dir/$2.$1.run") ;;
    *) cmd=("$build_dir/$2" --gtest_filter='Gpu*') ;;
  esac
}

sanitizer_error=86  # our exit code for "the sanitizer found errors", told apart from a test failure
left() { if ((budget)); then echo $((budget - SECONDS)); else echo 999999; fi; }
# Each run writes its log, whose last line is then its exit status and time; a run cut at its
# limit exits 124 (timeout's TERM) or 137 (the KILL 5 s later).
launch() {  # launch TOOL NAME LIMIT
  local tool=$1 name=$2 limit=$3 log="$log_dir/$2.$1.log" extra=()
  # A failed CUDA API call is not reported as a sanitizer error: some tests provoke one on purpose
  # (GpuOutOfMemory's 4 TiB cudaMalloc), libraries probe with failing calls, and every call of
  # ours is checked by MNIST_CHECK, so an unexpected failure already fails the test or the run.
  extra=(--report-api-errors no)
  case $tool in
    memcheck) extra+=(--leak-check full) ;;
    racecheck | synccheck) [[ $kernels != all ]] && extra+=(--kernel-name "$kernels") ;;
  esac
  command_for "$tool" "$name"
  (
    start=$SECONDS
    timeout --kill-after=5 "$limit" "$sanitizer" --tool "$tool" "${extra[@]}" --error-exitcode "$sanitizer_error" \
      "${cmd[@]}" >"$log" 2>&1
    echo "=== gpu_check run: exit $? after $((SECONDS - start)) s" >>"$log"
  ) &
}
# result TOOL NAME: the run's result line, from its log.
result() {
  local tool=$1 name=$2 log="$log_dir/$2.$1.log" rc took
  rc=$(tail -n1 "$log" | sed -n 's/^=== gpu_check run: exit \([0-9]*\) after .*/\1/p')
  took="$(tail -n1 "$log" | sed -n 's/^=== gpu_check run: exit [0-9]* after \([0-9]*\) s$/\1/p') s"
  grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY|^\[  (PASSED|FAILED|SKIPPED)' "$log" | sed 's/^/    /'
  # A finished memcheck run must have reported on leaks: without the line, the context was not
  # destroyed at exit and the leak check saw nothing.
  if [[ $tool == memcheck && ($rc == 0 || $rc == "$sanitizer_error") ]] && ! grep -q 'LEAK SUMMARY' "$log"; then
    tail -n 20 "$log"
    record "$tool $name" "FAIL (no LEAK SUMMARY in $log: the leak check did not report, $took)"
    return
  fi
  case $rc in
    0)
      if grep -q '^\[  SKIPPED' "$log"; then record "$tool $name" "pass, some tests skipped ($took)"
      else record "$tool $name" "pass ($took)"; fi ;;
    "$sanitizer_error") tail -n 40 "$log"; record "$tool $name" "FAIL (sanitizer errors, $took, see $log)" ;;
    124 | 137) tail -n 5 "$log"; record "$tool $name" "TIMED OUT after $took (limit reached; not a pass)" ;;
    *) tail -n 40 "$log"; record "$tool $name" "FAIL (exit ${rc:-unknown}, $took, see $log)" ;;
  esac
}

unusable=""
for tool in ${tools//,/ }; do
  [[ -n $unusable ]] && break
  started=()
  skipped=()
  for name in "${names[@]}"; do
    # At most --jobs runs at a time; GPU tests share the one GPU fine (H200: 140 GB).
    while (($(jobs -rp | wc -l) >= jobs)); do wait -n; done
    limit=$run_timeout
    (($(left) - 2 < limit)) && limit=$(($(left) - 2))
    # Under 20 s a sanitizer run rarely gets past loading the program and its libraries.
    if ((limit < 20)); then
      skipped+=("$name")
      continue
    fi
    echo ">>> $tool $name (up to ${limit}s, log: $log_dir/$name.$tool.log)"
    launch "$tool" "$name" "$limit"
    started+=("$name")
  done
  wait
  refused=0
  for name in "${started[@]}"; do
    result "$tool" "$name"
    # gVisor: the sanitizer refuses the device (KINDS.md); every other run would too.
    grep -q 'Device not supported' "$log_dir/$name.$tool.log" && refused=$((refused + 1))
  done
  ((${#skipped[@]})) &&
    record "$tool: ${#skipped[@]} not started" "skipped (no time left in --budget $budget): ${skipped[*]}"
  if ((${#started[@]} && refused == ${#started[@]})); then
    unusable=$(grep -h -m1 'Device not supported' "$log_dir"/*."$tool".log | head -n1)
    record "compute-sanitizer" "FAIL (refuses this machine's device: ${unusable:-see logs}; later tools not run)"
  fi
done

summary
exit "$failed"
