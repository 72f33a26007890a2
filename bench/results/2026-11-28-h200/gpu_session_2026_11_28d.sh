#!/bin/bash
# Ran at commit 4758a06. TANDEM_KV_COPY (the copy variants it compares) was removed after: none beat variant 0.
# The final H200 run of the second 2026-11-28 session, one `run` call from the repository root with the
# bundle of tools/gpu/prepare_device_bundle.sh packed as .device/cuda.tgz (carry=[".device/cuda.tgz"]: packed,
# it fits the call's 64 MiB with the GPU serving tests):
#   kv_copy    bench/kv_transfer_bench, the copy kernel (TANDEM_KV_COPY=0) against cudaMemcpyBatchAsync (4), ABAB
#   bench      tools/gpu/gpu_bench.sh: every figure of issue 9 with this commit's defaults
#   check      tools/gpu/gpu_check.sh without the sanitizers: GPU tests, transformers comparison (Qwen3-0.6B and
#              Llama-3.1-8B shapes), short benchmarks
#   skinny16   the Llama-3.1-8B comparison again at 16 tokens with TANDEM_SKINNY_GEMM=0: whether the skinny
#              GEMM explains the 16-token prompt's batched-vs-alone gap
# Results in DIR/results.tar.gz.
#   bench/results/2026-11-28-h200/gpu_session_2026_11_28d.sh DIR
set -u
out=${1:?usage: gpu_session_2026_11_28d.sh DIR}
mkdir -p .device && tar -C .device -xzf .device/cuda.tgz || exit 1
bundle=.device/cuda
bin=$bundle/bin
work=$(mktemp -d)
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$work/device.txt"
n=0
for v in 0 4 0 4; do
  n=$((n + 1))
  TANDEM_KV_COPY=$v timeout 60 "$bin/kv_transfer_bench" --device cuda:0 --peer-device cuda:0 \
    --output-json "$work/kv_copy_${v}_$n.json" > "$work/kv_copy_${v}_$n.log" 2>&1
  echo "== kv_copy variant $v rc=$?"; grep -hE "transfer layer|alone|ratio" "$work/kv_copy_${v}_$n.log"
done
STEP_TIMEOUT=120 timeout 240 tools/gpu/gpu_bench.sh "$work/bench" "$bundle" 2>&1 | tee "$work/bench_console.log" |
  grep -E "^==|Throughput|Ratio|decode_ms|ratio"
SKIP="sanitizer bench" STEP_TIMEOUT=150 timeout 300 tools/gpu/gpu_check.sh "$work/check" "$bundle" > "$work/check_console.log" 2>&1
grep -E "^== |rc=" "$work/check_console.log"
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print({k: s[k].get("pass", s[k]) if isinstance(s[k], dict) else s[k] for k in s if k in ("pass","compare","compare_llama","kernels_tests","serving_tests","backend_tests")})' "$work/check/summary.json"
llama_dir=/tmp/tandem_llama_3_1_8b_16
"$bin/tandem" make-model --preset llama-3.1-8b --seed 0 --out "$llama_dir" > "$work/skinny16_make.log" 2>&1
TANDEM_SKINNY_GEMM=0 timeout 120 python3 "$bundle/tools/compare_transformers.py" --model "$llama_dir" --tool "$bin/backend_tool" \
  --out "$work/skinny16" --lengths 16,1000 > "$work/skinny16.log" 2>&1
echo "== skinny16 rc=$?"; grep -E "vs_ours_alone|\"pass\"" "$work/skinny16.log"
rm -rf "$llama_dir" "$work"/*/*.f32
tar -C "$work" -czf "$out/results.tar.gz" .
