#!/usr/bin/env bash
# Every check and measurement that needs a GPU, for a GPU machine without Debian packages that
# is lent for one time-boxed call (it has the CUDA toolkit, cuDNN, CMake, ninja and Python
# wheels, no network, and its tree has no .git). Each stage runs under its own cap, the caps add
# up to no more than the budget, and logs go to $OUT, so the call always comes back with what
# the stages that finished found.
#
#   here (after bash .ci/setup):  bash profiling/gpu_kit.sh           (the build's packages)
#   there, with data/mnist and .gpu-kit copied along, in a call of 600 s at most:
#                                 bash profiling/gpu_session.sh --budget 540
#   here, to see the plan:        bash profiling/gpu_session.sh --dry-run --budget 540
#
# Pass --budget = the call's limit - 60 (the 60 s cover a stage overrunning its cap by
# timeout's 10 s grace and the transfer of $OUT back). The default, 540, fits a 600 s call;
# GPU_SESSION_BUDGET sets it too. Plan for one call: there is no second one.
#
# The build comes first in two parts: `mnist`, the benchmarks and the test executables that
# have gpu tests (one ninja call, -k 0), then, just before the CPU tests, everything else (-k 0).
# A target that fails to compile is noted and fails the run, but stops nothing: a stage
# whose binary was not built prints "skipped: build-gpu/... was not built" and the others run.
# Then the stages, in order of value (caps for --budget 540; a smaller budget keeps the caps of
# the earlier stages and cuts the later ones, a larger one gives the extra to the last stage):
#   stage                                             cap   expected on 16 cores
#   environment (find nvcc, cuDNN, cuBLAS, sanitizer)  15   5-15 s
#   configure                                          25   ~10 s
#   build: mnist, benchmarks, gpu test executables    115   ~90 s
#   ctest -L gpu (-j 4, 60 s a test)                   65   40-60 s
#   mnist train, default, three times (seed 1 twice,
#     --no-graph); their metrics.jsonl must agree
#     but for "seconds" (same_metrics.py)            30 each ~17 s each
#   bench_train                                        30   ~15 s
#   bench_kernels                                      25   ~15 s
#   compare.sh --model mlp (--run-timeout 20: what
#     is cut still prints the rows it finished)        50   cut
#   compute-sanitizer memcheck --leak-check full:
#     gpu tests, then 2 epochs of mnist train          45   cut at the cap
#   build: the rest                                    15   ~5 s
#   bench_cnn                                          25   ~20 s
#   ctest -L cpu                                       25   ~25 s (python3 may lack matplotlib)
#   racecheck, synccheck (our kernels), initcheck       0   what earlier stages left unused
#   packing $OUT                                       15   a few s
# Files in $OUT: summary.md (a line per stage, printed last too), session.log (everything, the
# ctest and sanitizer output included), bench_kernels.txt, bench_train.json, bench_cnn.json,
# train_default.log, compare.md, extras.tar.gz (ctest's JUnit files and LastTest logs, every
# sanitizer log, the training runs' metrics, compare.sh's run folders, the CMake cache, the list
# of CUDA files found). summary.md names the commit from .gpu-kit/COMMIT and lists tracked files
# changed since the kit was made. Nothing here is recorded anywhere: copy what was seen into
# profiling/RESULTS.md.
#
# Exit status: 0 when every stage that ran passed and every target built (a stage skipped for
# want of time does not count); 1 otherwise. --dry-run exits 0 after printing the plan.
#
# Options: --budget SECONDS (default $GPU_SESSION_BUDGET or 540: the whole script)
#          --dry-run (print the plan: the stages in order, each cap, the binary each uses and
#          whether it exists; no GPU, no build, nothing run)
#          --build-only (stop after the build: how the kit is checked on a machine without a GPU)
#          --stages LIST (default tests,train,bench,compare,sanitizers,cputests: which groups of
#          stages after the first build run, always in the order above)
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1
budget=${GPU_SESSION_BUDGET:-540}
build_only=0
dry_run=0
stages=tests,train,bench,compare,sanitizers,cputests
while (($#)); do
  case $1 in
    --budget) budget=${2:?--budget needs seconds}; shift 2 ;;
    --build-only) build_only=1; shift ;;
    --dry-run) dry_run=1; shift ;;
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
    *) echo "gpu_session: unknown stage $name in --stages (tests, train, bench, compare, sanitizers, cputests)" >&2; exit 2 ;;
  esac
