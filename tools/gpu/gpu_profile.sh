#!/bin/bash
# Where the GPU time of a decode step and of a prefill goes, per part of the step (embedding, norms, each
# projection, RoPE + KV write, attention, lm_head, argmax; all layers together), from CUDA events the
# backend records between the parts when TANDEM_PROFILE_KERNELS=1 (the lent GPU machines have no
# Nsight Systems). Such steps run without CUDA graphs and the events break PDL's overlap, so the
# per-step totals read higher than the benchmarks; the shares are the point. One log per run in DIR,
# the "cuda profile:" lines summarised in DIR/profile.txt.
#
#   tools/gpu/gpu_profile.sh DIR [BUNDLE]      run from the repository root; BUNDLE defaults to .device/cuda
#
# Runs (skip with SKIP="qwen_b1 qwen_b256 llama_b1 llama_prefill"):
#   qwen_b1        Qwen3-0.6B, batch 1, 128-token prompt, 256 new tokens (the batch-1 decode figure)
#   qwen_b256      Qwen3-0.6B, batch 256, 512-token prompts, 64 new tokens (decode steps of the offline figure)
#   llama_b1       Llama-3.1-8B, batch 1, 128-token prompt, 256 new tokens
#   llama_prefill  Llama-3.1-8B, one 4,096-token prompt (the prefill figure)
#   steps_b1       Qwen3-0.6B and Llama-3.1-8B batch 1 and Qwen3-0.6B batch 64 as benchmarked (CUDA graphs
#                  and PDL on), with TANDEM_PROFILE_STEPS=1: a decode step's wall time split into the
#                  backend's host preparation, the GPU (upload to tokens on the host) and the engine's gap
#                  between steps; the GPU's busy share bounds what overlapping the host work could buy
#   gemm_graph     cuBLAS on the batched decode GEMMs (M = 32..256), eager against replayed from a CUDA
#                  graph (cuda_kernels_test's DecodeGemmBench): how much of the profile's GEMM rows, which
#                  run eagerly, is host launch cost rather than GPU time
set -u
out=${1:?usage: gpu_profile.sh DIR [BUNDLE]}
bundle=${2:-.device/cuda}
skip=" ${SKIP:-} "
mkdir -p "$out"
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tandem=$bundle/bin/tandem
: > "$out/profile.txt"
profile() {  # profile NAME ARGS...: one run of `tandem bench latency ARGS` with the per-part profile
  local name=$1; shift
  echo "== $name: tandem bench latency $*"
  TANDEM_PROFILE_KERNELS=1 timeout "${STEP_TIMEOUT:-300}" "$tandem" --log-level info bench latency "$@" > "$out/$name.log" 2>&1
  echo "   rc=$?"
  grep "cuda profile:" "$out/$name.log" | sed "s/^.*cuda profile: /$name /" | tee -a "$out/profile.txt"
}
[[ $skip == *" qwen_b1 "* ]] || profile qwen_b1 --model random:qwen3-0.6b --device cuda:0 --batch-size 1 \
  --input-len 128 --output-len 256 --num-iters 1 --num-iters-warmup 0
[[ $skip == *" qwen_b256 "* ]] || profile qwen_b256 --model random:qwen3-0.6b --device cuda:0 --batch-size 256 \
  --input-len 512 --output-len 64 --num-iters 1 --num-iters-warmup 0 --max-num-seqs 256 --max-num-batched-tokens 8192
[[ $skip == *" llama_b1 "* ]] || profile llama_b1 --model random:llama-3.1-8b --device cuda:0 --batch-size 1 \
  --input-len 128 --output-len 256 --num-iters 1 --num-iters-warmup 0
[[ $skip == *" llama_prefill "* ]] || profile llama_prefill --model random:llama-3.1-8b --device cuda:0 --batch-size 1 \
  --input-len 4096 --output-len 1 --num-iters 2 --num-iters-warmup 0 --max-num-batched-tokens 8192
step_timing() {  # step_timing NAME ARGS...: one `tandem bench latency ARGS` run with the step timing
  local name=$1; shift
  echo "== $name: TANDEM_PROFILE_STEPS=1 tandem bench latency $*"
  TANDEM_PROFILE_STEPS=1 timeout "${STEP_TIMEOUT:-300}" "$tandem" --log-level info bench latency "$@" > "$out/$name.log" 2>&1
  echo "   rc=$?"
  grep -E "cuda step timing:|decode_ms_per_token_median" "$out/$name.log" | sed "s/^.*cuda step timing: //; s/^ */$name /" |
    tee -a "$out/profile.txt"
}
if [[ $skip != *" steps_b1 "* ]]; then
  step_timing steps_qwen_b1 --model random:qwen3-0.6b --device cuda:0 --batch-size 1 --input-len 128 --output-len 256 \
    --num-iters 3
  step_timing steps_qwen_b64 --model random:qwen3-0.6b --device cuda:0 --batch-size 64 --input-len 128 --output-len 256 \
    --num-iters 3
  step_timing steps_llama_b1 --model random:llama-3.1-8b --device cuda:0 --batch-size 1 --input-len 128 --output-len 256 \
    --num-iters 3
fi
if [[ $skip != *" gemm_graph "* && -x $bundle/bin/cuda_kernels_test ]]; then
  echo "== gemm_graph: cuda_kernels_test DecodeGemmBench"
  timeout "${STEP_TIMEOUT:-300}" "$bundle/bin/cuda_kernels_test" --gtest_also_run_disabled_tests \
    --gtest_filter='DecodeGemmBench.*' > "$out/gemm_graph.log" 2>&1
  echo "   rc=$?"
  grep -E "eager .* graph" "$out/gemm_graph.log"
fi
