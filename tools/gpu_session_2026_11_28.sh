#!/bin/bash
# The GPU run of 2026-11-28 (one call on the lent machine, repository root, bundle in .device/cuda):
# the GPU unit tests with the new device sampling tests, memcheck and racecheck on the sampling kernel,
# the serving tests with the injected illegal-address fault, and Qwen3-0.6B throughput greedy, sampled
# on the GPU and sampled on the host. Results in $1 (tarred by the caller).
set -u
out=${1:?usage: gpu_session_2026_11_28.sh DIR}
bundle=.device/cuda
mkdir -p "$out"
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
bin=$bundle/bin
filter_small='Rows/DeviceSampling.*Vocab1000*:Rows/DeviceSampling.*Vocab997*'
SKIP="sanitizer compare llama bench" STEP_TIMEOUT=200 tools/gpu_check.sh "$out/check" "$bundle"
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/cuda_kernels_test" --gtest_filter="$filter_small" \
  --gtest_brief=1 > "$out/check/sampling_memcheck.log" 2>&1; echo "sampling memcheck rc=$?"; tail -3 "$out/check/sampling_memcheck.log"
timeout 120 compute-sanitizer --tool racecheck --error-exitcode 3 "$bin/cuda_kernels_test" --gtest_filter="$filter_small" \
  --gtest_brief=1 > "$out/check/sampling_racecheck.log" 2>&1; echo "sampling racecheck rc=$?"; tail -3 "$out/check/sampling_racecheck.log"
SKIP="qwen_lat llama llama_prefill gemm kv_transfer" STEP_TIMEOUT=150 tools/gpu_bench.sh "$out/bench" "$bundle"
