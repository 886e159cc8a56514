#!/usr/bin/env bash
# Nsight Systems timeline of a short training run, then its kernel and NVTX summaries.
#
#   profiling/nsys.sh [mnist train options]
#
# Runs `build/mnist train --device gpu --epochs 2 --out runs/nsys-<time>` under
# `nsys profile --trace=cuda,cublas,nvtx`, with the options given passed through (an --epochs
# or --out of yours replaces the default; add --no-graph to see the forward / backward /
# optimizer range of every step). The report, <run dir>/profile.nsys-rep, sits beside the run's
# metrics.jsonl and report.json: open it in the Nsight Systems GUI. Then prints
# `nsys stats --report cuda_gpu_kern_sum,nvtx_sum` of it: time per kernel and per NVTX range.
# profiling/README.md says which range is which phase.
#
# Without a GPU, or without nsys: one line, exit 1. nsys is looked for on PATH, then in
# /usr/local/cuda*/bin, /usr/local/cuda*/nsight-systems*/bin and /opt/nvidia/nsight-systems*.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_gpu nsys.sh
# The globs stay unquoted on purpose: each expands to the installed versions, if any.
if ! nsys=$(find_tool nsys /usr/local/cuda/bin/nsys /usr/local/cuda-*/bin/nsys \
    /usr/local/cuda*/nsight-systems*/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys \
    /opt/nvidia/nsight-systems*/*/bin/nsys /opt/nvidia/nsight-systems*/*/target-linux-x64/nsys); then
  echo "nsys.sh: Nsight Systems (nsys) not found on PATH, in /usr/local/cuda*/ or /opt/nvidia/nsight-systems*/;" \
    "install the CUDA toolkit's Nsight Systems (apt package cuda-nsight-systems-<major>-<minor>) or NVIDIA's" \
    "download from https://developer.nvidia.com/nsight-systems" >&2
  exit 1
fi

args=("$@")
has_option --epochs "$@" || args=(--epochs 2 "${args[@]}")
has_option --device "$@" || args=(--device gpu "${args[@]}")
run_dir=$(option_value --out "$@")
if [[ -z $run_dir ]]; then
  run_dir=runs/nsys-$(timestamp)
  args+=(--out "$run_dir")
fi

build_targets mnist
cd "$repo"
# No report drawing (python, matplotlib) inside the profile, where this mnist has the option.
train_help=$("$build_dir/mnist" train --help 2>&1 || true)
if [[ $train_help == *--no-report* ]] && ! has_option --no-report "${args[@]}"; then args+=(--no-report); fi
echo ">>> $nsys profile: mnist train ${args[*]}"
# --cuda-graph-trace=node: the kernels inside the epoch's CUDA graph appear one by one.
# --sample=none --cpuctxsw=none: no CPU sampling (needs perf permissions, adds nothing here).
"$nsys" profile --trace=cuda,cublas,nvtx --cuda-graph-trace=node --sample=none --cpuctxsw=none \
  --force-overwrite=true --output "$run_dir/profile" "$build_dir/mnist" train "${args[@]}"

report=$run_dir/profile.nsys-rep
if [[ ! -f $report ]]; then
  echo "nsys.sh: nsys wrote no $report" >&2
  exit 1
fi
echo ">>> $nsys stats: $report"
# Report names since Nsight Systems 2023; the older ones (gpukernsum, nvtxsum) as a fallback.
if ! "$nsys" stats --force-export=true --report cuda_gpu_kern_sum,nvtx_sum "$report"; then
  "$nsys" stats --force-export=true --report gpukernsum,nvtxsum "$report"
fi
echo
echo "timeline: $report (Nsight Systems GUI). With the CUDA graph the per-step ranges (forward, backward,"
echo "optimizer) show on every step of epoch 1 (stream launches) and once more at its end, when the graph is"
echo "captured; later epochs replay it. Pass --no-graph to see them on every step of every epoch."
