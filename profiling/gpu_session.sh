#!/usr/bin/env bash
# Everything the open issues ask of a GPU machine, in one call of the device tool, each stage
# time-boxed so the call ends inside its limit; logs go to $OUT (they come back to the caller).
#
#   here (after bash .ci/setup):  bash profiling/gpu_kit.sh
#   device tool:                  run(command="bash profiling/gpu_session.sh",
#                                     carry=["data/mnist", ".gpu-kit"], timeout_s=600)
#
# Stages, in order of what matters most if time runs short:
#   1. environment: GPU, driver, CUDA, cuDNN and cuBLAS found on the machine;
#   2. build: unpack .gpu-kit (gpu_kit.sh), configure build-gpu for sm_90 against it, build;
#   3. the gpu-labelled tests, then the cpu-labelled ones (ctest);
#   4. measurements: bench_kernels, bench_train (default MLP), bench_cnn (default CNN, 15
#      epochs), the README's default `mnist train` (20 epochs) twice with one seed and once with
#      --no-graph (the three must print the same metrics), compare.sh (ours, PyTorch, JAX);
#   5. compute-sanitizer (profiling/gpu_check.sh's stages 3 and 4) with what is left.
# Files in $OUT (at most 8 come back): session.log (everything), summary.md, bench_kernels.txt,
# bench_train.json, bench_cnn.json, train_default.log, compare.md, sanitizers.log.
# session.log starts with where the machine keeps cuBLAS, cuDNN and the sanitizers. Nothing here
# is recorded anywhere: copy what was seen into profiling/RESULTS.md.
#
# Options: --budget SECONDS (default 540: the whole script; later stages get what is left)
#          --build-only (stop after stage 2: how the kit is checked on a machine without a GPU)
#          --stages LIST (default tests,bench,train,compare,sanitizers: which of stages 3 to 5 run,
#          always in that order; e.g. a second call with --stages sanitizers gives them the time)
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1
budget=540
build_only=0
stages=tests,bench,train,compare,sanitizers
while (($#)); do
  case $1 in
    --budget) budget=${2:?--budget needs seconds}; shift 2 ;;
    --build-only) build_only=1; shift ;;
    --stages) stages=${2:?--stages needs a list}; shift 2 ;;
    *) echo "gpu_session: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done

for name in ${stages//,/ }; do
  case $name in
    tests | bench | train | compare | sanitizers) ;;
    *) echo "gpu_session: unknown stage $name in --stages (tests, bench, train, compare, sanitizers)" >&2; exit 2 ;;
  esac
done
wants() { [[ ,$stages, == *,$1,* ]]; }

if ((!build_only)) && ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; }; then
  echo "gpu_session: no NVIDIA GPU here (nvidia-smi lists none); nothing run (--build-only checks the build alone)"
  exit 1
fi

out=${OUT:-$repo/build-gpu/session}
mkdir -p "$out"
exec > >(tee -a "$out/session.log") 2>&1
left() { echo $((budget - SECONDS)); }
summary=$out/summary.md
echo "# gpu_session $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" >"$summary"
note() { echo "$*" | tee -a "$summary"; }
# stage NAME SECONDS COMMAND...: runs it under timeout (SECONDS, or less when less of the budget
# is left), notes pass/FAIL/timed out with its time.
stage() {
  local name=$1 limit=$2 started=$SECONDS rc
  shift 2
  (($(left) < limit)) && limit=$(left)
  if ((limit < 5)); then note "- $name: skipped (no time left)"; return 1; fi
  echo ">>> $name (up to ${limit}s)"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  case $rc in
    0) note "- $name: pass ($((SECONDS - started)) s)" ;;
    124 | 137) note "- $name: TIMED OUT after $((SECONDS - started)) s" ;;
    *) note "- $name: FAIL (exit $rc, $((SECONDS - started)) s)" ;;
  esac
  return "$rc"
}

# --- 1. environment ---------------------------------------------------------------------------
nvcc=$(command -v nvcc || true)
for candidate in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do
  [[ -z $nvcc && -x $candidate ]] && nvcc=$candidate
