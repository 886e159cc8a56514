#!/usr/bin/env bash
# Everything the open issues ask of a GPU machine, in ONE call of the device tool, each stage
# time-boxed so the call ends inside its limit; logs go to $OUT (they come back to the caller).
#
#   here (after bash .ci/setup):  bash profiling/gpu_kit.sh
#   device tool:                  run(command="bash profiling/gpu_session.sh --budget 540",
#                                     carry=["data/mnist", ".gpu-kit"], timeout_s=600)
#
# A session has 15 minutes of device time, the machine's start (minutes) included, so there is
# one call of at most 600 s: plan for no second one. Pass --budget = the call's limit - 60 (the
# 60 s cover a stage overrunning its cap by timeout's 10 s grace, packing $OUT and the transfer
# back). The limit is timeout_s, or less when less device time is left (the reply's limit_s;
# ask status first: budget_left_s minus ~3 min for the start). The default, 540, fits a 600 s
# call; GPU_SESSION_BUDGET sets it too.
#
# Stages in order of value; each has its own cap (and gets less when less of the budget is
# left), so a slow stage cannot starve the ones after it. With budget 540, on 16 cores:
#   stage                                         cap    expected
#   environment (find cuDNN, cuBLAS, sanitizer)    60    5-15 s
#   configure + build (the kit; sm_90)          rest-20  ~100 s
#   ctest -L gpu (-j 4, 90 s a test)              150    40-60 s (~145 s one at a time)
#   memcheck --leak-check full: gpu tests, then
#     one epoch of mnist train (MLP, CNN)          90    cut at 90 s (runs 4 at a time)
#   bench_kernels / bench_train / bench_cnn     45/45/60  ~50 s together
#   mnist train default x3 (seed 1 twice,
#     --no-graph: the metrics must agree)        45 each  ~17 s each
#   compare.sh --model mlp, then cnn            180 each  up to 180 s each: the cnn one is
#     (--run-timeout 75; cut, it still                   usually cut or skipped
#     prints the rows it finished)
#   racecheck, synccheck (our kernels only),
#     initcheck                                   rest    only if time is left
#   ctest -L cpu                                  rest    only if 60 s are left (CI runs them;
#                                                         here python3 may lack matplotlib)
# Files in $OUT (the device tool returns at most 8): summary.md (a line per stage, printed last
# too), session.log (everything, the ctest and sanitizer output included), bench_kernels.txt,
# bench_train.json, bench_cnn.json, train_default.log, compare.md, extras.tar.gz (ctest's JUnit
# files and LastTest logs, every sanitizer log, the training runs' metrics, compare.sh's run
# folders, the CMake cache, the list of CUDA files found). summary.md names the commit from
# .gpu-kit/COMMIT (the tree there has no .git) and lists tracked files changed since the kit
# was made. Nothing here is recorded anywhere: copy what was seen into profiling/RESULTS.md.
#
# Exit status: 0 when every stage that ran passed (a stage skipped for want of time does not
# count); 1 otherwise.
#
# Options: --budget SECONDS (default $GPU_SESSION_BUDGET or 540: the whole script)
#          --build-only (stop after the build: how the kit is checked on a machine without a GPU)
#          --stages LIST (default tests,sanitizers,bench,train,compare,cputests: which of the
#          stages after the build run, always in the order above)
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1
budget=${GPU_SESSION_BUDGET:-540}
build_only=0
stages=tests,sanitizers,bench,train,compare,cputests
while (($#)); do
  case $1 in
    --budget) budget=${2:?--budget needs seconds}; shift 2 ;;
    --build-only) build_only=1; shift ;;
    --stages) stages=${2:?--stages needs a list}; shift 2 ;;
    *) echo "gpu_session: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done
if ! [[ $budget =~ ^[1-9][0-9]*$ ]]; then
  echo "gpu_session: --budget must be a whole number of seconds (the call's limit - 60)" >&2
  exit 2
