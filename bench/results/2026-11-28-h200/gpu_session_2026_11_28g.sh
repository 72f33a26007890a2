#!/bin/bash
# The closing H200 run of the second 2026-11-28 session: every figure of issue 9 with this commit's defaults
# (tools/gpu/gpu_bench.sh without the sampled runs) after the decode attention tests, and Llama-3.1-8B offline
# twice more for its spread. One `run` call, bundle packed as .device/cuda.tgz; results in DIR/results.tar.gz.
set -u
out=${1:?usage: gpu_session_2026_11_28g.sh DIR}
mkdir -p .device && tar -C .device -xzf .device/cuda.tgz || exit 1
bundle=.device/cuda
work=$(mktemp -d)
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
timeout 40 "$bundle/bin/cuda_kernels_test" --gtest_filter='Shapes/DecodeAttention.*' > "$work/kernels.log" 2>&1
echo "== kernels rc=$? $(grep -E "PASSED|FAILED" "$work/kernels.log" | tr '\n' ' ')"
SKIP="sampled" STEP_TIMEOUT=60 timeout 170 tools/gpu/gpu_bench.sh "$work/bench" "$bundle" 2>&1 | tee "$work/bench_console.log" |
  grep -E "^==|Throughput|Ratio|decode_ms|ratio"
for i in 2 3; do
  timeout 40 "$bundle/bin/tandem" --log-level info bench throughput --model random:llama-3.1-8b --device cuda:0 --num-prompts 64 \
    --input-len 1024 --output-len 256 --max-num-seqs 64 --max-num-batched-tokens 8192 --limit 5800 \
    --output-json "$work/llama_throughput_$i.json" > "$work/llama_throughput_$i.log" 2>&1
  echo "== llama_throughput_$i rc=$? $(grep -hE "Throughput" "$work/llama_throughput_$i.log")"
done
tar -C "$work" -czf "$out/results.tar.gz" .
