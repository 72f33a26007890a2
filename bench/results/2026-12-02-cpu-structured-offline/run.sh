#!/usr/bin/env bash
# Reproduces this folder's figures: the decode step at 64 sequences with and without a JSON schema,
# through `tandem bench latency` on the CPU demo model (random:tiny-qwen3: Qwen3's 151,936-token
# vocabulary, tiny layers). Greedy (argmax, the default) and temperature 1 (host sampler) rows, each
# without and with bench/schemas/person.json (its shortest document is 82 bytes, so --output-len 96
# lets every document end valid: the grammar counts a byte a token when it keeps the end in reach).
# Needs build/tandem and the Qwen3 tokenizer (scripts/fetch_data.sh).
#   bench/results/2026-12-02-cpu-structured-offline/run.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/../../.."
BUILD=${1:-build}
OUT=bench/results/2026-12-02-cpu-structured-offline
uptime | tee "$OUT/uptime.txt"
for temperature in 0 1; do
  for schema in none person; do
    name="t${temperature}-${schema}"
    args=()
    [ "$schema" != none ] && args=(--guided-json "bench/schemas/$schema.json" --save-outputs "$OUT/$name-outputs.jsonl")
    "$BUILD"/tandem bench latency --model random:tiny-qwen3 --batch-size 64 --input-len 32 --output-len 96 \
      --num-iters 2 --num-iters-warmup 1 --temperature "$temperature" "${args[@]}" --output-json "$OUT/$name.json" \
      | tee "$OUT/$name.txt"
  done
done
uptime | tee -a "$OUT/uptime.txt"