fi

for name in ${stages//,/ }; do
  case $name in
    tests | sanitizers | bench | train | compare | cputests) ;;
    *) echo "gpu_session: unknown stage $name in --stages (tests, sanitizers, bench, train, compare, cputests)" >&2; exit 2 ;;
  esac
done
wants() { [[ ,$stages, == *,$1,* ]]; }

if ((!build_only)) && ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; }; then
  echo "gpu_session: no NVIDIA GPU here (nvidia-smi lists none); nothing run (--build-only checks the build alone)"
  exit 1
fi

out=${OUT:-$repo/build-gpu/session}
mkdir -p "$out"
# Whatever is packed into $OUT/extras.tar.gz at the end (one file: the tool returns 8 at most).
extras=$repo/build-gpu/session-extras
rm -rf "$extras" && mkdir -p "$extras"
exec > >(tee -a "$out/session.log") 2>&1
tee_pid=$!
left() { echo $((budget - SECONDS)); }
failures=0  # stages that failed or timed out: the exit status is 0 only when none did
summary=$out/summary.md
echo "# gpu_session $(date -u +%Y-%m-%dT%H:%M:%SZ), budget $budget s" >"$summary"
note() { echo "$*" | tee -a "$summary"; }

# At every exit: the last line, $OUT/extras.tar.gz, summary.md again (the reply carries the end
# of the output), then wait for tee, so that session.log's last lines are written before the
# call returns (processes left running are killed then).
finish() {
  local rc=$?
  trap - EXIT
  note "- done in $SECONDS s of the $budget s budget (exit $rc)"
  cp /tmp/mnist-cuda-files.txt build-gpu/CMakeCache.txt "$extras/" 2>/dev/null
  cp build-gpu/ctest-*.xml "$extras/" 2>/dev/null
  [[ -d build-gpu/gtest-xml ]] && cp -r build-gpu/gtest-xml "$extras/"
  [[ -d build-gpu/gpu_check_logs ]] && cp -r build-gpu/gpu_check_logs "$extras/"
  # The training runs' and compare.sh's small files (checkpoints are megabytes: left out).
  find build-gpu/runs runs -maxdepth 2 -type f -size -2M \
    \( -name '*.json*' -o -name '*.log' -o -name '*.tsv' -o -name '*.err' -o -name '*.out' -o -name '*.txt' \) \
    -print0 2>/dev/null | xargs -0 -r cp --parents -t "$extras/"
  tar -czf "$out/extras.tar.gz" -C "$(dirname "$extras")" "$(basename "$extras")"
  # A returned file is at most 16 MiB: without the sanitizer logs (the likeliest to be large)
  # if needed.
  if (($(stat -c %s "$out/extras.tar.gz") > 15 * 1024 * 1024)); then
    rm -rf "$extras/gpu_check_logs"
    tar -czf "$out/extras.tar.gz" -C "$(dirname "$extras")" "$(basename "$extras")"
    note "  - extras.tar.gz: the sanitizer logs left out (over 15 MiB)"
  fi
  echo
  echo "=== summary.md"
  cat "$summary"
  exec >&- 2>&-
  wait "$tee_pid"
  exit "$rc"
}
trap finish EXIT

# What the tree is: there is no .git on the device machine; gpu_kit.sh wrote what it was made
# from into .gpu-kit, with every tracked file's checksum, to say whether the tree changed since.
if [[ -e .git ]] && commit=$(git rev-parse HEAD 2>/dev/null); then
  note "- commit: $commit$( [[ -n $(git status --porcelain --untracked-files=no) ]] && echo ', with uncommitted changes')"