done
wants() { [[ ,$stages, == *,$1,* ]]; }

# --- the plan -----------------------------------------------------------------------------------
# Each stage: id, the group --stages names it by (- : always runs), its cap for budget 540, the
# binary it runs (- : none of ours) and what it does. The caps add up to 540; caps() fits them
# to the budget.
plan=(
  "environment   -          15  -                           find nvcc, cuDNN, cuBLAS, compute-sanitizer"
  "configure     -          25  -                           cmake -S . -B build-gpu against the kit"
  "build         -         115  -                           mnist, the benchmarks, the gpu test executables (-k 0)"
  "ctest-gpu     tests      65  build-gpu/test_*            ctest -L gpu -j 4"
  "train-seed-1-a train     30  build-gpu/mnist             mnist train --device gpu (default, seed 1)"
  "train-seed-1-b train     30  build-gpu/mnist             the same again: the metrics must agree"
  "train-no-graph train     30  build-gpu/mnist             with --no-graph: the metrics must agree"
  "bench-train   bench      30  build-gpu/profiling/bench_train     bench_train --json"
  "bench-kernels bench      25  build-gpu/profiling/bench_kernels   bench_kernels"
  "compare       compare    50  build-gpu/profiling/bench_train     compare.sh --model mlp against PyTorch and JAX"
  "memcheck      sanitizers 45  build-gpu/mnist             compute-sanitizer memcheck --leak-check full (gpu_check.sh)"
  "build-rest    cputests   15  -                           the remaining targets (-k 0)"
  "bench-cnn     bench      25  build-gpu/profiling/bench_cnn       bench_cnn --json"
  "ctest-cpu     cputests   25  build-gpu/test_*(all)       ctest -L cpu"
  "sanitizers    sanitizers  0  build-gpu/mnist             racecheck, synccheck, initcheck: the time earlier stages left"
  "pack          -          15  -                           extras.tar.gz and summary.md into \$OUT"
)
declare -A cap=() group=() binary=() what=()
order=()
for line in "${plan[@]}"; do
  read -r id grp nominal bin rest <<<"$line"
  order+=("$id")
  group[$id]=$grp
  cap[$id]=$nominal
  binary[$id]=$bin
  what[$id]=$rest
done
# The caps for this budget: packing $OUT first (it must always happen), then each stage in order
# gets its cap, or what is left of the budget when that is less (a stage --stages leaves out gets
# 0); the last stage takes whatever remains, so the caps never add up to more than the budget.
remaining=$((budget - cap[pack]))
((remaining < 0)) && cap[pack]=$budget && remaining=0
for id in "${order[@]}"; do
  [[ $id == pack ]] && continue
  if [[ ${group[$id]} != - ]] && ! wants "${group[$id]}"; then
    cap[$id]=0
  elif [[ $id == sanitizers ]]; then
    cap[$id]=$remaining
  elif ((cap[$id] > remaining)); then
    cap[$id]=$remaining
  fi
  remaining=$((remaining - cap[$id]))
done
pack_reserve=${cap[pack]}

# The gpu test executables: each tests/test_*.cu with a TEST(Gpu...), as CMakeLists.txt names them.
gpu_tests=()
all_tests=()
for source in tests/test_*.cu; do
  all_tests+=("$(basename "$source" .cu)")
  if grep -q '^TEST(Gpu' "$source"; then gpu_tests+=("$(basename "$source" .cu)"); fi
done

