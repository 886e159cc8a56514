#!/usr/bin/env bash
# The full check on a machine with an NVIDIA GPU:
#   1. configure + build (a fresh build-gpu by default, or the build dir given),
#   2. ctest: every test, the gpu-labelled ones included,
#   3. compute-sanitizer memcheck (with leak check), racecheck, initcheck and synccheck over
#      the GPU tests (--gtest_filter='Gpu*') of every test executable that has any,
#   4. the same four over one short epoch of `mnist train --device gpu`, MLP and CNN,
# then a summary table, last. Exit status 0 only when every step passed.
#
#   profiling/gpu_check.sh [BUILD_DIR]
#
# A build dir that has no CMake cache yet is configured with -G Ninja (when available) and
# -DCMAKE_CUDA_ARCHITECTURES=$CMAKE_CUDA_ARCHITECTURES (default 90, H100); an existing one is
# rebuilt as configured. Sanitizer logs go to BUILD_DIR/gpu_check_logs/.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1

# --- a GPU, or one line and out -------------------------------------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi not found); nothing checked" >&2
  exit 2
fi
if ! gpu_list=$(nvidia-smi -L 2>&1) || ! grep -q '^GPU ' <<<"$gpu_list"; then
  echo "gpu_check: no usable NVIDIA GPU here (nvidia-smi -L: ${gpu_list%%$'\n'*}); nothing checked" >&2
  exit 2
fi

build_dir=${1:-build-gpu}
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
  if ctest --test-dir "$build_dir" --output-on-failure; then
    record "ctest (all labels)" "pass"
  else
    record "ctest (all labels)" "FAIL"
  fi
fi

# --- 3. compute-sanitizer over the GPU tests ------------------------------------------------
sanitizer=$(command -v compute-sanitizer 2>/dev/null || true)
if [[ -z "$sanitizer" ]]; then
  for candidate in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda*/bin/compute-sanitizer \
                   /usr/local/cuda*/compute-sanitizer/compute-sanitizer; do
    if [[ -x "$candidate" ]]; then sanitizer=$candidate; break; fi
  done
fi

if [[ -z "$sanitizer" ]]; then
  record "compute-sanitizer" "FAIL (not found on PATH or under /usr/local/cuda*)"
else
  mkdir -p "$log_dir"
  gpu_tests=()
  for bin in "$build_dir"/test_*; do
    [[ -f "$bin" && -x "$bin" ]] || continue
    # Indented lines of --gtest_list_tests are test names: any means the binary has GPU tests.
    if "$bin" --gtest_list_tests --gtest_filter='Gpu*' 2>/dev/null | grep -q '^  '; then gpu_tests+=("$bin"); fi
  done
  if ((${#gpu_tests[@]} == 0)); then
    record "compute-sanitizer" "FAIL (no test executable with Gpu* tests in $build_dir)"
  fi

  sanitizer_error=86  # our exit code for "the sanitizer found errors", told apart from a test failure
  # sanitize NAME COMMAND...: the four tools over one command, a result line each.
  sanitize() {
    local name=$1 tool log rc extra
    shift
    for tool in memcheck racecheck initcheck synccheck; do
      extra=()
      [[ $tool == memcheck ]] && extra=(--leak-check full)
      log="$log_dir/$name.$tool.log"
      echo ">>> $tool $name (log: $log)"
      "$sanitizer" --tool "$tool" "${extra[@]}" --error-exitcode "$sanitizer_error" "$@" >"$log" 2>&1
      rc=$?
      grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY|^\[  (PASSED|FAILED|SKIPPED)' "$log" | sed 's/^/    /'
      if ((rc == 0)); then
        if grep -q '^\[  SKIPPED' "$log"; then
          record "$tool $name" "pass (some tests skipped)"
        else
          record "$tool $name" "pass"
        fi
      elif ((rc == sanitizer_error)); then
        tail -n 40 "$log"
        record "$tool $name" "FAIL (sanitizer errors, see log)"
      else
        tail -n 40 "$log"
        record "$tool $name" "FAIL (exit $rc, see log)"
      fi
    done
  }

  for bin in "${gpu_tests[@]}"; do
    sanitize "$(basename "$bin")" "$bin" --gtest_filter='Gpu*'
  done

  # --- 4. compute-sanitizer over one epoch of `mnist train` on the GPU, each model ----------
  # 2,000 training images (16 steps of 128), the epoch's CUDA graph, validation and test.
  if [[ -f data/mnist/train-images-idx3-ubyte.gz || -f data/mnist/train-images-idx3-ubyte ]]; then
    for model in mlp cnn; do
      out="$log_dir/train-$model-run"
      rm -rf "$out"
      sanitize "mnist-train-$model" "$build_dir/mnist" train --device gpu --model "$model" --train-subset 2000 \
          --epochs 1 --no-report --out "$out"
    done
  else
    record "compute-sanitizer mnist train" "FAIL (no data/mnist: run data/fetch.sh mnist first)"
  fi
fi

summary
exit "$failed"