elif [[ -f .gpu-kit/COMMIT ]]; then
  note "- commit (from .gpu-kit/COMMIT): $(tr '\n' ';' <.gpu-kit/COMMIT | sed 's/;$//; s/;/; /g')"
  if [[ -f .gpu-kit/tree.sha256 ]]; then
    changed=$(sha256sum --quiet -c .gpu-kit/tree.sha256 2>/dev/null | sed 's/: FAILED.*//')
    if [[ -z $changed ]]; then
      note "- tree: every tracked file as when the kit was made"
    else
      note "- tree: $(wc -l <<<"$changed") tracked file(s) CHANGED since the kit was made (run gpu_kit.sh" \
        "again before the call): $(head -n 20 <<<"$changed" | tr '\n' ' ')"
    fi
  fi
else
  note "- commit: unknown (no .git and no .gpu-kit/COMMIT)"
fi

# stage [--tee FILE | --out FILE] [--min SECONDS] NAME CAP COMMAND...: runs COMMAND under
# timeout (CAP seconds, or less when less of the budget is left; skipped when under --min, 5 by
# default), then notes pass/FAIL/TIMED OUT with its time in summary.md and session.log. The
# stage's own lines always go to session.log; --tee copies the command's output into FILE as
# well, --out sends its stdout to FILE alone (stderr stays in session.log).
stage() {
  local mode=log file="" min=5 name limit started rc
  while :; do
    case $1 in
      --tee) mode=copy; file=$2; shift 2 ;;
      --out) mode=out; file=$2; shift 2 ;;
      --min) min=$2; shift 2 ;;
      *) break ;;
    esac
  done
  name=$1 limit=$2 started=$SECONDS
  shift 2
  (($(left) < limit)) && limit=$(left)
  if ((limit < min)); then note "- $name: skipped (${limit} s of the budget left, needs $min)"; return 1; fi
  echo ">>> $name (up to ${limit}s)"
  case $mode in
    log) timeout --kill-after=10 "$limit" "$@"; rc=$? ;;
    copy) timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$file"; rc=${PIPESTATUS[0]} ;;
    out) timeout --kill-after=10 "$limit" "$@" >"$file"; rc=$? ;;
  esac
  case $rc in
    0) note "- $name: pass ($((SECONDS - started)) s)" ;;
    124 | 137) note "- $name: TIMED OUT after $((SECONDS - started)) s (cap ${limit} s)" ;;
    *) note "- $name: FAIL (exit $rc, $((SECONDS - started)) s)" ;;
  esac
  ((rc == 0)) || failures=$((failures + 1))
  return "$rc"
}
# capped CAP: CAP, or the budget left when that is less (for commands that must know their cap).
capped() {
  local t
  t=$(left)
  if ((t < $1)); then echo "$t"; else echo "$1"; fi
}
# junit_counts FILE: how many tests ctest's JUnit file lists, failed and skipped.
junit_counts() {
  local key counts=()
  [[ -f $1 ]] || { echo "no JUnit file"; return; }
  for key in tests failures skipped; do
    counts+=("$key $(grep -o -m1 -E "(^|[[:space:]])$key=\"[0-9]+\"" "$1" | tr -dc 0-9)")
  done
  echo "${counts[*]}"
}

# --- 1. environment ---------------------------------------------------------------------------
nvcc=$(command -v nvcc || true)
for candidate in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do
  [[ -z $nvcc && -x $candidate ]] && nvcc=$candidate
done
if [[ -z $nvcc ]]; then note "- environment: FAIL (no nvcc)"; exit 1; fi
cuda_root=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
# Where the machine keeps what the build links and the sanitizer (logged whole, so that a failed
# build can be fixed from this log alone): the toolkit's own folders first, then pip's nvidia-*
# wheels.
echo ">>> CUDA files on this machine"
cuda_files=/tmp/mnist-cuda-files.txt
# Python packages other than NVIDIA's wheels are skipped: a venv holds ~10^5 files, and file
# system calls are slow under gVisor (hence the cap too).
timeout 60 find "$cuda_root" /usr/local /opt /usr/lib /usr/include \
  \( -path '*/site-packages/*' -not -path '*/site-packages/nvidia*' \) -prune -o \
  \( -name 'libcudnn.so*' -o -name cudnn.h -o -name cudnn_version.h -o -name 'libcublas.so*' \
  -o -name 'libcublasLt.so*' -o -name cublas_v2.h -o -name nvToolsExt.h -o -name compute-sanitizer \
  -o -name nsys -o -name ncu \) -print 2>/dev/null |
  awk '!seen[$0]++' >"$cuda_files"