if ((dry_run)); then
  echo "gpu_session plan for a budget of $budget s (stages in order; cap 0: skipped)"
  printf '%-15s %5s  %-36s %-8s %s\n' stage cap binary exists what
  total=0
  for id in "${order[@]}"; do
    bin=${binary[$id]} exists=-
    if [[ $bin == build-gpu/test_\** ]]; then  # how many of the test executables exist
      names=("${gpu_tests[@]}")
      [[ $bin == *'(all)' ]] && names=("${all_tests[@]}")
      count=0
      for name in "${names[@]}"; do [[ -x build-gpu/$name ]] && count=$((count + 1)); done
      exists="$count/${#names[@]}"
    elif [[ $bin != - ]]; then
      if [[ -x $bin ]]; then exists=yes; else exists=no; fi
    fi
    printf '%-15s %5d  %-36s %-8s %s\n' "$id" "${cap[$id]}" "$bin" "$exists" "${what[$id]}"
    total=$((total + cap[$id]))
  done
  echo "total of the caps: $total s of the $budget s budget"
  exit 0
fi

if ((!build_only)) && ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; }; then
  echo "gpu_session: no NVIDIA GPU here (nvidia-smi lists none); nothing run (--dry-run prints the plan, --build-only checks the build alone)"
  exit 1
fi

