#!/usr/bin/env bash
# KV-aware routing on the CPU (issue 22): `tandem bench serve --dataset-name prefix` against four
# aggregated workers of the demo model (tiny-qwen3, random weights) under `tandem serve`, once per
# --router-mode plus the oracle (prefix-hash: every group of one prefix to one worker). Per mode it
# records the bench result (TTFT p50/p99) and the frontend's /metrics before and after, from which
# summarize.py computes the prefix-cache hit rate (vllm:prefix_cache_hits_total / queries) and the load
# balance (prompt tokens per worker).
#
# Usage (from the repository root, after building `tandem`):
#   bench/results/2026-12-02-cpu-routing/run.sh [modes...]
# Environment: PROMPTS (96), CONCURRENCY (8), NUM_GROUPS (8), KV_BLOCKS per worker (192), OUT (a
# folder for this run's files), SERVE_ARGS (more `tandem serve` flags).
set -euo pipefail
cd "$(dirname "$0")/../../.."
TANDEM=${TANDEM:-build/tandem}
HERE=bench/results/2026-12-02-cpu-routing
OUT=${OUT:-$HERE}  # where this run's files go
NUM_GROUPS=${NUM_GROUPS:-8}
mkdir -p "$OUT"
PORT=${PORT:-18231}
PROMPTS=${PROMPTS:-96}
CONCURRENCY=${CONCURRENCY:-8}
KV_BLOCKS=${KV_BLOCKS:-192}
# SERVE_ARGS: more flags for `tandem serve`, e.g. "--frontend-arg=--kv-overlap-score-weight=2"
MODES=("$@")
[ ${#MODES[@]} -eq 0 ] && MODES=(kv least-loaded round-robin random prefix-hash)

for mode in "${MODES[@]}"; do
  log="$OUT/serve-$mode.log"
  "$TANDEM" serve --port "$PORT" --num-prefill-workers 0 --num-decode-workers 4 --threads 1 --router-mode "$mode" \
    --worker-arg=--num-kv-blocks="$KV_BLOCKS" ${SERVE_ARGS:-} >"$log" 2>&1 &
  serve=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    sleep 0.5
  done
  # Every worker registered (health answers with one).
  for _ in $(seq 600); do
    n=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^tandem_workers\{/ {s += $2} END {print s + 0}')
    [ "$n" -ge 4 ] && break
    sleep 0.5
  done
  curl -s "http://127.0.0.1:$PORT/metrics" >"$OUT/metrics-before-$mode.txt"
  "$TANDEM" bench serve --port "$PORT" --tokenizer data/tokenizers/qwen3 --dataset-name prefix \
    --prefix-len 700 --prefix-suffix-len 40 --prefix-num-prefixes "$NUM_GROUPS" --prefix-output-len 16 \
    --num-prompts "$PROMPTS" --max-concurrency "$CONCURRENCY" --request-rate inf --ignore-eos --seed 1 \
    --num-warmups 0 --progress none --label "$mode" --save-result "$OUT/result-$mode.json" >"$OUT/bench-$mode.txt" 2>&1
  sleep 1  # one more heartbeat, so the workers' counters are current
  curl -s "http://127.0.0.1:$PORT/metrics" >"$OUT/metrics-after-$mode.txt"
  kill -TERM "$serve"
  wait "$serve" || true
done
python3 "$HERE/summarize.py" "$OUT" "${MODES[@]}" | tee "$OUT/summary.md"
