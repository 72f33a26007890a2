#!/bin/bash
# Third call: the tensor-core FP8 GEMV (TANDEM_FP8_GEMV=mma) checked and timed against the FMA kernels of
# run.sh's calls: its GPU tests, memcheck on the small cases with it, batch-1 decode of Llama-3.1-8B and -70B.
#   BUNDLE/run_gemv.sh OUTDIR [BUNDLE]
set -u
out=${1:?usage: run_gemv.sh OUTDIR [BUNDLE]}
bundle=${2:-.device/fp8w}
work=$(mktemp -d)
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
( while sleep 10; do tar czf "$out/partial.tgz" -C "$work" . 2>/dev/null; done ) &
packer=$!
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" > "$work/$name.log" 2>&1
  echo "== $name: rc=$? in $(( $(date +%s) - t0 )) s"
  grep -E "min cosine|FAILED|PASSED|ERROR SUMMARY|decode_ms|Ratio|gemv=" "$work/$name.log" | head -20
}
step gemv_variants 60 "$bundle/bin/cuda_fp8_test" --gtest_filter='CudaFp8Written.GemvVariants'
step memcheck_mma 60 env TANDEM_FP8_GEMV=mma compute-sanitizer --tool memcheck --error-exitcode 3 \
  "$bundle/bin/cuda_fp8_test" --gtest_filter='Formats/*:CudaFp8.OnlineQuantizationOfABf16Checkpoint' --gtest_brief=1
for model in llama-3.1-8b llama-3.1-70b; do
  step "${model}_fp8_latency_mma" 90 env TANDEM_FP8_GEMV=mma "$bundle/bin/tandem" --log-level info bench latency \
    --model random:$model --quantization fp8 --device cuda:0 --batch-size 1 --input-len 128 --output-len 128 \
    --num-iters 2 --output-json "$work/${model}_fp8_latency_mma.json"
done
kill "$packer"
tar czf "$out/results.tgz" -C "$work" . && rm -f "$out/partial.tgz"