out=${OUT:-$repo/build-gpu/session}
mkdir -p "$out"
# Whatever is packed into $OUT/extras.tar.gz at the end (one file, so that $OUT stays at 8).
extras=$repo/build-gpu/session-extras
rm -rf "$extras" && mkdir -p "$extras"
exec > >(tee -a "$out/session.log") 2>&1
tee_pid=$!
# The time left to the stages: the budget less what has gone and the reserve for packing $OUT.
left() { echo $((budget - pack_reserve - SECONDS)); }
failures=0  # stages that failed or timed out, targets not built: the exit status is 0 only when none
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
# timeout (CAP seconds from the plan, or less when less of the budget is left; skipped when
# under --min, 5 by default), then notes pass/FAIL/TIMED OUT with its time in summary.md and session.log. The
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
  if ((limit < min)); then note "- $name: skipped (${limit} s: its cap or the budget left; needs $min)"; return 1; fi
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
# built NAME PATH...: whether every PATH was built; one line for each that was not, and the
# stage NAME is to be skipped.
built() {
  local name=$1 path missing=0
  shift
  for path in "$@"; do
    if [[ ! -x $path ]]; then
      note "- $name: skipped: ${path#"$repo"/} was not built"
      missing=1
    fi
  done
  return "$missing"
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
# system calls are slow under gVisor (hence the timeout: the stage's cap, less 5 s for the rest).
# MNIST_CUDA_SEARCH_DIRS replaces the folders searched besides the toolkit's (a check of the
# build with a wheel-shaped layout names its own: profiling/wheel_build_check.sh).
read -r -a search_dirs <<<"${MNIST_CUDA_SEARCH_DIRS:-/usr/local /opt /usr/lib /usr/include}"
timeout "$((cap[environment] > 5 ? cap[environment] - 5 : 1))" find "$cuda_root" "${search_dirs[@]}" \
  \( -path '*/site-packages/*' -not -path '*/site-packages/nvidia*' \) -prune -o \
  \( -name 'libcudnn.so*' -o -name cudnn.h -o -name cudnn_version.h -o -name 'libcublas.so*' \
  -o -name 'libcublasLt.so*' -o -name 'libcudart.so*' -o -name 'libcudart_static.a' -o -name cublas_v2.h -o -name nvToolsExt.h -o -name compute-sanitizer \
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
cudart_lib=$(first '/libcudart\.so(\.[0-9]+)?$')
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
  echo "- cuBLAS: ${cublas_lib:-NOT FOUND}, header ${cublas_header:-NOT FOUND}; CUDA runtime: ${cudart_lib:-NOT FOUND}"
  echo "- compute-sanitizer: ${sanitizer:-NOT FOUND}"
  echo "- cmake: $(cmake --version | head -n1), ninja: $(ninja --version 2>&1)"
} | tee -a "$summary"
# The folders of the cuDNN and cuBLAS we link, for our own programs only (ours=(env ...) in front
# of each): exported to everything, they would also reach compare.sh's PyTorch and JAX, whose
# wheels bring their own cuDNN and cuBLAS. No empty entries (an empty one means the current
# folder); the machine's own LD_LIBRARY_PATH stays after them.
ld_path=
for lib in "$cudnn_lib" "$cublas_lib" "$cublaslt_lib" "$cudart_lib"; do
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

# --- 2. configure and build -------------------------------------------------------------------
note "- environment: $SECONDS s (cap ${cap[environment]} s)"
deps=/tmp/mnist-deps
if [[ ! -f .gpu-kit/deps.tar.gz ]]; then
  note "- build: FAIL (.gpu-kit/deps.tar.gz missing: run bash profiling/gpu_kit.sh here and copy .gpu-kit along)"
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
# has_dev_file NAME: whether the toolkit's own library folders hold NAME (an unversioned link
# such as libcublas.so, or a static library).
has_dev_file() {
  compgen -G "$cuda_root/lib*/$1" >/dev/null || compgen -G "$cuda_root/targets/*/lib/$1" >/dev/null
}
# A toolkit without the development links (pip's wheels keep only libcublas.so.13 and
# libcudart.so.13, perhaps each in its own wheel's folder): name the libraries and the header to
# FindCUDAToolkit, whose find_library looks for the unversioned names only.
if ! has_dev_file libcublas.so; then
  [[ -n $cublas_lib ]] && configure+=(-DCUDA_cublas_LIBRARY="$cublas_lib")
  [[ -n $cublaslt_lib ]] && configure+=(-DCUDA_cublasLt_LIBRARY="$cublaslt_lib")
fi
# FindCUDAToolkit requires CUDA_CUDART (its own search for the runtime) and makes CUDA::cudart
# from CUDA_cudart_LIBRARY: both get the versioned file.
if ! has_dev_file libcudart.so && [[ -n $cudart_lib ]]; then
  configure+=(-DCUDA_CUDART="$cudart_lib" -DCUDA_cudart_LIBRARY="$cudart_lib")
fi
# CMake links CUDA programs with libcudart_static.a by default; without it (a wheel has none)
# the programs get the runtime from CUDA::cudart alone, which they link anyway.
has_dev_file libcudart_static.a || configure+=(-DCMAKE_CUDA_RUNTIME_LIBRARY=None)
if [[ -n $cublas_header && $cublas_header != "$cuda_root"/* ]]; then
  extra_include="-isystem $(dirname "$cublas_header")"
  configure+=(-DCMAKE_CXX_FLAGS="$extra_include" -DCMAKE_CUDA_FLAGS="$extra_include")
fi
cmake_entries() {  # what CMake saw, for the next run to fix the kit or this script
  note "  - the CMake cache's CUDA and cuDNN entries are in session.log"
  grep -E '^(CUDA|CUDAToolkit|CUDNN|CMAKE_CUDA_COMPILER|CMAKE_CUDA_RUNTIME|CMAKE_CXX_COMPILER|OPENBLAS|CBLAS|ZLIB|PNG|JPEG|MNIST_JCONFIG)[A-Za-z_]*:' \
    build-gpu/CMakeCache.txt 2>/dev/null
}
# Nothing builds without a configured tree: a failed configure ends the run (after packing).
# --build-only (a check of the build on a machine without a GPU, often with fewer cores) gives
# the configure and the build all the budget there is.
if ((build_only)); then cap[configure]=$(left) cap[build]=$(left) cap[build-rest]=$(left); fi
stage "configure" "${cap[configure]}" "${configure[@]}" || { cmake_entries; exit 1; }

# The first part of the build: what the most valuable stages run, in one ninja call that keeps
# going past a target that fails (-k 0), so that one broken test file costs that file alone.
first_targets=(mnist bench_train bench_kernels bench_cnn "${gpu_tests[@]}")
if ! stage "build (mnist, benchmarks, gpu tests)" "${cap[build]}" \
    cmake --build build-gpu -j "$(nproc)" --target "${first_targets[@]}" -- -k 0; then
  cmake_entries
  note "  - the stages whose binaries were built run all the same"
fi
if ((build_only)); then
  stage "build (the rest)" "${cap[build-rest]}" cmake --build build-gpu -j "$(nproc)" -- -k 0
  note "- stopped after the build (--build-only)"
  exit "$((failures > 0))"
fi

# --- 3. the gpu tests -------------------------------------------------------------------------
# 4 at a time on the one GPU (each gtest case is its own process; the determinism tests compare
# runs inside one process, so sharing the GPU does not touch them), 60 s a test instead of
# ctest's 1500. --stop-time makes ctest itself stop 8 s before the cap and still write its
# summary and JUnit file; the tests it never started are missing from both (the count says).
# A gpu test executable that was not built is named here, and ctest reports its tests as not run.
if wants tests; then
  present=()
  for name in "${gpu_tests[@]}"; do
    if built "ctest -L gpu" "build-gpu/$name"; then present+=("$name"); fi
  done
  if ((${#present[@]} == 0)); then
    note "- ctest -L gpu: skipped: no gpu test executable was built"
  else
    rm -f build-gpu/ctest-gpu.xml
    t=$(capped "${cap[ctest-gpu]}")
    stop_at=$(date -d "@$(($(date +%s) + t - 8))" +%H:%M:%S)
    # Each gpu test writes GoogleTest's XML to build-gpu/gtest-xml/ (CMakeLists.txt): the
    # properties the tests record, such as the cuDNN algorithms chosen, are only there.
    rm -rf build-gpu/gtest-xml
    stage "ctest -L gpu" "$t" "${ours[@]}" ctest --test-dir build-gpu -L gpu -j "$gpu_jobs" --timeout 60 \
      --stop-time "$stop_at" --output-on-failure --output-junit "$repo/build-gpu/ctest-gpu.xml"
    # (ctest -N rewrites LastTest.log: the run's copy first.)
    cp build-gpu/Testing/Temporary/LastTest.log "$extras/LastTest-gpu.log" 2>/dev/null
    total=$(timeout 30 "${ours[@]}" ctest --test-dir build-gpu -N -L gpu 2>/dev/null | grep -c 'Test *#')
    note "  - JUnit: $(junit_counts build-gpu/ctest-gpu.xml), of $total gpu tests (any missing never started)"
  fi
fi

# --- 4. the default training run, three times: the same metrics ------------------------------
# Seed 1 twice, then with --no-graph (stream launches instead of the epoch's CUDA graph): the
# trainer is deterministic, so the three metrics.jsonl must agree in every field but "seconds".
if wants train && built "mnist train" build-gpu/mnist; then
  runs=$out/train_default.log
  : >"$runs"
  metrics=()
  for variant in seed-1-a seed-1-b no-graph; do
    extra=()
    [[ $variant == no-graph ]] && extra=(--no-graph)
    echo "=== mnist train --device gpu ${extra[*]} ($variant)" >>"$runs"
    rm -rf "build-gpu/runs/$variant"
    stage --tee "$runs" "mnist train (default, $variant)" "${cap[train-$variant]}" "${ours[@]}" build-gpu/mnist \
      train --device gpu --no-report --force --out "build-gpu/runs/$variant" "${extra[@]}"
    metrics+=("build-gpu/runs/$variant/metrics.jsonl")
  done
  for file in "${metrics[@]}"; do note "  - ${file#build-gpu/runs/}: $(tail -n1 "$file" 2>/dev/null || echo "no metrics")"; done
  if agreement=$(python3 profiling/same_metrics.py "${metrics[@]}" 2>&1); then
    note "- mnist train metrics: pass ($agreement)"
  else
    note "- mnist train metrics: FAIL: $agreement"
    failures=$((failures + 1))
  fi
fi

# --- 5. measurements --------------------------------------------------------------------------
# bench_json NAME: whether NAME's epochs really replayed a CUDA graph (a failed capture falls
# back to launches), and what each phase of a step costs (Trainer::time_step_phases).
bench_json() {
  local json=$out/$1.json
  note "  - $1: $(grep -o '"cuda_graph":[a-z]*' "$json" 2>/dev/null | head -n1 || echo 'no cuda_graph field')"
  note "  - $1 step phases, us/step: $(python3 -c '
import json, sys
phases = json.load(open(sys.argv[1])).get("step_phases", {}).get("phases", [])
print(", ".join("%s %.2f" % (p["phase"], p["us_per_step"]) for p in phases) or "none")' "$json" 2>/dev/null ||
    echo 'not read')"
}
if wants bench && built "bench_train" build-gpu/profiling/bench_train; then
  stage --out "$out/bench_train.json" "bench_train" "${cap[bench-train]}" "${ours[@]}" build-gpu/profiling/bench_train --json
  bench_json bench_train
fi
if wants bench && built "bench_kernels" build-gpu/profiling/bench_kernels; then
  stage --tee "$out/bench_kernels.txt" "bench_kernels" "${cap[bench-kernels]}" "${ours[@]}" build-gpu/profiling/bench_kernels
fi

# Ours against PyTorch (eager, compile) and JAX, which the GPU image has: 3 timed epochs, 1 round,
# the MLP only (the CNN's runs take minutes). compare.sh runs our bench_train (so it gets our
# LD_LIBRARY_PATH) and the peers through $PYTHON, here a wrapper that puts the machine's own
# LD_LIBRARY_PATH back for them.
if wants compare && built "compare.sh" build-gpu/profiling/bench_train; then
  peer_python=/tmp/mnist-peer-python
  {
    echo '#!/usr/bin/env bash'
    echo '# Written by gpu_session.sh: the peers with the machine'"'"'s LD_LIBRARY_PATH, not ours.'
    if [[ -n ${LD_LIBRARY_PATH+set} ]]; then printf 'export LD_LIBRARY_PATH=%q\n' "$LD_LIBRARY_PATH"; else echo 'unset LD_LIBRARY_PATH'; fi
    printf 'exec %q "$@"\n' "${PYTHON:-python3}"
  } >"$peer_python"
  chmod +x "$peer_python"
  echo "=== compare.sh --model mlp" >>"$out/compare.md"
  stage --min 30 --tee "$out/compare.md" "compare.sh --model mlp" "${cap[compare]}" "${ours[@]}" \
    MNIST_BUILD_DIR="$repo/build-gpu" PYTHON="$peer_python" \
    bash profiling/compare.sh --model mlp --epochs 3 --rounds 1 --run-timeout 20
fi

# --- 6. compute-sanitizer ---------------------------------------------------------------------
# memcheck with leak check over each test executable's Gpu* tests, then 2 epochs of `mnist
# train` per model (the second replays the epoch's CUDA graph), 4 runs at a time; what the cap
# leaves undone is listed as skipped.
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
if wants sanitizers && built "compute-sanitizer memcheck" build-gpu/mnist; then
  sanitizers memcheck "${cap[memcheck]}"
fi

# --- 7. the rest: the remaining targets, bench_cnn, the CPU tests -----------------------------
if wants cputests; then
  stage "build (the rest)" "${cap[build-rest]}" cmake --build build-gpu -j "$(nproc)" -- -k 0
fi
if wants bench && built "bench_cnn" build-gpu/profiling/bench_cnn; then
  stage --out "$out/bench_cnn.json" "bench_cnn" "${cap[bench-cnn]}" "${ours[@]}" build-gpu/profiling/bench_cnn --json
  bench_json bench_cnn
fi
# CI runs these; on this machine they only add a check of the build (and python3 may lack the
# report's matplotlib, so the report tests can fail here for that alone). The tune tests need
# Optuna and a PostgreSQL server from Debian, which this machine lacks: -LE tune leaves them out.
if wants cputests; then
  rm -f build-gpu/ctest-cpu.xml
  t=$(capped "${cap[ctest-cpu]}")
  stage --min 15 "ctest -L cpu" "$t" "${ours[@]}" OPENBLAS_NUM_THREADS=1 ctest --test-dir build-gpu -L cpu -LE tune -j "$(nproc)" \
    --timeout 60 --stop-time "$(date -d "@$(($(date +%s) + t - 8))" +%H:%M:%S)" --output-on-failure \
    --output-junit "$repo/build-gpu/ctest-cpu.xml"
  [[ -f build-gpu/ctest-cpu.xml ]] && cp build-gpu/Testing/Temporary/LastTest.log "$extras/LastTest-cpu.log"
fi
# racecheck and synccheck over our kernels only (gpu_check.sh's --kernels), initcheck over all,
# in whatever time the stages before left unused.
if wants sanitizers && [[ -x build-gpu/mnist ]]; then
  sanitizers racecheck,synccheck,initcheck "$(left)"
fi
((failures == 0))