cat "$cuda_files"
first() { grep -E "$1" "$cuda_files" | head -n1; }
cudnn_lib=$(first '/libcudnn\.so(\.9)?$')
# The header that belongs to that library (a wheel's include/ beside its lib/), else any, else
# the toolkit's headers packed into the kit from the machine that made it (cuDNN 9 there too).
cudnn_header=
[[ -n $cudnn_lib && -f $(dirname "$cudnn_lib")/../include/cudnn.h ]] &&
  cudnn_header=$(readlink -f "$(dirname "$cudnn_lib")/../include/cudnn.h")
[[ -z $cudnn_header ]] && cudnn_header=$(first '/cudnn\.h$')
cublas_lib=$(first '/libcublas\.so(\.[0-9]+)?$')
cublaslt_lib=$(first '/libcublasLt\.so(\.[0-9]+)?$')
cublas_header=$(first '/cublas_v2\.h$')
# compute-sanitizer: on PATH, else the first executable the search found (folders of that name
# are in the list too); gpu_check.sh gets it through MNIST_COMPUTE_SANITIZER.
sanitizer=$(command -v compute-sanitizer 2>/dev/null || true)
if [[ -z $sanitizer ]]; then
  while IFS= read -r path; do
    if [[ -f $path && -x $path ]]; then sanitizer=$path; break; fi
  done < <(grep -E '/compute-sanitizer$' "$cuda_files")
fi
# gVisor (kernel 4.4.0) refuses compute-sanitizer and ncu (KINDS.md); Firecracker runs both.
runtime="not gVisor"
[[ $(uname -r) == 4.4.0 ]] && runtime="gVisor: expect compute-sanitizer to refuse the device"
{
  echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n1)"
  echo "- kernel: $(uname -r) ($runtime), $(nproc) cores"
  echo "- nvcc: $nvcc, $("$nvcc" --version | tail -n2 | head -n1); host compiler: $(c++ --version 2>&1 | head -n1)"
  echo "- cuDNN: header ${cudnn_header:-NOT FOUND (the kit copy is used)}, library ${cudnn_lib:-NOT FOUND}"
  echo "- cuBLAS: ${cublas_lib:-NOT FOUND}, header ${cublas_header:-NOT FOUND}"
  echo "- compute-sanitizer: ${sanitizer:-NOT FOUND}"
  echo "- cmake: $(cmake --version | head -n1), ninja: $(ninja --version 2>&1)"
} | tee -a "$summary"
# The folders of the cuDNN and cuBLAS we link, for our own programs only (ours=(env ...) in front
# of each): exported to everything, they would also reach compare.sh's PyTorch and JAX, whose
# wheels bring their own cuDNN and cuBLAS. No empty entries (an empty one means the current
# folder); the machine's own LD_LIBRARY_PATH stays after them.
ld_path=
for lib in "$cudnn_lib" "$cublas_lib" "$cublaslt_lib"; do
  [[ -n $lib ]] || continue
  dir=$(dirname "$lib")
  [[ :$ld_path: == *:"$dir":* ]] || ld_path=${ld_path:+$ld_path:}$dir
