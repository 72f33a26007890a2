#!/bin/bash
# The GPU run of 2026-11-28 (one call on the lent machine, repository root, bundle in .device/cuda from
# tools/gpu/prepare_device_bundle.sh): the kernel tests with the new device sampling tests, memcheck and
# racecheck on the sampling kernel, the backend tests, the GPU serving tests with the injected
# illegal-address fault (SKIP_SERVING=1 skips them), and Qwen3-0.6B offline throughput greedy, sampled on
# the GPU and sampled on the host. Results in DIR.
set -u
out=${1:?usage: gpu_session_2026_11_28.sh DIR}
bundle=.device/cuda
bin=$bundle/bin
mkdir -p "$out"
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "== $name rc=$? in $(( $(date +%s) - t0 )) s"
  grep -E "PASSED|FAILED|ERROR SUMMARY|RACECHECK SUMMARY|Throughput|Engine decode" "$out/$name.log" | head -8
}
small='Rows/DeviceSampling.*Vocab1000*:Rows/DeviceSampling.*Vocab997*'
step kernels 120 "$bin/cuda_kernels_test" --gtest_output=json:"$out/kernels.json"
step sampling_memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/cuda_kernels_test" --gtest_filter="$small"
step sampling_racecheck 90 compute-sanitizer --tool racecheck --error-exitcode 3 "$bin/cuda_kernels_test" --gtest_filter="$small"
[[ ${SKIP_SERVING:-0} == 1 ]] || step serving 200 env TANDEM_BINARY="$(realpath "$bin/tandem")" "$bin/gpu_serving_test" --gtest_output=json:"$out/serving.json"
step backend 120 "$bin/cuda_backend_test" --gtest_output=json:"$out/backend.json"
SKIP="qwen_lat llama llama_prefill gemm kv_transfer" STEP_TIMEOUT=100 tools/gpu/gpu_bench.sh "$out/bench" "$bundle"
