#!/bin/bash
# Issue 18's FP8 KV cache on one H200, in one call: the GPU tests of the FP8 kernels and backend (and the
# bf16 attention tests beside them), compute-sanitizer memcheck on the FP8 kernels' tests, and the offline
# figures with bf16 and FP8 KV in the same run (tools/gpu/gpu_bench.sh: Qwen3-0.6B 256 x 512/512,
# Llama-3.1-8B bf16 weights 64 x 1024/256). The bundle is tools/gpu/prepare_device_bundle.sh's, stripped,
# with this script and gpu_bench.sh beside it.
#
#   .device/fp8kv/gpu_session.sh OUT        from the repository root, carry [".device/fp8kv"]
set -u
out=${1:?usage: gpu_session.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export LD_LIBRARY_PATH=$here/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
work=$(mktemp -d)
log=$out/console.log
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "== kernels: FP8 KV write and attention, bf16 attention and KV write"
  timeout 120 "$here/bin/cuda_kernels_test" --gtest_filter='Fp8*:*Attention*:*QkvRope*:CopyKvBlocks*' > "$work/kernels.log" 2>&1
  echo "   rc=$?"; grep -E "FAILED|PASSED|figures" "$work/kernels.log" | head -20
  echo "== backend: FP8 KV against bf16 KV, layout, moves, batches and graphs; the bf16 batching and graphs tests"
  timeout 150 "$here/bin/cuda_backend_test" --gtest_filter='*Fp8*:CudaBatching*:CudaGraphs*:CudaGreedy*' > "$work/backend.log" 2>&1
  echo "   rc=$?"; grep -E "FAILED|PASSED|figures" "$work/backend.log" | head -30
  # Runs 1 and 2 had 'Fp8Attention*/0' here, which matches nothing (the instances are Shapes/Fp8Attention...):
  # they checked the KV write kernel only (README.md).
  echo "== compute-sanitizer memcheck: the FP8 kernels' tests"
  timeout 100 compute-sanitizer --tool memcheck --error-exitcode 3 "$here/bin/cuda_kernels_test" \
    --gtest_filter='Fp8KvWrite*:*Fp8Attention*/0:*Fp8Attention*/1:*Fp8Attention*/5' > "$work/memcheck.log" 2>&1
  echo "   rc=$?"; grep -E "ERROR SUMMARY|FAILED|PASSED|not supported" "$work/memcheck.log" | head -5
  echo "== offline figures, bf16 KV then FP8 KV"
  SKIP="sampled qwen_lat llama_lat llama_prefill gemm kv_transfer" STEP_TIMEOUT=90 \
    "$here/tools/gpu_bench.sh" "$work/bench" "$here" 2>&1 | grep -E "^==|rc=|Throughput|Ratio|kv_blocks|Engine"
} 2>&1 | tee "$log"
tar -C "$work" -czf "$out/results.tgz" .
