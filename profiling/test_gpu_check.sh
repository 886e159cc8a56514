#!/usr/bin/env bash
# CTest `gpu_check_leak_report`: gpu_check.sh's memcheck runs fail unless compute-sanitizer's
# leak check reported, with stand-ins for nvidia-smi, cmake, compute-sanitizer and a gpu test
# executable, on any machine. The sanitizer stand-in prints "LEAK SUMMARY" only when the
# program it runs was asked to destroy its CUDA context (MNIST_RESET_DEVICE_AT_EXIT=1), as the
# real leak check reports only then.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

mkdir -p "$work/bin" "$work/build"
printf '#!/bin/sh\necho "GPU 0: Stand-in GPU (UUID: GPU-0)"\n' >"$work/bin/nvidia-smi"
printf '#!/bin/sh\nexit 0\n' >"$work/bin/cmake"
touch "$work/build/CMakeCache.txt"
# A test executable with one Gpu* test.
cat >"$work/build/test_standin" <<'STANDIN'
#!/bin/sh
case "$*" in
  *--gtest_list_tests*) printf 'GpuStandIn.\n  Passes\n' ;;
  *) printf '[  PASSED  ] 1 test.\n' ;;
esac
STANDIN
# compute-sanitizer: runs the program, then reports like memcheck; $LEAKS_REPORTED=never leaves
# out the leak report whatever the environment says.
cat >"$work/bin/compute-sanitizer" <<'STANDIN'
#!/bin/bash
while [[ $1 == -* ]]; do
  case $1 in --version) echo "compute-sanitizer stand-in version 0"; exit 0 ;; --tool|--leak-check|--report-api-errors|--error-exitcode|--kernel-name) shift 2 ;; *) shift ;; esac
done
"$@"
if [[ ${MNIST_RESET_DEVICE_AT_EXIT:-} == 1 && ${LEAKS_REPORTED:-} != never ]]; then
  echo "========= LEAK SUMMARY: 0 bytes leaked in 0 allocations"
fi
echo "========= ERROR SUMMARY: 0 errors"
STANDIN
chmod +x "$work/bin/"* "$work/build/test_standin"

run() {  # run: gpu_check.sh's memcheck over the stand-in test; its output in $output
  output=$(PATH="$work/bin:$PATH" MNIST_GPU_CHECK_SKIP_CTEST=1 MNIST_COMPUTE_SANITIZER="$work/bin/compute-sanitizer" \
    bash "$here/gpu_check.sh" --tools memcheck --targets tests --jobs 1 "$work/build" 2>&1)
}
if run && grep -q '^>>> memcheck test_standin: pass' <<<"$output"; then
  echo "ok    a memcheck run that reports on leaks passes"
else
  echo "FAIL  a memcheck run that reports on leaks:"
  while IFS= read -r line; do echo "      $line"; done <<<"$output"
  failures=$((failures + 1))
fi
export LEAKS_REPORTED=never
if ! run && grep -q '^>>> memcheck test_standin: FAIL (no LEAK SUMMARY' <<<"$output"; then
  echo "ok    a memcheck run without a leak report fails"
else
  echo "FAIL  a memcheck run without a leak report:"
  while IFS= read -r line; do echo "      $line"; done <<<"$output"
  failures=$((failures + 1))
fi

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "gpu_check.sh fails a memcheck run whose leak check did not report"
