#!/bin/bash
# The merged main of 2026-12-02 (second session: FP8 weights and KV cache, CUDA tensor parallelism,
# structured output on the device sampler, security, routing) checked on one H200 in one `run` call:
# tools/gpu/gpu_check.sh without the transformers comparisons and benchmarks (the GPU unit tests, the FP8
# tests, GPU serving, structured output drawn on the device, memcheck and racecheck), then the
# tensor-parallel path at TP 1 against the plain backend. The bundle is a tar.xz of
# tools/gpu/prepare_device_bundle.sh's folder plus cuda_tensor_parallel_test and data/tokenizers/qwen3.
#
#   bench/results/2026-12-02-h200-merged/gpu_session.sh OUT [BUNDLE.tar.xz]     from the repository root
set -u
out=${1:?usage: gpu_session.sh OUT [BUNDLE.tar.xz]}
archive=${2:-.device/final.tar.xz}
mkdir -p "$out"
tar -xJf "$archive" -C .device
bundle=.device/final
export NCCL_NVLS_ENABLE=0
export TANDEM_DATA_DIR=$PWD/$bundle/data
SKIP="compare llama bench" STEP_TIMEOUT=180 tools/gpu/gpu_check.sh "$out/check" "$bundle" > "$out/check_console.log" 2>&1
tail -n 60 "$out/check_console.log"
if [[ -z ${TANDEM_NCCL_LIBRARY:-} ]]; then
  for c in $(ldconfig -p | awk '/libnccl.so.2 / {print $NF}') /usr/local/cuda/lib/libnccl.so.2 /usr/local/cuda/lib64/libnccl.so.2 \
           $(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null); do
    if [[ -f $c ]]; then export TANDEM_NCCL_LIBRARY=$c; break; fi
  done
fi
echo "nccl library: ${TANDEM_NCCL_LIBRARY:-not found}"
LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64 TANDEM_TEST_DATA_DIR=$PWD/tests/data timeout 120 \
  "$bundle/bin/cuda_tensor_parallel_test" --gtest_output=json:"$out/tp.json" > "$out/tp.log" 2>&1
echo "tp rc=$?"; tail -n 5 "$out/tp.log"
