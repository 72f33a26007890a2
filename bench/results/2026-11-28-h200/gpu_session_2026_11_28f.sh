#!/bin/bash
# The register-capped decode attention kernel (TANDEM_DECODE_OCCUPANCY=1) on an H200, one `run` call from
# the repository root with the bundle packed as .device/cuda.tgz (carry=[".device/cuda.tgz"]): the decode
# attention kernel tests (every mode, the capped build included) and memcheck over them, then the offline
# throughput of both models and their batch-1 decode with the switch off and on, alternated twice (ABAB).
# Results in DIR/results.tar.gz.
set -u
out=${1:?usage: gpu_session_2026_11_28f.sh DIR}
mkdir -p .device && tar -C .device -xzf .device/cuda.tgz || exit 1
bundle=.device/cuda
bin=$bundle/bin
work=$(mktemp -d)
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$work/device.txt"
timeout 60 "$bin/cuda_kernels_test" --gtest_filter='Shapes/DecodeAttention.*' --gtest_output=json:"$work/kernels.json" \
  > "$work/kernels.log" 2>&1
echo "== kernels rc=$? $(grep -E "PASSED|FAILED" "$work/kernels.log" | tr '\n' ' ')"
timeout 90 compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/cuda_kernels_test" --gtest_filter='Shapes/DecodeAttention.*' \
  --gtest_brief=1 > "$work/memcheck.log" 2>&1
echo "== memcheck rc=$? $(grep -E "ERROR SUMMARY" "$work/memcheck.log")"
run() {  # run NAME OCCUPANCY ARGS...
  local name=$1 occ=$2; shift 2
  TANDEM_DECODE_OCCUPANCY=$occ timeout 90 "$bin/tandem" --log-level info bench "$@" --output-json "$work/$name.json" \
    > "$work/$name.log" 2>&1
  echo "== $name rc=$? $(grep -hE "Throughput|decode_ms_per_token_median|Engine decode" "$work/$name.log" | tr '\n' ' ')"
}
for round in 1 2; do
  for occ in 0 1; do
    run "llama_tp_o${occ}_$round" $occ throughput --model random:llama-3.1-8b --device cuda:0 --num-prompts 64 \
      --input-len 1024 --output-len 256 --max-num-seqs 64 --max-num-batched-tokens 8192 --limit 5800
    run "qwen_tp_o${occ}_$round" $occ throughput --model random:qwen3-0.6b --device cuda:0 --num-prompts 256 \
      --input-len 512 --output-len 512 --max-num-seqs 256 --max-num-batched-tokens 8192 --limit 45000
  done
done
for occ in 0 1; do
  run "llama_b1_o$occ" $occ latency --model random:llama-3.1-8b --device cuda:0 --batch-size 1 --input-len 128 \
    --output-len 256 --num-iters 3 --limit 3.6
  run "qwen_b1_o$occ" $occ latency --model random:qwen3-0.6b --device cuda:0 --batch-size 1 --input-len 128 \
    --output-len 256 --num-iters 3 --limit 0.29
done
tar -C "$work" -czf "$out/results.tar.gz" .