done
[[ -n ${LD_LIBRARY_PATH:-} ]] && ld_path=${ld_path:+$ld_path:}$LD_LIBRARY_PATH
ours=(env)
[[ -n $ld_path ]] && ours=(env "LD_LIBRARY_PATH=$ld_path")
# Several GPU test processes at a time (and 4 sanitizer runs): OpenBLAS (the tests' CPU
# references) gets a share of the cores each rather than all of them.
gpu_jobs=4
ours+=("OPENBLAS_NUM_THREADS=$(($(nproc) / gpu_jobs > 0 ? $(nproc) / gpu_jobs : 1))")
[[ -n $sanitizer ]] && ours+=("MNIST_COMPUTE_SANITIZER=$sanitizer")
# nvidia-smi lists the GPU, so a gpu test that finds no device it can use (a driver older than
# the CUDA runtime the build links) fails with the runtime's reason instead of skipping.
ours+=("MNIST_GPU_TESTS_MUST_RUN=1")
export PATH="$cuda_root/bin:$PATH"

# --- 2. build ---------------------------------------------------------------------------------
deps=/tmp/mnist-deps
if [[ ! -f .gpu-kit/deps.tar.gz ]]; then
  note "- build: FAIL (.gpu-kit/deps.tar.gz missing: run bash profiling/gpu_kit.sh here and carry .gpu-kit)"
  exit 1
fi
rm -rf "$deps" && mkdir -p "$deps" && tar -xzf .gpu-kit/deps.tar.gz -C "$deps"
arch=x86_64-linux-gnu
configure=(cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_CUDA_ARCHITECTURES="${CMAKE_CUDA_ARCHITECTURES:-90}" -DCMAKE_CUDA_COMPILER="$nvcc"
  -DCMAKE_PREFIX_PATH="$deps/usr"
  -DCBLAS_INCLUDE_DIR="$deps/usr/include/$arch/openblas-pthread"
  -DOPENBLAS_STATIC_LIBRARY="$deps/usr/lib/$arch/openblas-pthread/libopenblas.a"
  -DZLIB_ROOT="$deps/usr" -DZLIB_USE_STATIC_LIBS=ON
  -DMNIST_GTEST_SOURCE_DIR="$deps/usr/src/googletest/googletest")
[[ -z $cudnn_header && -f $deps/usr/local/cuda/include/cudnn.h ]] && cudnn_header=$deps/usr/local/cuda/include/cudnn.h
[[ -n $cudnn_header ]] && configure+=(-DCUDNN_INCLUDE_DIR="$(dirname "$cudnn_header")")
[[ -n $cudnn_lib ]] && configure+=(-DCUDNN_LIBRARY="$cudnn_lib")
# A toolkit without cuBLAS's development link (a pip-installed one keeps only libcublas.so.13,
# perhaps in another wheel's folder): name the libraries and the header to FindCUDAToolkit.
if ! compgen -G "$cuda_root/lib*/libcublas.so" >/dev/null && ! compgen -G "$cuda_root/targets/*/lib/libcublas.so" >/dev/null; then
  [[ -n $cublas_lib ]] && configure+=(-DCUDA_cublas_LIBRARY="$cublas_lib")
  [[ -n $cublaslt_lib ]] && configure+=(-DCUDA_cublasLt_LIBRARY="$cublaslt_lib")
