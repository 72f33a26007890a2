#!/bin/bash
# The CUDA backend's check on a GPU machine, from binaries carried there (tools/gpu/prepare_device_bundle.sh):
# GPU unit tests (kernels vs CPU references; the backend vs the transformers fixtures, the CPU backend and
# itself one sequence at a time; FP8 weights vs dequantized bf16), compute-sanitizer memcheck and racecheck on
# the kernel tests (memcheck on the FP8 tests' small cases too), the
# comparison with transformers on random:qwen3-0.6b written by `tandem make-model` (prompts up to 4k
# tokens), and a short benchmark. Writes logs and summary.json into DIR; prints the summary last.
#
#   tools/gpu/gpu_check.sh DIR [BUNDLE]     run from the repository root; BUNDLE defaults to .device/cuda
#
# Steps can be skipped with SKIP="sanitizer compare bench" (space-separated).
set -u
out=${1:?usage: gpu_check.sh DIR [BUNDLE]}
bundle=${2:-.device/cuda}
skip=" ${SKIP:-} "
mkdir -p "$out"
bin=$bundle/bin
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
export PYTHONUNBUFFERED=1
start=$(date +%s)
declare -A status
step() {  # step NAME COMMAND...: runs it, logs to DIR/NAME.log, records the exit code and seconds
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "== $name: $*"
  timeout "${STEP_TIMEOUT:-300}" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  status[$name]="$rc $(( $(date +%s) - t0 ))"
  echo "   rc=$rc in $(( $(date +%s) - t0 )) s"
  tail -n 3 "$out/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/device.txt" 2>&1
step kernels "$bin/cuda_kernels_test" --gtest_output=json:"$out/kernels.json"
step backend "$bin/cuda_backend_test" --gtest_output=json:"$out/backend.json"
# FP8 weights (issue 18): each format against dequantized bf16 on this GPU; when bundled.
if [[ -x $bin/cuda_fp8_test ]]; then
  step fp8 "$bin/cuda_fp8_test" --gtest_output=json:"$out/fp8.json"
fi
# Disaggregated serving on this GPU over CUDA IPC (and TCP), and the IPC transfer rate; when bundled.
if [[ -x $bin/gpu_serving_test ]]; then
  step serving env TANDEM_BINARY="$(realpath "$bin/tandem")" "$bin/gpu_serving_test" --gtest_output=json:"$out/serving.json"
fi
# Structured output drawn on the device; needs data/tokenizers/qwen3 (carry it) or $TANDEM_DATA_DIR.
if [[ -x $bin/gpu_structured_test ]]; then
  step structured env TANDEM_BINARY="$(realpath "$bin/tandem")" TANDEM_DATA_DIR="${TANDEM_DATA_DIR:-$PWD/data}" \
    "$bin/gpu_structured_test" --gtest_output=json:"$out/structured.json"
fi
if [[ -x $bin/kv_transfer_bench ]]; then
  step kv_transfer "$bin/kv_transfer_bench" --device cuda:0 --peer-device cuda:0 --output-json "$out/kv_transfer.json"
fi
if [[ $skip != *" sanitizer "* ]]; then
  step memcheck compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/cuda_kernels_test" --gtest_brief=1
  step racecheck compute-sanitizer --tool racecheck --error-exitcode 3 "$bin/cuda_kernels_test" \
    --gtest_filter='Shapes/Attention.*/0:Shapes/Attention.*/6:Shapes/Attention.*/9:Sizes/AddRmsNorm.*' --gtest_brief=1
  if [[ -x $bin/cuda_fp8_test ]]; then
    step memcheck_fp8 compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/cuda_fp8_test" \
      --gtest_filter='Formats/*:CudaFp8.OnlineQuantizationOfABf16Checkpoint' --gtest_brief=1
  fi
fi
if [[ $skip != *" compare "* ]]; then
  model_dir=${TMPDIR:-/tmp}/tandem_qwen3_0_6b
  step make_model "$bin/tandem" make-model --preset qwen3-0.6b --seed 0 --out "$model_dir"
  step compare python3 "$bundle/tools/compare_transformers.py" --model "$model_dir" --tool "$bin/backend_tool" \
    --out "$out/compare" --lengths 16,500,1500,4000
fi
if [[ $skip != *" llama "* ]]; then
  # Llama-3.1-8B shapes (16 GB of bf16 weights): load time from the written checkpoint, the same
  # comparison with transformers, and batch-1 decode.
  llama_dir=${TMPDIR:-/tmp}/tandem_llama_3_1_8b
  step make_llama "$bin/tandem" make-model --preset llama-3.1-8b --seed 0 --out "$llama_dir"
  step compare_llama python3 "$bundle/tools/compare_transformers.py" --model "$llama_dir" --tool "$bin/backend_tool" \
    --out "$out/compare_llama" --lengths 16,1000,4000
  step bench_llama "$bin/backend_tool" bench --model "$llama_dir" --device cuda:0 --prompt-len 1024 --decode-steps 32 \
    --batch 1,16
  rm -rf "$llama_dir"
fi
if [[ $skip != *" bench "* ]]; then
  step bench "$bin/backend_tool" bench --model random:qwen3-0.6b --device cuda:0 --prompt-len 1024 --decode-steps 64 \
    --batch 1,8,32,128
fi

status_json=$(for k in "${!status[@]}"; do set -- ${status[$k]}; echo "\"$k\": {\"rc\": $1, \"seconds\": $2},"; done)
python3 - "$out" "{${status_json%,}}" "$(( $(date +%s) - start ))" <<'PY'
import json, os, sys
out, steps, total = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
summary = {"device": open(os.path.join(out, "device.txt")).read().strip(), "total_seconds": total, "steps": steps}
for name in ("kernels", "backend", "fp8", "serving", "structured"):
    path = os.path.join(out, name + ".json")
    if os.path.exists(path):
        j = json.load(open(path))
        failed = [f"{s['name']}.{t['name']}" for s in j["testsuites"] for t in s["testsuite"] if t.get("failures")]
        summary[name + "_tests"] = {"tests": j["tests"], "failures": j["failures"], "disabled": j.get("disabled", 0), "failed": failed}
for key in ("compare", "compare_llama"):
  cmp = os.path.join(out, key, "compare.json")
  if os.path.exists(cmp):
    c = json.load(open(cmp))
    summary[key] = {"pass": c["pass"], "worst_vs_hf_bf16": max(v for p in c["prompts"] for k, v in p.items() if k.endswith("_vs_hf_bf16")),
                          "hf_bf16_vs_hf_fp32": [p["hf_bf16_vs_hf_fp32"] for p in c["prompts"]],
                          "ours_alone_vs_hf_bf16": [p["ours_alone_vs_hf_bf16"] for p in c["prompts"]],
                          "ours_alone_vs_hf_fp32": [p["ours_alone_vs_hf_fp32"] for p in c["prompts"]],
                          "lengths": c["lengths"]}
for key in ("bench", "bench_llama"):
  path = os.path.join(out, key + ".log")
  if os.path.exists(path):
    for line in open(path):
        if line.startswith("{"):
            summary[key] = json.loads(line)
kv = os.path.join(out, "kv_transfer.json")
if os.path.exists(kv):
    summary["kv_transfer"] = json.load(open(kv))
summary["pass"] = all(v["rc"] == 0 for v in steps.values())
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(json.dumps(summary, indent=1))
PY
