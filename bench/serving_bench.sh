#!/usr/bin/env bash
# Serving benchmarks on this machine (results quoted in the serving report):
#   1. the frontend's own cost: minimal requests (1 prompt token, 1 output token) against a fake
#      worker that answers at once, one at a time (latency) and 16 at a time (requests/s);
#   2. TTFT and inter-token latency on the CPU demo model shape (random:tiny-qwen3), remote prefill
#      (prefill worker + decode worker, KV over TCP) vs local prefill on the decode worker.
# Usage: bench/serving_bench.sh [build_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
T=$BUILD/tandem
B=$BUILD/bench/serving_bench
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
start_frontend() {
  rm -f "$DIR/ready.json"
  $T --log-level warn frontend --port 0 --ready-file "$DIR/ready.json" "$@" & PIDS+=($!)
  for _ in $(seq 100); do [ -s "$DIR/ready.json" ] && break; sleep 0.05; done
  HTTP=$(python3 -c "import json;print(json.load(open('$DIR/ready.json'))['http_port'])")
  REG=$(python3 -c "import json;print(json.load(open('$DIR/ready.json'))['registry_port'])")
}
wait_workers() {
  for _ in $(seq 400); do
    n=$(curl -s "localhost:$HTTP/metrics" | awk '/^tandem_workers\{/ {s+=$2} END {print s+0}')
    [ "$n" -ge "$1" ] && return; sleep 0.05
  done
  echo "workers did not register" >&2; exit 1
}
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }

echo "== 1. frontend overhead: fake worker answering at once"
start_frontend
$T --log-level warn worker --role both --engine fake --frontend 127.0.0.1:$REG & PIDS+=($!)
wait_workers 1
$B --port "$HTTP" --requests 200 --concurrency 1 --prompt-len 1 --max-tokens 1 > /dev/null  # warm-up
$B --port "$HTTP" --requests 2000 --concurrency 1 --prompt-len 1 --max-tokens 1
$B --port "$HTTP" --requests 5000 --concurrency 16 --prompt-len 1 --max-tokens 1
$B --port "$HTTP" --requests 500 --concurrency 16 --prompt-len 1 --max-tokens 16 --stream
stop_all

[ "${SKIP_OVERHEAD:-0}" = 1 ] || true
echo "== 2. CPU demo model (random:tiny-qwen3), 1 thread per worker: remote vs local prefill"
start_frontend --max-local-prefill 1000
$T --log-level warn worker --role prefill --model random:tiny-qwen3 --threads 1 --num-kv-blocks 2048 --frontend 127.0.0.1:$REG & PIDS+=($!)
$T --log-level warn worker --role decode --model random:tiny-qwen3 --threads 1 --num-kv-blocks 2048 --frontend 127.0.0.1:$REG & PIDS+=($!)
wait_workers 2
echo "-- remote prefill (1200-token prompts > --max-local-prefill 1000)"
$B --port "$HTTP" --requests 2 --concurrency 1 --prompt-len 1200 --max-tokens 4 --stream --seed 9 > /dev/null  # warm-up
$B --port "$HTTP" --requests 10 --concurrency 1 --prompt-len 1200 --max-tokens 32 --stream --seed 1
curl -s -X POST "localhost:$HTTP/v1/tandem/router" -d '{"max_local_prefill":100000}' > /dev/null
# Fresh prompts: the decode worker's prefix cache holds the remote run's ones.
echo "-- local prefill (new 1200-token prompts, --max-local-prefill raised to 100000)"
$B --port "$HTTP" --requests 10 --concurrency 1 --prompt-len 1200 --max-tokens 32 --stream --seed 2
curl -s "localhost:$HTTP/metrics" | grep -E '^tandem_(remote|local)_prefills_total|^tandem_kv_transfer_(bytes_total|seconds_sum|seconds_count)'
