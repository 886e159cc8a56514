#!/usr/bin/env bash
# Nsight Compute on the project's own kernels in one training step: time, DRAM throughput and
# achieved occupancy per launch, as a table.
#
#   profiling/ncu.sh [--launch-skip 7] [--launch-count 7] [--kernels REGEX] [-- mnist train options]
#
# Runs `build/mnist train --device gpu --no-graph --epochs 1 --train-subset 1280` (ten steps;
# options after `--` are added) under
#   ncu --clock-control none --kernel-name regex:<ours> --launch-skip S --launch-count N
#       --metrics dram__throughput.avg.pct_of_peak_sustained_elapsed,
#                 sm__warps_active.avg.pct_of_peak_sustained_active, gpu__time_duration.sum
# --clock-control none: the GPU keeps the clocks it runs training at (ncu locks them to base
# otherwise). The default model's step launches 7 of our kernels (the gather with the step
# counter, two bias-ReLU-dropout forwards, the classifier head forward (output layer and
# softmax-CE with the batch's totals) and backward, one bias-ReLU-dropout backward with its bias
# gradient, Adam; the 5 GEMMs are cuBLAS's), so the defaults skip step 1 and profile step 2; for
# other --hidden widths, 2·hidden layers + 3 launches make a step.
# Each launch is replayed by ncu, so its numbers are for that kernel alone with cold caches.
#
# The report (.ncu-rep, for the Nsight Compute GUI), its CSV and the training run go to
# runs/ncu-<time>/. Without a GPU, without ncu, or without permission to read the GPU's
# performance counters: one line, exit 1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Our kernels of a training step (kernels/*.cu): adam_kernel (adam.cu), gather_{vec4,scalar}
# (gather.cu), {forward,backward}_{vec4,scalar} and backward_bias_grad (bias_relu_dropout.cu),
# head_{forward,backward}_kernel (classifier_head.cu), bias_grad_kernel (the CNN's), and
# eval_metrics_kernel and softmax_ce_kernel of the evaluations. Matched against the function
# name, anywhere in it.
kernels='adam_kernel|gather_(vec4|scalar)|(forward|backward)_(vec4|scalar)|backward_bias_grad|head_(forward|backward)_kernel|bias_grad_kernel|softmax_ce_(totals_)?kernel|eval_metrics_kernel'
launch_skip=7
launch_count=7
metrics=dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum
extra=()
while (($#)); do
  case $1 in
    --launch-skip) launch_skip=${2:?--launch-skip needs a number}; shift 2 ;;
    --launch-count) launch_count=${2:?--launch-count needs a number}; shift 2 ;;
    --kernels) kernels=${2:?--kernels needs a regular expression}; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "ncu.sh: unknown option $1 (see ncu.sh --help)" >&2; exit 2 ;;
  esac
done

require_gpu ncu.sh
if ! ncu=$(find_tool ncu /usr/local/cuda/bin/ncu /usr/local/cuda-*/bin/ncu /usr/local/cuda*/nsight-compute*/ncu \
    /opt/nvidia/nsight-compute/*/ncu /opt/nvidia/nsight-compute*/ncu); then
  echo "ncu.sh: Nsight Compute (ncu) not found on PATH, in /usr/local/cuda*/ or /opt/nvidia/nsight-compute/;" \
    "install the CUDA toolkit's Nsight Compute (apt package cuda-nsight-compute-<major>-<minor>) or NVIDIA's" \
    "download from https://developer.nvidia.com/nsight-compute" >&2
  exit 1
fi

