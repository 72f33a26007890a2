#!/bin/bash
# Ran at commit 4758a06. TANDEM_KV_COPY (the copy variants it compares) was removed after: none beat variant 0.
# The H200 study of the second 2026-11-28 session, one `run` call from the repository root with the bundle of
# tools/gpu/prepare_device_bundle.sh in .device/cuda (carry=[".device/cuda"]), everything into DIR/results.tar.gz:
#   kernels    cuda_kernels_test (with the KV copy's variants and the pipelined decode attention kernel)
#   kv_copy    bench/kv_transfer_bench on one GPU for each TANDEM_KV_COPY variant (0 = the first kernel)
#   pipeline   offline throughput of both models and their batch-1 decode, TANDEM_DECODE_PIPELINE=0/1
#              alternated twice (ABAB) in the same run
#   profile    the per-part profile (tools/gpu/gpu_profile.sh) of Qwen3-0.6B at batch 256 and Llama-3.1-8B at
#              batch 64 (the decode steps of the two offline figures) and of Llama-3.1-8B at batch 1
#   skinny     the skinny GEMM's variants against cuBLAS at the decode shapes
#   bench/results/2026-11-28-h200/gpu_session_2026_11_28c.sh DIR
set -u
out=${1:?usage: gpu_session_2026_11_28c.sh DIR}
bundle=.device/cuda
bin=$bundle/bin
work=$(mktemp -d)
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$work/device.txt"
summary() { grep -hE "$2" "$1" | head -${3:-4}; }
echo "== kernels"
timeout 150 "$bin/cuda_kernels_test" --gtest_output=json:"$work/kernels.json" > "$work/kernels.log" 2>&1
echo "   rc=$? $(grep -E "PASSED|FAILED" "$work/kernels.log" | head -8 | tr '\n' ' ')"
for v in 0 1 2 3 0 3; do
  echo "== kv_copy variant $v"
  TANDEM_KV_COPY=$v timeout 60 "$bin/kv_transfer_bench" --device cuda:0 --peer-device cuda:0 \
    --output-json "$work/kv_copy_$v.json" > "$work/kv_copy_$v.log" 2>&1
  echo "   rc=$?"; summary "$work/kv_copy_$v.log" "transfer layer|alone|ratio"
done
tp() {  # tp NAME PIPELINE ARGS...
  local name=$1 pipe=$2; shift 2
  TANDEM_DECODE_PIPELINE=$pipe timeout 120 "$bin/tandem" --log-level info bench "$@" --output-json "$work/$name.json" \
    > "$work/$name.log" 2>&1
  echo "== $name (pipeline=$pipe) rc=$? $(grep -hE "Throughput|decode_ms_per_token_median" "$work/$name.log" | head -1)"
}
for round in 1 2; do
  for pipe in 0 1; do
    tp "qwen_tp_p${pipe}_$round" $pipe throughput --model random:qwen3-0.6b --device cuda:0 --num-prompts 256 \
      --input-len 512 --output-len 512 --max-num-seqs 256 --max-num-batched-tokens 8192
    tp "llama_tp_p${pipe}_$round" $pipe throughput --model random:llama-3.1-8b --device cuda:0 --num-prompts 64 \
      --input-len 1024 --output-len 256 --max-num-seqs 64 --max-num-batched-tokens 8192
  done
done
for pipe in 0 1; do
  tp "qwen_b1_p$pipe" $pipe latency --model random:qwen3-0.6b --device cuda:0 --batch-size 1 --input-len 128 \
    --output-len 256 --num-iters 3
  tp "llama_b1_p$pipe" $pipe latency --model random:llama-3.1-8b --device cuda:0 --batch-size 1 --input-len 128 \
    --output-len 256 --num-iters 3
done
echo "== profile"
mkdir -p "$work/profile"
prof() {  # prof NAME ARGS...
  local name=$1; shift
  TANDEM_PROFILE_KERNELS=1 timeout 120 "$bin/tandem" --log-level info bench latency "$@" > "$work/profile/$name.log" 2>&1
  grep "cuda profile:" "$work/profile/$name.log" | sed "s/^.*cuda profile: /$name /" | tee -a "$work/profile/profile.txt" |
    grep "phase=decode"
}
prof qwen_b256 --model random:qwen3-0.6b --device cuda:0 --batch-size 256 --input-len 768 --output-len 16 \
  --num-iters 1 --num-iters-warmup 0 --max-num-seqs 256 --max-num-batched-tokens 8192
prof llama_b64 --model random:llama-3.1-8b --device cuda:0 --batch-size 64 --input-len 1152 --output-len 16 \
  --num-iters 1 --num-iters-warmup 0 --max-num-seqs 64 --max-num-batched-tokens 8192
prof llama_b1 --model random:llama-3.1-8b --device cuda:0 --batch-size 1 --input-len 128 --output-len 64 \
  --num-iters 1 --num-iters-warmup 0
echo "== skinny"
timeout 90 "$bin/cuda_kernels_test" --gtest_also_run_disabled_tests --gtest_filter='*SkinnyGemmBench*' \
  > "$work/skinny.log" 2>&1
echo "   rc=$?"; grep -E "llama" "$work/skinny.log" | head -12
tar -C "$work" -czf "$out/results.tar.gz" .
