#!/usr/bin/env bash
# Reproduces structured_bench.txt: constrained-decoding cost on Qwen3's vocabulary (one core, no GPU).
#   bench/results/2026-12-02-cpu-structured/run.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/../../.."
BUILD=${1:-build}
cmake --build "$BUILD" -j2 --target structured_bench
uptime
"$BUILD"/bench/structured_bench --reps 5 | tee bench/results/2026-12-02-cpu-structured/structured_bench.txt
