#!/usr/bin/env bash
# The GPU machine's build, checked on this machine (no GPU needed): gpu_session.sh --build-only
# against a stand-in CUDA toolkit laid out as when cuDNN and cuBLAS come as Python wheels and
# the toolkit keeps only the versioned runtime:
#   - the toolkit (a temporary folder): nvcc copied (it finds its own files from the folder it
#     lies in), everything else linked to /usr/local/cuda, but its library folder has no
#     libcudart.so (libcudart.so.13 only), no cuBLAS and no cuDNN, its include folder no cuDNN;
#   - site-packages/nvidia/cublas/lib: libcublas.so.13 and libcublasLt.so.13 alone;
#   - site-packages/nvidia/cudnn/{lib,include}: cuDNN 9's libraries (.so.9 alone) and headers.
# gpu_session.sh searches only the stand-in (MNIST_CUDA_SEARCH_DIRS), so the build must take the
# versioned files it finds there. It is a whole build: minutes on a few cores.
#
#   bash profiling/gpu_kit.sh && bash profiling/wheel_build_check.sh [--budget SECONDS (3000)]
#
# It starts from an empty build-gpu (removed first). Logs go to build-gpu/wheel-check/ (gpu_session.sh's summary.md and session.log); exit status
# that of gpu_session.sh --build-only.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
budget=3000
while (($#)); do
  case $1 in
    --budget) budget=${2:?--budget needs seconds}; shift 2 ;;
    *) echo "wheel_build_check: unknown option $1" >&2; exit 2 ;;
  esac
done
real=$(readlink -f /usr/local/cuda)
lib=targets/x86_64-linux/lib
include=targets/x86_64-linux/include
if [[ ! -x $real/bin/nvcc || ! -d $real/$lib ]]; then
  echo "wheel_build_check: no CUDA toolkit at /usr/local/cuda" >&2
  exit 2
fi
stand_in=$(mktemp -d)
trap 'rm -rf "$stand_in"' EXIT
cuda=$stand_in/cuda
wheels=$stand_in/site-packages/nvidia
mkdir -p "$cuda/bin" "$cuda/$lib" "$cuda/$include" "$wheels/cublas/lib" "$wheels/cudnn/lib" "$wheels/cudnn/include"

# The toolkit's top level and bin/, linked, but for nvcc (copied) and the folders rebuilt below.
for entry in "$real"/*; do
  case ${entry##*/} in bin | lib | lib64 | include | targets) ;; *) ln -s "$entry" "$cuda/" ;; esac
done
for entry in "$real"/bin/*; do
  case ${entry##*/} in nvcc | nvcc.profile) cp "$entry" "$cuda/bin/" ;; *) ln -s "$entry" "$cuda/bin/" ;; esac
done
# The library folder without the unversioned runtime, without cuBLAS and cuDNN; the include
# folder without cuDNN's headers.
for entry in "$real/$lib"/*; do
  case ${entry##*/} in libcudart.so | libcublas* | libcudnn*) ;; *) ln -s "$entry" "$cuda/$lib/" ;; esac
done
for entry in "$real/$include"/*; do
  case ${entry##*/} in cudnn*) ;; *) ln -s "$entry" "$cuda/$include/" ;; esac
done
ln -s "$lib" "$cuda/lib"
ln -s "$lib" "$cuda/lib64"
ln -s "$include" "$cuda/include"
# The wheels: versioned libraries only (links resolved to the files), cuDNN with its headers
# (copied: a link would lead gpu_session.sh back to the toolkit's include folder).
for name in libcublas.so.13 libcublasLt.so.13; do ln -s "$(readlink -f "$real/$lib/$name")" "$wheels/cublas/lib/$name"; done
for path in "$real/$lib"/libcudnn*.so.9; do ln -s "$(readlink -f "$path")" "$wheels/cudnn/lib/${path##*/}"; done
cp "$real/$include"/cudnn*.h "$wheels/cudnn/include/"

echo "wheel_build_check: stand-in toolkit $cuda, wheels $wheels"
# A fresh build-gpu: a cache from another toolkit would answer every question before the search.
rm -rf "$repo/build-gpu"
mkdir -p "$repo/build-gpu/wheel-check"
PATH="$cuda/bin:$PATH" MNIST_CUDA_SEARCH_DIRS="$stand_in/site-packages" OUT="$repo/build-gpu/wheel-check" \
  bash "$repo/profiling/gpu_session.sh" --build-only --budget "$budget"
