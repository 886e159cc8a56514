#!/usr/bin/env bash
# Requests per second and latency of `mnist serve` under 1, 8 and 32 concurrent localhost clients,
# each sending POST /predict with a PNG as fast as it is answered. A benchmark, not a test: it
# needs wrk (apt-get install wrk) and stops by itself after --seconds per load.
#
#   profiling/serve_bench.sh [--model CKPT] [--device cpu|gpu|auto] [--seconds 10] [--image PNG]
#                            [--batch-window MS] [--binary PATH]
#
# Without --model it trains the default MLP (784-512-512-10) for one epoch: the forward pass is
# the default model's. The image defaults to docs/drawn-4.png (300×300, decoded and prepared on
# every request, as the page's drawings are). wrk runs on the same machine as the server.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=build/mnist
model=
device=cpu
seconds=10
image=docs/drawn-4.png
window=
while (($#)); do
  case $1 in
    --model) model=${2:?--model needs a checkpoint}; shift 2 ;;
    --device) device=${2:?--device needs cpu, gpu or auto}; shift 2 ;;
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --image) image=${2:?--image needs a PNG}; shift 2 ;;
    --batch-window) window=${2:?--batch-window needs milliseconds}; shift 2 ;;
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    *) echo "serve_bench: unknown option $1" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { echo "serve_bench: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[[ -x $binary ]] || { echo "serve_bench: $binary not built; run bash .ci/setup" >&2; exit 1; }
out=runs/serve-bench-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
if [[ -z $model ]]; then
  "$binary" train --device "$device" --epochs 1 --no-report --out "$out/model" >/dev/null
  model=$out/model/best.ckpt
fi
options=(--model "$model" --device "$device" --port 0 --threads 64)
[[ -n $window ]] && options+=(--batch-window "$window")
"$binary" serve "${options[@]}" >"$out/serve.out" 2>"$out/serve.log" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "^serving" "$out/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[^ ]*' "$out/serve.out")
[[ -n $url ]] || { echo "serve_bench: the server did not start: $(cat "$out/serve.log")" >&2; exit 1; }
head -1 "$out/serve.out"
cat >"$out/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/png"
local file = io.open(os.getenv("MNIST_BENCH_BODY"), "rb")
wrk.body = file:read("*a")
file:close()
LUA
printf '| clients | requests/s | p50 | p99 | requests |\n|--:|--:|--:|--:|--:|\n'
for clients in 1 8 32; do
  threads=$((clients < 2 ? 1 : 2))
  MNIST_BENCH_BODY=$image wrk -t "$threads" -c "$clients" -d "${seconds}s" --latency -s "$out/post.lua" "${url}predict" \
    >"$out/wrk-$clients.txt"
  python3 - "$out/wrk-$clients.txt" "$clients" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rate = re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)
total = re.search(r"(\d+) requests in", text).group(1)
p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)
p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
note = f" ({errors.group(1)} not 200)" if errors else ""
print(f"| {sys.argv[2]} | {float(rate):.0f} | {p50} | {p99} | {total}{note} |")
PY
done
curl -s "${url}healthz" 2>/dev/null | sed 's/^/healthz: /' || true
echo
