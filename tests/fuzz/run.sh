#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/CMakeLists.txt, with clang++) into build-fuzz/ and
# runs each for a bounded time from the committed seeds in tests/fuzz/corpus/<name>/; what the
# fuzzer finds beyond them goes to build-fuzz/corpus/<name>/, never into the repository.
# A crash, sanitizer report, leak, timeout or out-of-memory fails: the input is kept in
# build-fuzz/artifacts/<name>/ and printed here, and the script exits non-zero.
#
#   bash tests/fuzz/run.sh [seconds per harness, default 60]
#
# To reproduce a failure: build-fuzz/fuzz_<name> <the kept input>. .ci/run calls this script.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}

cmake -S tests/fuzz -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build build-fuzz

# name and the largest input worth trying: IDX files of a few images (raw or gzip); the
# smallest whole checkpoint (784-1-10) is 10 KB; the rows of a 28x28 RGBA PNG are 3,164 bytes.
# The harnesses run side by side, sharing the cores.
harnesses=("idx 4096" "checkpoint 16384" "image 4096")
pids=()
for harness in "${harnesses[@]}"; do
  read -r name max_len <<<"$harness"
  corpus=build-fuzz/corpus/$name
  artifacts=build-fuzz/artifacts/$name
  rm -rf "$artifacts"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzz_$name: ${seconds}s from tests/fuzz/corpus/$name (max_len $max_len)"
  build-fuzz/fuzz_"$name" "$corpus" tests/fuzz/corpus/"$name" -max_total_time="$seconds" -max_len="$max_len" \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/" >build-fuzz/fuzz_"$name".log 2>&1 &
  pids+=($!)
done

passed=0
failed=0
for i in "${!harnesses[@]}"; do
  read -r name _ <<<"${harnesses[$i]}"
  log=build-fuzz/fuzz_$name.log
  artifacts=build-fuzz/artifacts/$name
  if wait "${pids[$i]}"; then
    passed=$((passed + 1))
    echo "fuzz_$name: passed: $(grep -m1 '^Done' "$log" || echo "no summary"); corpus $(find build-fuzz/corpus/"$name" -type f | wc -l) inputs"
  else
    failed=$((failed + 1))
    echo "fuzz_$name: FAILED; the end of its log ($log):"
    tail -n 60 "$log"
    for input in "$artifacts"/*; do
      [[ -f $input ]] || continue
      echo "fuzz_$name: failing input kept as $input ($(stat -c %s "$input") bytes), first 512 bytes:"
      od -A x -t x1z -N 512 "$input"
    done
  fi
done

echo "fuzz: $passed passed, $failed failed"
((failed == 0))
