#!/bin/bash
# The experiments prepared without a GPU on 2026-11-28, in one call on a one-GPU machine (about 6 minutes
# on an H100), from a carried bundle (tools/prepare_device_bundle.sh: BUNDLE/bin/tandem with
# cuda_kernels_test, BUNDLE/lib):
#   1. kernels     cuda_kernels_test: every kernel test, including the GEMV's bulk-prefetch variant (4)
#   2. prefetch    batch-1 decode latency of Qwen3-0.6B and Llama-3.1-8B with and without
#                  TANDEM_GEMV_PREFETCH=1, alternated twice in the same run (ABAB) so drift shows
#   3. profile     tools/gpu_profile.sh's steps_b1 and gemm_graph runs: TANDEM_PROFILE_STEPS=1 at batch 1
#                  (both models) and batch 64 (Qwen3), the share of a graph decode step the GPU is busy
#                  against host preparation and the engine's gap; cuBLAS at the batched decode shapes,
#                  eager against replayed from a graph
# Logs and JSON in DIR; the figures that decide each question are printed last.
#
#   tools/gpu_experiments.sh DIR [BUNDLE]      run from the repository root; BUNDLE defaults to .device/cuda
#
# Skip steps with SKIP="kernels prefetch profile".
set -u
out=${1:?usage: gpu_experiments.sh DIR [BUNDLE]}
bundle=${2:-.device/cuda}
skip=" ${SKIP:-} "
mkdir -p "$out"
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
tandem=$bundle/bin/tandem
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
latency() {  # latency NAME MODEL [ENV=VALUE...]: batch-1 decode, 128 in / 256 out, 3 iterations
  local name=$1 model=$2; shift 2
  echo "== $name: $* tandem bench latency --model $model"
  env "$@" timeout "${STEP_TIMEOUT:-300}" "$tandem" --log-level info bench latency --model "$model" --device cuda:0 \
    --batch-size 1 --input-len 128 --output-len 256 --num-iters 3 --output-json "$out/$name.json" > "$out/$name.log" 2>&1
  echo "   rc=$? $(grep -E "decode_ms_per_token_median" "$out/$name.log")"
}

if [[ $skip != *" kernels "* ]]; then
  echo "== kernels"
  timeout 200 "$bundle/bin/cuda_kernels_test" --gtest_output=json:"$out/kernels.json" > "$out/kernels.log" 2>&1
  echo "   rc=$? $(grep -E "PASSED|FAILED" "$out/kernels.log" | head -5 | tr '\n' ' ')"
fi
if [[ $skip != *" prefetch "* ]]; then
  for round in 1 2; do
    latency "qwen3_b1_base_$round" random:qwen3-0.6b TANDEM_GEMV_PREFETCH=0
    latency "qwen3_b1_prefetch_$round" random:qwen3-0.6b TANDEM_GEMV_PREFETCH=1
  done
  for round in 1 2; do
    latency "llama_b1_base_$round" random:llama-3.1-8b TANDEM_GEMV_PREFETCH=0
    latency "llama_b1_prefetch_$round" random:llama-3.1-8b TANDEM_GEMV_PREFETCH=1
  done
fi
# The step timing and the graphed cuBLAS bench are gpu_profile.sh's own runs (steps_b1, gemm_graph).
if [[ $skip != *" profile "* ]]; then
  SKIP="qwen_b1 qwen_b256 llama_b1 llama_prefill" tools/gpu_profile.sh "$out/profile" "$bundle"
fi

echo "== summary"
for f in "$out"/*_b1_base_*.json "$out"/*_b1_prefetch_*.json; do
  [[ -f $f ]] || continue
  printf '%-28s %s ms/token\n' "$(basename "$f" .json)" \
    "$(python3 -c 'import json,sys; print(next(r["value"] for r in json.load(open(sys.argv[1])) if r["figure"]=="decode_ms_per_token_median"))' "$f")"
done
cat "$out/profile/profile.txt" 2>/dev/null
grep -hE "eager .* graph" "$out/profile/gemm_graph.log" 2>/dev/null
