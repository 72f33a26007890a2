#!/bin/bash
# Kernel tests and the decode-step timing in one call on a one-GPU machine (about 3 minutes on an H200),
# from a carried bundle (tools/gpu/prepare_device_bundle.sh: BUNDLE/bin/tandem with cuda_kernels_test, BUNDLE/lib):
#   1. kernels     cuda_kernels_test: every kernel test
#   2. profile     tools/gpu/gpu_profile.sh's steps_b1 and gemm_graph runs: TANDEM_PROFILE_STEPS=1 at batch 1
#                  (both models) and batch 64 (Qwen3), the share of a graph decode step the GPU is busy
#                  against host preparation and the engine's gap; cuBLAS at the batched decode shapes,
#                  eager against replayed from a CUDA graph
# Logs and JSON in DIR; the figures that decide each question are printed last. Its first run (2026-11-28,
# H200, commit 36bce9d; bench/results/2026-11-28-h200/baseline/exp/) also A/B-tested a bulk L2 prefetch in
# the batch-1 GEMV, which lost (Qwen3-0.6B 1.044-1.052 -> 1.079-1.083 ms, Llama-3.1-8B 4.92-4.94 -> 5.62-5.63)
# and was removed.
#
#   tools/gpu/gpu_experiments.sh DIR [BUNDLE]      run from the repository root; BUNDLE defaults to .device/cuda
#
# Skip steps with SKIP="kernels profile".
set -u
out=${1:?usage: gpu_experiments.sh DIR [BUNDLE]}
bundle=${2:-.device/cuda}
skip=" ${SKIP:-} "
mkdir -p "$out"
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"

if [[ $skip != *" kernels "* ]]; then
  echo "== kernels"
  timeout 200 "$bundle/bin/cuda_kernels_test" --gtest_output=json:"$out/kernels.json" > "$out/kernels.log" 2>&1
  echo "   rc=$? $(grep -E "PASSED|FAILED" "$out/kernels.log" | head -5 | tr '\n' ' ')"
fi
# The step timing and the graphed cuBLAS bench are gpu_profile.sh's own runs (steps_b1, gemm_graph).
if [[ $skip != *" profile "* ]]; then
  SKIP="qwen_b1 qwen_b256 llama_b1 llama_prefill" tools/gpu/gpu_profile.sh "$out/profile" "$bundle"
fi

echo "== summary"
cat "$out/profile/profile.txt" 2>/dev/null
grep -hE "eager .* graph" "$out/profile/gemm_graph.log" 2>/dev/null
