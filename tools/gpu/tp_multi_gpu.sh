#!/bin/bash
# Issue 19's multi-GPU runs, for a machine with two (or more) GPUs (`run` kind nvidia-h200-x2), from a bundle
# made by tools/gpu/prepare_tp_bundle.sh: TP 2 against TP 1 on the GPU fixtures (greedy path within bf16 noise,
# MQA with replicated KV heads, KV from TP 1 continued at TP 2), a failing rank ending the step without a
# hang, Llama-3.1-8B and Llama-3.1-70B bf16 (random weights, real shape) batch-1 decode at TP 2 against
# TP 1, 70B TP 2 offline 64 x 1024/256, the NCCL all-reduce at decode sizes, and the NCCL KV transfer
# between two processes that cannot see each other's GPU against cudaMemcpyPeer. Logs and summary.json
# into DIR; the summary is printed last.
#
#   tools/gpu/tp_multi_gpu.sh DIR [BUNDLE]     from the repository root; BUNDLE defaults to .device/nccl-tp
#
# Skip steps with SKIP="fixtures fault llama8b llama70b offline allreduce kv" (space-separated). A `run`
# command may take 10 minutes and each 70B step loads 140 GB of generated weights, so split it in three
# calls (kind nvidia-h200-x2, carry [".device/nccl-tp"], timeout_s 600), the bundle's copy of this script:
#   SKIP="llama70b offline" bash .device/nccl-tp/tools/tp_multi_gpu.sh $OUT/a
#   SKIP="fixtures fault llama8b allreduce kv offline" bash .device/nccl-tp/tools/tp_multi_gpu.sh $OUT/b
#   SKIP="fixtures fault llama8b allreduce kv llama70b" bash .device/nccl-tp/tools/tp_multi_gpu.sh $OUT/c
set -u
out=${1:?usage: tp_multi_gpu.sh DIR [BUNDLE]}
bundle=${2:-.device/nccl-tp}
skip=" ${SKIP:-} "
mkdir -p "$out"
bin=$bundle/bin
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
export NCCL_NVLS_ENABLE=0   # never NVLink multicast on shared machines
start=$(date +%s)
if [[ -z ${TANDEM_NCCL_LIBRARY:-} ]]; then
  for c in $(ldconfig -p | awk '/libnccl.so.2 / {print $NF}') /usr/local/cuda/lib/libnccl.so.2 /usr/local/cuda/lib64/libnccl.so.2 \
           $(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null); do
    if [[ -f $c ]]; then export TANDEM_NCCL_LIBRARY=$c; break; fi
  done
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nvidia-smi topo -m; echo "nccl library: ${TANDEM_NCCL_LIBRARY:-not found}"; } \
  > "$out/device.txt" 2>&1
gpus=$(nvidia-smi -L | wc -l)
if (( gpus < 2 )); then echo "tp_multi_gpu.sh: needs two GPUs, $gpus visible"; exit 2; fi
declare -A status
step() {  # step NAME SECONDS COMMAND...: logs to DIR/NAME.log, records the exit code and seconds
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  echo "== $name: $*"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  status[$name]="$rc $(( $(date +%s) - t0 ))"
  echo "   rc=$rc in $(( $(date +%s) - t0 )) s"
  tail -n 3 "$out/$name.log"
}
bench() {  # bench NAME SECONDS MODEL DEVICE TP [BATCHES]: backend_tool's decode timings
  step "$1" "$2" "$bin/backend_tool" bench --model "$3" --device "$4" --tensor-parallel-size "$5" --prompt-len 1024 \
    --decode-steps 64 --batch "${6:-1}"
}

if [[ $skip != *" fixtures "* ]]; then
  step tp_tests 300 "$bin/cuda_tensor_parallel_test" --gtest_output=json:"$out/tp_tests.json"
  step memcheck_tp2 300 compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/cuda_tensor_parallel_test" \
    --gtest_filter='TpTwo.*/0' --gtest_brief=1
fi
if [[ $skip != *" fault "* ]]; then
  # Its own process: the injected fault poisons the last rank's GPU context.
  step tp_fault 120 env TANDEM_INJECT_DEVICE_FAULT_AT_STEP=3 "$bin/cuda_tensor_parallel_test" --gtest_filter='TpFault.*'
fi
if [[ $skip != *" llama8b "* ]]; then
  bench llama8b_tp1 300 random:llama-3.1-8b cuda:0 1 1,8
  bench llama8b_tp2 300 random:llama-3.1-8b cuda:0,1 2 1,8
fi
if [[ $skip != *" llama70b "* ]]; then
  bench llama70b_tp2 900 random:llama-3.1-70b cuda:0,1 2 1,8
fi
if [[ $skip != *" offline "* ]]; then
  step llama70b_tp2_offline 1200 "$bin/tandem" bench throughput --model random:llama-3.1-70b --device cuda:0,1 \
    --tensor-parallel-size 2 --num-prompts 64 --input-len 1024 --output-len 256
fi
if [[ $skip != *" allreduce "* ]] && [[ -x $bin/allreduce_bench ]]; then
  step allreduce 120 "$bin/allreduce_bench" --devices 0,1 --sizes 8192,32768,131072,524288,1048576
fi
if [[ $skip != *" kv "* ]]; then
  # cudaMemcpyPeer for reference (both GPUs visible, CUDA IPC), then NCCL between processes that each see one GPU.
  step kv_ipc 120 "$bin/kv_transfer_bench" --device cuda:0 --peer-device cuda:1 --output-json "$out/kv_ipc.json"
  ref=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["reference_gbps"])' "$out/kv_ipc.json" 2>/dev/null || echo 0)
  step kv_nccl 180 env CUDA_VISIBLE_DEVICES=1 "$bin/kv_transfer_bench" --kv-transfer nccl --device cuda:0 --peer-device cuda:0 \
    --pusher-visible-devices 0 --reference-gbps "$ref" --output-json "$out/kv_nccl.json"
fi

status_json=$(for k in "${!status[@]}"; do set -- ${status[$k]}; echo "\"$k\": {\"rc\": $1, \"seconds\": $2},"; done)
python3 - "$out" "{${status_json%,}}" "$(( $(date +%s) - start ))" <<'PY'
import json, os, sys
out, steps, total = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
summary = {"device": open(os.path.join(out, "device.txt")).read().splitlines()[:2], "total_seconds": total, "steps": steps}
path = os.path.join(out, "tp_tests.json")
if os.path.exists(path):
    j = json.load(open(path))
    summary["tp_tests"] = {"tests": j["tests"], "failures": j["failures"],
                           "failed": [f"{s['name']}.{t['name']}" for s in j["testsuites"] for t in s["testsuite"] if t.get("failures")]}
for name in ("llama8b_tp1", "llama8b_tp2", "llama70b_tp2", "allreduce"):
    p = os.path.join(out, name + ".log")
    if os.path.exists(p):
        for line in open(p):
            if line.startswith("{"):
                summary[name] = json.loads(line)
for name in ("kv_ipc", "kv_nccl"):
    p = os.path.join(out, name + ".json")
    if os.path.exists(p):
        summary[name] = json.load(open(p))
summary["bars"] = {"llama8b_tp2_batch1_ms_per_token": 2.8, "llama70b_tp2_batch1_ms_per_token": 22.0, "kv_nccl_ratio": 0.8}
summary["pass"] = all(v["rc"] == 0 for v in steps.values())
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(json.dumps(summary, indent=1))
PY
