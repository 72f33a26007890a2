#!/bin/bash
# The last H200 run of the second 2026-11-28 session, one `run` call from the repository root with the bundle
# of tools/gpu/prepare_device_bundle.sh packed as .device/cuda.tgz (carry=[".device/cuda.tgz"]): the tensor-core
# prefill attention with K/V loaded by cp.async two stages deep.
#   tests      the attention kernel tests (all three prefill paths), memcheck over them, racecheck over the
#              tensor-core shapes (the stages reuse the Q tile's shared memory), the backend tests, and the
#              comparison with transformers on Qwen3-0.6B shapes (prompts up to 4,000 tokens)
#   ab         TANDEM_PREFILL_PIPELINE=1 (default) and 0, alternated twice: Llama-3.1-8B offline and its
#              4,096-token prefill, Qwen3-0.6B offline (tools/gpu/gpu_bench.sh's commands and limits)
# Results in DIR/results.tar.gz.
set -u
out=${1:?usage: gpu_session_2026_11_28e.sh DIR}
mkdir -p .device && tar -C .device -xzf .device/cuda.tgz || exit 1
bundle=.device/cuda
bin=$bundle/bin
work=$(mktemp -d)
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$work/device.txt"
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$work/$name.log" 2>&1
  echo "== $name rc=$?"; grep -hE "PASSED|FAILED|ERROR SUMMARY|RACECHECK SUMMARY|\"pass\"" "$work/$name.log" | tail -4
}
attn='Shapes/Attention.*:Shapes/DecodeAttention.*'
step kernels 120 "$bin/cuda_kernels_test" --gtest_filter="$attn:CopyKvBlocks.*" --gtest_output=json:"$work/kernels.json"
step memcheck 150 compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/cuda_kernels_test" --gtest_filter="$attn" --gtest_brief=1
step racecheck 150 compute-sanitizer --tool racecheck --error-exitcode 3 "$bin/cuda_kernels_test" \
  --gtest_filter='Shapes/Attention.*/0:Shapes/Attention.*/6:Shapes/Attention.*/9' --gtest_brief=1
step backend 60 "$bin/cuda_backend_test" --gtest_output=json:"$work/backend.json"
"$bin/tandem" make-model --preset qwen3-0.6b --seed 0 --out /tmp/qwen3 > "$work/make_model.log" 2>&1
step compare 120 python3 "$bundle/tools/compare_transformers.py" --model /tmp/qwen3 --tool "$bin/backend_tool" \
  --out "$work/compare" --lengths 16,500,1500,4000
rm -f "$work"/compare/*.f32
run() {  # run NAME PIPELINE ARGS...
  local name=$1 pipe=$2; shift 2
  TANDEM_PREFILL_PIPELINE=$pipe timeout 120 "$bin/tandem" --log-level info bench "$@" --output-json "$work/$name.json" \
    > "$work/$name.log" 2>&1
  echo "== $name rc=$? $(grep -hE "Throughput|prefill_model_tflops_median|Ratio" "$work/$name.log" | tr '\n' ' ')"
}
for round in 1 2; do
  for pipe in 1 0; do
    run "llama_tp_p${pipe}_$round" $pipe throughput --model random:llama-3.1-8b --device cuda:0 --num-prompts 64 \
      --input-len 1024 --output-len 256 --max-num-seqs 64 --max-num-batched-tokens 8192 --limit 5800
    run "llama_prefill_p${pipe}_$round" $pipe latency --model random:llama-3.1-8b --device cuda:0 --batch-size 1 \
      --input-len 4096 --output-len 1 --num-iters 5 --max-num-batched-tokens 8192 --limit 751.8
    run "qwen_tp_p${pipe}_$round" $pipe throughput --model random:qwen3-0.6b --device cuda:0 --num-prompts 256 \
      --input-len 512 --output-len 512 --max-num-seqs 256 --max-num-batched-tokens 8192 --limit 45000
  done
done
tar -C "$work" -czf "$out/results.tar.gz" .
