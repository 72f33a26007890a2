#!/bin/bash
# The experiments prepared without a GPU on 2026-11-28, in one call on a one-GPU machine (about 6 minutes
# on an H100), from a carried bundle (tools/prepare_device_bundle.sh: BUNDLE/bin/tandem with
# cuda_kernels_test, BUNDLE/lib):
#   1. kernels     cuda_kernels_test: every kernel test, including the GEMV's bulk-prefetch variant (4)
#   2. prefetch    batch-1 decode latency of Qwen3-0.6B and Llama-3.1-8B with and without
#                  TANDEM_GEMV_PREFETCH=1, alternated twice in the same run (ABAB) so drift shows
#   3. steps       TANDEM_PROFILE_STEPS=1 at batch 1 (both models) and batch 64 (Qwen3): the share of a
#                  graph decode step the GPU is busy, against host preparation and the engine's gap
#   4. gemm_graph  cuBLAS at the batched decode shapes, eager against replayed from a graph
# Logs and JSON in DIR; the figures that decide each question are printed last.
#
#   tools/gpu_experiments.sh DIR [BUNDLE]      run from the repository root; BUNDLE defaults to .device/cuda
#
# Skip steps with SKIP="kernels prefetch steps gemm_graph".
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
if [[ $skip != *" steps "* ]]; then
  latency qwen3_b1_steps random:qwen3-0.6b TANDEM_PROFILE_STEPS=1
  latency llama_b1_steps random:llama-3.1-8b TANDEM_PROFILE_STEPS=1
  echo "== qwen3_b64_steps"
  TANDEM_PROFILE_STEPS=1 timeout "${STEP_TIMEOUT:-300}" "$tandem" --log-level info bench latency --model random:qwen3-0.6b \
    --device cuda:0 --batch-size 64 --input-len 128 --output-len 256 --num-iters 3 > "$out/qwen3_b64_steps.log" 2>&1
  echo "   rc=$?"
fi
if [[ $skip != *" gemm_graph "* ]]; then
  echo "== gemm_graph"
  timeout 200 "$bundle/bin/cuda_kernels_test" --gtest_also_run_disabled_tests --gtest_filter='DecodeGemmBench.*' \
    > "$out/gemm_graph.log" 2>&1
  echo "   rc=$?"
fi

echo "== summary"
for f in "$out"/*_b1_base_*.json "$out"/*_b1_prefetch_*.json; do
  [[ -f $f ]] || continue
  printf '%-28s %s ms/token\n' "$(basename "$f" .json)" \
    "$(python3 -c 'import json,sys; print(next(r["value"] for r in json.load(open(sys.argv[1])) if r["figure"]=="decode_ms_per_token_median"))' "$f")"
done
grep -H "cuda step timing:" "$out"/*_steps.log 2>/dev/null | sed 's|^.*/\([^/]*\)\.log:.*cuda step timing: |\1 |'
grep -hE "eager .* graph" "$out/gemm_graph.log" 2>/dev/null
