#!/bin/bash
# Issue 19 on the one lent H200 (no multi-GPU machine this session): the tensor-parallel CUDA path at TP 1
# against the plain backend, NCCL's one-rank collectives (in a CUDA graph too), the plain backend's GPU
# tests after the tensor-parallel hooks went in, memcheck over the new path (sharded load, gather copies,
# NCCL in the decode graphs), and what the TP-1 path costs per decode step. Writes logs into DIR.
#
#   bench/results/2026-12-02-h200-tp1/run.sh DIR [BUNDLE]     from the repository root; BUNDLE: .device/nccl-tp
set -u
out=${1:?usage: run.sh DIR [BUNDLE]}
bundle=${2:-.device/nccl-tp}
mkdir -p "$out"
bin=$bundle/bin
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export TANDEM_TEST_DATA_DIR=$PWD/tests/data
export NCCL_NVLS_ENABLE=0
start=$(date +%s)
# libnccl is loaded with dlopen: the loader's path, CUDA's lib folders, or the nvidia-nccl wheel PyTorch brings.
if [[ -z ${TANDEM_NCCL_LIBRARY:-} ]]; then
  for c in $(ldconfig -p | awk '/libnccl.so.2 / {print $NF}') /usr/local/cuda/lib/libnccl.so.2 /usr/local/cuda/lib64/libnccl.so.2 \
           $(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null); do
    if [[ -f $c ]]; then export TANDEM_NCCL_LIBRARY=$c; break; fi
  done
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "nccl library: ${TANDEM_NCCL_LIBRARY:-not found}"; } \
  | tee "$out/device.txt"
step() {  # step NAME SECONDS COMMAND...: logs to DIR/NAME.log, prints the exit code and the last lines
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  echo "== $name: $*"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "   rc=$? in $(( $(date +%s) - t0 )) s"
  tail -n 4 "$out/$name.log"
}
if [[ ${SECOND_CALL:-0} != 1 ]]; then
  step tp_test 120 "$bin/cuda_tensor_parallel_test"
  step backend_test 60 "$bin/cuda_backend_test" --gtest_brief=1
  step memcheck 100 compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/cuda_tensor_parallel_test" \
    --gtest_filter='TpOne.*/0:Nccl.*' --gtest_brief=1
  for path in 0 1; do
    step "bench_qwen3_0_6b_tp_path_$path" 60 "$bin/backend_tool" bench --model random:qwen3-0.6b --device cuda:0 \
      --prompt-len 512 --decode-steps 64 --batch 1,8,32 --tp-path "$path"
    grep '^{' "$out/bench_qwen3_0_6b_tp_path_$path.log"
  done
else
  # The second call (SECOND_CALL=1): a real illegal-address fault on the (only) rank of the TP-1 path fails
  # the step and the later ones, the NCCL group aborted, without a hang; memcheck again with NCCL's own
  # API-error probes (see the README) left out of the report.
  step tp_fault 60 env TANDEM_INJECT_DEVICE_FAULT_AT_STEP=3 "$bin/cuda_tensor_parallel_test" --gtest_filter='TpFault.*'
  step memcheck_quiet 100 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 3 \
    "$bin/cuda_tensor_parallel_test" --gtest_filter='TpOne.*/0:Nccl.*' --gtest_brief=1
fi
echo "total $(( $(date +%s) - start )) s"