done
if [[ -z $nvcc ]]; then note "- environment: FAIL (no nvcc)"; exit 1; fi
cuda_root=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
# Where the machine keeps what the build links (logged whole, so that a failed build can be
# fixed from this log alone): the toolkit's own folders first, then pip's nvidia-* wheels.
echo ">>> CUDA files on this machine"
cuda_files=/tmp/mnist-cuda-files.txt
# Python packages other than NVIDIA's wheels are skipped: a venv holds ~10^5 files, and file
# system calls are slow under gVisor.
find "$cuda_root" /usr/local /opt /usr/lib /usr/include \
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
# gVisor (kernel 4.4.0) refuses compute-sanitizer and ncu (KINDS.md); Firecracker runs both.
runtime="not gVisor"
[[ $(uname -r) == 4.4.0 ]] && runtime="gVisor: expect compute-sanitizer to refuse the device"
{
  echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n1)"
  echo "- kernel: $(uname -r) ($runtime)"
  echo "- nvcc: $nvcc, $("$nvcc" --version | tail -n2 | head -n1); host compiler: $(c++ --version 2>&1 | head -n1)"
  echo "- cuDNN: header ${cudnn_header:-NOT FOUND (the kit copy is used)}, library ${cudnn_lib:-NOT FOUND}"
  echo "- cuBLAS: ${cublas_lib:-NOT FOUND}, header ${cublas_header:-NOT FOUND}"
  echo "- cmake: $(cmake --version | head -n1), ninja: $(ninja --version 2>&1)"
} | tee -a "$summary"
lib_dirs=()
for lib in "$cudnn_lib" "$cublas_lib"; do [[ -n $lib ]] && lib_dirs+=("$(dirname "$lib")"); done
LD_LIBRARY_PATH=$(IFS=:; echo "${lib_dirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH PATH="$cuda_root/bin:$PATH"

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
stage "configure" "$(left)" "${configure[@]}" || failed_build configure
stage "build" "$(left)" cmake --build build-gpu -j "$(nproc)" || failed_build build
if ((build_only)); then note "- stopped after the build (--build-only)"; exit 0; fi

# --- 3. tests ---------------------------------------------------------------------------------
if wants tests; then
  stage "ctest -L gpu" "$(($(left) / 3))" ctest --test-dir build-gpu -L gpu --output-on-failure
  stage "ctest -L cpu" "$(($(left) / 4))" ctest --test-dir build-gpu -L cpu -j "$(nproc)" --output-on-failure
fi

# --- 4. measurements --------------------------------------------------------------------------
if wants bench; then
  stage "bench_kernels" 90 bash -c "build-gpu/profiling/bench_kernels >'$out/bench_kernels.txt' 2>&1"
  stage "bench_train" 120 bash -c "build-gpu/profiling/bench_train --json >'$out/bench_train.json'"
  stage "bench_cnn" 180 bash -c "build-gpu/profiling/bench_cnn --json >'$out/bench_cnn.json'"
  # Whether the epochs really replayed a CUDA graph (a failed capture falls back to launches).
  for json in bench_train bench_cnn; do
    note "  - $json: $(grep -o '"cuda_graph":[a-z]*' "$out/$json.json" 2>/dev/null | head -n1 || echo 'no cuda_graph field')"
  done
fi
if wants train; then
  runs=$out/train_default.log
  : >"$runs"
  for variant in "seed-1-a" "seed-1-b" "no-graph"; do
    extra=()
    [[ $variant == no-graph ]] && extra=(--no-graph)
    echo "=== mnist train --device gpu ${extra[*]} ($variant)" >>"$runs"
    stage "mnist train (default, $variant)" 120 bash -c \
      "build-gpu/mnist train --device gpu --no-report --force --out build-gpu/runs/$variant ${extra[*]} >>'$runs' 2>&1"
  done
  for variant in "seed-1-a" "seed-1-b" "no-graph"; do
    note "  - $variant: $(tail -n1 "build-gpu/runs/$variant/metrics.jsonl" 2>/dev/null || echo "no metrics")"
  done
fi

# Ours against PyTorch (eager, compile) and JAX, which the GPU image has: 3 timed epochs, 1 round.
if wants compare; then
  for model in mlp cnn; do
    echo "=== compare.sh --model $model" >>"$out/compare.md"
    stage "compare.sh --model $model" 180 env MNIST_BUILD_DIR="$repo/build-gpu" PYTHON="${PYTHON:-python3}" \
      bash profiling/compare.sh --model "$model" --epochs 3 --rounds 1 >>"$out/compare.md" 2>&1
  done
fi

# --- 5. compute-sanitizer ---------------------------------------------------------------------
if wants sanitizers; then
  stage "gpu_check.sh sanitizers" "$(left)" env MNIST_GPU_CHECK_SKIP_CTEST=1 bash profiling/gpu_check.sh build-gpu \
    >"$out/sanitizers.log" 2>&1
  # Each sanitizer run's result as gpu_check.sh recorded it (also when the stage was cut short).
  grep -E '^>>> (memcheck|racecheck|initcheck|synccheck|compute-sanitizer)[^(]*: ' "$out/sanitizers.log" |
    sed 's/^>>> /  - /' >>"$summary"
fi
note "- done in $SECONDS s"