build_targets mnist
cd "$repo"
# No report drawing (python, matplotlib) after the run, where this mnist has the option.
no_report=()
train_help=$("$build_dir/mnist" train --help 2>&1 || true)
if [[ $train_help == *--no-report* ]] && ! has_option --no-report "${extra[@]}"; then no_report=(--no-report); fi
out_dir=runs/ncu-$(timestamp)
mkdir -p "$out_dir"
log=$out_dir/ncu.log
echo ">>> $ncu on our kernels, launches $((launch_skip + 1))..$((launch_skip + launch_count)) (log: $log)"
status=0
"$ncu" --clock-control none --kernel-name "regex:$kernels" --launch-skip "$launch_skip" \
  --launch-count "$launch_count" --metrics "$metrics" --export "$out_dir/kernels" --force-overwrite \
  "$build_dir/mnist" train --device gpu --no-graph --epochs 1 --train-subset 1280 --out "$out_dir/run" \
  "${no_report[@]}" "${extra[@]}" >"$log" 2>&1 || status=$?
if grep -q ERR_NVGPUCTRPERM "$log"; then
  echo "ncu.sh: no permission to read the GPU's performance counters (ERR_NVGPUCTRPERM): run as root, or see" \
    "https://developer.nvidia.com/ERR_NVGPUCTRPERM" >&2
  exit 1
fi
report=$out_dir/kernels.ncu-rep
if ((status != 0)) || [[ ! -f $report ]]; then
  tail -n 20 "$log" >&2
  echo "ncu.sh: ncu failed (exit $status; full log: $log)" >&2
  exit 1
fi

csv=$out_dir/kernels.csv
"$ncu" --import "$report" --csv --page raw --print-units base >"$csv"
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "ncu.sh: $python not found, so no table; the numbers are in $csv"
  exit 0
fi
"$python" - "$csv" <<'PY'
# One row per profiled launch, in launch order, from `ncu --csv --page raw`: a header row of
# column names, a row of units, then one row per kernel launch.
import csv
import sys

rows = list(csv.reader(open(sys.argv[1], newline="")))
NAMES = ("Kernel Name", "Function Name", "Name")
header = next((r for r in rows if any(n in r for n in NAMES)), None)
if header is None:
    sys.exit("ncu.sh: no kernel in the report (did the --kernels regex match nothing?)")
col = {name: i for i, name in enumerate(header)}
name_col = next(col[n] for n in NAMES if n in col)
start = rows.index(header) + 1
units = rows[start] if start < len(rows) and not rows[start][0].strip().isdigit() else [""] * len(header)
launches = [r for r in rows[start:] if r and r[0].strip().isdigit()]


def value(row, name):
    i = col.get(name)
    if i is None or i >= len(row) or not row[i].strip():
        return None
    try:
        return float(row[i].replace(",", ""))
    except ValueError:
        return None


def microseconds(row):
    t = value(row, "gpu__time_duration.sum")
    if t is None:
        return None
    unit = units[col["gpu__time_duration.sum"]].strip().lower() if "gpu__time_duration.sum" in col else ""
    scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "s": 1e6, "second": 1e6}
    return t * scale.get(unit, 1e-3)


def short(name):
    name = name.split("(")[0]
    return name.split("::")[-1] or name


def fmt(x, digits):
    return "n/a" if x is None else f"{x:.{digits}f}"


print("| # | kernel | grid | block | time (us) | DRAM % of peak | warps active % of peak |")
print("|---:|---|---|---|---:|---:|---:|")
total = 0.0
for n, r in enumerate(launches, 1):
    us = microseconds(r)
    total += us or 0.0
    print(f"| {n} | {short(r[name_col])} | {r[col['Grid Size']] if 'Grid Size' in col else ''} | "
          f"{r[col['Block Size']] if 'Block Size' in col else ''} | {fmt(us, 2)} | "
          f"{fmt(value(r, 'dram__throughput.avg.pct_of_peak_sustained_elapsed'), 1)} | "
          f"{fmt(value(r, 'sm__warps_active.avg.pct_of_peak_sustained_active'), 1)} |")
print(f"\n{len(launches)} launches, {total:.2f} us in all (each replayed alone by ncu: no launch gaps, cold caches)")
PY
echo "report: $report (Nsight Compute GUI); CSV: $csv"