fi
if [[ -n $cublas_header && $cublas_header != "$cuda_root"/* ]]; then
  extra_include="-isystem $(dirname "$cublas_header")"
  configure+=(-DCMAKE_CXX_FLAGS="$extra_include" -DCMAKE_CUDA_FLAGS="$extra_include")
fi
failed_build() {  # what CMake saw, for the next session to fix the kit or this script
  note "- $1 failed: the CMake cache's CUDA and cuDNN entries are in session.log"
  grep -E '^(CUDA|CUDAToolkit|CUDNN|CMAKE_CUDA_COMPILER|CMAKE_CXX_COMPILER|OPENBLAS|CBLAS|ZLIB)[A-Za-z_]*:' \
    build-gpu/CMakeCache.txt 2>/dev/null
  exit 1
}
stage "configure" 60 "${configure[@]}" || failed_build configure
# Nothing runs without the build: it may take all but the 20 s that packing $OUT needs.
stage "build" $(($(left) - 20)) cmake --build build-gpu -j "$(nproc)" || failed_build build
if ((build_only)); then note "- stopped after the build (--build-only)"; exit 0; fi

# --- 3. the gpu tests -------------------------------------------------------------------------
# 4 at a time on the one GPU (each gtest case is its own process; the determinism tests compare
# runs inside one process, so sharing the GPU does not touch them), 90 s a test instead of
# ctest's 1500. --stop-time makes ctest itself stop 8 s before the cap and still write its
# summary and JUnit file; the tests it never started are missing from both (the count says).
if wants tests; then
  rm -f build-gpu/ctest-gpu.xml
  t=$(capped 150)
  stop_at=$(date -d "@$(($(date +%s) + t - 8))" +%H:%M:%S)
  # Each gpu test writes GoogleTest's XML to build-gpu/gtest-xml/ (CMakeLists.txt): the
  # properties the tests record, such as the cuDNN algorithms chosen, are only there.
  rm -rf build-gpu/gtest-xml
  stage "ctest -L gpu" "$t" "${ours[@]}" ctest --test-dir build-gpu -L gpu -j "$gpu_jobs" --timeout 90 \
    --stop-time "$stop_at" --output-on-failure --output-junit "$repo/build-gpu/ctest-gpu.xml"
  # (ctest -N rewrites LastTest.log: the run's copy first.)
  cp build-gpu/Testing/Temporary/LastTest.log "$extras/LastTest-gpu.log" 2>/dev/null
  total=$(timeout 30 "${ours[@]}" ctest --test-dir build-gpu -N -L gpu 2>/dev/null | grep -c 'Test *#')
  note "  - JUnit: $(junit_counts build-gpu/ctest-gpu.xml), of $total gpu tests (any missing never started)"
fi

# --- 4. memcheck ------------------------------------------------------------------------------
# The other check only this machine can make, before the measurements: memcheck with leak check
# over each test executable's Gpu* tests, then one short epoch of `mnist train` per model, 4
# runs at a time, 60 s each at most; what the cap leaves undone is listed as skipped.
# sanitizers TOOLS CAP: gpu_check.sh's sanitizer runs of TOOLS; it stops starting runs 10 s
# before the cap, so that it still prints its summary table.
sanitizers() {
  local tools=$1 t log
  t=$(capped "$2")
  log=$extras/gpu_check-${tools//,/-}.log
  stage --min 30 --tee "$log" "compute-sanitizer ${tools//,/ }" "$t" "${ours[@]}" MNIST_GPU_CHECK_SKIP_CTEST=1 \
    bash profiling/gpu_check.sh --tools "$tools" --targets tests,train --budget $((t - 10)) --run-timeout 60 \
    --jobs "$gpu_jobs" build-gpu
  # Each sanitizer run's result as gpu_check.sh recorded it (also when the stage was cut short).
  grep -E '^>>> (memcheck|racecheck|initcheck|synccheck|compute-sanitizer)[^(]*: ' "$log" 2>/dev/null |
    sed 's/^>>> /  - /' >>"$summary"
}
wants sanitizers && sanitizers memcheck 90

# --- 5. measurements --------------------------------------------------------------------------
if wants bench; then
  stage --tee "$out/bench_kernels.txt" "bench_kernels" 45 "${ours[@]}" build-gpu/profiling/bench_kernels
  stage --out "$out/bench_train.json" "bench_train" 45 "${ours[@]}" build-gpu/profiling/bench_train --json
  stage --out "$out/bench_cnn.json" "bench_cnn" 60 "${ours[@]}" build-gpu/profiling/bench_cnn --json
  # Whether the epochs really replayed a CUDA graph (a failed capture falls back to launches).
  for json in bench_train bench_cnn; do
    note "  - $json: $(grep -o '"cuda_graph":[a-z]*' "$out/$json.json" 2>/dev/null | head -n1 || echo 'no cuda_graph field')"
    # What each phase of a step costs (Trainer::time_step_phases; profiling/README.md).
    note "  - $json step phases, us/step: $(python3 -c '
import json, sys
phases = json.load(open(sys.argv[1])).get("step_phases", {}).get("phases", [])
print(", ".join("%s %.2f" % (p["phase"], p["us_per_step"]) for p in phases) or "none")' "$out/$json.json" 2>/dev/null ||
      echo 'not read')"
  done
fi
if wants train; then
  runs=$out/train_default.log
  : >"$runs"
  for variant in "seed-1-a" "seed-1-b" "no-graph"; do
    extra=()
    [[ $variant == no-graph ]] && extra=(--no-graph)
    echo "=== mnist train --device gpu ${extra[*]} ($variant)" >>"$runs"
    stage --tee "$runs" "mnist train (default, $variant)" 45 "${ours[@]}" build-gpu/mnist train --device gpu \
      --no-report --force --out "build-gpu/runs/$variant" "${extra[@]}"
  done
  for variant in "seed-1-a" "seed-1-b" "no-graph"; do
    note "  - $variant: $(tail -n1 "build-gpu/runs/$variant/metrics.jsonl" 2>/dev/null || echo "no metrics")"
  done
fi

# Ours against PyTorch (eager, compile) and JAX, which the GPU image has: 3 timed epochs, 1 round.
# Last of the planned stages: what its cap cuts is the least missed. compare.sh runs our
# bench_train (so it gets our LD_LIBRARY_PATH) and the peers through $PYTHON, here a wrapper that
# puts the machine's own LD_LIBRARY_PATH back for them.
if wants compare; then
  peer_python=/tmp/mnist-peer-python
  {
    echo '#!/usr/bin/env bash'
    echo '# Written by gpu_session.sh: the peers with the machine'"'"'s LD_LIBRARY_PATH, not ours.'
    if [[ -n ${LD_LIBRARY_PATH+set} ]]; then printf 'export LD_LIBRARY_PATH=%q\n' "$LD_LIBRARY_PATH"; else echo 'unset LD_LIBRARY_PATH'; fi
    printf 'exec %q "$@"\n' "${PYTHON:-python3}"
  } >"$peer_python"
  chmod +x "$peer_python"
  for model in mlp cnn; do
    echo "=== compare.sh --model $model" >>"$out/compare.md"
    stage --min 60 --tee "$out/compare.md" "compare.sh --model $model" 180 "${ours[@]}" \
      MNIST_BUILD_DIR="$repo/build-gpu" PYTHON="$peer_python" \
      bash profiling/compare.sh --model "$model" --epochs 3 --rounds 1 --run-timeout 75
  done
fi

# --- 6. with what is left ---------------------------------------------------------------------
# racecheck and synccheck over our kernels only (gpu_check.sh's --kernels), initcheck over all.
wants sanitizers && sanitizers racecheck,synccheck,initcheck "$(left)"
# CI runs these; on this machine they only add a check of the build (and python3 may lack the
# report's matplotlib, so the report tests can fail here for that alone).
if wants cputests; then
  rm -f build-gpu/ctest-cpu.xml
  t=$(capped "$(left)")
  stage --min 60 "ctest -L cpu" "$t" "${ours[@]}" OPENBLAS_NUM_THREADS=1 ctest --test-dir build-gpu -L cpu -j "$(nproc)" --timeout 60 \
    --stop-time "$(date -d "@$(($(date +%s) + t - 8))" +%H:%M:%S)" --output-on-failure \
    --output-junit "$repo/build-gpu/ctest-cpu.xml"
  [[ -f build-gpu/ctest-cpu.xml ]] && cp build-gpu/Testing/Temporary/LastTest.log "$extras/LastTest-cpu.log"
fi
((failures == 0))
