# Sourced by the profiling scripts (not run on its own): the repository and build paths, the
# GPU check, finding the Nsight tools, building targets, and option look-ups.
# shellcheck shell=bash

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The preset's build directory unless MNIST_BUILD_DIR names another one.
build_dir=${MNIST_BUILD_DIR:-$repo/build}

# require_gpu NAME: returns when nvidia-smi lists a GPU; otherwise one line on stderr, exit 1.
require_gpu() {
  local listing
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "$1: no NVIDIA GPU here (nvidia-smi not found); nothing to measure" >&2
    exit 1
  fi
  if ! listing=$(nvidia-smi -L 2>&1) || ! grep -q '^GPU ' <<<"$listing"; then
    echo "$1: no usable NVIDIA GPU here (nvidia-smi -L: ${listing%%$'\n'*}); nothing to measure" >&2
    exit 1
  fi
}

# find_tool NAME CANDIDATE...: prints NAME's path when it is on PATH, else the last executable
# candidate (globs expand in sorted order, so the last is usually the newest version); fails
# when there is none.
find_tool() {
  local name=$1 found="" candidate
  shift
  if found=$(command -v "$name" 2>/dev/null); then
    echo "$found"
    return 0
  fi
  for candidate in "$@"; do
    if [[ -f $candidate && -x $candidate ]]; then found=$candidate; fi
  done
  [[ -n $found ]] && echo "$found"
}

# build_targets TARGET...: configures the build directory when it has no CMake cache yet (the
# `default` preset for ./build), then builds the targets. Build output goes to stderr, so that
# what the scripts print on stdout stays machine-readable.
build_targets() {
  if [[ ! -f $build_dir/CMakeCache.txt ]]; then
    if [[ $build_dir == "$repo/build" ]]; then
      (cd "$repo" && cmake --preset default) >&2
    else
      cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >&2
    fi
  fi
  if [[ $build_dir == "$repo/build" ]]; then
    (cd "$repo" && cmake --build --preset default --target "$@") >&2
  else
    cmake --build "$build_dir" --target "$@" >&2
  fi
}

# has_option NAME ARG...: whether ARG... holds NAME or NAME=VALUE.
has_option() {
  local name=$1 arg
  shift
  for arg in "$@"; do
    if [[ $arg == "$name" || $arg == "$name="* ]]; then return 0; fi
  done
  return 1
}

# option_value NAME ARG...: prints the value of the last NAME VALUE or NAME=VALUE in ARG...
option_value() {
  local name=$1 value="" take=0 arg
  shift
  for arg in "$@"; do
    if ((take)); then
      value=$arg
      take=0
    elif [[ $arg == "$name" ]]; then
      take=1
    elif [[ $arg == "$name="* ]]; then
      value=${arg#"$name="}
    fi
  done
  echo "$value"
}

timestamp() { date +%Y%m%d-%H%M%S; }
