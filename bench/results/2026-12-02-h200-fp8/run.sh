#!/bin/bash
# The FP8-weights check and figures of issue 18 on one H200, from a carried bundle (BUNDLE/bin: tandem,
# cuda_fp8_test, backend_tool; BUNDLE/lib: their libraries; BUNDLE/tools: gpu_bench.sh). Run from the
# repository root:   BUNDLE/run.sh OUTDIR [BUNDLE]
# Steps: the FP8 GPU tests (each format vs dequantized bf16 on the same GPU), compute-sanitizer memcheck on
# the small cases (every new kernel: GEMV per-row and block, M 1 and 4, silu folded in; row quantization;
# dequantization), then tools/gpu/gpu_bench.sh's FP8 rows (SKIP as given; default: all FP8 rows).
# Everything lands in OUTDIR/results.tgz (the device tool brings back few files).
set -u
out=${1:?usage: run.sh OUTDIR [BUNDLE]}
bundle=${2:-.device/fp8w}
work=$(mktemp -d)
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
# What has run so far comes back even if the call is cut short: re-packed every 15 s.
( while sleep 15; do tar czf "$out/partial.tgz" -C "$work" . 2>/dev/null; done ) &
packer=$!
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$work/device.txt" 2>&1
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" > "$work/$name.log" 2>&1
  echo "== $name: rc=$? in $(( $(date +%s) - t0 )) s"
  grep -E "min cosine|FAILED|PASSED|ERROR SUMMARY|TFLOP|error" "$work/$name.log" | head -20
}
if [[ " ${SKIP_CHECK:-} " != *" tests "* ]]; then
  step fp8_test 240 "$bundle/bin/cuda_fp8_test" --gtest_output=json:"$work/fp8_test.json"
  step memcheck 240 compute-sanitizer --tool memcheck --error-exitcode 3 "$bundle/bin/cuda_fp8_test" \
    --gtest_filter='Formats/*:CudaFp8.OnlineQuantizationOfABf16Checkpoint' --gtest_brief=1
fi
SKIP=${SKIP:-"qwen_tp sampled qwen_lat llama llama_prefill gemm kv_transfer"} STEP_TIMEOUT=${STEP_TIMEOUT:-240} \
  "$bundle/tools/gpu_bench.sh" "$work/bench" "$bundle" 2>&1 | tee "$work/bench.log"
# The GEMV's two ways of decoding e4m3 (integer ops, the default; the hardware converts), Llama-3.1-8B batch 1.
if [[ " ${SKIP:-} " != *" variants "* ]]; then
  step llama_fp8_latency_cvt 120 env TANDEM_FP8_GEMV=cvt "$bundle/bin/tandem" --log-level info bench latency \
    --model random:llama-3.1-8b --quantization fp8 --device cuda:0 --batch-size 1 --input-len 128 --output-len 256 \
    --num-iters 3 --limit 1.92 --output-json "$work/llama_fp8_latency_cvt.json"
  grep -E "decode_ms|Ratio" "$work/llama_fp8_latency_cvt.log"
fi
kill "$packer"
tar czf "$out/results.tgz" -C "$work" . && rm -f "$out/partial.tgz"
