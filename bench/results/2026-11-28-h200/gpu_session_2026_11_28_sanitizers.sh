#!/bin/bash
# The compute-sanitizer run of 2026-11-28 on an H200 (commit 744ee55), one `run` call from the repository
# root with the bundle packed as .device/cuda.tgz (carry=[".device/cuda.tgz"]): memcheck over every kernel
# test, racecheck over the decode attention, KV copy, one prefill attention shape and the norm, and the KV
# transfer benchmark twice. Writes its logs and JSON straight into DIR (bench/results/2026-11-28-h200/sanitizers/).
#   bench/results/2026-11-28-h200/gpu_session_2026_11_28_sanitizers.sh DIR
set -u
out=${1:?usage: gpu_session_2026_11_28_sanitizers.sh DIR}
mkdir -p .device && tar -C .device -xzf .device/cuda.tgz || exit 1
export LD_LIBRARY_PATH=$PWD/.device/cuda/lib:/usr/local/cuda/lib64 TANDEM_TEST_DATA_DIR=$PWD/tests/data
b=.device/cuda/bin
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $b/cuda_kernels_test --gtest_brief=1 > "$out/memcheck.log" 2>&1
echo "memcheck rc=$?"; tail -3 "$out/memcheck.log"
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 3 $b/cuda_kernels_test \
  --gtest_filter='Shapes/DecodeAttention.*:CopyKvBlocks.*:Shapes/Attention.*/0:Sizes/AddRmsNorm.*' --gtest_brief=1 \
  > "$out/racecheck.log" 2>&1
echo "racecheck rc=$?"; tail -3 "$out/racecheck.log"
for i in 1 2; do
  timeout 60 $b/kv_transfer_bench --device cuda:0 --peer-device cuda:0 --output-json "$out/kv_$i.json" > "$out/kv_$i.log" 2>&1
  grep -hE "transfer layer|alone|cudaMemcpy|ratio" "$out/kv_$i.log"
done
