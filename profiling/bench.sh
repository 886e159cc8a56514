#!/usr/bin/env bash
# The GPU trainer's one-run benchmark: builds bench_train when needed (the `default` preset,
# ./build) and runs it from the repository root, so --data-dir defaults to data/mnist.
#
#   profiling/bench.sh [--epochs 10] [--batch-size 128] [--hidden 512,512] [--tf32] [--no-graph] [--json]
#
# Prints ms/epoch (median, min, max), images/s, the achieved TFLOP/s against the GEMM rate and
# copy bandwidth measured in the same run, the test-set evaluation time and accuracy, and last a
# RESULT line (see profiling/README.md). With --json: one JSON object on stdout and nothing
# else there (the build's output goes to stderr). Without a GPU: one line, exit 1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_gpu bench.sh
build_targets bench_train
cd "$repo"
exec "$build_dir/profiling/bench_train" "$@"
